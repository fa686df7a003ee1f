"""Two arq worker processes on one queue: every aggregation job runs exactly once, and the rollup
they write together equals the one a single worker writes.

arq hands a job to one worker by an atomic claim in Redis (`arq:in-progress:<id>`, `SET NX`), and
enqueueing under a deterministic `_job_id` refuses a second copy; the aggregation itself is
idempotent (`INSERT ... ON CONFLICT DO UPDATE`, one transaction per batch). This test shows the
three together on real processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from arq.connections import ArqRedis

from gateway.ops.settings import Settings
from tests.factories import UserFactory
from tests.test_workers import (
    D_FROM,
    D_TO,
    arq,
    run_burst,
    users_in_every_timezone,
    wait_for,
    worker_class,
)

__all__ = ["arq"]  # the fixture, shared with tests/test_workers.py

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = """select user_id, date, tasks_created, tasks_completed, tasks_due,
                     tasks_completed_on_time, completion_rate, productivity_score,
                     productivity_points, stale
              from daily_analytics order by user_id, date"""
COVERAGE = "select user_id, covered_from, covered_through from rollup_coverage order by 1"


async def enqueue_per_user(arq: ArqRedis, prefix: str, user_ids: list[Any]) -> list[Any]:
    """One aggregate job per user under a deterministic id; a second enqueue of an id is refused."""
    jobs = []
    for user_id in user_ids:
        job = await arq.enqueue_job("aggregate", D_FROM, D_TO, [user_id],
                                    _job_id=f"{prefix}:{user_id}")
        assert job is not None
        assert await arq.enqueue_job("aggregate", D_FROM, D_TO, [user_id],
                                     _job_id=f"{prefix}:{user_id}") is None
        jobs.append(job)
    return jobs


def job_runs(log: bytes) -> list[dict[str, Any]]:
    """The job-run JSON lines a worker process wrote to stdout."""
    runs = []
    for line in log.decode(errors="replace").splitlines():
        start = line.find('{"event": "job_run"')
        if start >= 0:
            runs.append(json.loads(line[start:]))
    return runs


async def test_two_worker_processes_run_each_job_once_and_match_one_worker(
        database_url: str, redis_url: str, pool: asyncpg.Pool, arq: ArqRedis,
        users: UserFactory, settings: Settings) -> None:
    start = datetime.combine(D_FROM - timedelta(days=2), datetime.min.time(), UTC)
    ids = []
    for seed in range(4):  # 24 users, one job each: enough for both workers to take some
        data = await users_in_every_timezone(users, pool, start, start + timedelta(days=18),
                                             20, seed)
        ids += [user.id for user in data]

    # The reference: one worker, in this process.
    await enqueue_per_user(arq, "single", ids)
    single = await run_burst(worker_class(settings))
    assert (single.jobs_complete, single.jobs_failed) == (len(ids), 0)
    reference = [tuple(r) for r in await pool.fetch(SNAPSHOT)]
    reference_coverage = [tuple(r) for r in await pool.fetch(COVERAGE)]
    assert len({row[0] for row in reference}) == len(ids)
    await pool.execute("truncate daily_analytics, rollup_coverage")

    # Two worker processes, started before the jobs exist, so both poll the same queue.
    env = {**os.environ, "APP_ENV": "test", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "ENABLE_DAILY_AGGREGATION": "false", "ENABLE_CACHE_WARMING": "false",
           "PROMETHEUS_ENABLED": "false", "LOG_LEVEL": "WARNING",
           "DATABASE_POOL_SIZE": "1"}  # one connection per worker at start-up: see both_up
    env.pop("PROMETHEUS_PORT", None)
    workers = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "arq", "workers.WorkerSettings", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT) for _ in range(2)]
    logs: list[bytes] = []
    try:
        async def both_up() -> bool:  # each worker opens its pool (1 connection) before it polls
            rows = await pool.fetch("select pid from pg_stat_activity "
                                    "where application_name = 'analytics_worker' "
                                    "and datname = current_database()")
            return len(rows) >= 2

        await wait_for(both_up, "two worker processes connected", attempts=600)
        jobs = await enqueue_per_user(arq, "pair", ids)
        for job in jobs:
            result = await job.result(timeout=60, poll_delay=0.05)
            assert result["users"] == 1
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGINT)
        for worker in workers:
            out, _ = await asyncio.wait_for(worker.communicate(), 60)
            logs.append(out)
    assert all(worker.returncode == 0 for worker in workers), logs

    runs = [job_runs(log) for log in logs]
    ran = Counter(run["job_id"] for worker_runs in runs for run in worker_runs
                  if run["job"] == "aggregate")
    assert ran == Counter({f"pair:{user_id}": 1 for user_id in ids})  # each exactly once
    assert all(run["status"] == "success" and run["try"] == 1
               for worker_runs in runs for run in worker_runs)
    print(f"jobs per worker: {[len(worker_runs) for worker_runs in runs]}")

    assert [tuple(r) for r in await pool.fetch(SNAPSHOT)] == reference
    assert [tuple(r) for r in await pool.fetch(COVERAGE)] == reference_coverage
