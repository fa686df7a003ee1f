"""Rate limits in Redis: per user or per client IP, a sliding window, 429 with Retry-After; login
per account and per IP, failing closed when Redis is down (and reads failing open)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gateway.cache.clients import create_redis
from gateway.dev.embedded import free_port
from gateway.errors import RateLimited, ServiceUnavailable
from gateway.http.app import create_app
from gateway.ops.settings import Settings
from gateway.security.ratelimit import RateLimiter, SlidingWindow, TrustedProxies, client_ip

QUERY = {"query": "{ version }"}


async def limited_client(settings: Settings, *, peer: str = "127.0.0.1",
                         **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(replace(settings, rate_limit_enabled=True, **changes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
def limited(settings: Settings, redis: Redis) -> Callable[..., Any]:
    """`async with limited(peer=..., RATE_LIMIT_PER_MINUTE...)`: an app with limits on; Redis
    is flushed first so that every test starts with empty windows."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def make(**changes: Any) -> AsyncIterator[httpx.AsyncClient]:
        await redis.flushdb()
        async for client in limited_client(settings, **changes):
            yield client

    return make


async def test_429_with_retry_after_once_the_limit_is_reached(limited: Any) -> None:
    async with limited(rate_limit_per_minute=3) as client:
        for _ in range(3):
            assert (await client.post("/graphql", json=QUERY)).status_code == 200
        refused = await client.post("/graphql", json=QUERY)
        assert refused.status_code == 429
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 60
        error = refused.json()["errors"][0]
        assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": retry_after}
        # Probes and metrics are never limited.
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


async def test_each_user_has_a_budget_of_their_own(limited: Any, token_for: Callable[..., str]
                                                   ) -> None:
    alice = {"Authorization": f"Bearer {token_for(uuid.uuid4())}"}
    bob = {"Authorization": f"Bearer {token_for(uuid.uuid4())}"}
    async with limited(rate_limit_per_minute=2) as client:
        for _ in range(2):
            assert (await client.post("/graphql", json=QUERY, headers=alice)).status_code == 200
        assert (await client.post("/graphql", json=QUERY, headers=alice)).status_code == 429
        assert (await client.post("/graphql", json=QUERY, headers=bob)).status_code == 200
        # Anonymous callers from the same address count per IP, apart from the users.
        assert (await client.post("/graphql", json=QUERY)).status_code == 200


async def test_forwarded_for_counts_only_from_a_trusted_proxy(limited: Any) -> None:
    # The test client's peer is 127.0.0.1, a trusted proxy by default: each forwarded client
    # has its own budget.
    async with limited(rate_limit_per_minute=2) as client:
        one = {"X-Forwarded-For": "203.0.113.1"}
        two = {"X-Forwarded-For": "203.0.113.2"}
        for _ in range(2):
            assert (await client.post("/graphql", json=QUERY, headers=one)).status_code == 200
        assert (await client.post("/graphql", json=QUERY, headers=one)).status_code == 429
        assert (await client.post("/graphql", json=QUERY, headers=two)).status_code == 200
    # From an untrusted peer the header is ignored: changing it does not buy a new budget.
    async with limited(rate_limit_per_minute=2, peer="198.51.100.7") as client:
        for n in range(2):
            spoof = {"X-Forwarded-For": f"203.0.113.{n}"}
            assert (await client.post("/graphql", json=QUERY, headers=spoof)).status_code == 200
        spoof = {"X-Forwarded-For": "203.0.113.99"}
        assert (await client.post("/graphql", json=QUERY, headers=spoof)).status_code == 429


def test_client_ip() -> None:
    trusted = TrustedProxies(("127.0.0.1", "10.0.0.0/8"))

    def scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return {"client": (peer, 1), "headers": headers}

    assert client_ip(scope("198.51.100.1", "1.2.3.4"), trusted) == "198.51.100.1"
    assert client_ip(scope("127.0.0.1", "1.2.3.4"), trusted) == "1.2.3.4"
    # the right-most untrusted hop: the client cannot prepend its way to another identity
    assert client_ip(scope("10.1.2.3", "6.6.6.6, 1.2.3.4, 10.9.9.9"), trusted) == "1.2.3.4"
    assert client_ip(scope("127.0.0.1"), trusted) == "127.0.0.1"


