"""The long-lived clients of one process, created by the lifespan and closed by it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import Redis

from gateway.db import create_pool as create_pg_pool
from gateway.redis import create_redis
from gateway.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool            # the primary: everything that writes, and auth
    redis: Redis                  # rate limits and other must-answer Redis work
    cache_redis: Redis            # the cache path: 200 ms timeouts, no retries
    arq: ArqRedis | None          # job enqueueing; None while Redis was down at start-up

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        pool = await create_pg_pool(settings)
        redis = create_redis(settings)
        cache_redis = create_redis(settings, cache_path=True)
        arq = await open_arq(settings)
        return cls(settings, pool, redis, cache_redis, arq)

    async def close(self) -> None:
        if self.arq is not None:
            await self.arq.aclose()
        await self.cache_redis.aclose()
        await self.redis.aclose()
        await self.pool.close()


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection settings from the same `REDIS_URL` as the API."""
    redis_settings = RedisSettings.from_dsn(settings.redis_url or "redis://127.0.0.1:6379/0")
    if settings.redis_password:
        redis_settings.password = settings.redis_password
    redis_settings.conn_timeout = int(settings.redis_socket_connect_timeout)
    return redis_settings


async def open_arq(settings: Settings) -> ArqRedis | None:
    """An arq pool for enqueueing jobs; a Redis that is down must not stop the API from starting."""
    redis_settings = arq_redis_settings(settings)
    redis_settings.conn_retries = 0
    try:
        return await create_pool(redis_settings)
    except (OSError, ConnectionError, TimeoutError) as exc:
        log.warning("arq pool unavailable, jobs will not be enqueued: %s", exc)
        return None
    except Exception as exc:  # redis-py raises its own ConnectionError family
        log.warning("arq pool unavailable, jobs will not be enqueued: %s", exc)
        return None
