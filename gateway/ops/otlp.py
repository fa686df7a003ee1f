"""OTLP/HTTP span export with a faster encoder than the SDK's.

The OpenTelemetry exporter turns each span into protobuf message objects (a `KeyValue` and an
`AnyValue` per attribute, the resource hashed through `json.dumps` per span) and serialises them:
about 20 µs a span on this machine, which made the export thread the largest single cost of a
traced request (a cached dashboard makes three spans in about 330 µs). `encode_request` writes
the same `ExportTraceServiceRequest` bytes directly in the protobuf wire format, with the
resource, the scopes and repeated attribute pairs encoded once and reused; tests/test_tracing.py
decodes its output with the official protobuf classes and compares it with the SDK encoder's.

`OTLPExporter` is the SDK's `OTLPSpanExporter` (the same environment variables: endpoint,
headers, timeout, compression, retries) with only the encoding replaced. It sends through the
exporter's own HTTP client; should a future SDK rename that internal, it falls back to the SDK's
encoder rather than fail (the version range in pyproject.toml keeps us on the tested one).

`LoopExport` is the span processor in front of it: spans are encoded as they end, and batches
are sent from the event loop rather than from a thread of the SDK's (see its docstring for why).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import struct
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import DEFAULT_TRACE_STATE, SpanKind, StatusCode

log = logging.getLogger(__name__)

# Protobuf wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_KIND = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4,
         SpanKind.CONSUMER: 5}
_CACHE_LIMIT = 4096  # encoded attribute pairs kept (names and values of a service repeat)
# Span.flags: the context says whether the parent is remote (HAS_IS_REMOTE), and whether it is.
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200


def _varint(value: int) -> bytes:
    if 0 <= value < 0x4000:  # most lengths
        return bytes((value,)) if value < 0x80 else bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _tag(field, _LEN) + _varint(len(payload)) + payload


def _str_field(field: int, value: str | None) -> bytes:
    return _len_field(field, value.encode()) if value else b""


def _any_value(value: Any) -> bytes:
    """An `AnyValue` message: string 1, bool 2, int 3, double 4, array 5, key-value list 6,
    bytes 7; None is the empty message (the SDK keeps None attribute values)."""
    if value is None:
        return b""
    if isinstance(value, str):
        return _len_field(1, value.encode())
    if isinstance(value, bool):
        return _tag(2, _VARINT) + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return _tag(3, _VARINT) + _varint(value)
    if isinstance(value, float):
        return _tag(4, _I64) + struct.pack("<d", value)
    if isinstance(value, bytes):
        return _len_field(7, value)
    if isinstance(value, Sequence):
        return _len_field(5, b"".join(_len_field(1, _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _len_field(6, b"".join(
            _len_field(1, _str_field(1, str(k)) + _len_field(2, _any_value(v)))
            for k, v in value.items()))
    raise TypeError(f"attribute value of type {type(value).__name__}")


class _Attributes:
    """Encoded `KeyValue` fields, memoised per field number, key and value: a service's attribute
    pairs repeat (`db.system=postgresql`), so most are a dictionary look-up. A value's type is
    kept beside its bytes (True and 1 are equal keys, not equal encodings)."""

    def __init__(self) -> None:
        self.caches: dict[int, dict[tuple[str, Any], tuple[type, bytes]]] = {}

    def encode(self, field: int, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        cache = self.caches.get(field)
        if cache is None:
            cache = self.caches[field] = {}
        out = []
        for key, value in attributes.items():
            kind = type(value)
            ident = (key, value if kind is not list else tuple(value))
            try:
                entry = cache.get(ident)
            except TypeError:  # an unhashable value: encoded each time
                entry, ident = None, None  # type: ignore[assignment]
            if entry is None or entry[0] is not kind:
                entry = (kind, _len_field(field, _len_field(1, key.encode())
                                          + _len_field(2, _any_value(value))))
                if ident is not None and len(cache) < _CACHE_LIMIT:
                    cache[ident] = entry
            out.append(entry[1])
        return b"".join(out)


_attributes = _Attributes()


_PACK_Q = struct.Struct("<Q").pack
_PACK_I = struct.Struct("<I").pack
# Fixed prefixes of a Span's fields: tag (and length, where it is fixed).
_FLAGS = b"\x85\x01"
_KIND_FIELD = {kind: b"\x30" + bytes([value]) for kind, value in _KIND.items()}


def _span(span: ReadableSpan) -> bytes:
    """A `Span` message (opentelemetry/proto/trace/v1/trace.proto), as `ScopeSpans.spans`."""
    context = span.get_span_context()
    assert context is not None
    return encode_span(context, span.parent, span.name, span.kind, span.start_time or 0,
                       span.end_time or 0, span.attributes, span.events, span.status,
                       span.links, span.dropped_attributes, span.dropped_events,
                       span.dropped_links)


def encode_span(context: Any, parent: Any, name: str, kind: SpanKind, start: int, end: int,
                attributes: Mapping[str, Any] | None, events: Sequence[Any], status: Any,
                links: Sequence[Any] = (), dropped_attributes: int = 0,
                dropped_events: int = 0, dropped_links: int = 0) -> bytes:
    """`_span` from the span's fields: what a lean span (gateway/ops/tracing.py) hands over.
    About 1.4 µs for a server span: the ids and the times are packed whole, a name with its kind
    is encoded once per process, the span context is read as the tuple it is, and the usual
    span (no trace state, events or links) is joined in one go. `status` None: unset."""
    trace_id, span_id, _, _, trace_state, _ = context  # a SpanContext is a tuple
    named = _NAMED.get(name)  # by the name alone: an enum member's hash is a Python call
    if named is None or named[0] is not kind:
        encoded_name = name.encode()
        named = (kind, b"\x2a" + _varint(len(encoded_name)) + encoded_name + _KIND_FIELD[kind])
        if len(_NAMED) < _CACHE_LIMIT:
            _NAMED[name] = named
    out = b"".join((
        _IDS(0x0A10, trace_id >> 64, trace_id & _LOW_64, 0x1208, span_id),
        _trace_state(trace_state) if trace_state is not _NO_TRACE_STATE and trace_state else b"",
        _PARENT(0x2208, parent[1]) if parent is not None else b"",  # its span id
        named[1],
        _TIMES(0x39, start, 0x41, end),
        _attributes.encode(9, attributes) if attributes else b"",
        _rarely_set(events, links, dropped_attributes, dropped_events, dropped_links)
        if events or links or dropped_attributes or dropped_events or dropped_links else b"",
        _EMPTY_STATUS if status is None else _status(status),
        _REMOTE_PARENT if parent is not None and parent.is_remote else _LOCAL_PARENT))
    return b"\x12" + _varint(len(out)) + out


def _trace_state(trace_state: Any) -> bytes:
    return _str_field(3, ",".join(f"{k}={v}" for k, v in trace_state.items()))


def _rarely_set(events: Sequence[Any], links: Sequence[Any], dropped_attributes: int,
                dropped_events: int, dropped_links: int) -> bytes:
    """A span's fields 10 to 14, in their order: what our spans seldom have."""
    parts = []
    if dropped_attributes:
        parts.append(_tag(10, _VARINT) + _varint(dropped_attributes))
    for event in events:
        parts.append(_len_field(11, b"".join((
            _tag(1, _I64) + _PACK_Q(event.timestamp),
            _str_field(2, event.name),
            _attributes.encode(3, event.attributes),
            _tag(4, _VARINT) + _varint(event.dropped_attributes)
            if event.dropped_attributes else b""))))
    if dropped_events:
        parts.append(_tag(12, _VARINT) + _varint(dropped_events))
    for link in links:
        flags = _HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0)
        parts.append(_len_field(13, b"".join((
            _len_field(1, link.context.trace_id.to_bytes(16, "big")),
            _len_field(2, link.context.span_id.to_bytes(8, "big")),
            _attributes.encode(4, link.attributes),
            _tag(5, _VARINT) + _varint(link.dropped_attributes)
            if link.dropped_attributes else b"",
            _tag(6, _I32) + _PACK_I(flags)))))
    if dropped_links:
        parts.append(_tag(14, _VARINT) + _varint(dropped_links))
    return b"".join(parts)


