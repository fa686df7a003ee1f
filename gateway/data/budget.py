"""The connection budget: do our pools fit in the PostgreSQL server's `max_connections`?

Each API process opens up to `DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW` connections to the
primary (and as many to the read replica), and there are `WORKERS` processes per host. When their
product exceeds what the server lets ordinary roles open (`max_connections` minus the slots kept
for superusers), the service does not fail at start-up: it fails later, under load, with
"too many clients". So `Resources.open` checks at start-up and logs one clear warning with the
arithmetic. It only warns: other hosts, arq workers and a pooler in between can make the real
figure different either way, and the operator knows which.

A transaction pooler (PgBouncer in transaction mode, Neon's `-pooler` endpoint) multiplexes many
client connections over few server connections, which is how a fleet fits a small
`max_connections`; it cannot keep prepared statements per client, hence
`DATABASE_STATEMENT_CACHE_SIZE=0` behind one, which is also checked here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from gateway.data.accounts import off_because
from gateway.data.db import looks_like_pooler
from gateway.ops.settings import Settings

log = logging.getLogger(__name__)

_LIMITS_SQL = """
select current_setting('max_connections')::int as max_connections,
       current_setting('superuser_reserved_connections')::int as superuser_reserved,
       coalesce(current_setting('reserved_connections', true)::int, 0) as reserved
"""


@dataclass(frozen=True)
class Budget:
    """What our processes may open on one server against what the server allows."""

    server: str           # "primary" or "replica"
    processes: int
    per_process: int
    available: int        # max_connections - superuser_reserved_connections - reserved_connections
    listener: int = 0     # of per_process: the account cache's LISTEN (gateway/data/accounts.py)

    @property
    def needed(self) -> int:
        return self.processes * self.per_process

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    def message(self) -> str:
        listener = " + 1 listening for account changes" if self.listener else ""
        return (f"connection budget exceeded on the {self.server}: WORKERS={self.processes} x "
                f"(DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW{listener} = {self.per_process}) = "
                f"{self.needed} connections, but the server allows {self.available} "
                f"(max_connections minus reserved slots); lower the pool sizes, raise "
                f"max_connections, or put a transaction pooler in between "
                f"(with DATABASE_STATEMENT_CACHE_SIZE=0)")


async def server_budget(settings: Settings, pool: asyncpg.Pool, server: str) -> Budget:
    """The budget of one server, read from its own settings."""
    row = await pool.fetchrow(_LIMITS_SQL)
    available = row["max_connections"] - row["superuser_reserved"] - row["reserved"]
    listener = int(server == "primary" and off_because(settings) is None)
    return Budget(server, settings.workers,
                  settings.database_pool_size + settings.database_max_overflow + listener,
                  available, listener)


async def check_connection_budget(settings: Settings, pool: asyncpg.Pool,
                                  read_pool: asyncpg.Pool | None = None) -> list[Budget]:
    """Warn (never fail) when the pools cannot fit the servers; returns the budgets checked.

    A replica that cannot be reached at start-up is skipped: the read path falls back anyway.
    """
    budgets = [await server_budget(settings, pool, "primary")]
    if read_pool is not None:
        try:
            budgets.append(await server_budget(settings, read_pool, "replica"))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("connection budget of the replica not checked: %r", exc)
    for budget in budgets:
        if not budget.fits:
            log.warning("%s", budget.message())
    if settings.database_statement_cache_size and any(
            looks_like_pooler(url) for url in (settings.database_url, settings.database_read_url)):
        log.warning("DATABASE_URL looks like a transaction pooler (port 6432 or a Neon -pooler "
                    "host): set DATABASE_STATEMENT_CACHE_SIZE=0, or prepared statements will "
                    "fail across pooled server connections")
    return budgets
