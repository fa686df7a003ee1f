"""Demo data: users in several timezones, an admin, and tasks with their history.

Rows are generated in Python from seeded random generators (the same arguments give the same data:
each user has a generator of its own, so the rows do not depend on chunking or on which process
made them) and written with `COPY` (asyncpg `copy_records_to_table`), chunk by chunk, in one
transaction.

A large load (`python -m gateway seed --users 10000 --days 365`: 2M tasks, ~5M events) is shaped
by where the time goes on a small machine:

- PostgreSQL maintaining nine B-trees and three foreign keys row by row costs more than everything
  else together. In *bulk mode* (the task tables are empty and the load is large) the secondary
  indexes, the primary and unique keys and the foreign keys of `tasks` and `task_events` are dropped
  inside the transaction and recreated from their own definitions after the load: sorting builds
  an index several times faster than inserting into it, and a foreign key is then validated by one
  join. DDL is transactional, so a failed load leaves the tables and their indexes as they were.
- Generation runs in a separate process, one chunk ahead, while PostgreSQL ingests the previous
  one. Rows hold only strings, ints and None (uuids as hex text, times as microseconds since
  PostgreSQL's epoch, dates as days since it): cheap to make, to pickle between the processes, and
  to encode, through tuple-format codecs that this connection uses for the load only.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from math import log
from typing import Any

import asyncpg
from argon2 import PasswordHasher

DEMO_PASSWORD = "demo-password"
DEMO_EMAIL = "demo@example.com"
ADMIN_EMAIL = "admin@example.com"
TIMEZONES = ("UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney",
             "America/Los_Angeles", "Asia/Kolkata", "Pacific/Kiritimati", "Pacific/Pago_Pago")
USER_COLUMNS = ("id", "email", "password_hash", "display_name", "timezone", "daily_goal", "role",
                "created_at", "updated_at")
TASK_COLUMNS = ("id", "user_id", "title", "description", "status", "priority", "due_date",
                "created_at", "updated_at", "started_at", "completed_at", "deleted", "deleted_at")
EVENT_COLUMNS = ("task_id", "user_id", "from_status", "to_status", "at")
TITLES = ("Write report", "Review pull request", "Plan sprint", "Fix login bug", "Call supplier",
          "Update roadmap", "Prepare slides", "Answer support tickets", "Refactor billing",
          "Book travel", "Interview candidate", "Draft newsletter", "Clean backlog", "Ship release")
BULK_TABLES = ("tasks", "task_events")
# Below this many tasks (or into tables that already hold rows) indexes are kept as they are:
# rebuilding them would cost more than maintaining them.
BULK_MIN_TASKS = 100_000
# Generate in a separate process from this many tasks on; below it, starting one costs more.
PROCESS_MIN_TASKS = 100_000

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


@dataclass
class SeedResult:
    users: int
    tasks: int
    events: int
    seconds: float


@dataclass(frozen=True)
class ChunkSpec:
    """What one chunk of users is made from; picklable, for the generating process."""

    seed_key: str          # seed value and the number of users already there
    start: int             # user numbers [start, stop)
    stop: int
    tasks_per_user: int
    days: int
    now_us: int            # microseconds since PostgreSQL's epoch
    password_hash: str
    taken: frozenset[str]  # lower-case emails already in the database


Row = tuple[Any, ...]
Chunk = tuple[list[Row], list[Row], list[Row]]


def to_pg_us(moment: datetime) -> int:
    """Microseconds since 2000-01-01 UTC, the binary form of a PostgreSQL timestamptz."""
    delta = moment - PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


def _uuid_hex(rng: random.Random) -> str:
    """A random version-4 uuid as 32 hex digits (asyncpg encodes text uuids in C)."""
    return f"{(rng.getrandbits(128) & _UUID_CLEAR) | _UUID_SET:032x}"


def _tasks_for_user(rng: random.Random, user_id: str, count: int, days: int, now_us: int,
                    tasks: list[Row], events: list[Row]) -> None:
    """Append one user's tasks, and each task's status-change events, spread over the last `days`
    days, to `tasks` and `events`. Times are microseconds since PostgreSQL's epoch.

    The hot loop of a large seed (2M tasks): names are bound locally and `expovariate` is inlined
    (the same formula, so the same numbers)."""
    rand = rng.random
    bits = rng.getrandbits
    add_task = tasks.append
    add_event = events.append
    span = days * US_PER_DAY
    n_titles = len(TITLES)
    for _ in range(count):
        task_id = f"{(bits(128) & _UUID_CLEAR) | _UUID_SET:032x}"
        created = now_us - int(rand() * span)
        roll = rand()
        priority = "low" if roll < 0.3 else ("medium" if roll < 0.8 else "high")
        due = created // US_PER_DAY + int(rand() * 16) - 1 if rand() < 0.7 else None
        lead = int((0.25 - log(1.0 - rand()) * 40) * US_PER_HOUR)  # expovariate(1 / 40) hours
        roll = rand()
        status = "done" if roll < 0.65 else ("in_progress" if roll < 0.8 else "todo")
        completed = created + lead if status == "done" else None
        if completed is not None and completed > now_us:
            status, completed = "in_progress", None
        started = None
        add_event((task_id, user_id, None, "todo", created))
        if status != "todo":
            started = created + int(((completed or now_us) - created) * rand() * 0.6)
            add_event((task_id, user_id, "todo", "in_progress", started))
        if completed is not None:
            assert started is not None
            if rand() < 0.05:  # done once, reopened, done again
                first = started + (completed - started) // 2
                add_event((task_id, user_id, "in_progress", "done", first))
                add_event((task_id, user_id, "done", "todo", first + (completed - first) // 5))
                add_event((task_id, user_id, "todo", "in_progress",
                           first + (completed - first) * 2 // 5))
            add_event((task_id, user_id, "in_progress", "done", completed))
        last = completed or started or created
        deleted_at = last + 300 * US_PER_SECOND if rand() < 0.03 else None
        add_task((task_id, user_id, TITLES[int(rand() * n_titles)], "", status, priority, due,
                  created, deleted_at or last, started, completed, deleted_at is not None,
                  deleted_at))


def generate_chunk(spec: ChunkSpec) -> Chunk:
    """The users, tasks and events of users `spec.start` to `spec.stop` (the first two are the
    demo user and the admin). Each user's rows come from a generator seeded by its number."""
    users: list[Row] = []
    tasks: list[Row] = []
    events: list[Row] = []
    user_created = spec.now_us - (spec.days + 1) * US_PER_DAY
    for i in range(spec.start, spec.stop):
        rng = random.Random(f"{spec.seed_key}:{i}")
        user_id = _uuid_hex(rng)
        if i == 0:
            email, name, role, tz = DEMO_EMAIL, "Demo User", "user", "Europe/Berlin"
        elif i == 1:
            email, name, role, tz = ADMIN_EMAIL, "Admin", "admin", "UTC"
        else:
            email, name, role = f"user{i}@example.com", f"User {i}", "user"
            tz = TIMEZONES[i % len(TIMEZONES)]
        if email in spec.taken:
            tag = spec.seed_key.replace(":", ".")
            email = f"user{i}.{tag}.{rng.getrandbits(32):08x}@example.com"
        users.append((user_id, email, spec.password_hash, name, tz, rng.choice((3, 5, 8)), role,
                      user_created, user_created))
        _tasks_for_user(rng, user_id, spec.tasks_per_user, spec.days, spec.now_us, tasks, events)
    return users, tasks, events


