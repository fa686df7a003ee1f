"""PostgreSQL access: the asyncpg pool and the named SQL queries of `sql/queries/`.

SQL lives in `.sql` files, one query per `-- name: <name>` block, the lines after the name being
its documentation. The files are read once at import, so a query can be reviewed and `EXPLAIN`ed
by someone who never opens the Python.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from gateway.ops import tracing
from gateway.ops.logs import SQL_LOGGER
from gateway.ops.metrics import DB_QUERY_DURATION, DB_UNAVAILABLE
from gateway.ops.settings import Settings

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^[ \t]*--[ \t]*include:[ \t]*([a-z_][a-z0-9_]*)[ \t]*$", re.MULTILINE)


def normalize_dsn(url: str) -> str:
    """Accept SQLAlchemy-style URLs (`postgresql+asyncpg://`), as the deployment guide writes."""
    return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)


# PgBouncer's conventional port, or a Neon pooled endpoint (`ep-xxx-pooler.region.aws.neon.tech`).
_POOLER_URL = re.compile(r"^postgresql://[^/]*(?:-pooler\.|:6432(?:/|$))")


def looks_like_pooler(url: str | None) -> bool:
    """Whether a URL points at a transaction pooler by convention (port 6432, Neon `-pooler`)."""
    return bool(url) and bool(_POOLER_URL.match(normalize_dsn(url or "")))


def load_queries(directory: Path = SQL_DIR / "queries") -> dict[str, str]:
    """Every named query of every `.sql` file in `directory`; a duplicate name is an error.

    A line `-- include: <name>` is replaced by that (fragment) query, once, here: SQL that must
    mean the same in several statements (a day's figures, the task filters) is written once."""
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        text = path.read_text()
        marks = list(_NAME.finditer(text))
        for i, mark in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            name = mark.group(1)
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice ({path.name})")
            queries[name] = text[mark.end():end].strip()

    def expand(name: str, seen: tuple[str, ...]) -> str:
        if name in seen:
            raise ValueError(f"query {name!r} includes itself ({' -> '.join((*seen, name))})")
        if name not in queries:
            raise ValueError(f"{seen[-1]!r} includes {name!r}, which is not defined")
        return _INCLUDE.sub(lambda m: expand(m.group(1), (*seen, name)), queries[name])

    return {name: expand(name, ()) for name in queries}


QUERIES = load_queries()


def query(name: str) -> str:
    """The SQL text of a named query."""
    try:
        return QUERIES[name]
    except KeyError:
        raise KeyError(f"no SQL query named {name!r} in sql/queries/") from None


_QUERY_NAMES = {sql: name for name, sql in QUERIES.items()}


def observe_query(record: Any) -> None:
    """asyncpg query logger: times each statement under its query name (`other` for SQL that is
    not one of sql/queries/), for `analytics_db_query_duration_seconds`; with tracing on, also
    one span per statement under the span that ran it, named by its query name (or its first
    keyword), never its text or arguments (gateway/ops/tracing.py, `sql_span`)."""
    name = _QUERY_NAMES.get(record.query)
    DB_QUERY_DURATION.labels(name or "other").observe(record.elapsed)
    if tracing.recording():  # the context of the code that ran the statement (call_soon)
        tracing.sql_span(name or tracing.statement_name(record.query), record.elapsed,
                         record.exception, record.conn_addr)


sql_log = logging.getLogger(SQL_LOGGER)


def log_query(record: Any) -> None:
    """APP_DEBUG's query logger: each statement's name (or its first 80 characters, for SQL that
    is not one of sql/queries/), duration and failure, at DEBUG on `gateway.sql`. Never its
    arguments, which may be password or token hashes and e-mail addresses."""
    name = _QUERY_NAMES.get(record.query) or " ".join(record.query.split())[:80]
    failed = f" failed: {type(record.exception).__name__}" if record.exception else ""
    sql_log.debug("%s %.2f ms%s", name, record.elapsed * 1000, failed)


# -- outages ---------------------------------------------------------------------------------

# What PostgreSQL being down or going away looks like through asyncpg: connecting is refused or
# reset (OSError), the server is starting or shutting down (57P01-57P03), the connection broke
# mid-statement, the server refuses more connections, or the pool is closing (a shutdown).
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,       # class 08: connection failures
    asyncpg.CannotConnectNowError,         # 57P03: starting up, in recovery
    asyncpg.AdminShutdownError,            # 57P01: terminated by an administrator or shutdown
    asyncpg.CrashShutdownError,            # 57P02: a backend crashed, all were reset
    asyncpg.TooManyConnectionsError,       # 53300
    asyncpg.ConnectionDoesNotExistError,   # the connection was closed mid-operation
)
RETRY_AFTER_OUTAGE = 5  # seconds a client is told to wait when PostgreSQL is unreachable


def is_database_outage(exc: BaseException) -> bool:
    """True when `exc` says PostgreSQL cannot be reached, rather than that a statement failed."""
    if isinstance(exc, _OUTAGE_ERRORS):
        return not isinstance(exc, TimeoutError)  # waits that gave up are "busy", see Pool
    return isinstance(exc, asyncpg.InterfaceError) and "pool is clos" in str(exc)


