"""The whole-response cache in front of GraphQL (gateway/http/response_cache.py): a repeated own
dashboard is answered from Redis, a change shows at once, nothing leaks between users, and
everything that is not a plain own-dashboard query goes through GraphQL."""

from __future__ import annotations

import zoneinfo
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from gateway.dev.embedded import RedisServer, free_port
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token
from tests.conftest import running_app
from tests.factories import UserFactory

DASHBOARD = """{
  overview { totalTasks completedTasks completionRate }
  trends { period from to points { date tasksCreated tasksCompleted productivityScore } }
  productivity { score tasksCompleted currentStreak }
}"""
COMPLETE = """mutation($id: ID!) { updateTask(id: $id, input: {status: DONE}) { status } }"""


@pytest.fixture
async def cached(settings: Settings, pool: asyncpg.Pool, redis: Redis
                 ) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(replace(settings, enable_response_cache=True)) as client:
        yield client


async def post(client: httpx.AsyncClient, token: str, query: str = DASHBOARD,
               variables: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post("/graphql", json={"query": query, "variables": variables},
                             headers={"Authorization": f"Bearer {token}", **(headers or {})})


def is_hit(response: httpx.Response) -> bool:
    return response.headers.get("x-response-cache") == "hit"


async def test_a_repeated_dashboard_is_served_from_redis_until_the_user_changes_a_task(
        cached: httpx.AsyncClient, users: UserFactory, pool: asyncpg.Pool,
        token_for: Callable[..., str]) -> None:
    alice = await users.create()
    task = await users.task(alice)
    token = token_for(alice.id)
    first = await post(cached, token)
    assert not is_hit(first) and first.json()["data"]["overview"]["totalTasks"] == 1
    second = await post(cached, token)
    assert is_hit(second)
    assert second.json()["data"] == first.json()["data"]
    # Even a row written behind the gateway's back (psql, another service) is seen at once: the
    # write's own transaction raised the user's data version, which keys the cached response.
    await users.task(alice)
    fresh = await post(cached, token)
    assert not is_hit(fresh) and fresh.json()["data"]["overview"]["totalTasks"] == 2
    assert is_hit(await post(cached, token))
    # A change through the API does the same: the next answer is fresh and exact.
    done = await post(cached, token, COMPLETE, {"id": str(task)})
    assert done.json()["data"]["updateTask"]["status"] == "DONE"
    third = await post(cached, token)
    assert not is_hit(third)
    assert third.json()["data"]["overview"] == {"totalTasks": 2, "completedTasks": 1,
                                                "completionRate": 50.0}
    assert await pool.fetchval("select count(*) from tasks where user_id = $1", alice.id) == 2


async def test_two_users_with_the_same_query_each_get_their_own_answer(
        cached: httpx.AsyncClient, users: UserFactory, token_for: Callable[..., str]) -> None:
    alice, bob = await users.create(), await users.create()
    for _ in range(3):
        await users.task(alice)
    alice_token, bob_token = token_for(alice.id), token_for(bob.id)
    assert (await post(cached, alice_token)).json()["data"]["overview"]["totalTasks"] == 3
    assert is_hit(await post(cached, alice_token))
    bob_first = await post(cached, bob_token)
    assert not is_hit(bob_first)
    assert bob_first.json()["data"]["overview"]["totalTasks"] == 0
    assert (await post(cached, bob_token)).json()["data"]["overview"]["totalTasks"] == 0


@pytest.mark.parametrize("query", [
    "{ me { id displayName } }",                                   # profile: not invalidated
    "{ overview(userId: \"%(id)s\") { totalTasks } }",             # someone's (even own) by id
    "{ overview { totalTasks } me { id } }",                       # mixed roots
    "query A { overview { totalTasks } } query B { me { id } }",   # several operations
    "{ ...F } fragment F on Query { overview { totalTasks } }",    # fragments
    "{ tasks { edges { node { id } } } }",                         # task listing
])
async def test_anything_but_a_plain_own_dashboard_goes_through_graphql(
        cached: httpx.AsyncClient, users: UserFactory, token_for: Callable[..., str],
        query: str) -> None:
    alice = await users.create()
    token = token_for(alice.id)
    text = query % {"id": alice.id} if "%(id)s" in query else query
    operation = "A" if "query A" in text else None
    for _ in range(2):
        response = await cached.post("/graphql", json={"query": text, "operationName": operation},
                                     headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and not is_hit(response), response.text


async def test_errors_and_anonymous_requests_are_never_cached(
        cached: httpx.AsyncClient, users: UserFactory, token_for: Callable[..., str]) -> None:
    alice = await users.create()
    bad = '{ trends(from: "2026-02-01", to: "2026-01-01") { period } }'
    for _ in range(2):
        response = await post(cached, token_for(alice.id), bad)
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert not is_hit(response)
        anonymous = await cached.post("/graphql", json={"query": DASHBOARD})
        assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert not is_hit(anonymous)


async def test_variables_are_part_of_the_key(
        cached: httpx.AsyncClient, users: UserFactory, token_for: Callable[..., str]) -> None:
    alice = await users.create()
    token = token_for(alice.id)
    query = "query($p: Period!) { trends(period: $p) { period points { date } } }"
    day = await post(cached, token, query, {"p": "DAY"})
    week = await post(cached, token, query, {"p": "WEEK"})
    assert not is_hit(week)
    assert week.json()["data"]["trends"]["period"] == "WEEK"
    assert len(day.json()["data"]["trends"]["points"]) == 30
    assert is_hit(await post(cached, token, query, {"p": "DAY"}))


async def test_an_entry_lives_no_longer_than_its_fields_nor_past_local_midnight(
        cached: httpx.AsyncClient, users: UserFactory, token_for: Callable[..., str],
        redis: Redis, settings: Settings) -> None:
    tz = "Pacific/Kiritimati"
    alice = await users.create(timezone=tz)
    await post(cached, token_for(alice.id), "{ trends { period } }")
    keys = [key async for key in redis.scan_iter(match=f"gql:{{{alice.id}}}:*")]
    assert len(keys) == 1
    ttl = await redis.ttl(keys[0])
    now = datetime.now(zoneinfo.ZoneInfo(tz))
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    assert 0 < ttl <= min(settings.cache_ttl_trends, int((midnight - now).total_seconds()) + 1)


async def test_a_hit_reports_itself_outside_production_and_on_request(
        settings: Settings, users: UserFactory, token_for: Callable[..., str],
        pool: asyncpg.Pool, redis: Redis) -> None:
    alice = await users.create()
    async with running_app(replace(settings, enable_response_cache=True)) as client:
        await post(client, token_for(alice.id))
        hit = await post(client, token_for(alice.id))
        assert hit.json()["extensions"]["cache"]["response"]["hit"] is True
    production = replace(settings, enable_response_cache=True, app_env="production",
                         jwt_secret_key="p" * 40)
    async with running_app(production) as client:
        token = create_access_token(production, alice.id, "user")  # production's own secret
        await post(client, token)
        quiet = await post(client, token)
        assert is_hit(quiet) and "extensions" not in quiet.json()
        asked = await post(client, token, headers={"X-Cache-Debug": "1"})
        assert asked.json()["extensions"]["cache"]["response"]["hit"] is True


@pytest.mark.parametrize("outage", ["stop", "pause"])
async def test_with_redis_down_or_hung_the_dashboard_is_answered_by_graphql(
        settings: Settings, users: UserFactory, token_for: Callable[..., str],
        pool: asyncpg.Pool, scratch_dir: Path, outage: str) -> None:
    alice = await users.create()
    await users.task(alice)
    server = RedisServer(scratch_dir / "redis", port=free_port())
    server.start()
    try:
        # Nothing kept in the process: what is tested is the answer when Redis fails.
        local = replace(settings, redis_url=server.url(), enable_response_cache=True,
                        cache_local_entries=0)
        async with running_app(local) as client:
            token = token_for(alice.id)
            await post(client, token)
            assert is_hit(await post(client, token))
            server.stop() if outage == "stop" else server.pause()
            for _ in range(3):
                response = await post(client, token)
                assert response.status_code == 200 and not is_hit(response)
                assert response.json()["data"]["overview"]["totalTasks"] == 1
            server.resume()
    finally:
        server.stop()


async def test_a_response_kept_in_the_process_answers_without_redis_until_the_data_changes(
        settings: Settings, users: UserFactory, token_for: Callable[..., str],
        pool: asyncpg.Pool, scratch_dir: Path) -> None:
    """Each process keeps the responses it read or stored (CACHE_LOCAL_ENTRIES): their key names
    the data version, so a kept one is what Redis holds, and a change misses it at once."""
    alice = await users.create()
    await users.task(alice)
    server = RedisServer(scratch_dir / "redis", port=free_port())
    server.start()
    try:
        local = replace(settings, redis_url=server.url(), enable_response_cache=True)
        async with running_app(local) as client:
            token = token_for(alice.id)
            first = await post(client, token)
            assert not is_hit(first)
            server.stop()
            kept = await post(client, token)  # Redis is gone: the process answers
            assert is_hit(kept) and kept.json()["data"] == first.json()["data"]
            await users.task(alice)  # raises the data version: the kept response is not it
            fresh = await post(client, token)
            assert not is_hit(fresh) and fresh.json()["data"]["overview"]["totalTasks"] == 2
    finally:
        server.stop()


async def test_a_response_another_process_stored_is_read_from_redis_then_kept(
        settings: Settings, users: UserFactory, token_for: Callable[..., str],
        pool: asyncpg.Pool, redis: Redis) -> None:
    alice = await users.create()
    await users.task(alice)
    token = token_for(alice.id)
    both = replace(settings, enable_response_cache=True)
    async with running_app(both) as writer, running_app(both) as reader:
        stored = await post(writer, token)
        assert not is_hit(stored)
        read = await post(reader, token)  # from Redis: the reader never computed it
        assert is_hit(read) and read.json()["data"] == stored.json()["data"]
        keys = [key async for key in redis.scan_iter(f"gql:{{{alice.id}}}:*")]
        assert len(keys) == 1
        await redis.delete(*keys)  # what Redis no longer has, the reader still holds
        assert is_hit(await post(reader, token))
        assert is_hit(await post(writer, token))  # and the writer, what it stored