def chunk_specs(*, users: int, days: int, tasks_per_user: int, seed_key: str, now_us: int,
                password_hash: str, taken: frozenset[str], chunk_users: int
                ) -> Iterator[ChunkSpec]:
    for start in range(0, users, chunk_users):
        yield ChunkSpec(seed_key, start, min(users, start + chunk_users), tasks_per_user, days,
                        now_us, password_hash, taken)


def _one(value: Any) -> tuple[Any]:
    return (value,)


def _first(value: tuple[Any, ...]) -> Any:
    return value[0]


@asynccontextmanager
async def _raw_time_codecs(conn: asyncpg.Connection) -> Any:
    """Let this connection take timestamptz as int microseconds and dates as int days since
    PostgreSQL's epoch (the binary wire format), and give it back its usual codecs afterwards."""
    for kind in ("timestamptz", "date"):
        await conn.set_type_codec(kind, schema="pg_catalog", encoder=_one, decoder=_first,
                                  format="tuple")
    try:
        yield
    finally:
        for kind in ("timestamptz", "date"):
            with suppress(asyncpg.InterfaceError):  # a closed connection keeps nothing anyway
                await conn.reset_type_codec(kind, schema="pg_catalog")


@dataclass
class _Schema:
    """The keys, indexes and foreign keys of the bulk tables, as SQL that recreates them."""

    drop: list[str]
    create: list[str]


