"""The `/graphql` route: Strawberry's ASGI view with the gateway's context, encoding, error shaping
and HTTP statuses; and on the same path the WebSocket of subscriptions (`LiveHandler`: the
graphql-transport-ws protocol only, docs/api.md "Subscriptions")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine, Mapping
from contextvars import ContextVar
from typing import Any, cast

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.http.websocket_origin import normalize_origin
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
)
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from gateway.data.resources import Resources
from gateway.errors import Unauthenticated
from gateway.http.bodies import RequestRefused, error_body, load_json, parsed_body
from gateway.http.graphiql import graphiql_page
from gateway.http.identity import account_of, identify, verified_caller
from gateway.http.responses import RETRY_STATUSES, ORJSONResponse
from gateway.live.hub import CLOSE_SLOW, CLOSE_TRY_LATER, CLOSE_UNAUTHORIZED, Connection, Hub
from gateway.ops.settings import Settings
from gateway.security.access import Caller, bearer_token, verify_access_token
from resolvers.context import Context
from resolvers.live import LiveContext
from schema.compiled import CompiledOperations, Fallback
from schema.extensions.errors import replacement_for, shape_errors

log = logging.getLogger(__name__)

# The body gate's `(body, parsed)` of the request being answered (see `decode_json`).
_PARSED: ContextVar[tuple[bytes, dict[str, Any]] | None] = ContextVar("graphql_body",
                                                                      default=None)
# Whether the request's compiled plan already ran and handed over (`_compiled_post`).
_PLAN_TRIED: ContextVar[bool] = ContextVar("graphql_plan_tried", default=False)


# --- the WebSocket of subscriptions --------------------------------------------------------------


class TextWebSocket(ASGIWebSocketAdapter):
    """Strawberry's adapter, sending text frames: our `encode_json` gives bytes (orjson), which
    it would send as binary frames, and graphql-transport-ws clients expect text."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        data = self.view.encode_json(message)
        try:
            await self.ws.send_text(data.decode() if isinstance(data, bytes) else data)
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class _SubscriptionsOnly:
    """The schema as a subscription socket may use it: queries and mutations go over HTTP, where
    the rate limits, the body checks and a per-request context apply."""

    def __init__(self, schema: Any) -> None:
        self._schema = schema

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["allowed_operation_types"] = (OperationType.SUBSCRIPTION,)
        return await self._schema.stream(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._schema, name)


class LiveHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler with the gateway's rules (docs/api.md,
    "Subscriptions"):

    - over `LIVE_MAX_CONNECTIONS` the socket is closed with 1013 (try again later);
    - `connection_init` must carry `{"Authorization": "Bearer <access token>"}` (key in any
      case): the token is verified and the caller's role read from the database, as for HTTP;
      otherwise 4401. When the token expires, 4401 too;
    - a send not done within `LIVE_SEND_TIMEOUT_S` (a client that stopped reading) closes the
      socket with 4008, "slow consumer";
    - errors are shaped as for HTTP (codes, no internals), and sent as `error` messages rather
      than closing the socket (a syntax error too);
    - only subscriptions: a query or mutation is answered BAD_USER_INPUT.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = cast(Any, _SubscriptionsOnly(self.schema))
        # Loop timers rather than sleeping tasks: an idle socket holds a timer handle, not a task
        # with its coroutine frames (and a cancelled one, its exception and traceback).
        self._init_timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None  # a close started by one of the timers

    @property
    def live(self) -> LiveContext:
        return cast(LiveContext, self.context)

    async def handle(self) -> None:
        connection = self.live.connection
        if connection is None:
            await self.websocket.close(CLOSE_TRY_LATER, "Too many connections; try again later")
            return
        session = asyncio.ensure_future(super().handle())
        # A stalled client: the socket ends without waiting for its answer to the close.
        connection.on_abandoned = session.cancel
        try:
            try:
                await session
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # not an abandoned socket: this task is cancelled (a shutdown)
            finally:
                connection.on_abandoned = None
                if not session.done():
                    session.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await session
        except HTTPException:  # a message that is not JSON (our `decode_json` says so)
            await connection.close(4400, "WebSocket message must be valid JSON")
        finally:
            for timer in (self._init_timer, self._expiry):
                if timer is not None:
                    timer.cancel()
            connection.release()

    def on_request_accepted(self) -> None:
        """Strawberry's wait for `connection_init` (closed with 4408 when it does not come), on a
        timer instead of a task."""
        delay = self.connection_init_wait_timeout.total_seconds()
        self._init_timer = asyncio.get_running_loop().call_later(delay, self._init_timed_out)

    def _init_timed_out(self) -> None:
        self._init_timer = None
        if not self.connection_init_received:
            self.connection_timed_out = True
            self._close_later(self.websocket.close(code=4408,
                                                   reason="Connection initialisation timeout"))

    def _close_later(self, closing: Coroutine[Any, Any, None]) -> None:
        """Run a close started by a timer (a reference kept to its task until it is done)."""
        self._closing = asyncio.ensure_future(_quietly(closing))

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self._init_timer is not None:
            self._init_timer.cancel()
            self._init_timer = None
        payload = message.get("payload") or {}
        if self.connection_init_received or not isinstance(payload, dict):
            await super().handle_connection_init(message)  # 4429 and 4400, as Strawberry does
            return
        connection = self.live.connection
        assert connection is not None
        try:
            caller, expires = await self._authenticate(payload)
        except Unauthenticated as exc:
            await connection.close(CLOSE_UNAUTHORIZED, f"Unauthorized: {exc.message}"[:120],
                                   "unauthorized")
            return
        except Exception as exc:  # the database could not confirm the account
            reason = "Service unavailable; try again later" if replacement_for(exc) \
                else "Internal server error"
            await connection.close(CLOSE_TRY_LATER if replacement_for(exc) else 1011, reason)
            return
        self.live.caller = connection.caller = caller
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, expires - time.time()), self._expired, connection)
        await super().handle_connection_init(message)

    async def _authenticate(self, payload: dict[str, Any]) -> tuple[Caller, float]:
        """The caller of the payload's bearer token, with the database's role, and when the
        token expires (unix seconds)."""
        header = next((value for key, value in payload.items()
                       if isinstance(key, str) and key.lower() == "authorization"), None)
        token = bearer_token(header) if isinstance(header, str) else None
        if token is None:
            raise Unauthenticated('connection_init must carry {"Authorization": '
                                  '"Bearer <access token>"}')
        resources = self.live.resources
        caller, expires = verify_access_token(resources.settings, token)
        account = await account_of({}, resources, caller.id, fresh=True)  # never kept
        return verified_caller(caller, account), expires

    def _expired(self, connection: Connection) -> None:
        self._expiry = None
        self._close_later(connection.close(CLOSE_UNAUTHORIZED,
                                           "Unauthorized: Access token expired", "expired"))

    async def send_message(self, message: Message) -> None:
        connection = self.live.connection
        if connection is None or connection.closed:
            return  # closed by the server: nothing more goes out
        try:
            async with asyncio.timeout(connection.hub.send_timeout):
                await super().send_message(message)
        except TimeoutError:
            await connection.close(CLOSE_SLOW, "slow consumer", "slow")

    async def _send_result_stream(self, operation: Operation[Context, None],
                                  result_source: Any) -> None:
        """Strawberry's loop over an operation's results, with errors shaped as for HTTP, and
        each result's data let go once sent: the stream's generators (Strawberry's, graphql-
        core's) hold the last result until the next push, and an idle subscription need not keep
        a copy of its last push."""
        production = bool(getattr(self.view, "production", False))
        first = True
        try:
            async for result in result_source:
                if isinstance(result, ExecutionResult) and result.errors:
                    result.errors = shape_errors(
                        [_subscriptions_only(e) for e in result.errors], production=production)
                if not await self._send_result(operation, result, first):
                    return
                first = False
        except GraphQLError as error:
            # A syntax error, which the parser cache raises where Strawberry's stream does not
            # catch it (the HTTP path does): refused like any other, with its code.
            await self._send_result(operation, PreExecutionError(
                data=None, errors=shape_errors([error], production=production)), first)

    async def _send_result(self, operation: Operation[Context, None], result: Any,
                           first: bool) -> bool:
        """Send one result as Strawberry would; False when the operation ends with it."""
        if first and isinstance(result, PreExecutionError):
            await self._handle_pre_execution_error(operation, result)
            return False
        if not isinstance(result, ExecutionResult):
            await self._reject_incremental_delivery(operation)
            return False
        await operation.send_next(result)
        if isinstance(result.data, dict):
            result.data.clear()  # the dict graphql-core's own result shares
        return True

    @staticmethod
    def _get_pre_execution_close_reason(error: GraphQLError) -> str | None:
        return None  # an `error` message with the code, as for any other refusal


