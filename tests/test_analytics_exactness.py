"""Every analytics figure equals a plain-Python reference computed from the same rows.

Hypothesis generates users in timezones far from UTC and their tasks over months: due dates,
completions late and on time, reopened and deleted tasks. Each generated world is checked for DAY,
WEEK and MONTH trends (default and explicit ranges), productivity and the overview, with the rollup
empty, full (after `aggregate_range`), partly stale (after task changes that mark days stale) and
repaired; the rollup rows themselves must equal the reference days, and aggregating twice must
change nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from domain.changes import affected_days, mark_days_stale
from tests import analytics_reference as ref
from tests.factories import UserFactory
from workers.aggregation import aggregate_range, repair_stale

TIMEZONES = ("Pacific/Kiritimati", "Pacific/Pago_Pago", "America/New_York", "Asia/Kolkata")
HISTORY_DAYS = 120
GQL = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def gql(gql_uncached: GQL) -> GQL:
    """The field cache off: these tests change rows behind the API's back."""
    return gql_uncached

FIELDS_POINT = ("date tasksCreated tasksCompleted tasksDue tasksCompletedOnTime completionRate "
                "productivityScore")
FIELDS_TRENDS = f"period from to points {{ {FIELDS_POINT} }}"
FIELDS_PRODUCTIVITY = ("from to score tasksCompleted averageTasksPerDay currentStreak "
                       "longestStreak daysGoalMet leadTimeHours cycleTimeHours onTimeRate "
                       "mostProductiveWeekday mostProductiveHour")
FIELDS_OVERVIEW = ("totalTasks completedTasks pendingTasks inProgressTasks overdueTasks "
                   "dueTodayTasks completionRate priorityDistribution { high medium low } "
                   "statusDistribution { todo inProgress done }")
QUERY = f"""
query Everything($u: ID!, $from: Date!, $to: Date!) {{
  overview(userId: $u) {{ {FIELDS_OVERVIEW} }}
  day: trends(userId: $u) {{ {FIELDS_TRENDS} }}
  week: trends(userId: $u, period: WEEK) {{ {FIELDS_TRENDS} }}
  month: trends(userId: $u, period: MONTH) {{ {FIELDS_TRENDS} }}
  dayRange: trends(userId: $u, period: DAY, from: $from, to: $to) {{ {FIELDS_TRENDS} }}
  weekRange: trends(userId: $u, period: WEEK, from: $from, to: $to) {{ {FIELDS_TRENDS} }}
  monthRange: trends(userId: $u, period: MONTH, from: $from, to: $to) {{ {FIELDS_TRENDS} }}
  productivity(userId: $u) {{ {FIELDS_PRODUCTIVITY} }}
  productivityRange: productivity(userId: $u, from: $from, to: $to) {{ {FIELDS_PRODUCTIVITY} }}
}}
"""


@dataclass(frozen=True)
class TaskSpec:
    created_ago: int          # seconds before now
    priority: str
    due_shift: int | None     # days after the local creation day
    status: str
    lead: int                 # seconds from creation to completion (done tasks)
    start_percent: int | None  # where the first move to in_progress falls, if any
    reopened: bool
    deleted: bool


tasks_strategy = st.builds(
    TaskSpec,
    created_ago=st.one_of(st.integers(0, HISTORY_DAYS * 86400),
                          st.integers(0, 3 * 86400)),  # recent: today, yesterday, streaks
    priority=st.sampled_from(("low", "medium", "high")),
    due_shift=st.one_of(st.none(), st.integers(-3, 20)),
    status=st.sampled_from(("todo", "in_progress", "done", "done")),
    lead=st.one_of(st.integers(60, 20 * 86400), st.integers(60, 6 * 3600)),
    start_percent=st.one_of(st.none(), st.integers(0, 100)),
    reopened=st.booleans(),
    deleted=st.integers(0, 7).map(lambda n: n == 0),
)
world_strategy = st.lists(st.tuples(st.integers(1, 6), st.lists(tasks_strategy, max_size=30)),
                          min_size=len(TIMEZONES), max_size=len(TIMEZONES))


