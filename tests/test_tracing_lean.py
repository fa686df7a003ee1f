"""Lean spans (gateway/ops/tracing.py `LeanSpan`, `start_root`, `start_child`) against the SDK's.

Our spans skip the SDK's `Span` but must reach the exporters as the same `ReadableSpan`: the same
name, kind, ids and parent, attributes, status, events, resource and scope, and roots must get the
sampler's decision exactly as `Tracer.start_span` would apply it. The span trees of whole requests
and jobs are asserted in tests/test_tracing.py (which the lean spans also pass).
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from gateway.ops import tracing
from tests.test_tracing import _session_exporter, exporter

__all__ = ["_session_exporter", "exporter"]


def _fields(span: ReadableSpan) -> dict[str, Any]:
    """What an exporter reads of a span, ids and times aside."""
    return {
        "name": span.name, "kind": span.kind, "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
        "links": list(span.links), "resource": span.resource.attributes,
        "scope": span.instrumentation_scope, "sampled": span.context.trace_flags.sampled,
        "remote": span.context.is_remote,
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
    }


class _Odd:
    def __str__(self) -> str:
        return "odd"


def _exercise(span: Any) -> None:
    span.set_attribute("db.operation.name", "analytics_overview")
    span.set_attributes({"codes": ["A", "B"], "count": 3, "ok": True, "ratio": 0.5})
    # Sequences of one primitive type take a shortcut (a tuple); the others the SDK's way.
    span.set_attributes({"counts": [1, 2, 3], "flags": (True, False), "ratios": [0.5, 1.0],
                         "empty": [], "bool_and_int": [True, 1], "int_and_none": [1, None]})
    # Not what our code sets, but kept exactly as the SDK keeps it: a str() of an object, a
    # tuple of a mixed list, nothing for None.
    span.set_attributes({"odd": _Odd(), "mixed": ["a", 1], "gone": None})
    span.update_name("renamed")
    span.add_event("checkpoint", {"step": 1})
    span.set_status(Status(StatusCode.ERROR, "SERVICE_UNAVAILABLE"))
    span.set_status(StatusCode.UNSET)  # ignored by both


def test_a_lean_child_reaches_the_exporter_as_the_sdks_child_would(
        exporter: InMemorySpanExporter) -> None:
    root = tracing.start_root("GET /graphql", kind=SpanKind.SERVER)
    with tracing.current(root):
        lean = tracing.start_child("loader overview", kind=SpanKind.CLIENT,
                                   attributes={"keys": 2})
        sdk = tracing.tracer.start_span("loader overview", kind=SpanKind.CLIENT,
                                        attributes={"keys": 2})
        assert isinstance(lean, tracing.LeanSpan)
        for span in (lean, sdk):
            _exercise(span)
            span.end()
            span.set_attribute("after", "end")  # ignored by both
    root.end()
    finished = {id(s): s for s in exporter.get_finished_spans()}
    spans = [s for s in finished.values() if s.name == "renamed"]
    assert len(spans) == 2
    assert _fields(spans[0]) == _fields(spans[1])
    parent = root.get_span_context()
    for done in spans:
        assert done.parent is not None and done.parent.span_id == parent.span_id
        assert done.context.trace_id == parent.trace_id
        assert done.context.span_id not in (0, parent.span_id)
        assert done.start_time is not None and done.end_time is not None
        assert done.start_time <= done.end_time


def test_roots_take_the_samplers_decision_and_the_remote_parent(
        exporter: InMemorySpanExporter) -> None:
    fresh = tracing.start_root("job aggregate", kind=SpanKind.CONSUMER)
    assert fresh.is_recording() and fresh.get_span_context().trace_flags.sampled
    fresh.end()
    (job,) = [s for s in exporter.get_finished_spans() if s.name == "job aggregate"]
    assert job.parent is None and job.instrumentation_scope is not None
    assert job.instrumentation_scope.name == "analytics-gateway"

    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0))
    unsampled = tracing.start_root("GET /graphql", context=trace.set_span_in_context(
        NonRecordingSpan(remote)), kind=SpanKind.SERVER, scope="analytics-gateway.http")
    assert isinstance(unsampled, NonRecordingSpan) and not unsampled.is_recording()
    context = unsampled.get_span_context()
    assert context.trace_id == 0x1234 and context.span_id != 0x5678
    assert not context.trace_flags.sampled and not context.is_remote

    sampled_parent = SpanContext(0x1234, 0x5678, is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
    child_of_remote = tracing.start_root("GET /graphql", context=trace.set_span_in_context(
        NonRecordingSpan(sampled_parent)), kind=SpanKind.SERVER, scope="analytics-gateway.http")
    child_of_remote.end()
    (server,) = [s for s in exporter.get_finished_spans()
                 if s.name == "GET /graphql" and s.parent is not None]
    assert server.parent is not None and server.parent.span_id == 0x5678
    assert server.parent.is_remote and server.context.trace_id == 0x1234
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "analytics-gateway.http"


@pytest.mark.parametrize("sampler", ["parentbased_traceidratio", "traceidratio",
                                     "parentbased_always_on", "always_on"])
def test_a_new_trace_is_sampled_exactly_as_the_configured_sampler_decides(
        exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, sampler: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.3")
    configured = TracerProvider()  # reads the sampler from the environment, as install does
    monkeypatch.setattr(tracing, "_ROOT_BOUND", tracing._root_bound(configured))
    decisions, trace_ids = [], set()
    for _ in range(400):  # more than are drawn at once
        decided = tracing.new_trace()
        assert decided is not None
        trace_id, span_id, ids, sampled = decided
        assert trace_id and span_id  # valid ids
        trace_ids.add(trace_id)
        # Its ids as a span context of that trace would give them.
        assert ids == tracing.ids_of(SpanContext(trace_id, span_id, is_remote=False,
                                                 trace_flags=TraceFlags(int(sampled))))
        expected = configured.sampler.should_sample(None, trace_id, "POST /graphql",
                                                    SpanKind.SERVER)
        assert sampled == expected.decision.is_sampled()
        assert sampled == expected.decision.is_recording()  # a sampled new trace records
        decisions.append(sampled)
    if sampler.endswith("traceidratio"):
        assert 0 < sum(decisions) < len(decisions)  # both ways, about 30 % sampled
    assert len(trace_ids) == len(decisions)  # never the same trace twice


def test_a_forked_process_draws_trace_ids_of_its_own(exporter: InMemorySpanExporter) -> None:
    """New traces' ids are drawn ahead (`new_trace`); a forked child (a pre-forking server's
    worker) must not hand out its parent's."""
    import os

    assert tracing.new_trace() is not None
    assert tracing._DRAWN  # drawn ahead, here
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os._exit(0 if not tracing._DRAWN else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_other_samplers_are_asked_for_each_new_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    for sampler in ("always_off", "parentbased_always_off"):
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
        assert tracing._root_bound(TracerProvider()) is None  # new_trace -> None: start_root


def test_entering_a_span_is_what_the_opentelemetry_api_would_do(
        exporter: InMemorySpanExporter) -> None:
    """`tracing.enter` writes the API's `attach(set_span_in_context(span))` out, on the API's
    own context variable: the span is current for the API, what else the context held stays,
    and `leave` restores the context as it was."""
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    assert tracing._OTEL.variable is not None  # the written-out way is the one tested here
    root = tracing.start_root("root", kind=SpanKind.SERVER)
    before = otel_context.get_current()
    outer = tracing.enter(root)
    assert trace.get_current_span() is root and tracing.recording()
    token = otel_context.attach(baggage.set_baggage("tenant", "a"))  # something else current
    child = tracing.start_child("child")
    inner = tracing.enter(child)
    assert trace.get_current_span() is child
    assert baggage.get_baggage("tenant") == "a"
    assert otel_context.get_current() == trace.set_span_in_context(
        child, baggage.set_baggage("tenant", "a", trace.set_span_in_context(root, before)))
    tracing.leave(inner)
    assert trace.get_current_span() is root and baggage.get_baggage("tenant") == "a"
    otel_context.detach(token)
    tracing.leave(outer)
    assert otel_context.get_current() == before and not tracing.recording()
    child.end()
    root.end()


@pytest.mark.parametrize(("trace_id", "span_id", "flags"), [
    (1, 1, TraceFlags.SAMPLED), ((1 << 128) - 1, (1 << 64) - 1, TraceFlags.DEFAULT),
    (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 0x03)])
def test_the_ids_returned_are_those_the_w3c_propagator_writes(
        exporter: InMemorySpanExporter, trace_id: int, span_id: int, flags: int) -> None:
    """`ids_of` (and `new_trace`, above) formats the ids its own way, for speed:
    the request id is the trace id in 32 hex digits, and the `traceparent` what OpenTelemetry's
    propagator writes for the same span context; the span contexts lean spans make are the
    API's."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags))
    written: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(
        written, trace.set_span_in_context(NonRecordingSpan(context)))
    assert tracing.ids_of(context) == (f"{trace_id:032x}", written["traceparent"])
    assert tracing._context is tracing._tuple_context  # install found the layout it expects
    made = tracing._context(trace_id, span_id, TraceFlags(flags), context.trace_state)
    assert made == context and made.is_valid and not made.is_remote
    assert (made.trace_id, made.span_id, made.trace_flags) == (trace_id, span_id, flags)
    if flags == TraceFlags.SAMPLED:  # the first span of a sampled new trace
        span, tokens = tracing.new_root("GET /", trace_id, span_id, {"url.path": "/"},
                                        kind=SpanKind.SERVER)
        tracing.leave(tokens)
        assert span.get_span_context() == context
        assert span.is_recording()
