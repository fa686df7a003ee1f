"""The server span of each request: OpenTelemetry's ASGI middleware, outermost, when the
application is built with tracing on (`OTEL_TRACES_EXPORTER`, gateway/ops/tracing.py).

It accepts the caller's W3C `traceparent`/`tracestate`; `EdgeMiddleware`, inside it, makes the
server span's trace id the request id and returns the span's `traceparent`. Configured so that
no attribute carries a secret:

- no request or response header is recorded unless `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*`
  asks (the instrumentation's default), and even then `Authorization`, cookies and any header
  whose name says token, secret, password or api-key are recorded as `[REDACTED]` (added to
  `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`);
- the query string keeps its parameter names only (`GET /graphql?query=...&variables=...` would
  otherwise put GraphQL variables, e-mail addresses included, in `http.url` and `http.target`);
- span names are `METHOD /route` for the application's routes and `METHOD` for anything else
  (a scanner's paths would otherwise each make a span name);
- the probes and `/metrics` are not traced, nor are the middleware's per-message `receive` and
  `send` spans made.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import Span
from opentelemetry.util.http import ExcludeList
from starlette.middleware import Middleware

NOT_TRACED = ("/health", "/ready", "/metrics")
ALWAYS_SANITIZED = ("authorization", "cookie", "token", "secret", "password", "api-key")
_QUERY_ATTRIBUTES = ("http.target", "http.url", "url.query", "url.full")


def redacted_query(raw: bytes) -> str:
    """`a=1&b=2` -> `a=[redacted]&b=[redacted]`: which parameters, not their values."""
    names = dict.fromkeys(name for name, _ in parse_qsl(raw.decode("latin-1"),
                                                         keep_blank_values=True))
    return "&".join(f"{name}=[redacted]" for name in names)


def _redact_query_string(span: Span, scope: dict[str, Any]) -> None:
    """server_request_hook: replace the query values in the attributes already set."""
    raw = scope.get("query_string")
    if not raw or not span.is_recording():
        return
    query = redacted_query(raw)
    attributes = getattr(span, "attributes", None) or {}
    for key in _QUERY_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            span.set_attribute(key, query if key == "url.query"
                               else f"{value.split('?', 1)[0]}?{query}")


def server_span_middleware(routes: Iterable[str]) -> Middleware:
    """The ASGI instrumentation as a Starlette middleware entry (put it first: outermost)."""
    known = frozenset(routes)

    def span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        method = str(scope.get("method") or "HTTP")
        path = scope.get("path", "")
        return (f"{method} {path}" if path in known else method), {}

    configured = os.environ.get("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "")
    sanitized = [*ALWAYS_SANITIZED, *(f.strip() for f in configured.split(",") if f.strip())]
    return Middleware(OpenTelemetryMiddleware,
                      excluded_urls=ExcludeList([f"{path}$" for path in NOT_TRACED]),
                      default_span_details=span_details,
                      server_request_hook=_redact_query_string,
                      http_capture_headers_sanitize_fields=sanitized,
                      exclude_spans=["receive", "send"])
