"""The cache, the rate limiter and the read-your-writes marks on a real three-master Redis Cluster.

The test starts three `redis-server --cluster-enabled yes` on free loopback ports and joins them
with `redis-cli --cluster create`. Users' keys land on different masters (so a multi-user MGET or a
transactional pipeline would fail with CROSSSLOT); each user's own keys share one slot.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

from gateway.cache.clients import create_redis
from gateway.cache.fields import cache_key
from gateway.data.replica import _get_many, ryw_key
from gateway.dev.embedded import RedisServer, port_is_free, redis_server_binary
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token
from gateway.security.ratelimit import SlidingWindow
from tests.conftest import running_app
from tests.factories import UserFactory

OVERVIEW = "{ overview { totalTasks completedTasks } }"
COMPLETE = """mutation($id: ID!) { updateTask(id: $id, input: {status: DONE}) { status } }"""


def redis_cli() -> Path:
    return redis_server_binary().parent / "redis-cli"


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis wants it under 55536."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 45_000)
        if port_is_free(port) and port_is_free(port + 10_000):
            return port
    raise AssertionError("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def cluster_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """Three masters, no replicas, covering the 16384 slots."""
    base = tmp_path_factory.mktemp("cluster")
    nodes = [RedisServer(base / f"node{i}", port=cluster_port(),
                         extra_args=("--cluster-enabled", "yes",
                                     "--cluster-config-file", "nodes.conf",
                                     "--cluster-node-timeout", "2000"))
             for i in range(3)]
    try:
        for node in nodes:
            node.start()
        created = subprocess.run(
            [str(redis_cli()), "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in nodes), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
        assert created.returncode == 0, created.stdout + created.stderr
        for node in nodes:  # every node must agree the cluster is up before clients use it
            for _ in range(400):
                info = subprocess.run([str(redis_cli()), "-p", str(node.port), "cluster", "info"],
                                      capture_output=True, text=True, timeout=10, check=False)
                if "cluster_state:ok" in info.stdout:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"cluster not ok on {node.port}: {info.stdout}")
        yield nodes
    finally:
        stop_all(nodes)


def stop_all(servers: list[RedisServer]) -> None:
    """Stop servers in parallel (each takes a second or two to shut down)."""
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(RedisServer.stop, servers))


@pytest.fixture
def cluster_settings(settings: Settings, cluster_nodes: list[RedisServer]) -> Settings:
    return replace(settings, redis_cluster_nodes=tuple(f"127.0.0.1:{n.port}"
                                                       for n in cluster_nodes))


@pytest.fixture
async def cluster(cluster_settings: Settings) -> AsyncIterator[Redis]:
    client = create_redis(cluster_settings)
    try:
        await client.flushall()
        yield client
    finally:
        await client.aclose()


def test_a_users_keys_share_one_slot_and_users_spread_over_slots() -> None:
    users = [uuid.uuid4() for _ in range(20)]
    for user in users:
        keys = [f"gql:{{{user}}}:f2:v3:abc", cache_key("overview", (user,), 3, "f"),
                cache_key("trends", (user, "2026-01-01", "2026-01-30"), 3, "f"), ryw_key(user),
                f"rl:{{{user}}}:1", f"rl:{{{user}}}:0"]
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys
    assert len({key_slot(cache_key("overview", (u,), 0, "f").encode()) for u in users}) > 1


async def test_create_redis_gives_a_cluster_client(cluster: Redis) -> None:
    assert isinstance(cluster, RedisCluster)
    assert len(cluster.get_primaries()) == 3
    with pytest.raises(Exception, match="(?i)slot"):  # why multi-user MGETs are split by slot
        await cluster.mget([cache_key("overview", (uuid.uuid4(),), 0, "f") for _ in range(20)])


async def test_cache_hits_misses_and_invalidation_through_the_api_on_the_cluster(
        cluster_settings: Settings, cluster: Redis, cluster_nodes: list[RedisServer],
        users: UserFactory, pool: asyncpg.Pool) -> None:
    people = [await users.create() for _ in range(8)]
    tasks = {p.id: await users.task(p) for p in people}
    async with running_app(cluster_settings) as client:
        async def ask(user_id: uuid.UUID, query: str = OVERVIEW,
                      variables: dict[str, Any] | None = None) -> dict[str, Any]:
            token = create_access_token(cluster_settings, user_id, "user")
            body: dict[str, Any] = (await client.post(
                "/graphql", json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {token}"})).json()
            assert body.get("errors") is None, body
            return body

        first = [await ask(p.id) for p in people]
        second = [await ask(p.id) for p in people]
        assert all(not b["extensions"]["cache"]["overview"]["hit"] for b in first)
        assert all(b["extensions"]["cache"]["overview"]["hit"] for b in second)
        assert all(b["data"]["overview"] == {"totalTasks": 1, "completedTasks": 0}
                   for b in second)

        # A change invalidates that user only, across the cluster.
        await ask(people[0].id, COMPLETE, {"id": str(tasks[people[0].id])})
        after = await ask(people[0].id)
        assert after["data"]["overview"] == {"totalTasks": 1, "completedTasks": 1}
        assert not after["extensions"]["cache"]["overview"]["hit"]
        assert (await ask(people[1].id))["extensions"]["cache"]["overview"]["hit"]

    # The entries really are spread over the masters.
    sizes = []
    for node in cluster_nodes:
        direct = Redis.from_url(node.url())
        try:
            sizes.append(await direct.dbsize())
        finally:
            await direct.aclose()
    assert sum(1 for size in sizes if size) >= 2, sizes


async def test_rate_limits_and_read_your_writes_marks_on_the_cluster(cluster: Redis) -> None:
    limiter = SlidingWindow(cluster)
    clients = [str(uuid.uuid4()) for _ in range(6)]
    for key in clients:
        decisions = [await limiter.hit(key, 3) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]

    users = [uuid.uuid4() for _ in range(10)]
    await asyncio.gather(*(cluster.set(ryw_key(u), f"0/{i:X}") for i, u in enumerate(users)))
    assert await _get_many(cluster, [ryw_key(u) for u in users]) == [
        f"0/{i:X}".encode() for i in range(10)]
