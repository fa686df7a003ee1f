"""The Starlette application: lifespan-owned resources, the middleware stack, `/health`, `/ready`,
`/metrics` and `/graphql`.

`create_app(settings)` builds the application and touches no process-wide state, so tests can
build several. `serve_app()` is what `python -m gateway serve` (and `dev`) hand to uvicorn: it
also sets up logging and Sentry, once per worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.data.db import query, quiet_outage_noise
from gateway.data.resources import Resources
from gateway.errors import GatewayError
from gateway.http.dashboard import DASHBOARD_ROUTE, dashboard
from gateway.http.export import export_tasks
from gateway.http.graphiql import ASSET_ROUTE, graphiql_asset
from gateway.http.graphql_view import GraphQLApp
from gateway.http.lean_edge import Compression, Cors
from gateway.http.middleware import (
    QUIET_PATHS,
    EdgeMiddleware,
    GraphQLBodyGate,
    RateLimitMiddleware,
)
from gateway.http.persisted import PersistedQueries
from gateway.http.response_cache import ResponseCache
from gateway.http.responses import ERROR_STATUSES, RETRY_STATUSES, ORJSONResponse
from gateway.live.hub import Hub
from gateway.ops import tracing
from gateway.ops.logs import configure_logging, quiet_library_loggers
from gateway.ops.metrics import (
    BUILD_INFO,
    BusinessGauges,
    RequestMetrics,
    render,
    sample_pool,
    sample_pool_forever,
)
from gateway.ops.runtime import tune_gc
from gateway.ops.sentry import close_sentry, init_sentry
from gateway.ops.settings import Settings
from gateway.security.ratelimit import RateLimiter
from schema.compiled import CompiledOperations
from schema.extensions.limits import Limits
from schema.schema import build_schema, graphql_extensions

log = logging.getLogger(__name__)
GRAPHQL_PATH = "/graphql"
READY_TIMEOUT = 2.0  # seconds each dependency gets to answer /ready
GZIP_MINIMUM_BYTES = 1000


async def health(request: Request) -> Response:
    """Liveness: answers without touching the database or Redis."""
    settings: Settings = request.app.state.settings
    return ORJSONResponse({"status": "healthy", "service": settings.app_name,
                           "version": settings.app_version,
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


async def metrics(request: Request) -> Response:
    """`GET /metrics`: the Prometheus text format (pool and business gauges refreshed first)."""
    gauges: BusinessGauges | None = getattr(request.app.state, "business_gauges", None)
    resources = getattr(request.app.state, "resources", None)
    if resources is not None:
        sample_pool(resources.pool)
        if gauges is not None:
            await gauges.refresh(resources.pool)
    return Response(render(), media_type=CONTENT_TYPE_LATEST)


async def gateway_error(request: Request, exc: Exception) -> Response:
    """A `GatewayError` raised by a plain route (not GraphQL): its code, and a fitting status."""
    assert isinstance(exc, GatewayError)
    extensions = exc.extensions or {}
    code = str(extensions.get("code"))
    headers = {"retry-after": str(extensions.get("retryAfter", 1))} \
        if code in RETRY_STATUSES else None
    return ORJSONResponse({"errors": [{"message": exc.message, "extensions": extensions}]},
                          status_code=ERROR_STATUSES.get(code, 500), headers=headers)


class ProbeFriendlyTrustedHost(TrustedHostMiddleware):
    """`ALLOWED_HOSTS` for everything but the probes and `/metrics`: kubelet, Docker's health
    check and Prometheus call those by IP address, and refusing them would keep pods unready."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in QUIET_PATHS:
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class SocketRoute:
    """The one WebSocket endpoint: `path` goes to `app`; any other path is closed (as Starlette's
    router closes an unknown WebSocket route)."""

    def __init__(self, path: str, app: ASGIApp) -> None:
        self.path, self.app = path, app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == self.path:
            await self.app(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1000, "reason": ""})


