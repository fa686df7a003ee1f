"""What a GraphQL client may learn from an error, and what the log keeps.

Expected errors (our `GatewayError`s, and parse, validation and variable errors, which speak of
the query) reach the client with their `extensions.code`. Anything else is replaced by a generic
INTERNAL_SERVER_ERROR carrying `extensions.requestId`; the log gets the stack trace under the same
id (and Sentry gets the exception when `SENTRY_DSN` is set), so no SQL, stack trace, DSN or secret
ever reaches a client. In production, "Did you mean ...?" suggestions are cut from messages too,
since they would spell out the schema that disabled introspection hides.

`ErrorMasking` is the schema extension doing this at the end of each operation; `shape_errors`
is idempotent, and the HTTP view runs it once more over the final result, for errors raised
outside the operation (an extension hook that failed, a parser limit).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError, GraphQLSyntaxError, OperationDefinitionNode
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import ExecutionResult

from gateway.data.db import OUTAGE, RETRY_AFTER_OUTAGE, is_database_outage
from gateway.errors import GatewayError, QueryTooComplex, ServiceUnavailable
from gateway.ops import metrics, sentry
from gateway.ops.logs import current_request
from schema.extensions.limits import is_token_limit_error

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "Internal server error"
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


def database_unavailable() -> ServiceUnavailable:
    """What a client sees while PostgreSQL cannot be reached: 503, retry later. A mutation that
    gets it may or may not have been applied only if the connection broke during its commit;
    clients retry it like any other (docs/operations.md)."""
    return ServiceUnavailable("The database is unavailable; retry shortly",
                              retryAfter=RETRY_AFTER_OUTAGE, retryable=True)


def replacement_for(original: BaseException) -> GatewayError | None:
    """Unexpected exceptions that still have a meaning a client can act on: a database outage,
    a wait that gave up, a cancelled statement, a document nesting too deeply."""
    if is_database_outage(original):
        OUTAGE.failed(original)  # logged once per outage, not once per request
        return database_unavailable()
    if isinstance(original, RecursionError):
        return QueryTooComplex("Query nests too deeply")
    if isinstance(original, TimeoutError):
        # no database connection within DATABASE_POOL_TIMEOUT (gateway/data/db.py), or another wait
        # that gave up: the service is overloaded, not broken
        return ServiceUnavailable("The service is busy; try again shortly", retryAfter=2)
    if isinstance(original, asyncpg.QueryCanceledError):
        # statement_timeout (QUERY_TIMEOUT): the database gave up on this query
        return ServiceUnavailable("The database took too long to answer; ask for less or retry",
                                  retryAfter=5)
    return None


def shape_errors(errors: list[GraphQLError], *, production: bool,
                 operation: str | None = None) -> list[GraphQLError]:
    """The errors as the client may see them (see the module docstring)."""
    shaped = [_shape(error, production, operation) for error in errors]
    limits = [e for e in shaped if (e.extensions or {}).get("code") == QueryTooComplex.code
              and e.path is None]
    # A query refused for its size also fails validation in many other ways; those only add noise.
    return limits if limits else shaped


def _shape(error: GraphQLError, production: bool, operation: str | None) -> GraphQLError:
    original = error.original_error
    code = (error.extensions or {}).get("code")
    if isinstance(original, GatewayError) or (original is None and code is not None):
        pass  # ours, or already shaped
    elif original is None or (error.path is None and error.nodes
                              and isinstance(original, (ValueError, TypeError, GraphQLError))):
        # about the document: a syntax error, a failed validation, a variable of the wrong type
        if isinstance(error, GraphQLSyntaxError) and is_token_limit_error(error):
            code = QueryTooComplex.code
            # graphql-core words it "Syntax Error: Document contains more than N tokens...";
            # the document is not wrong, only too long: say that.
            error.message = f"Query too large: {error.description}"
        elif isinstance(error, GraphQLSyntaxError):
            code = "GRAPHQL_PARSE_FAILED"
        elif original is not None:
            code = "BAD_USER_INPUT"
        else:
            code = "GRAPHQL_VALIDATION_FAILED"
        error.extensions = {**(error.extensions or {}), "code": code}
    else:
        replacement = replacement_for(original)
        if replacement is not None and is_database_outage(original):
            return GraphQLError(replacement.message, error.nodes, path=error.path,
                                extensions=replacement.extensions)
        if replacement is not None:
            log.warning("%s in %s at %s: %s", type(original).__name__, operation or "operation",
                        _path(error), replacement.message)
            return GraphQLError(replacement.message, error.nodes, path=error.path,
                                extensions=replacement.extensions)
        return _mask(error, original, operation)
    if production and "Did you mean" in error.message:
        error.message = _SUGGESTION.sub("", error.message)
    return error


def _mask(error: GraphQLError, original: BaseException, operation: str | None) -> GraphQLError:
    info = current_request.get()
    request_id = info.request_id if info else None
    log.error("unexpected error in %s at %s", operation or "operation", _path(error),
              exc_info=(type(original), original, original.__traceback__),
              extra={"error_type": type(original).__name__, "request_id": request_id})
    sentry.capture(original, request_id)
    extensions: dict[str, Any] = {"code": "INTERNAL_SERVER_ERROR"}
    if request_id:
        extensions["requestId"] = request_id
    return GraphQLError(INTERNAL_MESSAGE, error.nodes, path=error.path, extensions=extensions)


def _path(error: GraphQLError) -> str:
    return ".".join(str(p) for p in error.path) if error.path else "(document)"


def operation_name(context: Any) -> str | None:
    """The operation's name: the one asked for, else the document's only operation's."""
    if context.operation_name:
        return str(context.operation_name)
    document = context.graphql_document
    if document is not None:
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(operations) == 1 and operations[0].name is not None:
            return operations[0].name.value
    return None


class ErrorMasking(SchemaExtension):
    """Shapes the errors of each operation, times and counts it (per operation name, for
    /metrics) and names it in the request's log context."""

    def __init__(self, *, production: bool) -> None:
        self.production = production

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        name = operation_name(context)
        result = context.result
        ok = True
        if isinstance(result, (GraphQLExecutionResult, ExecutionResult)) and result.errors:
            result.errors = shape_errors(result.errors, production=self.production,
                                         operation=name)
            ok = False
        try:
            kind = context.operation_type.value
        except Exception:  # no document (it did not parse), or no such operation
            kind = "unknown"
        operation_done(name, kind, ok, started)


def operation_done(name: str | None, kind: str, ok: bool, started: float) -> None:
    """What every operation leaves behind, whichever executor ran it (this extension, or the
    compiled plans of schema/compiled.py): its name in the request's log context, and its count
    and duration in /metrics."""
    info = current_request.get()
    if info is not None and name is not None:
        info.operation = name
    metrics.observe_operation(name, kind, ok, time.perf_counter() - started)
