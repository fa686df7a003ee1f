"""`arq workers.WorkerSettings` as operators run it: a real worker process, and `arq --check`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncpg
from arq.connections import ArqRedis

from tests.factories import UserFactory
from tests.test_workers import arq, wait_for

__all__ = ["arq"]  # the fixture, shared with tests/test_workers.py

ROOT = Path(__file__).resolve().parent.parent
HEALTH_KEY = "arq:queue:health-check"


async def arq_command(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "arq", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_worker_process_runs_jobs_and_passes_its_health_check(
        database_url: str, redis_url: str, pool: asyncpg.Pool, arq: ArqRedis,
        users: UserFactory) -> None:
    env = {**os.environ, "APP_ENV": "test", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "ENABLE_DAILY_AGGREGATION": "false", "ENABLE_CACHE_WARMING": "false"}
    env.pop("PROMETHEUS_PORT", None)
    assert (await arq_command(env, "--check", "workers.WorkerSettings"))[0] == 1  # none running

    user = await users.create()
    await users.task(user)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "arq", "workers.WorkerSettings", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async def healthy() -> bool:
            return bool(await arq.exists(HEALTH_KEY))

        await wait_for(healthy, "the worker's first heartbeat", attempts=1200)
        code, out = await arq_command(env, "--check", "workers.WorkerSettings")
        assert code == 0, out

        job = await arq.enqueue_job("aggregate", None, None, [user.id])
        assert job is not None
        result = await job.result(timeout=60, poll_delay=0.1)
        assert result["users"] == 1 and result["views_refreshed"] == 4
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGINT)
        log, _ = await asyncio.wait_for(worker.communicate(), 60)
    assert worker.returncode == 0, log.decode()
    assert b'"job": "aggregate", "status": "success"' in log
    # A stopped worker removes its heartbeat, so the check fails again.
    assert (await arq_command(env, "--check", "workers.WorkerSettings"))[0] == 1
