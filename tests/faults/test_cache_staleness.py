"""No process serves a figure older than an acknowledged write, whatever Redis does (issue 13,
item 2).

Two real API processes (`python -m gateway serve`) share the test database and a redis-server of
the test's own with AOF on (`appendfsync always`, as in infra/redis/redis.conf but stricter), so
that a restarted Redis comes back with every entry it had, the stale ones included. Process B
caches the dashboard (the field cache and the whole-response cache); then Redis is killed or
paused, process A acknowledges a write, Redis comes back (restarted from its AOF, or resumed), and
B is asked again and again. Every answer B gives after the write was acknowledged must include it.

The guarantee comes from keying every cache entry by the user's `data_version`, which the write's
own transaction raises in PostgreSQL and each request reads from PostgreSQL before it reads Redis
(docs/cache.md): no message has to reach Redis, or another process, for the old entry to be dead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.dev.embedded import RedisServer, free_port
from gateway.ops.settings import Settings
from tests.factories import UserFactory

pytestmark = pytest.mark.slow

DASHBOARD = "{ overview { totalTasks completedTasks } trends { points { tasksCreated } } }"
CREATE = 'mutation { createTask(input: {title: "acknowledged"}) { id } }'
ROOT = Path(__file__).resolve().parents[2]  # the code under test, wherever it is checked out
READS_AFTER = 40  # answers asked of process B after each write, spread over ~2 s


@pytest.fixture
def aof_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("aof-redis"), port=free_port(),
                         extra_args=("--appendonly", "yes", "--appendfsync", "always"),
                         tied_to_parent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _serve(settings: Settings, redis_url: str, port: int, cwd: Path) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
           "APP_ENV": "test",
           "DATABASE_URL": settings.database_url or "", "REDIS_URL": redis_url,
           "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": "1",
           "RATE_LIMIT_ENABLED": "false", "ENABLE_RESPONSE_CACHE": "true",
           "CACHE_CIRCUIT_SECONDS": "0.5", "LOG_LEVEL": "WARNING"}
    log = open(cwd / f"api-{port}.log", "wb")  # the process keeps it open
    return subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
async def two_processes(settings: Settings, aof_redis: RedisServer, tmp_path: Path,
                        pool: asyncpg.Pool) -> AsyncIterator[tuple[str, str]]:
    """Base URLs of API processes A and B, both up; both killed at the end whatever happens."""
    ports = [free_port(), free_port()]
    processes = [_serve(settings, aof_redis.url(), port, tmp_path) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            deadline = time.monotonic() + 60
            for url, process in zip(urls, processes, strict=True):
                while True:
                    try:
                        if (await client.get(f"{url}/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert process.poll() is None and time.monotonic() < deadline, \
                        (tmp_path / f"api-{url.rsplit(':', 1)[1]}.log").read_text()[-2000:]
                    await asyncio.sleep(0.2)
        yield urls[0], urls[1]
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


async def _ask(client: httpx.AsyncClient, url: str, token: str, query: str = DASHBOARD
               ) -> httpx.Response:
    response = await client.post(f"{url}/graphql", json={"query": query},
                                 headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert "errors" not in response.json(), response.text
    return response


def _total(response: httpx.Response) -> int:
    return int(response.json()["data"]["overview"]["totalTasks"])


async def _warm(client: httpx.AsyncClient, url: str, token: str, expected: int) -> None:
    """Ask until the answer comes from the response cache: the stale entry-to-be exists."""
    for _ in range(20):
        response = await _ask(client, url, token)
        assert _total(response) == expected
        if response.headers.get("x-response-cache") == "hit":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the dashboard never came from the response cache")


async def _every_answer_is_fresh(client: httpx.AsyncClient, url: str, token: str,
                                 pool: asyncpg.Pool, user_id: Any) -> list[str]:
    """Ask B `READS_AFTER` times; each answer must count every task the database has."""
    sources = []
    for _ in range(READS_AFTER):
        expected = await pool.fetchval(
            "select count(*) from tasks where user_id = $1 and not deleted", user_id)
        response = await _ask(client, url, token)
        assert _total(response) == expected, (response.headers, response.text)
        sources.append(response.headers.get("x-response-cache", "miss"))
        await asyncio.sleep(0.05)
    return sources


@pytest.mark.parametrize("fault", ["kill-and-restart-from-aof", "pause"])
async def test_no_process_serves_an_answer_older_than_an_acknowledged_write(
        fault: str, two_processes: tuple[str, str], aof_redis: RedisServer,
        users: UserFactory, pool: asyncpg.Pool, token_for: Callable[..., str]) -> None:
    a, b = two_processes
    user = await users.create()
    for _ in range(3):
        await users.task(user)
    token = token_for(user.id)
    async with httpx.AsyncClient(timeout=10) as client:
        await _warm(client, b, token, 3)
        await _warm(client, a, token, 3)

        for round_ in range(2):  # twice: the second write meets entries cached after the first
            if fault == "pause":
                aof_redis.pause()
            else:
                os.kill(aof_redis.pid() or 0, signal.SIGKILL)
                aof_redis._proc and aof_redis._proc.wait(timeout=10)
            try:
                created = await _ask(client, a, token, CREATE)  # acknowledged by A
                assert created.json()["data"]["createTask"]["id"]
            finally:
                if fault == "pause":
                    aof_redis.resume()
                else:
                    aof_redis.start()  # replays its AOF: every entry it had is back
            sources = await _every_answer_is_fresh(client, b, token, pool, user.id)
            assert _total(await _ask(client, a, token)) == 4 + round_
            # B did use Redis again once it was back (the test would prove nothing otherwise)
            assert "hit" in sources, sources
