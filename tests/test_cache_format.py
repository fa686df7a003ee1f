"""A cache that survives a deploy: the format in every key is derived from the cached value types
(domain/figures.py), so a release that changes a figure's shape never reads an entry of the
previous shape, and an entry that does not decode anyway is a miss, never an error.

Before, the format was a hand-bumped constant (`KEY_FORMAT = 2`): a release that added a field to
a figure without bumping it read the previous release's dicts and raised KeyError, which clients
saw as INTERNAL_SERVER_ERROR until the entries expired.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import typing
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from domain import figures
from domain.figures import (
    FIGURES_FORMAT,
    DayCounts,
    DaySeries,
    FigureCodec,
    FigureShapeError,
    Overview,
    PriorityCounts,
    StatusCounts,
    format_of,
    shape_of,
)
from gateway.cache.fields import QueryCache, cache_key
from gateway.data.resources import Resources
from gateway.http.response_cache import RESPONSE_FORMAT, response_format, response_key
from gateway.ops.settings import Settings
from loaders.analytics import DailySeriesLoader, OverviewLoader, ProductivityLoader
from schema.schema import schema
from tests.conftest import running_app
from tests.factories import UserFactory

Key = tuple[Any, ...]



def fields_of(cls: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


# The next release's overview: the same fields and one more (made here, as the deploy would).
OverviewNext: Any = dataclasses.make_dataclass(
    "Overview", [*fields_of(Overview), ("archived_tasks", int)], frozen=True, slots=True)


def astuple_shallow(value: Any) -> list[Any]:
    return [getattr(value, f.name) for f in dataclasses.fields(value)]


def an_overview(total: int) -> Overview:
    return Overview(total_tasks=total, completed_tasks=0, pending_tasks=total,
                    in_progress_tasks=0, overdue_tasks=0, due_today_tasks=0,
                    completion_rate=Decimal("0.0"), priority=PriorityCounts(0, total, 0),
                    status=StatusCounts(total, 0, 0))


def misses(field: str = "overview") -> float:
    return REGISTRY.get_sample_value("analytics_cache_misses_total", {"field": field}) or 0.0


# --- the format ----------------------------------------------------------------------------


def test_the_format_changes_with_any_field_of_a_figure_and_only_then() -> None:
    assert format_of(Overview) == format_of(Overview)  # computed from the type, not a counter
    assert format_of(OverviewNext) != format_of(Overview)

    @dataclass(frozen=True, slots=True)
    class Renamed:  # a field renamed
        day: date
        created: int

    @dataclass(frozen=True, slots=True)
    class Retyped:  # a field's type changed
        day: date
        tasks_created: Decimal

    @dataclass(frozen=True, slots=True)
    class Same:  # another class of the same shape: the same stored form
        day: date
        tasks_created: int

    @dataclass(frozen=True, slots=True)
    class Original:
        day: date
        tasks_created: int

    assert len({format_of(t) for t in (Original, Renamed, Retyped)}) == 3
    assert format_of(Same) == format_of(Original)

    # a change deep inside: one more field in a day row changes the series' format
    day_next = dataclasses.make_dataclass(
        "DayCounts", [*fields_of(DayCounts), ("tasks_reopened", int)], frozen=True, slots=True)

    series_next = dataclasses.make_dataclass(
        "DaySeries", [("d_from", date), ("d_to", date), ("days", tuple[day_next, ...])],
        frozen=True, slots=True)

    assert shape_of(series_next) != shape_of(DaySeries)
    assert format_of(series_next) != format_of(DaySeries)


def test_the_loaders_name_the_format_of_their_value_type() -> None:
    assert OverviewLoader.codec.format == format_of(Overview | None)
    assert DailySeriesLoader.codec.format == format_of(DaySeries)
    assert ProductivityLoader.codec.format == format_of(figures.ProductivityExtras)
    assert len({OverviewLoader.codec.format, DailySeriesLoader.codec.format,
                ProductivityLoader.codec.format}) == 3


def test_the_response_format_changes_with_the_schema_or_any_figure() -> None:
    sdl = schema.as_str()
    assert RESPONSE_FORMAT == response_format(sdl, FIGURES_FORMAT)
    assert response_format(sdl + "\ntype Extra { x: Int }") != RESPONSE_FORMAT
    assert response_format(sdl, figures_format="0123456789") != RESPONSE_FORMAT
    assert response_key("u", 3, "abc") == f"gql:{{u}}:f{RESPONSE_FORMAT}:v3:abc"
    assert RESPONSE_FORMAT != "2"  # the previous release's constant


def test_a_hit_and_a_miss_give_the_same_typed_value() -> None:
    codec = figures.DAY_SERIES
    series = DaySeries(date(2026, 1, 1), date(2026, 1, 30),
                       (DayCounts(date(2026, 1, 2), 1, 2, 3, 1, 5),))
    stored = orjson.loads(orjson.dumps(codec.encode(series)))
    assert codec.decode(stored) == series
    extras = figures.ProductivityExtras(Decimal("12.3"), None, "MONDAY", 9, 2, 4)
    back = figures.PRODUCTIVITY_EXTRAS.decode(
        orjson.loads(orjson.dumps(figures.PRODUCTIVITY_EXTRAS.encode(extras))))
    assert back == extras and isinstance(back.lead_time_hours, Decimal)


_counts = st.integers(min_value=0, max_value=10**6)
_tenths = st.builds(lambda n: Decimal(n).scaleb(-1), st.integers(min_value=-10**7,
                                                                  max_value=10**7))
_days = st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 1, 1))
_figures = st.one_of(
    st.builds(figures.Overview.of_counts, *[_counts] * 9),
    st.builds(figures.DaySeries, _days, _days, st.lists(st.builds(
        figures.DayCounts, _days, *[_counts] * 5), max_size=40).map(tuple)),
    st.builds(figures.ProductivityExtras, st.none() | _tenths, st.none() | _tenths,
              st.none() | st.sampled_from(["MONDAY", "SUNDAY"]),
              st.none() | st.integers(0, 23), _counts, _counts),
)
_codecs = {figures.Overview: figures.OVERVIEW, figures.DaySeries: figures.DAY_SERIES,
           figures.ProductivityExtras: figures.PRODUCTIVITY_EXTRAS}


def _typed(value: Any) -> Any:
    """A value with the type of every part spelled out (Decimal('1.0') == 1 otherwise)."""
    if dataclasses.is_dataclass(value):
        return (type(value).__name__, [_typed(getattr(value, f.name))
                                       for f in dataclasses.fields(value)])
    if isinstance(value, tuple):
        return ("tuple", [_typed(v) for v in value])
    return (type(value).__name__, str(value))


@settings(max_examples=300, deadline=None)
@given(_figures)
def test_the_codec_reads_back_exactly_the_value_it_wrote(value: Any) -> None:
    """What lets a computed figure be returned as computed (gateway/cache/fields.py) while a hit
    returns the decoded one: the two are the same typed value, exponent of a Decimal included."""
    codec = _codecs[type(value)]
    back = codec.decode(orjson.loads(orjson.dumps(codec.encode(value))))
    assert _typed(back) == _typed(value)


@pytest.mark.parametrize("stored", [
    {"total_tasks": 1},                                      # the previous release's dict
    [1, 0, 1, 0, 0, 0, "0.0", [0, 1, 0]],                    # a field less
    [1, 0, 1, 0, 0, 0, "0.0", [0, 1, 0], [1, 0, 0], 7],      # a field more
    [1, 0, 1, 0, 0, 0, 0.0, [0, 1, 0], [1, 0, 0]],           # a rate as a float
    [True, 0, 1, 0, 0, 0, "0.0", [0, 1, 0], [1, 0, 0]],      # a bool for an int
    [1, 0, 1, 0, 0, 0, "x", [0, 1, 0], [1, 0, 0]],           # not a Decimal
])
def test_a_value_of_another_shape_does_not_decode(stored: Any) -> None:
    with pytest.raises(FigureShapeError):
        FigureCodec(Overview).decode(stored)


# --- a rolling deploy, on a real Redis -----------------------------------------------------


class Release:
    """One release's process: its own cache (single flight and all) and its own value type."""

    def __init__(self, resources: Resources, codec: FigureCodec[Any],
                 make: Callable[[int], Any]) -> None:
        # Nothing kept in the process: each load reads what Redis holds, which is under test.
        self.cache = QueryCache(resources.cache_redis,
                                replace(resources.settings, cache_local_entries=0))
        self.codec = codec
        self.make = make
        self.computed: list[Key] = []

    async def compute(self, keys: Sequence[Key]) -> list[Any]:
        self.computed.extend(keys)
        return [self.make(3) for _ in keys]

    async def load(self, key: Key, version: int = 1) -> Any:
        notes: dict[str, Any] = {}
        [value] = await self.cache.load("overview", [key], {key[0]: version}, self.compute,
                                        notes, codec=self.codec)
        return value


