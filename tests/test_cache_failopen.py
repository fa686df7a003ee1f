"""Fail-open: a stopped or hung (SIGSTOPped) Redis never fails a query, and the circuit breaker
keeps requests from paying the socket timeout one after another. A real redis-server of the
test's own is stopped and paused; nothing is mocked. `CountingRedis` only counts which commands
the cache sent, to show that Redis is skipped while the breaker is open."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from gateway.cache.clients import create_redis
from gateway.cache.fields import cache_of
from gateway.data.resources import Resources
from gateway.dev.embedded import RedisServer
from gateway.ops.circuit import CircuitBreaker, CircuitOpen, Permit
from gateway.ops.settings import Settings
from tests.factories import UserFactory
from tests.test_cache import Counter, load


class CountingRedis:
    """The real client, with a count of the calls the cache made on it."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name in ("mget", "pipeline", "get", "set", "incr"):
            self.calls += 1
        return attr


def make_resources(settings: Settings, pool: asyncpg.Pool, server: RedisServer,
                   circuit_seconds: float) -> tuple[Resources, CountingRedis]:
    # No values kept in the process: every load asks Redis, whose failures are what is tested.
    own = replace(settings, redis_url=server.url(), cache_circuit_seconds=circuit_seconds,
                  cache_local_entries=0)
    counting = CountingRedis(create_redis(own, cache_path=True))
    resources = Resources(own, pool, create_redis(own), counting, None)  # type: ignore[arg-type]
    return resources, counting


async def close(resources: Resources, counting: CountingRedis) -> None:
    await counting.client.aclose()
    await resources.redis.aclose()


async def test_a_stopped_redis_is_answered_from_postgres_and_then_skipped(
        settings: Settings, pool: asyncpg.Pool, users: UserFactory,
        own_redis: RedisServer) -> None:
    user = await users.create()
    await users.task(user, status="done", completed_at=datetime.now(UTC))
    resources, counting = make_resources(settings, pool, own_redis, circuit_seconds=60)
    try:
        counter = Counter()
        assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 1
        own_redis.stop()

        assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 1
        assert cache_of(resources).breaker.is_open
        calls = counting.calls
        for _ in range(5):
            assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 1
        assert counting.calls == calls  # the breaker kept every later request off Redis
        assert len(counter.calls) == 7
    finally:
        await close(resources, counting)


async def test_a_hung_redis_costs_one_timeout_then_recovers(
        settings: Settings, pool: asyncpg.Pool, users: UserFactory,
        own_redis: RedisServer) -> None:
    user = await users.create()
    resources, counting = make_resources(settings, pool, own_redis, circuit_seconds=0.5)
    cache = cache_of(resources)
    try:
        counter = Counter()
        await load(resources, counter, (user.id, "todo"))
        own_redis.pause()
        try:
            # several requests at once while Redis hangs: all answered, none raises
            results = await asyncio.gather(
                *(load(resources, counter, (user.id, "todo")) for _ in range(20)))
            assert all(r[0]["count"] == 0 for r in results)
            assert cache.breaker.is_open
            calls = counting.calls
            assert (await load(resources, counter, (user.id, "todo")))[0]["count"] == 0
            assert counting.calls == calls
        finally:
            own_redis.resume()

        await asyncio.sleep(0.6)  # the cooldown passes; the next request probes Redis
        computed = len(counter.calls)
        assert (await load(resources, counter, (user.id, "todo")))[0]["count"] == 0
        assert not cache.breaker.is_open
        assert len(counter.calls) == computed  # and the figure cached before is a hit again
    finally:
        await close(resources, counting)


async def test_a_change_made_while_redis_hangs_is_not_hidden_by_the_old_entry(
        settings: Settings, pool: asyncpg.Pool, users: UserFactory,
        own_redis: RedisServer) -> None:
    """A task changes while Redis hangs: once Redis is back, the figure cached before the change
    must not be served. The change raised the user's data version in PostgreSQL; nothing had to
    reach Redis (tests/faults/test_cache_staleness.py does this with real API processes)."""
    user = await users.create()
    task = await users.task(user)
    resources, counting = make_resources(settings, pool, own_redis, circuit_seconds=0.3)
    try:
        counter = Counter()
        assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 0
        own_redis.pause()
        try:
            await pool.execute(
                "update tasks set status = 'done', completed_at = now() where id = $1", task)
            # a read during the pause: a miss computed from PostgreSQL, never an error
            assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 1
        finally:
            own_redis.resume()
        await asyncio.sleep(0.4)

        assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 1
        assert (await load(resources, counter, (user.id, "done")))[0]["count"] == 1
    finally:
        await close(resources, counting)


def test_the_breaker_lets_one_probe_through_after_the_cooldown() -> None:
    now = [100.0]
    breaker = CircuitBreaker(5, clock=lambda: now[0])
    assert breaker.allow() is Permit.CLOSED
    breaker.failure()
    assert breaker.allow() is None
    now[0] += 5
    assert breaker.allow() is Permit.PROBE
    assert breaker.allow() is None  # only one probe at a time
    breaker.failure()
    assert breaker.allow() is None
    now[0] += 5
    probe = breaker.allow()
    assert probe is Permit.PROBE
    breaker.abandon(probe)  # a cancelled probe lets the next caller probe
    assert breaker.allow() is Permit.PROBE
    breaker.success()
    assert breaker.allow() is Permit.CLOSED and not breaker.is_open


async def test_a_busy_process_is_no_verdict_on_the_dependency() -> None:
    """Two ways this process, not Redis, makes a call late; neither may open the breaker (under a
    burst of requests it would switch the cache off exactly when it is needed):

    - the call waited too long for one of `max_concurrent` slots;
    - the event loop was blocked past the deadline, so the timeout fired after the answer had
      arrived (asyncio then cancels the call before it reads the answer).
    """
    breaker = CircuitBreaker(5, timeout=0.2, max_concurrent=1, name="test")

    async def slow() -> str:
        await asyncio.sleep(0.15)
        return "ok"

    results = await asyncio.gather(*(breaker.call(slow, (OSError,)) for _ in range(3)),
                                   return_exceptions=True)
    assert results[:2] == ["ok", "ok"]
    assert isinstance(results[2], CircuitOpen)  # a miss for that call ...
    assert not breaker.is_open and breaker.stats.congested == 1  # ... and no verdict

    async def quick() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    async def block_the_loop() -> None:
        await asyncio.sleep(0)
        time.sleep(0.4)  # noqa: ASYNC251  (on purpose: a loop busy with CPU work)

    late, _ = await asyncio.gather(breaker.call(quick, (OSError,)), block_the_loop(),
                                   return_exceptions=True)
    assert late == "ok" or isinstance(late, CircuitOpen)
    assert not breaker.is_open and breaker.stats.failed == 0

    async def hung() -> str:
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(TimeoutError):  # a dependency that does not answer still opens it
        await breaker.call(hung, (OSError,))
    assert breaker.is_open
