"""A plain-Python reference of every analytics figure, straight from docs/analytics.md.

Deliberately independent of the gateway's code: it reads task rows as dicts, walks the days one by
one, and rounds with `fractions.Fraction`, so that a bug in the SQL, the loaders or the resolvers'
arithmetic shows up as a difference. Output uses the GraphQL field names.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

Task = Mapping[str, Any]
WEIGHTS = {"high": 3, "medium": 2, "low": 1}
WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


def r1f(value: Fraction) -> Fraction:
    """Round half up to one decimal, exactly (values here are never negative)."""
    return Fraction(math.floor(value * 10 + Fraction(1, 2)), 10)


def r1(value: Fraction) -> float:
    return float(r1f(value))


def local(ts: datetime | None, tz: str) -> datetime | None:
    return ts.astimezone(ZoneInfo(tz)) if ts is not None else None


def live(tasks: Iterable[Task]) -> list[Task]:
    return [t for t in tasks if not t["deleted"]]


def overview(tasks: Iterable[Task], today: date) -> dict[str, Any]:
    rows = live(tasks)
    by_status = Counter(t["status"] for t in rows)
    by_priority = Counter(t["priority"] for t in rows)
    total = len(rows)
    return {
        "totalTasks": total,
        "completedTasks": by_status["done"],
        "pendingTasks": by_status["todo"],
        "inProgressTasks": by_status["in_progress"],
        "overdueTasks": sum(1 for t in rows if t["status"] != "done" and t["due_date"] is not None
                            and t["due_date"] < today),
        "dueTodayTasks": sum(1 for t in rows if t["status"] != "done"
                             and t["due_date"] == today),
        "completionRate": r1(Fraction(100 * by_status["done"], total)) if total else 0.0,
        "priorityDistribution": {p: by_priority[p] for p in ("high", "medium", "low")},
        "statusDistribution": {"todo": by_status["todo"], "inProgress": by_status["in_progress"],
                               "done": by_status["done"]},
    }


def completed_day(task: Task, tz: str) -> date | None:
    if task["status"] != "done":
        return None
    stamp = local(task["completed_at"], tz)
    return stamp.date() if stamp is not None else None


def days(tasks: Iterable[Task], tz: str, goal: int, d_from: date, d_to: date
         ) -> dict[date, dict[str, Any]]:
    """Every local day's figures in [d_from, d_to] (zero days included), with exact scores."""
    table = {d: {"created": 0, "completed": 0, "due": 0, "on_time": 0, "points": Fraction(0)}
             for d in days_between(d_from, d_to)}
    for t in live(tasks):
        created = local(t["created_at"], tz).date()  # type: ignore[union-attr]
        if created in table:
            table[created]["created"] += 1
        done = completed_day(t, tz)
        if done in table:
            table[done]["completed"] += 1  # type: ignore[index]
            in_time = t["due_date"] is None or done <= t["due_date"]  # type: ignore[operator]
            table[done]["points"] += WEIGHTS[t["priority"]] * (  # type: ignore[index]
                1 if in_time else Fraction(1, 2))
        if t["due_date"] in table:
            table[t["due_date"]]["due"] += 1
            if done is not None and done <= t["due_date"]:
                table[t["due_date"]]["on_time"] += 1
    for figures in table.values():
        figures["score"] = min(Fraction(100), r1f(100 * figures.pop("points") / (2 * goal)))
    return table


def day(tasks: Iterable[Task], tz: str, goal: int, d: date) -> dict[str, Any]:
    """One local day's figures."""
    return days(tasks, tz, goal, d, d)[d]


