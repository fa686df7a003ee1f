"""The analytics API through HTTP: who may see what, argument errors, `me` and the admin `users`
connection, batching (statements per request independent of the user count), and the plans."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from gateway.ops.settings import Settings
from tests.factories import UserFactory

GQL = Callable[..., Awaitable[dict[str, Any]]]
OVERVIEW = "overview(userId: $u) { totalTasks completedTasks completionRate }"


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


async def test_a_user_sees_their_own_analytics_without_naming_themselves(
        users: UserFactory, gql: GQL, token_for: Callable[..., str]) -> None:
    alice = await users.create(timezone="Pacific/Kiritimati")
    await users.task(alice, status="done", completed_at=datetime.now(UTC))
    await users.task(alice)
    body = await gql("{ overview { totalTasks completedTasks completionRate } "
                     "me { email timezone dailyGoal role } }", token=token_for(alice.id))
    assert body["data"] == {
        "overview": {"totalTasks": 2, "completedTasks": 1, "completionRate": 50.0},
        "me": {"email": alice.email, "timezone": "Pacific/Kiritimati", "dailyGoal": 5,
               "role": "USER"}}


async def test_average_tasks_per_day_counts_the_ranges_days_up_to_today(
        users: UserFactory, gql: GQL, token_for: Callable[..., str]) -> None:
    """docs/analytics.md: tasksCompleted / the range's days up to today, 1 decimal."""
    alice = await users.create(timezone="UTC")
    now = datetime.now(UTC)
    for days_ago in (0, 0, 1, 2, 2, 2, 2):
        await users.task(alice, status="done", completed_at=now - timedelta(days=days_ago),
                         created_at=now - timedelta(days=3))
    today = now.date()
    query = """query($f: Date, $t: Date) { productivity(from: $f, to: $t)
        { tasksCompleted averageTasksPerDay } }"""

    async def ask(d_from: Any, d_to: Any) -> dict[str, Any]:
        body = await gql(query, {"f": d_from.isoformat(), "t": d_to.isoformat()},
                         token=token_for(alice.id))
        assert "errors" not in body, body
        return dict(body["data"]["productivity"])

    # 7 completions over the 3 days up to today; then over 6 days (3 of them after today)
    assert await ask(today - timedelta(days=2), today) == {
        "tasksCompleted": 7, "averageTasksPerDay": 2.3}
    assert await ask(today - timedelta(days=2), today + timedelta(days=3)) == {
        "tasksCompleted": 7, "averageTasksPerDay": 2.3}
    # the one completion of yesterday over its one day; a range wholly after today: 0.0
    assert (await ask(today - timedelta(days=1), today - timedelta(days=1))
            )["averageTasksPerDay"] == 1.0
    assert await ask(today + timedelta(days=1), today + timedelta(days=5)) == {
        "tasksCompleted": 0, "averageTasksPerDay": 0.0}


@pytest.mark.parametrize("field", [
    "overview(userId: $u) { totalTasks }",
    "trends(userId: $u) { period }",
    "productivity(userId: $u) { score }",
])
async def test_another_users_analytics_are_forbidden_and_a_missing_user_looks_the_same(
        field: str, users: UserFactory, gql: GQL, token_for: Callable[..., str]) -> None:
    alice, bob = await users.create(), await users.create()
    query = f"query($u: ID!) {{ {field} }}"
    other = await gql(query, {"u": str(bob.id)}, token=token_for(alice.id))
    missing = await gql(query, {"u": "00000000-0000-4000-8000-000000000000"},
                        token=token_for(alice.id))
    garbage = await gql(query, {"u": "not-a-uuid"}, token=token_for(alice.id))
    assert codes(other) == codes(missing) == codes(garbage) == ["FORBIDDEN"]
    assert other["errors"][0]["message"] == missing["errors"][0]["message"]
    assert other["data"] is None


async def test_an_admin_may_read_anyones_analytics(
        users: UserFactory, gql: GQL, token_for: Callable[..., str]) -> None:
    admin, bob = await users.create(role="admin"), await users.create()
    await users.task(bob, priority="high")
    body = await gql("query($u: ID!) { overview(userId: $u) { totalTasks "
                     "priorityDistribution { high medium low } } "
                     "trends(userId: $u, period: WEEK) { period points { date } } }",
                     {"u": str(bob.id)}, token=token_for(admin.id, "admin"))
    assert "errors" not in body, body
    assert body["data"]["overview"] == {"totalTasks": 1,
                                        "priorityDistribution": {"high": 1, "medium": 0,
                                                                 "low": 0}}
    assert len(body["data"]["trends"]["points"]) == 12


