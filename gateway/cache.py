"""The Redis cache of analytics field results: versioned keys, single flight, fail-open.

A cached figure lives at `analytics:{<user_id>}:v<version>:<field>:<args...>`:

- the `{user_id}` hash tag keeps all of a user's keys in one Redis Cluster slot;
- `<version>` is the integer at `analytics:{<user_id>}:version` (0 when absent). Anything that
  changes a user's figures INCRs it (`bump_version`), so every key of that user is missed at once,
  without scanning; the old keys simply expire with their TTL;
- the user id, field and every argument are in the key, so one user's figure can never be
  answered to another.

A batch of keys costs two round trips: one `MGET` of the users' versions, then one `MGET` of the
values (the value keys depend on the versions, so the two cannot be merged without a Lua script,
which Redis Cluster would only accept per slot). Misses are computed with one `compute` call and
written back with one pipelined `SET ... EX`.

Stampedes: concurrent misses of one key in this process await a single computation (single
flight), and across processes a short `SET NX PX` lock lets one process compute while the others
poll the value for a moment, then compute themselves if it does not come.

Fail-open: every Redis call goes through `resources.cache_redis` (200 ms timeouts, no retries) and
a circuit breaker; any Redis failure is a miss, and after one the cache skips Redis for
`CACHE_CIRCUIT_SECONDS`. A version bump that could not reach Redis is kept and sent before this
process reads the cache again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import Any, TypeVar

import orjson
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from strawberry.extensions import SchemaExtension

from gateway.circuit import CircuitBreaker, Permit
from gateway.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
Key = tuple[Any, ...]
"""A loader key: the user id first, then the field's arguments (dates, strings, enums, None)."""
Compute = Callable[[list[Key]], Awaitable[Sequence[Any]]]

CACHE_HITS = Counter("analytics_cache_hits_total", "Analytics field results answered from Redis",
                     ["field"])
CACHE_MISSES = Counter("analytics_cache_misses_total",
                       "Analytics field results computed because Redis did not have them",
                       ["field"])

LOCK_TTL_MS = 5000        # a computing process's claim on a key; expires if the process dies
LOCK_WAIT_SECONDS = 2.0   # how long a process polls for another's result before computing itself
POLL_INTERVAL = 0.02
REDIS_FAILURES = (RedisError, OSError, TimeoutError)

# Delete a lock only if it is still ours (it may have expired and been taken by another process).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


class CacheUnavailable(Exception):
    """Redis failed or is being skipped by the circuit breaker: treat as a miss."""


class _LeaderGone(Exception):
    """The request computing a key was cancelled; whoever waited for it computes instead."""


# --- keys ------------------------------------------------------------------------------------


def version_key(user_id: uuid.UUID | str) -> str:
    return f"analytics:{{{user_id}}}:version"


def _arg(value: Any) -> str:
    """One key argument as text; `:` is escaped so that arguments cannot run into each other."""
    if value is None:
        return "-"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, date | datetime):
        value = value.isoformat()
    return str(value).replace("%", "%25").replace(":", "%3A")


def cache_key(field: str, key: Key, version: int) -> str:
    """`analytics:{<user_id>}:v<version>:<field>:<args...>` for a loader key."""
    user_id, *args = key
    parts = [f"analytics:{{{user_id}}}:v{version}:{field}", *(_arg(a) for a in args)]
    return ":".join(parts)


def _lock_key(key: str) -> str:
    return f"{key}:lock"


# --- values ----------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot cache a {type(value).__name__}")


def encode(value: Any, written_at: float) -> bytes:
    """The stored form: `[written_at, value]`, so that a hit can report its age."""
    return orjson.dumps([written_at, value], default=_default)


def decode(raw: bytes) -> tuple[Any, float]:
    written_at, value = orjson.loads(raw)
    return value, float(written_at)


# --- versions outside a request (workers, events) --------------------------------------------


