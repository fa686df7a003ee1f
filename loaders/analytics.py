"""The analytics DataLoaders: one per batch query of sql/queries/analytics.sql.

Each loader answers every key asked for in one event-loop tick with ONE SQL statement, in
`compute(keys)`; `batch_load_fn` only calls it, so that a caching loader can wrap `compute`. Values
are plain JSON-compatible dicts (dates as "YYYY-MM-DD" strings): the cache stores them as they
are, and resolvers turn them into Strawberry types. Keys are tuples whose first element is the
user id and the rest the arguments, with explicit dates (never "today"), so a key means the same
thing whenever it is computed:

| loader | field | key | value |
| --- | --- | --- | --- |
| `OverviewLoader` | overview | `(user_id, today)` | overview figures, None for a missing user |
| `DailySeriesLoader` | trends | `(user_id, from, to)` | the sparse per-day counts of the range |
| `ProductivityLoader` | productivity | `(user_id, from, to)` | streaks, lead/cycle times, peaks |
| `UserLoader` | (never cached) | `user_id` | the user row with its local today and data version |

`DailySeriesLoader` serves trends of every period and the day-based productivity figures: a
dashboard's 30-day DAY trend and default productivity share one key.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar, Generic, TypeVar

import asyncpg

from gateway.data.db import query
from gateway.data.replica import router_of
from loaders.cached import CachedLoader

K = TypeVar("K")
V = TypeVar("V")
SeriesKey = tuple[uuid.UUID, date, date]
ONE_DECIMAL = Decimal("0.1")
WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


def round1(numerator: int | Decimal, denominator: int | Decimal) -> Decimal:
    """numerator / denominator to 1 decimal, half up, computed exactly (no float on the way)."""
    return (Decimal(numerator) / Decimal(denominator)).quantize(ONE_DECIMAL, ROUND_HALF_UP)


# Default ranges (docs/analytics.md): the last 30 days, 12 weeks or 12 months, ending at `to`.
def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(day: date, months: int) -> date:
    """The first of the month `months` after (or before) `day`'s month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def default_from(period: str, to: date) -> date:
    """The start of the default range ending at `to`: 30 days, 12 weeks or 12 months."""
    if period == "WEEK":
        return week_start(to) - timedelta(weeks=11)
    if period == "MONTH":
        return add_months(to, -11)
    return to - timedelta(days=29)


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
            return await self.pool.fetch(sql, *args)
        return await router_of(self._resources).fetch(user_ids, sql, *args)


class UserLoader(AnalyticsLoader[uuid.UUID, dict[str, Any] | None]):
    """Users by id, with their local today by the database clock. Never cached: `today` moves."""

    field = "user"

    async def compute(self, keys: Sequence[uuid.UUID]) -> list[dict[str, Any] | None]:
        rows = await self.pool.fetch(query("analytics_users"), list(keys))
        by_id = {row["id"]: user_value(row) for row in rows}
        return [by_id.get(key) for key in keys]


def user_value(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": str(row["id"]), "email": row["email"], "display_name": row["display_name"],
            "timezone": row["timezone"], "daily_goal": row["daily_goal"], "role": row["role"],
            "created_at": row["created_at"].isoformat(), "today": row["today"].isoformat(),
            "data_version": row["data_version"]}


class OverviewLoader(AnalyticsLoader[tuple[uuid.UUID, str], dict[str, Any] | None]):
    """Overview figures of all of a user's tasks; one index-only scan per user."""

    field = "overview"

    async def compute(self, keys: Sequence[tuple[uuid.UUID, str]]
                      ) -> list[dict[str, Any] | None]:
        ids = [key[0] for key in keys]
        rows = await self.fetch(ids, query("analytics_overview"), ids)
        by_id = {row["user_id"]: _overview_value(row) for row in rows}
        return [by_id.get(key[0]) for key in keys]


def _overview_value(row: asyncpg.Record) -> dict[str, Any]:
    total, done = row["total"], row["done"]
    return {
        "total_tasks": total, "completed_tasks": done, "pending_tasks": row["todo"],
        "in_progress_tasks": row["in_progress"], "overdue_tasks": row["overdue"],
        "due_today_tasks": row["due_today"],
        "completion_rate": float(round1(100 * done, total)) if total else 0.0,
        "priority": {"high": row["high"], "medium": row["medium"], "low": row["low"]},
        "status": {"todo": row["todo"], "in_progress": row["in_progress"], "done": done},
    }


class DailySeriesLoader(AnalyticsLoader[SeriesKey, dict[str, Any]]):
    """The sparse per-day counts of (user, from, to): rollup rows for covered, fresh days and live
    figures for the rest, in one statement. `days` rows are
    `[date, created, completed, due, completed_on_time, half_points]`."""

    field = "trends"

    async def compute(self, keys: Sequence[SeriesKey]) -> list[dict[str, Any]]:
        ids = [k[0] for k in keys]
        rows = await self.fetch(ids, query("analytics_daily_series"),
                                ids, [k[1] for k in keys], [k[2] for k in keys])
        values: list[dict[str, Any]] = [
            {"from": k[1].isoformat(), "to": k[2].isoformat(), "days": []} for k in keys]
        for row in rows:
            values[row["k"] - 1]["days"].append([
                row["day"].isoformat(), row["tasks_created"], row["tasks_completed"],
                row["tasks_due"], row["tasks_completed_on_time"], row["half_points"]])
        return values


class ProductivityLoader(AnalyticsLoader[SeriesKey, dict[str, Any]]):
    """The productivity figures that need raw completions (lead and cycle times, busiest weekday
    and hour) and the all-history streaks; the day-based ones come from DailySeriesLoader."""

    field = "productivity"

    async def compute(self, keys: Sequence[SeriesKey]) -> list[dict[str, Any]]:
        ids = [k[0] for k in keys]
        rows = await self.fetch(ids, query("analytics_productivity_extras"),
                                ids, [k[1] for k in keys], [k[2] for k in keys])
        values: list[dict[str, Any]] = [_productivity_value(None) for _ in keys]
        for row in rows:
            values[row["k"] - 1] = _productivity_value(row)
        return values


def _hours(seconds: Decimal | None, count: int) -> float | None:
    if not count or seconds is None:
        return None
    return float(round1(Decimal(seconds), Decimal(3600 * count)))


def _busiest(values: list[int] | None, size: int) -> int | None:
    """The most frequent value in 0..size-1, ties to the smallest; None when there is none."""
    if not values:
        return None
    counts = [0] * size
    for value in values:
        counts[value] += 1
    return counts.index(max(counts))


def _productivity_value(row: asyncpg.Record | None) -> dict[str, Any]:
    if row is None or not row["completed"]:
        return {"lead_time_hours": None, "cycle_time_hours": None,
                "most_productive_weekday": None, "most_productive_hour": None,
                "current_streak": row["current_streak"] if row is not None else 0,
                "longest_streak": row["longest_streak"] if row is not None else 0}
    weekday = _busiest([d - 1 for d in row["weekdays"]], 7)
    return {
        "lead_time_hours": _hours(row["lead_seconds"], row["completed"]),
        "cycle_time_hours": _hours(row["cycle_seconds"], row["cycle_count"]),
        "most_productive_weekday": WEEKDAYS[weekday] if weekday is not None else None,
        "most_productive_hour": _busiest(row["hours"], 24),
        "current_streak": row["current_streak"],
        "longest_streak": row["longest_streak"],
    }
