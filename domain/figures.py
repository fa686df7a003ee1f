"""The figures, typed once: what travels from SQL rows through loaders, the cache and resolvers to
the Strawberry types, and how a cached figure is written as JSON.

Every value is a frozen dataclass (slots): the loaders build them from rows, the cache stores
and returns them through `FigureCodec`, the resolvers compute the answers from them, and
schema/analytics.py and schema/users.py turn them into GraphQL types. Rates and scores are exact
`Decimal`s (1 decimal, docs/analytics.md) until the schema hands them to GraphQL as `Float`.

`FigureCodec(T)` writes a `T` as JSON and reads it back as a `T`, driven by the dataclass fields:
a dataclass is a JSON array of its fields in order, a tuple or list an array, a `date` or
`datetime` its ISO text, a `Decimal` its exact text, a `UUID` its text. Reading is strict: a value
of another shape (a field more or less, a wrong type) raises `FigureShapeError`, which the cache
treats as a miss. `FigureCodec(T).format` is a short hash of T's shape (field names and types,
recursively, and `CODEC_VERSION`), computed at import: the cache puts it in every key, so a
release that changes a figure's shape reads none of the entries of the previous one
(docs/cache.md, "Keys").
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import sys
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

from domain.ranges import round1

F = TypeVar("F")

CODEC_VERSION = 1
"""The codec's own rules (how each type is written); raise it when they change. A change of what
a figure means that leaves its shape alone (a new rounding rule) also needs a new key: raise the
`REVISION` of its type (a ClassVar, part of the shape)."""


# -- the user -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user as the analytics read it (`analytics_users`): the profile, the user's local today
    by the database's clock, and the data version that keys their cached figures. Never cached:
    "today" moves."""

    id: uuid.UUID
    email: str
    display_name: str
    timezone: str
    daily_goal: int
    role: str
    created_at: datetime
    today: date
    data_version: int

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> UserRow:
        """From a row of `analytics_users` or `analytics_users_page`."""
        return cls(id=row["id"], email=row["email"], display_name=row["display_name"],
                   timezone=row["timezone"], daily_goal=row["daily_goal"], role=row["role"],
                   created_at=row["created_at"], today=row["today"],
                   data_version=int(row["data_version"]))


# -- the overview (cached: `overview`) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriorityCounts:
    high: int
    medium: int
    low: int


@dataclass(frozen=True, slots=True)
class StatusCounts:
    todo: int
    in_progress: int
    done: int


@dataclass(frozen=True, slots=True)
class Overview:
    """Figures over all of a user's (non-deleted) tasks."""

    total_tasks: int
    completed_tasks: int
    pending_tasks: int
    in_progress_tasks: int
    overdue_tasks: int
    due_today_tasks: int
    completion_rate: Decimal  # 1 decimal; 0.0 without tasks
    priority: PriorityCounts
    status: StatusCounts

    @classmethod
    def of_counts(cls, total: int, done: int, todo: int, in_progress: int, overdue: int,
                  due_today: int, high: int, medium: int, low: int) -> Overview:
        """The overview of these task counts (its rate computed as docs/analytics.md says)."""
        return cls(
            total_tasks=total, completed_tasks=done, pending_tasks=todo,
            in_progress_tasks=in_progress, overdue_tasks=overdue, due_today_tasks=due_today,
            completion_rate=round1(100 * done, total) if total else Decimal("0.0"),
            priority=PriorityCounts(high=high, medium=medium, low=low),
            status=StatusCounts(todo=todo, in_progress=in_progress, done=done))

    def counts(self) -> tuple[int, int, int, int, int, int, int, int, int]:
        """The counts `of_counts` takes, in its order."""
        return (self.total_tasks, self.completed_tasks, self.pending_tasks,
                self.in_progress_tasks, self.overdue_tasks, self.due_today_tasks,
                self.priority.high, self.priority.medium, self.priority.low)


# -- the daily series (cached: `trends`) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayCounts:
    """One local day with activity: exact counts, and productivity points in halves."""

    day: date
    tasks_created: int
    tasks_completed: int
    tasks_due: int
    tasks_completed_on_time: int
    half_points: int


@dataclass(frozen=True, slots=True)
class DaySeries:
    """The sparse per-day counts of the local days [d_from, d_to]: days without activity are
    absent. Serves trends of every period and the day-based productivity figures."""

    d_from: date
    d_to: date
    days: tuple[DayCounts, ...]


# -- the productivity extras (cached: `productivity`) -------------------------------------------


