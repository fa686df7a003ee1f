"""`Cors` and `Compression` (gateway/http/lean_edge.py) answer exactly as Starlette's
`CORSMiddleware` and `GZipMiddleware` do: the same messages, headers in the same order, for a
matrix of requests (origins allowed or not, preflights, encodings) and responses (small, large,
streamed, excluded types, already encoded, with and without `Vary`)."""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware

from gateway.http.lean_edge import Compression, Cors

Message = dict[str, Any]
Body = list[tuple[bytes, bool]]  # (body, more_body) messages

RESPONSES: list[tuple[list[tuple[bytes, bytes]], Body]] = [
    ([(b"content-type", b"application/json")], [(b'{"data":{}}', False)]),
    ([(b"content-type", b"application/json"), (b"vary", b"Cookie")], [(b"x" * 999, False)]),
    ([(b"content-type", b"application/json")], [(b"y" * 1000, False)]),
    ([(b"content-type", b"application/json"), (b"content-length", b"5000")],
     [(b"z" * 5000, False)]),
    ([(b"content-type", b"text/csv")], [(b"a,b\n" * 400, True), (b"c,d\n" * 10, True),
                                        (b"", False)]),
    ([(b"content-type", b"text/event-stream")], [(b"data: 1\n\n" * 200, False)]),
    ([(b"content-type", b"application/json"), (b"content-encoding", b"br")],
     [(b"q" * 3000, False)]),
    ([(b"content-type", b"application/json"), (b"vary", b"A"), (b"vary", b"B")],
     [(b"small", True), (b"", False)]),
    ([], [(b"", False)]),
    ([(b"content-type", b"Application/JSON; charset=utf-8"), (b"vary", b"Cookie")],
     [(b"w" * 2000, False)]),
    ([], [(b"n" * 1500, False)]),
    ([(b"content-type", b"application/grpc+proto")], [(b"g" * 1500, False)]),
]

REQUESTS: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("POST", []),
    ("POST", [(b"origin", b"http://localhost:3000")]),
    ("POST", [(b"origin", b"http://evil.example")]),
    ("GET", [(b"accept-encoding", b"gzip, deflate"), (b"origin", b"http://localhost:3000")]),
    ("POST", [(b"accept-encoding", b"br")]),
    ("OPTIONS", [(b"origin", b"http://localhost:3000"),
                 (b"access-control-request-method", b"POST")]),
    ("OPTIONS", [(b"origin", b"http://evil.example"),
                 (b"access-control-request-method", b"POST"),
                 (b"access-control-request-headers", b"authorization")]),
    ("OPTIONS", [(b"origin", b"http://localhost:3000")]),  # not a preflight
]

CORS_SETTINGS: list[dict[str, Any]] = [
    {"allow_origins": ["http://localhost:3000"], "allow_credentials": True,
     "allow_methods": ["GET", "POST"], "allow_headers": ["Authorization"],
     "expose_headers": ["X-Request-ID", "Retry-After"], "max_age": 600},
    {"allow_origins": ["*"], "allow_credentials": True},
    {"allow_origins": ["*"]},
    {"allow_origins": ["http://localhost:3000"]},
]


def app_answering(status: int, headers: list[tuple[bytes, bytes]], body: Body
                  ) -> Callable[..., Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": list(headers)})
        for chunk, more in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
    return app


async def run(middleware: Any, method: str, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    scope = {"type": "http", "method": method, "path": "/graphql", "headers": headers,
             "query_string": b"", "scheme": "http", "server": ("testserver", 80)}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        message = dict(message)
        if "headers" in message:
            message["headers"] = [tuple(h) for h in message["headers"]]
        sent.append(message)

    await middleware(scope, receive, send)
    return sent


def normalized(messages: list[Message]) -> list[Message]:
    """Starlette's small-body path adds an empty `headers` to a start without one: the same."""
    return [{**m, "headers": m.get("headers", [])} if m["type"] == "http.response.start" else m
            for m in messages]


@pytest.mark.parametrize("settings", CORS_SETTINGS)
async def test_cors_answers_as_starlettes_does(settings: dict[str, Any]) -> None:
    for (method, request), (headers, body) in itertools.product(REQUESTS, RESPONSES):
        app = app_answering(200, headers, body)
        ours = await run(Cors(app, **settings), method, request)
        theirs = await run(CORSMiddleware(app, **settings), method, request)
        assert ours == theirs, (settings, method, request, headers)


@pytest.mark.parametrize("status", [200, 206])
async def test_compression_answers_as_starlettes_does(status: int) -> None:
    for (method, request), (headers, body) in itertools.product(REQUESTS, RESPONSES):
        app = app_answering(status, headers, body)
        ours = await run(Compression(app, minimum_size=1000, compresslevel=5), method, request)
        theirs = await run(GZipMiddleware(app, minimum_size=1000, compresslevel=5),
                           method, request)
        assert normalized(ours) == normalized(theirs), (method, request, headers, body)


async def test_compression_does_compress_a_large_answer_for_a_client_that_accepts_it() -> None:
    app = app_answering(200, [(b"content-type", b"application/json")], [(b"x" * 5000, False)])
    sent = await run(Compression(app, minimum_size=1000, compresslevel=5), "POST",
                     [(b"accept-encoding", b"gzip")])
    assert (b"content-encoding", b"gzip") in sent[0]["headers"]
    assert gzip.decompress(sent[1]["body"]) == b"x" * 5000
