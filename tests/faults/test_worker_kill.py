"""A worker process killed mid-backfill (`kill -9`): the next worker finishes the job by itself,
within seconds, and the rollup equals a direct recomputation.

arq claims a running job with the key `arq:in-progress:<job id>`, which it sets to expire after
`JOB_TIMEOUT` + 10 s and deletes when the job ends; a killed worker leaves it behind, and no
worker takes the job while it exists. The jobs' heartbeat (workers/heartbeat.py) keeps that claim
at `CLAIM_TTL_S` while the job runs, so the job of a dead worker is free again within seconds; the
backfill then resumes after the last batch of users that committed (workers/jobs.py).

Real processes throughout: `arq workers.WorkerSettings` as operators run it, with the default
`JOB_TIMEOUT` (600 s), so without the heartbeat the job would sit claimed for ten minutes and this
test would give up waiting after a minute.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from domain.changes import AGGREGATE_JOB
from gateway.data.db import query
from tests.factories import User, UserFactory
from tests.test_many_workers import COVERAGE, SNAPSHOT, job_runs
from tests.test_workers import (
    D_FROM,
    D_TO,
    TIMEZONES,
    arq,
    day_range,
    expected_rows,
    insert_tasks,
    random_tasks,
    rollup_rows,
    wait_for,
    worker_backend_waiting_on_lock,
)
from workers.aggregation import aggregate_range
from workers.heartbeat import job_heartbeat
from workers.jobs import BATCH_SIZE

__all__ = ["arq"]  # the fixture, shared with tests/test_workers.py

ROOT = Path(__file__).resolve().parents[2]
JOB_WAIT_S = 60  # how long the second worker may take to finish the job: bounded, never timed
EXTRA_USERS = 60  # users beyond one batch, so that the backfill commits in two transactions


def worker_env(database_url: str, redis_url: str) -> dict[str, str]:
    """A worker process's environment, as in tests/test_many_workers.py; `JOB_TIMEOUT` is pinned
    to its default so that arq's own claim of a job lasts its usual ten minutes."""
    env = {**os.environ, "APP_ENV": "test", "DATABASE_URL": database_url,
           "REDIS_URL": redis_url, "ENABLE_DAILY_AGGREGATION": "false",
           "ENABLE_CACHE_WARMING": "false", "PROMETHEUS_ENABLED": "false",
           "LOG_LEVEL": "WARNING", "JOB_TIMEOUT": "600"}
    env.pop("PROMETHEUS_PORT", None)
    return env


