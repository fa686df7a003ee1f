"""Task resolvers: who asks, argument checks, then SQL in one transaction per mutation.

Each mutation runs in one transaction that also writes the `task_events` row of a status change
and marks the rollup days it affects stale (so the analytics API stays exact), and calls
`domain.changes.tasks_changed` only after the commit. A task of another user, a deleted task and a
malformed id all answer NOT_FOUND, so ids cannot be probed.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any, Protocol

import asyncpg
import strawberry

from domain import changes as events
from domain.changes import affected_days, mark_days_stale
from domain.deltas import TaskChange, TaskFacts
from gateway.data.db import query
from gateway.errors import BadUserInput, NotFound, Unauthenticated
from resolvers.context import Info
from resolvers.pagination import check_first, decode_cursor


class _Choice(Protocol):
    """A GraphQL enum value (TaskStatus, Priority): its `value` is the column's text."""

    @property
    def value(self) -> str: ...


class TaskFilter(Protocol):
    """The filters of `tasks` and of the CSV export (schema/tasks.py's `TaskFilter`)."""

    @property
    def status(self) -> _Choice | None: ...
    @property
    def priority(self) -> _Choice | None: ...
    @property
    def due_from(self) -> date | None: ...
    @property
    def due_to(self) -> date | None: ...
    @property
    def search(self) -> str | None: ...


class CreateTaskInput(Protocol):
    """A new task's fields (schema/tasks.py's `CreateTaskInput`)."""

    @property
    def title(self) -> str: ...
    @property
    def description(self) -> str | None: ...
    @property
    def status(self) -> _Choice | None: ...
    @property
    def priority(self) -> _Choice | None: ...
    @property
    def due_date(self) -> date | None: ...


class UpdateTaskInput(Protocol):
    """A task's changed fields; an omitted one is `strawberry.UNSET` (schema/tasks.py)."""

    @property
    def title(self) -> Any: ...
    @property
    def description(self) -> Any: ...
    @property
    def status(self) -> Any: ...
    @property
    def priority(self) -> Any: ...
    @property
    def due_date(self) -> Any: ...

TITLE_MAX = 500
DESCRIPTION_MAX = 10_000


def parse_task_id(raw: str) -> uuid.UUID:
    """A task id; a malformed one is NOT_FOUND like any id the caller does not own."""
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise NotFound("Task not found") from None


def check_title(title: str) -> str:
    """The title without surrounding blanks: 1..500 characters, else BAD_USER_INPUT."""
    title = title.strip()
    if not 1 <= len(title) <= TITLE_MAX:
        raise BadUserInput(f"title must have 1 to {TITLE_MAX} characters", field="title")
    return title


def check_description(description: str) -> str:
    if len(description) > DESCRIPTION_MAX:
        raise BadUserInput(f"description may have at most {DESCRIPTION_MAX} characters",
                           field="description")
    return description


