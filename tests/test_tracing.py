"""OpenTelemetry tracing (gateway/ops/tracing.py), with the SDK's in-memory exporter.

The tracer provider is process-wide: it is installed once for the session (`exporter`) and
emptied before each test. Applications and workers built from the ordinary test settings
(`OTEL_TRACES_EXPORTER=none`) trace nothing even so (`test_nothing_is_traced_with_tracing_off`):
below the HTTP edge a span is only ever a child of a recording span, so the other test files are
unaffected.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio import Redis

from domain.changes import REPAIR_JOB, repair_job_id
from gateway.ops import tracing
from gateway.ops.settings import Settings
from tests.factories import PASSWORD, User, UserFactory
from tests.test_workers import arq, insert_tasks, run_burst, worker_class

__all__ = ["arq"]  # the fixture, shared with tests/test_workers.py

DASHBOARD = """query Dashboard {
  overview { totalTasks completedTasks completionRate }
  trends { points { date tasksCreated tasksCompleted } }
  productivity { score currentStreak }
}"""
UPDATE = """mutation UpdateTask($id: ID!, $input: UpdateTaskInput!) {
  updateTask(id: $id, input: $input) { dueDate } }"""
LOGIN = """mutation Login($email: String!, $password: String!) {
  login(email: $email, password: $password) { accessToken refreshToken } }"""
EMAIL = "Tracy.Tracer@Example.com"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="session")
def _session_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    tracing.install(exporter, batch=False)  # spans are there as soon as they end
    return exporter


@pytest.fixture
def exporter(_session_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    _session_exporter.clear()
    yield _session_exporter
    _session_exporter.clear()


@pytest.fixture
def traced_settings(settings: Settings) -> Settings:
    return replace(settings, otel_traces_exporter="console")  # the provider is the test's


@pytest.fixture
async def traced(traced_settings: Settings, pool: asyncpg.Pool, redis: Redis,
                 exporter: InMemorySpanExporter, app_with: Callable[..., Any]
                 ) -> AsyncIterator[httpx.AsyncClient]:
    async with app_with(traced_settings) as client:
        yield client


@pytest.fixture
async def tracy(users: UserFactory) -> User:
    user = await users.create(email=EMAIL.lower(), timezone="America/Los_Angeles")
    start = datetime(2026, 3, 1, 9, tzinfo=UTC)
    await insert_tasks(users.pool, user, [
        {"status": "done" if i % 2 else "todo", "priority": ("low", "medium", "high")[i % 3],
         "due_date": (start + timedelta(days=i)).date(), "created_at": start + timedelta(days=i),
         "completed_at": start + timedelta(days=i, hours=3) if i % 2 else None,
         "deleted": False} for i in range(12)])
    return user


async def post(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None,
               token: str | None = None, **headers: str) -> httpx.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return await client.post("/graphql", json={"query": query, "variables": variables},
                             headers=headers)


def hexid(value: int, digits: int = 32) -> str:
    return format(value, f"0{digits}x")


class Tree:
    """The finished spans as a tree, by span id."""

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self.spans = list(spans)
        self.by_id = {s.context.span_id: s for s in self.spans}

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, self.render())
        return found[0]

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        return sorted((s for s in self.spans
                       if s.parent is not None and s.parent.span_id == span.context.span_id),
                      key=lambda s: s.start_time or 0)

    def descendants(self, span: ReadableSpan) -> list[ReadableSpan]:
        out = []
        for child in self.children(span):
            out += [child, *self.descendants(child)]
        return out

    def roots(self) -> list[ReadableSpan]:
        return [s for s in self.spans if s.parent is None or s.parent.span_id not in self.by_id]

    def render(self) -> str:
        """An indented tree with durations (docs/operations.md shows one)."""
        lines: list[str] = []

        def walk(span: ReadableSpan, depth: int) -> None:
            ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            kind = span.kind.name
            lines.append(f"{'  ' * depth}{span.name}  [{kind}, {ms:.2f} ms]")
            for child in self.children(span):
                walk(child, depth + 1)

        for root in sorted(self.roots(), key=lambda s: s.start_time or 0):
            walk(root, 0)
        return "\n".join(lines)


def assert_nothing_secret(spans: Iterable[ReadableSpan], *secrets: str) -> None:
    """No span name, attribute or event of `spans` contains any of `secrets` (any case)."""
    wanted = [s.lower() for s in secrets if s]
    for span in spans:
        texts = [span.name]
        for key, value in (span.attributes or {}).items():
            texts += [key, *(map(str, value) if isinstance(value, tuple) else [str(value)])]
        for event in span.events:
            texts += [event.name, *map(str, (event.attributes or {}).values())]
        if span.status.description:
            texts.append(span.status.description)
        for text in texts:
            for secret in wanted:
                assert secret not in text.lower(), (span.name, text)


# --- a request ---------------------------------------------------------------------------------


async def test_a_dashboard_request_is_one_trace_down_to_each_statement(
        traced: httpx.AsyncClient, exporter: InMemorySpanExporter, tracy: User,
        token_for: Callable[..., str]) -> None:
    token = token_for(tracy.id)
    response = await post(traced, DASHBOARD, token=token)
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    tree = Tree(exporter.get_finished_spans())

    server = tree.one("POST /graphql")
    assert server.kind is SpanKind.SERVER and server.parent is None
    assert tree.roots() == [server], tree.render()
    assert {s.context.trace_id for s in tree.spans} == {server.context.trace_id}
    # the request id is the trace id; the response carries the server span's context
    trace_id = hexid(server.context.trace_id)
    assert response.headers["x-request-id"] == trace_id
    match = TRACEPARENT.match(response.headers["traceparent"])
    assert match and match.groups()[:2] == (trace_id, hexid(server.context.span_id, 16))
    assert int(match.group(3), 16) & 1  # sampled

    operation = tree.one("query Dashboard")
    assert operation.parent is not None and operation.parent.span_id == server.context.span_id
    assert operation.attributes is not None
    assert operation.attributes["graphql.operation.type"] == "query"
    assert operation.attributes["graphql.operation.name"] == "Dashboard"
    assert operation.status.status_code is not StatusCode.ERROR

    # one span per loader batch, under the operation, with its cache lookups: the three figure
    # loaders' batches are one shared batch (loaders/cached.py: SharedBatch), whose span says
    # what each of them asked and found, and has the statement below it
    below_operation = tree.descendants(operation)
    fields = ("overview", "trends", "productivity")
    for field in fields:
        assert not tree.named(f"loader {field}")  # no span of its own: the shared one's time
    shared = tree.one("loader figures")
    assert shared in below_operation and shared.attributes is not None
    assert sorted(shared.attributes["loader.fields"]) == sorted(fields)
    assert (shared.attributes["cache.hits"], shared.attributes["cache.misses"]) == (0, 3)
    assert list(shared.attributes["loader.field_keys"]) == [1, 1, 1]
    assert list(shared.attributes["cache.field_misses"]) == [1, 1, 1]
    assert list(shared.attributes["cache.field_hits"]) == [0, 0, 0]
    statement = "analytics_figures"
    assert statement in [s.name for s in tree.children(shared)], tree.render()
    sql = tree.one(statement)
    assert sql.kind is SpanKind.CLIENT and sql.attributes is not None
    assert sql.attributes["db.system"] == "postgresql"
    assert sql.attributes["db.query.summary"] == statement
    assert sql.attributes["db.operation.name"] == statement
    assert sql.start_time is not None and sql.end_time is not None
    assert shared.start_time is not None and sql.start_time >= shared.start_time
    # every SQL statement is named by its query name or first keyword, never by its text
    for span in tree.spans:
        if (span.attributes or {}).get("db.system") == "postgresql":
            assert re.fullmatch(r"[a-z_]+|[A-Z]+", span.name), span.name
            assert not any(" " in str(v) for v in span.attributes.values()), span.attributes
    # the cache's lookups (one MGET for the fields asked in one tick) and writes are there too
    redis = [s for s in tree.spans if (s.attributes or {}).get("db.system") == "redis"]
    assert redis and all(s.kind is SpanKind.CLIENT for s in redis)
    assert "MGET" in [s.name for s in below_operation], tree.render()
    assert_nothing_secret(tree.spans, token, EMAIL, PASSWORD)

    # again: the figures come from the cache, and the loader span says so
    exporter.clear()
    await post(traced, DASHBOARD, token=token)
    second = Tree(exporter.get_finished_spans())
    attributes = second.one("loader figures").attributes or {}
    assert list(attributes["cache.field_hits"]) == [1, 1, 1]
    assert (attributes["cache.hits"], attributes["cache.misses"]) == (3, 0)
    assert not second.named("analytics_figures")
    print(tree.render())  # `pytest -s -k dashboard` shows the example of docs/operations.md


async def test_the_callers_traceparent_is_continued_and_returned(
        traced: httpx.AsyncClient, exporter: InMemorySpanExporter) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = await post(traced, "query Ping { __typename }",
                          traceparent=f"00-{trace_id}-{parent_id}-01",
                          **{"X-Request-ID": "client-chosen-id"})
    assert response.status_code == 200
    server = Tree(exporter.get_finished_spans()).one("POST /graphql")
    assert hexid(server.context.trace_id) == trace_id
    assert server.parent is not None and server.parent.is_remote
    assert hexid(server.parent.span_id, 16) == parent_id
    match = TRACEPARENT.match(response.headers["traceparent"])
    assert match and match.groups() == (trace_id, hexid(server.context.span_id, 16), "01")
    assert response.headers["x-request-id"] == trace_id  # the request id is the trace id
    assert (server.attributes or {})["http.request.header.x-request-id"] == "client-chosen-id"

    # a caller's trace that is not sampled stays unsampled, and is still returned
    exporter.clear()
    response = await post(traced, "query Ping { __typename }",
                          traceparent=f"00-{trace_id}-{parent_id}-00")
    assert exporter.get_finished_spans() == ()
    match = TRACEPARENT.match(response.headers["traceparent"])
    assert match and match.group(1) == trace_id and not int(match.group(3), 16) & 1
    # a malformed one starts a new trace
    exporter.clear()
    response = await post(traced, "query Ping { __typename }", traceparent="00-nonsense-01")
    server = Tree(exporter.get_finished_spans()).one("POST /graphql")
    assert server.parent is None and hexid(server.context.trace_id) != trace_id
    assert response.headers["x-request-id"] == hexid(server.context.trace_id)


async def test_probes_are_not_traced_and_query_strings_lose_their_values(
        traced: httpx.AsyncClient, exporter: InMemorySpanExporter) -> None:
    assert (await traced.get("/health")).status_code == 200
    assert (await traced.get("/ready")).status_code == 200
    assert exporter.get_finished_spans() == ()
    query = '{ __typename }'
    response = await traced.get("/graphql", params={
        "query": query, "variables": f'{{"email": "{EMAIL}"}}'})
    assert response.status_code == 200, response.text
    tree = Tree(exporter.get_finished_spans())
    server = tree.one("GET /graphql")
    assert (server.attributes or {})["url.query"] == "query=[redacted]&variables=[redacted]"
    assert_nothing_secret(tree.spans, EMAIL, "__typename")
    # an unknown path is named by its method alone
    exporter.clear()
    await traced.get("/wp-admin/setup.php")
    assert [s.name for s in exporter.get_finished_spans()] == ["GET"]


async def test_no_token_password_or_email_in_any_span_attribute(
        traced_settings: Settings, pool: asyncpg.Pool, redis: Redis, users: UserFactory,
        exporter: InMemorySpanExporter, app_with: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Even with headers recorded on purpose, Authorization is not; the login rate limit's Redis
    # keys hold the e-mail address, the login mutation's variables the password.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
                       "authorization,user-agent")
    await users.create(email=EMAIL.lower())
    async with app_with(traced_settings, rate_limit_enabled=True) as client:
        response = await post(client, LOGIN, {"email": EMAIL, "password": PASSWORD})
        body = response.json()
        token = body["data"]["login"]["accessToken"]
        refresh = body["data"]["login"]["refreshToken"]
        await post(client, LOGIN, {"email": EMAIL, "password": "wrong-" + PASSWORD})
        await post(client, DASHBOARD, token=token)
        await post(client, "query Me { me { email } }", token=token)
    tree = Tree(exporter.get_finished_spans())
    assert tree.named("mutation Login") and tree.named("query Me")
    redis_commands = [s for s in tree.spans if (s.attributes or {}).get("db.system") == "redis"]
    assert any(s.name in ("EVALSHA", "EVAL") for s in redis_commands), tree.render()
    headers = [s.attributes["http.request.header.authorization"] for s in tree.spans
               if s.attributes and "http.request.header.authorization" in s.attributes]
    assert headers and all(h == ("[REDACTED]",) for h in headers)
    assert_nothing_secret(tree.spans, token, refresh, PASSWORD, EMAIL, EMAIL.split("@")[0])


# --- jobs --------------------------------------------------------------------------------------


async def test_a_mutation_and_the_repair_job_it_queues_share_one_trace(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, tracy: User, settings: Settings,
        traced: httpx.AsyncClient, exporter: InMemorySpanExporter,
        token_for: Callable[..., str]) -> None:
    d_from, d_to = date(2026, 3, 1), date(2026, 3, 14)
    await arq.enqueue_job("aggregate", d_from, d_to, None)
    await run_burst(worker_class(settings))  # the rollup, untraced
    assert exporter.get_finished_spans() == ()
    task_id = await pool.fetchval(
        "select id from tasks where user_id = $1 and due_date between $2 and $3 order by id "
        "limit 1", tracy.id, d_from, d_to - timedelta(days=2))
    token = token_for(tracy.id)

    response = await post(traced, UPDATE, {"id": str(task_id),
                                           "input": {"dueDate": d_to.isoformat()}}, token=token)
    assert response.json()["data"]["updateTask"]["dueDate"] == d_to.isoformat(), response.text
    request = Tree(exporter.get_finished_spans())
    server = request.one("POST /graphql")
    mutation = request.one("mutation UpdateTask")
    enqueue = request.one(f"enqueue {REPAIR_JOB}")
    assert enqueue.kind is SpanKind.PRODUCER and enqueue in request.descendants(mutation)
    assert (enqueue.attributes or {})["messaging.message.id"] == repair_job_id(tracy.id)
    assert (enqueue.attributes or {})["arq.job.enqueued"] is True
    assert [j.job_id for j in await arq.queued_jobs()] == [repair_job_id(tracy.id)]
    assert {s.context.trace_id for s in request.spans} == {server.context.trace_id}
    assert response.headers["x-request-id"] == hexid(server.context.trace_id)

    exporter.clear()
    worker = await run_burst(worker_class(settings, otel_traces_exporter="console"))
    assert worker.jobs_failed == 0
    jobs = Tree(exporter.get_finished_spans())
    repair = jobs.one(REPAIR_JOB)
    assert repair.kind is SpanKind.CONSUMER
    assert repair.context.trace_id == server.context.trace_id  # the mutation's trace
    assert repair.parent is not None and repair.parent.span_id == enqueue.context.span_id
    attributes = repair.attributes or {}
    assert attributes["arq.job.outcome"] == "success"
    assert attributes["messaging.message.id"] == repair_job_id(tracy.id)
    statements = {s.name for s in jobs.descendants(repair) if s.kind is SpanKind.CLIENT}
    assert "rollup_mark_repairing" in statements or any(
        name.startswith("rollup_") for name in statements), jobs.render()
    # the view refresh that the repair queued continues the same trace
    refresh = jobs.one("refresh_views")
    assert refresh.context.trace_id == server.context.trace_id
    assert refresh.parent is not None
    assert jobs.by_id[refresh.parent.span_id].name == "enqueue refresh_views"
    assert_nothing_secret([*request.spans, *jobs.spans], token, EMAIL, PASSWORD)


async def test_a_new_trace_that_is_not_sampled_records_nothing_and_neither_do_its_jobs(
        pool: asyncpg.Pool, arq: ArqRedis, tracy: User, settings: Settings,
        traced: httpx.AsyncClient, exporter: InMemorySpanExporter,
        token_for: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A request without `traceparent` whose new trace the sampler leaves out has no span
    object at all (`tracing.new_trace`), yet its ids are the request id and the
    `traceparent` returned, and the job it queues carries them, so the worker leaves it out
    too."""
    monkeypatch.setattr(tracing, "_ROOT_BOUND", 0)  # a ratio sampler at 0 %
    task_id = await pool.fetchval("select id from tasks where user_id = $1 limit 1", tracy.id)
    response = await post(traced, UPDATE, {"id": str(task_id),
                                           "input": {"dueDate": "2026-03-20"}},
                          token=token_for(tracy.id))
    assert response.json()["data"]["updateTask"]["dueDate"] == "2026-03-20", response.text
    returned = TRACEPARENT.match(response.headers["traceparent"])
    assert returned is not None and returned.group(3) == "00"
    assert response.headers["x-request-id"] == returned.group(1)
    assert exporter.get_finished_spans() == ()
    [job] = await arq.queued_jobs()
    assert job.kwargs[tracing.JOB_TRACE_KWARG] == {"traceparent": response.headers["traceparent"]}
    monkeypatch.undo()  # the worker's own sampler would sample a new trace: it must follow
    worker = await run_burst(worker_class(settings, otel_traces_exporter="console"))
    assert worker.jobs_failed == 0 and worker.jobs_complete >= 1
    assert exporter.get_finished_spans() == ()