@asynccontextmanager
async def worker_processes(env: dict[str, str], log_dir: Path
                           ) -> AsyncIterator[Callable[[str], Any]]:
    """`start(name)` runs `arq workers.WorkerSettings` with its output in `log_dir/name.log`.
    Every process started is gone when the block ends, whatever happened in it: stopped with
    SIGINT if it still runs, killed if it has not stopped 20 s later."""
    started: list[tuple[asyncio.subprocess.Process, BinaryIO]] = []

    async def start(name: str) -> asyncio.subprocess.Process:
        log = (log_dir / f"{name}.log").open("wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "arq", "workers.WorkerSettings", cwd=ROOT, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT)
        except BaseException:
            log.close()
            raise
        started.append((proc, log))
        return proc

    try:
        yield start
    finally:
        for proc, _ in started:
            if proc.returncode is None:
                with suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
        for proc, log in started:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                with suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            finally:
                log.close()


async def seed(users: UserFactory, pool: asyncpg.Pool, count: int
               ) -> dict[User, list[dict[str, Any]]]:
    """`count` users in the six test timezones, each with a few tasks around the backfill."""
    rng = random.Random(31)
    start = datetime.combine(D_FROM - timedelta(days=2), datetime.min.time(), UTC)
    data = {}
    for n in range(count):
        user = await users.create(timezone=TIMEZONES[n % len(TIMEZONES)],
                                  daily_goal=rng.randint(1, 6))
        tasks = random_tasks(rng, start, start + timedelta(days=18), 4)
        await insert_tasks(pool, user, tasks)
        data[user] = tasks
    return data


async def test_a_backfill_whose_worker_is_killed_is_finished_by_the_next_worker(
        database_url: str, redis_url: str, pool: asyncpg.Pool, arq: ArqRedis,
        users: UserFactory, tmp_path: Path) -> None:
    data = await seed(users, pool, BATCH_SIZE + EXTRA_USERS)
    ids = sorted(user.id for user in data)
    first_batch, second_batch = ids[:BATCH_SIZE], ids[BATCH_SIZE:]

    async with worker_processes(worker_env(database_url, redis_url), tmp_path) as start:
        async with pool.acquire() as locker:
            tx = locker.transaction()
            await tx.start()
            # The lock a task mutation takes on its user (mark_days_stale): the backfill's second
            # batch waits for it after the first batch committed. The job is now mid-way.
            await locker.execute(query("rollup_lock_user"), second_batch[0])
            first = await start("first")
            job = await arq.enqueue_job(AGGREGATE_JOB, D_FROM, D_TO, None)
            assert job is not None
            await wait_for(lambda: worker_backend_waiting_on_lock(pool),
                           "the backfill's second batch", attempts=1200)
            done = {r["user_id"] for r in await pool.fetch(
                "select distinct user_id from daily_analytics")}
            assert done and done <= set(first_batch)  # some rows, none of the second batch

            first.kill()  # SIGKILL: no cancellation, no clean-up, the claim stays behind
            await first.wait()
            await tx.rollback()
        assert await arq.exists(in_progress_key_prefix + job.job_id)

        # No one re-enqueues anything: a new worker finds the job and finishes it.
        await start("second")
        try:
            result = await job.result(timeout=JOB_WAIT_S, poll_delay=0.2)
        except TimeoutError:
            pytest.fail(f"the job was not finished within {JOB_WAIT_S} s of the kill: "
                        f"{(await job.status()).value}, claim expires in "
                        f"{await arq.pttl(in_progress_key_prefix + job.job_id)} ms")
        info = await job.result_info()
        assert info is not None and info.success and info.job_try == 2
        # The second try skipped the batch the first committed.
        assert result["users"] == "all" and result["resumed_after"] == str(first_batch[-1])

    first_runs = job_runs((tmp_path / "first.log").read_bytes())
    second_runs = [(r["job"], r["status"], r["try"])
                   for r in job_runs((tmp_path / "second.log").read_bytes())]
    assert first_runs == []  # killed before it could say anything
    assert second_runs == [(AGGREGATE_JOB, "success", 2)]

    # The rollup equals the plain-Python reading of the spec over the raw rows...
    assert await rollup_rows(pool, ids) == expected_rows(data, lambda _: day_range(D_FROM, D_TO))
    # ... and, row for row and with its coverage, a direct recomputation in one go.
    written = [tuple(r) for r in await pool.fetch(SNAPSHOT)]
    coverage = [tuple(r) for r in await pool.fetch(COVERAGE)]
    assert len(coverage) == len(ids)
    await pool.execute("truncate daily_analytics, rollup_coverage")
    await aggregate_range(pool, D_FROM, D_TO)
    assert [tuple(r) for r in await pool.fetch(SNAPSHOT)] == written
    assert [tuple(r) for r in await pool.fetch(COVERAGE)] == coverage


async def test_the_heartbeat_keeps_a_live_jobs_claim_and_stops_with_the_job(
        arq: ArqRedis) -> None:
    """The same mechanism in one process, on a short scale: the claim outlives its TTL while the
    job runs, and expires one TTL after the job ended (arq itself deletes it then, anyway)."""
    key = in_progress_key_prefix + "a-job"
    await arq.psetex(key, 610_000, b"1")  # as arq claims a job: JOB_TIMEOUT + 10 s
    ctx = {"redis": arq, "job_id": "a-job"}
    async with job_heartbeat(ctx, ttl_s=1.0, interval_s=0.2):
        async def renewed() -> bool:
            return 0 < await arq.pttl(key) <= 1000

        await wait_for(renewed, "the first renewal")
        await asyncio.sleep(2.5)  # longer than the TTL: only the renewals keep the key
        assert await arq.exists(key)

    async def gone() -> bool:
        return not await arq.exists(key)

    await wait_for(gone, "the claim to expire after the job", attempts=100)
    # A missing claim is never created again by a heartbeat.
    async with job_heartbeat(ctx, ttl_s=1.0, interval_s=0.1):
        await asyncio.sleep(0.3)
    assert not await arq.exists(key)
