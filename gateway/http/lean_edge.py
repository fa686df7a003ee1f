"""CORS and compression as Starlette does them, without its per-request objects.

Starlette's `CORSMiddleware` parses the request's headers into a `Headers` object and each
response's into a `MutableHeaders`; its `GZipMiddleware` builds a responder per request that
normalizes the excluded content types again and parses the response's headers. In a profile of a
cached dashboard the two were about a fifth of the application's time (docs/performance.md, "The
edge"). These subclasses answer the same, byte for byte (tests/test_lean_edge.py compares them
with Starlette's on a matrix of requests and responses):

- `Cors`: a preflight is Starlette's; a simple response gets Starlette's headers, set on the raw
  header list directly.
- `Compression`: a response whose whole body comes in one message (every GraphQL answer) and
  stays as it is (smaller than `minimum_size`, or for a client that does not accept gzip) is
  passed on with the `Vary: Accept-Encoding` Starlette would add; any other response is handed,
  messages replayed, to Starlette's own responder, which compresses it as always.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware, GZipResponder, IdentityResponder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Raw = list[tuple[bytes, bytes]]


def request_header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (ASGI lowercases request header names)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _set(raw: Raw, name: bytes, value: bytes) -> None:
    """`MutableHeaders.__setitem__` on a raw list: the first `name` replaced, the others
    removed, else appended."""
    found = [i for i, (key, _) in enumerate(raw) if key == name]
    for i in reversed(found[1:]):
        del raw[i]
    if found:
        raw[found[0]] = (name, value)
    else:
        raw.append((name, value))


class Cors(CORSMiddleware):
    """Starlette's CORS (see the module docstring); configured as `CORSMiddleware` is."""

    def __init__(self, app: ASGIApp, /, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._simple = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in self.simple_headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_origin = request_header(scope, b"origin")
        if raw_origin is not None and scope["method"] == "OPTIONS" \
                and request_header(scope, b"access-control-request-method") is not None:
            await super().__call__(scope, receive, send)  # the preflight: Starlette's
            return
        origin = raw_origin.decode("latin-1") if raw_origin is not None else None
        explicit = origin is not None and (
            (self.allow_all_origins and self.allow_credentials)
            or (not self.allow_all_origins and self.is_allowed_origin(origin=origin)))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw: Raw = list(message.setdefault("headers", []))
                message["headers"] = raw
                if origin is not None:
                    for name, value in self._simple:
                        _set(raw, name, value)
                if explicit:
                    assert raw_origin is not None
                    _set(raw, b"access-control-allow-origin", raw_origin)
                varies = [value for key, value in raw if key == b"vary"]
                _set(raw, b"vary", b", ".join([*varies, b"Origin"]))
            await send(message)

        await self.app(scope, receive, send_with_cors)


class Compression(GZipMiddleware):
    """Starlette's gzip (see the module docstring); configured as `GZipMiddleware` is."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gzip = b"gzip" in (request_header(scope, b"accept-encoding") or b"")
        held: list[Message] = []
        responder: IdentityResponder | None = None
        passing = False

        def starlettes() -> IdentityResponder:
            made = GZipResponder(self.app, self.minimum_size, compresslevel=self.compresslevel,
                                 thread_minimum_size=self.thread_minimum_size,
                                 exclude_content_types=()) if gzip \
                else IdentityResponder(self.app, self.minimum_size, exclude_content_types=())
            made.exclude_content_types = self.exclude_content_types  # normalized once
            made.send = send
            return made

        async def send_small_or_hand_over(message: Message) -> None:
            nonlocal responder, passing
            if passing:
                await send(message)
            elif responder is not None:
                await responder.send_with_compression(message)
            elif message["type"] == "http.response.start" and not held:
                held.append(message)
            elif (message["type"] == "http.response.body" and held
                  and not message.get("more_body", False)
                  and (not gzip or len(message.get("body", b"")) < self.minimum_size)):
                # One whole body that stays as it is (small, or not to be compressed):
                # Starlette's answer, worked out at once.
                passing = True
                start = held.pop()
                if len(message.get("body", b"")) >= self.minimum_size and self._touched(start):
                    _set(start["headers"], b"vary", b", ".join(
                        [*(value for key, value in start["headers"] if key == b"vary"),
                         b"Accept-Encoding"]))
                await send(start)
                await send(message)
            else:
                responder = starlettes()
                for earlier in [*held, message]:
                    await responder.send_with_compression(earlier)
                held.clear()

        await self.app(scope, receive, send_small_or_hand_over)

    def _touched(self, start: Message) -> bool:
        """Whether Starlette's responder would act on a response with this start (rather than
        pass it on as it is): not already encoded, not partial, not of an excluded type. Leaves
        `start["headers"]` a list, as Starlette does."""
        raw: Raw = start.setdefault("headers", [])
        if not isinstance(raw, list):
            raw = start["headers"] = list(raw)
        if start["status"] == 206 or any(key == b"content-encoding" for key, _ in raw):
            return False
        content_type = next((value for key, value in raw if key == b"content-type"), b"")
        media_type = content_type.decode("latin-1").partition(";")[0].strip().lower()
        media_types = {media_type, media_type.partition("/")[0] + "/*"}
        if media_type.startswith("application/grpc+"):
            media_types.add("application/grpc")
        return media_types.isdisjoint(self.exclude_content_types)
