"""Figures updated from a task change instead of recomputed: how live pushes keep up with writes.

The figures of docs/analytics.md that count tasks are sums over tasks of what each task
contributes. So the figures of a user at data version V, and one task's change that took the
user to V + 1, give the figures at V + 1 without reading anything: subtract what the task
contributed before the change and add what it contributes after.

- A **task's facts** (`TaskFacts`) are what analytics reads of a task: status, priority, due
  date, the created and completed instants. A task that does not exist, or is deleted, has none
  (None): it counts nowhere.
- A **change** (`TaskChange`) is one transaction's change to one task: the user's data version
  it raised (by exactly one: a task mutation runs one statement on `tasks`, and the version
  trigger raises the version once per statement), the facts before and the facts after. The
  API's task mutations send it in their change message (gateway/live/fanout.py,
  domain/changes.py); other writers (workers, psql) send none, and their changes are recomputed.
- **`advance(values, timezone, changes)`** applies changes, in version order, to the figures a
  live subscription was last pushed (the figure loaders' values by loader key): the overview's
  counts and the daily series' per-day counts exactly (a day left without activity is dropped,
  as the statement leaves it out). The productivity extras (lead and cycle times, busiest weekday
  and hour, streaks) are not sums of anything kept here; they cannot change when a change leaves
  the task's completion alone (not done before and after, or done at the same instant), and
  otherwise `advance` answers None: the caller recomputes from PostgreSQL.

The facts travel as JSON in the change message; `FACTS_FORMAT` is their layout (a process that
reads a message carrying another treats the change as one without facts: it recomputes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from domain.figures import DayCounts, DaySeries, Overview

FACTS_FORMAT = 1
"""Layout of an encoded change: `[1, before, after]` (the message carries the version beside
it), a task's facts being
`[status, priority, due date (ISO) or null, created (µs since the epoch), completed (µs) or
null]` and a missing or deleted task null."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WEIGHTS = {"high": 3, "medium": 2, "low": 1}
STATUSES = ("todo", "in_progress", "done")

Values = dict[tuple[str, tuple[Any, ...]], Any]
"""A user's figure values by (loader field, loader key), as loaders/analytics.py gives them:
("overview", (user, today)) → Overview, ("trends", (user, from, to)) → DaySeries,
("productivity", (user, from, to)) → ProductivityExtras."""


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """What the analytics read of one task."""

    status: str
    priority: str
    due_date: date | None
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def of_row(cls, row: Mapping[str, Any] | None) -> TaskFacts | None:
        """The facts of a `tasks` row (a mapping, asyncpg Records work); None for no row or a
        deleted task."""
        if row is None or row["deleted"]:
            return None
        return cls(row["status"], row["priority"], row["due_date"], row["created_at"],
                   row["completed_at"])

    def encode(self) -> list[Any]:
        return [self.status, self.priority,
                self.due_date.isoformat() if self.due_date is not None else None,
                _micros(self.created_at),
                _micros(self.completed_at) if self.completed_at is not None else None]

    @classmethod
    def decode(cls, raw: Any) -> TaskFacts | None:
        """The facts of `encode`'s output (None for null); ValueError for anything else."""
        if raw is None:
            return None
        if not isinstance(raw, list) or len(raw) != 5:
            raise ValueError("task facts: not a list of five")
        status, priority, due, created, completed = raw
        if status not in STATUSES or priority not in WEIGHTS:
            raise ValueError("task facts: unknown status or priority")
        return cls(status, priority, date.fromisoformat(due) if due is not None else None,
                   _instant(created), _instant(completed) if completed is not None else None)

    def completion(self) -> tuple[datetime, datetime] | None:
        """What the productivity extras read of this task: its created and completed instants
        when it counts as completed (status done, with a completion instant), else None."""
        if self.status != "done" or self.completed_at is None:
            return None
        return self.created_at, self.completed_at


