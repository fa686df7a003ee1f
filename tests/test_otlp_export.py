"""Span export from the event loop (gateway/ops/otlp.py `LoopExport`), against a real HTTP
collector stand-in served on this test's loop: what arrives is what the SDK's encoder would send,
failed requests are retried as the SDK's client retries them, a lone span still leaves after
`OTEL_BSP_SCHEDULE_DELAY`, a full queue drops and counts, and without a loop the SDK's own
client sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.ops import tracing
from gateway.ops.otlp import LoopExport, OTLPExporter, _span, encode_span
from tests.factories import User
from tests.test_tracing import (
    DASHBOARD,
    _session_exporter,
    exporter,
    post,
    traced,
    traced_settings,
    tracy,
)

__all__ = ["_session_exporter", "exporter", "traced", "traced_settings", "tracy"]


@dataclass
class Collector:
    """An OTLP/HTTP endpoint on 127.0.0.1: answers each request with the next of `statuses`
    (then 200), closes the connection after a response when `close_after` says so."""

    statuses: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    close_after: bool = False
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    received: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while line := await reader.readline():
                assert line.startswith(b"POST /v1/traces HTTP/1.1"), line
                headers = {}
                while (header := await reader.readline()) != b"\r\n":
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers["content-length"]))
                self.requests.append((headers, body))
                status, extra = self.statuses.pop(0) if self.statuses else (200, {})
                answer = b"{}" if status == 200 else b"busy"
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: {len(answer)}\r\n".encode()
                             + "".join(f"{k}: {v}\r\n" for k, v in extra.items()).encode()
                             + b"\r\n" + answer)
                await writer.drain()
                self.received.set()
                if self.close_after:
                    break
        finally:
            writer.close()

    def spans(self) -> list[Any]:
        """Every span received, decoded, in order."""
        return [span for _, body in self.requests
                for resource in ExportTraceServiceRequest.FromString(body).resource_spans
                for scope in resource.scope_spans for span in scope.spans]


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    found = Collector()
    server = await asyncio.start_server(found.serve, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    async with server:
        yield found
        server.close()


@pytest.fixture
def loop_export(monkeypatch: pytest.MonkeyPatch) -> Callable[..., LoopExport]:
    made: list[LoopExport] = []

    def make(url: str, batch: int = 4, queue: int = 8, delay_ms: int = 60_000) -> LoopExport:
        monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", str(batch))
        monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", str(queue))
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", str(delay_ms))
        otlp_exporter = OTLPExporter(endpoint=url, timeout=5)
        assert LoopExport.usable(otlp_exporter)
        processor = LoopExport(otlp_exporter)
        made.append(processor)
        return processor

    yield make  # type: ignore[misc]
    for processor in made:
        if processor.timer is not None:
            processor.timer.cancel()


async def until(condition: Callable[[], bool]) -> None:
    """Wait (10 s at most) until the processor has read what the collector answered."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (a counter, no event to wait on)
            await asyncio.sleep(0.005)


async def sent(collector: Collector, requests: int) -> None:
    async with asyncio.timeout(10):
        while len(collector.requests) < requests:
            collector.received.clear()
            await collector.received.wait()


async def spans_of_a_dashboard(traced: httpx.AsyncClient, exporter: InMemorySpanExporter,
                               user: User, token_for: Callable[..., str]) -> Sequence[ReadableSpan]:
    response = await post(traced, DASHBOARD, token=token_for(user.id))
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    assert len(spans) >= 4
    return spans


async def test_the_batches_sent_from_the_loop_are_what_the_sdk_would_send(
        traced: httpx.AsyncClient, exporter: InMemorySpanExporter, tracy: User,
        token_for: Callable[..., str], collector: Collector,
        loop_export: Callable[..., LoopExport]) -> None:
    spans = list(await spans_of_a_dashboard(traced, exporter, tracy, token_for))
    assert len(spans) >= 6
    if len(spans) % 4 == 0:
        spans.pop()  # some left for the synchronous flush
    processor = loop_export(collector.url, batch=4, queue=64)
    for span in spans:
        processor.on_end(span)
    full = len(spans) // 4
    await sent(collector, full)  # each full batch leaves at once; the rest waits
    await until(lambda: processor.exported == 4 * full)
    assert len(processor.spans) == len(spans) % 4
    assert await asyncio.to_thread(processor.force_flush)  # the SDK's client, off the loop
    assert processor.exported == len(spans) and processor.dropped == 0
    assert collector.connections >= 2  # the loop's connection, then the SDK client's
    headers = collector.requests[0][0]
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["user-agent"].startswith("OTel-OTLP-Exporter-Python")
    assert collector.spans() == [span for resource in encode_spans(spans).resource_spans
                                 for scope in resource.scope_spans for span in scope.spans]
    # The batches are whole requests: resource and scope as the SDK's encoder writes them.
    first = ExportTraceServiceRequest.FromString(collector.requests[0][1])
    assert first == encode_spans(spans[:4])