async def test_after_a_deploy_that_adds_a_field_no_process_reads_an_old_shaped_entry(
        resources: Resources, redis: Redis) -> None:
    user = uuid.uuid4()
    key: Key = (user, date(2026, 3, 1))
    old = Release(resources, figures.OVERVIEW, an_overview)
    new = Release(resources, FigureCodec(OverviewNext | None),
                  lambda n: OverviewNext(*astuple_shallow(an_overview(n)), archived_tasks=1))

    # The old release caches the overview.
    assert await old.load(key) == an_overview(3)
    old_key = cache_key("overview", key, 1, old.codec.format)
    assert await redis.exists(old_key)

    # The new release asks the same question: another key, so a miss, and a value of its shape.
    new_key = cache_key("overview", key, 1, new.codec.format)
    assert new_key != old_key
    before = misses()
    value = await new.load(key)
    assert isinstance(value, OverviewNext) and value.archived_tasks == 1
    assert new.computed == [key] and misses() == before + 1
    assert await redis.exists(new_key)

    # During the rollout both run: each reads only its own entries, both as hits.
    assert await old.load(key) == an_overview(3) and old.computed == [key]
    assert (await new.load(key)).archived_tasks == 1 and new.computed == [key]


async def test_an_old_shaped_entry_under_the_current_key_is_a_miss_not_an_error(
        resources: Resources, redis: Redis) -> None:
    """Should a shape change ever keep its format (or Redis hold garbage), the entry is a miss
    and is overwritten: never a KeyError reaching the client."""
    user = uuid.uuid4()
    key: Key = (user, date(2026, 3, 1))
    release = Release(resources, figures.OVERVIEW, an_overview)
    ckey = cache_key("overview", key, 1, release.codec.format)
    for stored in ({"total_tasks": 9, "completed_tasks": 9}, [9, 9, 0], "garbage"):
        await redis.set(ckey, orjson.dumps([time.time(), stored]), ex=60)
        release.computed.clear()
        assert await release.load(key) == an_overview(3)
        assert release.computed == [key]
        # rewritten in the current shape: the next read is a hit
        assert await release.load(key) == an_overview(3) and release.computed == [key]
    await redis.set(ckey, b"not json", ex=60)
    assert await release.load(key) == an_overview(3)


