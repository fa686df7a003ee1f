"""A hung Redis (SIGSTOP) must cost a request at most about one socket timeout, and no errors.

A real redis-server of the test's own is paused for ~5 s while a steady load of dashboard-style
queries keeps coming through two real apps (two "workers": each has its own Redis clients,
breaker and cache) with the rate limiter, the response cache and the field cache on, as in
production. Nothing is mocked. Asserted:

- every response is a 200 with exactly the figures PostgreSQL gives (computed beforehand with
  the cache off);
- p99 latency while Redis is paused (and just after it resumes) is at most the baseline p99 plus
  250 ms;
- deterministically, from the breaker's own counters: while Redis is paused only the calls that
  were already in flight when it stopped, plus one probe per cooldown, ever wait on it; every
  other Redis call of the request path (rate limit, response cache, field cache) is skipped.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from functools import partial
from typing import Any

import asyncpg
import pytest

from gateway.cache.clients import breaker_for, create_redis
from gateway.cache.fields import cache_of
from gateway.dev.embedded import RedisServer
from gateway.errors import ServiceUnavailable
from gateway.ops.circuit import CircuitOpen
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token
from gateway.security.ratelimit import REDIS_FAILURES, RateLimiter
from tests.conftest import running_app
from tests.factories import UserFactory

QUERY = """query($from: Date!, $to: Date!) {
  overview { totalTasks completedTasks }
  trends(period: DAY, from: $from, to: $to) { from to points { date tasksCreated tasksCompleted } }
}"""

USERS = 6
OFFSETS = 40          # date ranges per user: 240 distinct questions, so misses keep happening
CONCURRENCY = 8       # requests in flight at any time, over the two apps
BASELINE_SECONDS = 3.0
PAUSE_SECONDS = 5.0
AFTER_SECONDS = 2.0   # just after SIGCONT: the breakers probe, close, and stale locks are met
COOLDOWN = 1.0        # CACHE_CIRCUIT_SECONDS: several probes fall inside the pause
SOCKET_TIMEOUT = 0.2  # REDIS_CACHE_TIMEOUT, the production default
MARGIN = 0.25


@dataclass
class Sample:
    started: float
    ended: float
    ok: bool
    detail: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def p99(samples: list[Sample]) -> float:
    latencies = sorted(s.seconds for s in samples)
    return latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)]


async def test_a_paused_redis_costs_each_request_at_most_one_timeout(
        settings: Settings, pool: asyncpg.Pool, users: UserFactory,
        own_redis: RedisServer) -> None:
    await pool.execute("truncate task_events, daily_analytics, rollup_coverage, refresh_tokens, "
                       "tasks, users cascade")
    today = datetime.now(UTC).date()
    rng = random.Random(7)
    people = []
    for _ in range(USERS):
        user = await users.create()
        for day in range(60):
            created = datetime.combine(today - timedelta(days=day + 1), dtime(9), UTC)
            for _ in range(rng.randrange(3)):
                done = rng.random() < 0.5
                await users.task(user, created_at=created,
                                 status="done" if done else "todo",
                                 completed_at=created + timedelta(hours=3) if done else None)
        people.append(user)

    production = replace(
        settings, app_env="production", jwt_secret_key="x" * 48, redis_url=own_redis.url(),
        rate_limit_enabled=True, rate_limit_per_minute=1_000_000,
        enable_query_cache=True, enable_response_cache=True,
        cache_circuit_seconds=COOLDOWN, redis_cache_timeout=SOCKET_TIMEOUT)
    tokens = [create_access_token(production, u.id, "user") for u in people]

    def question(user: int, offset: int) -> dict[str, Any]:
        end: date = today - timedelta(days=offset)
        return {"query": QUERY, "variables": {"from": (end - timedelta(days=6)).isoformat(),
                                              "to": end.isoformat()}}

    variants = [(u, o) for u in range(USERS) for o in range(OFFSETS)]

    # What PostgreSQL answers, with no Redis anywhere in the way.
    expected: dict[tuple[int, int], Any] = {}
    async with running_app(replace(production, enable_query_cache=False,
                                   rate_limit_enabled=False)) as plain:
        for u, o in variants:
            response = await plain.post("/graphql", json=question(u, o),
                                        headers={"Authorization": f"Bearer {tokens[u]}"})
            assert response.status_code == 200, response.text
            body = response.json()
            assert "errors" not in body, body
            expected[(u, o)] = body["data"]

    async with AsyncExitStack() as stack:
        apps = [await stack.enter_async_context(running_app(production)) for _ in range(2)]
        breakers = [cache_of(app.app.state.resources).breaker  # type: ignore[attr-defined]
                    for app in apps]
        samples: list[Sample] = []
        stop_at = [math.inf]

        async def worker(n: int) -> None:
            client = apps[n % 2]
            order = variants[:]
            random.Random(n).shuffle(order)
            i = 0
            while time.monotonic() < stop_at[0]:
                u, o = order[i % len(order)]
                i += 1
                started = time.monotonic()
                try:
                    response = await client.post(
                        "/graphql", json=question(u, o),
                        headers={"Authorization": f"Bearer {tokens[u]}"})
                    ended = time.monotonic()
                    body = response.json()
                    ok = response.status_code == 200 and body.get("data") == expected[(u, o)] \
                        and "errors" not in body
                    samples.append(Sample(started, ended, ok,
                                          "" if ok else f"{response.status_code} {body}"[:300]))
                except Exception as exc:  # an error is a failed sample, not a crashed worker
                    samples.append(Sample(started, time.monotonic(), False, repr(exc)))
                # A response kept in the process (gateway/cache/kept.py) is answered without any
                # I/O, and httpx's in-process transport does none either: without this, a worker
                # would run request after request without ever letting the event loop run the
                # others (and their timers). A server reads each request from a socket.
                await asyncio.sleep(0)

        loop_started = time.monotonic()
        tasks = [asyncio.create_task(worker(n)) for n in range(CONCURRENCY)]
        try:
            await asyncio.sleep(BASELINE_SECONDS)
            before = [b.stats.snapshot() if hasattr(b, "stats") else None for b in breakers]
            paused_at = time.monotonic()
            own_redis.pause()
            try:
                await asyncio.sleep(PAUSE_SECONDS)
            finally:
                own_redis.resume()
            resumed_at = time.monotonic()
            during = [b.stats.snapshot() if hasattr(b, "stats") else None for b in breakers]
            await asyncio.sleep(AFTER_SECONDS)
            stop_at[0] = time.monotonic()
            await asyncio.gather(*tasks)
        finally:
            stop_at[0] = 0
            own_redis.resume()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    baseline = [s for s in samples if s.ended < paused_at and s.started > loop_started + 0.5]
    pause = [s for s in samples if s.ended >= paused_at and s.started < resumed_at]
    after = [s for s in samples if s.started >= resumed_at]
    report = (f"baseline: {len(baseline)} requests, p99 {p99(baseline) * 1000:.0f} ms; "
              f"pause: {len(pause)} requests, p99 {p99(pause) * 1000:.0f} ms, "
              f"max {max(s.seconds for s in pause) * 1000:.0f} ms; "
              f"after: {len(after)} requests, p99 {p99(after) * 1000:.0f} ms, "
              f"max {max(s.seconds for s in after) * 1000:.0f} ms")
    print(report)
    failed = [s.detail for s in samples if not s.ok]
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:3]}; {report}"
    assert len(baseline) >= 50 and len(pause) >= 50 and len(after) >= 10, report
    assert p99(pause) <= p99(baseline) + MARGIN, report
    assert p99(after) <= p99(baseline) + MARGIN, report

    # The deterministic part: who waited on Redis while it was stopped.
    probes_allowed = math.ceil(PAUSE_SECONDS / COOLDOWN) + 1
    for breaker, start, end in zip(breakers, before, during, strict=True):
        assert start is not None and end is not None, "the breaker keeps no counters"
        delta = {k: end[k] - start[k] for k in end if k != "longest_wait"}
        print("breaker during the pause:", delta)
        # Only the calls in flight when Redis stopped (at most one per request in flight), then
        # one probe per cooldown, ever waited for Redis; they got no answer.
        assert delta["waited"] <= CONCURRENCY // 2 + probes_allowed, (delta, report)
        assert 1 <= delta["probes"] <= probes_allowed, (delta, report)
        # Everything else was skipped without touching Redis: many more calls than waited.
        assert delta["skipped"] >= 10 * delta["waited"], (delta, report)
        # No call waited much past one socket timeout (the event loop may be a bit late).
        assert breaker.stats.longest_wait <= 2 * SOCKET_TIMEOUT, (delta, report)
    # After SIGCONT the probes succeed: the cache and rate limiter use Redis again.
    assert all(not b.is_open for b in breakers)


async def test_calls_waiting_on_a_hung_redis_end_with_the_first_timeout(
        settings: Settings, own_redis: RedisServer) -> None:
    """redis-py 5 reconnects under its pool's lock: on a hung server (the kernel still accepts the
    TCP connection) every reconnect's handshake times out in turn, so concurrent calls took 200,
    400, 600 ms... Through the breaker they all end with the first timeout, the rate limiter and
    the login limit skip Redis at once, and after the cooldown exactly one caller probes."""
    local = replace(settings, redis_url=own_redis.url(), rate_limit_enabled=True,
                    cache_circuit_seconds=COOLDOWN, redis_cache_timeout=SOCKET_TIMEOUT)
    client, main = create_redis(local, cache_path=True), create_redis(local)
    breaker = breaker_for(client, local)
    limiter = RateLimiter(local, main, client)
    assert limiter.breaker is breaker  # one breaker for everything the request path asks

    async def timed_get() -> tuple[float, str]:
        started = time.monotonic()
        try:
            await breaker.call(partial(client.get, "k"), REDIS_FAILURES)
            outcome = "ok"
        except CircuitOpen:
            outcome = "skipped"
        except REDIS_FAILURES:
            outcome = "failed"
        return time.monotonic() - started, outcome

    try:
        assert all(o == "ok" for _, o in await asyncio.gather(*(timed_get() for _ in range(12))))
        own_redis.pause()
        before = breaker.stats.snapshot()
        results = await asyncio.gather(*(timed_get() for _ in range(12)))
        assert max(t for t, _ in results) <= SOCKET_TIMEOUT + 0.1, results
        assert sorted(o for _, o in results) == ["failed"] + ["skipped"] * 11, results
        after = breaker.stats.snapshot()
        assert (after["failed"] - before["failed"], after["aborted"] - before["aborted"]) == (1, 11)

        # Open: requests are let through and logins refused, without touching Redis.
        started = time.monotonic()
        assert (await limiter.check_request("ip:198.51.100.1")).allowed
        with pytest.raises(ServiceUnavailable):
            await limiter.check_login("ann@example.com", "198.51.100.1")
        assert time.monotonic() - started < 0.05

        await asyncio.sleep(COOLDOWN + 0.05)  # one probe, and it finds Redis still hung
        results = await asyncio.gather(*(timed_get() for _ in range(12)))
        assert sorted(o for _, o in results) == ["failed"] + ["skipped"] * 11, results
        assert max(t for t, _ in results) <= SOCKET_TIMEOUT + 0.1, results
        assert breaker.stats.probes - after["probes"] == 1

        own_redis.resume()
        await asyncio.sleep(COOLDOWN + 0.05)  # the next probe closes the breaker
        assert (await timed_get())[1] == "ok"
        assert all(o == "ok" for _, o in await asyncio.gather(*(timed_get() for _ in range(12))))
        assert not breaker.is_open
        assert (await limiter.check_request("ip:198.51.100.1")).allowed
    finally:
        own_redis.resume()
        await client.aclose()
        await main.aclose()