@dataclass(frozen=True, slots=True)
class ProductivityExtras:
    """The productivity figures that need raw completions, and the all-history streaks."""

    lead_time_hours: Decimal | None
    cycle_time_hours: Decimal | None
    most_productive_weekday: str | None  # MONDAY..SUNDAY
    most_productive_hour: int | None
    current_streak: int
    longest_streak: int

    @classmethod
    def streaks_only(cls, current_streak: int = 0, longest_streak: int = 0
                     ) -> ProductivityExtras:
        """No completion in the range: only the streaks, which are over all history."""
        return cls(None, None, None, None, current_streak, longest_streak)


# -- what the resolvers answer (not cached) -----------------------------------------------------


@dataclass(slots=True)
class TrendPoint:
    """One bucket of a trend: its first day and the figures of its days inside the range. Not
    frozen, unlike the figures: a dashboard makes thirty of these per request, never kept nor
    shared, and a frozen dataclass's `__init__` costs two and a half times as much."""

    date: date
    tasks_created: int
    tasks_completed: int
    tasks_due: int
    tasks_completed_on_time: int
    completion_rate: Decimal | None
    productivity_score: Decimal


@dataclass(frozen=True, slots=True)
class Trend:
    period: str  # DAY, WEEK or MONTH
    d_from: date
    d_to: date
    points: tuple[TrendPoint, ...]


@dataclass(frozen=True, slots=True)
class Productivity:
    d_from: date
    d_to: date
    score: Decimal
    tasks_completed: int
    average_tasks_per_day: Decimal
    current_streak: int
    longest_streak: int
    days_goal_met: int
    lead_time_hours: Decimal | None
    cycle_time_hours: Decimal | None
    on_time_rate: Decimal | None
    most_productive_weekday: str | None
    most_productive_hour: int | None


# -- shapes and formats -------------------------------------------------------------------------


class FigureShapeError(ValueError):
    """A stored value that does not have the shape of the figure type asked for."""


def _hints(cls: type) -> dict[str, Any]:
    # The module's names, not the class's: a field named `date` must not hide the type `date`.
    names = vars(sys.modules[cls.__module__])
    return typing.get_type_hints(cls, names, names)


def shape_of(tp: Any) -> str:
    """A text naming the shape of a type: for a dataclass its fields' names and shapes in order
    (and its `REVISION`, if any), recursively; for a union its members; for a container its item
    shape; otherwise the type's name (an enum with its values)."""
    return _shape(tp, ())


def _shape(tp: Any, seen: tuple[type, ...]) -> str:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if tp in seen:
            return f"<{tp.__qualname__}>"  # a recursive type: named, not expanded again
        hints = _hints(tp)
        inner = ",".join(f"{f.name}:{_shape(hints[f.name], (*seen, tp))}"
                         for f in dataclasses.fields(tp))
        revision = getattr(tp, "REVISION", 0)
        return f"{{{inner}}}" + (f"r{revision}" if revision else "")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return "|".join(sorted(_shape(a, seen) for a in args))
    if origin in (tuple, list):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return "(" + ",".join(_shape(a, seen) for a in args) + ")"
        return f"[{_shape(args[0], seen)}]"
    if origin is dict:
        return f"<{_shape(args[0], seen)}:{_shape(args[1], seen)}>"
    if tp is type(None) or tp is None:
        return "null"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return f"{tp.__name__}(" + ",".join(str(m.value) for m in tp) + ")"
    if isinstance(tp, type):
        return tp.__name__
    raise TypeError(f"no shape for {tp!r}")


def digest(*parts: str) -> str:
    """A short, stable hash of some texts (10 hex digits)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:10]


def format_of(tp: Any) -> str:
    """The cache format of a figure type: changes whenever its shape or the codec's rules do."""
    return digest(f"codec{CODEC_VERSION}", shape_of(tp))


# -- the JSON codec -----------------------------------------------------------------------------

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]


def _nullable(tp: Any, args: tuple[Any, ...]) -> Any:
    """`X` of a `X | None` union, the only kind of union a figure may hold."""
    members = [a for a in args if a is not type(None)]
    if len(members) != 1:
        raise TypeError(f"only `X | None` unions are supported, not {tp!r}")
    return members[0]


