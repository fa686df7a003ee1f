"""The analytics DataLoaders: one per kind of figure of sql/queries/analytics.sql.

Each loader answers every key asked for in one event-loop tick with ONE SQL statement, in
`compute(keys)`; `batch_load_fn` only calls it, so that a caching loader can wrap `compute`. The
three figure loaders of a request go further: they share their batches (loaders/cached.py's
`SharedBatch`), whose misses of every kind `compute_figures` answers with ONE `analytics_figures`
statement, each kind reading its part of the rows with the same `values` as its own statement.
Values are the typed figures of domain/figures.py, stored in the cache by the loader's `codec`
(whose format, derived from the value type, is in every key), and resolvers compute their
answers from them. Keys are tuples whose first element is the user id and the rest the
arguments, with explicit dates (never "today"), so a key means the same thing whenever it is
computed:

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

import asyncio
import uuid
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import asyncpg

from domain import figures
from domain.figures import (
    DayCounts,
    DaySeries,
    Overview,
    ProductivityExtras,
    UserRow,
)
from domain.ranges import round1
from gateway.data.db import query
from gateway.data.replica import router_of
from gateway.ops.batching import TickBatcher
from gateway.ops.lazy import kept_on
from loaders.cached import CachedLoader

if TYPE_CHECKING:
    from gateway.data.resources import Resources

K = TypeVar("K")
V = TypeVar("V")
SeriesKey = tuple[uuid.UUID, date, date]
WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


class AnalyticsLoader(CachedLoader[K, V], Generic[K, V]):
    """A loader whose batch is one SQL statement (`compute`) over the request's pool."""

    field: ClassVar[str]

    def __init__(self, pool: asyncpg.Pool,
                 cache_map: MutableMapping[Any, asyncio.Future[V]] | None = None) -> None:
        super().__init__(cache_map=cache_map)  # the keys' futures (see Loaders.figures_of)
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


class FigureLoader(AnalyticsLoader[K, V], Generic[K, V]):
    """A kind of figure: its own statement (`statement`, run by `compute` for a batch of this
    kind alone: cache warming, tests) and its part of `analytics_figures` (`compute_figures`,
    the request's shared batch). Both take the arrays of `arguments(keys)` and give rows that
    `values(keys, rows)` reads, `k` being a key's 1-based position."""

    statement: ClassVar[str]

    @staticmethod
    def arguments(keys: Sequence[K]) -> list[list[Any]]:
        raise NotImplementedError

    @staticmethod
    def values(keys: Sequence[K], rows: Sequence[asyncpg.Record]) -> list[V]:
        raise NotImplementedError

    async def compute(self, keys: Sequence[K]) -> list[V]:
        rows = await self.fetch([key[0] for key in keys],  # type: ignore[index]
                                query(self.statement), *self.arguments(keys))
        return self.values(keys, rows)


def _ranges(keys: Sequence[SeriesKey]) -> list[list[Any]]:
    """The arrays of (user, from, to) keys: user ids, from dates, to dates."""
    return [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]]


class OverviewLoader(FigureLoader[tuple[uuid.UUID, date], Overview | None]):
    """Overview figures of all of a user's tasks; one index-only scan per user."""

    field = "overview"
    codec = figures.OVERVIEW
    statement = "analytics_overview"

    @staticmethod
    def arguments(keys: Sequence[tuple[uuid.UUID, date]]) -> list[list[Any]]:
        return [[key[0] for key in keys]]

    @staticmethod
    def values(keys: Sequence[tuple[uuid.UUID, date]],
               rows: Sequence[asyncpg.Record]) -> list[Overview | None]:
        values: list[Overview | None] = [None] * len(keys)  # None: the user does not exist
        for row in rows:
            values[row["k"] - 1] = _overview_value(row)
        return values


def _overview_value(row: asyncpg.Record) -> Overview:
    return Overview.of_counts(row["total"], row["done"], row["todo"], row["in_progress"],
                              row["overdue"], row["due_today"], row["high"], row["medium"],
                              row["low"])


class DailySeriesLoader(FigureLoader[SeriesKey, DaySeries]):
    """The sparse per-day counts of (user, from, to): rollup rows for covered, fresh days and live
    figures for the rest, in one statement."""

    field = "trends"
    codec = figures.DAY_SERIES
    statement = "analytics_daily_series"
    arguments = staticmethod(_ranges)

    @staticmethod
    def values(keys: Sequence[SeriesKey], rows: Sequence[asyncpg.Record]) -> list[DaySeries]:
        days: list[list[DayCounts]] = [[] for _ in keys]
        for row in rows:  # in (k, day) order; positional: a third cheaper than by keyword
            days[row["k"] - 1].append(DayCounts(
                row["day"], row["tasks_created"], row["tasks_completed"], row["tasks_due"],
                row["tasks_completed_on_time"], row["half_points"]))
        return [DaySeries(d_from=k[1], d_to=k[2], days=tuple(d))
                for k, d in zip(keys, days, strict=True)]


class ProductivityLoader(FigureLoader[SeriesKey, ProductivityExtras]):
    """The productivity figures that need raw completions (lead and cycle times, busiest weekday
    and hour) and the all-history streaks; the day-based ones come from DailySeriesLoader."""

    field = "productivity"
    codec = figures.PRODUCTIVITY_EXTRAS
    statement = "analytics_productivity_extras"
    arguments = staticmethod(_ranges)

    @staticmethod
    def values(keys: Sequence[SeriesKey],
               rows: Sequence[asyncpg.Record]) -> list[ProductivityExtras]:
        values = [ProductivityExtras.streaks_only() for _ in keys]
        for row in rows:
            values[row["k"] - 1] = _productivity_value(row)
        return values