def _status(status: Any) -> bytes:
    code = status.status_code
    if code is StatusCode.UNSET and not status.description:
        return _EMPTY_STATUS
    return _len_field(15, _str_field(2, status.description)
                      + (_tag(3, _VARINT) + _varint(code.value) if code.value else b""))


_EMPTY_STATUS = b"\x7a\x00"  # an empty Status message, as the SDK's encoder writes it
_NO_TRACE_STATE = DEFAULT_TRACE_STATE  # a span context's trace state unless one was given


_NAMED: dict[str, tuple[SpanKind, bytes]] = {}  # span name and kind fields, encoded
_TIMES = struct.Struct("<BQBQ").pack  # start_time_unix_nano (7), end_time_unix_nano (8)
# trace_id (1) and span_id (2), each with its tag and length, big-endian as the bytes they are;
# parent_span_id (4) likewise.
_IDS = struct.Struct(">HQQHQ").pack
_PARENT = struct.Struct(">HQ").pack
_LOW_64 = (1 << 64) - 1
_LOCAL_PARENT = _FLAGS + _PACK_I(_HAS_IS_REMOTE)
_REMOTE_PARENT = _FLAGS + _PACK_I(_HAS_IS_REMOTE | _IS_REMOTE)


class _Headers:
    """The encoded `Resource` and `InstrumentationScope` messages, once per object."""

    def __init__(self) -> None:
        self.resources: dict[int, tuple[Any, bytes]] = {}
        self.scopes: dict[int, tuple[Any, bytes]] = {}

    def resource(self, resource: Any) -> bytes:
        kept = self.resources.get(id(resource))
        if kept is None or kept[0] is not resource:
            kept = (resource, _len_field(1, _attributes.encode(1, resource.attributes)))
            self.resources[id(resource)] = kept
        return kept[1]

    def scope(self, scope: Any) -> bytes:
        kept = self.scopes.get(id(scope))
        if kept is None or kept[0] is not scope:
            encoded = _len_field(1, b"" if scope is None else (
                _str_field(1, scope.name) + _str_field(2, scope.version)
                + _attributes.encode(3, scope.attributes)))
            kept = (scope, encoded)
            self.scopes[id(scope)] = kept
        return kept[1]


