"""Live pushes updated from the change rather than recomputed (domain/deltas.py, resolvers/live.py).

- Differentially, on the session's PostgreSQL: a user's figures, advanced by each of a few
  hundred random task changes (inserts, status, priority and due-date changes, deletions, in
  several timezones), equal the figures the statements compute after the change; and every
  change raises the user's data version by exactly one.
- End to end, on a live server: once a push's figures are known, the API's own task changes are
  pushed without any figure statement and equal the query's answer; a change the hub has not
  heard of, or a completion, makes the next push recompute, and it is right.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from domain.deltas import TaskChange, TaskFacts, Values, advance
from domain.figures import DaySeries
from gateway.ops.settings import Settings
from loaders.analytics import DailySeriesLoader, OverviewLoader, ProductivityLoader, UserLoader
from resolvers.live import Known
from tests.conftest import until
from tests.factories import User, UserFactory
from tests.live_client import LiveClient, live_server
from tests.samples import statements_run
from tests.test_subscriptions import DASHBOARD, DASHBOARD_QUERY, _post

STATUSES = ("todo", "in_progress", "done")
PRIORITIES = ("low", "medium", "high")
TASK = "status, priority, due_date, created_at, completed_at, deleted"


# -- the facts on the wire ------------------------------------------------------------------------

def test_a_change_travels_as_json_and_comes_back_equal() -> None:
    created = datetime(2026, 3, 29, 0, 30, 0, 123456, tzinfo=UTC)
    facts = TaskFacts("done", "high", created.date(), created, created + timedelta(hours=5))
    for change in (TaskChange(7, None, facts), TaskChange(8, facts, None),
                   TaskChange(9, replace(facts, status="todo", completed_at=None,
                                         due_date=None), facts)):
        assert TaskChange.decode(change.version, change.encode()) == change
    # Another format, a malformed one: not a change this process can apply (it recomputes).
    assert TaskChange.decode(1, [2, None, None]) is None
    assert TaskChange.decode(1, [1, ["done", "high", None, "soon", None], None]) is None
    assert TaskChange.decode(1, [1, ["finished", "high", None, 0, None], None]) is None
    assert TaskChange.decode(1, "x") is None


# -- differential: advanced figures equal the recomputed ones -------------------------------------

async def _figures(pool: asyncpg.Pool, user_id: uuid.UUID) -> tuple[Values, int, Any]:
    """The user's figures as the statements compute them (no cache), their data version, and
    the row; every kind, with a default range, a custom one reaching into the future, and a
    DAY range of one day."""
    row = (await UserLoader(pool).compute([user_id]))[0]
    assert row is not None
    today = row.today
    ranges = [(today - timedelta(days=29), today), (today - timedelta(days=45),
                                                    today + timedelta(days=12)), (today, today)]
    overview = await OverviewLoader(pool).compute([(user_id, today)])
    series = await DailySeriesLoader(pool).compute([(user_id, *r) for r in ranges])
    extras = await ProductivityLoader(pool).compute([(user_id, *ranges[0])])
    values: Values = {("overview", (user_id, today)): overview[0]}
    values.update({("trends", (user_id, *r)): s for r, s in zip(ranges, series, strict=True)})
    values[("productivity", (user_id, *ranges[0]))] = extras[0]
    return values, row.data_version, row


def _random_facts(rng: random.Random, now: datetime) -> dict[str, Any]:
    status = rng.choice(STATUSES)
    created = now - timedelta(minutes=rng.randrange(0, 50 * 24 * 60))
    completed = None
    if status == "done":  # (the table holds completed_at exactly when done)
        completed = created + timedelta(minutes=rng.randrange(0, 20 * 24 * 60))
        completed = min(completed, now)
    due = None if rng.random() < 0.3 else (now + timedelta(days=rng.randrange(-40, 15))).date()
    return {"status": status, "priority": rng.choice(PRIORITIES), "due_date": due,
            "created_at": created, "completed_at": completed}


async def _change(conn: asyncpg.Connection, rng: random.Random, user: User, now: datetime,
                  tasks: list[uuid.UUID]) -> TaskChange:
    """One random change of one task in one statement, as a mutation makes it: the facts
    before and after, and the data version read in its transaction."""
    async with conn.transaction():
        roll = rng.random()
        before = None
        if roll < 0.35 or not tasks:
            fields = _random_facts(rng, now)
            after = await conn.fetchrow(
                f"""insert into tasks (user_id, title, status, priority, due_date, created_at,
                                       completed_at)
                    values ($1, 'delta', $2, $3, $4, $5, $6) returning id, {TASK}""",
                user.id, *fields.values())
            tasks.append(after["id"])
        else:
            task_id = rng.choice(tasks)
            before = await conn.fetchrow(f"select {TASK} from tasks where id = $1 for update",
                                         task_id)
            if roll < 0.45:
                after = await conn.fetchrow(
                    f"update tasks set deleted = true, deleted_at = now() where id = $1 "
                    f"returning {TASK}", task_id)
                tasks.remove(task_id)
            else:
                fields = _random_facts(rng, now)
                keep = rng.sample(["status", "priority", "due_date"], rng.randrange(0, 3))
                for name in keep:
                    fields[name] = before[name]
                if fields["status"] != "done":
                    fields["completed_at"] = None
                elif before["status"] == "done" and rng.random() < 0.5:
                    fields["completed_at"] = before["completed_at"]  # still done, same instant
                elif fields["completed_at"] is None:
                    fields["completed_at"] = now - timedelta(minutes=rng.randrange(0, 9000))
                after = await conn.fetchrow(
                    f"""update tasks set status = $2, priority = $3, due_date = $4,
                                         completed_at = $5
                        where id = $1 returning {TASK}""",
                    task_id, fields["status"], fields["priority"], fields["due_date"],
                    fields["completed_at"])
        version = await conn.fetchval("select data_version from users where id = $1", user.id)
    return TaskChange(version, TaskFacts.of_row(before), TaskFacts.of_row(after))


def _without_empty_days(values: Values) -> Values:
    return {key: replace(value, days=tuple(d for d in value.days if any(
        (d.tasks_created, d.tasks_completed, d.tasks_due, d.tasks_completed_on_time,
         d.half_points)))) if isinstance(value, DaySeries) else value
        for key, value in values.items()}


@pytest.mark.parametrize("timezone", ["UTC", "Asia/Tokyo", "America/St_Johns",
                                      "Pacific/Kiritimati"])
async def test_figures_advanced_from_changes_equal_the_recomputed_ones(
        timezone: str, pool: asyncpg.Pool, users: UserFactory) -> None:
    rng = random.Random(f"deltas-{timezone}")
    user = await users.create(timezone=timezone)
    now = datetime.now(UTC)
    tasks: list[uuid.UUID] = []
    async with pool.acquire() as conn:
        for _ in range(25):
            await _change(conn, rng, user, now, tasks)
        values, version, row = await _figures(pool, user.id)
        advanced = recomputed = 0
        for step in range(90):
            # Most steps apply one change, some several at once (a coalesced push).
            changes = [await _change(conn, rng, user, now, tasks)
                       for _ in range(1 if step % 4 else 3)]
            assert [c.version for c in changes] == list(range(version + 1,
                                                              version + 1 + len(changes)))
            expected, version, now_row = await _figures(pool, user.id)
            if now_row.today != row.today:  # the local day turned meanwhile: start again
                values, row = expected, now_row
                continue
            updated = advance(values, timezone, changes)
            if updated is None:
                assert any(c.touches_completion() for c in changes)
                recomputed += 1
                values = expected
                continue
            advanced += 1
            assert _without_empty_days(updated) == _without_empty_days(expected), step
            values = updated
    assert advanced >= 20 and recomputed >= 5, (advanced, recomputed)


def test_without_the_productivity_extras_every_change_advances() -> None:
    """Completions only stop the extras: the overview and the series follow every change."""
    user = uuid.uuid4()
    day = datetime(2026, 5, 4, 12, tzinfo=UTC)
    series = DaySeries(day.date() - timedelta(days=2), day.date(), ())
    done = TaskChange(1, None, TaskFacts("done", "low", None, day, day))
    values: Values = {("trends", (user, series.d_from, series.d_to)): series}
    updated = advance(values, "UTC", [done])
    assert updated is not None
    (point,) = updated["trends", (user, series.d_from, series.d_to)].days
    assert (point.tasks_created, point.tasks_completed, point.half_points) == (1, 1, 2)
    extras = ("productivity", (user, series.d_from, series.d_to))
    assert advance({**values, extras: object()}, "UTC", [done]) is None


# -- end to end: pushes without figure statements -------------------------------------------------

FIGURE_STATEMENTS = ("analytics_figures", "analytics_overview", "analytics_daily_series",
                     "analytics_productivity_extras")
CREATE = """mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }"""
UPDATE = """mutation($id: ID!, $input: UpdateTaskInput!) {
  updateTask(id: $id, input: $input) { id } }"""
DELETE = "mutation($id: ID!) { deleteTask(id: $id) }"


def _figure_statements() -> float:
    return sum(statements_run(FIGURE_STATEMENTS).values())


async def test_described_changes_are_pushed_without_recomputing_and_equal_the_query(
        settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    live_settings = replace(settings, live_coalesce_ms=50)
    user = await users.create(timezone="America/St_Johns")
    now = datetime.now(UTC)
    await users.task(user, status="done", completed_at=now - timedelta(days=1),
                     created_at=now - timedelta(days=3), due_date=now.date())
    await users.task(user, status="in_progress", started_at=now, due_date=now.date()
                     - timedelta(days=2))
    token = token_for(user.id)
    variables = {"period": "DAY", "from": None, "to": None}
    today = str(now.date())

    async def push_of(query: str, mutation_variables: dict[str, Any]) -> tuple[Any, float]:
        """The push that a mutation brings, and how many figure statements it took."""
        before = _figure_statements()
        body = await _post(server.http, query, token, mutation_variables)
        pushed = await client.data("dash")
        statements = _figure_statements() - before
        answer = (await _post(server.http, DASHBOARD_QUERY, token, variables))["data"]
        assert pushed["dashboard"] == answer, (query, mutation_variables)
        return body["data"], statements

    async with live_server(live_settings) as server, \
            LiveClient.connect(server.ws, token) as client:
        await client.subscribe("dash", DASHBOARD, variables)
        await client.data("dash")
        # The first change is recomputed; its figures are kept once confirmed.
        created, statements = await push_of(CREATE, {"input": {"title": "a", "dueDate": today}})
        assert statements == 1
        task = created["createTask"]["id"]
        await _until_known(server, user.id)
        for query, changed in [
                (CREATE, {"input": {"title": "b", "priority": "HIGH", "status": "IN_PROGRESS"}}),
                (UPDATE, {"id": task, "input": {"priority": "LOW"}}),
                (UPDATE, {"id": task, "input": {"status": "IN_PROGRESS", "dueDate": None}}),
                (DELETE, {"id": task})]:
            _, statements = await push_of(query, changed)
            assert statements == 0, query
        # A completion moves the productivity extras: recomputed, and right.
        created, _ = await push_of(CREATE, {"input": {"title": "c"}})
        await _until_known(server, user.id)
        _, statements = await push_of(UPDATE, {"id": created["createTask"]["id"],
                                               "input": {"status": "DONE"}})
        assert statements == 1
        # A change nobody described (plain SQL: the version rises, no message) leaves a gap
        # before the next described one: recomputed, and the push has both.
        await _until_known(server, user.id)
        await users.task(user, title="unannounced")
        _, statements = await push_of(CREATE, {"input": {"title": "d"}})
        assert statements == 1
        total = await pool.fetchval(
            "select count(*) from tasks where user_id = $1 and not deleted", user.id)
        answer = (await _post(server.http, DASHBOARD_QUERY, token, variables))["data"]
        assert answer["overview"]["totalTasks"] == total


async def _until_known(server: Any, user_id: uuid.UUID) -> None:
    """Wait until the server's hub keeps the figures of `user_id` (learned after a push)."""
    hub = server.app.state.live_hub
    await until(lambda: isinstance(getattr(hub.subject(user_id), "known", None), Known),
                "the pushed figures to be kept")


async def test_kept_figures_of_a_user_who_stopped_changing_are_let_go(
        settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    """About 5 KiB a followed user: not kept for ever once the changes stop."""
    import resolvers.live

    monkeypatch.setattr(resolvers.live, "KEEP_KNOWN_S", 0.5)
    user = await users.create()
    token = token_for(user.id)
    variables = {"period": "DAY", "from": None, "to": None}
    async with live_server(replace(settings, live_coalesce_ms=50)) as server, \
            LiveClient.connect(server.ws, token) as client:
        await client.subscribe("dash", DASHBOARD, variables)
        await client.data("dash")
        await _post(server.http, CREATE, token, {"input": {"title": "a"}})
        await client.data("dash")
        await _until_known(server, user.id)
        subject = server.app.state.live_hub.subject(user.id)
        await until(lambda: subject.known is None, "the kept figures to be let go")
        # and the next change is pushed right, computed from the database
        before = _figure_statements()
        await _post(server.http, CREATE, token, {"input": {"title": "b"}})
        pushed = await client.data("dash")
        assert pushed["dashboard"]["overview"]["totalTasks"] == 2
        assert _figure_statements() - before == 1