async def _bulk_schema(conn: asyncpg.Connection) -> _Schema:
    """What to drop before a bulk load into `BULK_TABLES` and what recreates it afterwards:
    foreign keys from or to those tables, their primary and unique keys, their other indexes.
    Check constraints stay (they cost little per row). Read from the catalog, so that indexes
    added by later migrations are rebuilt under the same names and definitions."""
    tables = [f"public.{t}" for t in BULK_TABLES]
    fks = await conn.fetch("""
        select conrelid::regclass::text as tbl, conname, pg_get_constraintdef(oid) as def
        from pg_constraint
        where contype = 'f' and (conrelid = any($1::regclass[]) or confrelid = any($1::regclass[]))
        order by conrelid::regclass::text, conname""", tables)
    keys = await conn.fetch("""
        select conrelid::regclass::text as tbl, conname, pg_get_constraintdef(oid) as def
        from pg_constraint
        where contype in ('p', 'u') and conrelid = any($1::regclass[])
        order by conrelid::regclass::text, contype, conname""", tables)
    indexes = await conn.fetch("""
        select i.indexrelid::regclass::text as name, pg_get_indexdef(i.indexrelid) as def
        from pg_index i
        where i.indrelid = any($1::regclass[])
          and not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid
                          and c.conrelid = i.indrelid)
        order by 1""", tables)
    drop = [f'alter table {r["tbl"]} drop constraint "{r["conname"]}"' for r in fks]
    drop += [f'alter table {r["tbl"]} drop constraint "{r["conname"]}"' for r in keys]
    drop += [f"drop index {r['name']}" for r in indexes]
    create = [f'alter table {r["tbl"]} add constraint "{r["conname"]}" {r["def"]}' for r in keys]
    create += [r["def"] for r in indexes]
    create += [f'alter table {r["tbl"]} add constraint "{r["conname"]}" {r["def"]}' for r in fks]
    return _Schema(drop, create)


def _executor(total_tasks: int, in_process: bool | None) -> Executor | None:
    if in_process or (in_process is None and total_tasks < PROCESS_MIN_TASKS):
        return None
    # fork where there is one: the child only runs `generate_chunk` (never the parent's event loop
    # or sockets), and unlike spawn it does not re-import the caller's `__main__`.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context(method))


async def seed(conn: asyncpg.Connection, *, users: int, days: int, tasks_per_user: int = 200,
               seed_value: int = 42, chunk_users: int = 500, bulk: bool | None = None,
               in_process: bool | None = None) -> SeedResult:
    """Insert `users` users (the first two are the demo user and the admin) with their tasks.

    `bulk` forces bulk mode on or off (by default: on for a large load into empty task tables);
    `in_process` keeps generation in this process (by default: a separate one for large loads).
    """
    started_at = time.perf_counter()
    now_us = to_pg_us(datetime.now(UTC))
    password_hash = PasswordHasher().hash(DEMO_PASSWORD)  # one hash: every demo user shares it
    total = users * tasks_per_user
    n_tasks = n_events = 0
    executor = _executor(total, in_process)
    loop = asyncio.get_running_loop()
    try:
        async with _raw_time_codecs(conn), conn.transaction():
            taken = frozenset(r["e"] for r in await conn.fetch(
                "select lower(email) as e from users"))
            if bulk is None:
                bulk = total >= BULK_MIN_TASKS and not await conn.fetchval(
                    "select exists (select 1 from tasks) or exists (select 1 from task_events)")
            schema = _Schema([], [])
            if bulk:
                schema = await _bulk_schema(conn)
                # Index builds and foreign-key checks sort and hash in memory (this transaction
                # only): with the defaults, validating 5M event rows spills to disk in batches.
                await conn.execute("set local maintenance_work_mem = '512MB'; "
                                   "set local work_mem = '256MB'")
                for statement in schema.drop:
                    await conn.execute(statement)
            # Same arguments on the same database give the same rows; seeding again adds new ones.
            specs = chunk_specs(users=users, days=days, tasks_per_user=tasks_per_user,
                                seed_key=f"{seed_value}:{len(taken)}", now_us=now_us,
                                password_hash=password_hash, taken=taken, chunk_users=chunk_users)
            pending: list[asyncio.Future[Chunk]] = []

            def submit() -> None:
                spec = next(specs, None)
                if spec is not None and executor is not None:
                    pending.append(asyncio.wrap_future(executor.submit(generate_chunk, spec)))
                elif spec is not None:
                    pending.append(loop.create_future())
                    pending[-1].set_result(generate_chunk(spec))

            submit()
            while pending:
                submit()  # the next chunk is generated while this one is written
                user_rows, task_rows, event_rows = await pending.pop(0)
                await conn.copy_records_to_table("users", records=user_rows,
                                                 columns=USER_COLUMNS)
                await conn.copy_records_to_table("tasks", records=task_rows,
                                                 columns=TASK_COLUMNS)
                await conn.copy_records_to_table("task_events", records=event_rows,
                                                 columns=EVENT_COLUMNS)
                n_tasks += len(task_rows)
                n_events += len(event_rows)
            for statement in schema.create:
                await conn.execute(statement)
    finally:
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
    # Fresh statistics, and a visibility map so that the covering indexes give index-only scans.
    for table in ("users", "tasks", "task_events"):
        await conn.execute(f"vacuum (analyze) {table}")
    return SeedResult(users, n_tasks, n_events, time.perf_counter() - started_at)