_headers = _Headers()


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """`ExportTraceServiceRequest` bytes for a batch: spans grouped by resource, then scope."""
    return encode_parts([(span.resource, span.instrumentation_scope, _span(span))
                         for span in spans])


def encode_parts(parts: Iterable[tuple[Any, Any, bytes | tuple[Any, ...]]]) -> bytes:
    """`encode_request` of (resource, scope, span) triples, each span encoded already (the
    `Span` field) or as `encode_span`'s arguments (encoded here, in this one loop)."""
    grouped: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
    resource = scope = run = None  # the spans of one resource and scope, in a row
    for part_resource, part_scope, span in parts:
        if part_resource is not resource or part_scope is not scope or run is None:
            resource, scope = part_resource, part_scope
            by_scope = grouped.setdefault(id(resource), (resource, {}))[1]
            run = by_scope.setdefault(id(scope), (scope, []))[1]
        run.append(span if type(span) is bytes else encode_span(*span))
    out = []
    for resource, by_scope in grouped.values():
        body = [_headers.resource(resource)]
        for scope, encoded in by_scope.values():
            scope_spans = _headers.scope(scope) + b"".join(encoded)
            if scope is not None and scope.schema_url:
                scope_spans += _str_field(3, scope.schema_url)
            body.append(_len_field(2, scope_spans))
        if resource.schema_url:
            body.append(_str_field(3, resource.schema_url))
        out.append(_len_field(1, b"".join(body)))
    return b"".join(out)


class OTLPExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter with `encode_request` as its encoder (see the docstring)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        if client is None or getattr(self, "_shutdown", False):
            return super().export(spans)
        try:
            data = encode_request(spans)
        except Exception:  # a value our encoder does not know: the SDK's encoder knows it
            return super().export(spans)
        return SpanExportResult.SUCCESS if client.export(data).success \
            else SpanExportResult.FAILURE


# --- sending from the event loop ------------------------------------------------------------

_RETRYABLE = frozenset({429, 502, 503, 504})  # as the SDK's client (and the OTLP spec) retry
_MAX_ATTEMPTS = 6  # the SDK client's _MAX_RETRIES


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