async def bump_version(redis: Redis, user_id: uuid.UUID | str) -> bool:
    """Invalidate every cached figure of a user. Best effort: logs and returns False on failure."""
    return await bump_versions(redis, [user_id])


async def bump_versions(redis: Redis, user_ids: Iterable[uuid.UUID | str]) -> bool:
    """`bump_version` for many users in one round trip. Never raises."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return True
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for user_id in ids:
                pipe.incr(version_key(user_id))
            await pipe.execute()
        return True
    except Exception as exc:  # best effort by contract: the change is already committed
        log.warning("cache version bump failed for %d user(s): %s", len(ids), type(exc).__name__)
        return False


async def _mget(redis: Redis, keys: list[str]) -> list[bytes | None]:
    """MGET that also works on Redis Cluster, where keys of several users span slots."""
    mget_nonatomic = getattr(redis, "mget_nonatomic", None)
    if mget_nonatomic is not None:
        return list(await mget_nonatomic(keys))
    return list(await redis.mget(keys))


# --- the cache -------------------------------------------------------------------------------


class QueryCache:
    """The cache of one process: its Redis client, circuit breaker and in-flight computations."""

    def __init__(self, redis: Redis, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.enabled = settings.enable_query_cache
        self.ttls = {"overview": settings.cache_ttl_overview,
                     "trends": settings.cache_ttl_trends,
                     "productivity": settings.cache_ttl_productivity}
        self.default_ttl = min(self.ttls.values())
        self.breaker = CircuitBreaker(settings.cache_circuit_seconds)
        self._clock = clock
        # Never more commands in flight than the client's pool has connections: redis-py's pool
        # raises "Too many connections" instead of waiting, which would trip the breaker.
        self._slots = asyncio.Semaphore(settings.redis_max_connections)
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._pending_bumps: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # flushes in progress (kept referenced)
        self._mget_queue: list[tuple[list[str], asyncio.Future[list[bytes | None]]]] = []

    # -- Redis calls, all through the breaker --

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        permit = self.breaker.allow()
        if permit is None:
            raise CacheUnavailable("circuit open")
        try:
            async with self._slots:
                if not self.breaker.still_allowed(permit):
                    raise CacheUnavailable("circuit opened while waiting")
                result = await op()
        except REDIS_FAILURES as exc:
            if not self.breaker.is_open or permit is Permit.PROBE:
                log.warning("cache Redis failed, skipping it for %.0f s: %s",
                            self.breaker.cooldown, type(exc).__name__)
            self.breaker.failure()
            raise CacheUnavailable(type(exc).__name__) from exc
        except BaseException:
            self.breaker.abandon(permit)
            raise
        self.breaker.success()
        return result

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        """MGET, coalesced: every MGET asked for in one event-loop iteration, by any request of
        this process, goes to Redis as one command. Under load this divides the round trips (and
        the connections they need) by the number of concurrent requests."""
        future: asyncio.Future[list[bytes | None]] = asyncio.get_running_loop().create_future()
        self._mget_queue.append((keys, future))
        if len(self._mget_queue) == 1:
            asyncio.get_running_loop().call_soon(self._flush_mgets)
        return await future

    def _flush_mgets(self) -> None:
        queue, self._mget_queue = self._mget_queue, []
        task = asyncio.ensure_future(self._run_mgets(queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_mgets(
            self, queue: list[tuple[list[str], asyncio.Future[list[bytes | None]]]]) -> None:
        unique = list(dict.fromkeys(key for keys, _ in queue for key in keys))
        try:
            raw = await self._call(partial(_mget, self.redis, unique))
        except Exception as exc:  # CacheUnavailable, or a bug: the waiters must not hang
            for _, future in queue:
                if not future.done():
                    future.set_exception(exc)
            return
        found = dict(zip(unique, raw, strict=True))
        for keys, future in queue:
            if not future.done():
                future.set_result([found[key] for key in keys])

    async def bump(self, user_ids: Iterable[uuid.UUID | str]) -> None:
        """Bump users' versions; if Redis cannot be reached, keep them for the next cache read.

        Never raises: callers have already committed their change.
        """
        keys = [version_key(u) for u in user_ids]
        if not keys:
            return

        async def incr() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.incr(key)
                await pipe.execute()

        try:
            await self._call(incr)
        except CacheUnavailable:
            self._pending_bumps.update(keys)
            log.warning("cache version bump deferred for %d user(s)", len(keys))

    async def set_raw(self, key: str, payload: bytes, ttl: int) -> None:
        """`SET key payload EX ttl` through the breaker; a Redis failure is only logged (a value
        not stored is a miss next time, nothing worse)."""
        try:
            await self._call(partial(self.redis.set, key, payload, ex=ttl))
        except CacheUnavailable:
            pass

    async def versions(self, user_ids: Iterable[Any]) -> dict[Any, int]:
        """The current version of each user, in one round trip (deferred bumps go first)."""
        users = list(dict.fromkeys(user_ids))
        keys = [version_key(u) for u in users]
        pending = list(self._pending_bumps)

        if not pending:
            raw = await self.mget(keys)
            return {u: int(v) if v is not None else 0 for u, v in zip(users, raw, strict=True)}

        async def read() -> list[bytes | None]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in pending:
                    pipe.incr(key)
                for key in keys:  # GETs, not one MGET: on a cluster the users span slots
                    pipe.get(key)
                results = await pipe.execute()
            return list(results[len(pending):])

        raw = await self._call(read)
        self._pending_bumps.difference_update(pending)
        return {u: int(v) if v is not None else 0 for u, v in zip(users, raw, strict=True)}

    # -- the loader path --

    async def load(self, field: str, keys: Sequence[Key], compute: Compute,
                   notes: dict[str, Any] | None = None, *, force: bool = False) -> list[Any]:
        """The values of `keys` for `field`: from Redis where present, else from `compute`.

        `compute` gets the missing keys only, in one call, and returns their values in order
        (JSON-compatible; returned as they read back from the cache, so a hit and a miss look
        the same). `force` recomputes and rewrites every key (cache warming).
        """
        keys = list(keys)
        if not keys:
            return []
        if not self.enabled:
            return _roundtrip(await compute(keys), self._clock())
        try:
            versions = await self.versions(k[0] for k in keys)
        except CacheUnavailable:
            # Without the versions no key can be trusted, and without Redis nothing can be stored.
            self._count(field, notes, hits=[], misses=len(keys))
            return _roundtrip(await compute(keys), self._clock())

        ckeys = [cache_key(field, k, versions[k[0]]) for k in keys]
        results: list[Any] = [None] * len(keys)
        missing = list(range(len(keys)))
        ages: list[float] = []
        redis_ok = True
        if not force:
            try:
                raw = await self.mget(ckeys)
            except CacheUnavailable:
                raw, redis_ok = [None] * len(keys), False
            now = self._clock()
            missing = []
            for i, item in enumerate(raw):
                if item is None:
                    missing.append(i)
                else:
                    results[i], written_at = decode(item)
                    ages.append(max(0.0, now - written_at))
        if not force:  # warming is not traffic: it would drown the hit ratio in misses
            self._count(field, notes, hits=ages, misses=len(missing))
        if missing:
            values = await self._fill(field, [keys[i] for i in missing],
                                      [ckeys[i] for i in missing], compute, redis_ok)
            for i, value in zip(missing, values, strict=True):
                results[i] = value
        return results

    def _count(self, field: str, notes: dict[str, Any] | None, hits: list[float],
               misses: int) -> None:
        if hits:
            CACHE_HITS.labels(field=field).inc(len(hits))
        if misses:
            CACHE_MISSES.labels(field=field).inc(misses)
        if notes is not None:
            entry = notes.setdefault("cache", {}).setdefault(
                field, {"hits": 0, "misses": 0, "age": None})
            entry["hits"] += len(hits)
            entry["misses"] += misses
            if hits:
                entry["age"] = max(entry["age"] or 0.0, *hits)

    async def _fill(self, field: str, keys: list[Key], ckeys: list[str], compute: Compute,
                    redis_ok: bool) -> list[Any]:
        """Compute missing keys once per process: join computations already in flight."""
        loop = asyncio.get_running_loop()
        own: list[int] = []
        joined: list[tuple[int, asyncio.Future[Any]]] = []
        for i, ckey in enumerate(ckeys):
            future = self._inflight.get(ckey)
            if future is None:
                self._inflight[ckey] = loop.create_future()
                own.append(i)
            else:
                joined.append((i, future))

        results: list[Any] = [None] * len(keys)
        if own:
            futures = [self._inflight[ckeys[i]] for i in own]
            try:
                values = await self._compute_and_store(
                    field, [keys[i] for i in own], [ckeys[i] for i in own], compute, redis_ok)
            except BaseException as exc:
                error = exc if isinstance(exc, Exception) else _LeaderGone()
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
                        future.exception()  # retrieved: nobody may be waiting
                raise
            finally:
                for i, future in zip(own, futures, strict=True):
                    if self._inflight.get(ckeys[i]) is future:
                        del self._inflight[ckeys[i]]
            for i, future, value in zip(own, futures, values, strict=True):
                results[i] = value
                if not future.done():
                    future.set_result(value)

        orphans: list[int] = []
        for i, future in joined:
            try:
                # shield: a waiter being cancelled must not cancel everyone's shared future
                results[i] = await asyncio.shield(future)
            except _LeaderGone:
                orphans.append(i)
        if orphans:
            values = await self._compute_and_store(
                field, [keys[i] for i in orphans], [ckeys[i] for i in orphans], compute,
                redis_ok)
            for i, value in zip(orphans, values, strict=True):
                results[i] = value
        return results

    async def _compute_and_store(self, field: str, keys: list[Key], ckeys: list[str],
                                 compute: Compute, redis_ok: bool) -> list[Any]:
        """Across processes: take the Redis lock of each key, compute the keys we hold, wait
        briefly for the others' results, compute what never came; then store ours."""
        if not redis_ok:
            return _roundtrip(await compute(keys), self._clock())
        token = secrets.token_hex(8)

        async def lock() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for ckey in ckeys:
                    pipe.set(_lock_key(ckey), token, nx=True, px=LOCK_TTL_MS)
                return list(await pipe.execute())

        try:
            held = [bool(r) for r in await self._call(lock)]
        except CacheUnavailable:
            return _roundtrip(await compute(keys), self._clock())

        mine = [i for i, h in enumerate(held) if h]
        theirs = [i for i, h in enumerate(held) if not h]
        results: list[Any] = [None] * len(keys)
        computed: list[int] = []

        async def compute_mine() -> None:
            if mine:
                values = await compute([keys[i] for i in mine])
                for i, value in zip(mine, values, strict=True):
                    results[i] = value
                computed.extend(mine)

        async def wait_theirs() -> None:
            if not theirs:
                return
            found = await self._wait_for([ckeys[i] for i in theirs])
            late = [i for i, value in zip(theirs, found, strict=True) if value is _ABSENT]
            for i, value in zip(theirs, found, strict=True):
                if value is not _ABSENT:
                    results[i] = value
            if late:
                values = await compute([keys[i] for i in late])
                for i, value in zip(late, values, strict=True):
                    results[i] = value
                computed.extend(late)

        try:
            await asyncio.gather(compute_mine(), wait_theirs())
        except BaseException:
            await self._release([ckeys[i] for i in mine], token)
            raise
        now = self._clock()
        payloads = {i: encode(results[i], now) for i in computed}
        for i, payload in payloads.items():
            results[i] = orjson.loads(payload)[1]
        await self._store(field, {ckeys[i]: p for i, p in payloads.items()},
                          [ckeys[i] for i in mine], token)
        return results

    async def _wait_for(self, ckeys: list[str]) -> list[Any]:
        """Poll for values another process is computing; `_ABSENT` where none came in time
        (or where the other process gave up its lock without writing)."""
        found: list[Any] = [_ABSENT] * len(ckeys)
        waiting = list(range(len(ckeys)))
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL)
            keys = [ckeys[i] for i in waiting]
            both = keys + [_lock_key(k) for k in keys]
            try:
                raw = await self.mget(both)
            except CacheUnavailable:
                break
            values, locks = raw[:len(keys)], raw[len(keys):]
            still: list[int] = []
            for i, value, lock in zip(waiting, values, locks, strict=True):
                if value is not None:
                    found[i] = decode(value)[0]
                elif lock is not None:
                    still.append(i)
            waiting = still
        return found

    async def _store(self, field: str, payloads: dict[str, bytes], locks: list[str],
                     token: str) -> None:
        """One pipelined round trip: `SET ... EX ttl` for the values, release our locks."""
        if not payloads and not locks:
            return
        ttl = self.ttls.get(field, self.default_ttl)

        async def write() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for ckey, payload in payloads.items():
                    pipe.set(ckey, payload, ex=ttl)
                for ckey in locks:
                    pipe.eval(_RELEASE, 1, _lock_key(ckey), token)
                await pipe.execute()

        try:
            await self._call(write)
        except CacheUnavailable:
            pass  # the answer is computed; not storing it only costs the next request

    async def _release(self, ckeys: list[str], token: str) -> None:
        if not ckeys:
            return

        async def release() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for ckey in ckeys:
                    pipe.eval(_RELEASE, 1, _lock_key(ckey), token)
                await pipe.execute()

        try:
            await asyncio.shield(self._call(release))
        except (CacheUnavailable, asyncio.CancelledError):
            pass  # the locks expire on their own after LOCK_TTL_MS


