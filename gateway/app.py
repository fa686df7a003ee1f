"""The Starlette application: lifespan-owned resources, the middleware stack, `/health`, `/ready`,
`/metrics` and `/graphql`.

`create_app(settings)` builds the application and touches no process-wide state, so tests can
build several. `serve_app()` is what `python -m gateway serve` (and `dev`) hand to uvicorn: it
also sets up logging and Sentry, once per worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import ASTValidationRule
from graphql.validation import NoSchemaIntrospectionCustomRule
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.extensions import AddValidationRules, SchemaExtension
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types import ExecutionResult

from gateway.auth import bearer_token, decode_access_token
from gateway.cache import CacheExtension
from gateway.context import Context, account_of, verified_caller
from gateway.errors import GatewayError, Unauthenticated
from gateway.export import export_tasks
from gateway.graphql_errors import ErrorMasking, replacement_for, shape_errors
from gateway.input_checks import InputCheck, RequestRefused, error_body, load_json
from gateway.limits import Limits, limit_extensions
from gateway.logs import configure_logging, current_request, quiet_library_loggers
from gateway.metrics import (
    BusinessGauges,
    RequestMetrics,
    metrics_endpoint,
    sample_pool_forever,
)
from gateway.middleware import (
    QUIET_PATHS,
    EdgeMiddleware,
    GraphQLBodyGate,
    RateLimitMiddleware,
)
from gateway.ratelimit import RateLimiter
from gateway.resources import Resources
from gateway.response_cache import ResponseCache
from gateway.sentry import close_sentry, init_sentry
from gateway.settings import Settings
from schema.schema import build_schema

log = logging.getLogger(__name__)
READY_TIMEOUT = 2.0  # seconds each dependency gets to answer /ready
GZIP_MINIMUM_BYTES = 1000
# The HTTP status of a GraphQL response whose errors say the client should wait and retry.
RETRY_STATUSES = {"RATE_LIMITED": 429, "SERVICE_UNAVAILABLE": 503}
ERROR_STATUSES = {"UNAUTHENTICATED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404,
                  "BAD_USER_INPUT": 400, "QUERY_TOO_COMPLEX": 400, **RETRY_STATUSES}


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context (the caller from the bearer token, and resources),
    orjson encoding, a last pass of error shaping, and 429/503 with `Retry-After` when a
    resolver refused for a while (the login limit, an exhausted pool), 400 when the operation was
    refused for its input (BAD_USER_INPUT and no data). Strawberry's own refusals (no query, bad
    JSON, an unknown operation...) are JSON with a code too, not plain text."""

    def __init__(self, *args: Any, production: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.production = production

    async def get_context(self, request: Any, response: Any = None) -> Context:
        resources: Resources = request.app.state.resources
        context = Context(request=request, resources=resources, response=response)
        state = request.scope.get("state") or {}
        if "caller" in state:  # the rate-limit middleware or the response cache read the token
            context.caller = state["caller"]
            context.auth_error = state["auth_error"]
        else:
            try:
                token = bearer_token(request.headers.get("authorization"))
                if token is not None:
                    context.caller = decode_access_token(resources.settings, token)
                    info = current_request.get()
                    if info is not None:
                        info.user_id = str(context.caller.id)
            except Unauthenticated as exc:
                context.auth_error = exc
        if context.caller is not None:
            await self._verify_caller(context, request.scope)
        return context

    @staticmethod
    async def _verify_caller(context: Context, scope: Any) -> None:
        """The token's caller as the database knows it now: the current role, and no caller (but
        UNAUTHENTICATED) once the account is deleted. The row primes the user loader."""
        assert context.caller is not None
        try:
            account = await account_of(scope, context.resources, context.caller.id)
            context.caller = verified_caller(context.caller, account)
        except Unauthenticated as exc:
            context.caller, context.auth_error = None, exc
            return
        except Exception as exc:
            # Raised by the fields that need a caller, so it is shaped like any resolver error:
            # SERVICE_UNAVAILABLE for an outage, else masked as INTERNAL_SERVER_ERROR and logged.
            context.caller, context.auth_error = None, replacement_for(exc) or exc
            return
        context.loaders.user.prime(context.caller.id, account)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Strawberry's view, except that its refusals (`HTTPException`: no query, bad JSON, an
        unknown operation, a mutation over GET...) are JSON with a code, like every other."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as exc:
            response = self.refusal(exc)
        await response(scope, receive, send)

    @staticmethod
    def refusal(exc: HTTPException) -> Response:
        if isinstance(exc, RequestRefused):
            code = exc.code
        elif isinstance(exc.__cause__, CannotGetOperationTypeError):
            code = "GRAPHQL_VALIDATION_FAILED"  # no such operation, or several and no name
        elif exc.status_code == 404:
            code = "NOT_FOUND"
        elif exc.status_code >= 500:
            code = "INTERNAL_SERVER_ERROR"
        else:
            code = "BAD_USER_INPUT"
        return ORJSONResponse(error_body(exc.reason, code), status_code=exc.status_code)

    def decode_json(self, data: str | bytes) -> object:
        # Checked by `GraphQLBodyGate` for POST already; here for GET's query parameters.
        return load_json(data)

    def parse_query_params(self, params: Mapping[str, str | None]) -> dict[str, Any]:
        """GET: `variables` and `extensions` are JSON (checked like a POST body)."""
        data: dict[str, Any] = dict(params)
        for name in ("variables", "extensions"):
            if data.get(name):
                data[name] = load_json(data[name], f"The {name} parameter")
        return data

    def encode_json(self, data: object) -> bytes:  # type: ignore[override]
        try:
            return orjson.dumps(data)
        except TypeError:
            # A message quoting the client's unpaired surrogate, which orjson refuses to encode
            # (the stdlib writes it as an escape); anything else was a bug and stays one.
            return json.dumps(data, separators=(",", ":")).encode()

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        if result.errors:
            result.errors = shape_errors(result.errors, production=self.production)
        return await super().process_result(request, result)

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        response = super().create_response(response_data, sub_response)
        errors = response_data.get("errors") if isinstance(response_data, dict) else None
        data = response_data.get("data") if errors else None
        # Only when nothing was answered: a partial answer stays a 200 the client can use.
        if errors and response.status_code == 200 and not any((data or {}).values()):
            for error in errors:
                extensions = error.get("extensions") or {}
                status = RETRY_STATUSES.get(str(extensions.get("code")))
                if status is not None:
                    response.status_code = status
                    response.headers["retry-after"] = str(extensions.get("retryAfter", 1))
                    break
            else:
                if any((error.get("extensions") or {}).get("code") == "BAD_USER_INPUT"
                       for error in errors):
                    response.status_code = 400  # refused for its input: nothing was done
        return response


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


