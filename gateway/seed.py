"""Demo data: users in several timezones, an admin, and tasks with their history.

Rows are generated in Python from a seeded random generator (the same arguments give the same data)
and written with `COPY` (asyncpg `copy_records_to_table`), chunk by chunk, in one transaction.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from argon2 import PasswordHasher

DEMO_PASSWORD = "demo-password"
DEMO_EMAIL = "demo@example.com"
ADMIN_EMAIL = "admin@example.com"
TIMEZONES = ("UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney",
             "America/Los_Angeles", "Asia/Kolkata", "Pacific/Kiritimati", "Pacific/Pago_Pago")
PRIORITIES = ("low", "medium", "high")
PRIORITY_WEIGHTS = (3, 5, 2)
USER_COLUMNS = ("id", "email", "password_hash", "display_name", "timezone", "daily_goal", "role",
                "created_at", "updated_at")
TASK_COLUMNS = ("id", "user_id", "title", "description", "status", "priority", "due_date",
                "created_at", "updated_at", "started_at", "completed_at", "deleted", "deleted_at")
EVENT_COLUMNS = ("task_id", "user_id", "from_status", "to_status", "at")
TITLES = ("Write report", "Review pull request", "Plan sprint", "Fix login bug", "Call supplier",
          "Update roadmap", "Prepare slides", "Answer support tickets", "Refactor billing",
          "Book travel", "Interview candidate", "Draft newsletter", "Clean backlog", "Ship release")


@dataclass
class SeedResult:
    users: int
    tasks: int
    events: int
    seconds: float


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _tasks_for_user(rng: random.Random, user_id: uuid.UUID, count: int, days: int,
                    now: datetime) -> Iterator[tuple[tuple, list[tuple]]]:
    """One user's tasks, each with its status-change events, spread over the last `days` days."""
    span = days * 86400.0
    for _ in range(count):
        task_id = _uuid(rng)
        created = now - timedelta(seconds=rng.random() * span)
        priority = rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0]
        due = (created + timedelta(days=rng.randint(-1, 14))).date() if rng.random() < 0.7 else None
        lead = timedelta(hours=0.25 + rng.expovariate(1 / 40))
        roll = rng.random()
        status = "done" if roll < 0.65 else ("in_progress" if roll < 0.8 else "todo")
        completed = created + lead if status == "done" else None
        if completed is not None and completed > now:
            status, completed = "in_progress", None
        started = None
        if status != "todo":
            end = completed or now
            started = created + (end - created) * rng.random() * 0.6
        events: list[tuple[Any, ...]] = [(task_id, user_id, None, "todo", created)]
        if started is not None:
            events.append((task_id, user_id, "todo", "in_progress", started))
        if completed is not None:
            assert started is not None
            if rng.random() < 0.05:  # done once, reopened, done again
                first = started + (completed - started) * 0.5
                events += [(task_id, user_id, "in_progress", "done", first),
                           (task_id, user_id, "done", "todo", first + (completed - first) * 0.2),
                           (task_id, user_id, "todo", "in_progress",
                            first + (completed - first) * 0.4)]
            events.append((task_id, user_id, "in_progress", "done", completed))
        deleted = rng.random() < 0.03
        last = completed or started or created
        deleted_at = last + timedelta(minutes=5) if deleted else None
        updated = deleted_at or last
        task = (task_id, user_id, rng.choice(TITLES), "", status, priority, due, created, updated,
                started, completed, deleted, deleted_at)
        yield task, events


async def seed(conn: asyncpg.Connection, *, users: int, days: int, tasks_per_user: int = 200,
               seed_value: int = 42, chunk_users: int = 500) -> SeedResult:
    """Insert `users` users (the first two are the demo user and the admin) with their tasks."""
    started_at = time.perf_counter()
    now = datetime.now(UTC)
    password_hash = PasswordHasher().hash(DEMO_PASSWORD)  # one hash: every demo user shares it
    user_created = now - timedelta(days=days + 1)
    n_tasks = n_events = 0
    async with conn.transaction():
        taken = {r["e"] for r in await conn.fetch("select lower(email) as e from users")}
        # Same arguments on the same database give the same rows; seeding again adds new ones.
        rng = random.Random(f"{seed_value}:{len(taken)}")
        for start in range(0, users, chunk_users):
            user_rows, task_rows, event_rows = [], [], []
            for i in range(start, min(users, start + chunk_users)):
                user_id = _uuid(rng)
                if i == 0:
                    email, name, role, tz = DEMO_EMAIL, "Demo User", "user", "Europe/Berlin"
                elif i == 1:
                    email, name, role, tz = ADMIN_EMAIL, "Admin", "admin", "UTC"
                else:
                    email, name, role = f"user{i}@example.com", f"User {i}", "user"
                    tz = TIMEZONES[i % len(TIMEZONES)]
                if email in taken:
                    email = f"user{i}.{seed_value}.{rng.getrandbits(32):08x}@example.com"
                user_rows.append((user_id, email, password_hash, name, tz, rng.choice((3, 5, 8)),
                                  role, user_created, user_created))
                for task, events in _tasks_for_user(rng, user_id, tasks_per_user, days, now):
                    task_rows.append(task)
                    event_rows.extend(events)
            await conn.copy_records_to_table("users", records=user_rows, columns=USER_COLUMNS)
            await conn.copy_records_to_table("tasks", records=task_rows, columns=TASK_COLUMNS)
            await conn.copy_records_to_table("task_events", records=event_rows,
                                             columns=EVENT_COLUMNS)
            n_tasks += len(task_rows)
            n_events += len(event_rows)
    # Fresh statistics, and a visibility map so that the covering indexes give index-only scans.
    for table in ("users", "tasks", "task_events"):
        await conn.execute(f"vacuum (analyze) {table}")
    return SeedResult(users, n_tasks, n_events, time.perf_counter() - started_at)
