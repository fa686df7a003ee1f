"""Analytics resolvers: who may see whose figures, argument checks, then the loaders.

Resolvers never query directly: every figure comes through the per-request loaders of
loaders/analytics.py, so that 100 users' figures in one request cost one statement (the figure
loaders share their batches: loaders/cached.py). The arithmetic on the loaders' exact integer
counts (rates and scores, all rounded half up to 1 decimal with `Decimal`) lives here, as plain
functions that tests can call; ranges, buckets and rounding are domain/ranges.py's, and the
definitions are in docs/analytics.md.
Values in and out are the typed figures of domain/figures.py, which schema/analytics.py turns
into types.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from domain.figures import (
    DayCounts,
    DaySeries,
    Overview,
    Productivity,
    ProductivityExtras,
    Trend,
    TrendPoint,
    UserRow,
)
from domain.ranges import (
    bucket_start,
    next_bucket,
    resolve_range,
    round1,
    round1_tenths,
    tenths,
)
from gateway.data.db import query
from gateway.errors import Forbidden, NotFound, Unauthenticated
from resolvers.context import Info
from resolvers.pagination import check_first, decode_cursor

ONE_DAY = timedelta(days=1)
ZERO = Decimal("0.0")


# -- who asks -------------------------------------------------------------------------------

async def subject(info: Info, user_id: Any | None) -> UserRow:
    """The user whose analytics are asked for (the caller when `user_id` is None).

    A user may see only their own figures; anyone else's, existing or not, is FORBIDDEN (checked
    before any lookup, so the answer cannot tell whether the user exists). An admin may see
    anyone's; a user that does not exist is then NOT_FOUND."""
    caller = info.context.require_caller()
    if user_id is None:
        target = caller.id
    else:
        try:
            target = uuid.UUID(str(user_id))
        except ValueError:
            if caller.is_admin:
                raise NotFound("User not found") from None
            raise Forbidden() from None
    if target != caller.id and not caller.is_admin:
        raise Forbidden()
    user = await info.context.loaders.user.load(target)
    if user is None:
        if target == caller.id:
            raise Unauthenticated("The signed-in user no longer exists")
        raise NotFound("User not found")
    return user


async def me(info: Info) -> UserRow:
    caller = info.context.require_caller()
    user = await info.context.loaders.user.load(caller.id)
    if user is None:
        raise Unauthenticated("The signed-in user no longer exists")
    return user


async def users_page(info: Info, first: int | None, after: str | None
                     ) -> tuple[list[asyncpg.Record], int]:
    """A page of users for the admin connection (rows fetched `first + 1`); the user loader is
    primed with them, so their nested analytics need no further user lookup."""
    caller = info.context.require_caller()
    if not caller.is_admin:
        raise Forbidden("Only an admin may list users")
    size = check_first(first)
    cursor = decode_cursor(after)
    rows = await info.context.resources.pool.fetch(
        query("analytics_users_page"), cursor[0] if cursor else None,
        cursor[1] if cursor else None, size + 1)
    loader = info.context.loaders.user
    for row in rows[:size]:
        loader.prime(row["id"], UserRow.from_record(row))
    return list(rows), size


# -- figures --------------------------------------------------------------------------------

def daily_score(half_points: int, daily_goal: int) -> int:
    """min(100, 100 × points / (2 × daily_goal)), 1 decimal, in integer tenths (100 is 1000);
    points = half_points / 2. Integers rather than Decimals: a dashboard scores every day of its
    ranges, and Decimal division cost a tenth of an uncached one. `daily_goal` is 1 to 100 (the
    `users` table's check)."""
    if not half_points:
        return 0
    return min(1000, round1_tenths(100 * half_points, 4 * daily_goal))


def mean_score(total: int, count: int) -> Decimal:
    """The mean of `count` daily scores adding up to `total` tenths, 1 decimal; 0.0 over no
    days."""
    return tenths(round1_tenths(total, 10 * count)) if count else ZERO


def rate(part: int, whole: int) -> Decimal | None:
    """100 × part / whole, 1 decimal; None when whole is 0."""
    return round1(100 * part, whole) if whole else None


def _days(series: DaySeries) -> dict[date, DayCounts]:
    return {row.day: row for row in series.days}


def trend_points(series: DaySeries, period: str, d_from: date, d_to: date, today: date,
                 daily_goal: int) -> tuple[TrendPoint, ...]:
    """Every bucket overlapping [from, to], zero-filled, counting only days inside the range."""
    if period == "DAY":
        return _day_points(series, d_from, d_to, today, daily_goal)
    return _bucket_points(series, period, d_from, d_to, today, daily_goal)


