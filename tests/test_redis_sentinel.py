"""The cache, the rate limiter and arq behind Redis Sentinel, through a real fail-over.

The test starts a master, a replica of it and one Sentinel (quorum 1) from `redis-server` binaries
on free loopback ports, then stops the master: the Sentinel promotes the replica and the same client
objects carry on against the new master.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from arq.connections import create_pool
from redis.asyncio import Redis

from gateway.cache.clients import create_redis
from gateway.cache.fields import cache_of
from gateway.data.resources import arq_redis_settings
from gateway.dev.embedded import RedisServer, free_port, redis_server_binary
from gateway.ops.settings import Settings
from gateway.security.ratelimit import SlidingWindow
from loaders.analytics import OverviewLoader
from tests.factories import UserFactory

MASTER = "gateway-test"


@dataclass
class SentinelSet:
    master: RedisServer
    replica: RedisServer
    sentinel: RedisServer  # started from a config file, stopped through its pid file

    def sentinel_cli(self, *args: str) -> str:
        out = subprocess.run([str(redis_server_binary().parent / "redis-cli"), "-p",
                              str(self.sentinel.port), *args], capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout

    def master_port(self) -> int:
        return int(self.sentinel_cli("sentinel", "get-master-addr-by-name",
                                     MASTER).split()[1])


def start_sentinel(data_dir: Path, master_port: int) -> RedisServer:
    """`redis-server sentinel.conf --sentinel`: Sentinel rewrites its config, so it gets a file."""
    server = RedisServer(data_dir, port=free_port())
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "sentinel.conf"
    conf.write_text("\n".join([
        f"port {server.port}", "bind 127.0.0.1", "daemonize yes",
        f"pidfile {server.pid_file.resolve()}", f"logfile {server.log_file.resolve()}",
        f"dir {data_dir.resolve()}",
        f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1",
        f"sentinel down-after-milliseconds {MASTER} 1000",
        f"sentinel failover-timeout {MASTER} 5000",
        f"sentinel parallel-syncs {MASTER} 1", ""]))
    subprocess.run([str(redis_server_binary()), str(conf.resolve()), "--sentinel"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True, timeout=30)
    for _ in range(300):
        if server.is_running():
            return server
        time.sleep(0.05)
    raise AssertionError(f"Sentinel did not start; see {server.log_file}")


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    """A fresh set per test: a fail-over changes it for good."""
    master = RedisServer(tmp_path / "master", port=free_port())
    replica = RedisServer(tmp_path / "replica", port=free_port(),
                          extra_args=("--replicaof", "127.0.0.1", str(master.port)))
    servers = [master, replica]
    try:
        master.start()
        replica.start()
        sentinel = start_sentinel(tmp_path / "sentinel", master.port)
        servers.append(sentinel)
        found = SentinelSet(master, replica, sentinel)
        for _ in range(300):  # the Sentinel has discovered the replica through the master
            if "127.0.0.1" in found.sentinel_cli("sentinel", "replicas", MASTER):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the Sentinel did not discover the replica")
        yield found
    finally:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(RedisServer.stop, servers))


@pytest.fixture
def sentinel_settings(settings: Settings, sentinel_set: SentinelSet) -> Settings:
    return replace(settings, redis_sentinels=(f"127.0.0.1:{sentinel_set.sentinel.port}",),
                   redis_sentinel_master=MASTER, cache_circuit_seconds=0.5)


@pytest.fixture
async def sentinel_client(sentinel_settings: Settings) -> AsyncIterator[Redis]:
    client = create_redis(sentinel_settings)
    try:
        yield client
    finally:
        await client.aclose()


async def fail_over(found: SentinelSet, client: Redis) -> None:
    """Stop the master once the replica has its data; wait for the Sentinel to promote it."""
    assert await client.execute_command("WAIT", 1, 5000) == 1
    found.master.stop()
    for _ in range(400):
        if found.master_port() == found.replica.port:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("no fail-over within 20 s")
    for _ in range(400):  # the promoted replica accepts writes once it knows it is master
        direct = Redis.from_url(found.replica.url())
        try:
            if (await direct.info("replication"))["role"] == "master":
                return
        finally:
            await direct.aclose()
        await asyncio.sleep(0.05)
    raise AssertionError("the promoted replica never became master")


async def until_answered(client: Redis) -> None:
    """A fail-over costs clients a few errors (the dead master's connections, then a moment when
    the Sentinel reports no healthy master); the same client then answers from the new master."""
    errors = []
    for _ in range(100):
        try:
            await client.ping()
            return
        except Exception as exc:
            errors.append(repr(exc))
            await asyncio.sleep(0.1)
    raise AssertionError(f"no answer after the fail-over: {errors[-3:]}")


async def test_the_client_follows_the_master_through_a_fail_over(
        sentinel_set: SentinelSet, sentinel_client: Redis) -> None:
    assert (await sentinel_client.info("server"))["tcp_port"] == sentinel_set.master.port
    await sentinel_client.set("before", b"1")
    await fail_over(sentinel_set, sentinel_client)
    await until_answered(sentinel_client)
    assert (await sentinel_client.info("server"))["tcp_port"] == sentinel_set.replica.port
    assert await sentinel_client.get("before") == b"1"
    await sentinel_client.set("after", b"2")
    assert await sentinel_client.get("after") == b"2"


async def test_cache_and_rate_limits_survive_a_fail_over(
        sentinel_set: SentinelSet, sentinel_settings: Settings, sentinel_client: Redis,
        pool: asyncpg.Pool, users: UserFactory) -> None:
    user = await users.create()
    await users.task(user)
    cache_client = create_redis(sentinel_settings, cache_path=True)

    class Holder:  # what the cache needs of the lifespan's resources
        # nothing kept in the process: every load reads Redis, through the fail-over
        settings = replace(sentinel_settings, cache_local_entries=0)
        cache_redis = cache_client

    cache = cache_of(Holder())
    limiter = SlidingWindow(sentinel_client)
    key = str(uuid.uuid4())
    try:
        notes: dict[str, Any] = {}
        loader = OverviewLoader(pool)
        versions = {user.id: await pool.fetchval(
            "select data_version from users where id = $1", user.id)}
        values = await cache.load("overview", [(user.id,)], versions, loader.compute, notes,
                                  codec=loader.codec)
        assert values[0].total_tasks == 1 and notes["cache"]["overview"]["misses"] == 1
        assert [(await limiter.hit(key, 2)).allowed for _ in range(2)] == [True, True]

        await fail_over(sentinel_set, sentinel_client)

        # The cache path may miss once while it finds the new master; then it hits again.
        for _ in range(50):
            notes = {}
            await cache.load("overview", [(user.id,)], versions, loader.compute, notes,
                             codec=loader.codec)
            if notes.get("cache", {}).get("overview", {}).get("hits"):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"the cache never hit after the fail-over: {notes}")
        # The limiter's counters were replicated: the third request of the minute is refused.
        try:
            decision = await limiter.hit(key, 2)
        except Exception:
            decision = await limiter.hit(key, 2)
        assert not decision.allowed
    finally:
        await cache_client.aclose()


async def test_arq_enqueues_through_the_sentinel(
        sentinel_set: SentinelSet, sentinel_settings: Settings) -> None:
    arq = await create_pool(arq_redis_settings(sentinel_settings))
    try:
        job = await arq.enqueue_job("refresh_views", _job_id=f"sentinel:{uuid.uuid4()}")
        assert job is not None
        direct = Redis.from_url(sentinel_set.master.url())
        try:
            assert await direct.zcard("arq:queue") == 1
        finally:
            await direct.aclose()
    finally:
        await arq.aclose()
