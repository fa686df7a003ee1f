"""The analytics DataLoaders: one per batch query of sql/queries/analytics.sql.

Each loader answers every key asked for in one event-loop tick with ONE SQL statement, in
`compute(keys)`; `batch_load_fn` only calls it, so that a caching loader can wrap `compute`. Values
are the typed figures of domain/figures.py, stored in the cache by the loader's `codec` (whose
format, derived from the value type, is in every key), and resolvers compute their answers from
them. Keys are tuples whose first element is the user id and the rest the arguments, with
explicit dates (never "today"), so a key means the same thing whenever it is computed:

| loader | field | key | value |
| --- | --- | --- | --- |
| `OverviewLoader` | overview | `(user_id, today)` | `Overview`, None for a missing user |
| `DailySeriesLoader` | trends | `(user_id, from, to)` | `DaySeries`: the sparse per-day counts |
| `ProductivityLoader` | productivity | `(user_id, from, to)` | `ProductivityExtras` |
| `UserLoader` | (never cached) | `user_id` | `UserRow` with its local today and data version |

`DailySeriesLoader` serves trends of every period and the day-based productivity figures: a
dashboard's 30-day DAY trend and default productivity share one key.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

import asyncpg

from domain import figures
from domain.figures import (
    DayCounts,
    DaySeries,
    Overview,
    PriorityCounts,
    ProductivityExtras,
    StatusCounts,
    UserRow,
)
from domain.ranges import round1
from gateway.data.db import query
from gateway.data.replica import router_of
from loaders.cached import CachedLoader

K = TypeVar("K")
V = TypeVar("V")
SeriesKey = tuple[uuid.UUID, date, date]
WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


class AnalyticsLoader(CachedLoader[K, V], Generic[K, V]):
    """A loader whose batch is one SQL statement (`compute`) over the request's pool."""

    field: ClassVar[str]

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self.pool = pool

    async def compute(self, keys: Sequence[K]) -> list[V]:
        raise NotImplementedError

    async def fetch(self, user_ids: Sequence[uuid.UUID], sql: str,
                    *args: Any) -> list[asyncpg.Record]:
        """Run a batch statement on the replica when it may answer for these users (see
        gateway/data/replica.py), else on the primary; a loader never `cached` uses its own pool."""
        if self._resources is None:
            rows: list[asyncpg.Record] = await self.pool.fetch(sql, *args)
            return rows
        return await router_of(self._resources).fetch(user_ids, sql, *args)


class UserLoader(AnalyticsLoader[uuid.UUID, UserRow | None]):
    """Users by id, with their local today by the database clock. Never cached: `today` moves."""

    field = "user"

    async def compute(self, keys: Sequence[uuid.UUID]) -> list[UserRow | None]:
        rows = await self.pool.fetch(query("analytics_users"), list(keys))
        by_id = {row["id"]: UserRow.from_record(row) for row in rows}
        return [by_id.get(key) for key in keys]


class OverviewLoader(AnalyticsLoader[tuple[uuid.UUID, date], Overview | None]):
    """Overview figures of all of a user's tasks; one index-only scan per user."""

    field = "overview"
    codec = figures.OVERVIEW

    async def compute(self, keys: Sequence[tuple[uuid.UUID, date]]) -> list[Overview | None]:
        ids = [key[0] for key in keys]
        rows = await self.fetch(ids, query("analytics_overview"), ids)
        by_id = {row["user_id"]: _overview_value(row) for row in rows}
        return [by_id.get(key[0]) for key in keys]


def _overview_value(row: asyncpg.Record) -> Overview:
    total, done = row["total"], row["done"]
    return Overview(
        total_tasks=total, completed_tasks=done, pending_tasks=row["todo"],
        in_progress_tasks=row["in_progress"], overdue_tasks=row["overdue"],
        due_today_tasks=row["due_today"],
        completion_rate=round1(100 * done, total) if total else Decimal("0.0"),
        priority=PriorityCounts(high=row["high"], medium=row["medium"], low=row["low"]),
        status=StatusCounts(todo=row["todo"], in_progress=row["in_progress"], done=done),
    )


class DailySeriesLoader(AnalyticsLoader[SeriesKey, DaySeries]):
    """The sparse per-day counts of (user, from, to): rollup rows for covered, fresh days and live
    figures for the rest, in one statement."""

    field = "trends"
    codec = figures.DAY_SERIES

    async def compute(self, keys: Sequence[SeriesKey]) -> list[DaySeries]:
        ids = [k[0] for k in keys]
        rows = await self.fetch(ids, query("analytics_daily_series"),
                                ids, [k[1] for k in keys], [k[2] for k in keys])
        days: list[list[DayCounts]] = [[] for _ in keys]
        for row in rows:
            days[row["k"] - 1].append(DayCounts(
                day=row["day"], tasks_created=row["tasks_created"],
                tasks_completed=row["tasks_completed"], tasks_due=row["tasks_due"],
                tasks_completed_on_time=row["tasks_completed_on_time"],
                half_points=row["half_points"]))
        return [DaySeries(d_from=k[1], d_to=k[2], days=tuple(d))
                for k, d in zip(keys, days, strict=True)]


class ProductivityLoader(AnalyticsLoader[SeriesKey, ProductivityExtras]):
    """The productivity figures that need raw completions (lead and cycle times, busiest weekday
    and hour) and the all-history streaks; the day-based ones come from DailySeriesLoader."""

    field = "productivity"
    codec = figures.PRODUCTIVITY_EXTRAS

    async def compute(self, keys: Sequence[SeriesKey]) -> list[ProductivityExtras]:
        ids = [k[0] for k in keys]
        rows = await self.fetch(ids, query("analytics_productivity_extras"),
                                ids, [k[1] for k in keys], [k[2] for k in keys])
        values = [ProductivityExtras.streaks_only() for _ in keys]
        for row in rows:
            values[row["k"] - 1] = _productivity_value(row)
        return values


def _hours(seconds: Decimal | None, count: int) -> Decimal | None:
    if not count or seconds is None:
        return None
    return round1(Decimal(seconds), Decimal(3600 * count))


def _busiest(values: list[int] | None, size: int) -> int | None:
    """The most frequent value in 0..size-1, ties to the smallest; None when there is none."""
    if not values:
        return None
    counts = [0] * size
    for value in values:
        counts[value] += 1
    return counts.index(max(counts))


def _productivity_value(row: asyncpg.Record) -> ProductivityExtras:
    if not row["completed"]:
        return ProductivityExtras.streaks_only(row["current_streak"], row["longest_streak"])
    weekday = _busiest([d - 1 for d in row["weekdays"]], 7)
    return ProductivityExtras(
        lead_time_hours=_hours(row["lead_seconds"], row["completed"]),
        cycle_time_hours=_hours(row["cycle_seconds"], row["cycle_count"]),
        most_productive_weekday=WEEKDAYS[weekday] if weekday is not None else None,
        most_productive_hour=_busiest(row["hours"], 24),
        current_streak=row["current_streak"],
        longest_streak=row["longest_streak"],
    )
