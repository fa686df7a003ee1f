"""The arq jobs, run by a real arq worker (burst mode) against the test PostgreSQL and Redis.

Expected figures come from `expected_day`, a plain-Python reading of docs/analytics.md
("One day D") over the raw rows, independent of the SQL under test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from arq.connections import ArqRedis, create_pool
from arq.jobs import Job
from arq.worker import Worker, create_worker
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from domain import changes as events
from domain.changes import (
    NIGHTLY_CRON,
    REPAIR_JOB,
    affected_days,
    enqueue_rebuild,
    enqueue_repair,
    mark_days_stale,
    repair_job_id,
)
from gateway.data.resources import Resources, arq_redis_settings
from gateway.ops.settings import Settings
from tests.factories import User, UserFactory
from workers.metrics import MAX_TRIES, backoff_seconds
from workers.settings import build_worker_settings

TIMEZONES = ("UTC", "America/Los_Angeles", "Europe/London", "Asia/Kolkata", "Pacific/Kiritimati",
             "Pacific/Pago_Pago")
# Both DST ends of 2026 (Europe 25 Oct, US 1 Nov) fall inside the backfilled range.
D_FROM, D_TO = date(2026, 10, 20), date(2026, 11, 3)
WEIGHTS = {"high": 3, "medium": 2, "low": 1}
TENTH = Decimal("0.1")


# --- the reference -------------------------------------------------------------------------------


def _r1(value: Decimal) -> Decimal:
    return value.quantize(TENTH, rounding=ROUND_HALF_UP)


def expected_day(tasks: Iterable[dict[str, Any]], tz: str, goal: int, day: date) -> tuple:
    """(created, completed, due, on time, completion rate, score) of one local day, per the spec."""
    zone = ZoneInfo(tz)

    def local(ts: datetime) -> date:
        return ts.astimezone(zone).date()

    live = [t for t in tasks if not t["deleted"]]
    created = sum(1 for t in live if local(t["created_at"]) == day)
    done = [t for t in live if t["status"] == "done" and local(t["completed_at"]) == day]
    due = [t for t in live if t["due_date"] == day]
    on_time = sum(1 for t in due if t["status"] == "done" and local(t["completed_at"]) <= day)
    points = sum((Decimal(WEIGHTS[t["priority"]])
                  * (1 if t["due_date"] is None or local(t["completed_at"]) <= t["due_date"]
                     else Decimal("0.5")) for t in done), Decimal(0))
    rate = _r1(Decimal(100 * on_time) / len(due)) if due else None
    score = min(Decimal(100), _r1(100 * points / (2 * goal)))
    return (created, len(done), len(due), on_time, rate, score)


def expected_rows(data: dict[User, list[dict[str, Any]]], days_of: Any) -> dict[tuple, tuple]:
    """Expected daily_analytics rows (days with any activity) of every user over its days."""
    rows = {}
    for user, tasks in data.items():
        for day in days_of(user):
            figures = expected_day(tasks, user.timezone, user.daily_goal, day)
            if any(figures[:3]):
                rows[(user.id, day)] = figures
    return rows


def day_range(d_from: date, d_to: date) -> list[date]:
    return [d_from + timedelta(days=i) for i in range((d_to - d_from).days + 1)]


async def rollup_rows(pool: asyncpg.Pool, user_ids: list[uuid.UUID]) -> dict[tuple, tuple]:
    rows = await pool.fetch(
        """select user_id, date, tasks_created, tasks_completed, tasks_due,
                  tasks_completed_on_time, completion_rate, productivity_score
           from daily_analytics where user_id = any($1::uuid[])""", user_ids)
    return {(r["user_id"], r["date"]): (r["tasks_created"], r["tasks_completed"], r["tasks_due"],
                                        r["tasks_completed_on_time"], r["completion_rate"],
                                        r["productivity_score"])
            for r in rows if r["tasks_created"] or r["tasks_completed"] or r["tasks_due"]}


# --- data ----------------------------------------------------------------------------------------


def random_tasks(rng: random.Random, start: datetime, end: datetime, count: int
                 ) -> list[dict[str, Any]]:
    """Tasks created between start and end at any minute (local days differ by timezone)."""
    span = int((end - start).total_seconds() // 60)
    tasks = []
    for _ in range(count):
        created = start + timedelta(minutes=rng.randrange(span))
        status = rng.choice(("todo", "in_progress", "done", "done"))
        completed = (created + timedelta(minutes=rng.randrange(4 * 24 * 60))
                     if status == "done" else None)
        due = ((created + timedelta(days=rng.randrange(-1, 5))).date()
               if rng.random() < 0.7 else None)
        deleted = rng.random() < 0.08
        tasks.append({"status": status, "priority": rng.choice(("low", "medium", "high")),
                      "due_date": due, "created_at": created, "completed_at": completed,
                      "deleted": deleted})
    return tasks


async def insert_tasks(pool: asyncpg.Pool, user: User, tasks: list[dict[str, Any]]) -> None:
    await pool.executemany(
        """insert into tasks (user_id, title, status, priority, due_date, created_at, updated_at,
                              completed_at, deleted, deleted_at)
           values ($1, 'task', $2, $3, $4, $5::timestamptz,
                   greatest($5::timestamptz, $6::timestamptz), $6::timestamptz, $7::boolean,
                   case when $7::boolean then greatest($5::timestamptz, $6::timestamptz) end)""",
        [(user.id, t["status"], t["priority"], t["due_date"], t["created_at"], t["completed_at"],
          t["deleted"]) for t in tasks])


async def users_in_every_timezone(users: UserFactory, pool: asyncpg.Pool, start: datetime,
                                  end: datetime, per_user: int = 80, seed: int = 6
                                  ) -> dict[User, list[dict[str, Any]]]:
    rng = random.Random(seed)
    data = {}
    for tz in TIMEZONES:
        user = await users.create(timezone=tz, daily_goal=rng.randint(1, 6))
        tasks = random_tasks(rng, start, end, per_user)
        await insert_tasks(pool, user, tasks)
        data[user] = tasks
    return data


# --- running the worker --------------------------------------------------------------------------


def worker_class(settings: Settings, **changes: Any) -> Any:
    """WorkerSettings for a test: no cron jobs unless asked, short back-off, no refresh delay."""
    changes = {"enable_daily_aggregation": False, "enable_cache_warming": False, **changes}
    return build_worker_settings(replace(settings, **changes), retry_base_s=0.05,
                                 refresh_delay_s=0)


async def run_burst(worker_settings: Any) -> Worker:
    """Run a real arq worker until the queue is empty, then close it (on_shutdown included)."""
    worker = create_worker(worker_settings, burst=True, handle_signals=False, poll_delay=0.05)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


@pytest.fixture
async def arq(pool: asyncpg.Pool, redis: Redis, settings: Settings) -> AsyncIterator[ArqRedis]:
    """An arq pool on the test Redis (emptied before the test, as are the tables)."""
    client = await create_pool(arq_redis_settings(settings))
    try:
        yield client
    finally:
        await client.aclose()


async def wait_for(condition: Any, what: str, attempts: int = 400) -> Any:
    """Poll an async condition until it holds (bounded, so a broken test fails, not hangs)."""
    for _ in range(attempts):
        value = await condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def runs(job: str, status: str) -> float:
    return REGISTRY.get_sample_value("analytics_job_runs_total",
                                     {"job": job, "status": status}) or 0.0


async def worker_backend_waiting_on_lock(pool: asyncpg.Pool) -> int | None:
    pid: int | None = await pool.fetchval(
        """select pid from pg_stat_activity
           where application_name = 'analytics_worker' and wait_event_type = 'Lock'
             and datname = current_database()""")
    return pid


# --- aggregation ---------------------------------------------------------------------------------


async def test_backfill_equals_the_raw_rows_in_every_timezone(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings) -> None:
    start = datetime.combine(D_FROM - timedelta(days=3), datetime.min.time(), UTC)
    end = datetime.combine(D_TO + timedelta(days=3), datetime.min.time(), UTC)
    data = await users_in_every_timezone(users, pool, start, end)
    ids = [u.id for u in data]

    job = await arq.enqueue_job("aggregate", D_FROM, D_TO, None)
    assert job is not None
    worker = await run_burst(worker_class(settings))

    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    expected = expected_rows(data, lambda _: day_range(D_FROM, D_TO))
    assert await rollup_rows(pool, ids) == expected
    result = await job.result(timeout=0)
    assert result["views_refreshed"] == 4 and result["users"] == "all"
    assert not await pool.fetchval("select exists (select 1 from daily_analytics where stale)")


async def test_backfill_twice_changes_nothing(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings) -> None:
    start = datetime.combine(D_FROM, datetime.min.time(), UTC)
    data = await users_in_every_timezone(users, pool, start, start + timedelta(days=10), 40, 7)
    snapshot = """select user_id, date, tasks_created, tasks_completed, tasks_due,
                         tasks_completed_on_time, completion_rate, productivity_score,
                         productivity_points, stale
                  from daily_analytics order by user_id, date"""
    coverage = "select user_id, covered_from, covered_through from rollup_coverage order by 1"

    await arq.enqueue_job("aggregate", D_FROM, D_TO, None)
    await run_burst(worker_class(settings))
    first = [tuple(r) for r in await pool.fetch(snapshot)]
    first_coverage = [tuple(r) for r in await pool.fetch(coverage)]
    await arq.enqueue_job("aggregate", D_FROM, D_TO, None)
    await run_burst(worker_class(settings))

    assert first and [tuple(r) for r in await pool.fetch(snapshot)] == first
    assert [tuple(r) for r in await pool.fetch(coverage)] == first_coverage
    assert len({row[0] for row in first}) == len(data)


async def test_backfill_of_listed_users_only(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings) -> None:
    start = datetime.combine(D_FROM, datetime.min.time(), UTC)
    data = await users_in_every_timezone(users, pool, start, start + timedelta(days=10), 40, 8)
    chosen, other = list(data)[:2], list(data)[2:]
    await arq.enqueue_job("aggregate", D_FROM, D_TO, [u.id for u in chosen])
    await run_burst(worker_class(settings))

    assert await rollup_rows(pool, [u.id for u in other]) == {}
    assert await rollup_rows(pool, [u.id for u in chosen]) == expected_rows(
        {u: data[u] for u in chosen}, lambda _: day_range(D_FROM, D_TO))


async def test_nightly_run_rolls_up_each_users_own_yesterday(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings) -> None:
    now = await pool.fetchval("select now()")
    data = await users_in_every_timezone(users, pool, now - timedelta(days=4), now, 60, 9)

    def yesterday(user: User) -> list[date]:
        return [now.astimezone(ZoneInfo(user.timezone)).date() - timedelta(days=1)]

    # The cron job, enqueued by name as the worker's scheduler does.
    await arq.enqueue_job(NIGHTLY_CRON)
    worker = await run_burst(worker_class(settings, enable_daily_aggregation=True))
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    ids = [u.id for u in data]
    expected = expected_rows(data, yesterday)
    assert len({day for _, day in expected}) >= 2  # the timezones do not share one yesterday
    assert await rollup_rows(pool, ids) == expected

    await arq.enqueue_job(NIGHTLY_CRON)  # again: idempotent
    await run_burst(worker_class(settings, enable_daily_aggregation=True))
    assert await rollup_rows(pool, ids) == expected


# --- stale-day repair -----------------------------------------------------------------------------


async def data_version(pool: asyncpg.Pool, user_id: Any) -> int:
    return int(await pool.fetchval("select data_version from users where id = $1", user_id))


async def test_a_change_to_a_rolled_up_day_is_repaired_and_the_cache_version_bumped(
        pool: asyncpg.Pool, arq: ArqRedis, redis: Redis, users: UserFactory,
        settings: Settings) -> None:
    start = datetime.combine(D_FROM, datetime.min.time(), UTC)
    data = await users_in_every_timezone(users, pool, start, start + timedelta(days=12), 40, 10)
    user = next(u for u in data if u.timezone == "Pacific/Kiritimati")
    await arq.enqueue_job("aggregate", D_FROM, D_TO, None)
    await run_burst(worker_class(settings))
    version_before = await data_version(pool, user.id)

    # Three edits in a row, each as the task mutations do it: update, mark the days stale in the
    # same transaction, then tell the events hook after the commit.
    resources = await Resources.open(settings)
    try:
        for _ in range(3):
            async with pool.acquire() as conn, conn.transaction():
                before = await conn.fetchrow(
                    """select * from tasks where user_id = $1 and status <> 'done'
                       and not deleted and created_at < $2 order by id limit 1""",
                    user.id, start + timedelta(days=9))
                after = await conn.fetchrow(
                    """update tasks set status = 'done', completed_at = created_at + interval '1h',
                              updated_at = now() where id = $1 returning *""", before["id"])
                days = affected_days(before, after, user.timezone)
                await mark_days_stale(conn, user.id, days)
            assert days
            await events.tasks_changed(resources, user.id, days)
    finally:
        await resources.close()
    assert await pool.fetchval("select count(*) from daily_analytics where stale") >= 1
    # The burst of edits queued one repair job, under the user's id.
    assert [j.job_id for j in await arq.queued_jobs()] == [repair_job_id(user.id)]

    repairs_before = runs("repair_stale", "success")
    worker = await run_burst(worker_class(settings))

    assert runs("repair_stale", "success") == repairs_before + 1
    assert worker.jobs_failed == 0  # repair, then the view refresh it queued
    assert not await pool.fetchval("select exists (select 1 from daily_analytics where stale)")
    tasks = [dict(r) for r in await pool.fetch("select * from tasks where user_id = $1", user.id)]
    assert await rollup_rows(pool, [user.id]) == expected_rows(
        {user: tasks}, lambda _: day_range(D_FROM, D_TO))
    # three edits (each raising the version by trigger), then the repair's own bump
    assert await data_version(pool, user.id) == version_before + 4


async def test_a_duplicate_enqueue_runs_once(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings) -> None:
    user = await users.create()
    assert await enqueue_repair(arq, user.id, delay=0) is True
    assert await enqueue_repair(arq, user.id, delay=0) is False
    before = runs("repair_stale", "success")

    worker = await run_burst(worker_class(settings))

    assert worker.jobs_complete == 1
    assert runs("repair_stale", "success") == before + 1
    # No result is kept under the fixed id, so the next change can enqueue again.
    assert await enqueue_repair(arq, user.id, delay=0) is True


async def test_a_failed_repair_does_not_block_the_next_one(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings) -> None:
    user = await users.create()
    job_id = repair_job_id(user.id)
    # A repair that ran out of tries: arq keeps that failure's result under the job's id.
    await arq.enqueue_job(REPAIR_JOB, user.id, _job_id=job_id, _job_try=MAX_TRIES + 1)
    worker = await run_burst(worker_class(settings))
    assert worker.jobs_failed == 1
    assert await Job(job_id, arq).result_info() is not None

    assert await enqueue_repair(arq, user.id, delay=0) is True
    worker = await run_burst(worker_class(settings))
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)


async def test_enqueue_repair_without_redis_is_a_quiet_no_op() -> None:
    assert await enqueue_repair(None, uuid.uuid4()) is False
    down = ArqRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        assert await enqueue_repair(down, uuid.uuid4()) is False
    finally:
        await down.aclose()


# --- materialized views ---------------------------------------------------------------------------


async def test_view_refresh_never_blocks_readers(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workers.jobs")
    user = await users.create()
    for _ in range(3):
        await users.task(user)
    await pool.execute("refresh materialized view user_task_stats")
    await users.task(user)  # the view still says 3

    # A reader holds its lock on the view for the whole refresh: a plain REFRESH would wait for it
    # (and time out the job); CONCURRENTLY does not.
    async with pool.acquire() as reader, reader.transaction():
        assert await reader.fetchval(
            "select total_tasks from user_task_stats where user_id = $1", user.id) == 3
        seen: list[int] = []
        stop = asyncio.Event()

        async def keep_reading() -> None:
            while not stop.is_set():
                seen.append(await pool.fetchval(
                    "select total_tasks from user_task_stats where user_id = $1", user.id))
                await asyncio.sleep(0)

        readers = [asyncio.create_task(keep_reading()) for _ in range(4)]
        job = await arq.enqueue_job("refresh_views")
        assert job is not None
        before = runs("refresh_views", "success")
        worker = await run_burst(worker_class(settings, job_timeout=30))
        stop.set()
        await asyncio.gather(*readers)

        assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
        assert runs("refresh_views", "success") == before + 1
        assert seen and set(seen) <= {3, 4}
        assert await reader.fetchval(
            "select total_tasks from user_task_stats where user_id = $1", user.id) == 4

    [line] = [json.loads(r.getMessage()) for r in caplog.records
              if r.name == "workers.jobs" and '"refresh_views"' in r.getMessage()]
    assert line["job"] == "refresh_views" and line["status"] == "success"
    assert line["counts"] == {"views_refreshed": 4} and line["duration_s"] >= 0


async def test_views_are_not_refreshed_when_disabled(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings) -> None:
    user = await users.create()
    await users.task(user)
    job = await arq.enqueue_job("aggregate", D_FROM, D_TO, None)
    assert job is not None
    await run_burst(worker_class(settings, enable_materialized_views=False))
    assert (await job.result(timeout=0))["views_refreshed"] == 0
    assert await pool.fetchval("select count(*) from user_task_stats where user_id = $1",
                               user.id) == 0


# --- failures -------------------------------------------------------------------------------------


async def test_a_dropped_database_connection_is_retried_with_back_off(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workers.jobs")
    retries, successes = runs("refresh_views", "retry"), runs("refresh_views", "success")
    job = await arq.enqueue_job("refresh_views")
    assert job is not None
    async with pool.acquire() as locker:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("lock table tasks in access exclusive mode")
        worker_task = asyncio.create_task(run_burst(worker_class(settings, job_timeout=60)))
        # The job is now stuck behind the lock; kill its backend, as a database restart would.
        pid = await wait_for(lambda: worker_backend_waiting_on_lock(pool), "the job's query")
        assert await pool.fetchval("select pg_terminate_backend($1)", pid)

        async def retried() -> bool:
            return runs("refresh_views", "retry") > retries

        await wait_for(retried, "the retry")
        await tx.commit()
    worker = await worker_task

    assert (worker.jobs_retried, worker.jobs_complete, worker.jobs_failed) == (1, 1, 0)
    assert runs("refresh_views", "success") == successes + 1
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "workers.jobs"]
    assert [(x["job_id"], x["try"], x["status"]) for x in lines] == [
        (job.job_id, 1, "retry"), (job.job_id, 2, "success")]
    assert lines[0]["error"].startswith("ConnectionDoesNotExistError")
    assert lines[0]["error"].endswith("retrying in 0.05 s")


def test_back_off_doubles_up_to_a_cap() -> None:
    assert [backoff_seconds(n, 2.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_seconds(20, 2.0) == 300.0


async def test_a_job_is_cancelled_at_job_timeout(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings) -> None:
    await users.create()
    cancelled = runs("aggregate", "cancelled")
    job = await arq.enqueue_job("aggregate", D_FROM, D_TO, None)
    assert job is not None
    async with pool.acquire() as locker, locker.transaction():
        await locker.execute("lock table tasks in access exclusive mode")
        worker = await run_burst(worker_class(settings, job_timeout=1))
    assert worker.jobs_failed == 1
    result = await job.result_info()
    assert result is not None and not result.success
    assert isinstance(result.result, TimeoutError)
    assert runs("aggregate", "cancelled") == cancelled + 1
    # The cancelled statement did not linger on the server.
    assert await pool.fetchval(
        "select count(*) from pg_stat_activity where application_name = 'analytics_worker' "
        "and state = 'active'") == 0


# --- cache warming --------------------------------------------------------------------------------


async def test_cache_warming_covers_the_users_active_in_the_last_7_days(
        pool: asyncpg.Pool, arq: ArqRedis, redis: Redis, users: UserFactory,
        settings: Settings) -> None:
    now = await pool.fetchval("select now()")
    active, edited, idle, empty = (await users.create(timezone="Asia/Tokyo"), await users.create(),
                                   await users.create(), await users.create())
    await users.task(active)
    month_ago = now - timedelta(days=30)
    await users.task(edited, created_at=month_ago, updated_at=now - timedelta(days=2))
    await users.task(idle, created_at=month_ago, updated_at=now - timedelta(days=8))

    job = await arq.enqueue_job("warm_cache")
    assert job is not None
    worker = await run_burst(worker_class(settings))

    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    assert await job.result(timeout=0) == {"active_users": 2, "warmed": 2}
    for user, warmed in ((active, True), (edited, True), (idle, False), (empty, False)):
        keys = await redis.keys(f"analytics:{{{user.id}}}:f*")
        assert bool(keys) is warmed, user


async def test_a_backfill_cancelled_half_way_leaves_whole_batches_and_reruns_cleanly(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings) -> None:
    start = datetime.combine(D_FROM, datetime.min.time(), UTC)
    data = await users_in_every_timezone(users, pool, start, start + timedelta(days=10), 30, 11)
    first, second, *rest = sorted(data, key=lambda u: u.id)  # batches go in user id order
    expected = expected_rows(data, lambda _: day_range(D_FROM, D_TO))
    ws = worker_class(settings, job_timeout=120)
    ws.ctx["batch_size"] = 1  # one user per transaction

    job = await arq.enqueue_job("aggregate", D_FROM, D_TO, None)
    assert job is not None
    async with pool.acquire() as locker:
        tx = locker.transaction()
        await tx.start()
        # The second batch waits for this lock on its user's row, after the first committed.
        await locker.execute("select 1 from users where id = $1 for update", second.id)
        worker = asyncio.create_task(run_burst(ws))
        await wait_for(lambda: worker_backend_waiting_on_lock(pool), "the second batch")
        assert await job.abort(timeout=60, poll_delay=0.1)
        await tx.rollback()
    await worker

    def of(user: User, rows: dict[tuple, tuple]) -> dict[tuple, tuple]:
        return {key: value for key, value in rows.items() if key[0] == user.id}

    written = await rollup_rows(pool, [u.id for u in data])
    assert of(first, written) == of(first, expected) != {}
    assert all(of(user, written) == {} for user in (second, *rest))

    await arq.enqueue_job("aggregate", D_FROM, D_TO, None)
    await run_burst(worker_class(settings))
    assert await rollup_rows(pool, [u.id for u in data]) == expected


async def test_a_rebuild_aggregates_a_users_whole_history_once(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings) -> None:
    now = await pool.fetchval("select now()")
    data = await users_in_every_timezone(users, pool, now - timedelta(days=40), now, 50, 12)
    user = next(u for u in data if u.timezone == "Pacific/Pago_Pago")
    assert await enqueue_rebuild(arq, user.id) is True
    assert await enqueue_rebuild(arq, user.id) is False  # already queued
    worker = await run_burst(worker_class(settings))
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)

    yesterday = now.astimezone(ZoneInfo(user.timezone)).date() - timedelta(days=1)
    first = min(min(t["created_at"].astimezone(ZoneInfo(user.timezone)).date()
                    for t in data[user] if not t["deleted"]),
                min(t["due_date"] for t in data[user] if not t["deleted"] and t["due_date"]))
    assert await rollup_rows(pool, [u.id for u in data]) == expected_rows(
        {user: data[user]}, lambda _: day_range(first, yesterday))
    assert await enqueue_rebuild(arq, user.id) is True  # its kept result does not block


async def test_an_update_through_graphql_queues_the_repair_that_fixes_the_rollup(
        pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory, settings: Settings,
        gql: Any, token_for: Any) -> None:
    start = datetime.combine(D_FROM, datetime.min.time(), UTC)
    data = await users_in_every_timezone(users, pool, start, start + timedelta(days=12), 40, 13)
    user = next(u for u in data if u.timezone == "America/Los_Angeles")
    await arq.enqueue_job("aggregate", D_FROM, D_TO, None)
    await run_burst(worker_class(settings))
    task_id = await pool.fetchval(
        "select id from tasks where user_id = $1 and not deleted and due_date between $2 and $3 "
        "order by id limit 1", user.id, D_FROM, D_TO - timedelta(days=1))

    body = await gql("""mutation($id: ID!, $input: UpdateTaskInput!) {
                          updateTask(id: $id, input: $input) { dueDate } }""",
                     {"id": str(task_id), "input": {"dueDate": D_TO.isoformat()}},
                     token=token_for(user.id))
    assert body["data"]["updateTask"]["dueDate"] == D_TO.isoformat(), body
    assert await pool.fetchval("select count(*) from daily_analytics where stale") >= 1
    assert [j.job_id for j in await arq.queued_jobs()] == [repair_job_id(user.id)]

    await run_burst(worker_class(settings))

    assert not await pool.fetchval("select exists (select 1 from daily_analytics where stale)")
    tasks = [dict(r) for r in await pool.fetch("select * from tasks where user_id = $1", user.id)]
    assert await rollup_rows(pool, [user.id]) == expected_rows(
        {user: tasks}, lambda _: day_range(D_FROM, D_TO))