def _bucket_points(series: DaySeries, period: str, d_from: date, d_to: date, today: date,
                   daily_goal: int) -> tuple[TrendPoint, ...]:
    """`trend_points` of any period: each bucket's days summed, its scores averaged."""
    days = _days(series)
    points = []
    start = bucket_start(period, d_from)
    while start <= d_to:
        end = next_bucket(period, start)
        created = completed = due = on_time = 0
        score_total = scored_days = 0  # the daily scores, in tenths
        day = max(start, d_from)
        while day < end and day <= d_to:
            row = days.get(day)
            if row is not None:
                created += row.tasks_created
                completed += row.tasks_completed
                due += row.tasks_due
                on_time += row.tasks_completed_on_time
            if day <= today:
                score_total += daily_score(row.half_points if row else 0, daily_goal)
                scored_days += 1
            day += ONE_DAY
        points.append(TrendPoint(date=start, tasks_created=created, tasks_completed=completed,
                                 tasks_due=due, tasks_completed_on_time=on_time,
                                 completion_rate=rate(on_time, due),
                                 productivity_score=mean_score(score_total, scored_days)))
        start = end
    return tuple(points)


def _day_points(series: DaySeries, d_from: date, d_to: date, today: date,
                daily_goal: int) -> tuple[TrendPoint, ...]:
    """`trend_points` of the DAY period, where a bucket is one day: the same points, without
    the buckets' arithmetic (a dashboard's 30-day trend is most of its Python otherwise). A
    day's productivity score is its daily score (the mean over one day); a day after today has
    none, so 0.0; a day without a row counts zeros."""
    days = _days(series)
    points = []
    day = d_from
    while day <= d_to:
        row = days.get(day)
        if row is None:
            points.append(TrendPoint(day, 0, 0, 0, 0, None, ZERO))
        else:
            points.append(TrendPoint(day, row.tasks_created, row.tasks_completed, row.tasks_due,
                                     row.tasks_completed_on_time,
                                     rate(row.tasks_completed_on_time, row.tasks_due),
                                     tenths(daily_score(row.half_points, daily_goal))
                                     if day <= today else ZERO))
        day += ONE_DAY
    return tuple(points)


def productivity_figures(series: DaySeries, extras: ProductivityExtras, d_from: date,
                         d_to: date, today: date, daily_goal: int) -> Productivity:
    """The productivity fields: day-based ones from the series, the rest from the extras."""
    days = _days(series)
    score_total = scored_days = 0
    day = d_from
    while day <= min(d_to, today):
        row = days.get(day)
        score_total += daily_score(row.half_points if row else 0, daily_goal)
        scored_days += 1
        day += ONE_DAY
    rows = days.values()
    completed = sum(row.tasks_completed for row in rows)
    return Productivity(
        d_from=d_from, d_to=d_to,
        score=mean_score(score_total, scored_days),
        tasks_completed=completed,
        # one daily score per day of the range up to today: the same days
        average_tasks_per_day=round1(completed, scored_days) if scored_days else ZERO,
        current_streak=extras.current_streak,
        longest_streak=extras.longest_streak,
        days_goal_met=sum(1 for row in rows if row.tasks_completed >= daily_goal),
        lead_time_hours=extras.lead_time_hours,
        cycle_time_hours=extras.cycle_time_hours,
        on_time_rate=rate(sum(row.tasks_completed_on_time for row in rows),
                          sum(row.tasks_due for row in rows)),
        most_productive_weekday=extras.most_productive_weekday,
        most_productive_hour=extras.most_productive_hour,
    )


# -- resolvers ------------------------------------------------------------------------------

async def overview(info: Info, user: UserRow) -> Overview:
    # `today` is in the key only so that a cached overview (overdue, due today) ends at the
    # user's local midnight; the SQL takes today from the database's clock.
    value = await info.context.loaders.overview.load((user.id, user.today))
    if value is None:  # deleted between the user lookup and this read
        raise NotFound("User not found")
    return value


async def trends(info: Info, user: UserRow, period: str, d_from: date | None,
                 d_to: date | None) -> Trend:
    d_from, d_to = resolve_range(period, d_from, d_to, user.today)
    series = await info.context.loaders.daily_series.load((user.id, d_from, d_to))
    return Trend(period=period, d_from=d_from, d_to=d_to,
                 points=trend_points(series, period, d_from, d_to, user.today, user.daily_goal))


async def productivity(info: Info, user: UserRow, d_from: date | None,
                       d_to: date | None) -> Productivity:
    d_from, d_to = resolve_range("DAY", d_from, d_to, user.today)
    key = (user.id, d_from, d_to)
    loaders = info.context.loaders
    # Both loads are queued in the same tick: each joins its loader's batch, and those batches
    # (with the other figure loaders' of the request) share one statement.
    series, extras = await asyncio.gather(loaders.daily_series.load(key),
                                          loaders.productivity.load(key))
    return productivity_figures(series, extras, d_from, d_to, user.today, user.daily_goal)
