"""The Starlette application: lifespan-owned resources, `/health`, `/ready`, `/graphql`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import MaskErrors

from gateway.auth import bearer_token, decode_access_token
from gateway.context import Context
from gateway.errors import Unauthenticated, is_expected
from gateway.resources import Resources
from gateway.settings import Settings
from schema.schema import build_schema

log = logging.getLogger(__name__)
READY_TIMEOUT = 2.0  # seconds each dependency gets to answer /ready


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context: the caller from the bearer token, and resources."""

    async def get_context(self, request: Any, response: Any = None) -> Context:
        resources: Resources = request.app.state.resources
        context = Context(request=request, resources=resources)
        try:
            token = bearer_token(request.headers.get("authorization"))
            if token is not None:
                context.caller = decode_access_token(resources.settings, token)
        except Unauthenticated as exc:
            context.auth_error = exc
        return context


async def health(request: Request) -> Response:
    """Liveness: answers without touching the database or Redis."""
    settings: Settings = request.app.state.settings
    return ORJSONResponse({"status": "healthy", "version": settings.app_version,
                           "timestamp": datetime.now(UTC).isoformat()})


async def ready(request: Request) -> Response:
    """Readiness: 503 when PostgreSQL does not answer. Redis down is reported as `degraded` with
    200, because the cache fails open and every query can still be answered from PostgreSQL."""
    resources: Resources = request.app.state.resources
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            async with resources.pool.acquire(timeout=READY_TIMEOUT) as conn:
                await conn.fetchval("select 1")
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the log says which
        log.warning("readiness: PostgreSQL unavailable: %s", type(exc).__name__)
        checks["postgres"] = "unavailable"
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await resources.cache_redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        log.warning("readiness: Redis unavailable: %s", type(exc).__name__)
        checks["redis"] = "degraded"
    if checks["postgres"] != "ok":
        return ORJSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    return ORJSONResponse({"status": "ready", "checks": checks})


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI application. `settings` defaults to the environment's."""
    settings = settings or Settings.load()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        resources = await Resources.open(settings)
        app.state.resources = resources
        log.info("gateway started (env=%s)", settings.app_env)
        try:
            yield
        finally:
            await resources.close()
            log.info("gateway stopped")

    schema = build_schema(extensions=[
        lambda: MaskErrors(should_mask_error=lambda error: not is_expected(error),
                           error_message="Internal server error"),
    ])
    graphql = GraphQLApp(schema, graphql_ide=None if settings.is_production else "graphiql")
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/graphql", graphql, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
