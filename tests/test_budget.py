"""The connection budget checked at start-up against the real server's `max_connections`."""

from __future__ import annotations

import logging
from dataclasses import replace

import asyncpg
import pytest

from gateway.data.budget import check_connection_budget, looks_like_pooler
from gateway.data.resources import Resources
from gateway.ops.settings import Settings


async def server_allows(pool: asyncpg.Pool) -> int:
    row = await pool.fetchrow("select current_setting('max_connections')::int as m, "
                              "current_setting('superuser_reserved_connections')::int as s")
    return int(row["m"] - row["s"])


async def test_pools_that_fit_the_server_log_nothing(
        settings: Settings, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    small = replace(settings, workers=2, database_pool_size=5, database_max_overflow=10)
    with caplog.at_level(logging.WARNING, logger="gateway.data.budget"):
        [budget] = await check_connection_budget(small, pool)
    assert budget.fits and budget.needed == 32  # 2 x (5 + 10 + the account cache's listener)
    assert budget.available <= await server_allows(pool)
    assert caplog.records == []


async def test_too_many_workers_for_max_connections_warn_with_the_arithmetic(
        settings: Settings, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    allowed = await server_allows(pool)
    workers = allowed // 16 + 1  # one process more than fits at 5 + 10 + 1 connections each
    big = replace(settings, workers=workers, database_pool_size=5, database_max_overflow=10)
    with caplog.at_level(logging.WARNING, logger="gateway.data.budget"):
        [budget] = await check_connection_budget(big, pool)
    assert not budget.fits and budget.needed == workers * 16
    [record] = caplog.records
    assert f"WORKERS={workers}" in record.getMessage()
    assert "+ 1 listening for account changes = 16)" in record.getMessage()
    assert f"= {workers * 16} connections" in record.getMessage()
    # Without the account cache, no listener.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.data.budget"):
        [budget] = await check_connection_budget(replace(big, account_cache_seconds=0), pool)
    assert budget.needed == workers * 15
    # Nor when the cache is off for another reason (no live dashboards to hear changes through).
    with caplog.at_level(logging.WARNING, logger="gateway.data.budget"):
        [budget] = await check_connection_budget(replace(big, live_enabled=False), pool)
    assert budget.needed == workers * 15


async def test_resources_open_runs_the_check(settings: Settings, pool: asyncpg.Pool,
                                             caplog: pytest.LogCaptureFixture) -> None:
    big = replace(settings, workers=10_000)
    with caplog.at_level(logging.WARNING, logger="gateway.data.budget"):
        resources = await Resources.open(big)
        await resources.close()
    assert any("connection budget exceeded on the primary" in r.getMessage()
               for r in caplog.records)


async def test_a_transaction_pooler_with_a_statement_cache_is_flagged(
        settings: Settings, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    pooled = replace(settings, database_url="postgresql://app@ep-cool-1-pooler.eu.aws.neon.tech/db",
                     database_statement_cache_size=100)
    with caplog.at_level(logging.WARNING, logger="gateway.data.budget"):
        await check_connection_budget(pooled, pool)
    assert any("DATABASE_STATEMENT_CACHE_SIZE=0" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.data.budget"):
        await check_connection_budget(replace(pooled, database_statement_cache_size=0), pool)
    assert caplog.records == []


@pytest.mark.parametrize(("url", "pooler"), [
    ("postgresql://u@db.example.com:6432/app", True),
    ("postgresql+asyncpg://u@ep-x-123-pooler.us-east-2.aws.neon.tech/app", True),
    ("postgresql://u@ep-x-123.us-east-2.aws.neon.tech/app", False),
    ("postgresql://u@127.0.0.1:5432/app", False),
    (None, False),
])
def test_pooler_urls_are_recognised(url: str | None, pooler: bool) -> None:
    assert looks_like_pooler(url) is pooler