# --- end to end: the API over the previous release's entries -------------------------------

DASHBOARD = """{
  overview { totalTasks completedTasks completionRate priorityDistribution { high medium low }
             statusDistribution { todo inProgress done } }
  trends { period from to points { date tasksCreated tasksCompleted productivityScore } }
  productivity { score tasksCompleted currentStreak leadTimeHours mostProductiveWeekday }
}"""


async def user_state(pool: asyncpg.Pool, user_id: uuid.UUID) -> tuple[int, date]:
    row = await pool.fetchrow("select data_version, (now() at time zone timezone)::date as today "
                              "from users where id = $1", user_id)
    assert row is not None
    return int(row["data_version"]), row["today"]


async def plant_old_entries(redis: Redis, user_id: uuid.UUID, version: int, today: date,
                            fmt: Callable[[str], str]) -> list[str]:
    """The previous release's values (dicts, one field missing from each, figures wrong), under
    the keys `fmt(field)` names the format of."""
    d_from = today.toordinal() - 29
    start = date.fromordinal(d_from).isoformat()
    entries = {
        f"analytics:{{{user_id}}}:f{fmt('overview')}:v{version}:overview:{today}":
            {"total_tasks": 999, "completed_tasks": 0, "pending_tasks": 999,
             "in_progress_tasks": 0, "overdue_tasks": 0, "due_today_tasks": 0,
             "completion_rate": 0.0, "priority": {"high": 0, "medium": 999, "low": 0}},
        f"analytics:{{{user_id}}}:f{fmt('trends')}:v{version}:trends:{start}:{today}":
            {"from": start, "to": today.isoformat(), "days": [[today.isoformat(), 999, 0, 0, 0]]},
        f"analytics:{{{user_id}}}:f{fmt('productivity')}:v{version}:productivity:{start}:{today}":
            {"lead_time_hours": None, "cycle_time_hours": None, "most_productive_weekday": None,
             "most_productive_hour": None, "current_streak": 999},
    }
    for key, value in entries.items():
        await redis.set(key, orjson.dumps([time.time(), value]), ex=300)
    return list(entries)