@dataclass(frozen=True, slots=True)
class TaskChange:
    """One transaction's change to one task of a user: it raised the user's data version to
    `version`; the task's facts before and after (None: missing or deleted)."""

    version: int
    before: TaskFacts | None
    after: TaskFacts | None

    def encode(self) -> list[Any]:
        """The change as JSON, without its version (the change message carries it beside)."""
        return [FACTS_FORMAT, self.before.encode() if self.before is not None else None,
                self.after.encode() if self.after is not None else None]

    @classmethod
    def decode(cls, version: int, raw: Any) -> TaskChange | None:
        """The change to `version` from `encode`'s output; None for one of another format or
        malformed."""
        try:
            fmt, before, after = raw
            if fmt != FACTS_FORMAT:
                return None
            return cls(version, TaskFacts.decode(before), TaskFacts.decode(after))
        except (TypeError, ValueError, OverflowError):
            return None

    def touches_completion(self) -> bool:
        """Whether the change can move the productivity extras (see the module docstring)."""
        before = self.before.completion() if self.before is not None else None
        after = self.after.completion() if self.after is not None else None
        return before != after


def _micros(instant: datetime) -> int:
    return (instant - EPOCH) // timedelta(microseconds=1)


def _instant(micros: Any) -> datetime:
    if not isinstance(micros, int) or isinstance(micros, bool):
        raise ValueError("task facts: an instant is an integer of microseconds")
    return EPOCH + timedelta(microseconds=micros)


# -- applying changes -----------------------------------------------------------------------------

def advance(values: Values, timezone: str, changes: Sequence[TaskChange]) -> Values | None:
    """The figure values after `changes` (one user's, in version order), or None when one of
    them cannot be updated so (see the module docstring): recompute them."""
    if not changes:
        return dict(values)
    completions_move = any(change.touches_completion() for change in changes)
    zone = ZoneInfo(timezone)
    advanced: Values = {}
    for (field, key), value in values.items():
        if field == "overview" and value is not None:
            advanced[field, key] = _overview(value, key[1], changes)
        elif field == "trends":
            advanced[field, key] = _series(value, zone, changes)
        elif field == "productivity" and not completions_move:
            advanced[field, key] = value
        else:  # a missing user's overview, moved extras, a kind this module does not know
            return None
    return advanced


def _overview_counts(facts: TaskFacts, today: date) -> tuple[int, ...]:
    """What one task adds to `Overview.counts()` (total, done, todo, in progress, overdue, due
    today, high, medium, low) on the local day `today`."""
    open_task = facts.status != "done"
    due = facts.due_date
    return (1, facts.status == "done", facts.status == "todo", facts.status == "in_progress",
            open_task and due is not None and due < today,
            open_task and due is not None and due == today,
            facts.priority == "high", facts.priority == "medium", facts.priority == "low")


def _overview(value: Overview, today: date, changes: Iterable[TaskChange]) -> Overview:
    counts = list(value.counts())
    for change in changes:
        for facts, sign in ((change.before, -1), (change.after, 1)):
            if facts is not None:
                for i, count in enumerate(_overview_counts(facts, today)):
                    counts[i] += sign * count
    return Overview.of_counts(*counts)


def _day_counts(facts: TaskFacts, zone: ZoneInfo) -> list[tuple[date, int, int]]:
    """What one task adds to the daily series: (local day, column, amount), the columns being
    created, completed, due, completed on time and half points (docs/analytics.md, "One day";
    sql/queries/analytics.sql, analytics_live_days)."""
    parts = [(facts.created_at.astimezone(zone).date(), 0, 1)]
    completed = facts.completed_at.astimezone(zone).date() \
        if facts.status == "done" and facts.completed_at is not None else None
    due = facts.due_date
    if completed is not None:
        on_time = due is None or completed <= due
        half_points = WEIGHTS[facts.priority] * (2 if on_time else 1)
        parts += [(completed, 1, 1), (completed, 4, half_points)]
    if due is not None:
        parts.append((due, 2, 1))
        if completed is not None and completed <= due:
            parts.append((due, 3, 1))
    return parts


def _series(value: DaySeries, zone: ZoneInfo, changes: Iterable[TaskChange]) -> DaySeries:
    days = {d.day: [d.tasks_created, d.tasks_completed, d.tasks_due, d.tasks_completed_on_time,
                    d.half_points] for d in value.days}
    for change in changes:
        for facts, sign in ((change.before, -1), (change.after, 1)):
            if facts is None:
                continue
            for day, column, amount in _day_counts(facts, zone):
                if value.d_from <= day <= value.d_to:
                    days.setdefault(day, [0, 0, 0, 0, 0])[column] += sign * amount
    return DaySeries(value.d_from, value.d_to, tuple(
        DayCounts(day, *counts) for day, counts in sorted(days.items()) if any(counts)))
