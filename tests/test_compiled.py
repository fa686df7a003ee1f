"""Compiled execution (schema/compiled.py) against graphql-core, differentially.

Two apps on the same database: one with `COMPILED_EXECUTION=true`, the reference with `false`
(graphql-core executing through Strawberry). Every query is sent to the compiled app twice (the
first request teaches the plan cache, the second runs the plan) and once to the reference, and the
raw response bytes, status codes and headers must be identical (a POSTed query with a plan takes
the view's short way, `GraphQLApp._compiled_post`). The corpus:

- every query operation written in the test suite (string literals of tests/*.py that parse and
  validate as GraphQL queries), with variables drawn from their types;
- every query example of docs/api.md, the other docs and the README;
- random queries generated over the schema with hypothesis: fields, aliases, `__typename`, inline
  and named fragments, `@skip`/`@include` with literals and variables, and arguments that are
  valid, invalid (a bad date, a range the wrong way round, a page size over the limit) or
  forbidden (another user's id), as alice and as an admin.

The field cache is off in both apps so that `extensions.cache` (hit or miss, and the age) cannot
differ between the two; the cache's own behaviour is tested elsewhere, through the compiled path.
"""

from __future__ import annotations

import ast
import datetime
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import OperationDefinitionNode, OperationType, parse, validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ops import metrics
from gateway.ops.settings import Settings
from schema.schema import schema as reference_schema
from tests.factories import User, UserFactory
from tests.samples import sample

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Apps:
    compiled: httpx.AsyncClient
    reference: httpx.AsyncClient
    alice: User
    bob: User
    admin: User
    tokens: dict[str, str]