async def test_jobs_without_or_with_a_bad_trace_context_still_run(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings,
        exporter: InMemorySpanExporter) -> None:
    user = await users.create()
    remote = "0af7651916cd43dd8448eb211c80319c"
    await arq.enqueue_job(REPAIR_JOB, user.id, _job_id="old-release")  # no _trace at all
    await arq.enqueue_job(REPAIR_JOB, user.id, _job_id="garbage", _trace="not a dict")
    await arq.enqueue_job(REPAIR_JOB, user.id, _job_id="bad-header",
                          _trace={"traceparent": "zz-nonsense"})
    # a later version of the W3C format: its first four fields are read, the rest ignored
    await arq.enqueue_job(REPAIR_JOB, user.id, _job_id="future",
                          _trace={"traceparent": f"cc-{remote}-b7ad6b7169203331-01-later"})
    worker = await run_burst(worker_class(settings, otel_traces_exporter="console"))
    assert (worker.jobs_complete, worker.jobs_failed) == (4, 0)
    runs = {(s.attributes or {})["messaging.message.id"]: s
            for s in exporter.get_finished_spans() if s.name == REPAIR_JOB}
    assert set(runs) == {"old-release", "garbage", "bad-header", "future"}
    for job_id in ("old-release", "garbage", "bad-header"):
        assert runs[job_id].parent is None
    assert hexid(runs["future"].context.trace_id) == remote


