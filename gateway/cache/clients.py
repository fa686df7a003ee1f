"""Redis clients: one for the cache path (short timeouts, no retries) and one for the rest.

redis-py's defaults would let a dead Redis hang a request for a minute. The cache path is allowed
to fail: it uses `REDIS_CACHE_TIMEOUT` (200 ms) and never retries, and the cache layer treats any
Redis error as a miss. Rate limits and job enqueueing use the ordinary socket timeouts.

Everything a request asks of Redis (the field and response caches, the rate limits) also goes
through the process's one circuit breaker of the cache-path client, `breaker_for(cache_redis)`:
each call gets `REDIS_CACHE_TIMEOUT` in all (pool, connect, command), the first failure opens the
breaker for `CACHE_CIRCUIT_SECONDS` and cuts short the calls still waiting, and then one probe per
cooldown tries again. So a hung Redis costs a request at most about one timeout, and only the
requests in flight when it hung, or probing, pay it.

At scale the same clients run on Redis Cluster (`REDIS_CLUSTER_NODES`) or on a Sentinel-managed
master (`REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`). Every key of a user carries the `{<user_id>}`
hash tag, so a user's keys share a slot; commands over several users use `mget_nonatomic` and
non-transactional pipelines, which a cluster client splits by slot. arq (jobs) has no cluster
support: it keeps `REDIS_URL`, or the Sentinels (see `gateway.data.resources.arq_redis_settings`).
"""

from __future__ import annotations

import weakref
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.ops.circuit import CircuitBreaker
from gateway.ops.settings import Settings

_BREAKERS: weakref.WeakKeyDictionary[Any, CircuitBreaker] = weakref.WeakKeyDictionary()


def create_redis(settings: Settings, *, cache_path: bool = False, url: str | None = None) -> Redis:
    """A client for `REDIS_URL`; `cache_path=True` gives the fail-fast client of the cache.

    With `REDIS_CLUSTER_NODES` (and no explicit `url`) the client is a `RedisCluster`; with
    `REDIS_SENTINELS` it is a client of the master Sentinel names, found again after a fail-over.
    Both are returned as `Redis`: they answer the commands we use (single-slot commands, scripts
    on one slot, `mget_nonatomic`, non-transactional pipelines) the same way.
    """
    timeout = settings.redis_cache_timeout if cache_path else settings.redis_socket_timeout
    connect_timeout = (settings.redis_cache_timeout if cache_path
                       else settings.redis_socket_connect_timeout)
    if url is None and settings.redis_cluster_nodes:
        return cast(Redis, RedisCluster(
            startup_nodes=[ClusterNode(host, port)
                           for host, port in parse_nodes(settings.redis_cluster_nodes)],
            password=settings.redis_password,
            max_connections=settings.redis_max_connections,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
            # Tries after re-reading the slot map (a moved slot, a failed-over master). redis-py
            # 5 runs a pipeline `attempts` times (so never 0) and a command `attempts + 1` times;
            # the cache path keeps it short, like its single-Redis client.
            cluster_error_retry_attempts=1 if cache_path else 2,
            health_check_interval=0,
            decode_responses=False,
        ))
    if url is None and settings.redis_sentinels:
        options: dict[str, Any] = {"socket_timeout": timeout,
                                   "socket_connect_timeout": connect_timeout}
        sentinel = Sentinel(parse_nodes(settings.redis_sentinels), sentinel_kwargs=options,
                            password=settings.redis_password,
                            retry=Retry(NoBackoff(), 0) if cache_path else Retry(NoBackoff(), 1),
                            retry_on_timeout=False, health_check_interval=0,
                            decode_responses=False, **options)
        return cast(Redis, sentinel.master_for(settings.redis_sentinel_master,
                                               max_connections=settings.redis_max_connections))
    return cast(Redis, Redis.from_url(
        url or settings.redis_url or "redis://127.0.0.1:6379/0",
        password=settings.redis_password,
        max_connections=settings.redis_max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0) if cache_path else Retry(NoBackoff(), 1),
        retry_on_timeout=False,
        health_check_interval=0,
        decode_responses=False,
    ))


CALL_DEADLINES = 3  # a call's deadline, in socket timeouts (`breaker_for`)


def breaker_for(client: Any, settings: Settings) -> CircuitBreaker:
    """The circuit breaker of a Redis client, shared by everything in this process that uses it
    on the request path (the caches and the rate limiter), so that one failure spares them all:
    skipped for `CACHE_CIRCUIT_SECONDS` after a failure, at most `REDIS_MAX_CONNECTIONS` in
    flight (the client's pool raises rather than waits). Every socket operation of the client is
    bounded by `REDIS_CACHE_TIMEOUT` already; the breaker's own deadline for a whole call is a
    backstop (`CALL_DEADLINES` of those), since a call under a burst of requests legitimately
    spends longer queued in this process than one socket timeout."""
    breaker = _BREAKERS.get(client)
    if breaker is None:
        breaker = CircuitBreaker(settings.cache_circuit_seconds,
                                 timeout=settings.redis_cache_timeout * CALL_DEADLINES,
                                 max_concurrent=settings.redis_max_connections, name="Redis")
        _BREAKERS[client] = breaker
    return breaker


def parse_nodes(nodes: tuple[str, ...]) -> list[tuple[str, int]]:
    """`("10.0.0.1:7000", "redis-2:7001")` as (host, port) pairs (checked by the settings)."""
    pairs = []
    for node in nodes:
        host, _, port = node.rpartition(":")
        pairs.append((host.strip("[]"), int(port)))
    return pairs