class Gateway(Starlette):
    """The application: Starlette, except for two ways around its stack.

    - A WebSocket goes straight to `sockets` rather than through the middleware stack, none of
      which acts on a socket (each would pass it on, but its frame would stay alive as long as
      the socket: about 8 KiB of every idle subscription, docs/performance.md).
    - `GET` and `POST /graphql`, nearly every request the gateway serves, go straight to
      `graphql`: the same middleware (`middleware_stack`), in the same order, around the same
      endpoint, without Starlette's own layers (its error and exception middleware and the
      router), which cost a cached dashboard about a tenth of its time (docs/performance.md,
      "The edge"). Nothing is lost: the view answers its own errors, with their codes, and
      `EdgeMiddleware` answers anything unhandled, as it does on the other routes.
    """

    def __init__(self, sockets: ASGIApp, graphql: ASGIApp | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sockets = sockets
        self.graphql = graphql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            scope["app"] = self
            await self.sockets(scope, receive, send)
            return
        if (kind == "http" and scope["path"] == GRAPHQL_PATH and self.graphql is not None
                and scope["method"] in ("GET", "POST")):
            scope["app"] = self
            await self.graphql(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def wrapped(app: ASGIApp, stack: list[Middleware]) -> ASGIApp:
    """`app` inside `stack` (outermost first), as Starlette builds its own middleware stack."""
    for middleware in reversed(stack):
        app = middleware.cls(app, *middleware.args, **middleware.kwargs)
    return app


def middleware_stack(settings: Settings, request_metrics: RequestMetrics) -> list[Middleware]:
    """Outermost first; see gateway/http/middleware.py for what each does and why in this order."""
    stack = [Middleware(EdgeMiddleware, settings=settings, request_metrics=request_metrics)]
    if "*" not in settings.allowed_hosts:
        stack.append(Middleware(ProbeFriendlyTrustedHost,
                                allowed_hosts=list(settings.allowed_hosts), www_redirect=False))
    if settings.cors_origins:
        stack.append(Middleware(
            Cors, allow_origins=list(settings.cors_origins),
            allow_credentials=settings.cors_credentials, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "traceparent",
                           "tracestate"],
            expose_headers=["X-Request-ID", "Retry-After", "traceparent"], max_age=600))
    if settings.enable_response_compression:
        # Level 5: JSON compresses nearly as well as at Starlette's default 9, for far less CPU.
        stack.append(Middleware(Compression, minimum_size=GZIP_MINIMUM_BYTES,
                                compresslevel=5))
    if settings.rate_limit_enabled:
        stack.append(Middleware(RateLimitMiddleware, settings=settings))
    stack.append(Middleware(GraphQLBodyGate, max_bytes=settings.max_body_bytes))
    return stack


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI application. `settings` defaults to the environment's."""
    settings = settings or Settings.load()
    quiet_library_loggers()
    quiet_outage_noise()
    # The materialized views serve only these fleet-wide gauges, where their staleness is
    # acceptable; never a user's figures (those are exact and live, docs/analytics.md).
    business_gauges = BusinessGauges(
        query("metrics_business_gauges"),
        query("metrics_view_gauges") if settings.enable_materialized_views else None)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        resources = await Resources.open(settings, api=True)
        app.state.resources = resources
        app.state.rate_limiter = RateLimiter(settings, resources.redis, resources.cache_redis) \
            if settings.rate_limit_enabled else None
        # Live dashboards: the process's hub of subscriptions and its Redis listener.
        app.state.live_hub = Hub(settings) if settings.live_enabled else None
        if app.state.live_hub is not None:
            if resources.accounts is not None:  # the API's announcements of account changes
                resources.accounts.follow(app.state.live_hub.observe)
            await app.state.live_hub.start()
        samplers = []
        if settings.prometheus_enabled:
            samplers.append(asyncio.create_task(sample_pool_forever(resources.pool)))
            if settings.prometheus_port:  # its scraper cannot trigger a refresh
                samplers.append(asyncio.create_task(business_gauges.run_forever(resources.pool)))
        log.info("gateway started (env=%s)", settings.app_env)
        try:
            yield
        finally:
            # uvicorn has stopped taking requests and finished those in flight (or given up
            # after TIMEOUT); only then are the pools closed.
            for task in samplers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if app.state.live_hub is not None:
                await app.state.live_hub.stop()
            await resources.close()
            close_sentry()
            log.info("gateway stopped")

    schema = build_schema(extensions=graphql_extensions(settings))
    # Hot queries from plans compiled once per document (schema/compiled.py).
    compiled = CompiledOperations(schema, Limits.from_settings(settings)) \
        if settings.compiled_execution else None
    graphql = GraphQLApp(schema, graphql_ide=None if settings.is_production else "graphiql",
                         production=settings.is_production, compiled=compiled)
    # A persisted query's hash becomes its text before the response cache reads the request.
    endpoint = PersistedQueries(ResponseCache(graphql, settings), settings)
    routes: list[Route] = [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        # Served by `Gateway` directly; the route stays for its 405 and for the metrics' paths.
        Route(GRAPHQL_PATH, endpoint, methods=["GET", "POST"]),
        Route("/export/tasks.csv", export_tasks, methods=["GET"]),
    ]
    if settings.prometheus_enabled:
        routes.append(Route("/metrics", metrics, methods=["GET"]))
    if not settings.is_production:  # GraphiQL's vendored files, like the IDE itself
        routes.append(Route(ASSET_ROUTE, graphiql_asset, methods=["GET"]))
        # The example dashboard; nginx serves it in production (gateway/http/dashboard.py).
        routes.append(Route(DASHBOARD_ROUTE, dashboard, methods=["GET"]))
    request_metrics = RequestMetrics(route.path for route in routes)
    stack = middleware_stack(settings, request_metrics)
    # Subscriptions: the same path over WebSocket (graphql-transport-ws, LIVE_ENABLED), past the
    # HTTP middleware (see `Gateway`), with the host check kept.
    sockets: ASGIApp = SocketRoute(GRAPHQL_PATH, graphql)
    if settings.rate_limit_enabled:
        sockets = RateLimitMiddleware(sockets, settings)
    if "*" not in settings.allowed_hosts:
        sockets = ProbeFriendlyTrustedHost(sockets, allowed_hosts=list(settings.allowed_hosts),
                                           www_redirect=False)
    app = Gateway(sockets, wrapped(endpoint, stack), routes=routes, lifespan=lifespan,
                  middleware=stack, exception_handlers={GatewayError: gateway_error})
    app.state.settings = settings
    app.state.business_gauges = business_gauges
    if settings.prometheus_enabled:
        BUILD_INFO.labels(settings.app_name, settings.app_version, settings.app_env).set(1)
    return app


def serve_app() -> Starlette:
    """The application as `python -m gateway serve` runs it, in each uvicorn worker: logging
    (`LOG_FORMAT`, `LOG_FILE`), Sentry and tracing (`OTEL_TRACES_EXPORTER`) set up for this
    process, then `create_app`."""
    settings = Settings.load()
    configure_logging(settings)
    init_sentry(settings)
    tracing.configure(settings)
    app = create_app(settings)
    tune_gc()  # after everything start-up allocates (gateway/ops/runtime.py)
    return app
