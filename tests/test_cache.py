"""The Redis cache of field results (gateway/cache/fields.py), with a small loader over real rows.

`TaskCountLoader` counts a user's tasks of one status: one SQL statement for a batch, and every
call of `compute` is recorded, so the tests can say exactly what was computed and what was served
from Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
import strawberry
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from gateway.cache.fields import (
    PlainJson,
    cache_key,
    cache_of,
)
from gateway.cache.kept import Kept
from gateway.data.resources import Resources
from gateway.ops.settings import Settings
from loaders.cached import CachedLoader
from resolvers.context import Context
from schema.extensions.cache_report import CacheExtension
from tests.factories import User, UserFactory

Key = tuple[Any, ...]
COUNTS = PlainJson("task-count")  # the format of TaskCountLoader's values


class Counter:
    """What `compute` was asked, across every request of a test."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[Key]] = []
        self.delay = delay

    @property
    def keys(self) -> list[Key]:
        return [key for call in self.calls for key in call]


class TaskCountLoader(CachedLoader[Key, Any]):
    """Key `(user_id, status)` → `{"count": n}`: that user's tasks with that status."""

    field = "overview"
    codec = COUNTS

    def __init__(self, resources: Resources, counter: Counter) -> None:
        super().__init__()
        self.resources = resources
        self.counter = counter

    async def compute(self, keys: list[Key]) -> Sequence[Any]:
        self.counter.calls.append(list(keys))
        if self.counter.delay:
            await asyncio.sleep(self.counter.delay)
        rows = await self.resources.pool.fetch(
            """select k.i, count(t.id) as n
               from unnest($1::uuid[], $2::text[]) with ordinality as k(user_id, status, i)
               left join tasks t on t.user_id = k.user_id and t.status = k.status
                                and not t.deleted
               group by k.i order by k.i""",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return [{"count": row["n"], "user": str(keys[row["i"] - 1][0])} for row in rows]


def pg_versions(resources: Resources) -> Any:
    """The users' `data_version`s as a request reads them: from PostgreSQL, one statement."""

    async def versions(user_ids: list[Any]) -> dict[Any, int]:
        rows = await resources.pool.fetch(
            "select id, data_version from users where id = any($1::uuid[])", user_ids
        )
        found = {row["id"]: row["data_version"] for row in rows}
        return {u: found.get(u, -1) for u in user_ids}

    return versions


async def load(
    resources: Resources, counter: Counter, *keys: Key, notes: dict[str, Any] | None = None
) -> list[Any]:
    """One request: a fresh loader (as the context builds per request) loading `keys`."""
    loader = TaskCountLoader(resources, counter).cached(resources, pg_versions(resources), notes)
    return list(await loader.load_many(keys))


def metric(name: str, field: str = "overview") -> float:
    return REGISTRY.get_sample_value(name, {"field": field}) or 0.0



async def done_tasks(users: UserFactory, user: User, n: int) -> None:
    for _ in range(n):
        await users.task(user, status="done", completed_at=_now())


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# --- keys ------------------------------------------------------------------------------------


def test_a_key_names_user_version_field_and_arguments() -> None:
    user = uuid.UUID("00000000-0000-0000-0000-000000000001")
    from datetime import date

    key = cache_key("trends", (user, date(2026, 1, 1), date(2026, 1, 30)), 7, "3fa9")
    assert key == f"analytics:{{{user}}}:f3fa9:v7:trends:2026-01-01:2026-01-30"
    # arguments cannot run into each other: a ':' inside one is escaped
    assert cache_key("f", (user, "a:b"), 0, "x") != cache_key("f", (user, "a", "b"), 0, "x")
    assert cache_key("f", (user, None), 0, "x").endswith(":f:-")


# --- hits, misses, batches -------------------------------------------------------------------


async def test_a_miss_is_computed_once_then_served_from_redis(
    resources: Resources, users: UserFactory, redis: Redis
) -> None:
    user = await users.create()
    await done_tasks(users, user, 2)
    counter = Counter()
    hits, misses = metric("analytics_cache_hits_total"), metric("analytics_cache_misses_total")

    first_notes: dict[str, Any] = {}
    assert await load(resources, counter, (user.id, "done"), notes=first_notes) == [
        {"count": 2, "user": str(user.id)}
    ]
    second_notes: dict[str, Any] = {}
    assert await load(resources, counter, (user.id, "done"), notes=second_notes) == [
        {"count": 2, "user": str(user.id)}
    ]

    assert len(counter.calls) == 1
    assert metric("analytics_cache_misses_total") == misses + 1
    assert metric("analytics_cache_hits_total") == hits + 1
    assert first_notes["cache"]["overview"] == {"hits": 0, "misses": 1, "age": None}
    assert second_notes["cache"]["overview"]["hits"] == 1
    assert second_notes["cache"]["overview"]["age"] >= 0
    # stored under the versioned key, with the overview TTL
    version = await resources.pool.fetchval("select data_version from users where id = $1", user.id)
    ttl = await redis.ttl(cache_key("overview", (user.id, "done"), version, COUNTS.format))
    assert 0 < ttl <= resources.settings.cache_ttl_overview


async def test_one_compute_for_the_misses_of_a_batch_only(
    resources: Resources, users: UserFactory
) -> None:
    a, b, c = [await users.create() for _ in range(3)]
    await done_tasks(users, b, 1)
    counter = Counter()
    await load(resources, counter, (a.id, "done"))
    counter.calls.clear()

    values = await load(resources, counter, (a.id, "done"), (b.id, "done"), (c.id, "todo"))

    assert [v["count"] for v in values] == [0, 1, 0]
    assert counter.calls == [[(b.id, "done"), (c.id, "todo")]]


async def test_two_users_asking_the_same_query_never_see_each_others_figures(
    resources: Resources, users: UserFactory
) -> None:
    alice, bob = await users.create(), await users.create()
    await done_tasks(users, alice, 3)
    counter = Counter()

    assert (await load(resources, counter, (alice.id, "done")))[0]["count"] == 3
    # bob asks the very same question after alice's answer was cached
    assert await load(resources, counter, (bob.id, "done")) == [{"count": 0, "user": str(bob.id)}]
    assert (await load(resources, counter, (alice.id, "done")))[0]["count"] == 3
    assert len(counter.calls) == 2


async def test_a_committed_change_invalidates_that_user_only(
    resources: Resources, users: UserFactory, pool: asyncpg.Pool
) -> None:
    """The change's own transaction raises the user's data version (a trigger): no call to Redis
    is needed for the next read to miss, and the other user's entry is still a hit."""
    changed, unchanged = await users.create(), await users.create()
    task = await users.task(changed)
    await users.task(unchanged)
    counter = Counter()
    keys = [(changed.id, "done"), (unchanged.id, "done")]
    assert [v["count"] for v in await load(resources, counter, *keys)] == [0, 0]
    before = await pool.fetchval("select data_version from users where id = $1", changed.id)

    await pool.execute("update tasks set status = 'done', completed_at = now() where id = $1", task)
    counter.calls.clear()

    assert [v["count"] for v in await load(resources, counter, *keys)] == [1, 0]
    assert counter.calls == [[(changed.id, "done")]]
    assert (
        await pool.fetchval("select data_version from users where id = $1", changed.id)
        == before + 1
    )


async def test_every_kind_of_change_raises_the_data_version(
    users: UserFactory, pool: asyncpg.Pool
) -> None:
    """Triggers of sql/migrations/0002_data_versions.sql: task insert, update and delete (once
    per statement and user, however many rows), the timezone and the daily goal; not the
    display name, which no figure depends on. The workers' `bump_data_versions` for the rest."""
    user, other = await users.create(), await users.create()

    async def version() -> int:
        return int(await pool.fetchval("select data_version from users where id = $1", user.id))

    steps = [
        ("insert into tasks (user_id, title) select $1, 't' || g from generate_series(1, 50) g", 1),
        ("update tasks set priority = 'high' where user_id = $1", 1),
        ("delete from tasks where user_id = $1 and title = 't1'", 1),
        ("update users set timezone = 'Asia/Tokyo' where id = $1", 1),
        ("update users set daily_goal = daily_goal + 1 where id = $1", 1),
        ("update users set display_name = 'Renamed' where id = $1", 0),
        ("update tasks set title = title where user_id = $1 and false", 0),
    ]
    for sql, raised in steps:
        before = await version()
        await pool.execute(sql, user.id)
        assert await version() == before + raised, sql
    from gateway.data.db import query

    before = await version()
    await pool.execute(query("bump_data_versions"), [user.id, other.id, user.id])
    assert await version() == before + 1


async def test_disabled_cache_goes_straight_to_compute(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, users: UserFactory
) -> None:
    user = await users.create()
    resources = await Resources.open(replace(settings, enable_query_cache=False))
    try:
        counter = Counter()
        for _ in range(2):
            assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 0
        assert len(counter.calls) == 2
        assert await redis.keys("analytics:*") == []
    finally:
        await resources.close()


# --- stampedes -------------------------------------------------------------------------------


async def test_200_concurrent_requests_on_a_cold_key_compute_it_at_most_twice(
    resources: Resources, users: UserFactory
) -> None:
    user = await users.create()
    await done_tasks(users, user, 1)
    counter = Counter(delay=0.05)

    results = await asyncio.gather(
        *(load(resources, counter, (user.id, "done")) for _ in range(200))
    )

    assert all(r == [{"count": 1, "user": str(user.id)}] for r in results)
    assert 1 <= len(counter.calls) <= 2


async def test_two_processes_share_one_computation_through_the_redis_lock(
    settings: Settings, resources: Resources, users: UserFactory
) -> None:
    """Two caches with their own clients and single-flight tables stand for two processes."""
    user = await users.create()
    other = await Resources.open(settings)
    try:
        counter = Counter(delay=0.1)
        results = await asyncio.gather(
            *(
                load(res, counter, (user.id, "todo"))
                for _ in range(100)
                for res in (resources, other)
            )
        )
        assert all(r[0]["count"] == 0 for r in results)
        assert 1 <= len(counter.calls) <= 2
        assert cache_of(resources) is not cache_of(other)
    finally:
        await other.close()


async def test_a_waiter_computes_itself_when_the_lock_holder_gives_up(
    resources: Resources, users: UserFactory, redis: Redis
) -> None:
    """Another process holds the lock and never writes the value: after the lock goes away,
    the waiter computes the figure itself instead of failing."""
    user = await users.create()
    version = await resources.pool.fetchval("select data_version from users where id = $1", user.id)
    key = cache_key("overview", (user.id, "done"), version, COUNTS.format)
    await redis.set(f"{key}:lock", "someone-else", px=5000)
    counter = Counter()

    async def holder_dies() -> None:
        await asyncio.sleep(0.1)
        await redis.delete(f"{key}:lock")

    values, _ = await asyncio.gather(load(resources, counter, (user.id, "done")), holder_dies())
    assert values[0]["count"] == 0
    assert len(counter.calls) == 1
    assert await redis.exists(key) == 1


async def test_a_cancelled_computation_does_not_strand_its_waiters(
    resources: Resources, users: UserFactory
) -> None:
    user = await users.create()
    counter = Counter(delay=0.2)
    leader = asyncio.create_task(load(resources, counter, (user.id, "done")))
    await asyncio.sleep(0.05)  # the leader is computing
    follower = asyncio.create_task(load(resources, counter, (user.id, "done")))
    await asyncio.sleep(0.05)
    leader.cancel()

    assert (await follower)[0]["count"] == 0
    with pytest.raises(asyncio.CancelledError):
        await leader


# --- extensions.cache ------------------------------------------------------------------------


@strawberry.type
class _Query:
    @strawberry.field
    async def done(self, info: strawberry.Info[Context, None], user_id: strawberry.ID) -> int:
        loader = info.context.notes.setdefault(
            "loader",
            TaskCountLoader(info.context.resources, Counter()).cached(
                info.context.resources, pg_versions(info.context.resources), info.context.notes
            ),
        )
        value = await loader.load((uuid.UUID(str(user_id)), "done"))
        return int(value["count"])


async def test_extensions_cache_reports_hit_and_age_outside_production(
    resources: Resources, users: UserFactory
) -> None:
    user = await users.create()
    schema = strawberry.Schema(query=_Query, extensions=[CacheExtension])
    query = "query($id: ID!) { done(userId: $id) }"

    first = await schema.execute(
        query, {"id": str(user.id)}, context_value=Context(request=None, resources=resources)
    )
    second = await schema.execute(
        query, {"id": str(user.id)}, context_value=Context(request=None, resources=resources)
    )

    assert first.errors is None and second.errors is None
    assert first.extensions == {
        "cache": {"overview": {"hit": False, "age": None, "hits": 0, "misses": 1}}
    }
    assert second.extensions is not None
    entry = second.extensions["cache"]["overview"]
    assert entry["hit"] is True and entry["age"] >= 0


async def test_extensions_cache_is_hidden_in_production(
    resources: Resources, users: UserFactory
) -> None:
    user = await users.create()
    production = replace(resources, settings=replace(resources.settings, app_env="production"))
    schema = strawberry.Schema(query=_Query, extensions=[CacheExtension])
    result = await schema.execute(
        "query($id: ID!) { done(userId: $id) }",
        {"id": str(user.id)},
        context_value=Context(request=None, resources=production),
    )
    assert result.errors is None
    assert not (result.extensions or {}).get("cache")


async def test_a_value_read_once_is_served_by_the_process_until_its_ttl(
    resources: Resources, users: UserFactory
) -> None:
    """The process keeps the decoded values it read or computed (CACHE_LOCAL_ENTRIES): a key
    names the data version, so a kept value is exactly what Redis holds for it."""
    user = await users.create()
    await done_tasks(users, user, 1)
    counter = Counter()
    cache = cache_of(resources)
    asked: list[list[str]] = []
    mget = cache.mget

    async def counted_mget(keys: list[str]) -> list[bytes | None]:
        asked.append(keys)
        return await mget(keys)

    cache.mget = counted_mget  # type: ignore[method-assign]
    assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 1
    assert len(asked) == 1 and len(counter.calls) == 1  # asked Redis, then computed
    notes: dict[str, Any] = {}
    assert (await load(resources, counter, (user.id, "done"), notes=notes))[0]["count"] == 1
    assert len(asked) == 1 and len(counter.calls) == 1  # from the process: no Redis, no SQL
    assert notes["cache"]["overview"]["hits"] == 1
    # a change raises the version: another key, computed again
    await done_tasks(users, user, 1)
    assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 2
    assert len(counter.calls) == 2
    # past its field's TTL a kept value is not used: Redis is asked (and still has it)
    ttl = resources.settings.cache_ttl_overview
    cache._clock = lambda: time.time() + ttl + 1
    before = len(asked)
    assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 2
    assert len(asked) == before + 1 and len(counter.calls) == 2


async def test_the_process_keeps_at_most_cache_local_entries_values(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, users: UserFactory
) -> None:
    opened = await Resources.open(replace(settings, cache_local_entries=1))
    try:
        first, second = await users.create(), await users.create()
        counter = Counter()
        await load(opened, counter, (first.id, "done"))
        await load(opened, counter, (second.id, "done"))  # the first one's is dropped
        kept = cache_of(opened)._local
        assert len(kept) == 1 and str(second.id) in kept.keys()[0]
    finally:
        await opened.close()


def test_kept_entries_are_bounded_least_recently_used_first_and_expire() -> None:
    kept: Kept[str] = Kept(2)
    kept.put("a", "A", expires_at=10.0)
    kept.put("b", "B", expires_at=10.0)
    assert kept.get("a", now=1.0) == "A"  # "a" is now the most recently used
    kept.put("c", "C", expires_at=10.0)
    assert kept.keys() == ["a", "c"]
    assert kept.get("c", now=10.0) is None and kept.keys() == ["a"]  # expired: dropped
    nothing: Kept[str] = Kept(0)
    nothing.put("a", "A", expires_at=10.0)
    assert len(nothing) == 0 and nothing.get("a", now=1.0) is None
