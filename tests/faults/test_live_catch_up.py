"""Live dashboards while Redis is down (issue 16, item 2): a subscription stays open, and when
the process's Redis listener is back it gets one push with the current figures, which include a
change made while no message could travel.

The gateway runs under uvicorn in this process (tests/live_client.py) on a redis-server of the
test's own, killed with SIGKILL and started again on the same port.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import replace

import asyncpg
import httpx
import pytest

from gateway.dev.embedded import RedisServer
from gateway.ops.settings import Settings
from tests.factories import UserFactory
from tests.live_client import LiveClient, live_server

pytestmark = pytest.mark.slow

OVERVIEW = "subscription { overview { totalTasks } }"
CREATE = 'mutation { createTask(input: {title: "while Redis was down"}) { id } }'


async def test_a_subscription_survives_a_redis_outage_and_catches_up_once_it_is_back(
        settings: Settings, own_redis: RedisServer, users: UserFactory, pool: asyncpg.Pool,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    token = token_for(user.id)
    live = replace(settings, redis_url=own_redis.url(), live_coalesce_ms=50,
                   cache_circuit_seconds=0.5)
    async with live_server(live) as server, LiveClient.connect(server.ws, token) as client:
        hub = server.app.state.live_hub
        async with asyncio.timeout(15):
            await hub.listening.wait()
        await client.subscribe("o", OVERVIEW)
        assert (await client.data("o"))["overview"]["totalTasks"] == 0

        os.kill(own_redis.pid() or 0, signal.SIGKILL)
        async with asyncio.timeout(15):
            while hub.listening.is_set():  # noqa: ASYNC110 (no event for "lost")
                await asyncio.sleep(0.05)
        async with httpx.AsyncClient(timeout=30) as http:  # a write while Redis is down
            response = await http.post(f"{server.http}/graphql", json={"query": CREATE},
                                       headers={"Authorization": f"Bearer {token}"})
        assert "errors" not in response.json(), response.text

        own_redis.start()  # same port: the listener reconnects (with backoff) and catches up
        caught_up = await client.data("o", wait=30)
        assert caught_up["overview"]["totalTasks"] == 1
        assert hub.listening.is_set()
        # Still open, and live again: the next write is pushed as usual.
        async with httpx.AsyncClient(timeout=30) as http:
            await http.post(f"{server.http}/graphql", json={"query": CREATE},
                            headers={"Authorization": f"Bearer {token}"})
        assert (await client.data("o"))["overview"]["totalTasks"] == 2