def check_dashboard(body: dict[str, Any], today: date) -> None:
    assert "errors" not in body, body
    data = body["data"]
    assert data["overview"] == {
        "totalTasks": 2, "completedTasks": 1, "completionRate": 50.0,
        "priorityDistribution": {"high": 0, "medium": 2, "low": 0},
        "statusDistribution": {"todo": 1, "inProgress": 0, "done": 1}}
    points = data["trends"]["points"]
    assert len(points) == 30 and data["trends"]["to"] == today.isoformat()
    assert sum(p["tasksCreated"] for p in points) == 2
    assert data["productivity"]["tasksCompleted"] == 1
    assert data["productivity"]["currentStreak"] == 1


async def test_the_api_never_reads_the_previous_releases_entries(
        settings: Settings, pool: asyncpg.Pool, redis: Redis, users: UserFactory,
        token_for: Callable[..., str]) -> None:
    """Entries the previous code wrote (format 2, dicts) stay where they are, unread: with the
    previous code's own reading they would have raised KeyError ("status", "half_points"...)."""
    user = await users.create()
    await users.task(user)
    await users.task(user, status="done", completed_at=await pool.fetchval("select now()"))
    version, today = await user_state(pool, user.id)
    planted = await plant_old_entries(redis, user.id, version, today, lambda field: "2")

    async with running_app(replace(settings, enable_response_cache=True)) as client:
        headers = {"Authorization": f"Bearer {token_for(user.id)}"}
        # the previous release's whole response, wrong figures and all, under its key
        text = DASHBOARD
        digest = hashlib.sha256(orjson.dumps([text, None, None],
                                             option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        await redis.set(f"gql:{{{user.id}}}:f2:v{version}:{digest}",
                        f"{time.time():.3f}\n".encode()
                        + orjson.dumps({"data": {"overview": {"totalTasks": 999}}}), ex=300)

        first = await client.post("/graphql", json={"query": text}, headers=headers)
        assert first.headers.get("x-response-cache") != "hit"
        check_dashboard(first.json(), today)
        second = await client.post("/graphql", json={"query": text}, headers=headers)
        assert second.headers.get("x-response-cache") == "hit"
        check_dashboard(second.json(), today)
        assert await redis.exists(response_key(user.id, version, digest))

    for key in planted:  # untouched, left to expire
        assert orjson.loads(await redis.get(key))[1] is not None
    for loader in (OverviewLoader, DailySeriesLoader, ProductivityLoader):
        assert await redis.keys(f"analytics:{{{user.id}}}:f{loader.codec.format}:*")


async def test_the_api_answers_right_over_old_shaped_entries_under_the_current_keys(
        gql: Callable[..., Any], pool: asyncpg.Pool, redis: Redis, users: UserFactory,
        token_for: Callable[..., str]) -> None:
    """The same old values planted under the keys this release reads: each is a miss (the
    field cache recomputes and overwrites it), never INTERNAL_SERVER_ERROR."""
    user = await users.create()
    await users.task(user)
    await users.task(user, status="done", completed_at=await pool.fetchval("select now()"))
    version, today = await user_state(pool, user.id)
    formats = {"overview": OverviewLoader.codec.format, "trends": DailySeriesLoader.codec.format,
               "productivity": ProductivityLoader.codec.format}
    planted = await plant_old_entries(redis, user.id, version, today, formats.__getitem__)
    before = {field: misses(field) for field in formats}

    body = await gql(DASHBOARD, token=token_for(user.id))
    check_dashboard(body, today)
    assert all(misses(field) == before[field] + 1 for field in formats)
    # overwritten in the current shape: the next dashboard is all hits, and the same
    for key, field in zip(planted, formats, strict=True):
        stored = orjson.loads(await redis.get(key))[1]
        assert isinstance(stored, list), field
    again = await gql(DASHBOARD, token=token_for(user.id))
    assert again["data"] == body["data"]
    assert all(misses(field) == before[field] + 1 for field in formats)
