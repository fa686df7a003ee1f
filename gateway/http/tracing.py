"""The server span of each request when the application is built with tracing on
(`OTEL_TRACES_EXPORTER`, gateway/ops/tracing.py), begun and finished by the outermost middleware,
`EdgeMiddleware` (gateway/http/middleware.py), around everything it does.

Our own rather than OpenTelemetry's ASGI instrumentation, which collects a dozen attributes,
parses every header and records metrics for each request before the sampler has even decided: at
10 % sampling that cost every request about a tenth of a millisecond, a quarter of a cached
answer. Here a request of a new trace that is not sampled costs a sampling decision and its ids
(`tracing.new_trace`; the edge keeps its `traceparent` in the request's `RequestInfo`); the
attributes are set only on a span that records.

It accepts the caller's W3C `traceparent`/`tracestate`; the edge makes the server span's trace id
the request id and returns the span's `traceparent`. No attribute carries a secret:

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
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.ops import tracing

Scope = MutableMapping[str, Any]

NOT_TRACED = frozenset({"/health", "/ready", "/metrics"})
ALWAYS_SANITIZED = ("authorization", "cookie", "token", "secret", "password", "api-key")
_PROPAGATED = frozenset({b"traceparent", b"tracestate"})  # a set: 0.07 µs less a request
_propagator = TraceContextTextMapPropagator()
SCOPE = "analytics-gateway.http"  # the instrumentation scope of the server spans
DESCRIBED_LIMIT = 64  # routes' attribute sets kept (`ServerTracing._route`)


def redacted_query(raw: bytes) -> str:
    """`a=1&b=2` -> `a=[redacted]&b=[redacted]`: which parameters, not their values."""
    names = dict.fromkeys(name for name, _ in parse_qsl(raw.decode("latin-1"),
                                                         keep_blank_values=True))
    return "&".join(f"{name}=[redacted]" for name in names)


def _names(variable: str) -> list[str]:
    return [f.strip().lower() for f in os.environ.get(variable, "").split(",") if f.strip()]


class ServerTracing:
    """The SERVER span of each HTTP request but the probes (see the module docstring), begun and
    finished by `EdgeMiddleware` (gateway/http/middleware.py) around everything it does: one
    layer fewer than a middleware of its own, and the edge already sees the response's status.
    """

    def __init__(self, routes: Iterable[str]) -> None:
        self.routes = frozenset(routes)
        captured = _names("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST")
        self.captured = {name.encode("latin-1"): name for name in captured}
        sanitized = [*ALWAYS_SANITIZED,
                     *_names("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS")]
        self.sanitized = tuple(sanitized)
        # The attributes of a route's spans by (method, path, scheme), made once (`_route`).
        self.described: dict[tuple[str, str, Any], dict[str, Any]] = {}

    def begin(self, scope: Scope) -> ServerSpan | tuple[str, str] | None:
        """The request's span, made current; for a new trace that is not sampled, only its ids
        (trace id, `traceparent`: `tracing.new_trace`), no span at all; None for the paths that
        are not traced."""
        path = scope["path"]
        if path in NOT_TRACED:
            return None
        carrier = None
        for name, value in scope["headers"]:
            if name in _PROPAGATED:
                if carrier is None:
                    carrier = {}
                carrier[name.decode()] = value.decode("latin-1")
        decided = tracing.new_trace() if carrier is None else None
        if decided is not None and not decided[3]:  # a new trace, not sampled: its ids alone
            return decided[2]
        method = scope["method"]
        known = path in self.routes
        name = f"{method} {path}" if known else method
        if decided is not None:  # a new trace, sampled: a span that records, of a valid context
            trace_id, span_id, ids, _ = decided
            route = self._route(scope, method, path, known)
            span, tokens = tracing.new_root(name, trace_id, span_id, route or {},
                                            kind=SpanKind.SERVER, scope=SCOPE)
            if route is None:
                span.set_attributes(self._attributes(scope, method, path, known))
            return ServerSpan(span, tokens, True, ids)
        # The caller's trace, or a sampler to ask: sampled as the sampler decides.
        span = tracing.start_root(name, kind=SpanKind.SERVER, scope=SCOPE, context=None
                                  if carrier is None else _propagator.extract(carrier))
        context = span.get_span_context()
        recording = span.is_recording()
        if recording:
            span.set_attributes(self._route(scope, method, path, known)
                                or self._attributes(scope, method, path, known))
        return ServerSpan(span, tracing.enter(span), recording,
                          tracing.ids_of(context) if context.is_valid else None)

    def _route(self, scope: Scope, method: str, path: str, known: bool) -> dict[str, Any] | None:
        """A route's span attributes (`str` values only), made once per method and scheme (a
        bounded few; a method no route has gets them made each time); None when the request's
        own are wanted (a query string, captured headers, a path that is no route)."""
        if not known or scope.get("query_string") or self.captured:
            return None
        key = (method, path, scope.get("scheme", "http"))
        attributes = self.described.get(key)
        if attributes is None:
            attributes = self._attributes(scope, method, path, known)
            if len(self.described) < DESCRIBED_LIMIT:
                self.described[key] = attributes
        return attributes

    def _attributes(self, scope: Scope, method: str, path: str, known: bool) -> dict[str, Any]:
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
        return attributes


class ServerSpan:
    """One request's server span while it runs: `ids` are its trace id (the request id) and the
    `traceparent` to return, or None when the caller's context is invalid. (A new trace that is
    not sampled has no `ServerSpan`: `ServerTracing.begin` gives its ids alone.)"""

    __slots__ = ("ids", "recording", "span", "tokens")

    def __init__(self, span: Any, tokens: Any, recording: bool,
                 ids: tuple[str, str] | None) -> None:
        self.span = span
        self.tokens = tokens
        self.recording = recording
        self.ids = ids

    def finish(self, status: int, error: BaseException | None = None) -> None:
        """No longer current; ended with the response's `status` (0: none was sent) or the
        exception that ended the request (its class name only)."""
        tracing.leave(self.tokens)
        if not self.recording:  # the span only carried the trace id: nothing to note
            return
        span = self.span
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        if status:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()
