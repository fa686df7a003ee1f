"""The rollup's bookkeeping: which days aggregation writes, the coverage watermark, stale days.

(That the rollup's figures equal the live ones and the reference is test_analytics_exactness.)
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from domain.changes import affected_days, mark_days_stale
from tests.factories import UserFactory
from workers.aggregation import aggregate_closed_days, aggregate_range, repair_stale

GQL = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def gql(gql_uncached: GQL) -> GQL:
    """The field cache off: these tests change rows behind the API's back."""
    return gql_uncached


async def local_today(pool: asyncpg.Pool, tz: str) -> date:
    day: date = await pool.fetchval("select (now() at time zone $1::text)::date", tz)
    return day


async def coverage(pool: asyncpg.Pool, user_id: uuid.UUID) -> tuple[date, date] | None:
    row = await pool.fetchrow("select covered_from, covered_through from rollup_coverage "
                              "where user_id = $1", user_id)
    return (row["covered_from"], row["covered_through"]) if row else None


def noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def test_affected_days_are_the_local_created_completed_and_due_days_before_and_after() -> None:
    created = datetime(2024, 5, 1, 23, 30, tzinfo=UTC)  # 2024-05-02 in Kiritimati (UTC+14)
    before = {"status": "todo", "priority": "low", "due_date": date(2024, 5, 10),
              "created_at": created, "completed_at": None, "deleted": False, "title": "a"}
    after = {**before, "status": "done", "completed_at": datetime(2024, 5, 3, 11, tzinfo=UTC),
             "due_date": date(2024, 5, 4)}
    assert affected_days(before, after, "Pacific/Kiritimati") == {
        date(2024, 5, 2), date(2024, 5, 4), date(2024, 5, 10), date(2024, 5, 4)}
    assert affected_days(before, after, "UTC") == {
        date(2024, 5, 1), date(2024, 5, 3), date(2024, 5, 4), date(2024, 5, 10)}
    assert affected_days(None, before, "UTC") == {date(2024, 5, 1), date(2024, 5, 10)}
    assert affected_days(before, {**before, "title": "b"}, "UTC") == set()


async def test_aggregation_covers_closed_days_only(pool: asyncpg.Pool,
                                                   users: UserFactory) -> None:
    alice = await users.create(timezone="Pacific/Kiritimati")
    today = await local_today(pool, alice.timezone)
    await users.task(alice, created_at=datetime.now(UTC))
    await users.task(alice, created_at=noon(today - timedelta(days=3)))
    written = await aggregate_range(pool, today - timedelta(days=5), today + timedelta(days=5),
                                    [alice.id])
    assert written == 1
    assert await coverage(pool, alice.id) == (today - timedelta(days=5),
                                              today - timedelta(days=1))
    assert await pool.fetchval("select count(*) from daily_analytics where date >= $1",
                               today) == 0


async def test_a_user_without_tasks_and_no_range_is_left_uncovered(
        pool: asyncpg.Pool, users: UserFactory) -> None:
    alice = await users.create()
    assert await aggregate_range(pool, None, None, [alice.id]) == 0
    assert await coverage(pool, alice.id) is None


async def test_coverage_merges_adjacent_ranges_and_keeps_the_later_across_a_gap(
        pool: asyncpg.Pool, users: UserFactory) -> None:
    alice = await users.create()
    base = date(2024, 1, 10)
    await aggregate_range(pool, base, base + timedelta(days=4), [alice.id])
    await aggregate_range(pool, base + timedelta(days=5), base + timedelta(days=9), [alice.id])
    assert await coverage(pool, alice.id) == (base, base + timedelta(days=9))
    await aggregate_range(pool, base - timedelta(days=3), base + timedelta(days=1), [alice.id])
    assert await coverage(pool, alice.id) == (base - timedelta(days=3), base + timedelta(days=9))
    # An earlier range with a gap is forgotten; a later one replaces the coverage.
    await aggregate_range(pool, base - timedelta(days=30), base - timedelta(days=20), [alice.id])
    assert await coverage(pool, alice.id) == (base - timedelta(days=3), base + timedelta(days=9))
    await aggregate_range(pool, base + timedelta(days=20), base + timedelta(days=25), [alice.id])
    assert await coverage(pool, alice.id) == (base + timedelta(days=20),
                                              base + timedelta(days=25))