class LoopExport(SpanProcessor):
    """The batch span processor of `OTEL_TRACES_EXPORTER=otlp`: the SDK's `BatchSpanProcessor`
    job, with each batch encoded and sent from the event loop instead of a thread.

    Why: the SDK's processor encodes and sends in a thread of its own, which competes with the
    event loop for the interpreter's lock. Measured in process at 100 % sampling, its export
    thread used 21–30 µs of CPU a span, where the same encoding and POST cost 5.6 µs with the
    loop idle, whichever HTTP client it used (docs/operations.md, "Tracing"). Here a lean span
    is queued as its fields (`encode_span`'s arguments) and the batch is encoded when it is
    sent, in one loop over its spans (about 1.4 µs a server span, in process about 2 µs a
    request less than encoding each span as it ends, among the request's own work); a batch
    goes out as one write on the loop's own kept-alive connection (0.14 µs a span, the reading
    of the answer included, for batches of 512), and the loop goes on serving while the
    collector answers.

    The standard settings: `OTEL_BSP_MAX_QUEUE_SIZE` (2048 spans waiting; more are dropped and
    counted, with one warning), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (512 a request) and
    `OTEL_BSP_SCHEDULE_DELAY` (5000 ms: the longest a span waits); the endpoint, headers,
    compression, timeout and TLS files come from the SDK exporter (`OTLPExporter`), which read
    the `OTEL_EXPORTER_OTLP_*` variables, and a failed request is retried as its client does
    (429, 502, 503, 504 and lost connections; its backoff or `Retry-After`; within the timeout).
    Where no event loop runs (a command's last spans, `force_flush`, shutdown), the batch goes
    through the SDK exporter's own client, synchronously."""

    takes_span_fields = True
    """`add` takes a span as `encode_span`'s arguments (`tracing.install` hands lean spans to
    it so)."""

    def __init__(self, exporter: OTLPExporter) -> None:
        self.exporter = exporter
        self.max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.batch = min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self.max_queue)
        self.delay = _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.post = _LoopPost(exporter)
        self.spans: deque[tuple[Any, Any, bytes | tuple[Any, ...]]] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None  # where `sending`/`timer` run
        self.sending: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.dropped = 0
        self.exported = 0
        self._sync = threading.Lock()  # one synchronous send at a time

    @staticmethod
    def usable(exporter: Any) -> bool:
        """Whether `exporter` has the SDK internals this reads (pyproject.toml pins the SDK's
        range; outside it, `tracing.configure` falls back to the SDK's processor)."""
        client = getattr(exporter, "_client", None)
        return isinstance(getattr(exporter, "_endpoint", None), str) and all(
            hasattr(client, name) for name in ("_headers", "_timeout", "_compress",
                                               "_compute_backoff", "export", "_transport"))

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        """A span of the SDK's (lean spans call `add` themselves, gateway/ops/tracing.py)."""
        context = span.context
        if context is not None and context.trace_flags.sampled:
            self.add(span.resource, span.instrumentation_scope, _span(span))

    def add(self, resource: Any, scope: Any, span: bytes | tuple[Any, ...]) -> None:
        """Queue one span of `resource` and `scope`, encoded or as `encode_span`'s arguments
        (a lean span's fields: its attributes and events no longer change); send when a batch
        is full, or `OTEL_BSP_SCHEDULE_DELAY` after the first span waiting."""
        spans = self.spans
        if len(spans) >= self.max_queue:
            if not self.dropped:
                log.warning("spans dropped: the export queue is full (OTEL_BSP_MAX_QUEUE_SIZE=%d)"
                            "; the collector is slow or unreachable", self.max_queue)
            self.dropped += 1
            return
        spans.append((resource, scope, span))
        if len(spans) >= self.batch:
            if self.sending is None or self._stale():
                self._start(everything=False)
        elif self.sending is None and (self.timer is None or self._stale()):
            self._arm()

    def _running(self) -> asyncio.AbstractEventLoop | None:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: force_flush or shutdown sends them
            return None

    def _stale(self) -> bool:
        """The loop that was sending is gone (a test's, a finished `asyncio.run`)."""
        return self.loop is None or self.loop.is_closed()

    def _start(self, everything: bool) -> None:
        loop = self._running()
        if loop is None:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.loop = loop
        self.sending = loop.create_task(self._send(everything), name="otlp-export")

    def _arm(self) -> None:
        loop = self._running()
        if loop is not None:
            if self.timer is not None:
                self.timer.cancel()
            self.loop = loop
            self.timer = loop.call_later(self.delay, self._due)

    def _due(self) -> None:
        self.timer = None
        if self.sending is None and self.spans:
            self._start(everything=True)

    def _take(self) -> list[tuple[Any, Any, bytes | tuple[Any, ...]]]:
        """The next batch (`encode_parts` encodes what is not encoded yet)."""
        spans = self.spans
        return [spans.popleft() for _ in range(min(self.batch, len(spans)))]

    async def _send(self, everything: bool) -> None:
        try:
            while self.spans and (everything or len(self.spans) >= self.batch):
                parts = self._take()
                if await self.post.send(encode_parts(parts)):
                    self.exported += len(parts)
        finally:
            self.sending = None
            if self.spans:
                self._arm()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything queued now, synchronously, through the SDK exporter's client."""
        with self._sync:
            while self.spans:
                parts = self._take()
                try:
                    if self.exporter._client.export(encode_parts(parts)).success:
                        self.exported += len(parts)
                except Exception:  # the client logs its own failures; nothing may escape
                    log.warning("span export failed", exc_info=True)
                    return False
        return True

    def shutdown(self) -> None:
        self.force_flush()
        if self.dropped:
            log.warning("%d spans were dropped over this process's life (queue full)",
                        self.dropped)
        self.exporter.shutdown()


