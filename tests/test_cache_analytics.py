"""The cache behind the real analytics API: invalidation on a task change, no leaks between users,
warming, the cache switched off, and a Redis that is down. Hits and misses are read from the
Prometheus counters the cache exports."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from gateway.data.db import query
from gateway.dev.embedded import RedisServer, free_port
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token
from loaders.warming import warm_users
from tests.factories import UserFactory
from tests.samples import statements_run

Gql = Callable[..., Awaitable[dict[str, Any]]]
FIELDS = ("overview", "trends", "productivity")
OVERVIEW = "{ overview { totalTasks completedTasks pendingTasks completionRate } }"
DASHBOARD = """{
  overview { totalTasks completedTasks completionRate priorityDistribution { high medium low } }
  trends { period from to points { date tasksCreated tasksCompleted productivityScore } }
  productivity { score tasksCompleted currentStreak longestStreak leadTimeHours }
}"""
COMPLETE = """mutation($id: ID!) { updateTask(id: $id, input: {status: DONE}) { status } }"""


def counts() -> dict[str, tuple[float, float]]:
    """(hits, misses) per field so far."""
    return {field: (REGISTRY.get_sample_value("analytics_cache_hits_total", {"field": field})
                    or 0.0,
                    REGISTRY.get_sample_value("analytics_cache_misses_total", {"field": field})
                    or 0.0)
            for field in FIELDS}


def delta(before: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    after = counts()
    return {f: (after[f][0] - before[f][0], after[f][1] - before[f][1]) for f in FIELDS}


async def test_completing_a_task_shows_at_once_while_other_users_stay_cached(
        gql: Gql, users: UserFactory, token_for: Callable[..., str]) -> None:
    alice, bob = await users.create(), await users.create()
    task = await users.task(alice)
    await users.task(bob)
    alice_token, bob_token = token_for(alice.id), token_for(bob.id)
    for token in (alice_token, bob_token):
        assert (await gql(OVERVIEW, token=token))["data"]["overview"]["completedTasks"] == 0

    before = counts()
    completed = await gql(COMPLETE, {"id": str(task)}, token=alice_token)
    assert completed.get("errors") is None, completed
    alice_after = await gql(OVERVIEW, token=alice_token)
    bob_after = await gql(OVERVIEW, token=bob_token)

    assert alice_after["data"]["overview"] == {"totalTasks": 1, "completedTasks": 1,
                                               "pendingTasks": 0, "completionRate": 100.0}
    assert bob_after["data"]["overview"]["completedTasks"] == 0
    # alice's figure was recomputed (her version moved); bob's came from Redis
    assert delta(before)["overview"] == (1.0, 1.0)


async def test_two_users_asking_the_same_query_get_their_own_figures(
        gql: Gql, users: UserFactory, token_for: Callable[..., str]) -> None:
    alice, bob = await users.create(), await users.create()
    for _ in range(3):
        await users.task(alice)
    await users.task(bob)

    for _ in range(2):  # the second round is answered from the cache
        assert (await gql(OVERVIEW, token=token_for(alice.id)))["data"]["overview"][
            "totalTasks"] == 3
        assert (await gql(OVERVIEW, token=token_for(bob.id)))["data"]["overview"][
            "totalTasks"] == 1


async def test_a_warmed_dashboard_is_all_hits_and_equals_the_computed_one(
        client: httpx.AsyncClient, gql: Gql, users: UserFactory,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    await users.task(user, priority="high")
    token = token_for(user.id)
    computed = await gql(DASHBOARD, token=token)
    assert computed.get("errors") is None, computed

    resources = client.app.state.resources  # type: ignore[attr-defined]
    statements = ("analytics_figures", "analytics_overview", "analytics_daily_series",
                  "analytics_productivity_extras")
    ran = statements_run(statements)
    assert await warm_users(resources, [user.id]) == 1
    # All three kinds in one statement, as for a request (loaders/warming.py).
    assert {k: v - ran[k] for k, v in statements_run(statements).items()} == {
        "analytics_figures": 1.0, "analytics_overview": 0.0, "analytics_daily_series": 0.0,
        "analytics_productivity_extras": 0.0}
    before = counts()
    warmed = await gql(DASHBOARD, token=token)

    assert warmed["data"] == computed["data"]
    assert delta(before) == {"overview": (1.0, 0.0), "trends": (1.0, 0.0),
                             "productivity": (1.0, 0.0)}


async def test_the_dashboard_is_the_same_with_the_cache_switched_off(
        settings: Settings, gql: Gql, users: UserFactory, token_for: Callable[..., str],
        app_with: Callable[..., Any]) -> None:
    user = await users.create()
    await users.task(user, priority="low")
    token = token_for(user.id)
    cached = await gql(DASHBOARD, token=token)
    async with app_with(settings, enable_query_cache=False) as uncached_client:
        before = counts()
        response = await uncached_client.post(
            "/graphql", json={"query": DASHBOARD}, headers={"Authorization": f"Bearer {token}"})
        assert delta(before) == {f: (0.0, 0.0) for f in FIELDS}
    assert response.json()["data"] == cached["data"]


@pytest.mark.parametrize("outage", ["stop", "pause"])
async def test_the_dashboard_answers_from_postgres_when_redis_is_down_or_hung(
        settings: Settings, users: UserFactory, token_for: Callable[..., str],
        app_with: Callable[..., Any], tmp_path: Path, outage: str) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port())
    server.start()
    try:
        user = await users.create()
        await users.task(user)
        headers = {"Authorization": f"Bearer {token_for(user.id)}"}
        async with app_with(settings, redis_url=server.url(), rate_limit_enabled=False) as client:
            first = await client.post("/graphql", json={"query": DASHBOARD}, headers=headers)
            getattr(server, outage)()
            try:
                for _ in range(3):
                    response = await client.post("/graphql", json={"query": DASHBOARD},
                                                 headers=headers)
                    assert response.status_code == 200
                    body = response.json()
                    assert body.get("errors") is None, body
                    assert body["data"] == first.json()["data"]
            finally:
                server.resume()
    finally:
        server.stop()


async def test_extensions_cache_lists_each_field_with_hit_and_age(
        settings: Settings, gql: Gql, users: UserFactory,
        token_for: Callable[..., str], app_with: Callable[..., Any]) -> None:
    """Outside production the entry is always there; in production only with X-Cache-Debug."""
    user = await users.create()
    token = token_for(user.id)
    await gql(DASHBOARD, token=token)
    second = await gql(DASHBOARD, token=token)
    assert set(second["extensions"]["cache"]) == set(FIELDS)
    assert all(entry["hit"] is True and entry["age"] >= 0
               for entry in second["extensions"]["cache"].values())

    production = replace(settings, app_env="production", jwt_secret_key="x" * 40)
    async with app_with(production) as client:
        token = create_access_token(production, user.id, "user")
        headers = {"Authorization": f"Bearer {token}"}
        plain = await client.post("/graphql", json={"query": DASHBOARD}, headers=headers)
        asked = await client.post("/graphql", json={"query": DASHBOARD},
                                  headers={**headers, "X-Cache-Debug": "1"})
    assert "cache" not in (plain.json().get("extensions") or {})
    assert asked.json()["extensions"]["cache"]["overview"]["hit"] is True


HOUSEKEEPING = (r"^(RESET ALL|UNLISTEN \*|CLOSE ALL|SELECT pg_advisory_unlock_all\(\))$"
                r"|typeinfo_tree|current_setting|pg_stat_statements")


async def test_200_concurrent_dashboards_on_a_cold_cache_compute_each_figure_at_most_twice(
        client: httpx.AsyncClient, pool: Any, users: UserFactory,
        token_for: Callable[..., str]) -> None:
    """Counted by PostgreSQL itself (pg_stat_statements, this database only): the statements of
    the three cached figures run at most twice each, however many requests missed at once."""
    user = await users.create()
    await users.task(user, priority="high")
    headers = {"Authorization": f"Bearer {token_for(user.id)}"}
    await pool.execute("create extension if not exists pg_stat_statements")
    db = await pool.fetchval("select oid from pg_database where datname = current_database()")
    await pool.execute("select pg_stat_statements_reset(0, $1, 0)", db)

    responses = await asyncio.gather(*(client.post("/graphql", json={"query": DASHBOARD},
                                                   headers=headers) for _ in range(200)))

    bodies = [r.json() for r in responses]
    assert all(b.get("errors") is None and b["data"] == bodies[0]["data"] for b in bodies)
    rows = await pool.fetch("select query, calls from pg_stat_statements where dbid = $1 "
                            "and query !~* $2", db, HOUSEKEEPING)
    users_sql = sql_words(query("analytics_users"))  # the user row: never cached, by design
    assert sum(r["calls"] for r in rows if sql_words(r["query"]) == users_sql) == 200
    figures = [r["calls"] for r in rows if sql_words(r["query"]) != users_sql]
    # analytics_figures: the overview, per-day series and productivity extras in one statement
    assert len(figures) == 1
    assert all(1 <= calls <= 2 for calls in figures), figures


def sql_words(sql: str) -> str:
    """A statement without its comments and layout, to recognise it in pg_stat_statements."""
    return " ".join(re.sub(r"--[^\n]*", "", sql).split()).rstrip(";")
