"""Which PostgreSQL answers an analytics read: the read replica, or the primary.

With `DATABASE_READ_URL` set, the analytics loaders read from a streaming replica, which takes that
load off the primary. Two things must not follow from it:

- **A user must see their own change.** After a committed change, `record_write` stores the
  primary's WAL position (`pg_current_wal_lsn()`) under `ryw:{<user_id>}` in Redis for
  `DATABASE_READ_RYW_SECONDS`. A batch that contains such a user asks the replica how far it has
  replayed (`pg_last_wal_replay_lsn()`) and goes to the primary until the replica is past the
  write. Other users' reads stay on the replica. Redis is shared by every process, so the mark holds
  whichever API process serves the next request; the hash tag keeps it on the user's cluster slot.
- **A replica that is down must not fail reads.** A connection-level error trips a circuit breaker
  (`DATABASE_READ_CIRCUIT_SECONDS`) and the batch is re-run on the primary; while the breaker is
  open reads skip the replica outright, then one probe tries it again. A statement cancelled by a
  recovery conflict is re-run on the primary without tripping the breaker.

When we cannot tell (Redis unreachable while a batch looks for marks), the primary answers: a
slower read is better than a completed task that vanishes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg
from redis.asyncio import Redis, RedisCluster

from gateway.ops.circuit import CircuitBreaker
from gateway.ops.lazy import kept_on

log = logging.getLogger(__name__)

T = TypeVar("T")
RYW_PREFIX = "ryw:"

# The replica is unreachable, was shut down, or dropped the connection: use the primary.
REPLICA_DOWN: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError)
# A hot standby cancels a statement that conflicts with replay (SQLSTATE 40001): retry on primary.
REPLICA_CONFLICT: tuple[type[BaseException], ...] = (asyncpg.exceptions.SerializationError,)


def ryw_key(user_id: uuid.UUID | str) -> str:
    """The Redis key of a user's last write position; `{}` makes it share the user's slot."""
    return f"{RYW_PREFIX}{{{user_id}}}"


def parse_lsn(text: str | bytes | None) -> int | None:
    """A PostgreSQL LSN ('16/B374D848') as an integer that orders like the WAL does."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode()
    high, _, low = text.partition("/")
    try:
        return (int(high, 16) << 32) + int(low, 16)
    except ValueError:
        return None


async def _get_many(redis: Redis, keys: list[str]) -> list[Any]:
    """MGET that also works on a cluster, where keys of different users live on other slots."""
    if isinstance(redis, RedisCluster):
        return list(await redis.mget_nonatomic(keys))
    return list(await redis.mget(keys))


class ReadRouter:
    """Per-process routing of analytics reads; kept on `Resources` (see `router_of`)."""

    def __init__(self, resources: Any) -> None:
        self.resources = resources
        self.breaker = CircuitBreaker(resources.settings.database_read_circuit_seconds)

    @property
    def replica(self) -> asyncpg.Pool | None:
        return getattr(self.resources, "read_pool", None)

    async def _needs_primary(self, replica: asyncpg.Pool, user_ids: Sequence[Any]) -> bool:
        """Whether a user of the batch wrote something the replica has not replayed yet."""
        if not user_ids:
            return False
        try:
            marks = await _get_many(self.resources.cache_redis,
                                    [ryw_key(u) for u in dict.fromkeys(user_ids)])
        except Exception as exc:  # any Redis error: we cannot tell, so be safe
            log.debug("read-your-writes marks unavailable, reading from the primary: %s", exc)
            return True
        written = [lsn for lsn in map(parse_lsn, marks) if lsn is not None]
        if not written:
            return False
        replayed = parse_lsn(await replica.fetchval("select pg_last_wal_replay_lsn()::text"))
        # None: not a standby (or no replay yet); the primary is the one we know has the write.
        return replayed is None or replayed < max(written)

    async def run(self, user_ids: Sequence[Any],
                  work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """`work(pool)` on the replica when it may answer for these users, else on the primary."""
        primary: asyncpg.Pool = self.resources.pool
        replica = self.replica
        if replica is None:
            return await work(primary)
        permit = self.breaker.allow()
        if permit is None:
            return await work(primary)
        try:
            if await self._needs_primary(replica, user_ids):
                self.breaker.abandon(permit)  # no verdict on the replica's health
                return await work(primary)
            result = await work(replica)
        except REPLICA_DOWN as exc:
            self.breaker.failure()
            log.warning("read replica unavailable, reading from the primary for %.0f s: %r",
                        self.breaker.cooldown, exc)
            return await work(primary)
        except REPLICA_CONFLICT:
            self.breaker.success()
            return await work(primary)
        except BaseException:
            self.breaker.abandon(permit)
            raise
        self.breaker.success()
        return result

    async def fetch(self, user_ids: Sequence[Any], sql: str, *args: Any) -> list[asyncpg.Record]:
        """`pool.fetch(sql, *args)` on the pool that may answer for these users."""
        return await self.run(user_ids, lambda pool: pool.fetch(sql, *args))


def router_of(resources: Any) -> ReadRouter:
    """The process's router, created on first use and kept on the lifespan's `Resources`."""
    return kept_on(resources, "read_router", lambda: ReadRouter(resources))


async def record_write(resources: Any, user_ids: Iterable[uuid.UUID]) -> None:
    """Remember the primary's WAL position for users whose change has just committed.

    Only with a replica configured; best effort (a Redis or database error is logged): the mark
    only makes a read slower, never different from the primary's answer.
    """
    if getattr(resources, "read_pool", None) is None:
        return
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return
    try:
        lsn = await resources.pool.fetchval("select pg_current_wal_lsn()::text")
        ttl = resources.settings.database_read_ryw_seconds
        async with resources.redis.pipeline(transaction=False) as pipe:
            for user_id in ids:
                pipe.set(ryw_key(user_id), lsn, ex=ttl)
            await pipe.execute()
    except Exception as exc:
        log.warning("could not record read-your-writes position for %d user(s): %s",
                    len(ids), exc)
