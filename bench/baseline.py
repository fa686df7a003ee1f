"""The baselines of `make bench`: bare Starlette endpoints on the same stack, without GraphQL.

- `POST /redis/{name}`: verify the bearer token, then return the JSON that the GraphQL query
  `name` returned for this caller, read from Redis with one GET: the floor of a cached answer.
- `POST /sql/{name}`: verify the bearer token, then run the SQL statements that one GraphQL
  request `name` ran (recorded by bench/run.py), with the recorded user's id replaced by the
  caller's, one after the other on one pooled asyncpg connection, and return the rows as JSON:
  the floor of an uncached answer.

Served by uvicorn exactly like the API (`uvicorn bench.baseline:create_app --factory`), with
the same settings from the environment; `BENCH_STATEMENTS` names the recorded statements.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.cache.clients import create_redis
from gateway.data.db import create_pool
from gateway.errors import Unauthenticated
from gateway.ops.settings import Settings
from gateway.security.access import bearer_token, decode_access_token


def redis_key(name: str, user_id: uuid.UUID | str) -> str:
    return f"bench:json:{name}:{user_id}"


def substitute(args: tuple[Any, ...], recorded: uuid.UUID, caller: uuid.UUID) -> tuple[Any, ...]:
    """The recorded arguments with the recorded user's id replaced by the caller's, also inside
    lists (the loaders pass arrays of ids)."""
    def swap(value: Any) -> Any:
        if isinstance(value, uuid.UUID | str) and str(value) == str(recorded):
            return caller if isinstance(value, uuid.UUID) else str(caller)
        if isinstance(value, list | tuple):
            return type(value)(swap(v) for v in value)
        return value

    return tuple(swap(a) for a in args)


def _default(value: Any) -> Any:
    """orjson's fallback: Decimal as a number; asyncpg's own UUID type (and anything else) as
    text, as the GraphQL layer shows it."""
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _unauthenticated(exc: Unauthenticated) -> Response:
    return Response(orjson.dumps({"errors": [{"message": exc.message}]}), status_code=401,
                    media_type="application/json")


REDIS_CONNECTIONS = 256  # more than the bench's highest concurrency (BENCH_CONCURRENCY)


def create_app() -> Starlette:
    settings = Settings.load()
    recorded: dict[str, dict[str, Any]] = pickle.loads(
        Path(os.environ["BENCH_STATEMENTS"]).read_bytes())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings)
        # A connection for every request in flight: redis-py's pool raises rather than waits
        # when it has none left (the API's breaker queues its calls instead, gateway/ops/
        # circuit.py), which at c=64 failed 1-2 % of the admin page's large GETs.
        app.state.redis = create_redis(
            replace(settings, redis_max_connections=max(settings.redis_max_connections,
                                                        REDIS_CONNECTIONS)), cache_path=True)
        try:
            yield
        finally:
            await app.state.redis.aclose()
            await app.state.pool.close()

    def caller_id(request: Request) -> uuid.UUID:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise Unauthenticated("missing token")
        return decode_access_token(settings, token).id

    async def from_redis(request: Request) -> Response:
        try:
            user = caller_id(request)
        except Unauthenticated as exc:
            return _unauthenticated(exc)
        await request.body()
        body = await request.app.state.redis.get(redis_key(request.path_params["name"], user))
        if body is None:
            return Response(b'{"errors": [{"message": "not cached"}]}', status_code=404,
                            media_type="application/json")
        return Response(body, media_type="application/json")

    async def from_sql(request: Request) -> Response:
        try:
            user = caller_id(request)
        except Unauthenticated as exc:
            return _unauthenticated(exc)
        await request.body()
        entry = recorded[request.path_params["name"]]
        results = []
        async with request.app.state.pool.acquire() as conn:
            for sql, args, returns_rows in entry["statements"]:
                values = substitute(args, entry["user"], user)
                if returns_rows:
                    results.append([dict(r) for r in await conn.fetch(sql, *values)])
                else:
                    await conn.execute(sql, *values)
        return Response(orjson.dumps({"data": results}, default=_default),
                        media_type="application/json")

    return Starlette(routes=[Route("/redis/{name}", from_redis, methods=["POST"]),
                             Route("/sql/{name}", from_sql, methods=["POST"])],
                     lifespan=lifespan)
