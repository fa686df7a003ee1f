"""Helpers of the subscription tests: a real uvicorn server in this process, on a free port, and
a real graphql-transport-ws client (the `websockets` package) talking to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from gateway.dev.embedded import free_port
from gateway.http.app import create_app
from gateway.ops.settings import Settings

PROTOCOL = Subprotocol("graphql-transport-ws")
WAIT_S = 15.0  # how long a test waits for a message it expects (never a timed assertion)


@dataclass
class Server:
    app: Starlette
    http: str  # http://127.0.0.1:PORT
    ws: str    # ws://127.0.0.1:PORT/graphql


@asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[Server]:
    """The gateway under uvicorn, lifespan and all, in this event loop; stopped on exit."""
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                                           log_config=None, ws_ping_interval=None,
                                           ws="gateway.http.live_socket:LiveWebSocketProtocol"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.02)
        yield Server(app, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/graphql")
    finally:
        server.should_exit = True
        await task


class LiveClient:
    """One WebSocket speaking graphql-transport-ws."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, token: str | None = None, *, init: bool = True,
                      subprotocols: tuple[str, ...] = (PROTOCOL,), **options: Any
                      ) -> AsyncIterator[LiveClient]:
        async with connect(url, subprotocols=[Subprotocol(p) for p in subprotocols],
                           **options) as ws:
            client = cls(ws)
            if init:
                ack = await client.init({"Authorization": f"Bearer {token}"} if token else {})
                assert ack["type"] == "connection_ack", ack
            yield client

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def receive(self, wait: float = WAIT_S) -> dict[str, Any]:
        async with asyncio.timeout(wait):
            raw = await self.ws.recv()
        message: dict[str, Any] = json.loads(raw)
        return message

    async def init(self, payload: dict[str, Any]) -> dict[str, Any]:
        await self.send({"type": "connection_init", "payload": payload})
        return await self.receive()

    async def subscribe(self, op_id: str, query: str,
                        variables: dict[str, Any] | None = None) -> None:
        await self.send({"id": op_id, "type": "subscribe",
                         "payload": {"query": query, "variables": variables or {}}})

    async def next(self, op_id: str, wait: float = WAIT_S) -> dict[str, Any]:
        """The next message of operation `op_id` (`next`, `error` or `complete`); pings are
        answered, other operations' messages skipped."""
        while True:
            message = await self.receive(wait)
            if message.get("type") == "ping":
                await self.send({"type": "pong"})
                continue
            if message.get("id") == op_id:
                return message

    async def data(self, op_id: str, wait: float = WAIT_S) -> dict[str, Any]:
        message = await self.next(op_id, wait)
        assert message["type"] == "next" and "errors" not in message["payload"], message
        data: dict[str, Any] = message["payload"]["data"]
        return data

    async def closed(self, wait: float = WAIT_S) -> tuple[int | None, str]:
        """Read until the server closes; (close code, reason)."""
        try:
            async with asyncio.timeout(wait):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as exc:
            received = exc.rcvd
            return (received.code, received.reason) if received else (None, "")
        raise AssertionError("unreachable")
