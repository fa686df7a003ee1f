"""Prometheus metrics: the deployment guide's names on `/metrics`, counting what happens, and
right with several uvicorn workers (multiprocess mode) and on `PROMETHEUS_PORT`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gateway.dev.embedded import free_port
from gateway.ops.settings import Settings

GUIDE_NAMES = ("analytics_requests_total", "analytics_request_duration_seconds",
               "analytics_cache_hits_total", "analytics_cache_misses_total",
               "analytics_db_query_duration_seconds", "analytics_active_users",
               "analytics_tasks_total", "analytics_db_pool_size", "analytics_db_pool_in_use")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_has_the_guides_names_without_a_redirect(client: httpx.AsyncClient
                                                               ) -> None:
    import gateway.cache.fields  # noqa: F401  (defines the cache counters, as the app's resolvers do)

    await client.post("/graphql", json={"query": "{ version }"})
    response = await client.get("/metrics", follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    for name in GUIDE_NAMES:
        assert name in names or name.removesuffix("_total") in names, name  # gauge, counter
    assert "analytics_graphql_operations" in names


async def test_requests_are_counted_by_method_endpoint_and_status(client: httpx.AsyncClient
                                                                  ) -> None:
    labels = {"method": "POST", "endpoint": "/graphql", "status": "200"}
    before = sample("analytics_requests_total", **labels)
    timed = sample("analytics_request_duration_seconds_count", method="POST", endpoint="/graphql")
    for _ in range(3):
        await client.post("/graphql", json={"query": "{ version }"})
    assert sample("analytics_requests_total", **labels) == before + 3
    assert sample("analytics_request_duration_seconds_count", method="POST",
                  endpoint="/graphql") == timed + 3
    # Unknown paths share one label value, so random URLs cannot grow the series without end.
    unmatched = sample("analytics_requests_total", method="GET", endpoint="unmatched",
                       status="404")
    await client.get(f"/random-{time.time_ns()}")
    assert sample("analytics_requests_total", method="GET", endpoint="unmatched",
                  status="404") == unmatched + 1


async def test_graphql_operations_are_counted_and_timed(client: httpx.AsyncClient) -> None:
    ok = {"operation": "Ping", "type": "query", "status": "ok"}
    error = {"operation": "Ping", "type": "query", "status": "error"}
    before_ok, before_error = (sample("analytics_graphql_operations_total", **ok),
                               sample("analytics_graphql_operations_total", **error))
    await client.post("/graphql", json={"query": "query Ping { version }"})
    await client.post("/graphql", json={"query": "query Ping { me { id } }"})
    assert sample("analytics_graphql_operations_total", **ok) == before_ok + 1
    assert sample("analytics_graphql_operations_total", **error) == before_error + 1
    assert sample("analytics_graphql_operation_duration_seconds_count", operation="Ping",
                  type="query") >= 2


async def test_sql_is_timed_by_query_name(client: httpx.AsyncClient, users: Any,
                                          token_for: Callable[..., str]) -> None:
    def total() -> float:
        return sum(s.value for m in REGISTRY.collect()
                   if m.name == "analytics_db_query_duration_seconds"
                   for s in m.samples if s.name.endswith("_count")
                   and s.labels.get("query_type") != "other")

    user = await users.create()
    before = total()
    response = await client.post("/graphql", json={"query": "{ me { displayName } }"},
                                 headers={"Authorization": f"Bearer {token_for(user.id)}"})
    assert "errors" not in response.json()
    for _ in range(50):  # asyncpg calls query loggers soon after the statement, not at once
        if total() > before:
            break
        await __import__("asyncio").sleep(0.01)
    assert total() > before


async def test_business_gauges(client: httpx.AsyncClient, pool: asyncpg.Pool, users: Any
                               ) -> None:
    ann, bob = await users.create(), await users.create()
    for _ in range(3):
        await users.task(ann)
    await users.task(bob)
    await pool.execute("insert into daily_analytics (user_id, date) values ($1, $2)",
                       ann.id, date.today())
    await pool.execute("analyze tasks")
    text = (await client.get("/metrics")).text
    values = samples(text)
    assert values[("analytics_active_users", ())] == 1
    assert values[("analytics_tasks_total", ())] == 4


async def test_task_gauges_come_from_the_materialized_views(client: httpx.AsyncClient,
                                                             pool: asyncpg.Pool, users: Any,
                                                             app_with: Any, settings: Settings
                                                             ) -> None:
    from workers.jobs import refresh_materialized_views

    now = datetime.now(UTC)
    ann, bob = await users.create(), await users.create()
    await users.task(ann, status="todo", priority="high", due_date=now.date() - timedelta(days=3))
    await users.task(ann, status="in_progress", priority="low", due_date=now.date())
    await users.task(bob, status="done", priority="medium", completed_at=now)
    await users.task(bob, status="todo", deleted=True, deleted_at=now)  # not counted
    month = now.date().replace(day=1)
    await pool.execute("insert into daily_analytics (user_id, date, tasks_created, tasks_completed)"
                       " values ($1, $2, 3, 1), ($3, $2, 5, 2), ($3, $4, 7, 7)",
                       ann.id, month, bob.id, month - timedelta(days=1))  # last month: not counted
    await refresh_materialized_views(pool)
    gauges = client.app.state.business_gauges  # type: ignore[attr-defined]

    async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        await gauges.refresh(pool, force=True)
        return samples((await client.get("/metrics")).text)

    values = await scrape()
    assert {s: values[("analytics_tasks_by_status", (("status", s),))]
            for s in ("todo", "in_progress", "done")} == {"todo": 1, "in_progress": 1, "done": 1}
    assert {p: values[("analytics_tasks_by_priority", (("priority", p),))]
            for p in ("high", "medium", "low")} == {"high": 1, "medium": 1, "low": 1}
    assert values[("analytics_open_tasks", (("overdue", "true"),))] == 1
    assert values[("analytics_open_tasks", (("overdue", "false"),))] == 1  # due today
    assert values[("analytics_tasks_this_month", (("event", "created"),))] == 8
    assert values[("analytics_tasks_this_month", (("event", "completed"),))] == 3
    # As of the views' last refresh, not live: a new task shows once the worker refreshes them.
    await users.task(bob, status="todo", priority="high")
    values = await scrape()
    assert values[("analytics_tasks_by_status", (("status", "todo"),))] == 1
    await refresh_materialized_views(pool)
    values = await scrape()
    assert values[("analytics_tasks_by_status", (("status", "todo"),))] == 2
    assert values[("analytics_tasks_by_priority", (("priority", "high"),))] == 2
    # With ENABLE_MATERIALIZED_VIEWS=false nothing refreshes the views, so nothing reads them.
    async with app_with(settings, enable_materialized_views=False) as other:
        assert other.app.state.business_gauges.views_sql is None  # type: ignore[attr-defined]


async def test_build_info_names_the_service(client: httpx.AsyncClient, settings: Settings
                                           ) -> None:
    values = samples((await client.get("/metrics")).text)
    labels = (("env", "test"), ("service", settings.app_name), ("version", settings.app_version))
    assert values[("analytics_build_info", labels)] == 1


async def test_pool_gauges(client: httpx.AsyncClient, settings: Settings) -> None:
    pool = client.app.state.resources.pool  # type: ignore[attr-defined]
    async with pool.acquire(), pool.acquire():
        values = samples((await client.get("/metrics")).text)
    assert values[("analytics_db_pool_in_use", ())] == 2
    assert values[("analytics_db_pool_size", ())] == (settings.database_pool_size
                                                      + settings.database_max_overflow)
    values = samples((await client.get("/metrics")).text)
    assert values[("analytics_db_pool_in_use", ())] == 0


def test_metrics_can_be_turned_off(settings: Settings) -> None:
    from dataclasses import replace

    from gateway.http.app import create_app

    app = create_app(replace(settings, prometheus_enabled=False))
    assert "/metrics" not in {getattr(route, "path", None) for route in app.routes}


@pytest.fixture
def served(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`python -m gateway serve` with 2 workers and PROMETHEUS_PORT; (API URL, metrics URL)."""
    port, metrics_port = free_port(), free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "APP_ENV": "test",
           "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "",
           "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": "2",
           "PROMETHEUS_PORT": str(metrics_port), "RATE_LIMIT_ENABLED": "false",
           "LOG_LEVEL": "WARNING", "TIMEOUT": "5"}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield url, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_several_workers_add_up(served: tuple[str, str]) -> None:
    url, metrics_url = served
    key = ("analytics_requests_total",
           (("endpoint", "/graphql"), ("method", "POST"), ("status", "200")))
    before = samples(httpx.get(f"{url}/metrics").text).get(key, 0.0)
    with httpx.Client() as client:  # one connection: uvicorn may hand it to either worker
        for _ in range(20):
            assert client.post(f"{url}/graphql", json={"query": "{ version }"},
                               headers={"Connection": "close"}).status_code == 200
    # Whichever worker answers the scrape, it reports both workers' requests, and so does the
    # supervisor's PROMETHEUS_PORT.
    for _ in range(4):
        assert samples(httpx.get(f"{url}/metrics").text)[key] == before + 20
    assert samples(httpx.get(metrics_url).text)[key] == before + 20
