"""The daily rollup: fill `daily_analytics` and the `rollup_coverage` watermark.

Readers (loaders/analytics.py) take covered, non-stale days from `daily_analytics` and compute
every other day live, so the rollup only makes reads cheaper, never different. Aggregation is
set-based SQL (`rollup_aggregate` in sql/queries/rollup.sql) sharing its per-day definition with
the live reads, run for batches of users, each batch in one transaction. Everything here is
idempotent: running it twice writes the same rows.

The arq jobs around these functions live elsewhere in `workers/`; task mutations call
`domain.changes.affected_days` and `mark_days_stale` inside their own transactions.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import date
from typing import Any

import asyncpg

from gateway.data.db import query

# The task columns whose values decide which days' figures a task contributes to.



async def _aggregate_batch(pool: asyncpg.Pool, user_ids: Sequence[uuid.UUID],
                           los: Sequence[date | None], his: Sequence[date | None]) -> int:
    """Aggregate one batch of users (per-user [lo, hi]) in one transaction; rows written."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(query("rollup_lock_users"), list(user_ids))
        row = await conn.fetchrow(query("rollup_aggregate"), list(user_ids), list(los),
                                  list(his))
    return int(row["written"]) if row is not None else 0


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + size]


async def aggregate_range(pool: asyncpg.Pool, d_from: date | None, d_to: date | None,
                          user_ids: Sequence[uuid.UUID] | None = None, *,
                          batch_size: int = 1000, after: uuid.UUID | None = None,
                          on_batch: Callable[[uuid.UUID], Awaitable[None]] | None = None) -> int:
    """Aggregate the local days [d_from, d_to] of the given users (all users when None).

    Each user's range is clamped to days up to their local yesterday; `d_from=None` starts at the
    user's first task day (created or due), `d_to=None` ends at their local yesterday. Batches of
    `batch_size` users in id order, each in one transaction. Returns the number of rows written
    (inserted, or updated because their figures changed or they were stale): a re-run returns 0.

    To resume a run that stopped part-way: `after` skips the users up to that id (the batches that
    committed), and `on_batch` is awaited with the last user id of each batch once it committed.
    """
    if user_ids is None:
        rows = await pool.fetch("select id from users order by id")
        ids: list[uuid.UUID] = [r["id"] for r in rows]
    else:
        ids = sorted(set(user_ids))
    if after is not None:
        ids = [user_id for user_id in ids if user_id > after]
    written = 0
    for batch in _batches(ids, batch_size):
        written += await _aggregate_batch(pool, batch, [d_from] * len(batch),
                                          [d_to] * len(batch))
        if on_batch is not None:
            await on_batch(batch[-1])
    return written


async def aggregate_closed_days(pool: asyncpg.Pool, *, batch_size: int = 1000) -> int:
    """The nightly catch-up: every user from `covered_through + 1` (or their local yesterday when
    never covered) to their local yesterday. Users already up to date cost nothing but a read."""
    written = 0
    after: uuid.UUID | None = None
    while True:
        rows = await pool.fetch(query("rollup_users_page"), after, batch_size)
        if not rows:
            return written
        after = rows[-1]["id"]
        ids = [r["id"] for r in rows]
        written += await _aggregate_batch(pool, ids, [r["lo"] for r in rows], [None] * len(ids))


async def repair_stale(pool: asyncpg.Pool,
                       user_ids: Sequence[uuid.UUID] | None = None) -> list[uuid.UUID]:
    """Re-aggregate the stale days of the given users (all users when None): for each user, the
    span from their first to their last stale day. Returns the users repaired."""
    rows = await pool.fetch(query("rollup_stale_ranges"),
                            list(user_ids) if user_ids is not None else None)
    for batch in _batches(rows, 1000):
        await _aggregate_batch(pool, [r["user_id"] for r in batch], [r["lo"] for r in batch],
                               [r["hi"] for r in batch])
    return [r["user_id"] for r in rows]


