"""The server span of each request, outermost, when the application is built with tracing on
(`OTEL_TRACES_EXPORTER`, gateway/ops/tracing.py).

A small ASGI middleware of our own rather than OpenTelemetry's ASGI instrumentation, which
collects a dozen attributes, parses every header and records metrics for each request before the
sampler has even decided: at 10 % sampling that cost every request about a tenth of a
millisecond, a quarter of a cached answer. Here an unsampled request costs a sampling decision
and a context attach; the attributes are set only on a span that records.

It accepts the caller's W3C `traceparent`/`tracestate`; `EdgeMiddleware`, inside it, makes the
server span's trace id the request id and returns the span's `traceparent`. No attribute carries
a secret:

- no request header is recorded unless `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`
  names it, and even then `Authorization`, cookies and any header whose name says token, secret,
  password or api-key (plus `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`) are
  recorded as `[REDACTED]`;
- the query string keeps its parameter names only (`GET /graphql?query=...&variables=...` would
  otherwise put GraphQL variables, e-mail addresses included, in the span);
- span names are `METHOD /route` for the application's routes and `METHOD` for anything else
  (a scanner's paths would otherwise each make a span name);
- the probes and `/metrics` are not traced.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.middleware import Middleware

from gateway.ops import tracing

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]

NOT_TRACED = frozenset({"/health", "/ready", "/metrics"})
ALWAYS_SANITIZED = ("authorization", "cookie", "token", "secret", "password", "api-key")
_PROPAGATED = (b"traceparent", b"tracestate")
_propagator = TraceContextTextMapPropagator()
SCOPE = "analytics-gateway.http"  # the instrumentation scope of the server spans


def redacted_query(raw: bytes) -> str:
    """`a=1&b=2` -> `a=[redacted]&b=[redacted]`: which parameters, not their values."""
    names = dict.fromkeys(name for name, _ in parse_qsl(raw.decode("latin-1"),
                                                         keep_blank_values=True))
    return "&".join(f"{name}=[redacted]" for name in names)


def _names(variable: str) -> list[str]:
    return [f.strip().lower() for f in os.environ.get(variable, "").split(",") if f.strip()]


class ServerSpan:
    """A SERVER span around each HTTP request but the probes (see the module docstring)."""

    def __init__(self, app: ASGIApp, routes: Iterable[str]) -> None:
        self.app = app
        self.routes = frozenset(routes)
        captured = _names("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST")
        self.captured = {name.encode("latin-1"): name for name in captured}
        sanitized = [*ALWAYS_SANITIZED,
                     *_names("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS")]
        self.sanitized = tuple(sanitized)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["path"] in NOT_TRACED:
            await self.app(scope, receive, send)
            return
        carrier = {name.decode(): value.decode("latin-1")
                   for name, value in scope["headers"] if name in _PROPAGATED}
        parent = _propagator.extract(carrier) if carrier else None
        method, path = scope["method"], scope["path"]
        known = path in self.routes
        name = f"{method} {path}" if known else method
        span = tracing.start_root(name, context=parent, kind=SpanKind.SERVER, scope=SCOPE) \
            if parent is not None else tracing.start_trace(name, kind=SpanKind.SERVER, scope=SCOPE)
        context = span.get_span_context()
        if context.is_valid:  # the edge's request id and traceparent, worked out once
            scope.setdefault("state", {})[tracing.IDS_STATE] = tracing.ids_of(context)
        tokens = tracing.enter(span)
        if not span.is_recording():
            # Unsampled: the span only carries the trace id (the request id, the traceparent
            # returned, a job's context); nothing to note about the response.
            try:
                await self.app(scope, receive, send)
            finally:
                tracing.leave(tokens)
                span.end()
            return
        self._describe(span, scope, method, path, known)
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            tracing.leave(tokens)
            if status:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()

    def _describe(self, span: Any, scope: Scope, method: str, path: str, known: bool) -> None:
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": path,
                                      "url.scheme": str(scope.get("scheme", "http"))}
        if known:
            attributes["http.route"] = path
        raw = scope.get("query_string")
        if raw:
            attributes["url.query"] = redacted_query(raw)
        if self.captured:
            for name, value in scope["headers"]:
                header = self.captured.get(name)
                if header is None:
                    continue
                secret = any(word in header for word in self.sanitized)
                attributes[f"http.request.header.{header}"] = \
                    ("[REDACTED]",) if secret else (value.decode("latin-1"),)
        span.set_attributes(attributes)  # one lock, not one per attribute


def server_span_middleware(routes: Iterable[str]) -> Middleware:
    """The server span as a Starlette middleware entry (put it first: outermost)."""
    return Middleware(ServerSpan, routes=list(routes))
