"""`python -m gateway jobs ...`, run as a real subprocess against the test Redis and PostgreSQL.

The subprocesses are started with asyncio so that an in-process arq worker keeps running while a
command waits (an abort of a running job needs the worker to act on it).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus

from gateway.ops.settings import Settings
from tests.factories import UserFactory
from tests.test_workers import arq, run_burst, wait_for, worker_class

__all__ = ["arq"]  # the fixture, shared with tests/test_workers.py

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Done:
    code: int
    out: str
    err: str


JobsCli = Callable[..., Awaitable[Done]]


@pytest.fixture
def jobs_cli(database_url: str, redis_url: str) -> JobsCli:
    """Run `python -m gateway jobs <args>` with the test servers' URLs."""
    async def run(*args: str, redis: str | None = None) -> Done:
        env = {**os.environ, "APP_ENV": "test", "DATABASE_URL": database_url,
               "REDIS_URL": redis or redis_url, "LOG_LEVEL": "WARNING"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "jobs", *args, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return Done(proc.returncode, out.decode().strip(), err.decode().strip())

    return run


async def test_enqueue_aggregate_then_status_and_list(
        jobs_cli: JobsCli, pool: asyncpg.Pool, arq: ArqRedis, users: UserFactory,
        settings: Settings) -> None:
    user = await users.create(timezone="Asia/Tokyo")
    await users.task(user)
    done = await jobs_cli("enqueue", "aggregate", "--from", "2026-10-01", "--to", "2026-10-31",
                          "--user", str(user.id))
    assert done.code == 0, done
    assert done.out.startswith("enqueued aggregate 2026-10-01..2026-10-31 for 1 user(s): job ")
    job_id = done.out.rsplit(" ", 1)[1]

    queued = await jobs_cli("status", job_id)
    assert queued.code == 0
    assert queued.out.startswith(
        f"{job_id}: queued aggregate(2026-10-01, 2026-10-31, [{user.id}]) try 1, enqueued ")
    listed = await jobs_cli("list")
    assert listed.code == 0 and listed.out.startswith(f"{job_id}: queued aggregate(")

    await run_burst(worker_class(settings))

    finished = await jobs_cli("status", job_id)
    assert finished.code == 0, finished
    assert finished.out.startswith(f"{job_id}: succeeded aggregate(2026-10-01, 2026-10-31, "
                                   f"[{user.id}]) try 1, finished ")
    assert "'rows': " in finished.out and "'users': 1" in finished.out
    listed = await jobs_cli("list")
    assert listed.code == 0 and listed.out.startswith(f"{job_id}: succeeded aggregate(")


async def test_enqueue_warm_cache_and_abort_it_before_it_runs(
        jobs_cli: JobsCli, arq: ArqRedis) -> None:
    done = await jobs_cli("enqueue", "warm-cache")
    assert done.code == 0 and done.out.startswith("enqueued warm-cache: job ")
    job_id = done.out.rsplit(" ", 1)[1]
    assert await Job(job_id, arq).status() == JobStatus.queued

    aborted = await jobs_cli("abort", job_id)
    assert (aborted.code, aborted.out) == (0, f"{job_id}: removed from the queue before it started")
    assert await Job(job_id, arq).status() == JobStatus.not_found
    gone = await jobs_cli("status", job_id)
    assert gone.code == 1 and "not found" in gone.out
    again = await jobs_cli("abort", job_id)
    assert (again.code, again.out) == (1, f"{job_id}: cannot abort, job is not found")
    listed = await jobs_cli("list")
    assert (listed.code, listed.out) == (0, "no queued jobs and no recent results")


async def test_enqueue_aggregate_for_several_users(jobs_cli: JobsCli, arq: ArqRedis) -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    done = await jobs_cli("enqueue", "aggregate", "--from", "2026-10-01", "--to", "2026-10-01",
                          "--user", a, b, "--user", c, "--user", a)
    assert done.code == 0 and "for 3 user(s)" in done.out, done
    [job] = await arq.queued_jobs()
    assert job.args == (date(2026, 10, 1), date(2026, 10, 1), [uuid.UUID(x) for x in (a, b, c)])


async def test_abort_a_running_job(jobs_cli: JobsCli, pool: asyncpg.Pool, arq: ArqRedis,
                                   users: UserFactory, settings: Settings) -> None:
    await users.create()
    done = await jobs_cli("enqueue", "aggregate", "--from", "2026-10-01", "--to", "2026-10-02")
    assert done.code == 0, done
    job_id = done.out.rsplit(" ", 1)[1]
    async with pool.acquire() as locker:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("lock table tasks in access exclusive mode")  # the job will wait
        worker = asyncio.create_task(run_burst(worker_class(settings, job_timeout=120)))

        async def running() -> bool:
            return await Job(job_id, arq).status() == JobStatus.in_progress

        await wait_for(running, "the job to start")
        aborted = await jobs_cli("abort", job_id, "--wait", "60")
        await tx.rollback()
    finished = await worker

    assert (aborted.code, aborted.out) == (0, f"{job_id}: aborted while running")
    assert finished.jobs_failed == 1
    status = await jobs_cli("status", job_id)
    assert status.code == 1 and status.out.startswith(f"{job_id}: failed aggregate(")
    assert "CancelledError" in status.out


@pytest.mark.parametrize(("args", "message"), [
    (("enqueue", "aggregate", "--from", "2026-11-03", "--to", "2026-11-01"),
     "--from 2026-11-03 is after --to 2026-11-01"),
    (("enqueue", "aggregate", "--from", "2026-13-01", "--to", "2026-11-01"),
     "expected a date YYYY-MM-DD, got '2026-13-01'"),
    (("enqueue", "aggregate", "--from", "2026-11-01", "--to", "2026-11-01", "--user", "bob"),
     "expected a user id (UUID), got 'bob'"),
    (("enqueue", "aggregate", "--to", "2026-11-01"), "the following arguments are required"),
    (("enqueue", "nightly"), "invalid choice: 'nightly'"),
])
async def test_bad_arguments_exit_2_with_a_message(jobs_cli: JobsCli, args: tuple[str, ...],
                                                   message: str) -> None:
    done = await jobs_cli(*args)
    assert done.code == 2 and message in done.err


async def test_redis_down_is_one_line_and_exit_1(jobs_cli: JobsCli) -> None:
    done = await jobs_cli("list", redis="redis://127.0.0.1:1/0")
    assert done.code == 1 and done.out.startswith("cannot reach Redis at 127.0.0.1:1")
    assert "Traceback" not in done.err
