from dataclasses import replace
from pathlib import Path

import httpx
from redis.asyncio import Redis

from gateway.dev.embedded import PostgresServer, RedisServer, free_port
from gateway.ops.settings import Settings
from tests.conftest import running_app


async def test_health_never_touches_the_database(settings: Settings) -> None:
    # A database URL that points nowhere: /health must still answer (it is the liveness probe).
    async with running_app(settings) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["version"] == settings.app_version
    assert body["service"] == settings.app_name  # APP_NAME
    assert "T" in body["timestamp"]


async def test_ready_when_both_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_ready_is_503_when_postgres_is_stopped(settings: Settings,
                                                     scratch_dir: Path) -> None:
    server = PostgresServer(scratch_dir / "pg", port=free_port())
    server.start()
    try:
        local = replace(settings, database_url=server.url("postgres"))
        async with running_app(local) as client:
            assert (await client.get("/ready")).status_code == 200
            server.stop(mode="immediate")
            response = await client.get("/ready")
            assert response.status_code == 503
            assert response.json()["checks"]["postgres"] == "unavailable"
            assert "password" not in response.text.lower()
            # Liveness is unaffected: restarting the pod would not bring PostgreSQL back.
            assert (await client.get("/health")).status_code == 200
    finally:
        server.stop()


async def test_ready_stays_200_but_degraded_when_only_redis_is_down(settings: Settings,
                                                                    tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port())
    server.start()
    try:
        local = replace(settings, redis_url=server.url())
        async with running_app(local) as client:
            assert (await client.get("/ready")).json()["checks"]["redis"] == "ok"
            server.stop()
            response = await client.get("/ready")
            assert response.status_code == 200
            assert response.json()["checks"] == {"postgres": "ok", "redis": "degraded"}
    finally:
        server.stop()


async def test_graphql_answers_and_graphiql_is_served_outside_production(
        client: httpx.AsyncClient, redis: Redis) -> None:
    response = await client.post("/graphql", json={"query": "{ version }"})
    assert response.json() == {"data": {"version": "1.0.0"}}
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