async def test_jobs_enqueue_from_the_command_line_starts_the_trace_its_job_continues(
        pool: asyncpg.Pool, arq: ArqRedis, settings: Settings, exporter: InMemorySpanExporter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import cli

    monkeypatch.setattr(cli, "_settings", lambda: replace(settings,
                                                          otel_traces_exporter="console"))
    args = argparse.Namespace(job="warm-cache")
    assert await asyncio.to_thread(cli.cmd_enqueue, args) == 0
    command = Tree(exporter.get_finished_spans()).one("jobs enqueue warm-cache")
    assert command.parent is None
    exporter.clear()
    await run_burst(worker_class(settings, otel_traces_exporter="console"))
    run = Tree(exporter.get_finished_spans()).one("warm_cache")
    assert run.context.trace_id == command.context.trace_id
    (queued,) = [j for j in await arq.all_job_results() if j.function == "warm_cache"]
    assert "_trace" not in cli._call(queued)  # `jobs status` does not show the carrier


# --- off ---------------------------------------------------------------------------------------


async def test_nothing_is_traced_with_tracing_off(
        client: httpx.AsyncClient, arq: ArqRedis, pool: asyncpg.Pool, settings: Settings,
        exporter: InMemorySpanExporter, tracy: User, token_for: Callable[..., str]) -> None:
    assert settings.otel_traces_exporter == "none"
    token = token_for(tracy.id)
    response = await post(client, DASHBOARD, token=token, **{"X-Request-ID": "mine-123"},
                          traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "mine-123"
    assert "traceparent" not in response.headers
    task_id = await pool.fetchval("select id from tasks where user_id = $1 limit 1", tracy.id)
    await post(client, UPDATE, {"id": str(task_id), "input": {"dueDate": "2026-03-20"}},
               token=token)
    await arq.enqueue_job(REPAIR_JOB, tracy.id)
    worker = await run_burst(worker_class(settings))
    assert worker.jobs_failed == 0
    assert exporter.get_finished_spans() == ()


# --- export -----------------------------------------------------------------------------------


async def test_our_otlp_encoding_equals_the_sdks(
        traced: httpx.AsyncClient, exporter: InMemorySpanExporter, tracy: User,
        token_for: Callable[..., str]) -> None:
    """gateway/ops/otlp.py writes the protobuf bytes itself (3× faster than the SDK's encoder):
    decoded with the official classes they are the message the SDK's encoder builds, for the
    spans of real requests and for the fields those leave empty (events, links, statuses with
    messages, array/bool/float/negative attributes, a remote parent)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.trace import (
        Link,
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
        TraceState,
        set_span_in_context,
    )
    from opentelemetry.trace import Status as SpanStatus

    from gateway.ops.otlp import encode_request

    token = token_for(tracy.id)
    await post(traced, DASHBOARD, token=token)
    await post(traced, "query { nope }", token=token)
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=TraceState([("vendor", "x")]))
    with tracing.tracer.start_as_current_span(
            "odd", context=set_span_in_context(NonRecordingSpan(remote)),
            links=[Link(remote, {"why": "batch"})],
            attributes={"list": [1, 2, 3], "flag": True, "ratio": 0.5, "delta": -7,
                        "names": ("a", "b")}) as span:
        span.add_event("retry", {"attempt": 2})
        # What the SDK accepts besides: None, a mapping, a mixed list, bytes (a lean span
        # keeps them as the SDK does: tests/test_tracing_lean.py).
        span.set_attributes({"none": None, "map": {"a": 1, "b": [True, None]},
                             "mixed": ["x", 2], "raw": b"\x00\x01"})
        span.set_status(SpanStatus(StatusCode.ERROR, "TimeoutError"))
    spans = exporter.get_finished_spans()
    assert len(spans) > 10
    ours = ExportTraceServiceRequest.FromString(encode_request(spans))
    assert ours == encode_spans(spans)
    assert encode_request(spans) == encode_request(spans)  # the memoised pairs change nothing


async def test_below_an_unsampled_request_nothing_records(
        traced_settings: Settings, pool: asyncpg.Pool, redis: Redis,
        exporter: InMemorySpanExporter, tracy: User, token_for: Callable[..., str],
        app_with: Callable[..., Any]) -> None:
    """A caller's traceparent that says "not sampled" is followed: the request still has the
    trace id (its request id, the traceparent returned), and no span is recorded below it."""
    parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00"
    async with app_with(traced_settings) as client:
        response = await post(client, DASHBOARD, token=token_for(tracy.id),
                              traceparent=parent)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "ab" * 16
    assert response.headers["traceparent"].endswith("-00")
    assert exporter.get_finished_spans() == ()
    assert not tracing.recording()
