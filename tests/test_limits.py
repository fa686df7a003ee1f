"""Query limits: each abusive query is refused with its code before any resolver or SQL runs.

"No SQL" is measured with pg_stat_statements (preloaded by the embedded server): the number of
statements the test database ran, before and after the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
import strawberry
from graphql import get_introspection_query

from schema.extensions.errors import ErrorMasking
from schema.extensions.limits import Limits, limit_extensions

Gql = Callable[..., Awaitable[dict[str, Any]]]

STATEMENTS = """
    select coalesce(sum(calls), 0)::bigint from pg_stat_statements s
    join pg_database d on d.oid = s.dbid
    where d.datname = current_database() and s.query not ilike '%pg_stat_statements%'
"""


@pytest.fixture
async def statements(pool: asyncpg.Pool, database_url: str
                     ) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """How many SQL statements the test database has run so far (counted over a connection of
    its own: a pool's connection would add its reset statements on every release)."""
    await pool.execute("create extension if not exists pg_stat_statements")
    conn = await asyncpg.connect(database_url)

    async def count() -> int:
        return int(await conn.fetchval(STATEMENTS))

    try:
        yield count
    finally:
        await conn.close()


def codes(body: dict[str, Any]) -> set[str]:
    return {error["extensions"]["code"] for error in body.get("errors", [])}


async def refused_without_sql(client: httpx.AsyncClient, statements: Callable[[], Awaitable[int]],
                              query: str, variables: dict[str, Any] | None = None
                              ) -> dict[str, Any]:
    before = await statements()
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    after = await statements()
    body: dict[str, Any] = response.json()
    assert body.get("data") is None, body
    assert after == before, f"{after - before} SQL statements ran for a refused query"
    return body


async def test_the_statement_counter_sees_the_apps_sql(client: httpx.AsyncClient, gql: Gql,
                                                       statements: Callable[[], Awaitable[int]],
                                                       token_for: Callable[..., str],
                                                       users: Any) -> None:
    # The control for every "no SQL" assertion below: a query that does reach the database.
    user = await users.create()
    before = await statements()
    body = await gql("{ tasks(first: 5) { edges { node { id } } } }", token=token_for(user.id))
    assert "errors" not in body, body
    assert await statements() > before


async def test_a_deep_query_is_too_complex(client: httpx.AsyncClient,
                                           statements: Callable[[], Awaitable[int]]) -> None:
    query = "{ me " + "{ overview " * 11 + "{ totalTasks }" + " }" * 11 + " }"
    body = await refused_without_sql(client, statements, query)
    assert codes(body) == {"QUERY_TOO_COMPLEX"}
    assert "depth" in body["errors"][0]["message"]


async def test_an_alias_flood_is_too_complex(client: httpx.AsyncClient,
                                             statements: Callable[[], Awaitable[int]]) -> None:
    query = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(16)) + " }"
    body = await refused_without_sql(client, statements, query)
    assert codes(body) == {"QUERY_TOO_COMPLEX"}
    assert "aliases" in body["errors"][0]["message"]


async def test_an_alias_flood_through_fragment_spreads_is_too_complex(
        client: httpx.AsyncClient, statements: Callable[[], Awaitable[int]]) -> None:
    # 8 aliases in the fragment, spread twice: 16 aliases, though the text has only 8.
    fragment = " ".join(f"a{i}: me {{ id }}" for i in range(8))
    query = "{ ...F ...F } fragment F on Query { " + fragment + " }"
    body = await refused_without_sql(client, statements, query)
    assert codes(body) == {"QUERY_TOO_COMPLEX"}


async def test_a_fragment_bomb_is_refused_before_validation(
        client: httpx.AsyncClient, statements: Callable[[], Awaitable[int]]) -> None:
    # Each fragment spreads the next twice: 2**40 fields once expanded, in ~400 tokens. Walking
    # every path (as a naive depth or alias counter does) would never finish.
    fragments = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}"
                         for i in range(40))
    query = "{ ...F0 } " + fragments + " fragment F40 on Query { version }"
    body = await refused_without_sql(client, statements, query)
    assert codes(body) == {"QUERY_TOO_COMPLEX"}


async def test_a_token_flood_is_too_complex(client: httpx.AsyncClient,
                                            statements: Callable[[], Awaitable[int]]) -> None:
    query = "{ " + " ".join(f"a{i}: version" for i in range(400)) + " }"  # 1,202 tokens
    body = await refused_without_sql(client, statements, query)
    assert codes(body) == {"QUERY_TOO_COMPLEX"}
    assert "tokens" in body["errors"][0]["message"]
    assert body["errors"][0]["message"].startswith("Query too large: ")  # not "Syntax Error"


async def test_a_field_repeated_500_times_is_too_complex(
        client: httpx.AsyncClient, statements: Callable[[], Awaitable[int]]) -> None:
    query = "{ " + "version " * 500 + "}"
    body = await refused_without_sql(client, statements, query)
    assert codes(body) == {"QUERY_TOO_COMPLEX"}
    assert "'version'" in body["errors"][0]["message"]


async def test_a_field_repeated_through_fragments_counts_too(
        client: httpx.AsyncClient, statements: Callable[[], Awaitable[int]]) -> None:
    query = "{ " + "...F " * 30 + "} fragment F on Query { version version }"
    body = await refused_without_sql(client, statements, query)
    assert codes(body) == {"QUERY_TOO_COMPLEX"}