def like_pattern(search: str) -> str:
    """A case-insensitive "contains" LIKE pattern matching `search` literally."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def check_due_range(due_from: date | None, due_to: date | None) -> None:
    if due_from is not None and due_to is not None and due_from > due_to:
        raise BadUserInput("dueFrom must not be after dueTo", field="dueFrom")


def filter_params(flt: TaskFilter | None) -> tuple[str | None, str | None, date | None,
                                                      date | None, str | None]:
    """The SQL parameters ($2..$6 of list_tasks) of a filter."""
    if flt is None:
        return None, None, None, None, None
    check_due_range(flt.due_from, flt.due_to)
    search = flt.search.strip() if flt.search else None
    return (flt.status.value if flt.status else None,
            flt.priority.value if flt.priority else None,
            flt.due_from, flt.due_to,
            like_pattern(search) if search else None)


async def list_tasks(info: Info, flt: TaskFilter | None, first: int | None,
                     after: str | None) -> tuple[list[asyncpg.Record], int]:
    """A page of the caller's tasks (one row more than asked, to know if there is a next page)
    and the page size."""
    caller = info.context.require_caller()
    size = check_first(first)
    cursor = decode_cursor(after)
    params = filter_params(flt)
    after_at, after_id = cursor if cursor else (None, None)
    rows = await info.context.resources.pool.fetch(query("list_tasks"), caller.id, *params,
                                                   after_at, after_id, size + 1)
    return rows, size


async def get_task(info: Info, raw_id: str) -> asyncpg.Record:
    caller = info.context.require_caller()
    row = await info.context.resources.pool.fetchrow(query("task_of_user"),
                                                     parse_task_id(raw_id), caller.id)
    if row is None:
        raise NotFound("Task not found")
    return row


async def _account_of(conn: asyncpg.Connection, user_id: uuid.UUID) -> asyncpg.Record:
    """The caller's timezone and data version; UNAUTHENTICATED when a still-valid token names a
    deleted account."""
    account = await conn.fetchrow(query("user_timezone"), user_id)
    if account is None:
        raise Unauthenticated("Account no longer exists")
    return account


async def _after_write(conn: asyncpg.Connection, user_id: uuid.UUID, before: Any,
                       after: Any) -> tuple[list[date], TaskChange]:
    """In the change's transaction, after its one statement on `tasks`: mark the rollup days
    that the change makes wrong stale, and describe the change for live pushes (the data
    version its statement raised the user to, the task's facts before and after)."""
    account = await _account_of(conn, user_id)
    days = sorted(affected_days(before, after, account["timezone"]))
    if days:
        await mark_days_stale(conn, user_id, days)
    return days, TaskChange(account["data_version"], TaskFacts.of_row(before),
                            TaskFacts.of_row(after))


async def create_task(info: Info, data: CreateTaskInput) -> asyncpg.Record:
    caller = info.context.require_caller()
    title = check_title(data.title)
    description = check_description(data.description or "")
    status = data.status.value if data.status else "todo"
    priority = data.priority.value if data.priority else "medium"
    resources = info.context.resources
    async with resources.pool.acquire() as conn, conn.transaction():
        await _account_of(conn, caller.id)  # before the insert, whose foreign key would fail
        row = await conn.fetchrow(query("insert_task"), caller.id, title, description, status,
                                  priority, data.due_date)
        await conn.execute(query("insert_task_event"), row["id"], caller.id, None, status)
        days, change = await _after_write(conn, caller.id, None, row)
    await events.tasks_changed(resources, caller.id, days, change=change)
    return row


def _given(value: Any) -> bool:
    return value is not strawberry.UNSET


def _required(value: Any, field: str) -> Any:
    if value is None:
        raise BadUserInput(f"{field} cannot be null", field=field)
    return value


async def update_task(info: Info, raw_id: str, data: UpdateTaskInput) -> asyncpg.Record:
    caller = info.context.require_caller()
    task_id = parse_task_id(raw_id)
    # Check every field before touching the database: a bad input changes nothing.
    title = check_title(_required(data.title, "title")) if _given(data.title) else None
    description = (check_description(_required(data.description, "description"))
                   if _given(data.description) else None)
    status = _required(data.status, "status").value if _given(data.status) else None
    priority = _required(data.priority, "priority").value if _given(data.priority) else None
    resources = info.context.resources
    async with resources.pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow(query("task_of_user_for_update"), task_id, caller.id)
        if before is None:
            raise NotFound("Task not found")
        after = await conn.fetchrow(
            query("update_task"), task_id, caller.id,
            title if title is not None else before["title"],
            description if description is not None else before["description"],
            status or before["status"],
            priority or before["priority"],
            data.due_date if _given(data.due_date) else before["due_date"])
        if after["status"] != before["status"]:
            await conn.execute(query("insert_task_event"), task_id, caller.id,
                               before["status"], after["status"])
        days, change = await _after_write(conn, caller.id, before, after)
    await events.tasks_changed(resources, caller.id, days, change=change)
    return after


async def delete_task(info: Info, raw_id: str) -> None:
    caller = info.context.require_caller()
    task_id = parse_task_id(raw_id)
    resources = info.context.resources
    async with resources.pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow(query("task_of_user_for_update"), task_id, caller.id)
        if before is None:
            raise NotFound("Task not found")
        await conn.execute(query("soft_delete_task"), task_id, caller.id)
        # A deleted task counts nowhere: to analytics it is as if it were gone.
        days, change = await _after_write(conn, caller.id, before, None)
    await events.tasks_changed(resources, caller.id, days, change=change)