def default_range(period: str, today: date) -> tuple[date, date]:
    if period == "DAY":
        return today - timedelta(days=29), today
    if period == "WEEK":
        monday = today - timedelta(days=today.weekday())
        return monday - timedelta(weeks=11), today
    index = today.year * 12 + today.month - 1 - 11
    return date(index // 12, index % 12 + 1, 1), today


def bucket_of(period: str, d: date) -> date:
    if period == "WEEK":
        return d - timedelta(days=d.weekday())
    if period == "MONTH":
        return d.replace(day=1)
    return d


def days_between(d_from: date, d_to: date) -> list[date]:
    return [d_from + timedelta(days=i) for i in range((d_to - d_from).days + 1)]


def trends(tasks: Iterable[Task], tz: str, goal: int, period: str, d_from: date, d_to: date,
           today: date) -> dict[str, Any]:
    rows = list(tasks)
    buckets: dict[date, list[tuple[date, dict[str, Any]]]] = {}
    for d, figures in days(rows, tz, goal, d_from, d_to).items():
        buckets.setdefault(bucket_of(period, d), []).append((d, figures))
    points = []
    for label, members in buckets.items():
        due = sum(m["due"] for _, m in members)
        on_time = sum(m["on_time"] for _, m in members)
        scores = [m["score"] for d, m in members if d <= today]
        points.append({
            "date": label.isoformat(),
            "tasksCreated": sum(m["created"] for _, m in members),
            "tasksCompleted": sum(m["completed"] for _, m in members),
            "tasksDue": due,
            "tasksCompletedOnTime": on_time,
            "completionRate": r1(Fraction(100 * on_time, due)) if due else None,
            "productivityScore": r1(sum(scores, Fraction(0)) / len(scores)) if scores else 0.0,
        })
    return {"period": period, "from": d_from.isoformat(), "to": d_to.isoformat(),
            "points": points}


def _busiest(values: list[int]) -> int | None:
    if not values:
        return None
    counts = Counter(values)
    best = max(counts.values())
    return min(v for v, n in counts.items() if n == best)


def productivity(tasks: Iterable[Task], events: Iterable[Mapping[str, Any]], tz: str, goal: int,
                 d_from: date, d_to: date, today: date) -> dict[str, Any]:
    rows = live(tasks)
    figures = days(rows, tz, goal, d_from, d_to)
    scores = [f["score"] for d, f in figures.items() if d <= today]
    done = [t for t in rows if (c := completed_day(t, tz)) is not None and d_from <= c <= d_to]
    due = sum(f["due"] for f in figures.values())
    on_time = sum(f["on_time"] for f in figures.values())
    first_start: dict[Any, datetime] = {}
    for e in sorted(events, key=lambda e: e["at"]):
        if e["to_status"] == "in_progress":
            first_start.setdefault(e["task_id"], e["at"])
    leads = [Fraction(int((t["completed_at"] - t["created_at"]).total_seconds() * 1_000_000),
                      3_600_000_000) for t in done]
    cycles = [Fraction(int((t["completed_at"] - first_start[t["id"]]).total_seconds()
                           * 1_000_000), 3_600_000_000)
              for t in done if t["id"] in first_start]
    completion_days = {c for t in rows if (c := completed_day(t, tz)) is not None and c <= today}
    current = 0
    cursor = today if today in completion_days else today - timedelta(days=1)
    while cursor in completion_days:
        current += 1
        cursor -= timedelta(days=1)
    longest = 0
    for d in completion_days:
        if d - timedelta(days=1) not in completion_days:
            n = 0
            while d + timedelta(days=n) in completion_days:
                n += 1
            longest = max(longest, n)
    weekday = _busiest([local(t["completed_at"], tz).weekday() for t in done])  # type: ignore[union-attr]
    return {
        "from": d_from.isoformat(), "to": d_to.isoformat(),
        "score": r1(sum(scores, Fraction(0)) / len(scores)) if scores else 0.0,
        "tasksCompleted": len(done),
        "averageTasksPerDay": r1(Fraction(len(done), len(scores))) if scores else 0.0,
        "currentStreak": current,
        "longestStreak": longest,
        "daysGoalMet": sum(1 for f in figures.values() if f["completed"] >= goal),
        "leadTimeHours": r1(sum(leads, Fraction(0)) / len(leads)) if leads else None,
        "cycleTimeHours": r1(sum(cycles, Fraction(0)) / len(cycles)) if cycles else None,
        "onTimeRate": r1(Fraction(100 * on_time, due)) if due else None,
        "mostProductiveWeekday": WEEKDAYS[weekday] if weekday is not None else None,
        "mostProductiveHour": _busiest([local(t["completed_at"], tz).hour  # type: ignore[union-attr]
                                        for t in done]),
    }