async def gateway_error(request: Request, exc: Exception) -> Response:
    """A `GatewayError` raised by a plain route (not GraphQL): its code, and a fitting status."""
    assert isinstance(exc, GatewayError)
    extensions = exc.extensions or {}
    code = str(extensions.get("code"))
    headers = {"retry-after": str(extensions.get("retryAfter", 1))} \
        if code in RETRY_STATUSES else None
    return ORJSONResponse({"errors": [{"message": exc.message, "extensions": extensions}]},
                          status_code=ERROR_STATUSES.get(code, 500), headers=headers)


def graphql_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """Error shaping, the query limits, the cache report (`extensions.cache`, see
    gateway/cache.py) and in production no introspection."""
    production = settings.is_production
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: ErrorMasking(production=production),
        InputCheck,
        *limit_extensions(Limits.from_settings(settings)),
        CacheExtension,
    ]
    if production:
        rules: list[type[ASTValidationRule]] = [NoSchemaIntrospectionCustomRule]
        extensions.append(lambda: AddValidationRules(rules))
    return extensions


class ProbeFriendlyTrustedHost(TrustedHostMiddleware):
    """`ALLOWED_HOSTS` for everything but the probes and `/metrics`: kubelet, Docker's health
    check and Prometheus call those by IP address, and refusing them would keep pods unready."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in QUIET_PATHS:
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def middleware_stack(settings: Settings, request_metrics: RequestMetrics) -> list[Middleware]:
    """Outermost first; see gateway/middleware.py for what each does and why in this order."""
    stack = [Middleware(EdgeMiddleware, settings=settings, request_metrics=request_metrics)]
    if "*" not in settings.allowed_hosts:
        stack.append(Middleware(ProbeFriendlyTrustedHost,
                                allowed_hosts=list(settings.allowed_hosts), www_redirect=False))
    if settings.cors_origins:
        stack.append(Middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins),
            allow_credentials=settings.cors_credentials, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"], max_age=600))
    if settings.enable_response_compression:
        # Level 5: JSON compresses nearly as well as at Starlette's default 9, for far less CPU.
        stack.append(Middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES,
                                compresslevel=5))
    if settings.rate_limit_enabled:
        stack.append(Middleware(RateLimitMiddleware, settings=settings))
    stack.append(Middleware(GraphQLBodyGate, max_bytes=settings.max_body_bytes))
    return stack


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI application. `settings` defaults to the environment's."""
    settings = settings or Settings.load()
    quiet_library_loggers()
    business_gauges = BusinessGauges()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        resources = await Resources.open(settings)
        app.state.resources = resources
        app.state.rate_limiter = RateLimiter(settings, resources.redis, resources.cache_redis) \
            if settings.rate_limit_enabled else None
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
            await resources.close()
            close_sentry()
            log.info("gateway stopped")

    schema = build_schema(extensions=graphql_extensions(settings))
    graphql = GraphQLApp(schema, graphql_ide=None if settings.is_production else "graphiql",
                         production=settings.is_production)
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/graphql", ResponseCache(graphql, settings), methods=["GET", "POST"]),
        Route("/export/tasks.csv", export_tasks, methods=["GET"]),
    ]
    if settings.prometheus_enabled:
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    request_metrics = RequestMetrics(route.path for route in routes)
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=middleware_stack(settings, request_metrics),
                    exception_handlers={GatewayError: gateway_error})
    app.state.settings = settings
    app.state.business_gauges = business_gauges
    return app


def serve_app() -> Starlette:
    """The application as `python -m gateway serve` runs it, in each uvicorn worker: logging
    (`LOG_FORMAT`, `LOG_FILE`) and Sentry set up for this process, then `create_app`."""
    settings = Settings.load()
    configure_logging(settings)
    init_sentry(settings)
    return create_app(settings)
