"""Tasks: the `Task` type, its enums and inputs, the `tasks`/`task` queries and the mutations.

Resolvers (resolvers/tasks.py) return `tasks` rows; this module turns them into GraphQL types.
"""

from __future__ import annotations

import datetime
import enum
from typing import Any

import strawberry

from resolvers import tasks as resolve
from resolvers.context import Info
from schema.pagination import DEFAULT_PAGE_SIZE, Connection, build_connection


@strawberry.enum
class TaskStatus(enum.Enum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"


@strawberry.enum
class Priority(enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@strawberry.type
class Task:
    id: strawberry.ID
    title: str
    description: str
    status: TaskStatus
    priority: Priority
    due_date: datetime.date | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    started_at: datetime.datetime | None
    completed_at: datetime.datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Task:
        """A `Task` from a `tasks` row."""
        return cls(id=strawberry.ID(str(row["id"])), title=row["title"],
                   description=row["description"], status=TaskStatus(row["status"]),
                   priority=Priority(row["priority"]), due_date=row["due_date"],
                   created_at=row["created_at"], updated_at=row["updated_at"],
                   started_at=row["started_at"], completed_at=row["completed_at"])


@strawberry.input(description="Filters of `tasks` (and of the CSV export): all must hold.")
class TaskFilter:
    status: TaskStatus | None = None
    priority: Priority | None = None
    due_from: datetime.date | None = strawberry.field(
        default=None, description="Only tasks due on or after this day.")
    due_to: datetime.date | None = strawberry.field(
        default=None, description="Only tasks due on or before this day.")
    search: str | None = strawberry.field(
        default=None, description="Only tasks whose title contains this text, ignoring case.")


@strawberry.input
class CreateTaskInput:
    title: str
    description: str | None = ""
    status: TaskStatus | None = TaskStatus.TODO
    priority: Priority | None = Priority.MEDIUM
    due_date: datetime.date | None = None


@strawberry.input(description="Omitted fields are left as they are; `dueDate: null` clears it.")
class UpdateTaskInput:
    title: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    status: TaskStatus | None = strawberry.UNSET
    priority: Priority | None = strawberry.UNSET
    due_date: datetime.date | None = strawberry.UNSET


@strawberry.type
class TaskQuery:
    @strawberry.field(description="The caller's tasks, oldest first, as a cursor connection.")
    async def tasks(self, info: Info, filter: TaskFilter | None = None,
                    first: int | None = DEFAULT_PAGE_SIZE,
                    after: str | None = None) -> Connection[Task]:
        rows, size = await resolve.list_tasks(info, filter, first, after)
        return build_connection(rows, size, Task.from_row, after=after)

    @strawberry.field(description="One of the caller's tasks; NOT_FOUND for any other id.")
    async def task(self, info: Info, id: strawberry.ID) -> Task | None:
        return Task.from_row(await resolve.get_task(info, id))


@strawberry.type
class TaskMutation:
    @strawberry.mutation
    async def create_task(self, info: Info, input: CreateTaskInput) -> Task:
        return Task.from_row(await resolve.create_task(info, input))

    @strawberry.mutation(description="Change a task; every status change is recorded.")
    async def update_task(self, info: Info, id: strawberry.ID, input: UpdateTaskInput) -> Task:
        return Task.from_row(await resolve.update_task(info, id, input))

    @strawberry.mutation(description="Soft-delete a task: it then counts nowhere.")
    async def delete_task(self, info: Info, id: strawberry.ID) -> bool:
        await resolve.delete_task(info, id)
        return True