async def test_anonymous_callers_are_unauthenticated(gql: GQL) -> None:
    body = await gql("{ overview { totalTasks } }")
    assert codes(body) == ["UNAUTHENTICATED"]


async def test_only_admins_list_users(users: UserFactory, gql: GQL,
                                      token_for: Callable[..., str]) -> None:
    alice = await users.create()
    body = await gql("{ users { edges { node { id } } } }", token=token_for(alice.id))
    assert codes(body) == ["FORBIDDEN"]


async def test_users_connection_pages_with_nested_analytics(
        users: UserFactory, gql: GQL, token_for: Callable[..., str]) -> None:
    admin = await users.create(role="admin", created_at=datetime(2020, 1, 1, tzinfo=UTC))
    created = [await users.create(created_at=datetime(2021, 1, 1 + i, tzinfo=UTC))
               for i in range(5)]
    await users.task(created[0])
    query = """query($after: String) { users(first: 4, after: $after) {
        edges { cursor node { email overview { totalTasks } } }
        pageInfo { hasNextPage endCursor } } }"""
    first = await gql(query, token=token_for(admin.id, "admin"))
    assert "errors" not in first, first
    page = first["data"]["users"]
    assert [e["node"]["email"] for e in page["edges"]] == [
        admin.email, *[u.email for u in created[:3]]]
    assert page["edges"][1]["node"]["overview"] == {"totalTasks": 1}
    assert page["pageInfo"]["hasNextPage"] is True
    second = await gql(query, {"after": page["pageInfo"]["endCursor"]},
                       token=token_for(admin.id, "admin"))
    assert [e["node"]["email"] for e in second["data"]["users"]["edges"]] == [
        created[3].email, created[4].email]
    assert second["data"]["users"]["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize(("args", "field"), [
    ('from: "2024-02-01", to: "2024-01-31"', "from"),
    ('from: "2000-01-01", to: "2024-01-01"', "from"),      # > 1000 days
    ('period: WEEK, from: "2000-01-03", to: "2024-01-01"', "from"),  # > 1000 weeks
])
async def test_bad_ranges_are_bad_user_input_naming_the_argument(
        args: str, field: str, users: UserFactory, gql: GQL,
        token_for: Callable[..., str]) -> None:
    alice = await users.create()
    body = await gql(f"{{ trends({args}) {{ period }} }}", token=token_for(alice.id))
    assert codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == field


async def test_a_1000_bucket_range_is_allowed(users: UserFactory, gql: GQL,
                                              token_for: Callable[..., str]) -> None:
    alice = await users.create()
    body = await gql('{ trends(period: MONTH, from: "1940-01-01", to: "2023-04-30") '
                     '{ points { date } } }', token=token_for(alice.id))
    assert "errors" not in body, body
    assert len(body["data"]["trends"]["points"]) == 1000


@pytest.mark.parametrize("value", ["2024-13-01", "2024-1-1", "yesterday", "2024-02-30"])
async def test_a_malformed_date_is_bad_user_input(value: str, users: UserFactory, gql: GQL,
                                                  token_for: Callable[..., str]) -> None:
    alice = await users.create()
    literal = await gql(f'{{ productivity(from: "{value}") {{ score }} }}',
                        token=token_for(alice.id))
    variable = await gql("query($d: Date) { trends(to: $d) { period } }", {"d": value},
                         token=token_for(alice.id))
    assert codes(literal) == codes(variable) == ["BAD_USER_INPUT"]


async def test_trends_buckets_are_labelled_and_clipped_to_the_range(
        users: UserFactory, gql: GQL, token_for: Callable[..., str]) -> None:
    alice = await users.create(timezone="Pacific/Pago_Pago")  # UTC-11
    # 2024-03-31 09:30 UTC is 2024-03-30 22:30 in Pago Pago: a Saturday in week 2024-03-25.
    await users.task(alice, created_at=datetime(2024, 3, 31, 9, 30, tzinfo=UTC))
    await users.task(alice, created_at=datetime(2024, 4, 2, 12, tzinfo=UTC))
    body = await gql('{ w: trends(period: WEEK, from: "2024-03-30", to: "2024-04-01") '
                     '{ from to points { date tasksCreated } } '
                     'm: trends(period: MONTH, from: "2024-03-30", to: "2024-04-01") '
                     '{ points { date tasksCreated } } }', token=token_for(alice.id))
    assert body["data"]["w"] == {"from": "2024-03-30", "to": "2024-04-01", "points": [
        {"date": "2024-03-25", "tasksCreated": 1}, {"date": "2024-04-01", "tasksCreated": 0}]}
    assert body["data"]["m"]["points"] == [
        {"date": "2024-03-01", "tasksCreated": 1}, {"date": "2024-04-01", "tasksCreated": 0}]


