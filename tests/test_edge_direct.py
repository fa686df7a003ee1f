"""`GET`/`POST /graphql` skip Starlette's own layers (gateway/http/app.py `Gateway`): the same
middleware around the same endpoint. Proved differentially: every request below gets the same
status, headers and body through the direct way and through Starlette's stack (the application
with its direct way switched off), the request id aside."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from gateway.ops.settings import Settings
from tests.factories import UserFactory

DASHBOARD = ("{ overview { totalTasks completionRate } trends { points { date tasksCompleted } }"
             " productivity { score } }")
BIG = "{ trends(period: DAY) { points { date tasksCreated tasksCompleted productivityScore } } }"
UNKNOWN_HASH = hashlib.sha256(b"never sent").hexdigest()
VARYING = {"x-request-id", "traceparent", "date"}


def requests(token: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, httpx arguments) of requests that take every turn of the edge."""
    auth = {"Authorization": f"Bearer {token}"}
    return [
        ("POST", "/graphql", {"json": {"query": DASHBOARD}, "headers": auth}),
        ("POST", "/graphql", {"json": {"query": DASHBOARD}, "headers": {
            **auth, "Origin": "http://localhost:3000"}}),                     # CORS, allowed
        ("POST", "/graphql", {"json": {"query": DASHBOARD}, "headers": {
            **auth, "Origin": "http://evil.example"}}),                       # CORS, not allowed
        ("POST", "/graphql", {"json": {"query": BIG}, "headers": {
            **auth, "Accept-Encoding": "gzip"}}),                             # compressed
        ("POST", "/graphql", {"json": {"query": BIG}, "headers": auth}),      # large, identity
        ("GET", "/graphql", {"params": {"query": DASHBOARD}, "headers": auth}),
        ("POST", "/graphql", {"json": {"query": "{ me { email } }"}}),        # not signed in
        ("POST", "/graphql", {"json": {"query": "{ nope }"}, "headers": auth}),
        ("POST", "/graphql", {"content": b"query=1", "headers": {
            **auth, "Content-Type": "application/x-www-form-urlencoded"}}),  # 415
        ("POST", "/graphql", {"content": b"{", "headers": {
            **auth, "Content-Type": "application/json"}}),                    # bad JSON
        ("POST", "/graphql", {"json": [{"query": DASHBOARD}], "headers": auth}),  # a batch
        ("POST", "/graphql", {"json": {"query": "x" * 70_000}, "headers": auth}),  # too large
        ("POST", "/graphql", {"json": {"extensions": {"persistedQuery": {
            "version": 1, "sha256Hash": UNKNOWN_HASH}}}, "headers": auth}),
        ("POST", "/graphql", {"json": {"query": DASHBOARD}, "headers": {
            **auth, "Host": "elsewhere.example"}}),                            # ALLOWED_HOSTS
        ("PUT", "/graphql", {"json": {"query": DASHBOARD}, "headers": auth}),  # Starlette's 405
        ("OPTIONS", "/graphql", {"headers": {                                  # preflight
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}}),
    ]


def comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body, without what differs from one request to the next: the request
    id, the age of a cached response (in `extensions.cache`), and so a compressed length."""
    varying = VARYING | ({"content-length"} if "content-encoding" in response.headers else set())
    headers = sorted((k, v) for k, v in response.headers.multi_items() if k not in varying)
    body = response.content  # decompressed by httpx
    if b'"age":' in body:
        answer = orjson.loads(body)
        for report in answer.get("extensions", {}).get("cache", {}).values():
            report.pop("age", None)
        body = orjson.dumps(answer)
    return response.status_code, headers, body


@pytest.fixture
def edge_settings(settings: Settings) -> Settings:
    return replace(settings, allowed_hosts=("testserver",), max_body_bytes=65_536,
                   cors_origins=("http://localhost:3000",), rate_limit_enabled=True,
                   rate_limit_per_minute=10_000, enable_response_cache=True)


async def test_the_direct_way_answers_as_starlettes_stack_does(
        edge_settings: Settings, redis: Redis, users: UserFactory, app_with: Any,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    for _ in range(3):
        await users.task(user, status="done", completed_at=datetime.now(UTC))
    async with app_with(edge_settings) as client:
        app = client.app
        direct = app.graphql
        assert direct is not None
        seen: list[tuple[int, list[tuple[str, str]], bytes]] = []
        for method, path, arguments in requests(token_for(user.id)):
            await client.request(method, path, **arguments)  # caches filled alike for both
            answers = []
            for way in (direct, None):
                app.graphql = way
                answers.append(comparable(await client.request(method, path, **arguments)))
            app.graphql = direct
            assert answers[0] == answers[1], (method, path, arguments)
            seen.append(answers[0])
    # The requests did take the turns they were meant to.
    assert {status for status, _, _ in seen} >= {200, 400, 405, 413, 415}
    headers = [dict(h) for _, h, _ in seen]
    assert any(h.get("content-encoding") == "gzip" for h in headers)
    assert any(h.get("access-control-allow-origin") == "http://localhost:3000" for h in headers)
    assert any(h.get("x-response-cache") == "hit" for h in headers)


async def test_the_direct_way_is_taken_and_rate_limited(
        edge_settings: Settings, redis: Redis, users: UserFactory, app_with: Any,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    limited = replace(edge_settings, rate_limit_per_minute=2)
    async with app_with(limited) as client:
        taken: list[str] = []
        inner = client.app.graphql

        async def spy(scope: Any, receive: Any, send: Any) -> None:
            taken.append(scope["path"])
            await inner(scope, receive, send)

        client.app.graphql = spy
        auth = {"Authorization": f"Bearer {token_for(user.id)}"}
        codes = [(await client.post("/graphql", json={"query": "{ me { email } }"},
                                    headers=auth)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert taken == ["/graphql"] * 3
        assert (await client.get("/health")).status_code == 200
        assert taken == ["/graphql"] * 3  # other paths: Starlette's router
        body = orjson.loads((await client.post("/graphql", json={"query": "{ me { email } }"},
                                               headers=auth)).content)
        assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