FIGURE_KINDS: tuple[type[FigureLoader[Any, Any]], ...] = (
    OverviewLoader, DailySeriesLoader, ProductivityLoader)
"""The parts of `analytics_figures`, in the order of its arguments and of its `part` column."""


class Snapshots:
    """What the figure statements of one live batch computed, per user: the data version their
    snapshot saw (`analytics_figures` reads it beside the figures: one statement, one snapshot)
    and the (field, key)s computed in it. Live pushes keep figures that are exactly those of one
    version (resolvers/live.py)."""

    def __init__(self) -> None:
        self._versions: dict[uuid.UUID, set[int]] = {}
        self._keys: dict[uuid.UUID, set[tuple[str, Any]]] = {}

    def record(self, user_id: uuid.UUID, version: int, keys: Iterable[tuple[str, Any]]) -> None:
        self._versions.setdefault(user_id, set()).add(version)
        self._keys.setdefault(user_id, set()).update(keys)

    def version_of(self, user_id: uuid.UUID, keys: Iterable[tuple[str, Any]]) -> int | None:
        """The data version that these figures of the user are exactly those of: all computed
        by statements that saw that one version; None if not (some came from the cache, say)."""
        versions = self._versions.get(user_id, set())
        computed = self._keys.get(user_id, set())
        if len(versions) != 1 or not set(keys) <= computed:
            return None
        return next(iter(versions))


async def compute_figures(resources: Resources, keys_of: Mapping[str, list[Any]],
                          snapshots: Snapshots | None = None) -> dict[str, list[Any]]:
    """The figures of every kind asked for (field → keys), from ONE `analytics_figures` statement
    on the pool that may answer for these users: the `compute` of the request's shared batch
    (loaders/cached.py). A kind not asked for gets empty arrays, which cost nothing. With
    `snapshots`, the statement also reads the users' data versions, recorded there."""
    unknown = set(keys_of) - {kind.field for kind in FIGURE_KINDS}
    if unknown:
        raise ValueError(f"no figure of kind {sorted(unknown)}")
    arguments: list[list[Any]] = []
    for kind in FIGURE_KINDS:
        arguments += kind.arguments(keys_of.get(kind.field, []))
    user_ids = list(dict.fromkeys(key[0] for keys in keys_of.values() for key in keys))
    arguments.append(user_ids if snapshots is not None else [])
    rows = await router_of(resources).fetch(user_ids, query("analytics_figures"), *arguments)
    parts: list[list[asyncpg.Record]] = [[] for _ in range(len(FIGURE_KINDS) + 1)]
    for row in rows:
        parts[row["part"] - 1].append(row)
    *figure_parts, version_part = parts
    if snapshots is not None:
        keys_by_user: dict[uuid.UUID, list[tuple[str, Any]]] = {}
        for field, keys in keys_of.items():
            for key in keys:
                keys_by_user.setdefault(key[0], []).append((field, key))
        for row in version_part:
            user_id = user_ids[row["k"] - 1]
            snapshots.record(user_id, row["data_version"], keys_by_user[user_id])
    return {kind.field: kind.values(keys_of[kind.field], part)
            for kind, part in zip(FIGURE_KINDS, figure_parts, strict=True)
            if kind.field in keys_of}


class Coalescer:
    """The figure statements of this process's requests, coalesced: every `compute` asked for in
    one event-loop iteration, by any request, runs as ONE `analytics_figures` statement for the
    keys of them all (deduplicated), and each request gets its own keys' values back.

    A figure is a function of its key (the user and explicit dates), so a value computed for one
    request is the value for every request asking that key; who may see it was checked by each
    request's resolvers before they asked. Under load this divides the statements (and their
    per-statement cost in PostgreSQL and asyncpg, most of a statement's cost for one user) by the
    number of requests in flight, as a page of 100 users' figures already is one statement.
    A failure reaches every request of the batch; a request that is gone is skipped. Live pushes
    do not come here: their statement also reads the versions it saw (`Snapshots`)."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._batches: TickBatcher[Mapping[str, list[Any]], dict[str, list[Any]]] = \
            TickBatcher(self._run)

    async def compute(self, keys_of: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
        """`compute_figures(resources, keys_of)`, sharing its statement with the other requests'
        of the same event-loop iteration."""
        return await self._batches.submit(keys_of)

    async def _run(self, asked: list[Mapping[str, list[Any]]]) -> list[dict[str, list[Any]]]:
        merged: dict[str, dict[Any, None]] = {}
        for keys_of in asked:
            for field, keys in keys_of.items():
                merged.setdefault(field, {}).update(dict.fromkeys(keys))
        computed = await compute_figures(
            self.resources, {field: list(keys) for field, keys in merged.items()})
        values = {field: dict(zip(merged[field], computed[field], strict=True))
                  for field in merged}
        return [{field: [values[field][key] for key in keys] for field, keys in keys_of.items()}
                for keys_of in asked]


def coalescer_of(resources: Any) -> Coalescer:
    """The process's coalescer, created on first use and kept on the lifespan's `Resources`."""
    return kept_on(resources, "figure_coalescer", lambda: Coalescer(resources))


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
