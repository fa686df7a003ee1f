"""Rows for tests, written with plain SQL through the real database."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# A fixed argon2id hash of "correct-horse-battery" (hashing per test would be slow).
PASSWORD = "correct-horse-battery"
PASSWORD_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$MTIzNDU2Nzg5MGFiY2RlZg$"
                 "8dVCqsrXpClw8hO5SmaecW5CvAAg6OQDnPgdZnw/WhI")
_counter = itertools.count(1)


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    timezone: str
    role: str
    daily_goal: int


class UserFactory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, *, email: str | None = None, timezone: str = "UTC",
                     role: str = "user", daily_goal: int = 5, display_name: str | None = None,
                     created_at: datetime | None = None) -> User:
        n = next(_counter)
        email = email or f"user{n}@example.com"
        row = await self.pool.fetchrow(
            """insert into users (email, password_hash, display_name, timezone, daily_goal, role,
                                  created_at)
               values ($1, $2, $3, $4, $5, $6, coalesce($7, now()))
               returning id""",
            email, PASSWORD_HASH, display_name or f"User {n}", timezone, daily_goal, role,
            created_at)
        return User(row["id"], email, timezone, role, daily_goal)

    async def task(self, user: User, **fields: Any) -> uuid.UUID:
        """Insert one task row as given (no events); for analytics fixtures use explicit times."""
        columns = {"title": "task", "status": "todo", "priority": "medium", **fields}
        names = ", ".join(columns)
        params = ", ".join(f"${i}" for i in range(2, len(columns) + 2))
        task_id: uuid.UUID = await self.pool.fetchval(
            f"insert into tasks (user_id, {names}) values ($1, {params}) returning id",
            user.id, *columns.values())
        return task_id
