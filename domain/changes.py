"""What a change to a user's tasks or profile means, for the API and the workers alike.

- **Which days it touches** (`affected_days`): the local created, completed and due days of the
  task before and after the change; and **marking them stale** (`mark_days_stale`) in the
  change's own transaction, so that readers compute those days live until they are repaired.
- **What follows the commit** (`tasks_changed`): the replica's read-your-writes record, the
  live dashboards' change message (gateway/live/fanout.py) and the repair (or rebuild) job. The
  cache needs nothing: the transaction itself raised the user's `data_version` (a trigger),
  which keys every cached figure and response (docs/cache.md). Each step is best effort: a
  Redis outage must not fail a change that PostgreSQL has committed.
- **The job queue's names and ids** (`AGGREGATE_JOB`, `repair_job_id`, ...) and the enqueue
  helpers, shared by the API, the worker (workers/jobs.py) and the `jobs` CLI.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import Job, JobStatus

from domain.deltas import TaskChange
from gateway.cache.clients import breaker_for
from gateway.data.accounts import announce_in_postgres
from gateway.data.db import query
from gateway.data.replica import record_write
from gateway.data.resources import Resources
from gateway.live.fanout import publish as publish_change
from gateway.ops import tracing

log = logging.getLogger(__name__)

# The names jobs are enqueued under, shared by the worker, the API and the CLI. They live here,
# free of imports, so that enqueueing never has to load the jobs' own dependencies.
AGGREGATE_JOB = "aggregate"
REPAIR_JOB = "repair_stale"
REFRESH_VIEWS_JOB = "refresh_views"
WARM_CACHE_JOB = "warm_cache"
# Cron job names; distinct from the function names, which arq keeps in the same dict.
NIGHTLY_CRON = "cron:aggregate_nightly"
WARM_CACHE_CRON = "cron:warm_cache"
REPAIR_DELAY_S = 2.0     # a burst of edits within this window is repaired by one run
ENQUEUE_TIMEOUT_S = 1.0  # a mutation's response never waits longer on Redis than this
_ANALYTIC_COLUMNS = ("status", "priority", "due_date", "created_at", "completed_at", "deleted")


# --- which days a change touches ------------------------------------------------------------

async def mark_days_stale(conn: asyncpg.Connection, user_id: uuid.UUID,
                          days: Iterable[date]) -> None:
    """Mark rollup days stale, inside the caller's transaction (a task mutation's).

    Only days inside the user's coverage are marked (others are computed live anyway). The user
    row is locked first so that a concurrent aggregation of this user either finished before
    (and this sees its coverage) or starts after this transaction commits (and sees the change).
    """
    wanted = sorted(set(days))
    if not wanted:
        return
    await conn.execute(query("rollup_lock_user"), user_id)
    await conn.execute(query("rollup_mark_stale"), user_id, wanted)


def _local_day(value: datetime | None, tz: ZoneInfo) -> date | None:
    return value.astimezone(tz).date() if value is not None else None


def affected_days(task_row_before: Mapping[str, Any] | None,
                  task_row_after: Mapping[str, Any] | None, tz: str) -> set[date]:
    """The local days whose figures a task change can alter: the created, completed and due days
    of the task before and after the change. Empty when nothing analytics reads has changed (a new
    title, say). Rows are mappings with the `tasks` columns (asyncpg Records work)."""
    if task_row_before is not None and task_row_after is not None and all(
            task_row_before.get(c) == task_row_after.get(c) for c in _ANALYTIC_COLUMNS):
        return set()
    zone = ZoneInfo(tz)
    days: set[date] = set()
    for row in (task_row_before, task_row_after):
        if row is None:
            continue
        for day in (_local_day(row.get("created_at"), zone),
                    _local_day(row.get("completed_at"), zone), row.get("due_date")):
            if day is not None:
                days.add(day)
    return days


# --- after the commit -----------------------------------------------------------------------

async def tasks_changed(resources: Resources, user_id: uuid.UUID,
                        stale_days: Iterable[date] = (), *, rollup_reset: bool = False,
                        change: TaskChange | None = None) -> None:
    """A user's tasks (or the profile fields analytics depend on) changed and were committed.

    `change` describes a task mutation's change (domain/deltas.py): the live message carries
    it, so that subscribers' figures are updated from it rather than recomputed.

    `rollup_reset` says the change deleted the user's whole rollup (a new timezone moves every
    local day): a rebuild of their history is queued, or the nightly run would only redo yesterday.
    """
    # This process's kept account row (gateway/data/accounts.py) has the data version from before
    # the change: dropped now, so the writer's next read here sees its write. Other processes
    # drop theirs when PostgreSQL's notification of the change reaches them.
    accounts = getattr(resources, "accounts", None)
    if accounts is not None:
        accounts.evict(user_id)
    # With a read replica, this user's reads go to the primary until the replica has replayed
    # this change, so that figures recomputed under the new data version include it.
    await record_write(resources, [user_id])
    # While the cache path's breaker is open (Redis down or hung), a repair is not even tried:
    # it would cost the mutation up to a second, and the nightly run repairs what is left
    # (stale days are computed live meanwhile, so no answer is wrong).
    redis_down = breaker_for(resources.cache_redis, resources.settings).is_open
    # Live dashboards: every API process pushes the new figures to this user's followers
    # (gateway/live/). Best effort and bounded, like the repair below. The same message tells the
    # other processes' account caches to drop the row; when Redis cannot take it, PostgreSQL
    # tells them (the API's own writes do not notify: sql/migrations/0005).
    described = [(user_id, change.version, change.encode())] if change is not None else []
    published = not redis_down and await publish_change(resources.redis, [user_id], described)
    if not published and accounts is not None:
        try:
            await announce_in_postgres(resources.pool, user_id)
        except Exception as exc:  # the database is down too: nothing can read the row now
            log.warning("account change not announced: %s", type(exc).__name__)
    if any(True for _ in stale_days) and not redis_down:
        # One repair job per user (deterministic id); never raises, Redis down only costs speed.
        await enqueue_repair(resources.arq, user_id)
    if rollup_reset:
        await enqueue_rebuild(resources.arq, user_id)
    return None


# --- the job queue --------------------------------------------------------------------------

def repair_job_id(user_id: uuid.UUID) -> str:
    """One repair job per user: a second enqueue while one is queued is a no-op."""
    return f"repair-stale:{user_id}"


async def enqueue_unique(arq: ArqRedis, function: str, job_id: str, *args: Any,
                         delay: float = 0.0) -> bool:
    """Enqueue `function` under a fixed `job_id` unless that job is already queued or running.

    arq refuses an id while its job or its stored result exists. The unique jobs keep no result,
    but a job that failed for good leaves one (arq stores failures with the worker's default
    `keep_result`); that stale result is dropped so that the next change can enqueue again.
    Returns whether a new job was queued. With tracing on, the job carries the W3C context of
    the caller (`_trace`), so that its run continues the caller's trace (workers/metrics.py).
    """
    with tracing.enqueueing(function) as trace_kwargs:
        job = await arq.enqueue_job(function, *args, _job_id=job_id, _defer_by=delay or None,
                                    **trace_kwargs)
        if job is None and await Job(job_id, arq).status() == JobStatus.complete:
            await arq.delete(result_key_prefix + job_id)
            job = await arq.enqueue_job(function, *args, _job_id=job_id,
                                        _defer_by=delay or None, **trace_kwargs)
        enqueued = job is not None
        tracing.annotate(**{"messaging.message.id": job_id, "arq.job.enqueued": enqueued})
    return enqueued


async def enqueue_repair(arq: ArqRedis | None, user_id: uuid.UUID, *,
                         delay: float = REPAIR_DELAY_S) -> bool:
    """Queue the re-aggregation of a user's stale days; called after a mutation commits.

    Best effort, never raises: the change is committed and readers compute stale days live, so a
    Redis that is down (`arq` None) or slow costs only speed; the nightly run repairs what is left.
    """
    if arq is None:
        return False
    try:
        async with asyncio.timeout(ENQUEUE_TIMEOUT_S):
            return await enqueue_unique(arq, REPAIR_JOB, repair_job_id(user_id), user_id,
                                        delay=delay)
    except Exception as exc:
        log.warning("stale-day repair of user %s not enqueued: %s", user_id,
                    type(exc).__name__)
        return False


def rebuild_job_id(user_id: uuid.UUID) -> str:
    return f"rebuild:{user_id}"


async def enqueue_rebuild(arq: ArqRedis | None, user_id: uuid.UUID) -> bool:
    """Queue the aggregation of a user's whole history (first task day to local yesterday).

    For a change that invalidates every rollup day of a user, such as a new timezone (the profile
    mutation deletes the user's rows and coverage; the nightly run alone would only rebuild
    yesterday). One per user at a time; best effort and never raises, like `enqueue_repair`.
    """
    if arq is None:
        return False
    try:
        async with asyncio.timeout(ENQUEUE_TIMEOUT_S):
            return await enqueue_unique(arq, AGGREGATE_JOB, rebuild_job_id(user_id), None, None,
                                        [user_id])
    except Exception as exc:
        log.warning("rollup rebuild of user %s not enqueued: %s", user_id, type(exc).__name__)
        return False
