"""Redis clients: one for the cache path (short timeouts, no retries) and one for the rest.

redis-py's defaults would let a dead Redis hang a request for a minute. The cache path is allowed
to fail: it uses `REDIS_CACHE_TIMEOUT` (200 ms) and never retries, and the cache layer treats any
Redis error as a miss. Rate limits and job enqueueing use the ordinary socket timeouts.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.settings import Settings


def create_redis(settings: Settings, *, cache_path: bool = False, url: str | None = None) -> Redis:
    """A client for `REDIS_URL`; `cache_path=True` gives the fail-fast client of the cache."""
    timeout = settings.redis_cache_timeout if cache_path else settings.redis_socket_timeout
    connect_timeout = (settings.redis_cache_timeout if cache_path
                       else settings.redis_socket_connect_timeout)
    return Redis.from_url(
        url or settings.redis_url or "redis://127.0.0.1:6379/0",
        password=settings.redis_password,
        max_connections=settings.redis_max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0) if cache_path else Retry(NoBackoff(), 1),
        retry_on_timeout=False,
        health_check_interval=0,
        decode_responses=False,
    )