async def test_a_lean_span_is_encoded_as_its_readable_span_would_be(
        exporter: InMemorySpanExporter) -> None:
    root = tracing.start_root("POST /graphql", kind=SpanKind.SERVER)
    with tracing.current(root):
        child = tracing.start_child("analytics_figures", kind=SpanKind.CLIENT,
                                    attributes={"db.system": "postgresql", "rows": 3})
        child.add_event("retry", {"attempt": 2})
        child.set_status(Status(StatusCode.ERROR, "TimeoutError"))
        child.end()
    root.set_attributes({"http.route": "/graphql", "http.response.status_code": 200,
                         "flag": True, "ratio": 0.5})
    root.end()
    for lean in (child, root):
        readable = next(s for s in exporter.get_finished_spans()
                        if s.context.span_id == lean.get_span_context().span_id)
        assert encode_span(lean._context, lean._parent, lean._name, lean._kind, lean._start,
                           lean._end, lean._attributes, lean._events,
                           lean._status) == _span(readable)


async def test_a_failed_request_is_retried_and_a_refused_one_is_not(
        traced: httpx.AsyncClient, exporter: InMemorySpanExporter, tracy: User,
        token_for: Callable[..., str], collector: Collector,
        loop_export: Callable[..., LoopExport]) -> None:
    spans = list(await spans_of_a_dashboard(traced, exporter, tracy, token_for))[:4]
    collector.statuses = [(503, {"retry-after": "0"}), (400, {})]
    processor = loop_export(collector.url, batch=2)
    for span in spans[:2]:
        processor.on_end(span)
    await sent(collector, 2)  # 503, then the same batch again: 400, not retried
    assert collector.requests[0][1] == collector.requests[1][1]
    assert processor.exported == 0
    for span in spans[2:]:
        processor.on_end(span)
    await sent(collector, 3)
    await until(lambda: processor.exported == 2)
    await asyncio.sleep(0.05)
    assert len(collector.requests) == 3
    assert collector.connections == 1  # kept alive throughout


async def test_a_lone_span_leaves_after_the_schedule_delay_and_a_full_queue_drops(
        traced: httpx.AsyncClient, exporter: InMemorySpanExporter, tracy: User,
        token_for: Callable[..., str], collector: Collector,
        loop_export: Callable[..., LoopExport]) -> None:
    spans = list(await spans_of_a_dashboard(traced, exporter, tracy, token_for))
    processor = loop_export(collector.url, batch=100, queue=3, delay_ms=50)
    for span in spans[:5]:
        processor.on_end(span)
    assert processor.dropped == 2 and len(processor.spans) == 3
    await sent(collector, 1)
    await until(lambda: processor.exported == 3)
    assert len(collector.spans()) == 3


async def test_a_connection_the_collector_closed_is_replaced(
        traced: httpx.AsyncClient, exporter: InMemorySpanExporter, tracy: User,
        token_for: Callable[..., str], collector: Collector,
        loop_export: Callable[..., LoopExport]) -> None:
    spans = list(await spans_of_a_dashboard(traced, exporter, tracy, token_for))[:4]
    collector.close_after = True
    processor = loop_export(collector.url, batch=2)
    for span in spans[:2]:
        processor.on_end(span)
    await sent(collector, 1)
    await asyncio.sleep(0.05)  # the collector's close reaches the kept connection
    for span in spans[2:]:
        processor.on_end(span)
    await sent(collector, 2)
    await until(lambda: processor.exported == 4)
    assert collector.connections == 2
    assert len(collector.requests) == 2  # no request lost or sent twice
