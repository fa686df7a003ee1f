"""Error masking: expected errors keep their code; anything else is INTERNAL_SERVER_ERROR with a
request id, and only the log (under that id) has the stack trace. Production hides
introspection, GraphiQL and "Did you mean" suggestions."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import get_introspection_query

from gateway.ops import sentry
from gateway.ops.settings import Settings
from tests.conftest import running_app

Gql = Callable[..., Awaitable[dict[str, Any]]]
SECRET_TEXT = "password=hunter2 postgresql://analytics:s3cr3t-pw@db.internal/analytics"
LEAKS = ("hunter2", "s3cr3t", "Traceback", "RuntimeError", "db.internal", 'File "')


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


@pytest.fixture
def failing_database(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's pool raises a bug-like exception whose text holds secrets."""
    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"unexpected: {SECRET_TEXT}")

    pool = client.app.state.resources.pool  # type: ignore[attr-defined]
    for method in ("fetch", "fetchrow", "fetchval"):
        monkeypatch.setattr(pool, method, boom)


async def test_an_unexpected_error_is_masked_and_logged_under_the_request_id(
        client: httpx.AsyncClient, failing_database: None, users: Any,
        token_for: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    user = await users.create()
    caplog.set_level(logging.ERROR, logger="schema.extensions.errors")
    response = await client.post("/graphql", json={"query": "query Me { me { displayName } }"},
                                 headers={"Authorization": f"Bearer {token_for(user.id)}"})
    body = response.json()
    assert codes(body) == ["INTERNAL_SERVER_ERROR"]
    error = body["errors"][0]
    assert error["message"] == "Internal server error"
    assert error["path"] == ["me"]
    request_id = error["extensions"]["requestId"]
    assert request_id == response.headers["x-request-id"]
    for leak in LEAKS:
        assert leak not in response.text
    # The log has the stack trace, under the same id.
    records = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert records and records[0].exc_info is not None
    assert "RuntimeError" in caplog.text and "Me" in records[0].getMessage()


async def test_a_database_error_shows_no_sql(client: httpx.AsyncClient, pool: asyncpg.Pool,
                                             gql: Gql, users: Any,
                                             token_for: Callable[..., str]) -> None:
    user = await users.create()
    await pool.execute("alter table tasks rename to tasks_hidden_for_a_test")
    try:
        body = await gql("{ tasks(first: 5) { edges { node { id } } } }",
                         token=token_for(user.id))
    finally:
        await pool.execute("alter table tasks_hidden_for_a_test rename to tasks")
    assert codes(body) == ["INTERNAL_SERVER_ERROR"]
    text = str(body).lower()
    for leak in ("select", "relation", "tasks_hidden", "asyncpg", "undefined"):
        assert leak not in text


async def test_expected_errors_keep_their_code(gql: Gql) -> None:
    assert codes(await gql("{ me { id } }")) == ["UNAUTHENTICATED"]
    assert codes(await gql("{ nope }")) == ["GRAPHQL_VALIDATION_FAILED"]
    assert codes(await gql("{ version ")) == ["GRAPHQL_PARSE_FAILED"]


async def test_a_variable_of_the_wrong_type_is_bad_user_input(gql: Gql) -> None:
    body = await gql("query($n: Int) { tasks(first: $n) { edges { cursor } } }", {"n": "ten"})
    assert codes(body) == ["BAD_USER_INPUT"]
    body = await gql("query($d: Date) { trends(from: $d) { from } }", {"d": "2024-13-45"})
    assert codes(body) == ["BAD_USER_INPUT"]


@pytest.fixture
def production(settings: Settings) -> Settings:
    return replace(settings, app_env="production", jwt_secret_key="p" * 40)


async def test_production_has_no_introspection(production: Settings) -> None:
    async with running_app(production) as client:
        body = (await client.post("/graphql",
                                  json={"query": get_introspection_query()})).json()
        assert body.get("data") is None
        assert codes(body) and set(codes(body)) == {"GRAPHQL_VALIDATION_FAILED"}
        body = (await client.post("/graphql", json={"query": "{ __type(name: \"Query\") "
                                                             "{ name } }"})).json()
        assert body.get("data") is None
        # __typename is not introspection of the schema: clients rely on it.
        body = (await client.post("/graphql", json={"query": "{ __typename version }"})).json()
        assert body["data"]["__typename"] == "Query"


async def test_development_has_introspection_and_graphiql(client: httpx.AsyncClient) -> None:
    body = (await client.post("/graphql", json={"query": "{ __schema { queryType { name } } }"}
                              )).json()
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


async def test_production_has_no_graphiql(production: Settings) -> None:
    async with running_app(production) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 404
        assert "graphiql" not in page.text.lower()
        for explorer in ("/docs", "/redoc", "/graphiql"):
            assert (await client.get(explorer)).status_code == 404


@pytest.mark.parametrize("query", [
    "{ versoin }",                                          # field
    "{ trends(periodd: DAY) { from } }",                    # argument
    "{ trends(period: DAYY) { from } }",                    # enum value
    "query($f: TaskFiltr) { tasks(filter: $f) { edges { cursor } } }",  # type
])
async def test_production_suggests_nothing(client: httpx.AsyncClient, production: Settings,
                                           query: str) -> None:
    development = (await client.post("/graphql", json={"query": query})).json()
    assert "Did you mean" in str(development), "the development answer should suggest"
    async with running_app(production) as prod_client:
        body = (await prod_client.post("/graphql", json={"query": query})).json()
    assert body["errors"]
    assert "Did you mean" not in str(body)


@pytest.fixture
def sentry_events() -> Iterator[list[Any]]:
    from sentry_sdk.transport import Transport

    events: list[Any] = []

    class Capture(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            events.extend(item.payload.json for item in envelope.items
                          if item.payload.json is not None)

    settings = Settings.load(environ={"SENTRY_DSN": "https://key@sentry.invalid/1"},
                             env_file=None)
    assert sentry.init_sentry(settings, transport=Capture)
    try:
        yield events
    finally:
        sentry.close_sentry()


async def test_masked_errors_are_reported_to_sentry_with_the_request_id(
        client: httpx.AsyncClient, failing_database: None, users: Any,
        token_for: Callable[..., str], sentry_events: list[Any]) -> None:
    user = await users.create()
    response = await client.post("/graphql", json={"query": "{ me { displayName } }"},
                                 headers={"Authorization": f"Bearer {token_for(user.id)}"})
    request_id = response.json()["errors"][0]["extensions"]["requestId"]
    sentry.close_sentry()  # flushes
    events = [e for e in sentry_events if e.get("exception")]
    assert events and events[0]["tags"]["request_id"] == request_id
    assert events[0]["exception"]["values"][0]["type"] == "RuntimeError"


def test_no_sentry_without_a_dsn(settings: Settings) -> None:
    assert settings.sentry_dsn is None
    assert sentry.init_sentry(settings) is False
    sentry.capture(RuntimeError("nowhere to go"), "r1")  # a no-op, not an error