async def _quietly(closing: Coroutine[Any, Any, None]) -> None:
    try:
        await closing
    except Exception as exc:  # the socket is gone already: nothing more to tell it
        log.debug("live: close not sent: %s", type(exc).__name__)


def _subscriptions_only(error: GraphQLError) -> GraphQLError:
    if isinstance(error.original_error, InvalidOperationTypeError):
        return GraphQLError("Only subscriptions go over the WebSocket; send queries and "
                            "mutations with POST /graphql", extensions={"code": "BAD_USER_INPUT"})
    return error



# --- the view ------------------------------------------------------------------------------------

class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context (the caller from the bearer token, and resources),
    orjson encoding, a last pass of error shaping, and 429/503 with `Retry-After` when a
    resolver refused for a while (the login limit, an exhausted pool), 400 when the operation was
    refused for its input (BAD_USER_INPUT and no data). Strawberry's own refusals (no query, bad
    JSON, an unknown operation...) are JSON with a code too, not plain text."""

    def __init__(self, *args: Any, production: bool = False,
                 compiled: CompiledOperations | None = None, **kwargs: Any) -> None:
        # WebSocket: graphql-transport-ws only (the legacy graphql-ws protocol is refused, 4406);
        # the caps per connection and per user are the hub's, with a code of their own.
        kwargs.setdefault("subscription_protocols", (GRAPHQL_TRANSPORT_WS_PROTOCOL,))
        kwargs.setdefault("max_subscriptions_per_connection", None)
        super().__init__(*args, **kwargs)
        self.production = production
        self.compiled = compiled  # None: COMPILED_EXECUTION=false

    graphql_transport_ws_handler_class = LiveHandler
    websocket_adapter_class = TextWebSocket

    async def get_context(self, request: Any, response: Any = None) -> Context:
        if isinstance(request, WebSocket):
            return self._live_context(request)
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
        context.account = account
        context.loaders.user.prime(context.caller.id, account)

    @staticmethod
    def _live_context(websocket: WebSocket) -> LiveContext:
        """A subscription socket's context: a place in the hub (None when the process holds
        `LIVE_MAX_CONNECTIONS`, or for a socket refused for its subprotocol), no caller until
        `connection_init` names one."""
        hub: Hub = websocket.app.state.live_hub
        connection = None
        if GRAPHQL_TRANSPORT_WS_PROTOCOL in websocket.scope.get("subprotocols", ()):
            connection = hub.open(lambda code, reason: websocket.close(code, reason))
        return LiveContext(request=websocket, resources=websocket.app.state.resources,
                           connection=connection, hub=hub)

    def is_websocket_origin_allowed(self, request: WebSocket, origin: str) -> bool:
        """A page of another origin may subscribe when `CORS_ORIGINS` lets it call the API."""
        settings: Settings = request.app.state.settings
        allowed = {normalize_origin(item) for item in settings.cors_origins}
        return "*" in settings.cors_origins or normalize_origin(origin) in allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Strawberry's view, except that its refusals (`HTTPException`: no query, bad JSON, an
        unknown operation, a mutation over GET...) are JSON with a code, like every other."""
        if scope["type"] == "websocket":
            if getattr(scope["app"].state, "live_hub", None) is None:  # LIVE_ENABLED=false
                await WebSocket(scope, receive, send).close()  # before accepting: HTTP 403
                return
            await super().__call__(scope, receive, send)
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        parsed = parsed_body(scope)
        handed_over = False
        if self.compiled is not None and parsed is not None:
            fast = await self._compiled_post(scope, receive, parsed[1])
            if isinstance(fast, Response):
                await fast(scope, receive, send)
                return
            handed_over = fast
        kept = _PARSED.set(parsed)
        # A plan that handed over is not run again by `execute_single`: Strawberry answers.
        skipped = _PLAN_TRIED.set(handed_over)
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as exc:
            response = self.refusal(exc)
        finally:
            _PARSED.reset(kept)
            _PLAN_TRIED.reset(skipped)
        await response(scope, receive, send)

    async def _compiled_post(self, scope: Scope, receive: Receive, data: Any
                             ) -> Response | bool:
        """The short way for a POSTed query with a compiled plan: the context, the plan, the
        response, as `run` would make them (the same `get_context`, `process_result` and
        `create_response`), without Strawberry's request adapter and body parsing (the body gate
        parsed it). Otherwise Strawberry answers from the start: False for a request without a
        plan or one `run` would refuse or treat differently (a batch, a streaming `Accept`), True
        for a plan that handed over (an error to report: not to be tried again)."""
        compiled = self.compiled
        if compiled is None or not isinstance(data, dict):
            return False
        query, name = data.get("query"), data.get("operationName")
        variables, extensions = data.get("variables"), data.get("extensions")
        if not isinstance(query, str) or not isinstance(name, (str, type(None))) \
                or not isinstance(variables, (dict, type(None))) \
                or not isinstance(extensions, (dict, type(None))):
            return False
        prepared = compiled.prepared(query, name)
        if prepared is None:
            return False
        request = Request(scope=scope, receive=receive)
        accept = request.headers.get("accept", "")
        if "multipart/mixed" in accept or "text/event-stream" in accept:
            return False
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, response=sub_response)
        try:
            result = await compiled.execute(prepared, variables, context, query)
        except Fallback:
            return True
        return self.create_response(await self.process_result(request, result), sub_response)

    async def execute_single(self, request: Any, request_adapter: Any, sub_response: Any,
                             context: Context, root_value: Any, request_data: Any
                             ) -> ExecutionResult:
        """A query whose document has a compiled plan runs it (schema/compiled.py); anything
        else, and any request the plan hands back (an error to report), runs through Strawberry,
        which also teaches the plan cache the documents it answered without errors."""
        compiled, query, name = self.compiled, request_data.query, request_data.operation_name
        plans = compiled if isinstance(query, str) and isinstance(name, (str, type(None))) \
            and not _PLAN_TRIED.get() else None
        known = None
        if plans is not None and (request_adapter.method != "GET" or self.allow_queries_via_get):
            known = plans.prepared(query, name)
            if known is not None:
                try:
                    return await plans.execute(known, request_data.variables, context, query)
                except Fallback as handover:
                    log.debug("compiled plan handed over (%s)", handover.reason,
                              exc_info=handover.__cause__ is not None)
                    context = context.fresh()
        result = await super().execute_single(request, request_adapter, sub_response, context,
                                              root_value, request_data)
        if plans is not None and known is None:
            plans.learn(query, name, request_data.variables, result)
        return result

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

