"""The HTTP edge: body size, content type, batching, GET mutations, CORS, trusted hosts,
compression, security headers and request ids."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import orjson
from graphql import get_introspection_query

from gateway.ops.settings import Settings
from tests.conftest import running_app

MiB = 1024 * 1024


def code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["extensions"]["code"])


async def test_a_2_mib_body_is_refused_with_413(client: httpx.AsyncClient) -> None:
    padding = "x" * (2 * MiB)
    response = await client.post("/graphql", json={"query": "{ version }",
                                                   "variables": {"padding": padding}})
    assert response.status_code == 413
    assert code(response) == "QUERY_TOO_COMPLEX"


async def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(
        client: httpx.AsyncClient) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"query": "{ version }", "variables": {"p": "'
        for _ in range(64):  # up to 4 MiB, in 64 KiB pieces, with no Content-Length
            sent += 1
            yield b"x" * 65536
        yield b'"}}'

    response = await client.post("/graphql", content=chunks(),
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert sent < 64, "the gate should stop reading once the limit is passed"


async def test_a_body_just_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    body = orjson.dumps({"query": "{ version }", "variables": {"p": "x" * (MiB - 100)}})
    assert len(body) < MiB
    response = await client.post("/graphql", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.json()["data"]["version"]


async def test_batches_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json=[{"query": "{ version }"}] * 3)
    assert response.status_code == 400
    assert code(response) == "BAD_USER_INPUT"


async def test_post_takes_json_only(client: httpx.AsyncClient) -> None:
    for content_type, content in [("text/plain", '{"query": "{ version }"}'),
                                  ("application/x-www-form-urlencoded", "query=%7Bversion%7D"),
                                  ("multipart/form-data; boundary=x", "--x--")]:
        response = await client.post("/graphql", content=content,
                                     headers={"Content-Type": content_type})
        assert response.status_code == 415, content_type
    ok = await client.post("/graphql", content='{"query": "{ version }"}',
                           headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


async def test_queries_work_over_get_but_mutations_do_not(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "{ version }"})
    assert response.status_code == 200 and response.json()["data"]["version"]
    mutation = 'mutation { login(email: "a@example.com", password: "x") { accessToken } }'
    response = await client.get("/graphql", params={"query": mutation})
    assert response.status_code in (400, 405)
    assert "accessToken" not in response.text


async def test_cors_allows_the_configured_origins_only(settings: Settings) -> None:
    local = replace(settings, cors_origins=("https://app.example.com",), cors_credentials=True)
    async with running_app(local) as client:
        preflight = await client.options("/graphql", headers={
            "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        assert preflight.headers["access-control-allow-credentials"] == "true"
        simple = await client.post("/graphql", json={"query": "{ version }"},
                                   headers={"Origin": "https://app.example.com"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()

        other = await client.options("/graphql", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        simple = await client.post("/graphql", json={"query": "{ version }"},
                                   headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers


async def test_trusted_hosts(settings: Settings) -> None:
    local = replace(settings, allowed_hosts=("api.example.com",))
    async with running_app(local) as client:
        ok = await client.post("/graphql", json={"query": "{ version }"},
                               headers={"Host": "api.example.com"})
        assert ok.status_code == 200
        bad = await client.post("/graphql", json={"query": "{ version }"},
                                headers={"Host": "evil.example"})
        assert bad.status_code == 400
        # Probes and scrapers call by IP address (kubelet, Docker, Prometheus): never refused.
        for path in ("/health", "/ready", "/metrics"):
            probe = await client.get(path, headers={"Host": "10.0.0.7:8000"})
            assert probe.status_code == 200, path


async def test_responses_over_1000_bytes_are_gzipped(client: httpx.AsyncClient,
                                                     settings: Settings) -> None:
    big = {"query": get_introspection_query()}
    response = await client.post("/graphql", json=big, headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["data"]["__schema"]  # httpx decompresses
    small = await client.get("/health", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers
    async with running_app(replace(settings, enable_response_compression=False)) as plain:
        response = await plain.post("/graphql", json=big, headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in response.headers


async def test_gzip_really_compresses(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", "/graphql", json={"query": get_introspection_query()},
                             headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert len(gzip.decompress(raw)) > 2 * len(raw)


async def test_security_headers_on_every_response(client: httpx.AsyncClient,
                                                  settings: Settings) -> None:
    responses = [await client.get("/health"),
                 await client.post("/graphql", json={"query": "{ version }"}),
                 await client.post("/graphql", content="x", headers={"Content-Type": "text/x"}),
                 await client.get("/nowhere")]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "SAMEORIGIN"
        assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert "strict-transport-security" not in response.headers
    production = replace(settings, app_env="production", jwt_secret_key="p" * 40)
    async with running_app(production) as prod:
        response = await prod.get("/health")
        assert response.headers["strict-transport-security"].startswith("max-age=31536000")


async def test_request_ids(client: httpx.AsyncClient) -> None:
    one = await client.get("/health")
    two = await client.get("/health")
    assert len(one.headers["x-request-id"]) == 32
    assert one.headers["x-request-id"] != two.headers["x-request-id"]
    given = await client.get("/health", headers={"X-Request-ID": "edge-7f3a.1"})
    assert given.headers["x-request-id"] == "edge-7f3a.1"
    hostile = await client.get("/health", headers={"X-Request-ID": "x\" ; drop table" * 10})
    assert hostile.headers["x-request-id"] != "x\" ; drop table" * 10


async def test_an_unhandled_error_is_a_json_500_with_the_request_id(
        settings: Settings, monkeypatch: Any) -> None:
    from gateway.http import app as app_module

    async def broken(request: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(app_module, "health", broken)
    async with running_app(settings) as client:
        response = await client.get("/health")
    assert response.status_code == 500
    assert code(response) == "INTERNAL_SERVER_ERROR"
    assert response.json()["errors"][0]["extensions"]["requestId"] == \
        response.headers["x-request-id"]
    assert "secret" not in response.text


def test_the_middleware_is_pure_asgi() -> None:
    # BaseHTTPMiddleware costs a task and a stream copy per request: none of ours may use it.
    from starlette.middleware.base import BaseHTTPMiddleware

    from gateway.http.app import middleware_stack
    from gateway.ops.metrics import RequestMetrics

    settings = Settings.load(environ={"ALLOWED_HOSTS": "a.example"}, env_file=None)
    stack: list[Callable[..., Any]] = [m.cls for m in  # type: ignore[misc]
                                       middleware_stack(settings, RequestMetrics([]))]
    assert len(stack) >= 5
    assert not any(isinstance(cls, type) and issubclass(cls, BaseHTTPMiddleware)
                   for cls in stack)
