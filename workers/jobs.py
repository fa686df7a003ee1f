"""The arq jobs: aggregation (nightly and backfill), stale-day repair, view refresh, cache warming.

Every job takes arq's `ctx` (with `settings`, `pool`, `resources` and `redis` from the worker's
start-up), returns a dict of counts (arq stores it as the job's result) and is wrapped by
`workers.metrics.instrumented` for metrics, the JSON log line and retries of transient failures.
The SQL of the aggregation lives in `workers/aggregation.py`; the rest in `sql/queries/jobs.sql`.

Jobs are enqueued by name; the names, the deterministic ids and the enqueue helpers are in
domain/changes.py, so that the API and the worker agree on them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import asyncpg
from redis.exceptions import RedisError

import workers.aggregation as aggregation
from domain.changes import (
    AGGREGATE_JOB,
    REFRESH_VIEWS_JOB,
    REPAIR_JOB,
    WARM_CACHE_JOB,
    enqueue_unique,
)
from gateway.data.db import query
from gateway.live.fanout import publish as publish_change
from loaders.warming import warm_users
from workers.metrics import instrumented

log = logging.getLogger(__name__)


REFRESH_VIEWS_JOB_ID = "refresh-views"
MATERIALIZED_VIEWS = ("user_task_stats", "user_priority_distribution",
                      "user_status_distribution", "user_monthly_trends")
REFRESH_DELAY_S = 60.0     # repairs within this window share one view refresh
REPAIR_PASSES = 3          # re-run the repair while a change marked new days stale meanwhile
ACTIVE_DAYS = 7            # cache warming covers users active this many days
BATCH_SIZE = 1000          # users per aggregation transaction
PROGRESS_KEY_PREFIX = "jobs:progress:v1:"  # v1: the value is the last committed user id
PROGRESS_TTL_S = 88_400    # as long as arq counts the job's tries (its `arq:retry:` key)


# --- helpers shared by the jobs ------------------------------------------------------------------


async def refresh_materialized_views(pool: asyncpg.Pool) -> int:
    """`REFRESH MATERIALIZED VIEW CONCURRENTLY` each view, one statement (transaction) at a time,
    so that readers are never blocked and a failure leaves the other views refreshed."""
    for view in MATERIALIZED_VIEWS:
        await pool.execute(query(f"refresh_{view}"))
    return len(MATERIALIZED_VIEWS)


async def bump_cache_versions(ctx: dict[str, Any], user_ids: Iterable[uuid.UUID]) -> int:
    """Make the cached figures of these users miss on their next read: raise their
    `users.data_version` in PostgreSQL, which keys every cached figure (docs/cache.md), and tell
    the API processes, which push the users' new figures to live dashboards. Task and profile
    changes raise it by trigger; a rollup repair is the one change made here."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return 0
    await ctx["pool"].execute(query("bump_data_versions"), ids)
    # Live dashboards: the API processes push these users' new figures (best effort).
    await publish_change(ctx.get("redis"), ids)
    return len(ids)


def progress_key(ctx: dict[str, Any]) -> str | None:
    """Where a backfill records the last user of its last committed batch, in arq's Redis: one
    key per job id and enqueue, so a later job under the same id (a rebuild) starts afresh."""
    job_id, enqueued = ctx.get("job_id"), ctx.get("enqueue_time")
    if ctx.get("redis") is None or not job_id or enqueued is None:
        return None
    return f"{PROGRESS_KEY_PREFIX}{job_id}:{int(enqueued.timestamp() * 1000)}"


async def _resume_point(ctx: dict[str, Any], key: str | None) -> uuid.UUID | None:
    """The last user an earlier try of this job committed, or None (the first try, or unknown)."""
    if key is None or int(ctx.get("job_try") or 1) <= 1:
        return None
    try:
        value = await ctx["redis"].get(key)
    except (RedisError, OSError) as exc:
        log.warning("backfill %s: progress not read (%s), starting over", key,
                    type(exc).__name__)
        return None
    return uuid.UUID(value.decode()) if value else None


async def _save_progress(ctx: dict[str, Any], key: str | None,
                         last_user_id: uuid.UUID | None) -> None:
    """Record a committed batch (None: the job is done, forget it). Best effort: a lost record
    only means a later try redoes (idempotently) more batches."""
    if key is None:
        return
    try:
        if last_user_id is None:
            await ctx["redis"].delete(key)
        else:
            await ctx["redis"].set(key, str(last_user_id), ex=PROGRESS_TTL_S)
    except (RedisError, OSError) as exc:
        log.warning("backfill %s: progress not recorded (%s)", key, type(exc).__name__)


async def _after_aggregation(ctx: dict[str, Any]) -> int:
    """What follows writing rollup rows: the views that read them, when they are enabled."""
    if not ctx["settings"].enable_materialized_views:
        return 0
    return await refresh_materialized_views(ctx["pool"])


