"""Timeouts: SQL statements cancelled after QUERY_TIMEOUT, pool waits bounded by
DATABASE_POOL_TIMEOUT (503, not a hang), a per-request deadline (504), graceful shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from gateway.data.db import create_pool
from gateway.dev.embedded import free_port
from gateway.ops.settings import Settings
from tests.conftest import running_app

ME = {"query": "{ me { id } }"}


async def test_a_statement_is_cancelled_after_query_timeout(settings: Settings) -> None:
    pool = await create_pool(replace(settings, query_timeout=0.3))
    try:
        with pytest.raises(asyncpg.QueryCanceledError):
            await pool.fetchval("select pg_sleep(5)")
        assert await pool.fetchval("select 1") == 1  # the connection is fine afterwards
    finally:
        await pool.close()


async def test_a_statement_timeout_reaches_the_client_as_service_unavailable(
        settings: Settings, users: Any, token_for: Callable[..., str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    user = await users.create()
    async with running_app(replace(settings, query_timeout=0.3)) as client:
        pool = client.app.state.resources.pool  # type: ignore[attr-defined]
        real_fetch = pool.fetch

        async def slow_fetch(*args: Any, **kwargs: Any) -> Any:
            return await real_fetch("select pg_sleep(5)")  # really cancelled by PostgreSQL

        monkeypatch.setattr(pool, "fetch", slow_fetch)
        response = await client.post("/graphql", json=ME,
                                     headers={"Authorization": f"Bearer {token_for(user.id)}"})
    assert response.status_code == 503
    assert response.headers["retry-after"]
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert "pg_sleep" not in response.text and "cancel" not in response.text.lower()


async def test_an_exhausted_pool_answers_503_instead_of_hanging(
        settings: Settings, users: Any, token_for: Callable[..., str]) -> None:
    user = await users.create()
    local = replace(settings, database_pool_size=1, database_max_overflow=0,
                    database_pool_timeout=0.3)
    async with running_app(local) as client:
        pool = client.app.state.resources.pool  # type: ignore[attr-defined]
        held = await pool.acquire()
        try:
            with pytest.raises(TimeoutError):  # after DATABASE_POOL_TIMEOUT, not never
                await pool.fetchval("select 1")
            response = await client.post(
                "/graphql", json=ME, headers={"Authorization": f"Bearer {token_for(user.id)}"})
        finally:
            await pool.release(held)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        # The connection is back: the same query now works.
        response = await client.post(
            "/graphql", json=ME, headers={"Authorization": f"Bearer {token_for(user.id)}"})
        assert response.json()["data"]["me"]["id"] == str(user.id)


async def test_the_request_deadline_answers_504(settings: Settings, users: Any,
                                                token_for: Callable[..., str]) -> None:
    user = await users.create()
    local = replace(settings, timeout=1, database_pool_size=1, database_max_overflow=0,
                    database_pool_timeout=30)
    async with running_app(local) as client:
        pool = client.app.state.resources.pool  # type: ignore[attr-defined]
        held = await pool.acquire()  # the request waits for a connection past its deadline
        try:
            response = await client.post(
                "/graphql", json=ME, headers={"Authorization": f"Bearer {token_for(user.id)}"})
        finally:
            await pool.release(held)
        assert response.status_code == 504
        assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert (await client.get("/health")).status_code == 200


@pytest.mark.slow
def test_graceful_shutdown_finishes_the_request_in_flight(settings: Settings,
                                                          tmp_path: Path) -> None:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "APP_ENV": "test",
           "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "",
           "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": "1", "TIMEOUT": "10",
           "RATE_LIMIT_ENABLED": "false", "LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.2)
        body = orjson.dumps({"query": "{ version }"})
        half = len(body) // 2
        with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
            conn.sendall(b"POST /graphql HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:half])
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)  # while the request is half received
            time.sleep(0.5)
            assert process.poll() is None, "the server quit with a request in flight"
            with pytest.raises(httpx.TransportError):  # no new requests are taken
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            conn.sendall(body[half:])
            response = b""
            while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert b'"version"' in response
        # uvicorn re-raises the signal once it has shut down, as a process killed by it would
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)
        output = process.stdout.read().decode()  # type: ignore[union-attr]
        assert "gateway stopped" in output  # the lifespan closed the pools
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_wait_that_gives_up_outside_graphql_is_503_not_504(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.http import app as app_module

    async def waits_for_a_connection(request: Any) -> Any:
        raise TimeoutError  # as Pool.acquire does after DATABASE_POOL_TIMEOUT

    monkeypatch.setattr(app_module, "health", waits_for_a_connection)
    async with running_app(settings) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
