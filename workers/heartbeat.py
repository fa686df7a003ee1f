"""The running job's heartbeat: how a job of a worker that died is run again within seconds.

arq claims a job it starts with the key `arq:in-progress:<job id>`, set to expire after the job
timeout + 10 s (`JOB_TIMEOUT` + 10, about 10 minutes), and deletes it when the job ends. Every
worker skips a queued job while that key exists. A worker killed mid-job (`kill -9`, the OOM
killer, a lost host) never deletes it, so its job, still in the queue, would wait out those ten
minutes before another worker may take it.

While a job runs, `job_heartbeat` re-sets the claim's expiry to `CLAIM_TTL_S` every
`HEARTBEAT_INTERVAL_S`, starting at once (which also replaces arq's ten minutes). A live worker
keeps its claim however long the job takes (up to `JOB_TIMEOUT`, when arq cancels it); a dead one
stops renewing, and its job is free for any worker (a restarted one included) at most
`CLAIM_TTL_S` later. arq then runs it as its next try (`job_try` + 1, within `MAX_TRIES`), and the
jobs are idempotent and resume where they can (workers/jobs.py).

The heartbeat only ever shortens or extends an existing key (`PEXPIRE`, a no-op on a missing key)
and stops before the job's coroutine returns, so it can neither create a claim nor outlive the
job's; arq's own bookkeeping at the end of the job (deleting the key, or keeping a cron job's for
60 s) is untouched. A failed renewal (Redis unreachable) is logged and retried at the next beat;
should the claim lapse meanwhile (Redis or the event loop stuck for longer than the margin),
another worker may start the same job while this one still runs it: wasted work, not wrong rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from arq.constants import in_progress_key_prefix
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CLAIM_TTL_S = 15.0          # a dead worker's job is free again at most this long after it died
HEARTBEAT_INTERVAL_S = 5.0  # renewals per claim: three, so one slow or lost renewal is harmless


async def _beat(redis: Any, job_id: str, ttl_s: float, interval_s: float) -> None:
    key = in_progress_key_prefix + job_id
    ttl_ms = int(ttl_s * 1000)
    lapsed = False
    while True:
        try:
            renewed = await redis.pexpire(key, ttl_ms)
        except (RedisError, OSError) as exc:
            log.warning("job %s: claim not renewed: %s: %s", job_id, type(exc).__name__, exc)
        else:
            if not renewed and not lapsed:
                lapsed = True  # said once: from now on another worker may run it too
                log.warning("job %s: its claim had lapsed; another worker may run it as well",
                            job_id)
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def job_heartbeat(ctx: dict[str, Any], *, ttl_s: float = CLAIM_TTL_S,
                        interval_s: float = HEARTBEAT_INTERVAL_S) -> AsyncIterator[None]:
    """Keep the running job's claim alive for the duration of the `async with` block.

    Needs arq's `ctx["redis"]` and `ctx["job_id"]`; without them (a job called directly) it does
    nothing.
    """
    redis, job_id = ctx.get("redis"), ctx.get("job_id")
    if redis is None or not job_id:
        yield
        return
    beat = asyncio.create_task(_beat(redis, str(job_id), ttl_s, interval_s),
                               name=f"heartbeat:{job_id}")
    try:
        yield
    finally:
        beat.cancel()
        # Wait for it to stop, so that no renewal can follow arq's own end-of-job writes; `wait`
        # neither raises the task's CancelledError nor swallows a cancellation of this one.
        await asyncio.wait({beat})
