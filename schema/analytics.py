"""Analytics types and the root `overview`, `trends` and `productivity` queries.

Every figure is defined in docs/analytics.md; resolvers/analytics.py computes them from the
loaders' exact counts, as the typed figures of domain/figures.py, and these types only carry
them (exact `Decimal` rates and scores become GraphQL `Float`s here).
"""

from __future__ import annotations

import datetime
import enum
from decimal import Decimal
from typing import Annotated, Any

import strawberry

from domain import figures
from resolvers import analytics as resolve
from resolvers.context import Info

# `from` is a Python keyword: the argument is `from_` in Python and `from` in the schema.
FromArg = Annotated[datetime.date | None, strawberry.argument(name="from")]


def _float(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


@strawberry.enum
class Period(enum.Enum):
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


@strawberry.enum
class Weekday(enum.Enum):
    MONDAY = "MONDAY"
    TUESDAY = "TUESDAY"
    WEDNESDAY = "WEDNESDAY"
    THURSDAY = "THURSDAY"
    FRIDAY = "FRIDAY"
    SATURDAY = "SATURDAY"
    SUNDAY = "SUNDAY"


@strawberry.type
class PriorityDistribution:
    high: int
    medium: int
    low: int


@strawberry.type
class StatusDistribution:
    todo: int
    in_progress: int
    done: int


@strawberry.type(description="Figures over all of a user's (non-deleted) tasks.")
class Overview:
    total_tasks: int
    completed_tasks: int
    pending_tasks: int
    in_progress_tasks: int
    overdue_tasks: int = strawberry.field(description="Not done and due before today.")
    due_today_tasks: int = strawberry.field(description="Not done and due today.")
    completion_rate: float = strawberry.field(
        description="100 × completed / total, 1 decimal; 0.0 without tasks.")
    priority_distribution: PriorityDistribution
    status_distribution: StatusDistribution

    @classmethod
    def from_value(cls, value: figures.Overview) -> Overview:
        priority, status = value.priority, value.status
        return cls(
            total_tasks=value.total_tasks, completed_tasks=value.completed_tasks,
            pending_tasks=value.pending_tasks, in_progress_tasks=value.in_progress_tasks,
            overdue_tasks=value.overdue_tasks, due_today_tasks=value.due_today_tasks,
            completion_rate=float(value.completion_rate),
            priority_distribution=PriorityDistribution(
                high=priority.high, medium=priority.medium, low=priority.low),
            status_distribution=StatusDistribution(
                todo=status.todo, in_progress=status.in_progress, done=status.done))


@strawberry.type(description="One bucket (day, ISO week or month) of a trend.")
class TrendPoint:
    date: datetime.date = strawberry.field(
        description="The bucket's first day (the Monday of a week, the 1st of a month).")
    tasks_created: int
    tasks_completed: int
    tasks_due: int
    tasks_completed_on_time: int
    completion_rate: float | None = strawberry.field(
        description="100 × on time / due, 1 decimal; null when nothing was due.")
    productivity_score: float = strawberry.field(
        description="The mean daily score of the bucket's days in range up to today.")

    @classmethod
    def from_value(cls, value: figures.TrendPoint) -> TrendPoint:
        return cls(date=value.date, tasks_created=value.tasks_created,
                   tasks_completed=value.tasks_completed, tasks_due=value.tasks_due,
                   tasks_completed_on_time=value.tasks_completed_on_time,
                   completion_rate=_float(value.completion_rate),
                   productivity_score=float(value.productivity_score))


@strawberry.type
class Trends:
    period: Period
    from_: datetime.date = strawberry.field(name="from")
    to: datetime.date
    points: list[TrendPoint]

    @classmethod
    def from_value(cls, value: figures.Trend) -> Trends:
        return cls(period=Period(value.period), from_=value.d_from, to=value.d_to,
                   points=[TrendPoint.from_value(point) for point in value.points])


@strawberry.type(description="Productivity over a range of local days (default the last 30).")
class Productivity:
    from_: datetime.date = strawberry.field(name="from")
    to: datetime.date
    score: float
    tasks_completed: int
    average_tasks_per_day: float = strawberry.field(
        description="Tasks completed per day of the range up to today, 1 decimal.")
    current_streak: int
    longest_streak: int
    days_goal_met: int
    lead_time_hours: float | None
    cycle_time_hours: float | None
    on_time_rate: float | None
    most_productive_weekday: Weekday | None
    most_productive_hour: int | None

    @classmethod
    def from_value(cls, value: figures.Productivity) -> Productivity:
        weekday = value.most_productive_weekday
        return cls(from_=value.d_from, to=value.d_to, score=float(value.score),
                   tasks_completed=value.tasks_completed,
                   average_tasks_per_day=float(value.average_tasks_per_day),
                   current_streak=value.current_streak,
                   longest_streak=value.longest_streak, days_goal_met=value.days_goal_met,
                   lead_time_hours=_float(value.lead_time_hours),
                   cycle_time_hours=_float(value.cycle_time_hours),
                   on_time_rate=_float(value.on_time_rate),
                   most_productive_weekday=Weekday(weekday) if weekday else None,
                   most_productive_hour=value.most_productive_hour)


async def overview_of(info: Info, user_id: Any | None) -> Overview:
    user = await resolve.subject(info, user_id)
    return Overview.from_value(await resolve.overview(info, user))


async def trends_of(info: Info, user_id: Any | None, period: Period,
                    d_from: datetime.date | None, d_to: datetime.date | None) -> Trends:
    user = await resolve.subject(info, user_id)
    return Trends.from_value(await resolve.trends(info, user, period.value, d_from, d_to))


async def productivity_of(info: Info, user_id: Any | None, d_from: datetime.date | None,
                          d_to: datetime.date | None) -> Productivity:
    user = await resolve.subject(info, user_id)
    return Productivity.from_value(await resolve.productivity(info, user, d_from, d_to))


@strawberry.type
class AnalyticsQuery:
    @strawberry.field(description="Overview of a user's tasks (default: the caller's).")
    async def overview(self, info: Info, user_id: strawberry.ID | None = None) -> Overview:
        return await overview_of(info, user_id)

    @strawberry.field(description="Trend buckets over local days [from, to] (default: the last "
                                  "30 days, 12 weeks or 12 months ending today).")
    async def trends(self, info: Info, user_id: strawberry.ID | None = None,
                     period: Period = Period.DAY,
                     from_: FromArg = None, to: datetime.date | None = None) -> Trends:
        return await trends_of(info, user_id, period, from_, to)

    @strawberry.field(description="Productivity over local days [from, to] (default: the last "
                                  "30 days ending today).")
    async def productivity(self, info: Info, user_id: strawberry.ID | None = None,
                           from_: FromArg = None,
                           to: datetime.date | None = None) -> Productivity:
        return await productivity_of(info, user_id, from_, to)