# --- the jobs ------------------------------------------------------------------------------------


@instrumented(AGGREGATE_JOB)
async def aggregate(ctx: dict[str, Any], d_from: date | None, d_to: date | None,
                    user_ids: Sequence[uuid.UUID] | None = None) -> dict[str, Any]:
    """Backfill: (re)aggregate the local days `d_from`..`d_to` of all users, or of `user_ids`.

    Days after a user's local yesterday are skipped; `d_from=None` starts at the user's first task
    day and `d_to=None` ends at their yesterday (see `aggregation.aggregate_range`). A later try of
    the same job (after a retry, or a worker that died) skips the batches of users that an earlier
    try committed (`resumed_after` in the result names the last user skipped)."""
    ids = list(user_ids) if user_ids else None
    progress = progress_key(ctx)
    after = await _resume_point(ctx, progress)

    async def committed(last_user_id: uuid.UUID) -> None:
        await _save_progress(ctx, progress, last_user_id)

    rows = await aggregation.aggregate_range(ctx["pool"], d_from, d_to, ids,
                                             batch_size=ctx.get("batch_size", BATCH_SIZE),
                                             after=after, on_batch=committed)
    views = await _after_aggregation(ctx)
    bumped = await bump_cache_versions(ctx, ids or ())
    await _save_progress(ctx, progress, None)
    return {"rows": rows, "from": str(d_from or "first day"), "to": str(d_to or "yesterday"),
            "users": len(ids) if ids else "all", "views_refreshed": views,
            "cache_versions_bumped": bumped, "resumed_after": str(after) if after else None}


@instrumented("aggregate_nightly")
async def aggregate_nightly(ctx: dict[str, Any]) -> dict[str, Any]:
    """The nightly run: every user's closed local days up to yesterday (catching up any the
    worker missed), then any stale day whose repair job was lost (Redis down at the change)."""
    pool = ctx["pool"]
    rows = await aggregation.aggregate_closed_days(pool,
                                                   batch_size=ctx.get("batch_size", BATCH_SIZE))
    repaired = await aggregation.repair_stale(pool, None)
    views = await _after_aggregation(ctx)
    bumped = await bump_cache_versions(ctx, repaired)
    return {"rows": rows, "repaired_users": len(repaired), "views_refreshed": views,
            "cache_versions_bumped": bumped}


@instrumented(REPAIR_JOB)
async def repair_stale(ctx: dict[str, Any], user_id: uuid.UUID) -> dict[str, Any]:
    """Re-aggregate the days of one user that mutations marked stale, then bump the user's cache
    version. A change that commits while this runs cannot enqueue (the id is taken), so the job
    looks again before it ends."""
    pool = ctx["pool"]
    repaired: set[uuid.UUID] = set()
    passes = 0
    for passes in range(1, REPAIR_PASSES + 1):  # noqa: B007 (the count is reported)
        repaired.update(await aggregation.repair_stale(pool, [user_id]))
        if not await pool.fetchval(query("user_has_stale_days"), user_id):
            break
    if int(ctx.get("job_try") or 1) > 1:
        # An earlier try may have repaired the days and died before what follows (the bump and
        # the view refresh), finding nothing stale now: do those anyway (both are harmless).
        repaired.add(user_id)
    bumped = await bump_cache_versions(ctx, repaired)
    views_queued = False
    if repaired and ctx["settings"].enable_materialized_views:
        views_queued = await enqueue_unique(ctx["redis"], REFRESH_VIEWS_JOB, REFRESH_VIEWS_JOB_ID,
                                            delay=float(ctx.get("refresh_delay_s",
                                                                REFRESH_DELAY_S)))
    return {"repaired_users": len(repaired), "passes": passes, "cache_versions_bumped": bumped,
            "views_refresh_queued": views_queued}


@instrumented(REFRESH_VIEWS_JOB)
async def refresh_views(ctx: dict[str, Any]) -> dict[str, Any]:
    """Refresh the materialized views now (they are also refreshed after every aggregation)."""
    return {"views_refreshed": await refresh_materialized_views(ctx["pool"])}


@instrumented(WARM_CACHE_JOB)
async def warm_cache(ctx: dict[str, Any]) -> dict[str, Any]:
    """Compute and store the dashboard figures of the users active in the last `ACTIVE_DAYS`."""
    user_ids = [row["id"] for row in await ctx["pool"].fetch(query("active_user_ids"),
                                                             ACTIVE_DAYS)]
    # The cache layer computes the figures under the very keys the dashboard's resolvers read.
    warmed = await warm_users(ctx["resources"], user_ids) if user_ids else 0
    return {"active_users": len(user_ids), "warmed": warmed}