@pytest.fixture
async def apps(settings: Settings, pool: asyncpg.Pool, users: UserFactory,
               app_with: Callable[..., Any], token_for: Callable[..., str]
               ) -> AsyncIterator[Apps]:
    alice = await users.create(email="alice@example.com", timezone="Europe/Paris")
    bob = await users.create(email="bob@example.com")
    admin = await users.create(email="admin@example.com", role="admin")
    today = datetime.date.today()
    now = datetime.datetime.now(datetime.UTC)
    for i in range(12):  # tasks of every status, some overdue, some done on time
        status = ("todo", "in_progress", "done")[i % 3]
        fields: dict[str, Any] = {
            "title": f"task {i}", "status": status, "priority": ("low", "medium", "high")[i % 3],
            "due_date": today + datetime.timedelta(days=i - 6),
            "created_at": now - datetime.timedelta(days=20 - i)}
        if status != "todo":
            fields["started_at"] = now - datetime.timedelta(days=10 - i // 2)
        if status == "done":
            fields["completed_at"] = now - datetime.timedelta(days=8 - i // 2, hours=i)
        await users.task(alice if i < 9 else bob, **fields)
    tokens = {"alice": token_for(alice.id), "bob": token_for(bob.id),
              "admin": token_for(admin.id, "admin")}
    changes = {"enable_query_cache": False, "enable_response_cache": False,
               "rate_limit_enabled": False}
    async with app_with(settings, compiled_execution=True, **changes) as compiled, \
            app_with(settings, compiled_execution=False, **changes) as reference:
        yield Apps(compiled, reference, alice, bob, admin, tokens)


VOLATILE_HEADERS = frozenset({"x-request-id", "date", "traceparent"})


async def post(client: httpx.AsyncClient, body: dict[str, Any], token: str | None
               ) -> tuple[int, bytes, dict[str, str]]:
    """Status, body bytes and headers (those that differ by request aside)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post("/graphql", json=body, headers=headers)
    kept = {k: v for k, v in response.headers.items() if k not in VOLATILE_HEADERS}
    return response.status_code, response.content, kept


def compiled_count() -> float:
    return sample("analytics_compiled_operations_total")


async def same_answer(apps: Apps, query: str, variables: dict[str, Any] | None = None,
                      as_: str = "alice", operation_name: str | None = None) -> bool:
    """Asserts that both executors give the same bytes; True when the compiled plan answered."""
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    if operation_name is not None:
        body["operationName"] = operation_name
    token = apps.tokens.get(as_)
    await post(apps.compiled, body, token)  # teaches the plan cache (when it succeeds)
    before = compiled_count()
    compiled = await post(apps.compiled, body, token)
    answered = compiled_count() > before
    reference = await post(apps.reference, body, token)
    assert compiled == reference, (query, variables, as_)
    if b'"errors"' not in reference[1] and "__schema" not in query and "__type(" not in query:
        # Answered without errors, so the first request taught a plan: the second ran it.
        assert answered, ("not compiled", query, variables)
    return answered


# --- hand-picked cases ---------------------------------------------------------------------------

DASHBOARD = """
query Dashboard($period: Period!, $from: Date, $withTrend: Boolean!) {
  overview { totalTasks completedTasks pendingTasks inProgressTasks overdueTasks dueTodayTasks
             completionRate priorityDistribution { high medium low }
             statusDistribution { todo inProgress done } }
  trends(period: $period, from: $from) @include(if: $withTrend) {
    period from to points { date tasksCreated tasksCompleted tasksDue tasksCompletedOnTime
                            completionRate productivityScore } }
  productivity { ...Prod }
  __typename
}
fragment Prod on Productivity {
  from to score tasksCompleted averageTasksPerDay currentStreak longestStreak daysGoalMet
  leadTimeHours cycleTimeHours onTimeRate mostProductiveWeekday mostProductiveHour
  ... on Productivity { alias: score }
}
"""


async def test_the_dashboard_is_answered_by_its_plan_with_graphql_cores_bytes(apps: Apps
                                                                              ) -> None:
    variables = {"period": "WEEK", "from": None, "withTrend": True}
    assert await same_answer(apps, DASHBOARD, variables)
    # Another variant of @include, and another period: new variables, the same plan cache entry.
    assert await same_answer(apps, DASHBOARD, {"period": "DAY", "withTrend": False})
    assert await same_answer(apps, DASHBOARD, {"period": "MONTH", "from": "2020-01-01",
                                               "withTrend": True})


async def test_the_admin_page_of_users_with_their_figures_is_answered_by_its_plan(apps: Apps
                                                                                 ) -> None:
    query = """{ users(first: 10) { edges { cursor node { id email displayName role
                 overview { totalTasks completionRate } productivity { score }
                 trends(period: WEEK) { points { date tasksCompleted } } } }
                 pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""
    assert await same_answer(apps, query, as_="admin")
    page = """query Page($first: Int, $after: String) { users(first: $first, after: $after) {
              edges { node { email overview { totalTasks } } } pageInfo { endCursor } } }"""
    assert await same_answer(apps, page, {"first": 2}, as_="admin")


@pytest.mark.parametrize(("query", "variables", "as_"), [
    # errors: each request is handed to graphql-core, which answers it
    ('{ overview(userId: "%(bob)s") { totalTasks } }', None, "alice"),  # FORBIDDEN
    ('{ overview { totalTasks } trends(from: "2026-02-01", to: "2026-01-01") { from } }',
     None, "alice"),  # BAD_USER_INPUT with data for the overview
    ("query($n: Int) { users(first: $n) { edges { node { id } } } }", {"n": 1000}, "admin"),
    ("query($p: Period!) { trends(period: $p) { from } }", {"p": "YEAR"}, "alice"),
    ("query($d: Date) { productivity(from: $d) { score } }", {"d": "2026-13-01"}, "alice"),
    ("{ me { email } }", None, None),  # UNAUTHENTICATED
    ('{ overview(userId: "%(missing)s") { totalTasks } }', None, "admin"),  # NOT_FOUND
])
async def test_requests_with_errors_are_answered_by_graphql_core_identically(
        apps: Apps, query: str, variables: dict[str, Any] | None, as_: str | None) -> None:
    query = query % {"bob": apps.bob.id, "missing": uuid.uuid4()}
    await same_answer(apps, query, variables, as_ or "nobody")


async def test_a_plan_taught_by_good_variables_hands_bad_ones_over(apps: Apps) -> None:
    query = "query($p: Period!, $u: ID) { trends(period: $p, userId: $u) { period } }"
    assert await same_answer(apps, query, {"p": "DAY"})
    # Now the plan exists: each of these is handed over to graphql-core.
    await same_answer(apps, query, {"p": "YEAR"})
    await same_answer(apps, query, {"p": "DAY", "u": str(apps.bob.id)})
    await same_answer(apps, query, {"p": 3})


async def test_introspection_and_mutations_are_never_compiled(apps: Apps) -> None:
    assert not await same_answer(apps, "{ __schema { queryType { name } } }")
    assert not await same_answer(apps, '{ __type(name: "Overview") { name } version }')


async def test_off_means_off(settings: Settings, app_with: Callable[..., Any], alice: User,
                             token_for: Callable[..., str]) -> None:
    async with app_with(settings, compiled_execution=False) as client:
        before = compiled_count()
        for _ in range(2):
            status, _, _ = await post(client, {"query": "{ overview { totalTasks } }"},
                                      token_for(alice.id))
            assert status == 200
        assert compiled_count() == before


# --- the corpus: the test suite's queries and docs/api.md's examples ---------------------------


def _query_documents(texts: list[str]) -> list[str]:
    """The texts that are GraphQL documents of query operations only, valid against the
    schema."""
    found = []
    for text in texts:
        if "{" not in text:
            continue
        try:
            document = parse(text)
        except Exception:
            continue
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if not operations or any(op.operation is not OperationType.QUERY for op in operations):
            continue
        if validate(reference_schema._schema, document):
            continue
        found.append(text)
    return sorted(set(found))


def suite_queries() -> list[str]:
    texts = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts.append(node.value)
    return _query_documents(texts)


def doc_examples() -> list[str]:
    """The query examples of docs/api.md, the other docs and the README."""
    texts = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        texts += re.findall(r"```graphql\n(.*?)```", path.read_text(), re.S)
    return _query_documents(texts)


def _value_for(type_: Any, apps: Apps) -> Any:
    """A plausible value for a variable of `type_` (the schema's input types)."""
    from graphql import GraphQLInputObjectType, GraphQLList, GraphQLNonNull

    while isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        return [_value_for(type_.of_type, apps)]
    if isinstance(type_, GraphQLInputObjectType):
        return {}
    return {
        "ID": str(apps.alice.id), "Date": (datetime.date.today()
                                           - datetime.timedelta(days=10)).isoformat(),
        "Period": "WEEK", "Int": 5, "Float": 1.5, "String": "task", "Boolean": True,
        "TaskStatus": "DONE", "Priority": "HIGH",
    }.get(type_.name, None)


def _variables_for(query: str, apps: Apps) -> dict[str, Any]:
    from graphql import type_from_ast

    operation = next(d for d in parse(query).definitions
                     if isinstance(d, OperationDefinitionNode))
    return {d.variable.name.value: _value_for(type_from_ast(reference_schema._schema, d.type),
                                              apps)
            for d in operation.variable_definitions or ()}


def test_the_corpus_is_not_empty() -> None:
    # The extraction itself can break (a refactor of the tests, a new doc format): it must find
    # the dashboard queries the suite and the docs are full of.
    assert len(suite_queries()) >= 20
    assert len(doc_examples()) >= 2


async def test_every_query_of_the_test_suite_and_the_docs_answers_the_same(apps: Apps) -> None:
    corpus = suite_queries() + doc_examples()
    answered = 0
    for query in corpus:
        operations = [d for d in parse(query).definitions
                      if isinstance(d, OperationDefinitionNode)]
        name = operations[0].name.value if len(operations) > 1 and operations[0].name else None
        for as_ in ("alice", "admin"):
            answered += await same_answer(apps, query, _variables_for(query, apps), as_, name)
    # Most of them are the dashboard's fields: the plans must have answered a good share.
    assert answered >= len(corpus) // 2, (answered, len(corpus))


# --- random queries ------------------------------------------------------------------------------

FIELDS: dict[str, list[str]] = {
    "Query": ["version", "overview", "trends", "productivity", "me", "users", "tasks", "task"],
    "Overview": ["totalTasks", "completedTasks", "pendingTasks", "inProgressTasks",
                 "overdueTasks", "dueTodayTasks", "completionRate", "priorityDistribution",
                 "statusDistribution"],
    "PriorityDistribution": ["high", "medium", "low"],
    "StatusDistribution": ["todo", "inProgress", "done"],
    "Trends": ["period", "from", "to", "points"],
    "TrendPoint": ["date", "tasksCreated", "tasksCompleted", "tasksDue", "tasksCompletedOnTime",
                   "completionRate", "productivityScore"],
    "Productivity": ["from", "to", "score", "tasksCompleted", "averageTasksPerDay",
                     "currentStreak", "longestStreak", "daysGoalMet", "leadTimeHours",
                     "cycleTimeHours", "onTimeRate", "mostProductiveWeekday",
                     "mostProductiveHour"],
    "User": ["id", "email", "displayName", "timezone", "dailyGoal", "role", "overview", "trends",
             "productivity"],
    "UserConnection": ["edges", "pageInfo"], "UserEdge": ["node", "cursor"],
    "TaskConnection": ["edges", "pageInfo"], "TaskEdge": ["node", "cursor"],
    "PageInfo": ["hasNextPage", "hasPreviousPage", "startCursor", "endCursor"],
    "Task": ["id", "title", "description", "status", "priority", "dueDate", "createdAt",
             "startedAt", "completedAt"],
}
TODAY = datetime.date.today()
# Literal argument values, as GraphQL text, and the variable type that carries the same value.
ARGUMENTS: dict[str, tuple[str, list[str]]] = {
    "userId": ("ID", ['"%(alice)s"', '"%(bob)s"', '"not-a-uuid"', "null"]),
    "period": ("Period!", ["DAY", "WEEK", "MONTH"]),
    "from": ("Date", [f'"{TODAY - datetime.timedelta(days=40)}"',
                      f'"{TODAY - datetime.timedelta(days=3)}"', '"2026-02-30"', "null"]),
    "to": ("Date", [f'"{TODAY}"', f'"{TODAY - datetime.timedelta(days=60)}"', "null"]),
    "first": ("Int", ["1", "2", "50", "0", "1000"]),
    "after": ("String", ["null", '"bm90LWEtY3Vyc29y"']),
    "id": ("ID!", ['"%(task)s"', '"nope"']),
    "filter": ("TaskFilter", ["{status: DONE}", '{search: "task 1"}', "null"]),
}


@st.composite
def queries(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A random query over the schema, and its variables (values still as GraphQL literals, made
    JSON by `_json_variables`)."""
    definitions: list[str] = []
    fragments: list[str] = []
    variables: dict[str, str] = {}

    def value(name: str) -> str:
        type_, choices = ARGUMENTS[name]
        literal = draw(st.sampled_from(choices))
        if draw(st.booleans()) and literal != "null" and name != "filter":
            variable = f"v{len(variables)}"
            definitions.append(f"${variable}: {type_}")
            variables[variable] = literal
            return f"${variable}"
        return literal

    def selection(type_name: str, depth: int) -> str:
        names = draw(st.lists(st.sampled_from(FIELDS[type_name]), min_size=1, max_size=5,
                              unique=True))
        parts = []
        for i, name in enumerate(names):
            field = name
            args = [a for a in ("userId", "period", "from", "to", "first", "after", "id",
                                "filter") if _takes(type_name, name, a)]
            chosen = [a for a in args if a == "id" or draw(st.booleans())]
            if chosen:
                field += "(" + ", ".join(f"{a}: {value(a)}" for a in chosen) + ")"
            if draw(st.integers(0, 3)) == 0:
                field = f"a{depth}_{i}: {field}"
            if draw(st.integers(0, 5)) == 0:
                if draw(st.booleans()):
                    field += " @include(if: false)"
                else:
                    variable = f"v{len(variables)}"
                    definitions.append(f"${variable}: Boolean!")
                    variables[variable] = draw(st.sampled_from(["true", "false"]))
                    field += f" @skip(if: ${variable})"
            child = _child_type(type_name, name)
            if child is not None:
                if depth >= 4:
                    continue
                field += " { " + selection(child, depth + 1) + " }"
            parts.append(field)
        if draw(st.integers(0, 4)) == 0:
            parts.append("__typename")
        body = " ".join(parts) or "__typename"
        shape = draw(st.integers(0, 5))
        if shape == 0:
            return f"... on {type_name} {{ {body} }}"
        if shape == 1:
            name = f"F{len(fragments)}"
            fragments.append(f"fragment {name} on {type_name} {{ {body} }}")
            return f"...{name}"
        return body

    root = selection("Query", 0)
    header = f"query Q({', '.join(definitions)})" if definitions else "query Q"
    return " ".join([f"{header} {{ {root} }}", *fragments]), variables


def _takes(type_name: str, field: str, argument: str) -> bool:
    definition = reference_schema._schema.type_map[type_name].fields[field]  # type: ignore[attr-defined]
    return argument in definition.args


def _child_type(type_name: str, field: str) -> str | None:
    from graphql import GraphQLObjectType, get_named_type

    definition = reference_schema._schema.type_map[type_name].fields[field]  # type: ignore[attr-defined]
    named = get_named_type(definition.type)
    return named.name if isinstance(named, GraphQLObjectType) else None


def _substitute(text: str, apps: Apps, task: str) -> str:
    return text % {"alice": apps.alice.id, "bob": apps.bob.id, "task": task}


def _json_variables(variables: dict[str, str], apps: Apps, task: str) -> dict[str, Any]:
    """GraphQL literals as JSON values (enums become strings)."""
    out: dict[str, Any] = {}
    for name, literal in variables.items():
        literal = _substitute(literal, apps, task)
        out[name] = (literal.strip('"') if literal.startswith('"')
                     else {"true": True, "false": False, "null": None}.get(literal, literal))
        if isinstance(out[name], str) and out[name].lstrip("-").isdigit():
            out[name] = int(out[name])
    return out


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(drawn=queries(), as_=st.sampled_from(["alice", "admin"]))
async def test_random_queries_answer_the_same(apps: Apps, pool: asyncpg.Pool,
                                              drawn: tuple[str, dict[str, str]], as_: str
                                              ) -> None:
    task = str(await pool.fetchval("select id from tasks where user_id = $1 limit 1",
                                   apps.alice.id))
    text, variables = drawn
    await same_answer(apps, _substitute(text, apps, task), _json_variables(variables, apps, task),
                      as_)


# --- subscription events -------------------------------------------------------------------------

SUBSCRIPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("""subscription Live($period: Period!, $withTrend: Boolean!) {
          dashboard { overview { ...Counts } kind: __typename
            trends(period: $period) @include(if: $withTrend) { period points { date
              tasksCompleted productivityScore completionRate } }
            productivity { score mostProductiveWeekday leadTimeHours } } }
        fragment Counts on Overview { totalTasks completionRate
          statusDistribution { done } }""", {"period": "WEEK", "withTrend": True}),
    ("subscription($id: ID) { overview(userId: $id) { totalTasks overdueTasks } }", {}),
    ('subscription { t: trends(period: MONTH, from: "2026-01-01") { from to points { date } } }',
     {}),
    ("subscription { productivity { ... on Productivity { score currentStreak } } }", {}),
    ("subscription($id: ID) { overview(userId: $id) { totalTasks } }", {"id": "%(bob)s"}),
    ('subscription { trends(from: "2026-13-01") { from } }', {}),
]


async def test_subscription_events_are_the_same_bytes_compiled_or_not(
        apps: Apps, settings: Settings) -> None:
    from dataclasses import replace

    from tests.live_client import LiveClient, live_server

    received: dict[bool, list[str]] = {}
    before = sample("analytics_compiled_events_total")
    for compiled in (True, False):
        messages = received[compiled] = []
        async with live_server(replace(settings, compiled_execution=compiled)) as server, \
                LiveClient.connect(server.ws, apps.tokens["alice"]) as client:
            for n, (query, variables) in enumerate(SUBSCRIPTIONS):
                filled = {k: v % {"bob": apps.bob.id} if isinstance(v, str) else v
                          for k, v in variables.items()}
                await client.subscribe(str(n), query, filled)
                while True:  # the first message of this operation, as the server wrote it
                    raw = await client.ws.recv()
                    if f'"id":"{n}"' in str(raw):
                        messages.append(str(raw))
                        break
    assert received[True] == received[False]
    assert sample("analytics_compiled_events_total") - before >= 4  # the error-free ones


# --- found in review -----------------------------------------------------------------------------


def _fallbacks() -> float:
    return sum(point.value for metric in metrics.COMPILED_FALLBACKS.collect()
               for point in metric.samples if point.name.endswith("_total"))


async def test_a_handed_over_request_runs_its_plan_once_then_graphql_core(apps: Apps) -> None:
    query = "query($u: ID) { overview(userId: $u) { totalTasks } }"
    assert await same_answer(apps, query, {})  # taught and planned
    before = _fallbacks()
    await same_answer(apps, query, {"u": str(apps.bob.id)})  # FORBIDDEN: handed over, once
    assert _fallbacks() - before == 2  # the teaching request and the measured one, once each


async def test_a_directive_error_in_a_new_variant_is_graphql_cores_answer(apps: Apps) -> None:
    query = "query Q($x: Boolean = true) { version @skip(if: $x) a: version }"
    assert await same_answer(apps, query, {})
    await same_answer(apps, query, {"x": None})  # `if: null`: an error, not a 500
    status, body, _ = await post(apps.compiled, {"query": query, "variables": {"x": None}},
                                 apps.tokens["alice"])
    assert status != 500 and b'"errors"' in body


async def test_an_operation_name_that_is_not_a_string_is_refused_as_without_plans(
        apps: Apps) -> None:
    query = "query A { version } query B { version }"
    assert await same_answer(apps, query, None, operation_name="A")
    for name in (["A"], {"x": 1}, 3):
        body = {"query": query, "operationName": name}
        assert await post(apps.compiled, body, None) == await post(apps.reference, body, None)


async def test_subscriptions_alike_but_for_their_fragments_keep_their_own_shapes(
        apps: Apps, settings: Settings) -> None:
    from dataclasses import replace

    from tests.live_client import LiveClient, live_server

    documents = [
        "subscription S { overview { ...F } } fragment F on Overview { totalTasks }",
        "subscription S { overview { ...F } } fragment F on Overview { completionRate }",
    ]
    async with live_server(replace(settings, compiled_execution=True)) as server, \
            LiveClient.connect(server.ws, apps.tokens["alice"]) as client:
        for n, query in enumerate(documents):
            await client.subscribe(str(n), query)
            data = await client.data(str(n))
            assert list(data["overview"]) == (["totalTasks"] if n == 0 else ["completionRate"])