async def test_nightly_catch_up_starts_after_the_watermark_or_at_yesterday(
        pool: asyncpg.Pool, users: UserFactory) -> None:
    alice, bob = await users.create(timezone="Pacific/Pago_Pago"), await users.create()
    a_today, b_today = (await local_today(pool, alice.timezone),
                        await local_today(pool, bob.timezone))
    for days in (1, 4, 8):
        await users.task(alice, created_at=noon(a_today - timedelta(days=days)))
        await users.task(bob, created_at=noon(b_today - timedelta(days=days)))
    await aggregate_range(pool, a_today - timedelta(days=10), a_today - timedelta(days=6),
                          [alice.id])
    await aggregate_closed_days(pool, batch_size=1)
    assert await coverage(pool, alice.id) == (a_today - timedelta(days=10),
                                              a_today - timedelta(days=1))
    assert await coverage(pool, bob.id) == (b_today - timedelta(days=1),
                                            b_today - timedelta(days=1))
    assert await pool.fetchval("select count(*) from daily_analytics where user_id = $1",
                               alice.id) == 3
    # Up to date: a second run writes nothing new and changes no coverage.
    assert await aggregate_closed_days(pool) == 0


async def test_stale_days_are_computed_live_until_repaired(
        pool: asyncpg.Pool, users: UserFactory, gql: GQL,
        token_for: Callable[..., str]) -> None:
    alice = await users.create()
    today = await local_today(pool, alice.timezone)
    quiet, busy = today - timedelta(days=3), today - timedelta(days=2)
    created = busy - timedelta(days=20)
    task = await users.task(alice, created_at=noon(created), due_date=busy)
    await aggregate_range(pool, None, None, [alice.id])
    query = ("query($d: Date!) { trends(from: $d, to: $d) { points { tasksDue } } }")

    async def due_on(day: date) -> int:
        body = await gql(query, {"d": day.isoformat()}, token=token_for(alice.id))
        return int(body["data"]["trends"]["points"][0]["tasksDue"])

    assert (await due_on(quiet), await due_on(busy)) == (0, 1)
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow("select * from tasks where id = $1", task)
        await conn.execute("update tasks set due_date = $2 where id = $1", task, quiet)
        after = await conn.fetchrow("select * from tasks where id = $1", task)
        await mark_days_stale(conn, alice.id, affected_days(before, after, alice.timezone)
                              | {today + timedelta(days=1)})
    # Every affected covered day is stale (the quiet one got a zero row); tomorrow, outside the
    # coverage, got none.
    stale = await pool.fetch("select date from daily_analytics where stale order by date")
    assert [r["date"] for r in stale] == [created, quiet, busy]
    assert (await due_on(quiet), await due_on(busy)) == (1, 0)
    assert await repair_stale(pool) == [alice.id]
    assert await pool.fetchval("select count(*) from daily_analytics where stale") == 0
    assert await pool.fetchval("select tasks_due from daily_analytics where date = $1",
                               quiet) == 1
    assert await pool.fetchval("select count(*) from daily_analytics where date = $1",
                               busy) == 0
    assert (await due_on(quiet), await due_on(busy)) == (1, 0)
    assert await repair_stale(pool) == []


async def test_a_daily_goal_change_rescores_without_reaggregation(
        pool: asyncpg.Pool, users: UserFactory, gql: GQL,
        token_for: Callable[..., str]) -> None:
    alice = await users.create(daily_goal=4)
    today = await local_today(pool, alice.timezone)
    day = today - timedelta(days=1)
    await users.task(alice, status="done", priority="high", created_at=noon(day),
                     completed_at=noon(day))
    await aggregate_range(pool, None, None, [alice.id])
    query = ("query($d: Date!) { trends(from: $d, to: $d) { points { productivityScore } } }")
    body = await gql(query, {"d": day.isoformat()}, token=token_for(alice.id))
    assert body["data"]["trends"]["points"][0]["productivityScore"] == 37.5  # 3 / 8
    await pool.execute("update users set daily_goal = 1 where id = $1", alice.id)
    body = await gql(query, {"d": day.isoformat()}, token=token_for(alice.id))
    assert body["data"]["trends"]["points"][0]["productivityScore"] == 100.0  # capped