# What asyncpg itself sends (connection reset on release, type introspection, new connections'
# settings) and this test's own bookkeeping: not statements of the request's code.
HOUSEKEEPING = (r"^(RESET ALL|UNLISTEN \*|CLOSE ALL|SELECT pg_advisory_unlock_all\(\))$"
                r"|typeinfo_tree|current_setting|pg_stat_statements")


async def count_statements(pool: asyncpg.Pool, run: Callable[[], Awaitable[Any]]) -> int:
    """Statements this database executed while `run` ran, asyncpg's housekeeping aside
    (pg_stat_statements, this database only; the extension is preloaded on the embedded
    server)."""
    await pool.execute("create extension if not exists pg_stat_statements")
    db = await pool.fetchval("select oid from pg_database where datname = current_database()")
    # Reset this database's entries only: other test sessions share the server.
    await pool.execute("select pg_stat_statements_reset(0, $1, 0)", db)
    await run()
    return int(await pool.fetchval(
        "select coalesce(sum(calls), 0) from pg_stat_statements where dbid = $1 "
        "and query !~* $2", db, HOUSEKEEPING))


DASHBOARD_OF_ALL = """{ users(first: 60) { edges { node {
    overview { totalTasks overdueTasks completionRate }
    trends { points { date tasksCompleted productivityScore } }
    month: trends(period: MONTH) { points { date tasksCreated } }
    productivity { score currentStreak leadTimeHours mostProductiveHour } } } } }"""


async def test_statements_per_request_do_not_grow_with_the_number_of_users(
        settings: Settings, pool: asyncpg.Pool, users: UserFactory, app_with: Any,
        token_for: Callable[..., str]) -> None:
    admin = await users.create(role="admin")
    now = datetime.now(UTC)
    counts = {}
    async with app_with(settings, enable_query_cache=False) as client:
        async def dashboard() -> None:
            response = await client.post("/graphql", json={"query": DASHBOARD_OF_ALL},
                                         headers={"Authorization":
                                                  f"Bearer {token_for(admin.id, 'admin')}"})
            body = response.json()
            assert "errors" not in body, body
            counts["users"] = len(body["data"]["users"]["edges"])

        async def add_users(n: int) -> None:
            for i in range(n):
                user = await users.create(timezone=("UTC", "Asia/Tokyo")[i % 2])
                await users.task(user, status="done", completed_at=now - timedelta(days=i % 5),
                                 created_at=now - timedelta(days=10), due_date=now.date())

        await add_users(5)
        few = await count_statements(pool, dashboard)
        assert counts["users"] == 6
        await add_users(45)
        many = await count_statements(pool, dashboard)
        assert counts["users"] == 51
    # The caller's account (its role is read from the database, not trusted from the token; the
    # second time from the process's account cache, gateway/data/accounts.py), the users page,
    # then one statement for the figures of every kind (analytics_figures: the overviews, the
    # daily series of the DAY and MONTH ranges and productivity's days, and the productivity
    # extras of every user, loaders/cached.py's shared batch).
    assert (few, many) == (3, 2)


async def test_the_overview_is_an_index_only_scan(pool: asyncpg.Pool,
                                                  users: UserFactory) -> None:
    alice = await users.create()
    for _ in range(50):
        await users.task(alice)
    await pool.execute("vacuum analyze tasks")
    from gateway.data.db import query

    async with pool.acquire() as conn:
        # 50 rows fit on one page, where a sequential scan is cheaper: ask whether the index can
        # answer alone (no heap fetches after the VACUUM), as it does at 10,000 users' scale.
        await conn.execute("set enable_seqscan = off")
        plan = await conn.fetchval(f"explain (format json) {query('analytics_overview')}",
                                   [alice.id])
        await conn.execute("reset enable_seqscan")
    text = str(plan)
    assert "Index Only Scan" in text and "idx_tasks_user_id" in text, text

