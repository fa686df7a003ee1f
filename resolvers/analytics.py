"""Analytics resolvers: who may see whose figures, argument checks, then the loaders.

Resolvers never query directly: every figure comes through the per-request loaders of
loaders/analytics.py, so that 100 users' figures in one request cost one statement per kind of
figure. The arithmetic on the loaders' exact integer counts (buckets, rates, scores: all rounded
half up to 1 decimal with `Decimal`) lives here, as plain functions that tests can call; the
definitions are in docs/analytics.md. Results are plain dicts that schema/analytics.py turns into
types.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from gateway.data.db import query
from gateway.errors import BadUserInput, Forbidden, NotFound, Unauthenticated
from loaders.analytics import (
    add_months,
    default_from,
    month_start,
    round1,
    user_value,
    week_start,
)
from resolvers.context import Info
from resolvers.pagination import check_first, decode_cursor

MAX_BUCKETS = 1000
HUNDRED = Decimal(100)
ZERO = Decimal("0.0")


# -- who asks -------------------------------------------------------------------------------

async def subject(info: Info, user_id: Any | None) -> dict[str, Any]:
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


async def me(info: Info) -> dict[str, Any]:
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
        loader.prime(row["id"], user_value(row))
    return list(rows), size


# -- ranges ---------------------------------------------------------------------------------

def bucket_start(period: str, day: date) -> date:
    if period == "WEEK":
        return week_start(day)
    if period == "MONTH":
        return month_start(day)
    return day


def next_bucket(period: str, start: date) -> date:
    if period == "WEEK":
        return start + timedelta(weeks=1)
    if period == "MONTH":
        return add_months(start, 1)
    return start + timedelta(days=1)


def bucket_count(period: str, d_from: date, d_to: date) -> int:
    if period == "WEEK":
        return (week_start(d_to) - week_start(d_from)).days // 7 + 1
    if period == "MONTH":
        return (d_to.year - d_from.year) * 12 + d_to.month - d_from.month + 1
    return (d_to - d_from).days + 1


def resolve_range(period: str, d_from: date | None, d_to: date | None,
                  today: date) -> tuple[date, date]:
    """The effective [from, to]: `to` defaults to today, `from` to the default window ending at
    `to`. BAD_USER_INPUT (naming `from`) when from is after to or the range spans more than
    1000 buckets of the period."""
    d_to = d_to or today
    d_from = d_from or default_from(period, d_to)
    if d_from > d_to:
        raise BadUserInput("from must not be after to", field="from")
    if bucket_count(period, d_from, d_to) > MAX_BUCKETS:
        raise BadUserInput(f"the range spans more than {MAX_BUCKETS} "
                           f"{period.lower()}s", field="from")
    return d_from, d_to


# -- figures --------------------------------------------------------------------------------

def daily_score(half_points: int, daily_goal: int) -> Decimal:
    """min(100, 100 × points / (2 × daily_goal)), 1 decimal; points = half_points / 2."""
    if not half_points:
        return ZERO
    return min(HUNDRED, round1(100 * half_points, 4 * daily_goal))


def mean_score(scores: Iterable[Decimal]) -> Decimal:
    """The mean of (1-decimal) daily scores, 1 decimal; 0.0 over no days."""
    values = list(scores)
    return round1(sum(values, ZERO), len(values)) if values else ZERO


def rate(part: int, whole: int) -> float | None:
    return float(round1(100 * part, whole)) if whole else None


def _days(series: dict[str, Any]) -> dict[date, list[int]]:
    return {date.fromisoformat(row[0]): row[1:] for row in series["days"]}


def trend_points(series: dict[str, Any], period: str, d_from: date, d_to: date, today: date,
                 daily_goal: int) -> list[dict[str, Any]]:
    """Every bucket overlapping [from, to], zero-filled, counting only days inside the range."""
    days = _days(series)
    points = []
    start = bucket_start(period, d_from)
    while start <= d_to:
        end = next_bucket(period, start)
        counts = [0, 0, 0, 0, 0]
        scores = []
        day = max(start, d_from)
        while day < end and day <= d_to:
            row = days.get(day)
            if row is not None:
                counts = [a + b for a, b in zip(counts, row, strict=True)]
            if day <= today:
                scores.append(daily_score(row[4] if row else 0, daily_goal))
            day += timedelta(days=1)
        created, completed, due, on_time, _ = counts
        points.append({"date": start, "tasks_created": created, "tasks_completed": completed,
                       "tasks_due": due, "tasks_completed_on_time": on_time,
                       "completion_rate": rate(on_time, due),
                       "productivity_score": float(mean_score(scores))})
        start = end
    return points


def productivity_figures(series: dict[str, Any], extras: dict[str, Any], d_from: date,
                         d_to: date, today: date, daily_goal: int) -> dict[str, Any]:
    """The productivity fields: day-based ones from the series, the rest from the extras."""
    days = _days(series)
    scores = []
    day = d_from
    while day <= min(d_to, today):
        row = days.get(day)
        scores.append(daily_score(row[4] if row else 0, daily_goal))
        day += timedelta(days=1)
    completed = sum(row[1] for row in days.values())
    due = sum(row[2] for row in days.values())
    on_time = sum(row[3] for row in days.values())
    return {
        "from": d_from, "to": d_to,
        "score": float(mean_score(scores)),
        "tasks_completed": completed,
        "current_streak": extras["current_streak"],
        "longest_streak": extras["longest_streak"],
        "days_goal_met": sum(1 for row in days.values() if row[1] >= daily_goal),
        "lead_time_hours": extras["lead_time_hours"],
        "cycle_time_hours": extras["cycle_time_hours"],
        "on_time_rate": rate(on_time, due),
        "most_productive_weekday": extras["most_productive_weekday"],
        "most_productive_hour": extras["most_productive_hour"],
    }


# -- resolvers ------------------------------------------------------------------------------

async def overview(info: Info, user: dict[str, Any]) -> dict[str, Any]:
    # `today` is in the key only so that a cached overview (overdue, due today) ends at the
    # user's local midnight; the SQL takes today from the database's clock.
    value = await info.context.loaders.overview.load((uuid.UUID(user["id"]), user["today"]))
    if value is None:  # deleted between the user lookup and this read
        raise NotFound("User not found")
    return value


async def trends(info: Info, user: dict[str, Any], period: str, d_from: date | None,
                 d_to: date | None) -> dict[str, Any]:
    today = date.fromisoformat(user["today"])
    d_from, d_to = resolve_range(period, d_from, d_to, today)
    series = await info.context.loaders.daily_series.load((uuid.UUID(user["id"]), d_from, d_to))
    return {"period": period, "from": d_from, "to": d_to,
            "points": trend_points(series, period, d_from, d_to, today, user["daily_goal"])}


async def productivity(info: Info, user: dict[str, Any], d_from: date | None,
                       d_to: date | None) -> dict[str, Any]:
    today = date.fromisoformat(user["today"])
    d_from, d_to = resolve_range("DAY", d_from, d_to, today)
    key = (uuid.UUID(user["id"]), d_from, d_to)
    loaders = info.context.loaders
    # Both loads are queued in the same tick, so each joins its own batch.
    series, extras = await asyncio.gather(loaders.daily_series.load(key),
                                          loaders.productivity.load(key))
    return productivity_figures(series, extras, d_from, d_to, today, user["daily_goal"])
