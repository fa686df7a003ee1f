"""The account rows of recent callers, kept by each API process and dropped as soon as it hears
that they changed.

Every request reads its caller's account row: the role (a demoted admin loses its rights at once),
whether the account still exists, and the data version that keys every cached figure
(docs/cache.md). Read from PostgreSQL each time, that one-row statement cost more than everything
else of a cached dashboard (docs/performance.md, "The account cache"). So each process keeps the
rows it read, `ACCOUNT_CACHE_SECONDS` at most, and drops a user's row when it hears of a change
(a task change raises the row's data version, so it is one):

- **Changes made through the API** are announced by the API after their commit: the writing
  process drops the row itself (`evict`, called by `domain.changes.tasks_changed`), and the
  live dashboards' change message on Redis reaches every other process (their hub's listener,
  which this cache `follow`s); when Redis cannot take the message, `tasks_changed` has
  PostgreSQL send it instead (`announce_in_postgres`).
- **Every other change** (a worker's repair, a migration, psql, another program writing the
  tables) is announced by PostgreSQL: migration 0005's trigger notifies `account_changed` with
  the user's id, and this cache listens on a connection of its own. The API's own connections
  tell the trigger to stay silent (`analytics_gateway.changes_announced`): a NOTIFY serializes
  the commits of the whole server.

What this keeps, and its one window:

- A client that writes and reads through one process always reads its write.
- Another process drops the row when the announcement reaches it, sent before the writer's
  client has its answer: well under a millisecond on one network, but not ordered with the
  client's next request by construction. `ACCOUNT_CACHE_SECONDS=0` reads every row from
  PostgreSQL.
- **Nothing is kept unless both are heard.** Until PostgreSQL's `LISTEN` and the Redis listener
  are both in place, and whenever either is lost (or the PostgreSQL connection fails its health
  check), nothing is kept and nothing is answered from memory; the rows kept so far are
  forgotten, since announcements may have been missed.
- **A read racing a change** does not keep a stale row: `put` keeps a row only if nothing was
  announced since the read began (`generation`).
- **Midnight**: the caller decides how long a row may be kept (the account's row carries its
  local "today"; gateway/http/identity.py keeps it until just before the user's midnight).

Off behind a transaction pooler (PgBouncer in transaction mode does not carry `LISTEN`) and
without live dashboards (`LIVE_ENABLED=false`: no Redis listener): gateway/data/resources.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import asyncpg

from gateway.data.db import looks_like_pooler, normalize_dsn
from gateway.ops.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "account_changed"  # migration 0005's trigger
MAX_ROWS = 10_000            # ~5 MB of rows per process at most
HEALTH_EVERY_S = 10.0        # the listening connection is checked this often...
HEALTH_TIMEOUT_S = 5.0       # ...and given up on when a check takes longer than this
RECONNECT_MAX_S = 30.0       # back-off ceiling between attempts to listen again
_SYNC = "sync:"              # payload prefix of `settled`'s marker notifications

Row = TypeVar("Row")


def off_because(settings: Settings) -> str | None:
    """Why these settings leave the account cache off, or None when an API process keeps rows
    (and holds one more connection: gateway/data/budget.py counts it)."""
    if not settings.account_cache_seconds:
        return "ACCOUNT_CACHE_SECONDS=0"
    if not settings.live_enabled:
        return ("LIVE_ENABLED=false: the account cache hears the API's changes through the live "
                "dashboards' Redis listener")
    if looks_like_pooler(settings.database_url):
        return "DATABASE_URL looks like a transaction pooler, which does not carry LISTEN"
    return None


class AccountCache(Generic[Row]):
    """Rows by user id, valid while this process listens for `account_changed`."""

    def __init__(self, settings: Settings, max_rows: int = MAX_ROWS) -> None:
        self.settings = settings
        self.seconds = float(settings.account_cache_seconds)
        self.max_rows = max_rows
        self._rows: OrderedDict[uuid.UUID, tuple[float, Row]] = OrderedDict()
        self._generation = 0
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._synced: dict[str, asyncio.Future[None]] = {}
        self._lost = asyncio.Event()
        self._redis_listening: Callable[[], bool] = lambda: False  # until `follow`

    # --- the cache --------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """Whether announcements arrive, PostgreSQL's and the API's on Redis: only then are rows
        kept and answered."""
        return self._pg_listening and self._redis_listening()

    @property
    def _pg_listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def follow(self, observe: Callable[[Callable[[list[uuid.UUID]], None], Callable[[], None]],
                                       Callable[[], bool]]) -> None:
        """Hear the API's announcements through a Redis listener: `observe(on_change, on_lost)`
        registers with it and returns whether it is listening (gateway/live/hub.py
        `Hub.observe`)."""
        self._redis_listening = observe(self._announced, self.clear)

    def _announced(self, user_ids: list[uuid.UUID]) -> None:
        for user_id in user_ids:
            self.evict(user_id)

    @property
    def generation(self) -> int:
        """Read it before reading a row from PostgreSQL, and hand it to `put`."""
        return self._generation

    def get(self, user_id: uuid.UUID) -> Row | None:
        """The kept row of `user_id`, or None (never kept, dropped, expired, or not listening)."""
        entry = self._rows.get(user_id)
        if entry is None:
            return None
        if entry[0] <= time.monotonic() or not self.listening:
            self._rows.pop(user_id, None)
            return None
        return entry[1]

    def put(self, user_id: uuid.UUID, row: Row, generation: int, keep_for: float) -> None:
        """Keep `row`, read while the generation was `generation`, for at most `keep_for`
        seconds (and `ACCOUNT_CACHE_SECONDS`). Not kept if a notification came meanwhile (the
        row may predate it) or while not listening."""
        keep_for = min(keep_for, self.seconds)
        if generation != self._generation or keep_for <= 0 or not self.listening:
            return
        self._rows[user_id] = (time.monotonic() + keep_for, row)
        self._rows.move_to_end(user_id)
        if len(self._rows) > self.max_rows:
            self._rows.popitem(last=False)

    def evict(self, user_id: uuid.UUID) -> None:
        """Drop a row now: its account changed (this process's own write, or a notification)."""
        self._generation += 1
        self._rows.pop(user_id, None)

    def clear(self) -> None:
        self._generation += 1
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)

    # --- listening --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen now (so that the first requests may use the cache), then keep listening in the
        background: reconnect with back-off, check the connection every `HEALTH_EVERY_S`."""
        with contextlib.suppress(Exception):
            await self._listen()
        self._task = asyncio.create_task(self._keep_listening(), name="account-cache listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connection()

    async def settled(self, pool: asyncpg.Pool, wait_s: float = 5.0) -> bool:
        """Wait until every PostgreSQL notification committed before this call has been applied
        here (a marker notification sent now arrives after them: PostgreSQL delivers in commit
        order). For tests and tools that change accounts in SQL and then read through the API.
        False when not listening or the marker did not come within `wait_s` seconds."""
        if not self._pg_listening:
            return False
        marker = uuid.uuid4().hex
        arrived = asyncio.get_running_loop().create_future()
        self._synced[marker] = arrived
        try:
            await pool.execute("select pg_notify($1, $2)", CHANNEL, _SYNC + marker)
            await asyncio.wait_for(arrived, wait_s)
            return True
        except (TimeoutError, asyncpg.PostgresError, OSError):
            return False
        finally:
            self._synced.pop(marker, None)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """A notification of `account_changed`: a user id, or `settled`'s marker."""
        if payload.startswith(_SYNC):
            arrived = self._synced.get(payload[len(_SYNC):])
            if arrived is not None and not arrived.done():
                arrived.set_result(None)
            return
        try:
            user_id = uuid.UUID(payload)
        except ValueError:
            self.clear()  # not ours to read: forget everything rather than guess
            return
        self.evict(user_id)

    def _terminated(self, _conn: Any) -> None:
        self.clear()
        self._lost.set()

    async def _listen(self) -> None:
        conn = await asyncpg.connect(
            normalize_dsn(self.settings.database_url or ""),
            timeout=min(self.settings.database_pool_timeout, 10.0),
            server_settings={"application_name": "analytics_gateway_listener"})
        try:
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._terminated)
        self.clear()  # anything kept before this connection listened is suspect
        self._lost.clear()
        self._conn = conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self.clear()
        if conn is not None:
            conn.remove_termination_listener(self._terminated)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), HEALTH_TIMEOUT_S)
            if not conn.is_closed():
                conn.terminate()

    async def _keep_listening(self) -> None:
        backoff = 1.0
        while True:
            if not self._pg_listening:
                try:
                    await self._listen()
                    log.info("account cache: listening for %s again", CHANNEL)
                    backoff = 1.0
                except Exception as exc:  # PostgreSQL down or unreachable: rows are read anyway
                    log.warning("account cache off until PostgreSQL can be listened to: %s", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RECONNECT_MAX_S)
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), HEALTH_EVERY_S)
            if not self._lost.is_set() and await self._healthy():
                continue
            log.warning("account cache: the listening connection was lost; rows are read from "
                        "PostgreSQL until it listens again")
            await self._drop_connection()

    async def _healthy(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            await conn.fetchval("select 1", timeout=HEALTH_TIMEOUT_S)
            return True
        except Exception:
            return False


async def announce_in_postgres(pool: asyncpg.Pool, user_id: uuid.UUID) -> None:
    """Have PostgreSQL announce a change of this account, when Redis could not (one short
    transaction of its own: the NOTIFY's lock is held only for it)."""
    await pool.execute("select pg_notify($1, $2)", CHANNEL, str(user_id))
