"""A PostgreSQL outage answers 503 with `Retry-After`, logged once (issue 13, item 1).

The test runs its own small PostgreSQL cluster and stops it with `pg_ctl stop -m immediate` (what a
crash or a killed pod looks like to clients: connections cut, new ones refused) while the app
serves, then starts it again. Every kind of request must answer `SERVICE_UNAVAILABLE` with HTTP
503 and `Retry-After` during the outage (queries, mutations, sign-in, the CSV export), the log
must say so once (not once per request, and without a stack trace), and the service must answer
normally once the database is back, without a restart.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.data.migrate import migrate
from gateway.dev.embedded import PostgresServer, free_port
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token
from tests.conftest import running_app, until
from tests.factories import PASSWORD, UserFactory

OVERVIEW = "{ overview { totalTasks } }"
CREATE = 'mutation { createTask(input: {title: "written during the outage"}) { id } }'


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    # Outside pytest's tmp tree, like tests/conftest.py's scratch_dir: another pytest session
    # starting meanwhile would make that tree unreadable to the server's system user.
    path = Path(tempfile.mkdtemp(prefix="gateway-outage-"))
    server = PostgresServer(path, port=free_port(),
                            settings={"shared_buffers": "16MB", "max_connections": "30"})
    try:
        server.start()
        server.ensure_database()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def outage_app(server: PostgresServer, redis_url: str
                     ) -> AsyncIterator[tuple[httpx.AsyncClient, Settings, UserFactory]]:
    if not server.is_running():
        server.start()
    await migrate(server.url())
    settings = Settings.load(environ={
        "APP_ENV": "test", "DATABASE_URL": server.url(), "REDIS_URL": redis_url,
        "RATE_LIMIT_ENABLED": "false", "ENABLE_RESPONSE_CACHE": "false",
        "DATABASE_POOL_TIMEOUT": "2", "LOG_LEVEL": "WARNING"}, env_file=None)
    pool = await asyncpg.create_pool(server.url(), min_size=1, max_size=2)
    try:
        await pool.execute("truncate users cascade")
        async with running_app(settings) as client:
            yield client, settings, UserFactory(pool)
    finally:
        pool.terminate()


def _unavailable(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    body: dict[str, Any] = response.json()
    [error] = body["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE", body
    assert error["extensions"]["retryable"] is True
    assert "Traceback" not in response.text and "asyncpg" not in response.text
    return error


async def test_an_outage_answers_503_logs_once_and_recovers(
        outage_app: tuple[httpx.AsyncClient, Settings, UserFactory], server: PostgresServer,
        caplog: pytest.LogCaptureFixture) -> None:
    client, settings, users = outage_app
    user = await users.create(email="outage@example.com")
    await users.task(user)
    users.pool.terminate()  # the test's own connections would only see the outage too
    auth = {"Authorization": f"Bearer {create_access_token(settings, user.id, 'user')}"}

    async def gql(query: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await client.post("/graphql", json={"query": query}, headers=headers or {})

    ok = await gql(OVERVIEW, auth)
    assert ok.json()["data"] == {"overview": {"totalTasks": 1}}

    server.stop("immediate")
    # The account cache forgets its rows once its listening connection is gone (no change could
    # be heard); until then the caller's row may still be answered from memory.
    accounts = client.app.state.resources.accounts  # type: ignore[attr-defined]
    await until(lambda: not accounts.listening, "the account cache no longer listening")
    caplog.clear()
    caplog.set_level(logging.WARNING)
    try:
        for _ in range(5):
            _unavailable(await gql(OVERVIEW, auth))
        error = _unavailable(await gql(CREATE, auth))
        assert error["path"] == ["createTask"] or error.get("path") is None
        login = await client.post("/graphql", json={
            "query": 'mutation($p: String!) { login(email: "outage@example.com", password: $p) '
                     "{ accessToken } }", "variables": {"p": PASSWORD}})
        _unavailable(login)
        _unavailable(await client.get("/export/tasks.csv", headers=auth))
        assert (await client.get("/ready")).status_code == 503
        assert (await client.get("/health")).status_code == 200
    finally:
        server.start()

    records = [r for r in caplog.records if r.levelno >= logging.WARNING
               and not r.name.startswith("gateway.access")
               and "readiness" not in r.getMessage()]
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "PostgreSQL unavailable" in errors[0].getMessage()
    assert all(r.exc_info is None for r in records), [r.getMessage() for r in records]

    back = await gql(OVERVIEW, auth)
    assert back.status_code == 200 and back.json()["data"] == {"overview": {"totalTasks": 1}}
    assert any("PostgreSQL is back" in r.getMessage() for r in caplog.records)
    # Nothing was half-written: the mutation refused during the outage left no row.
    conn = await asyncpg.connect(server.url())
    try:
        assert await conn.fetchval("select count(*) from tasks") == 1
    finally:
        await conn.close()
