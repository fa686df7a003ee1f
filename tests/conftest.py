"""Test fixtures: real PostgreSQL and Redis, never mocks of them.

By default the embedded servers are used (started for this run and stopped after it, unless they
were already running); `DATABASE_URL` / `REDIS_URL` point the suite at other servers instead. Each
test session gets a fresh database with the migrations applied and, with the embedded Redis, a
private redis-server of its own. Tables and Redis are emptied before every test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from gateway.data.db import normalize_dsn
from gateway.data.migrate import migrate
from gateway.data.resources import Resources
from gateway.dev.embedded import RedisServer, ensure_services, free_port
from gateway.http.app import create_app
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token
from tests.factories import User, UserFactory

TABLES = ("task_events", "daily_analytics", "rollup_coverage", "refresh_tokens", "tasks", "users")


def _with_database(url: str, name: str) -> str:
    base, _, _ = normalize_dsn(url).rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def server_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(PostgreSQL server URL, Redis URL) for this session."""
    services = ensure_services(os.environ.get("DATABASE_URL"), "redis://unused")
    redis_server = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        redis_server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port(),
                                   tied_to_parent=True)
        redis_server.start()
        redis_url = redis_server.url()
    try:
        yield services.database_url, redis_url
    finally:
        if redis_server is not None:
            redis_server.stop()
        services.stop_started()


@pytest.fixture(scope="session")
async def database_url(server_urls: tuple[str, str]) -> AsyncIterator[str]:
    """A fresh database for this session, with every migration applied; dropped afterwards."""
    server_url, _ = server_urls
    name = f"gw_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(_with_database(server_url, "postgres"))
    try:
        await admin.execute(f'create database "{name}"')
        url = _with_database(server_url, name)
        await migrate(url)
        yield url
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop, pause or restart it (`stop()`
    resumes a paused one first)."""
    server = RedisServer(tmp_path / "redis", port=free_port(), tied_to_parent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A private folder outside pytest's tmp tree, for a throwaway PostgreSQL cluster: pytest
    resets its own root to mode 0700 when a session starts, which would lock out the system user
    the embedded PostgreSQL runs as (when we are root) if another session starts meanwhile."""
    path = Path(tempfile.mkdtemp(prefix="gateway-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(server_urls: tuple[str, str]) -> str:
    return server_urls[1]


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    """Settings of a test run: the test database and Redis, no `.env` file, no rate limits."""
    return Settings.load(environ={
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RATE_LIMIT_ENABLED": "false",
        # Tests of GraphQL itself must reach it: tests/test_response_cache.py turns this on.
        "ENABLE_RESPONSE_CACHE": "false",
        "LOG_LEVEL": "WARNING",
    }, env_file=None)


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(autouse=True)
async def _clean_state(request: pytest.FixtureRequest) -> None:
    """Empty every table and the Redis database before each test that uses them."""
    if "pool" in request.fixturenames or "client" in request.fixturenames:
        pool: asyncpg.Pool = request.getfixturevalue("pool")
        await pool.execute(f"truncate {', '.join(TABLES)} cascade")
    if "redis" in request.fixturenames or "client" in request.fixturenames:
        redis: Redis = request.getfixturevalue("redis")
        await redis.flushdb()


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real ASGI app with its lifespan run, and an HTTP client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def client(settings: Settings, pool: asyncpg.Pool, redis: Redis
                 ) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as client:
        yield client


@pytest.fixture
def app_with() -> Callable[..., Any]:
    """`async with app_with(settings, PORT="x", ...)`: an app with some settings changed."""
    def make(base: Settings, **changes: Any) -> Any:
        return running_app(replace(base, **changes))

    return make


@pytest.fixture
def users(pool: asyncpg.Pool) -> UserFactory:
    return UserFactory(pool)


@pytest.fixture
async def resources(
    settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> AsyncIterator[Resources]:
    """The process's resources (pools, Redis clients, the cache) as the lifespan opens them."""
    opened = await Resources.open(settings)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def token_for(settings: Settings) -> Callable[..., str]:
    """An access token for a user id (and role), as a signed-in client would hold."""
    def make(user_id: uuid.UUID | str, role: str = "user") -> str:
        return create_access_token(settings, user_id, role)

    return make


async def settled(client: httpx.AsyncClient) -> None:
    """Wait until the app under test has applied every account change committed so far: tests
    change rows in SQL behind the API's back, then read through it, faster than PostgreSQL's
    notification reaches the app's account cache (gateway/data/accounts.py) in a real one."""
    resources = client.app.state.resources  # type: ignore[attr-defined]
    if resources.accounts is not None:
        assert await resources.accounts.settled(resources.pool), "account cache not listening"


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (10 s at most) for something that happens in the background."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def gql(client: httpx.AsyncClient) -> Callable[..., Awaitable[dict[str, Any]]]:
    """POST a GraphQL query; returns the decoded body (`data` and maybe `errors`). Every change
    committed before is seen (`settled`)."""
    async def run(query: str, variables: dict[str, Any] | None = None, *,
                  token: str | None = None, headers: dict[str, str] | None = None
                  ) -> dict[str, Any]:
        await settled(client)
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        response = await client.post("/graphql", json={"query": query, "variables": variables},
                                      headers=all_headers)
        body: dict[str, Any] = response.json()
        return body

    return run


@pytest.fixture
async def gql_uncached(settings: Settings, pool: asyncpg.Pool, redis: Redis,
                       app_with: Callable[..., Any]
                       ) -> AsyncIterator[Callable[..., Awaitable[dict[str, Any]]]]:
    """`gql` with the field cache off, for tests that change rows behind the API's back (plain
    SQL, no `tasks_changed`) and check what PostgreSQL answers."""
    async with app_with(settings, enable_query_cache=False) as client:
        async def run(query: str, variables: dict[str, Any] | None = None, *,
                      token: str | None = None) -> dict[str, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            await settled(client)
            response = await client.post("/graphql", json={"query": query,
                                                            "variables": variables},
                                         headers=headers)
            body: dict[str, Any] = response.json()
            return body

        yield run


@pytest.fixture
async def alice(users: UserFactory) -> User:
    return await users.create(email="alice@example.com")


@pytest.fixture
def as_alice(gql: Callable[..., Awaitable[dict[str, Any]]], alice: User,
             token_for: Callable[..., str]) -> Callable[..., Awaitable[dict[str, Any]]]:
    """`gql` signed in as alice."""
    token = token_for(alice.id)

    async def run(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return await gql(query, variables, token=token)

    return run


def pytest_report_header(config: pytest.Config) -> str:
    return (f"database: {os.environ.get('DATABASE_URL') or 'embedded PostgreSQL'}, "
            f"redis: {os.environ.get('REDIS_URL') or 'private embedded redis-server'}, "
            f"data dir: {Path('.data').resolve()}")
