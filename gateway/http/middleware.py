"""The HTTP edge: pure ASGI middleware, since each sits on every request (Starlette's
`BaseHTTPMiddleware` would add a task and a stream copy per request).

Outermost first, as `gateway.http.app` stacks them:

- `EdgeMiddleware`: the request id (the caller's `X-Request-ID` or a new one, echoed back and put
  in the log context; with tracing on the server span's trace id, returned with the span's
  `traceparent`: docs/operations.md, "Tracing"), the per-request deadline (`TIMEOUT`, then 504
  if nothing was sent yet; gateway/http/deadlines.py), security headers, the request metrics
  and access log line, and a JSON 500 with the request id for anything unhandled;
- Starlette's `TrustedHostMiddleware` (`ALLOWED_HOSTS`), then CORS (`CORS_ORIGINS`) and gzip
  (`ENABLE_RESPONSE_COMPRESSION`, bodies over 1,000 bytes) as Starlette's `CORSMiddleware` and
  `GZipMiddleware` answer them, without their per-request objects (gateway/http/lean_edge.py);
- `RateLimitMiddleware`: `RATE_LIMIT_PER_MINUTE` per user or client IP, 429 with `Retry-After`;
- `GraphQLBodyGate`: for `POST /graphql`, `application/json` only (415), at most
  `MAX_BODY_BYTES` (413, before anything is parsed), UTF-8 JSON no deeper than 64 levels and
  no batches (a JSON array) (400).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from gateway.data.db import OUTAGE, RETRY_AFTER_OUTAGE, is_database_outage
from gateway.http.bodies import GRAPHQL_BODY, RequestRefused, error_body, load_json
from gateway.http.deadlines import Deadlines
from gateway.http.identity import header, identify
from gateway.http.tracing import ServerSpan, ServerTracing
from gateway.ops import sentry, tracing
from gateway.ops.logs import RequestInfo, current_request, new_request_id
from gateway.ops.metrics import REJECTED, RequestMetrics
from gateway.ops.settings import Settings
from gateway.security.ratelimit import RateLimiter, TrustedProxies

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)
access_log = logging.getLogger("gateway.access")

QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})  # probes: no access line, no limit
HSTS = b"max-age=31536000; includeSubDomains"


async def send_error(send: Send, status: int, message: str, code: str,
                     headers: list[tuple[bytes, bytes]] | None = None, *, socket: bool = False,
                     **extensions: Any) -> None:
    """A GraphQL-shaped JSON error response, for refusals made before GraphQL runs; `socket`:
    as the answer to a WebSocket handshake (the ASGI `websocket.http.response` extension)."""
    kind = "websocket.http.response" if socket else "http.response"
    info = current_request.get()
    if info is not None and code == "INTERNAL_SERVER_ERROR":
        extensions["requestId"] = info.request_id
    body = orjson.dumps(error_body(message, code, **extensions))
    await send({"type": f"{kind}.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]})
    await send({"type": f"{kind}.body", "body": body})


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, request_metrics: RequestMetrics) -> None:
        self.app = app
        self.timeout = float(settings.timeout)
        self.deadlines: Deadlines | None = None  # `TIMEOUT` for each request (deadlines.py)
        self.metrics = request_metrics
        # The server span of each request, with tracing on (gateway/http/tracing.py).
        self.tracing = ServerTracing(request_metrics.endpoints) \
            if tracing.wanted(settings) else None
        self.headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"SAMEORIGIN"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
        ]
        if settings.is_production:
            self.headers.append((b"strict-transport-security", HSTS))

    def _deadlines(self) -> Deadlines:
        """The deadlines of this event loop's requests (a test may run the application on
        several loops, one after the other)."""
        loop = asyncio.get_running_loop()
        deadlines = self.deadlines
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self.deadlines = Deadlines(loop, self.timeout)
        return deadlines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        server_span: ServerSpan | None = None
        span_ids = None
        if self.tracing is not None:
            began = self.tracing.begin(scope)
            if isinstance(began, tuple):  # a new trace that is not sampled: its ids, no span
                span_ids = began
            elif began is not None:
                server_span, span_ids = began, began.ids
        if span_ids is None:
            info = RequestInfo(new_request_id(header(scope, b"x-request-id")))
            extra_headers = [(b"x-request-id", info.request_id.encode())]
        else:  # the request id is the trace id; the caller's own id stays on the span
            # A new trace that is not sampled has no span to carry its `traceparent` to the
            # jobs the request queues: the request's info does (`tracing.enqueueing`).
            info = RequestInfo(span_ids[0],
                               traceparent=span_ids[1] if server_span is None else None)
            extra_headers = [(b"x-request-id", span_ids[0].encode()),
                             (b"traceparent", span_ids[1].encode())]
            # Looked for only where it is recorded: a request not sampled skips the headers.
            offered = header(scope, b"x-request-id") \
                if server_span is not None and server_span.recording else None
            if offered and new_request_id(offered) == offered:
                tracing.annotate(**{"http.request.header.x-request-id": offered})
        token = current_request.set(info)
        started = time.perf_counter()
        status = 500
        response_started = False
        # Probes answer at once (/ready bounds its own checks): no deadline for them.
        deadline = None if path in QUIET_PATHS else self._deadlines().start()

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                if deadline is not None:
                    deadline.disarm()  # a streamed body may take longer than that
                message["headers"] = [*message.get("headers", ()), *self.headers,
                                      *extra_headers]
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_headers)
            except asyncio.CancelledError as exc:
                if deadline is not None and deadline.close():  # the deadline's, no one else's
                    raise TimeoutError from exc
                raise
            finally:
                if deadline is not None:
                    deadline.close()
        except TimeoutError:
            if deadline is not None and deadline.expired:
                log.warning("request deadline of %.0f s passed: %s %s", self.timeout,
                            scope["method"], path)
                if not response_started:
                    await send_error(send_with_headers, 504, "The request took too long",
                                     "SERVICE_UNAVAILABLE")
            else:  # a wait inside gave up, e.g. for a database connection (DATABASE_POOL_TIMEOUT)
                log.warning("timed out waiting in %s %s", scope["method"], path, exc_info=True)
                if not response_started:
                    await send_error(send_with_headers, 503, "The service is busy; try again "
                                     "shortly", "SERVICE_UNAVAILABLE", [(b"retry-after", b"2")],
                                     retryAfter=2)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled: the client went away, or shutdown
                if server_span is not None:
                    server_span.finish(status if response_started else 0, exc)
                    server_span = None
                raise
            if is_database_outage(exc):  # a route outside GraphQL met a PostgreSQL outage
                OUTAGE.failed(exc)
                if not response_started:
                    retry = str(RETRY_AFTER_OUTAGE)
                    await send_error(send_with_headers, 503, "The database is unavailable; "
                                     "retry shortly", "SERVICE_UNAVAILABLE",
                                     [(b"retry-after", retry.encode())],
                                     retryAfter=RETRY_AFTER_OUTAGE, retryable=True)
                return
            log.error("unhandled error in %s %s", scope["method"], scope["path"], exc_info=True)
            sentry.capture(exc, info.request_id)
            if not response_started:
                await send_error(send_with_headers, 500, "Internal server error",
                                 "INTERNAL_SERVER_ERROR")
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe(scope["method"], path, status, seconds)
            if path not in QUIET_PATHS:
                access_log.info("%s %s %d", scope["method"], path, status,
                                extra={"status": status, "duration_ms": round(seconds * 1000, 2)})
            current_request.reset(token)
            if server_span is not None:
                server_span.finish(status if response_started else 0)


class RateLimitMiddleware:
    """`RATE_LIMIT_PER_MINUTE` per signed-in user, else per client IP, on every path but the
    probes and `/metrics`. The limiter itself lives in `app.state` (made by the lifespan).

    A WebSocket's opening counts as one request of its client IP (the token comes later, in
    `connection_init`): over the limit the handshake is refused with 429 and `Retry-After` (or
    closed, 403, where the server cannot send an HTTP response to a WebSocket). The application
    puts this middleware on the socket path too (gateway/http/app.py `Gateway`)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.trusted = TrustedProxies(settings.trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        socket = scope["type"] == "websocket"
        if not socket and (scope["type"] != "http" or scope["path"] in QUIET_PATHS
                           or scope["method"] == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        state = identify(scope, self.settings, self.trusted)
        limiter: RateLimiter | None = getattr(scope["app"].state, "rate_limiter", None)
        if limiter is not None:
            caller = state["caller"]
            identity = f"user:{caller.id}" if caller is not None else f"ip:{state['client_ip']}"
            decision = await limiter.check_request(identity)
            if not decision.allowed:
                REJECTED.labels("rate_limited").inc()
                if socket and "websocket.http.response" not in scope.get("extensions", {}):
                    await send({"type": "websocket.close", "code": 1008, "reason": ""})
                    return
                await send_error(send, 429, "Too many requests; slow down", "RATE_LIMITED",
                                 [(b"retry-after", str(decision.retry_after).encode())],
                                 socket=socket, retryAfter=decision.retry_after)
                return
        await self.app(scope, receive, send)


class GraphQLBodyGate:
    """Checks a `POST /graphql` before Strawberry reads it: JSON only, no bigger than
    `max_bytes` (refused on `Content-Length` without reading, or as soon as a chunked body
    passes the limit), valid UTF-8 and JSON nesting at most `MAX_JSON_DEPTH` levels (see
    schema/extensions/input_check.py), a JSON object, and one operation per request (batches would
    multiply every limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int, path: str = "/graphql") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        content_type = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            REJECTED.labels("unsupported_media_type").inc()
            await send_error(send, 415, "POST /graphql takes a JSON body "
                             "(Content-Type: application/json)", "BAD_USER_INPUT")
            return
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            request = load_json(body)
        except RequestRefused as exc:
            REJECTED.labels("bad_json").inc()
            await send_error(send, exc.status_code, exc.reason, exc.code)
            return
        if isinstance(request, list):
            REJECTED.labels("batch").inc()
            await send_error(send, 400, "Batched operations are not accepted; send one "
                             "operation per request", "BAD_USER_INPUT")
            return
        if not isinstance(request, dict):
            REJECTED.labels("bad_json").inc()
            await send_error(send, 400, 'The request body must be a JSON object: {"query": '
                             '..., "variables": {...}, "operationName": ...}', "BAD_USER_INPUT")
            return
        scope.setdefault("state", {})[GRAPHQL_BODY] = (body, request)  # parsed once, see bodies.py
        await self.app(scope, replaying(body, receive), send)

    async def _too_large(self, send: Send) -> None:
        REJECTED.labels("too_large").inc()
        await send_error(send, 413, f"Request body larger than {self.max_bytes} bytes",
                         "QUERY_TOO_COMPLEX", maxBytes=self.max_bytes)


def replaying(body: bytes, receive: Receive, more: bool = False) -> Receive:
    """A `receive` that hands the app a body already read, then the rest of the stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay
