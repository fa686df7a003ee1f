"""uvicorn's WebSocket protocol for the subscription sockets (`python -m gateway serve` names it in
gateway/cli.py), with permessage-deflate that keeps no state between messages, and the handshake
let go once it is done.

uvicorn's own `websockets-sansio` protocol negotiates permessage-deflate with context takeover:
each socket keeps a zlib compressor and decompressor for its whole life, about 47 KiB, a third of
what an idle subscription cost (docs/performance.md, "Live subscriptions"). Here the server asks
for `server_no_context_takeover` and `client_no_context_takeover` (RFC 7692; browsers accept both):
each message is compressed on its own, its zlib state made for it and freed after it, so an idle
socket holds none. A push (a few KB of JSON) compresses nearly as well on its own; what is lost
is the gain from the previous push's dictionary. `LIVE_WS_DEFLATE=false` turns deflate off.

Two more things an idle socket need not hold: uvicorn's handshake response (it reads it no more
once sent), and `asyncio` primitives whose deques are allocated whole (half a KiB each, empty):
the queue of received events (three deques and an event, about 3 KiB, for a queue that is empty
but for a moment after each message) and the `writable` event. `Inbox` and `Gate` do the same
on plain lists.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

ASGIEvent = Any  # uvicorn's ASGIReceiveEvent (a typed dict)
WINDOW_BITS = 12  # 4 KiB windows and memLevel 5, as uvicorn's own (the state of one message)
MEM_LEVEL = 5


def deflate_per_message() -> ServerPerMessageDeflateFactory:
    """permessage-deflate without context takeover in either direction."""
    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True,
        server_max_window_bits=WINDOW_BITS, client_max_window_bits=WINDOW_BITS,
        compress_settings={"memLevel": MEM_LEVEL})


class Inbox:
    """What uvicorn's protocol uses of its `asyncio.Queue` of received events (`put_nowait`,
    `get`, `empty`), unbounded like it, on plain lists."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[ASGIEvent] = []
        self._getters: list[asyncio.Future[None]] = []  # readers waiting, first come first

    def put_nowait(self, item: ASGIEvent) -> None:
        self._items.append(item)
        self._wake_one()

    def _wake_one(self) -> None:
        for getter in self._getters:
            if not getter.done():
                getter.set_result(None)
                return

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> ASGIEvent:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                self._getters.remove(getter)
                if self._items:
                    self._wake_one()  # perhaps woken, then cancelled: the next reader's turn
                raise
            self._getters.remove(getter)
        return self._items.pop(0)


class Gate:
    """What uvicorn's protocol uses of its `writable` `asyncio.Event` (`set`, `clear`, `wait`)."""

    __slots__ = ("_open", "_waiters")

    def __init__(self, is_open: bool) -> None:
        self._open = is_open
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self._open = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if not self._open:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        return True


class LiveWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O `websockets` protocol, with `deflate_per_message` when
    `ws_per_message_deflate` is on, an `Inbox` and a `Gate` for its queue and event, and
    forgetting the handshake's response once it is sent."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.queue = cast(Any, Inbox())
        self.writable = cast(Any, Gate(self.writable.is_set()))
        if config.ws_per_message_deflate:
            self.conn = ServerProtocol(extensions=[deflate_per_message()],
                                       max_size=config.ws_max_size, logger=self.conn.logger)

    def start_keepalive(self) -> None:
        # Called once the handshake's response has been sent: uvicorn reads it no more (the
        # request it keeps too is still held by the `websockets` parser, so it is left alone).
        self.__dict__.pop("response", None)
        super().start_keepalive()