def build_rows(user_id: uuid.UUID, tz: str, now: datetime, specs: list[TaskSpec]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Task rows and their status events, consistent with the task state rules."""
    tasks, events = [], []
    for spec in specs:
        task_id = uuid.uuid4()
        created = now - timedelta(seconds=spec.created_ago)
        due = None
        if spec.due_shift is not None:
            due = created.astimezone(ZoneInfo(tz)).date() + timedelta(days=spec.due_shift)
        completed = None
        if spec.status == "done":
            completed = min(created + timedelta(seconds=spec.lead), now - timedelta(seconds=1))
            completed = max(completed, created)
        end = completed or now
        history = [(None, "todo", created)]
        started = None
        if (spec.status != "todo" and spec.start_percent is not None) \
                or spec.status == "in_progress":
            started = created + (end - created) * (spec.start_percent or 0) / 200
            history.append(("todo", "in_progress", started))
        if spec.reopened:
            mid = created + (end - created) * 3 / 4
            history += [(history[-1][1], "done", mid), ("done", "todo", mid)]
            if spec.status == "in_progress":
                history.append(("todo", "in_progress", mid))
        if spec.status == "done":
            history.append((history[-1][1], "done", completed))
        deleted_at = now if spec.deleted else None
        tasks.append({"id": task_id, "user_id": user_id, "status": spec.status,
                      "priority": spec.priority, "due_date": due, "created_at": created,
                      "started_at": started, "completed_at": completed,
                      "deleted": spec.deleted, "deleted_at": deleted_at})
        events += [{"task_id": task_id, "user_id": user_id, "from_status": f, "to_status": t,
                    "at": at.replace(microsecond=0) if at else at} for f, t, at in history]
    return tasks, events


async def insert(pool: asyncpg.Pool, tasks: list[dict[str, Any]],
                 events: list[dict[str, Any]]) -> None:
    await pool.executemany(
        """insert into tasks (id, user_id, title, status, priority, due_date, created_at,
                              updated_at, started_at, completed_at, deleted, deleted_at)
           values ($1, $2, 'task', $3, $4, $5, $6, $6, $7, $8, $9, $10)""",
        [(t["id"], t["user_id"], t["status"], t["priority"], t["due_date"], t["created_at"],
          t["started_at"], t["completed_at"], t["deleted"], t["deleted_at"]) for t in tasks])
    await pool.executemany(
        "insert into task_events (task_id, user_id, from_status, to_status, at) "
        "values ($1, $2, $3, $4, $5)",
        [(e["task_id"], e["user_id"], e["from_status"], e["to_status"], e["at"])
         for e in events])


@dataclass
class World:
    users: list[Any]
    tasks: dict[uuid.UUID, list[dict[str, Any]]]
    events: dict[uuid.UUID, list[dict[str, Any]]]


async def load_world(pool: asyncpg.Pool, world: World) -> None:
    """Re-read tasks and events as stored (the stale step changes some)."""
    for user in world.users:
        rows = await pool.fetch("select * from tasks where user_id = $1", user.id)
        world.tasks[user.id] = [dict(r) for r in rows]
        rows = await pool.fetch("select * from task_events where user_id = $1", user.id)
        world.events[user.id] = [dict(r) for r in rows]


def expected(world: World, user: Any, today: date, d_from: date, d_to: date) -> dict[str, Any]:
    tasks, events = world.tasks[user.id], world.events[user.id]
    tz, goal = user.timezone, user.daily_goal
    out: dict[str, Any] = {"overview": ref.overview(tasks, today)}
    for alias, period in (("day", "DAY"), ("week", "WEEK"), ("month", "MONTH")):
        out[alias] = ref.trends(tasks, tz, goal, period, *ref.default_range(period, today), today)
        out[f"{alias}Range"] = ref.trends(tasks, tz, goal, period, d_from, d_to, today)
    out["productivity"] = ref.productivity(tasks, events, tz, goal, today - timedelta(days=29),
                                           today, today)
    out["productivityRange"] = ref.productivity(tasks, events, tz, goal, d_from, d_to, today)
    return out


async def check(world: World, pool: asyncpg.Pool, gql: Callable[..., Awaitable[dict[str, Any]]],
                token: str, state: str) -> None:
    await load_world(pool, world)
    for user in world.users:
        today = await pool.fetchval("select (now() at time zone $1::text)::date", user.timezone)
        d_from, d_to = today - timedelta(days=HISTORY_DAYS + 5), today + timedelta(days=3)
        body = await gql(QUERY, {"u": str(user.id), "from": d_from.isoformat(),
                                 "to": d_to.isoformat()}, token=token)
        assert "errors" not in body, body
        want = expected(world, user, today, d_from, d_to)
        for key, value in want.items():
            assert body["data"][key] == value, (state, user.timezone, key)


async def rollup_matches_reference(world: World, pool: asyncpg.Pool) -> None:
    """Every fresh daily_analytics row equals the reference day, and covered quiet days have no
    row."""
    for user in world.users:
        rows = {r["date"]: r for r in await pool.fetch(
            "select * from daily_analytics where user_id = $1 and not stale", user.id)}
        cover = await pool.fetchrow("select * from rollup_coverage where user_id = $1", user.id)
        if cover is None:
            assert not rows
            continue
        table = ref.days(world.tasks[user.id], user.timezone, user.daily_goal,
                         cover["covered_from"], cover["covered_through"])
        for d, want in table.items():
            row = rows.get(d)
            if not (want["created"] or want["completed"] or want["due"]):
                assert row is None, d
                continue
            assert row is not None, d
            assert (row["tasks_created"], row["tasks_completed"], row["tasks_due"],
                    row["tasks_completed_on_time"]) == (
                want["created"], want["completed"], want["due"], want["on_time"]), d
            assert float(row["productivity_score"]) == float(want["score"]), d


async def change_some_tasks(world: World, pool: asyncpg.Pool) -> int:
    """Change past tasks the way mutations do (marking their days stale in the same
    transaction): move a due date back, reopen a done task, delete one. Returns stale rows."""
    for user in world.users:
        tasks = sorted(world.tasks[user.id], key=lambda t: t["created_at"])[:6]
        async with pool.acquire() as conn, conn.transaction():
            for i, task in enumerate(tasks):
                before = await conn.fetchrow("select * from tasks where id = $1", task["id"])
                if i % 3 == 0 and before["due_date"] is not None:
                    sql = "update tasks set due_date = due_date - 2 where id = $1"
                elif i % 3 == 1 and before["status"] == "done":
                    sql = "update tasks set status = 'todo', completed_at = null where id = $1"
                else:
                    sql = "update tasks set deleted = true, deleted_at = now() where id = $1"
                await conn.execute(sql, task["id"])
                after = await conn.fetchrow("select * from tasks where id = $1", task["id"])
                await mark_days_stale(conn, user.id, affected_days(before, after,
                                                                   user.timezone))
    return int(await pool.fetchval("select count(*) from daily_analytics where stale"))


# No shrinking: each example is a whole database round; a failure prints its world as drawn.
@settings(max_examples=10, deadline=None,
          phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(spec=world_strategy)
async def test_every_figure_equals_the_reference_with_the_rollup_empty_full_and_stale(
        spec: list[tuple[int, list[TaskSpec]]], pool: asyncpg.Pool, users: UserFactory,
        gql: Callable[..., Awaitable[dict[str, Any]]],
        token_for: Callable[..., str]) -> None:
    await pool.execute("truncate task_events, daily_analytics, rollup_coverage, tasks, users "
                       "cascade")
    admin = await users.create(role="admin")
    token = token_for(admin.id, "admin")
    now = (await pool.fetchval("select now()")).replace(microsecond=0)
    world = World([], {}, {})
    for tz, (goal, specs) in zip(TIMEZONES, spec, strict=True):
        user = await users.create(timezone=tz, daily_goal=goal)
        tasks, events = build_rows(user.id, tz, now, specs)
        await insert(pool, tasks, events)
        world.users.append(user)

    await check(world, pool, gql, token, "empty rollup")

    await aggregate_range(pool, None, None)
    await check(world, pool, gql, token, "full rollup")
    await rollup_matches_reference(world, pool)
    snapshot = await pool.fetch("select user_id, date, tasks_created, tasks_completed, "
                                "tasks_due, tasks_completed_on_time, productivity_points "
                                "from daily_analytics order by 1, 2")
    assert await aggregate_range(pool, None, None) == 0  # idempotent: nothing to rewrite
    assert await pool.fetch("select user_id, date, tasks_created, tasks_completed, tasks_due, "
                            "tasks_completed_on_time, productivity_points "
                            "from daily_analytics order by 1, 2") == snapshot

    await change_some_tasks(world, pool)
    await check(world, pool, gql, token, "partly stale rollup")

    await repair_stale(pool)
    assert await pool.fetchval("select count(*) from daily_analytics where stale") == 0
    await check(world, pool, gql, token, "repaired rollup")
    await rollup_matches_reference(world, pool)