async def test_the_window_slides(redis: Redis) -> None:
    window = SlidingWindow(redis, f"rl-test-{uuid.uuid4().hex}")
    start = 1_800_000_000.0  # the start of a minute
    for i in range(10):
        assert (await window.hit("k", 10, now=start + i)).allowed
    refused = await window.hit("k", 10, now=start + 30)
    assert not refused.allowed and refused.retry_after == 30  # until this minute is over
    # Half-way through the next minute, half of the previous minute's 10 still count.
    half = start + 90
    allowed = [(await window.hit("k", 10, now=half)).allowed for _ in range(6)]
    assert allowed == [True] * 5 + [False]
    # Two minutes on, the window is empty again.
    assert (await window.hit("k", 10, now=start + 180)).allowed


async def test_refused_requests_do_not_extend_the_wait(redis: Redis) -> None:
    window = SlidingWindow(redis, f"rl-test-{uuid.uuid4().hex}")
    start = 1_800_000_000.0
    for _ in range(3):
        await window.hit("k", 3, now=start)
    for _ in range(50):  # a client hammering while limited
        assert not (await window.hit("k", 3, now=start + 1)).allowed
    assert (await window.hit("k", 3, now=start + 120)).allowed


async def test_login_is_limited_per_account_and_per_ip(settings: Settings, redis: Redis) -> None:
    await redis.flushdb()
    local = replace(settings, rate_limit_enabled=True, login_rate_limit_per_minute=3,
                    login_ip_rate_limit_per_minute=5)
    limiter = RateLimiter(local, redis, redis)
    for _ in range(3):
        await limiter.check_login("Ann@Example.com", "198.51.100.1")
    with pytest.raises(RateLimited) as refused:
        await limiter.check_login(" ann@example.com", "198.51.100.2")  # same account
    assert refused.value.extensions["retryAfter"] >= 1  # type: ignore[index]
    # Other accounts from the first IP: allowed until that IP's own limit (5 attempts).
    await limiter.check_login("bob@example.com", "198.51.100.1")
    await limiter.check_login("bob@example.com", "198.51.100.1")
    with pytest.raises(RateLimited):
        await limiter.check_login("carl@example.com", "198.51.100.1")


async def test_the_login_mutation_answers_429_after_too_many_attempts(
        limited: Any, users: Any) -> None:
    user = await users.create()
    login = {"query": "mutation($e: String!, $p: String!) { login(email: $e, password: $p) "
                      "{ accessToken } }", "variables": {"e": user.email, "p": "wrong-password"}}
    async with limited(rate_limit_per_minute=1000, login_rate_limit_per_minute=3) as client:
        for _ in range(3):
            response = await client.post("/graphql", json=login)
            assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        response = await client.post("/graphql", json=login)
        assert response.status_code == 429
        assert response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert int(response.headers["retry-after"]) >= 1


async def test_redis_down_fails_open_for_reads_and_closed_for_login(settings: Settings) -> None:
    dead = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                   rate_limit_enabled=True)
    redis, cache_redis = create_redis(dead), create_redis(dead, cache_path=True)
    try:
        limiter = RateLimiter(dead, redis, cache_redis)
        assert (await limiter.check_request("ip:198.51.100.1")).allowed
        with pytest.raises(ServiceUnavailable):
            await limiter.check_login("ann@example.com", "198.51.100.1")
    finally:
        await redis.aclose()
        await cache_redis.aclose()
    async for client in limited_client(dead):
        response = await client.post("/graphql", json=QUERY)
        assert response.status_code == 200 and response.json()["data"]["version"]
        login = {"query": 'mutation { login(email: "a@example.com", password: "x") '
                          "{ accessToken } }"}
        response = await client.post("/graphql", json=login)
        assert response.status_code == 503
        assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert response.headers["retry-after"]


async def test_disabled_means_no_limit(client: httpx.AsyncClient) -> None:
    for _ in range(20):
        assert (await client.post("/graphql", json=QUERY)).status_code == 200
