"""How many SQL statements a request costs, counted by PostgreSQL itself (pg_stat_statements, this
database only; the extension is preloaded on the embedded server): an uncached dashboard is ONE
statement for its overview, trends and productivity (`analytics_figures`, loaders/cached.py's
shared batch), through either executor, plus the caller's account row when the process does not
keep it (its first request, or `ACCOUNT_CACHE_SECONDS=0`: gateway/data/accounts.py); kinds
already in the cache are not computed again; and that statement runs a generic plan, so it is
not planned again on every call."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from bench.run import ADMIN_QUERY, DASHBOARD_QUERY
from gateway.data.db import query
from gateway.data.resources import Resources
from gateway.ops.settings import Settings
from loaders import Loaders
from tests.factories import User, UserFactory
from workers.aggregation import aggregate_range

# What `make bench` sends.
DASHBOARD, ADMIN = DASHBOARD_QUERY, ADMIN_QUERY
OVERVIEW = "{ overview { totalTasks completedTasks overdueTasks } }"

# What asyncpg itself sends (connection reset on release, type introspection, new connections'
# settings) and this test's own bookkeeping: not statements of the request's code.
HOUSEKEEPING = (r"^(RESET ALL|UNLISTEN \*|CLOSE ALL|SELECT pg_advisory_unlock_all\(\))$"
                r"|typeinfo_tree|current_setting|pg_stat_statements|pg_prepared_statements")


def named() -> Counter[str]:
    """How many statements the app's pools have run so far, by their name in sql/queries/
    (`other` for any other SQL): asyncpg's query logger, `analytics_db_query_duration_seconds`
    (gateway/data/db.py)."""
    counts: Counter[str] = Counter()
    for metric in REGISTRY.collect():
        if metric.name == "analytics_db_query_duration_seconds":
            for sample in metric.samples:
                if sample.name.endswith("_count"):
                    counts[sample.labels["query_type"]] += int(sample.value)
    return counts


async def statements(pool: asyncpg.Pool, run: Callable[[], Awaitable[Any]]) -> Counter[str]:
    """The statements of sql/queries/ run while `run` ran, by name; checked against what
    PostgreSQL itself counted (pg_stat_statements, this database only, asyncpg's housekeeping
    aside), so that no other statement can hide."""
    await pool.execute("create extension if not exists pg_stat_statements")
    db = await pool.fetchval("select oid from pg_database where datname = current_database()")
    await pool.execute("select pg_stat_statements_reset(0, $1, 0)", db)  # this database only
    before = named()
    await run()
    counted = named() - before
    del counted["other"]  # asyncpg's type introspection on a connection's first use of a type
    executed = await pool.fetchval("select coalesce(sum(calls), 0) from pg_stat_statements "
                                   "where dbid = $1 and query !~* $2", db, HOUSEKEEPING)
    assert executed == sum(counted.values()), (executed, counted)
    return counted


async def busy_user(users: UserFactory, pool: asyncpg.Pool, **fields: Any) -> User:
    """A user with tasks of every kind the figures read (done on time and late, overdue, in
    progress with its event, created and due over the 30 days), their closed days rolled up and
    one of those days stale: the series reads rollup rows, stale days and today live."""
    user = await users.create(**fields)
    now = datetime.now(UTC)
    for days_ago in range(0, 40, 3):
        at = now - timedelta(days=days_ago)
        await users.task(user, status="done", priority="high", created_at=at - timedelta(days=2),
                         completed_at=at, due_date=(at - timedelta(days=days_ago % 2)).date())
        task = await users.task(user, status="in_progress", created_at=at,
                                due_date=(at + timedelta(days=1)).date())
        await pool.execute("insert into task_events (task_id, user_id, from_status, to_status, at)"
                           " values ($1, $2, 'todo', 'in_progress', $3)", task, user.id, at)
    await aggregate_range(pool, None, None, [user.id])
    await pool.execute("update daily_analytics set stale = true where user_id = $1 and date = "
                       "(select max(date) from daily_analytics where user_id = $1)", user.id)
    return user


async def post(client: httpx.AsyncClient, text: str, token: str) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": text},
                                 headers={"Authorization": f"Bearer {token}"})
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "graphql-core"])
@pytest.mark.parametrize("field_cache", [False, True], ids=["cache off", "cold cache"])
@pytest.mark.parametrize("account_cache", [60, 0], ids=["account kept", "account read"])
async def test_an_uncached_dashboard_is_one_statement_and_the_account_row_unless_kept(
        settings: Settings, pool: asyncpg.Pool, users: UserFactory, app_with: Any,
        token_for: Callable[..., str], compiled: bool, field_cache: bool,
        account_cache: int) -> None:
    user = await busy_user(users, pool, timezone="Asia/Kolkata")
    token = token_for(user.id)
    async with app_with(settings, compiled_execution=compiled, enable_query_cache=field_cache,
                        account_cache_seconds=account_cache) as client:
        await post(client, "{ me { email } }", token)  # the pool's connections are open
        counted = await statements(pool, lambda: post(client, DASHBOARD, token))
    expected = {"analytics_figures": 1} if account_cache else \
        {"analytics_users": 1, "analytics_figures": 1}
    assert counted == expected, counted


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "graphql-core"])
async def test_the_admin_page_is_one_statement_for_every_users_figures(
        settings: Settings, pool: asyncpg.Pool, users: UserFactory, app_with: Any,
        token_for: Callable[..., str], compiled: bool) -> None:
    admin = await users.create(role="admin")
    for i in range(24):
        user = await users.create(timezone=("UTC", "America/New_York", "Asia/Tokyo")[i % 3])
        await users.task(user, status="done", completed_at=datetime.now(UTC))
    token = token_for(admin.id, "admin")
    async with app_with(settings, compiled_execution=compiled,
                        enable_query_cache=False) as client:
        await post(client, "{ me { email } }", token)
        counted = await statements(pool, lambda: post(client, ADMIN, token))
    # The admin's account row is kept since its first request.
    assert counted == {"analytics_users_page": 1, "analytics_figures": 1}, counted


async def test_kinds_in_the_cache_are_served_from_it_and_only_the_misses_computed(
        settings: Settings, pool: asyncpg.Pool, users: UserFactory, app_with: Any,
        token_for: Callable[..., str]) -> None:
    user = await busy_user(users, pool, timezone="America/New_York")
    token = token_for(user.id)
    async with app_with(settings, enable_query_cache=False) as uncached:
        expected = (await post(uncached, DASHBOARD, token))["data"]
    async with app_with(settings, enable_query_cache=True) as client:
        await post(client, OVERVIEW, token)  # the overview is now in Redis, nothing else
        body: dict[str, Any] = {}

        async def dashboard() -> None:
            body.update(await post(client, DASHBOARD, token))

        counted = await statements(pool, dashboard)
        assert counted == {"analytics_figures": 1}, counted  # the account row is kept
        report = body["extensions"]["cache"]
        assert report["overview"]["hit"] is True
        assert report["trends"]["hit"] is False and report["productivity"]["hit"] is False
        assert body["data"] == expected

        counted = await statements(pool, lambda: post(client, DASHBOARD, token))
    assert counted == {}, counted  # every kind a hit, the account row kept: no statement


async def test_loads_a_tick_apart_share_one_statement_and_one_kind_alone_runs_it_too(
        settings: Settings, pool: asyncpg.Pool, users: UserFactory) -> None:
    user = await busy_user(users, pool)
    resources = await Resources.open(replace(settings, enable_query_cache=False))
    try:
        today = await pool.fetchval("select (now() at time zone 'UTC')::date")
        key = (user.id, today - timedelta(days=29), today)

        async def together() -> None:
            loaders = Loaders(resources)
            first = loaders.overview.load((user.id, today))
            await asyncio.sleep(0)  # the other kinds are asked a tick later
            values = await asyncio.gather(first, loaders.daily_series.load(key),
                                          loaders.productivity.load(key))
            assert values[0] is not None and values[0].completed_tasks == 14
            assert sum(day.tasks_completed for day in values[1].days) == 10
            assert values[2].longest_streak == 1

        assert await statements(pool, together) == {"analytics_users": 1,
                                                    "analytics_figures": 1}

        async def alone() -> None:
            assert (await Loaders(resources).productivity.load(key)).current_streak >= 0

        assert await statements(pool, alone) == {"analytics_users": 1, "analytics_figures": 1}
    finally:
        await resources.close()


async def test_the_figures_statement_is_planned_once_per_connection_not_per_call(
        pool: asyncpg.Pool, users: UserFactory) -> None:
    """Its estimates do not depend on its arguments (the arrays are read through a MATERIALIZED
    CTE, whose length the planner cannot see), so after PostgreSQL's five custom plans the plan
    cache keeps one generic plan: the planning, which cost more than the execution on the bench's
    data, is paid once per connection, whatever the tables' sizes make of the costs."""
    user = await busy_user(users, pool)
    today = await pool.fetchval("select (now() at time zone 'UTC')::date")
    sql = query("analytics_figures")

    def arguments(n: int) -> list[list[Any]]:
        ids = [user.id] * n
        froms, tos = [today - timedelta(days=29)] * n, [today] * n
        return [ids, ids, froms, tos, ids, froms, tos, ids]

    async with pool.acquire() as conn:
        costs = {n: (await conn.fetchval(f"explain (format json) {sql}", *arguments(n)))
                 for n in (0, 1, 100)}
        for n in range(10):  # one key, then none, two or one
            await conn.fetch(sql, *arguments(n % 3 if n >= 5 else 1))
        plans = await conn.fetchrow(
            "select generic_plans, custom_plans from pg_prepared_statements "
            "where statement = $1", sql)
    totals = {n: orjson.loads(plan)[0]["Plan"]["Total Cost"] for n, plan in costs.items()}
    assert totals[0] == totals[1] == totals[100], totals  # each planned for its own arguments
    assert plans is not None
    assert (plans["custom_plans"], plans["generic_plans"]) == (5, 5), dict(plans)
