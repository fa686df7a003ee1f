"""A GraphQL request handed to the ASGI application in process, with no server and no HTTP
client around it: for the tests and micro-benchmarks that must see only the application's own
objects and CPU (tests/test_reference_cycles.py, bench/micro_app.py)."""

from __future__ import annotations

import asyncio
from typing import Any


async def post_graphql(app: Any, body: bytes, token: str | None = None) -> tuple[int, bytes]:
    """`POST /graphql` with `body` (JSON) as `token`'s bearer: the status and the whole body."""
    headers = [(b"host", b"localhost"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
             "root_path": "", "scheme": "http", "client": ("127.0.0.1", 1),
             "server": ("localhost", 80), "state": {}, "headers": headers}
    received = False
    status = 0
    parts: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:  # the request is whole: wait as a server would for a disconnect
            await asyncio.Event().wait()
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(parts)
