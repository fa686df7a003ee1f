"""Tasks: CRUD, status history, ownership, validation, stale rollup days."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest

from tests.factories import User, UserFactory

Gql = Callable[..., Awaitable[dict[str, Any]]]
FIELDS = "id title description status priority dueDate createdAt updatedAt startedAt completedAt"
CREATE = f"mutation($input: CreateTaskInput!) {{ createTask(input: $input) {{ {FIELDS} }} }}"
UPDATE = (f"mutation($id: ID!, $input: UpdateTaskInput!) {{ updateTask(id: $id, input: $input) "
          f"{{ {FIELDS} }} }}")
DELETE = "mutation($id: ID!) { deleteTask(id: $id) }"
TASK = f"query($id: ID!) {{ task(id: $id) {{ {FIELDS} }} }}"


def code(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])




async def create(run: Gql, **fields: Any) -> dict[str, Any]:
    body = await run(CREATE, {"input": {"title": "t", **fields}})
    assert "errors" not in body, body
    task: dict[str, Any] = body["data"]["createTask"]
    return task


async def snapshot(pool: asyncpg.Pool) -> tuple[list[Any], list[Any], list[Any]]:
    """Everything a task mutation may write."""
    return (await pool.fetch("select * from tasks order by id"),
            await pool.fetch("select * from task_events order by id"),
            await pool.fetch("select * from daily_analytics order by user_id, date"))


async def events_of(pool: asyncpg.Pool, task_id: str) -> list[tuple[str | None, str]]:
    rows = await pool.fetch("select from_status, to_status from task_events where task_id = $1 "
                            "order by id", uuid.UUID(task_id))
    return [(r["from_status"], r["to_status"]) for r in rows]


# --- create --------------------------------------------------------------------------------------


async def test_create_with_defaults_writes_the_creation_event(as_alice: Gql,
                                                              pool: asyncpg.Pool) -> None:
    task = await create(as_alice, title="  Write the report  ")
    assert task["title"] == "Write the report"
    assert (task["description"], task["status"], task["priority"]) == ("", "TODO", "MEDIUM")
    assert task["dueDate"] is None and task["startedAt"] is None and task["completedAt"] is None
    assert task["createdAt"].endswith("+00:00")
    assert await events_of(pool, task["id"]) == [(None, "todo")]


async def test_create_in_progress_or_done_sets_the_timestamps(as_alice: Gql,
                                                              pool: asyncpg.Pool) -> None:
    started = await create(as_alice, status="IN_PROGRESS", priority="HIGH", dueDate="2030-01-02")
    assert started["startedAt"] == started["createdAt"] and started["completedAt"] is None
    assert started["dueDate"] == "2030-01-02" and started["priority"] == "HIGH"
    done = await create(as_alice, status="DONE")
    assert done["completedAt"] == done["createdAt"] and done["startedAt"] is None
    assert await events_of(pool, started["id"]) == [(None, "in_progress")]
    assert await events_of(pool, done["id"]) == [(None, "done")]


@pytest.mark.parametrize(("fields", "field"), [
    ({"title": ""}, "title"),
    ({"title": "   "}, "title"),
    ({"title": "x" * 501}, "title"),
    ({"description": "x" * 10_001}, "description"),
])
async def test_create_rejects_bad_input_and_writes_nothing(
        as_alice: Gql, pool: asyncpg.Pool, fields: dict[str, Any], field: str) -> None:
    await create(as_alice)
    before = await snapshot(pool)
    body = await as_alice(CREATE, {"input": {"title": "ok", **fields}})
    assert code(body) == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == field
    assert await snapshot(pool) == before


async def test_limits_are_inclusive(as_alice: Gql) -> None:
    task = await create(as_alice, title="x" * 500, description="y" * 10_000)
    assert len(task["title"]) == 500 and len(task["description"]) == 10_000


@pytest.mark.parametrize("literal", [
    'status: ARCHIVED', 'priority: URGENT', 'status: "todo"', 'dueDate: "2026-02-30"'])
async def test_unknown_enum_values_and_bad_dates_are_refused(as_alice: Gql, pool: asyncpg.Pool,
                                                             literal: str) -> None:
    before = await snapshot(pool)
    body = await as_alice(f'mutation {{ createTask(input: {{title: "ok", {literal}}}) {{ id }} }}')
    assert body.get("data") is None
    assert literal.split(":")[1].strip().strip('"') in body["errors"][0]["message"]
    assert await snapshot(pool) == before


@pytest.mark.parametrize(("fields", "named"), [
    ({"status": "ARCHIVED"}, "status"),
    ({"priority": "URGENT"}, "priority"),
])
async def test_unknown_enum_values_in_variables_are_bad_user_input_naming_the_field(
        as_alice: Gql, pool: asyncpg.Pool, fields: dict[str, Any], named: str) -> None:
    before = await snapshot(pool)
    body = await as_alice(CREATE, {"input": {"title": "ok", **fields}})
    assert await snapshot(pool) == before
    assert body.get("data") is None
    assert named in body["errors"][0]["message"]
    assert code(body) == "BAD_USER_INPUT"


async def test_creating_needs_a_caller(gql: Gql, pool: asyncpg.Pool) -> None:
    body = await gql(CREATE, {"input": {"title": "t"}})
    assert code(body) == "UNAUTHENTICATED"
    assert await pool.fetchval("select count(*) from tasks") == 0


# --- update and status history -------------------------------------------------------------------


async def test_status_transitions_set_timestamps_and_record_each_change(
        as_alice: Gql, pool: asyncpg.Pool) -> None:
    task = await create(as_alice)
    tid = task["id"]

    async def move(status: str) -> dict[str, Any]:
        body = await as_alice(UPDATE, {"id": tid, "input": {"status": status}})
        assert "errors" not in body, body
        moved: dict[str, Any] = body["data"]["updateTask"]
        return moved

    started = await move("IN_PROGRESS")
    assert started["startedAt"] is not None and started["completedAt"] is None
    done = await move("DONE")
    assert done["completedAt"] is not None and done["startedAt"] == started["startedAt"]
    same = await move("DONE")  # no change: no event, completion time kept
    assert same["completedAt"] == done["completedAt"]
    reopened = await move("TODO")
    assert reopened["completedAt"] is None and reopened["startedAt"] == started["startedAt"]
    again = await move("IN_PROGRESS")  # started_at is the *first* move to in_progress
    assert again["startedAt"] == started["startedAt"]
    done_again = await move("DONE")
    assert done_again["completedAt"] > done["completedAt"]
    assert await events_of(pool, tid) == [
        (None, "todo"), ("todo", "in_progress"), ("in_progress", "done"), ("done", "todo"),
        ("todo", "in_progress"), ("in_progress", "done")]
    # The event times are the task's own timestamps (one transaction, one now()).
    at = await pool.fetchval("select at from task_events where task_id = $1 and "
                             "to_status = 'in_progress' order by id limit 1", uuid.UUID(tid))
    assert at.isoformat() == started["startedAt"]


async def test_straight_from_todo_to_done_leaves_started_at_empty(as_alice: Gql) -> None:
    task = await create(as_alice)
    body = await as_alice(UPDATE, {"id": task["id"], "input": {"status": "DONE"}})
    assert body["data"]["updateTask"]["startedAt"] is None
    assert body["data"]["updateTask"]["completedAt"] is not None


async def test_omitted_fields_stay_and_a_null_due_date_clears(as_alice: Gql,
                                                              pool: asyncpg.Pool) -> None:
    task = await create(as_alice, title="keep", description="d", priority="LOW",
                        dueDate="2031-05-06")
    body = await as_alice(UPDATE, {"id": task["id"], "input": {"priority": "HIGH"}})
    updated = body["data"]["updateTask"]
    assert (updated["title"], updated["description"], updated["dueDate"]) == ("keep", "d",
                                                                            "2031-05-06")
    assert updated["priority"] == "HIGH" and updated["updatedAt"] >= task["updatedAt"]
    body = await as_alice(UPDATE, {"id": task["id"], "input": {"dueDate": None}})
    assert body["data"]["updateTask"]["dueDate"] is None
    assert body["data"]["updateTask"]["priority"] == "HIGH"
    assert await events_of(pool, task["id"]) == [(None, "todo")]  # no status change, no event


@pytest.mark.parametrize(("changes", "field"), [
    ({"title": ""}, "title"),
    ({"title": None}, "title"),
    ({"title": "y" * 501}, "title"),
    ({"description": None}, "description"),
    ({"description": "z" * 10_001}, "description"),
    ({"status": None, "title": "fine"}, "status"),
    ({"priority": None}, "priority"),
])
async def test_bad_update_input_changes_nothing(as_alice: Gql, pool: asyncpg.Pool,
                                                changes: dict[str, Any], field: str) -> None:
    task = await create(as_alice, title="orig", status="IN_PROGRESS")
    before = await snapshot(pool)
    body = await as_alice(UPDATE, {"id": task["id"], "input": {"status": "DONE", **changes}})
    assert code(body) == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == field
    assert await snapshot(pool) == before


# --- ownership -----------------------------------------------------------------------------------


async def test_another_users_task_is_exactly_like_a_missing_one(
        as_alice: Gql, gql: Gql, users: UserFactory, pool: asyncpg.Pool,
        token_for: Callable[..., str]) -> None:
    task = await create(as_alice, title="alice's secret")
    bob = await users.create(email="bob@example.com")
    bob_token = token_for(bob.id)
    before = await snapshot(pool)
    for tid in (task["id"], str(uuid.uuid4()), "not-a-uuid"):
        answers = [
            await gql(TASK, {"id": tid}, token=bob_token),
            await gql(UPDATE, {"id": tid, "input": {"title": "pwned", "status": "DONE"}},
                      token=bob_token),
            await gql(DELETE, {"id": tid}, token=bob_token),
        ]
        for body in answers:
            assert not any((body["data"] or {}).values())  # `task` is nullable: data.task null
            assert code(body) == "NOT_FOUND"
            assert body["errors"][0]["message"] == "Task not found"
    assert await snapshot(pool) == before
    # Bob's list does not show it either; Alice still sees it.
    listed = await gql("{ tasks { edges { node { id } } } }", token=bob_token)
    assert listed["data"]["tasks"]["edges"] == []
    assert (await as_alice(TASK, {"id": task["id"]}))["data"]["task"]["title"] == "alice's secret"


# --- delete --------------------------------------------------------------------------------------


async def test_delete_is_soft_and_hides_the_task(as_alice: Gql, pool: asyncpg.Pool) -> None:
    task = await create(as_alice)
    assert (await as_alice(DELETE, {"id": task["id"]}))["data"]["deleteTask"] is True
    row = await pool.fetchrow("select deleted, deleted_at from tasks where id = $1",
                              uuid.UUID(task["id"]))
    assert row["deleted"] is True and row["deleted_at"] is not None
    assert code(await as_alice(TASK, {"id": task["id"]})) == "NOT_FOUND"
    assert code(await as_alice(DELETE, {"id": task["id"]})) == "NOT_FOUND"
    body = await as_alice(UPDATE, {"id": task["id"], "input": {"title": "zombie"}})
    assert code(body) == "NOT_FOUND"
    listed = await as_alice("{ tasks { edges { node { id } } } }")
    assert listed["data"]["tasks"]["edges"] == []


# --- stale rollup days ---------------------------------------------------------------------------


async def _cover(pool: asyncpg.Pool, user: User) -> None:
    """A rollup covering 2026-01-01..2026-01-31, with fresh rows on the 10th and 20th."""
    await pool.execute("""insert into rollup_coverage (user_id, covered_from, covered_through)
                          values ($1, '2026-01-01', '2026-01-31')""", user.id)
    await pool.execute("""insert into daily_analytics (user_id, date, tasks_due)
                          values ($1, '2026-01-10', 1), ($1, '2026-01-20', 0)""", user.id)


async def stale_days(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("select date from daily_analytics where stale order by date")
    return [r["date"].isoformat() for r in rows]


async def test_a_new_due_date_marks_both_days_stale(as_alice: Gql, alice: User,
                                                    pool: asyncpg.Pool) -> None:
    task = await create(as_alice, dueDate="2026-01-10")
    await pool.execute("update daily_analytics set stale = false")
    await _cover(pool, alice)
    await as_alice(UPDATE, {"id": task["id"], "input": {"dueDate": "2026-01-20"}})
    assert await stale_days(pool) == ["2026-01-10", "2026-01-20"]


async def test_a_title_change_marks_nothing_stale(as_alice: Gql, alice: User,
                                                  pool: asyncpg.Pool) -> None:
    task = await create(as_alice, dueDate="2026-01-10")
    await _cover(pool, alice)
    await as_alice(UPDATE, {"id": task["id"], "input": {"title": "renamed"}})
    assert await stale_days(pool) == []


async def test_deleting_and_reopening_mark_their_days_stale(
        as_alice: Gql, alice: User, users: UserFactory, pool: asyncpg.Pool) -> None:
    await _cover(pool, alice)
    done_id = await users.task(alice, status="done", due_date=date(2026, 1, 20),
                               created_at=datetime(2026, 1, 5, 12, tzinfo=UTC),
                               completed_at=datetime(2026, 1, 20, 8, tzinfo=UTC))
    await as_alice(UPDATE, {"id": str(done_id), "input": {"status": "TODO"}})
    assert await stale_days(pool) == ["2026-01-05", "2026-01-20"]
    await pool.execute("update daily_analytics set stale = false")
    other = await users.task(alice, due_date=date(2026, 1, 10),
                             created_at=datetime(2026, 1, 3, 12, tzinfo=UTC))
    await as_alice(DELETE, {"id": str(other)})
    assert await stale_days(pool) == ["2026-01-03", "2026-01-10"]


async def test_creating_a_task_due_on_a_covered_day_marks_it_stale(
        as_alice: Gql, alice: User, pool: asyncpg.Pool) -> None:
    await _cover(pool, alice)
    await create(as_alice, dueDate="2026-01-15")
    assert await stale_days(pool) == ["2026-01-15"]


async def test_a_valid_token_of_a_deleted_account_cannot_create(
        gql: Gql, users: UserFactory, pool: asyncpg.Pool, token_for: Callable[..., str]) -> None:
    gone = await users.create()
    await pool.execute("delete from users where id = $1", gone.id)
    body = await gql(CREATE, {"input": {"title": "orphan"}}, token=token_for(gone.id))
    assert code(body) == "UNAUTHENTICATED"
    assert await pool.fetchval("select count(*) from tasks") == 0


async def test_concurrent_status_changes_keep_an_unbroken_event_chain(
        as_alice: Gql, pool: asyncpg.Pool) -> None:
    task = await create(as_alice)
    moves = ["IN_PROGRESS", "DONE", "TODO", "DONE", "IN_PROGRESS", "TODO"] * 2
    results = await asyncio.gather(*(as_alice(UPDATE, {"id": task["id"], "input": {"status": s}})
                                     for s in moves))
    assert all("errors" not in r for r in results)
    chain = await events_of(pool, task["id"])
    # Each event starts where the previous one ended: no update saw a stale status.
    for previous, current in itertools.pairwise(chain):
        assert current[0] == previous[1]
    final = await pool.fetchrow("select status, completed_at from tasks")
    assert final["status"] == chain[-1][1]
    assert (final["status"] == "done") == (final["completed_at"] is not None)