@pytest.mark.parametrize("first", [101, 100_000, 0, -1])
async def test_a_bad_first_is_bad_user_input(client: httpx.AsyncClient,
                                             statements: Callable[[], Awaitable[int]],
                                             first: int) -> None:
    query = f"{{ tasks(first: {first}) {{ edges {{ node {{ id }} }} }} }}"
    body = await refused_without_sql(client, statements, query)
    assert codes(body) == {"BAD_USER_INPUT"}
    assert body["errors"][0]["extensions"]["field"] == "first"


async def test_a_huge_first_in_a_variable_is_bad_user_input(
        client: httpx.AsyncClient, statements: Callable[[], Awaitable[int]]) -> None:
    query = "query Page($n: Int) { users(first: $n) { edges { node { id } } } }"
    body = await refused_without_sql(client, statements, query, {"n": 1_000_000})
    assert codes(body) == {"BAD_USER_INPUT"}


async def test_a_costly_query_is_too_complex(client: httpx.AsyncClient,
                                             statements: Callable[[], Awaitable[int]]) -> None:
    # 100 users × 20 years of daily points: each page size and each day multiplies.
    query = """{ users(first: 100) { edges { node {
                   trends(from: "2005-01-01", to: "2024-12-31") { points { date tasksCreated } }
               } } } }"""
    body = await refused_without_sql(client, statements, query)
    assert codes(body) == {"QUERY_TOO_COMPLEX"}
    assert body["errors"][0]["extensions"]["cost"] > body["errors"][0]["extensions"]["maxCost"]


async def test_a_costly_range_in_variables_is_too_complex(
        client: httpx.AsyncClient, statements: Callable[[], Awaitable[int]]) -> None:
    query = """query Costly($from: Date, $n: Int) { users(first: $n) { edges { node {
                   trends(from: $from) { points { date } } } } } }"""
    body = await refused_without_sql(client, statements, query, {"from": "2000-01-01", "n": 100})
    assert codes(body) == {"QUERY_TOO_COMPLEX"}


async def test_a_dashboard_query_is_within_every_limit(client: httpx.AsyncClient, gql: Gql,
                                                       users: Any,
                                                       token_for: Callable[..., str]) -> None:
    user = await users.create()
    body = await gql("""query Dashboard {
        me { displayName }
        overview { totalTasks completionRate priorityDistribution { high medium low } }
        year: trends(period: DAY, from: "2024-01-01", to: "2024-12-31") {
            points { date tasksCreated tasksCompleted tasksDue completionRate } }
        productivity { score currentStreak longestStreak }
        tasks(first: 100) { edges { node { id title status } } pageInfo { hasNextPage } }
    }""", token=token_for(user.id))
    assert "errors" not in body, body
    assert len(body["data"]["year"]["points"]) == 366


async def test_an_admin_page_of_100_users_with_their_figures_is_within_the_cost(
        gql: Gql) -> None:
    body = await gql("""{ users(first: 100) { edges { node {
        overview { totalTasks overdueTasks completionRate }
        trends { points { date tasksCompleted productivityScore } }
        month: trends(period: MONTH) { points { date tasksCreated } }
        productivity { score currentStreak leadTimeHours mostProductiveHour } } } } }""")
    assert "QUERY_TOO_COMPLEX" not in codes(body)  # (UNAUTHENTICATED: nobody signed in)


async def test_graphiqls_introspection_query_passes_the_limits_in_development(
        client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": get_introspection_query()})
    body = response.json()
    assert "errors" not in body, body["errors"][:2]
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


# --- the rules on a schema of their own: a recursive type makes a real deep query -------------


@strawberry.type
class Node:
    value: int

    @strawberry.field
    def child(self) -> Node:
        return Node(value=self.value + 1)

    @strawberry.field
    def children(self, first: int = 10) -> list[Node]:
        return [Node(value=self.value + 1) for _ in range(first)]


@strawberry.type
class NodeQuery:
    @strawberry.field
    def root(self) -> Node:
        return Node(value=0)


def limited_schema(**overrides: int) -> strawberry.Schema:
    limits = Limits(**{"max_depth": 10, "max_aliases": 15, "max_tokens": 1000,
                       "max_field_repeats": 50, "max_page_size": 100, "max_cost": 20000,
                       **overrides})
    return strawberry.Schema(query=NodeQuery, extensions=[
        lambda: ErrorMasking(production=False), *limit_extensions(limits)])


async def test_depth_on_a_valid_recursive_query() -> None:
    schema = limited_schema()
    ok = await schema.execute("{ root " + "{ child " * 9 + "{ value }" + " }" * 9 + " }")
    assert ok.errors is None
    deep = await schema.execute("{ root " + "{ child " * 11 + "{ value }" + " }" * 11 + " }")
    assert deep.data is None
    assert [e.extensions["code"] for e in deep.errors or []] == ["QUERY_TOO_COMPLEX"]


async def test_page_size_and_cost_on_nested_lists() -> None:
    schema = limited_schema(max_cost=5000)
    ok = await schema.execute("{ root { children(first: 40) { children(first: 40) { value } } } }")
    assert ok.errors is None  # 1 + 1 + 40 × (1 + 40 × 1) = 1,642
    big = await schema.execute(
        "{ root { children(first: 100) { children(first: 100) { value } } } }")
    assert [e.extensions["code"] for e in big.errors or []] == ["QUERY_TOO_COMPLEX"]
    bad = await schema.execute("{ root { children(first: 101) { value } } }")
    assert [e.extensions["code"] for e in bad.errors or []] == ["BAD_USER_INPUT"]