class _LoopPost:
    """OTLP/HTTP requests from the event loop on one kept-alive connection per loop, with the
    SDK exporter's endpoint, headers, compression, timeout, backoff and TLS settings."""

    def __init__(self, exporter: OTLPExporter) -> None:
        client = exporter._client
        self.client = client
        url = urlsplit(exporter._endpoint)
        self.tls = url.scheme == "https"
        self.host = url.hostname or "localhost"
        self.port = url.port or (443 if self.tls else 80)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers = {"host": url.netloc, **{k.lower(): v for k, v in client._headers.items()}}
        self.head = (f"POST {target} HTTP/1.1\r\n"
                     + "".join(f"{k}: {v}\r\n" for k, v in headers.items())).encode("latin-1")
        self.ssl: ssl.SSLContext | None = _ssl_context(client._transport) if self.tls else None
        self.connection: tuple[Any, asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, body: bytes) -> bool:
        """Send one request, retried as the SDK's client retries; False when it failed (logged).
        Never raises but for cancellation."""
        data = self.client._compress(body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self.client._timeout)
        for attempt in range(_MAX_ATTEMPTS):
            status: int | None = None
            retry_after: float | None = None
            try:
                async with asyncio.timeout_at(deadline):
                    status, retry_after = await self._post(data)
            except (OSError, EOFError, ValueError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError) as exc:  # ConnectionError and SSL errors too
                self._close()
                failure = type(exc).__name__
                retryable = not isinstance(exc, TimeoutError)
            else:
                if 200 <= status < 400:
                    return True
                failure = f"HTTP {status}"
                retryable = status in _RETRYABLE
            backoff = retry_after if retry_after is not None \
                else self.client._compute_backoff(attempt)
            if not retryable or attempt + 1 == _MAX_ATTEMPTS or \
                    loop.time() + backoff > deadline:
                log.error("span export to %s:%d failed: %s", self.host, self.port, failure)
                return False
            log.warning("span export to %s:%d failed (%s); retrying in %.1f s", self.host,
                        self.port, failure, backoff)
            await asyncio.sleep(backoff)
        return False

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        loop = asyncio.get_running_loop()
        if self.connection is not None:
            owner, reader, writer = self.connection
            if owner is loop and not writer.is_closing():
                return reader, writer, True
            self._close()
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        self.connection = (loop, reader, writer)
        return reader, writer, False

    def _close(self) -> None:
        if self.connection is not None:
            owner, _, writer = self.connection
            self.connection = None
            if not owner.is_closed():
                writer.close()

    async def _post(self, data: bytes) -> tuple[int, float | None]:
        """One request and its response: (status, Retry-After seconds or None). A kept-alive
        connection the collector closed meanwhile is replaced once, at once."""
        request = self.head + b"content-length: %d\r\n\r\n" % len(data) + data
        while True:
            reader, writer, reused = await self._connect()
            try:
                writer.write(request)
                await writer.drain()
                line = await reader.readline()
                if not line:
                    raise ConnectionResetError("the collector closed the connection")
                break
            except OSError:
                self._close()
                if not reused:
                    raise
        status = int(line.split(None, 2)[1])
        headers: dict[bytes, bytes] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while size := int((await reader.readline()).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
        elif b"content-length" in headers:
            await reader.readexactly(int(headers[b"content-length"]))
        else:  # the body runs to the end of the connection
            await reader.read()
            self._close()
        if headers.get(b"connection", b"").lower() == b"close":
            self._close()
        retry_after = headers.get(b"retry-after", b"")
        return status, float(retry_after) if retry_after.isdigit() else None


def _ssl_context(transport: Any) -> ssl.SSLContext:
    """The TLS settings the SDK exporter resolved (`OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`,
    `_CLIENT_CERTIFICATE`, `_CLIENT_KEY`), from its transport's session."""
    session = getattr(transport, "_session", None)
    verify = getattr(session, "verify", True)
    cert = getattr(session, "cert", None)
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if isinstance(cert, tuple):
        context.load_cert_chain(cert[0], cert[1])
    elif isinstance(cert, str):
        context.load_cert_chain(cert)
    return context