class OutageLog:
    """Logs a PostgreSQL outage once when it starts and once when it ends, instead of once per
    refused request (each is still counted in `analytics_db_unavailable_total`)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.refused = 0

    def failed(self, exc: BaseException) -> None:
        DB_UNAVAILABLE.inc()
        self.refused += 1
        if self.since is None:
            self.since = time.monotonic()
            log.error("PostgreSQL unavailable (%s: %s); answering 503 until it returns",
                      type(exc).__name__, exc)

    def recovered(self) -> None:
        if self.since is not None:
            log.warning("PostgreSQL is back after %.1f s; %d request(s) were answered 503",
                        time.monotonic() - self.since, self.refused)
            self.since, self.refused = None, 0


OUTAGE = OutageLog()


class _OutageNoise(logging.Filter):
    """Drops asyncpg's per-retry warnings whose exception is a database outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not is_database_outage(exc)


def quiet_outage_noise() -> None:
    """asyncpg's pool logs a traceback each time it fails to reopen its minimum connections
    during a PostgreSQL outage; `OUTAGE` reports the outage once instead."""
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _OutageNoise) for f in pool_log.filters):
        pool_log.addFilter(_OutageNoise())


class Pool(asyncpg.Pool):
    """asyncpg's pool, except that waiting for a connection is bounded: after
    `DATABASE_POOL_TIMEOUT` it raises TimeoutError (which the client sees as SERVICE_UNAVAILABLE,
    HTTP 503 with `Retry-After`, see schema/extensions/errors.py) instead of hanging until the
    request's deadline. asyncpg's own `fetch` & co. acquire without a timeout, hence the override
    of the one method they all go through. It stays a TimeoutError so that the replica's
    fallback to the primary (gateway/data/replica.py) still recognises it."""

    acquire_timeout: float | None = None

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 (asyncpg's)
        if timeout is None and not self._queue.qsize():
            timeout = self.acquire_timeout
        # With a connection free now, nothing waits (the queue hands it over without yielding,
        # and connecting a fresh one is bounded by the connect timeout): no bound is set, which
        # spares asyncpg's `wait_for` around the acquisition and around the release (a tenth of
        # the pool's cost per statement of a cached-out request).
        conn = await super()._acquire(timeout)
        if OUTAGE.since is not None:  # a connection again: the outage is over
            OUTAGE.recovered()
        return conn


async def _init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection set-up: JSON codecs, so jsonb values arrive as Python objects, and the
    timing of every statement for `analytics_db_query_duration_seconds`."""
    conn.add_query_logger(observe_query)
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, schema="pg_catalog",
                                  encoder=lambda v: orjson.dumps(v).decode(),
                                  decoder=orjson.loads, format="text")


async def _init_debug_connection(conn: asyncpg.Connection) -> None:
    """`_init_connection`, plus the statement log of APP_DEBUG."""
    await _init_connection(conn)
    conn.add_query_logger(log_query)


async def keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset query (`RESET ALL`, `UNLISTEN *`, ...), a round
    trip on every release. asyncpg still rolls back an open transaction first; what the reset
    would undo never happens here: our SQL uses only `SET LOCAL`, row locks and transaction
    scope, never session settings, LISTEN or session advisory locks on pooled connections."""


CHANGES_ANNOUNCED = "analytics_gateway.changes_announced"  # see sql/migrations/0005


async def create_pool(settings: Settings, dsn: str | None = None, *,
                      changes_announced: bool = False, **overrides: Any) -> asyncpg.Pool:
    """The process's pool: `DATABASE_POOL_SIZE` kept open, `+ DATABASE_MAX_OVERFLOW` under load.

    Every statement is cancelled after `QUERY_TIMEOUT` (PostgreSQL's `statement_timeout`, so the
    server stops working too), and connections idle longer than `DATABASE_POOL_RECYCLE` are closed.
    `changes_announced`: this process announces its own changes of account rows on Redis (the
    API, `domain.changes.tasks_changed`), so PostgreSQL need not (migration 0005's trigger).
    """
    url = normalize_dsn(dsn or settings.database_url or "")
    options: dict[str, Any] = {
        "min_size": min(settings.database_pool_size, 2) if not settings.is_production
        else settings.database_pool_size,
        "max_size": settings.database_pool_size + settings.database_max_overflow,
        "max_inactive_connection_lifetime": settings.database_pool_recycle,
        "statement_cache_size": settings.database_statement_cache_size,
        "command_timeout": settings.query_timeout + 5,
        "timeout": settings.database_pool_timeout,
        "server_settings": {
            "application_name": "analytics_gateway",
            "jit": "off",
            "statement_timeout": str(int(settings.query_timeout * 1000)),
            **({CHANGES_ANNOUNCED: "on"} if changes_announced else {}),
        },
        "init": _init_debug_connection if settings.app_debug else _init_connection,
        "reset": keep_session,
    }
    options.update(overrides)
    # asyncpg.create_pool's defaults for what Pool itself requires
    defaults = {"max_queries": 50000, "connection_class": asyncpg.Connection,
                "record_class": asyncpg.Record, "loop": None}
    pool = Pool(url, **{**defaults, **options})
    pool.acquire_timeout = settings.database_pool_timeout
    return await pool
