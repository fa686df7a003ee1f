"""The `/graphql` route: Strawberry's ASGI view with the gateway's context, encoding, error shaping
and HTTP statuses."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types import ExecutionResult

from gateway.data.resources import Resources
from gateway.errors import Unauthenticated
from gateway.http.bodies import RequestRefused, error_body, load_json, parsed_body
from gateway.http.graphiql import graphiql_page
from gateway.http.identity import account_of, identify, verified_caller
from gateway.http.responses import RETRY_STATUSES, ORJSONResponse
from resolvers.context import Context
from schema.extensions.errors import replacement_for, shape_errors

# The body gate's `(body, parsed)` of the request being answered (see `decode_json`).
_PARSED: ContextVar[tuple[bytes, dict[str, Any]] | None] = ContextVar("graphql_body",
                                                                      default=None)


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
        # Decoded once per request, by whichever layer of the edge asked first.
        state = identify(request.scope, resources.settings)
        context.caller, context.auth_error = state["caller"], state["auth_error"]
        context.client_ip = state["client_ip"]
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
        kept = _PARSED.set(parsed_body(scope))
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as exc:
            response = self.refusal(exc)
        finally:
            _PARSED.reset(kept)
        await response(scope, receive, send)

    async def render_graphql_ide(self, request: Request) -> Response:
        """Our GraphiQL page: vendored assets, a CSP, the dashboard query and, in development,
        the demo user's token (gateway/http/graphiql.py). Only when `graphql_ide` is set."""
        return await graphiql_page(request)

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
        # A POST body was parsed (and checked) by `GraphQLBodyGate` already: not parsed again.
        kept = _PARSED.get()
        if kept is not None and kept[0] == data:
            return kept[1]
        return load_json(data)

    def parse_query_params(self, params: Mapping[str, str | None]) -> dict[str, Any]:
        """GET: `variables` and `extensions` are JSON (checked like a POST body)."""
        data: dict[str, Any] = dict(params)
        for name in ("variables", "extensions"):
            if data.get(name):
                data[name] = load_json(data[name], f"The {name} parameter")
        return data

    def encode_json(self, data: object) -> bytes:
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
