"""OpenTelemetry tracing: off unless `OTEL_TRACES_EXPORTER` says `otlp` or `console`.

`configure(settings)` sets the SDK up once per process (the API's `serve_app`, the worker's
start-up, the `jobs` CLI): a `TracerProvider` for `OTEL_SERVICE_NAME` (default `APP_NAME`), a
`BatchSpanProcessor` and the exporter (OTLP over HTTP/protobuf, which reads
`OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` itself, or the console), the sampler of
`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (read by the SDK; default
`parentbased_always_on`). With `none` (the default) nothing is
imported beyond the API, nothing is installed, and each hook below costs one boolean check.

Below the HTTP edge spans are only ever **children**: a loader batch, a SQL statement or a Redis
command gets a span when the current span is recording (a request's, a job's, a command's), never
a trace of its own, so the worker's queue polling, the probes and the background gauges trace
nothing, and an application built without tracing traces nothing even in a process where tracing
is on (the tests rely on it). The roots are the server span of a request (`ServerTracing`,
gateway/http/tracing.py), the CONSUMER span of a job (`job_span`) and the span of a CLI command
(`command_span`).

No span attribute carries a token, password or e-mail address: GraphQL variables and documents
are not recorded, SQL statements are named by their `-- name:` (never text or parameters), Redis
commands are recorded as `GET ?` (the instrumentation replaces every argument), URLs lose their
query values, exceptions are recorded by class name only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.ops.logs import current_request
from gateway.ops.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

EXPORTERS = ("otlp", "console", "none")
JOB_TRACE_KWARG = "_trace"
"""The keyword argument of an arq job that carries its enqueuer's W3C context
(`{"traceparent": ..., "tracestate": ...}`); `workers.metrics.instrumented` pops it."""

ENABLED = False
"""True once this process has a tracer provider of ours (`configure` or `install`)."""

tracer = trace.get_tracer("analytics-gateway")  # a proxy until a provider is installed
_RECORDING: ContextVar[SpanContext | None] = ContextVar("tracing_recording", default=None)
"""Whether the root span of the work running here (a request's, a job's, a command's) records:
set by `current` and read by `recording`, one context-variable look-up where OpenTelemetry's
`get_current_span().is_recording()` is five calls deep. An unsampled request asks it several
times (the operation span, each Redis command, each SQL statement)."""
_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_LEAN = False
"""Whether child spans are `LeanSpan`s (set by `install`)."""


def wanted(settings: Settings) -> bool:
    """Whether these settings ask for tracing (`OTEL_TRACES_EXPORTER` other than `none`)."""
    return settings.otel_traces_exporter != "none"


def configure(settings: Settings) -> bool:
    """Set tracing up for this process when the settings ask for it; once per process (a second
    call returns what the first did). Returns whether tracing is on."""
    if not wanted(settings):
        return False
    if _provider is None:
        exporter: SpanExporter
        processor: SpanProcessor | None = None
        if settings.otel_traces_exporter == "otlp":
            from gateway.ops.otlp import LoopExport, OTLPExporter

            exporter = OTLPExporter()  # OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, ...
            if LoopExport.usable(exporter):  # batches sent from the event loop
                processor = LoopExport(exporter)
        else:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        install(exporter, settings, processor=processor)
    return True


def install(exporter: SpanExporter, settings: Settings | None = None, *,
            batch: bool = True, lean: bool = True,
            processor: SpanProcessor | None = None) -> TracerProvider:
    """Install our tracer provider with `exporter` (the tests: an in-memory one, `batch=False`
    so that a span is there as soon as it ends), through `processor` when given (`LoopExport`).
    Process-wide, like OpenTelemetry's global provider; a second call adds the exporter to the
    provider installed by the first."""
    global ENABLED, _LEAN, _ROOT_BOUND, _SINK, _context, _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if processor is None:
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    if _provider is not None:
        _provider.add_span_processor(processor)
        _SINK = None  # several processors: each gets the SDK's span
        return _provider
    attributes: dict[str, Any] = {}
    if settings is not None:
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; an
        # explicit attribute would override them, so the name is given only when they do not.
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = settings.app_name
        attributes["service.version"] = settings.app_version
        attributes["deployment.environment.name"] = settings.app_env
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.sampler = _no_orphan_sampler()(provider.sampler)  # OTEL_TRACES_SAMPLER's, wrapped
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _provider = provider
    # Lean child spans need the provider's processors (an SDK internal: checked here, once).
    _LEAN = lean and hasattr(provider, "_active_span_processor")
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.trace import Event, ReadableSpan

    _SDK.ReadableSpan, _SDK.Event, _SDK.BoundedAttributes = ReadableSpan, Event, BoundedAttributes
    _SDK.resource = provider.resource
    _ROOT_BOUND = _root_bound(provider) if _LEAN else None
    _context = _tuple_context if _same_contexts() else _checked_context
    _find_otel_context()
    # One processor of ours that takes span fields: lean spans skip the `ReadableSpan`.
    add = getattr(processor, "add", None) \
        if getattr(processor, "takes_span_fields", False) else None
    if _LEAN and add is not None:
        _SINK = add
    ENABLED = True
    return provider


def flush(timeout_s: float = 5.0) -> None:
    """Export what is buffered (a short-lived command calls this before it exits)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def _no_orphan_sampler() -> Any:
    """The sampler class (built here: the SDK is imported only when tracing is on)."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class NoOrphanClients(Sampler):
        """The configured sampler, except that a CLIENT span (a SQL statement, a Redis command)
        without a parent is dropped: the worker polls its queue in Redis every half second,
        the probes and gauges query PostgreSQL, and none of that is worth a trace."""

        def __init__(self, base: Sampler) -> None:
            self.base = base

        def should_sample(self, parent_context: Any, trace_id: int, name: str,
                          kind: SpanKind | None = None, attributes: Any = None,
                          links: Sequence[Any] | None = None,
                          trace_state: Any = None) -> SamplingResult:
            if kind is SpanKind.CLIENT and \
                    not trace.get_current_span(parent_context).get_span_context().is_valid:
                return SamplingResult(Decision.DROP)
            return self.base.should_sample(parent_context, trace_id, name, kind, attributes,
                                           links, trace_state)

        def get_description(self) -> str:
            return f"NoOrphanClients{{{self.base.get_description()}}}"

    return NoOrphanClients


# --- child spans without the SDK's machinery ------------------------------------------------


class LeanSpan(Span):
    """A recording child span of a recording span of ours, made without the SDK's machinery.

    The SDK's `Tracer.start_span` asks the sampler, builds bounded attributes guarded by a lock,
    an event list and a link list, calls every processor's `on_start`, and copies the span into a
    `ReadableSpan` when it ends: about 25 µs a span here, a tenth of a cached request for each of
    its three spans. A child of a span that records is always recorded by the standard samplers
    (the parent-based ones follow the parent; the ratio one decides on the trace id, which is the
    parent's; `always_on` records everything), so a child needs none of that: this class keeps its
    fields in slots and, when it ends, hands one `ReadableSpan` (the SDK's, so exporters and the
    tests' in-memory exporter read it as any other) to the provider's span processors. Roots (a
    request's, a job's, a command's) stay the SDK's, with the sampler's decision.
    """

    __slots__ = ("_attributes", "_context", "_end", "_events", "_kind", "_name", "_parent",
                 "_scope", "_start", "_status")

    def __init__(self, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: Mapping[str, Any] | None,
                 start_time: int | None = None, scope: str = "analytics-gateway") -> None:
        self._name = name
        self._context = context
        self._parent = parent
        self._scope = scope
        self._kind = kind
        self._end: int | None = None
        self._attributes: dict[str, Any] = {}
        if attributes:
            self.set_attributes(attributes)
        self._events: list[Any] | tuple[()] = ()  # a list from the first event on
        self._status = _UNSET
        self._start = start_time if start_time is not None else time.time_ns()

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end is None:
            if type(value) in _PRIMITIVES:  # `_keep`'s first case, inline: the usual one
                self._attributes[key] = value
            else:
                self._keep(key, value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end is None:
            kept = self._attributes
            for key, value in attributes.items():
                if type(value) in _PRIMITIVES:  # `_keep`'s first case, inline: the usual one
                    kept[key] = value
                else:
                    self._keep(key, value)

    def set_primitive_attributes(self, attributes: Mapping[str, Any]) -> None:
        """`set_attributes` of values known to be `str`, `bool`, `int` or `float` (a route's
        server span attributes, made once by its caller): taken without a check each."""
        if self._end is None:
            self._attributes.update(attributes)

    def _keep(self, key: str, value: Any) -> None:
        kind = type(value)
        if kind in _PRIMITIVES:  # what our code sets: kept as is
            self._attributes[key] = value
        elif kind in _SEQUENCES and value and type(value[0]) in _PRIMITIVES \
                and all(type(item) is type(value[0]) for item in value):
            # A list of one primitive type (the loader's fields, counts): a tuple, as the SDK
            # keeps it, without its bounded attributes (2.7 µs an attribute here).
            self._attributes[key] = tuple(value)
        else:
            # Anything else as the SDK's span keeps it (sequences as tuples, other objects as
            # their str(), None as None), through the SDK's own bounded attributes.
            cleaned = _SDK.BoundedAttributes(attributes={key: value})
            if key in cleaned:
                self._attributes[key] = cleaned[key]

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end is None:
            if not self._events:
                self._events = []
            self._events.append(_SDK.Event(name, dict(attributes or {}),
                                           timestamp or time.time_ns()))

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK's: an OK status is final, UNSET is ignored."""
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(self, exception: BaseException, attributes: Any = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        # The class name only, as `failed` records it: a message may quote data.
        self.add_event("exception", {"exception.type": type(exception).__name__,
                                     **dict(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end_time if end_time is not None else time.time_ns()
        provider = _provider
        if provider is None:
            return
        sink = _SINK
        if sink is not None:  # `LoopExport.add`: `otlp.encode_span`'s arguments, no copy
            status = self._status
            sink(_SDK.resource, _scope(self._scope), (
                self._context, self._parent, self._name, self._kind, self._start, self._end,
                self._attributes, self._events, None if status is _UNSET else status))
            return
        provider._active_span_processor.on_end(_SDK.ReadableSpan(
            self._name, self._context, self._parent, provider.resource, self._attributes,
            tuple(self._events), (), self._kind, status=self._status, start_time=self._start,
            end_time=self._end, instrumentation_scope=_scope(self._scope)))


class _SDK:
    """The SDK classes lean spans hand over (imported by `install`: with tracing off the SDK is
    never imported)."""

    ReadableSpan: Any = None
    Event: Any = None
    BoundedAttributes: Any = None
    resource: Any = None  # the provider's (a property of the SDK's: read once)


_SINK: Any = None
"""`LoopExport.add` when it is the provider's only processor (set by `install`): lean spans
then go to it as their fields (encoded with their batch), without a `ReadableSpan`."""


_PRIMITIVES = frozenset({str, bool, int, float})
_SEQUENCES = frozenset({list, tuple})
_UNSET = Status(StatusCode.UNSET)  # a span's status until set (the SDK's statuses are immutable)


def _span_id() -> int:
    span_id = random.getrandbits(64)
    while not span_id:  # 0 is the invalid span id
        span_id = random.getrandbits(64)
    return span_id


_SCOPES: dict[str, Any] = {}


def _scope(name: str) -> Any:
    """The instrumentation scope of that name, as `trace.get_tracer(name)` would name it."""
    scope = _SCOPES.get(name)
    if scope is None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        # The SDK tracer's own (its version and schema URL are "" rather than None).
        scope = getattr(_provider.get_tracer(name) if _provider else None,
                        "_instrumentation_scope", None) or InstrumentationScope(name, "", "")
        _SCOPES[name] = scope
    return scope


def start_child(name: str, *, kind: SpanKind = SpanKind.INTERNAL,
                attributes: Mapping[str, Any] | None = None,
                start_time: int | None = None) -> Span:
    """A span under the current one, which the caller knows to be recording (`recording()`): a
    `LeanSpan` when the provider is ours, else the SDK's."""
    # The current span's context when it records (`enter` keeps it): one look-up where
    # OpenTelemetry's current span is five calls away.
    parent = _RECORDING.get() or trace.get_current_span().get_span_context()
    if _LEAN and parent.is_valid and parent.trace_flags.sampled:
        context = _context(parent.trace_id, _span_id(), parent.trace_flags, parent.trace_state)
        return LeanSpan(name, context, parent, kind, attributes, start_time)
    return tracer.start_span(name, kind=kind, attributes=attributes, start_time=start_time)


NewTrace = tuple[int, int, tuple[str, str], bool]
"""A new trace's first span: its trace id, span id, ids (as `ids_of` gives them) and whether the
sampler keeps it."""


def new_trace() -> NewTrace | None:
    """A new trace's first span, when the provider's standard random ids and a ratio or
    always-on root sampler (`OTEL_TRACES_SAMPLER`) let it be decided here as the sampler decides
    (`trace_id & (2**64 - 1) < bound`), which is most of the cost of a request that is not
    sampled; None when the sampler must be asked (`start_root`).

    A trace that is not sampled needs nothing more than its ids: a request of one makes no span
    object at all (its `traceparent` is kept in the request's `RequestInfo`, the edge's, for
    `enqueueing`; a `NonRecordingSpan` made current cost such a request about a microsecond
    more). A sampled one's span is made by `new_root`.

    The ids are drawn ahead, `_DRAWN_AHEAD` at a time (`_draw`): formatted among a request's own
    work, a new trace's ids cost 1.4 µs of a cached dashboard's CPU (in process, `bench.micro_app`),
    where drawn in a loop of their own they cost about 0.3 µs each."""
    bound = _ROOT_BOUND
    if bound is None:
        return None
    if _DRAWN_FOR[0] != bound:  # another sampler (a test's): those drawn are decided anew
        _draw(bound)
    try:
        return _DRAWN.pop()
    except IndexError:  # all used
        _draw(bound)
        return _DRAWN.pop()


def _draw(bound: int) -> None:
    """Fill `_DRAWN` with new traces' ids (random, as the SDK's `RandomIdGenerator` draws them)
    and the sampling decision of `bound` (`_DRAWN_FOR`)."""
    _DRAWN.clear()
    _DRAWN_FOR[0] = bound
    limit = _TRACE_ID_LIMIT
    for _ in range(_DRAWN_AHEAD):
        bits = random.getrandbits(192)  # the trace id and the span id, drawn at once
        trace_id, span_id = bits >> 64, bits & limit
        if not trace_id or not span_id:  # 0 is no valid id
            continue
        hex_ids = bits.to_bytes(24, "big").hex()  # both ids as `ids_of` formats them
        hex_id = hex_ids[:32]
        sampled = trace_id & limit < bound
        _DRAWN.append((trace_id, span_id,
                       (hex_id, f"00-{hex_id}-{hex_ids[32:]}-{'01' if sampled else '00'}"),
                       sampled))


_DRAWN_AHEAD = 256
_DRAWN: list[NewTrace] = []
"""New traces' ids drawn ahead (`new_trace`), emptied in a forked child (its own draws)."""
_DRAWN_FOR = [-1]  # the sampler bound `_DRAWN` was decided with
os.register_at_fork(after_in_child=_DRAWN.clear)


def new_root(name: str, trace_id: int, span_id: int, attributes: Mapping[str, Any], *,
             kind: SpanKind, scope: str = "analytics-gateway") -> tuple[LeanSpan, tuple[Any, Any]]:
    """The first span of a sampled new trace whose ids `new_trace` gave, with `attributes`
    (values known to be `str`, `bool`, `int` or `float`: taken without a check each), made
    current: the span and what `leave` needs. What a sampled request's server span needs, in one
    call: each call saved here is about 0.2 µs of every sampled request (docs/operations.md,
    "Tracing")."""
    context = _context(trace_id, span_id, _SAMPLED, DEFAULT_TRACE_STATE)
    span = LeanSpan(name, context, None, kind, None, scope=scope)
    span.set_primitive_attributes(attributes)
    return span, enter(span, context)


def _checked_context(trace_id: int, span_id: int, flags: TraceFlags,
                     state: TraceState) -> SpanContext:
    """A local span context, as the API makes it (validating the ids)."""
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags, trace_state=state)


def _tuple_context(trace_id: int, span_id: int, flags: TraceFlags,
                   state: TraceState) -> SpanContext:
    """`_checked_context` for ids known to be valid (ours: drawn non-zero within range), made as
    `SpanContext.__new__` makes it without its checks: 0.14 µs rather than 0.40, on every span
    (`install` uses it only if it makes the same span context as the API)."""
    return tuple.__new__(SpanContext, (trace_id, span_id, False, flags, state, True))


_context = _checked_context
"""How lean spans make their span context (`_tuple_context` once `install` has checked it)."""


def _same_contexts() -> bool:
    """Whether `_tuple_context` makes what the API's `SpanContext` makes (its layout as a tuple
    is not a documented interface: checked once, by `install`)."""
    made = _tuple_context(0x1234, 0x5678, _SAMPLED, DEFAULT_TRACE_STATE)
    expected = _checked_context(0x1234, 0x5678, _SAMPLED, DEFAULT_TRACE_STATE)
    return made == expected and all(
        getattr(made, name) == getattr(expected, name)
        for name in ("trace_id", "span_id", "is_remote", "trace_flags", "trace_state",
                     "is_valid"))


_TRACE_ID_LIMIT = (1 << 64) - 1
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ROOT_BOUND: int | None = None
"""The root sampler's bound for `new_trace`, or None when it must ask the sampler (set by
`install`)."""


def _root_bound(provider: TracerProvider) -> int | None:
    """`new_trace`'s bound for this provider's sampler and id generator, or None."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_ON,
        ParentBased,
        TraceIdRatioBased,
    )

    if type(provider.id_generator) is not RandomIdGenerator:
        return None
    sampler = getattr(provider.sampler, "base", provider.sampler)  # ours wraps the configured
    if isinstance(sampler, ParentBased):
        sampler = getattr(sampler, "_root", None)  # with no parent, the root sampler decides
    if sampler is ALWAYS_ON:
        return _TRACE_ID_LIMIT + 1
    if type(sampler) is TraceIdRatioBased:
        return int(sampler.bound)
    return None


def start_root(name: str, *, kind: SpanKind = SpanKind.INTERNAL, context: Any = None,
               attributes: Mapping[str, Any] | None = None,
               scope: str = "analytics-gateway") -> Span:
    """The first span of ours in a piece of work (a request's, a job's, a command's), under the
    remote parent of `context` if it has one: the sampler decides as in the SDK's
    `Tracer.start_span` (the same ids, decision, flags and trace state), then a `LeanSpan`
    records, or a `NonRecordingSpan` carries the ids of a trace that is not sampled."""
    provider = _provider
    if not _LEAN or provider is None:
        return trace.get_tracer(scope).start_span(name, context=context, kind=kind,
                                                  attributes=attributes)
    parent = trace.get_current_span(context).get_span_context()
    trace_id = parent.trace_id if parent.is_valid else \
        provider.id_generator.generate_trace_id()
    decision = provider.sampler.should_sample(context, trace_id, name, kind, attributes)
    flags = TraceFlags(TraceFlags.SAMPLED if decision.decision.is_sampled()
                       else TraceFlags.DEFAULT)
    span_context = SpanContext(trace_id, provider.id_generator.generate_span_id(),
                               is_remote=False, trace_flags=flags,
                               trace_state=decision.trace_state)
    if not decision.decision.is_recording():
        return NonRecordingSpan(span_context)
    merged = {**(attributes or {}), **(decision.attributes or {})}
    return LeanSpan(name, span_context, parent if parent.is_valid else None, kind, merged,
                    scope=scope)


# --- the current span -----------------------------------------------------------------------


def recording() -> bool:
    """Whether a span of ours is recording here (so a child span would be kept)."""
    return ENABLED and _RECORDING.get() is not None


def enter(span: Span, recording: SpanContext | None = None) -> tuple[Any, Any]:
    """Make `span` current and note whether it records (see `_RECORDING`); returns what `leave`
    needs to restore the previous state. For the hottest path, the server span; elsewhere use
    `current`. `recording`: the span's context, when the caller knows it records.

    What `otel_context.attach(trace.set_span_in_context(span))` does, written out: the current
    OpenTelemetry context with the span under the API's own key, set in the API's own context
    variable (`_OTEL`, found by `install`), without the API's layers of calls (`set_value`,
    `get_current` and `attach`, each through its runtime context, and `detach`): part of what
    took a sampled request from +12.9 to +10.2 µs (docs/operations.md, "Tracing"). With another
    runtime context (`OTEL_PYTHON_CONTEXT`), the API's calls."""
    if recording is None and span.is_recording():
        recording = span.get_span_context()
    noted = _RECORDING.set(recording)
    if _OTEL.variable is None:
        return otel_context.attach(trace.set_span_in_context(span)), noted
    current = _OTEL.variable.get()
    if current:
        values = dict(current)
        values[_OTEL.span_key] = span
    else:  # nothing current yet: a request's first span
        values = {_OTEL.span_key: span}
    return _OTEL.variable.set(otel_context.Context(values)), noted


def leave(tokens: tuple[Any, Any]) -> None:
    _RECORDING.reset(tokens[1])
    if _OTEL.variable is None:
        otel_context.detach(tokens[0])
        return
    try:
        _OTEL.variable.reset(tokens[0])
    except ValueError:  # as `otel_context.detach`: a token of another context is logged
        logging.getLogger(__name__).exception("Failed to detach context")


class _OTEL:
    """The OpenTelemetry API's context variable and current-span key, when its runtime context
    is the standard one (set by `install`; checked there)."""

    variable: ContextVar[Any] | None = None
    span_key: str = ""


def _find_otel_context() -> None:
    """`_OTEL` from the API's internals, when they are what `enter` expects; else left unset,
    and `enter` uses the API's calls."""
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    from opentelemetry.trace import propagation

    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    key = getattr(propagation, "_SPAN_KEY", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar) \
            and isinstance(key, str):
        _OTEL.variable, _OTEL.span_key = variable, key


class current:  # lower case: used as a function, `with tracing.current(span):`
    """`span` current while the block runs (a request's, a job's, a child's). A class rather
    than a generator: a request with spans enters several, and a generator-based context
    manager costs about three times as much."""

    __slots__ = ("span", "tokens")

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> None:
        self.tokens = enter(self.span)

    def __exit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> None:
        leave(self.tokens)


def ids_of(context: SpanContext) -> tuple[str, str]:
    """(trace id, `traceparent`) of a valid span context, as 32 hex digits and a W3C header."""
    trace_id, span_id, _, flags, _, _ = context  # a SpanContext is a tuple: no property calls
    # `int.to_bytes(...).hex()`: 0.20 µs here where "%032x" formatting cost 0.35 (`_draw`
    # formats a new trace's ids so too).
    hex_id = trace_id.to_bytes(16, "big").hex()
    return hex_id, f"00-{hex_id}-{span_id.to_bytes(8, 'big').hex()}-{_FLAGS[flags]}"


_FLAGS = tuple(f"{flags:02x}" for flags in range(256))  # a `traceparent`'s last field


def annotate(**attributes: Any) -> None:
    """Set attributes on the current span, if one is recording."""
    if ENABLED and _RECORDING.get():
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(attributes)


def failed(span: Span, exc: BaseException) -> None:
    """Mark a span failed by the exception's class name only (a message may quote data)."""
    name = type(exc).__name__
    span.set_attribute("error.type", name)
    span.set_status(Status(StatusCode.ERROR, name))


class _span:  # lower case: used as a function, `with _span(name) as span:`
    """A span made current while the block runs (a root when `context` is given or nothing is
    current); an exception marks it failed unless `expected`. A class, like `current`."""

    __slots__ = ("expected", "span", "tokens")

    def __init__(self, name: str, *, kind: SpanKind = SpanKind.INTERNAL, context: Any = None,
                 attributes: Mapping[str, Any] | None = None,
                 expected: tuple[type[BaseException], ...] = ()) -> None:
        self.span = start_root(name, context=context, kind=kind, attributes=attributes) \
            if context is not None or not _RECORDING.get() \
            else start_child(name, kind=kind, attributes=attributes)
        self.expected = expected

    def __enter__(self) -> Span:
        self.tokens = enter(self.span)
        return self.span

    def __exit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> None:
        leave(self.tokens)
        if isinstance(exc, Exception) and not isinstance(exc, self.expected):
            failed(self.span, exc)
        self.span.end()


def child_span(name: str, *, kind: SpanKind = SpanKind.INTERNAL,
               attributes: Mapping[str, Any] | None = None
               ) -> contextlib.AbstractContextManager[Span | None]:
    """A span under the current one, made current; nothing (None) when none is recording."""
    if not recording():
        return contextlib.nullcontext()
    return _span(name, kind=kind, attributes=attributes)


@contextlib.contextmanager
def command_span(name: str) -> Iterator[Span | None]:
    """The root span of a CLI command (`jobs enqueue aggregate`); nothing with tracing off."""
    if not ENABLED:
        yield None
        return
    with _span(name) as span:
        yield span


def redis_span(command: str) -> contextlib.AbstractContextManager[Span | None]:
    """A CLIENT span for a Redis command (or pipeline) under the current span, only when that
    one records: an unsampled request pays one check, not a span. The command's name only
    (`MGET`, `SET`, `EVALSHA`): its arguments hold keys with e-mail addresses (login limits)."""
    if not recording():
        return contextlib.nullcontext()
    return _LeafSpan(command, {"db.system": "redis", "db.operation.name": command})


class _LeafSpan:
    """A CLIENT span around a call that starts no span of its own (a Redis command): not made
    current, so it costs no context switch; an exception marks it failed, as `_span` does."""

    __slots__ = ("span",)

    def __init__(self, name: str, attributes: Mapping[str, Any]) -> None:
        self.span = start_child(name, kind=SpanKind.CLIENT, attributes=attributes)

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> None:
        if isinstance(exc, Exception):
            failed(self.span, exc)
        self.span.end()


# --- SQL ------------------------------------------------------------------------------------

_VERB = re.compile(r"\s*([A-Za-z]{1,20})\b")


def statement_name(sql: str) -> str:
    """A name for SQL that is not one of sql/queries/: its first keyword (`BEGIN`, `SELECT`),
    never more of its text."""
    match = _VERB.match(sql)
    return match.group(1).upper() if match else "SQL"


def sql_span(name: str, elapsed: float, exception: BaseException | None,
             address: Any = None) -> None:
    """One finished SQL statement as a CLIENT span under the current span, from asyncpg's query
    logger: asyncpg calls it with `loop.call_soon`, which runs it in a copy of the context of
    the code that ran the statement, so the current span is that code's (a loader batch, a
    resolver, a job). asyncpg gives the duration only; the span ends now and starts `elapsed`
    before (the callback runs on the loop's next turn, so both are late by that turn)."""
    if not _RECORDING.get():
        return
    end = time.time_ns()
    attributes: dict[str, Any] = {"db.system": "postgresql", "db.system.name": "postgresql",
                                  "db.operation.name": name, "db.query.summary": name}
    if isinstance(address, tuple) and len(address) >= 2:
        attributes["server.address"] = str(address[0])
        attributes["server.port"] = int(address[1])
    span = start_child(name, kind=SpanKind.CLIENT, attributes=attributes,
                       start_time=end - int(elapsed * 1e9))
    if exception is not None:
        failed(span, exception)
    span.end(end_time=end)


# --- jobs -----------------------------------------------------------------------------------


@contextlib.contextmanager
def enqueueing(job: str) -> Iterator[dict[str, Any]]:
    """Around the enqueueing of a job: yields the keyword arguments to add to `enqueue_job`,
    `{"_trace": {"traceparent": ...}}` when there is a trace to continue (sampled or not, so the
    worker samples as the enqueuer did), inside a PRODUCER span `enqueue JOB` when recording."""
    if not ENABLED:
        yield {}
        return
    request = current_request.get()
    if request is not None and request.traceparent is not None:
        # A request of a new trace that is not sampled (`new_trace`).
        yield {JOB_TRACE_KWARG: {"traceparent": request.traceparent}}
        return
    if not trace.get_current_span().get_span_context().is_valid:
        yield {}
        return
    if not _RECORDING.get():
        yield {JOB_TRACE_KWARG: _carrier()}
        return
    with _span(f"enqueue {job}", kind=SpanKind.PRODUCER,
               attributes={"messaging.system": "arq", "messaging.operation.type": "send",
                           "messaging.operation.name": "enqueue",
                           "messaging.destination.name": job}):
        yield {JOB_TRACE_KWARG: _carrier()}


def _carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


@contextlib.contextmanager
def job_span(job: str, carrier: Any, attributes: Mapping[str, Any],
             expected: tuple[type[BaseException], ...] = ()) -> Iterator[Span]:
    """The CONSUMER span of one run of a job, continuing the trace its enqueuer passed in
    `carrier` (a new trace when there is none or it does not parse: an older release's job, a
    cron run). An exception marks it failed (class name only), unless it is `expected` (arq's
    `Retry`: the job runs again)."""
    parent = None
    if isinstance(carrier, dict):
        parent = _propagator.extract({k: v for k, v in carrier.items()
                                      if k in ("traceparent", "tracestate")
                                      and isinstance(v, str)})
    with _span(job, kind=SpanKind.CONSUMER, context=parent, expected=expected,
               attributes={"messaging.system": "arq", "messaging.operation.type": "process",
                           "messaging.destination.name": job, **attributes}) as span:
        yield span