def _encoder(tp: Any) -> Encoder:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        fields = [(f.name, _encoder(hints[f.name])) for f in dataclasses.fields(tp)]

        def encode_dataclass(value: Any) -> Any:
            return [enc(getattr(value, name)) for name, enc in fields]
        return encode_dataclass
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = _encoder(_nullable(tp, args))
        return lambda value: None if value is None else inner(value)
    if origin in (tuple, list):
        item = _encoder(args[0])
        return lambda value: [item(v) for v in value]
    if tp in (date, datetime):
        return lambda value: value.isoformat()
    if tp in (Decimal, uuid.UUID):
        return str
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return lambda value: value.value
    if tp in (int, str, float, bool):
        return lambda value: value
    raise TypeError(f"cannot encode {tp!r}")


def _fail(tp: Any, data: Any) -> FigureShapeError:
    return FigureShapeError(f"expected {shape_of(tp) if tp is not None else '?'}, "
                            f"got {type(data).__name__}")


def _decoder(tp: Any) -> Decoder:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        cls: Any = tp
        hints = _hints(tp)
        fields = [_decoder(hints[f.name]) for f in dataclasses.fields(tp)]
        size = len(fields)

        def decode_dataclass(data: Any) -> Any:
            if not isinstance(data, list) or len(data) != size:
                raise _fail(tp, data)
            return cls(*[dec(v) for dec, v in zip(fields, data, strict=True)])
        return decode_dataclass
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = _decoder(_nullable(tp, args))
        return lambda data: None if data is None else inner(data)
    if origin in (tuple, list):
        item = _decoder(args[0])
        build: Callable[[Any], Any] = tuple if origin is tuple else list

        def decode_sequence(data: Any) -> Any:
            if not isinstance(data, list):
                raise _fail(tp, data)
            return build(item(v) for v in data)
        return decode_sequence
    if tp in (date, datetime, Decimal, uuid.UUID):
        parsers: dict[Any, Callable[[str], Any]] = {
            date: date.fromisoformat, datetime: datetime.fromisoformat, Decimal: Decimal,
            uuid.UUID: uuid.UUID}
        parse = parsers[tp]

        def decode_text(data: Any) -> Any:
            if not isinstance(data, str):
                raise _fail(tp, data)
            try:
                return parse(data)
            except (ValueError, InvalidOperation) as exc:
                raise FigureShapeError(f"not a {tp.__name__}: {data!r}") from exc
        return decode_text
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        enum_type: Any = tp

        def decode_enum(data: Any) -> Any:
            try:
                return enum_type(data)
            except ValueError as exc:
                raise FigureShapeError(str(exc)) from exc
        return decode_enum
    if tp is float:
        def decode_float(data: Any) -> Any:
            if isinstance(data, bool) or not isinstance(data, int | float):
                raise _fail(tp, data)
            return float(data)
        return decode_float
    if tp in (int, str, bool):
        def decode_plain(data: Any) -> Any:
            if type(data) is not tp:  # exact types: a bool is an int, and no int is a str
                raise _fail(tp, data)
            return data
        return decode_plain
    raise TypeError(f"cannot decode {tp!r}")


class FigureCodec(Generic[F]):
    """Writes values of one figure type (a dataclass, or `X | None` of one) as JSON and reads
    them back; `format` names the type's shape (see `format_of`), for the cache's keys."""

    def __init__(self, tp: Any) -> None:
        self.type = tp
        self.format = format_of(tp)
        self._encode = _encoder(tp)
        self._decode = _decoder(tp)

    def encode(self, value: F) -> Any:
        """The value as JSON-compatible lists, numbers, text and nulls."""
        return self._encode(value)

    def decode(self, data: Any) -> F:
        """The value back from what `encode` wrote; FigureShapeError for any other shape."""
        value: F = self._decode(data)
        return value

    def __repr__(self) -> str:
        return f"FigureCodec({shape_of(self.type)}, format={self.format})"


# The codecs of the cached figures (the loaders name theirs; the cache stays generic).
OVERVIEW: FigureCodec[Overview | None] = FigureCodec(Overview | None)
DAY_SERIES: FigureCodec[DaySeries] = FigureCodec(DaySeries)
PRODUCTIVITY_EXTRAS: FigureCodec[ProductivityExtras] = FigureCodec(ProductivityExtras)


def _figure_types() -> list[type]:
    module = sys.modules[__name__]
    found = [value for value in vars(module).values()
             if isinstance(value, type) and dataclasses.is_dataclass(value)
             and value.__module__ == __name__]
    return sorted(found, key=lambda t: t.__qualname__)


FIGURES_FORMAT = digest(f"codec{CODEC_VERSION}",
                        *(f"{t.__qualname__}={shape_of(t)}" for t in _figure_types()))
"""One format for all the figure types of this module (found by looking, so a new one counts):
the whole-response cache keys carry it with the schema's SDL."""