class _Absent:
    pass


_ABSENT: Any = _Absent()


def _roundtrip(values: Sequence[Any], written_at: float) -> list[Any]:
    """Values as they would read back from the cache (dates become strings, and so on)."""
    return [orjson.loads(encode(v, written_at))[1] for v in values]


async def warm_users(resources: Any, user_ids: Iterable[uuid.UUID]) -> int:
    """Compute and store the dashboard figures of these users (the warming job's entry point);
    the work is in `loaders.cached.warm_users`, next to the loaders whose keys it must match."""
    from loaders.cached import warm_users as warm

    return await warm(resources, user_ids)


def cache_of(resources: Any) -> QueryCache:
    """The process's cache, created on first use and kept on the lifespan's `Resources`."""
    cache: QueryCache | None = getattr(resources, "query_cache", None)
    if cache is None:
        cache = QueryCache(resources.cache_redis, resources.settings)
        resources.query_cache = cache
    return cache


DEBUG_HEADER = "x-cache-debug"


class CacheExtension(SchemaExtension):
    """Adds `extensions.cache` to a response: per field, whether it came from the cache and how
    old the oldest cached value was. Outside production always; in production only for a request
    with `X-Cache-Debug: 1`. Register it in `build_schema(extensions=[...])`."""

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        report = getattr(context, "notes", {}).get("cache")
        if not report or not _debug_wanted(context):
            return {}
        return {"cache": {
            field: {"hit": entry["misses"] == 0, "age": _age(entry["age"]),
                    "hits": entry["hits"], "misses": entry["misses"]}
            for field, entry in report.items()}}


def _age(age: float | None) -> float | None:
    return None if age is None else round(age, 1)


def _debug_wanted(context: Any) -> bool:
    request = getattr(context, "request", None)
    if request is not None and request.headers.get(DEBUG_HEADER) == "1":
        return True
    resources = getattr(context, "resources", None)
    return resources is not None and not resources.settings.is_production
