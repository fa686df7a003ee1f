"""The long-lived clients of one process, created by the lifespan and closed by it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import Redis

from gateway.cache.clients import create_redis
from gateway.data.accounts import AccountCache, off_because
from gateway.data.budget import check_connection_budget
from gateway.data.db import create_pool as create_pg_pool
from gateway.ops.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool            # the primary: everything that writes, and auth
    redis: Redis                  # rate limits and other must-answer Redis work
    cache_redis: Redis            # the cache path: 200 ms timeouts, no retries
    arq: ArqRedis | None          # job enqueueing; None while Redis was down at start-up
    read_pool: asyncpg.Pool | None = None  # DATABASE_READ_URL's replica (gateway/data/replica.py)
    accounts: AccountCache[Any] | None = None  # callers' rows (gateway/data/accounts.py): the API

    @classmethod
    async def open(cls, settings: Settings, *, api: bool = False) -> Resources:
        """The clients. `api`, for the API's lifespan: its connections say that the process
        announces its own account changes (on Redis, `domain.changes.tasks_changed`), and the
        process keeps callers' account rows (`accounts`, which listens on a connection of its
        own and starts caching once `AccountCache.follow` gives it the Redis side too)."""
        pool = await create_pg_pool(settings, changes_announced=api)
        read_pool = await open_read_pool(settings)
        await check_connection_budget(settings, pool, read_pool)
        redis = create_redis(settings)
        cache_redis = create_redis(settings, cache_path=True)
        arq = await open_arq(settings)
        accounts = await open_account_cache(settings) if api else None
        return cls(settings, pool, redis, cache_redis, arq, read_pool, accounts)

    async def close(self) -> None:
        if self.accounts is not None:
            await self.accounts.stop()
        if self.arq is not None:
            await self.arq.aclose()
        await self.cache_redis.aclose()
        await self.redis.aclose()
        if self.read_pool is not None:
            await self.read_pool.close()
        await self.pool.close()


async def open_account_cache(settings: Settings) -> AccountCache[Any] | None:
    """The account cache, listening to PostgreSQL; None when `ACCOUNT_CACHE_SECONDS=0`, without
    live dashboards (`LIVE_ENABLED=false`: their Redis listener hears the API's announcements), or
    behind a transaction pooler, which does not carry `LISTEN`."""
    reason = off_because(settings)
    if reason is not None:
        if settings.account_cache_seconds:  # asked for, and not to be had
            # Without live dashboards that is expected; behind a pooler, worth a warning.
            log.log(logging.INFO if not settings.live_enabled else logging.WARNING,
                    "ACCOUNT_CACHE_SECONDS is ignored (%s): every request reads its caller's "
                    "account row", reason)
        return None
    cache: AccountCache[Any] = AccountCache(settings)
    await cache.start()
    return cache


async def open_read_pool(settings: Settings) -> asyncpg.Pool | None:
    """The replica's pool, or None without `DATABASE_READ_URL`. It connects on demand
    (`min_size=0`) with a short connect timeout, so a replica that is down at start-up or later
    costs the fallback to the primary, never the start of the API."""
    if not settings.database_read_url:
        return None
    return await create_pg_pool(settings, dsn=settings.database_read_url, min_size=0,
                                timeout=min(settings.database_pool_timeout, 5.0))


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection settings from the same `REDIS_URL` as the API, or its Sentinels.

    arq has no Redis Cluster support: with `REDIS_CLUSTER_NODES` the jobs stay on `REDIS_URL`."""
    redis_settings = RedisSettings.from_dsn(settings.redis_url or "redis://127.0.0.1:6379/0")
    if settings.redis_sentinels:
        from gateway.cache.clients import parse_nodes

        redis_settings.host = parse_nodes(settings.redis_sentinels)
        redis_settings.sentinel = True
        redis_settings.sentinel_master = settings.redis_sentinel_master
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
