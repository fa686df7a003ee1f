"""The span of a GraphQL operation (only in an application built with tracing on).

One span per operation, `query Dashboard` / `mutation UpdateTask` (the type alone for an
anonymous operation, `graphql` when the document did not parse), current while the operation
runs, so the loader batches, SQL statements and Redis commands of its resolvers are its children.
Strawberry's own `OpenTelemetryExtension` is not used: it records the document (which may hold
literal passwords) and makes a span per resolver.

Attributes: `graphql.operation.type`, `graphql.operation.name` (only a name that the document
defines, so never an arbitrary client string), and `graphql.error.codes` (our
`extensions.code`s, never messages, which may quote input). Variables are never recorded. The
span fails only for server-side codes (`INTERNAL_SERVER_ERROR`, `SERVICE_UNAVAILABLE`): a client's
mistake is not the server's error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from strawberry.extensions import SchemaExtension

from gateway.ops import tracing

SERVER_CODES = frozenset({"INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE"})


def executed_operation(context: Any) -> OperationDefinitionNode | None:
    """The operation of the document that runs: the one named, else the only one."""
    document = context.graphql_document
    if document is None:
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    wanted = context.operation_name
    if wanted:
        return next((op for op in operations if op.name is not None
                     and op.name.value == wanted), None)
    return operations[0] if len(operations) == 1 else None


class OperationSpan(SchemaExtension):
    """Registered first by `schema.schema.graphql_extensions`, so its span encloses the other
    extensions' work (limits, input check) and ends after the errors are shaped."""

    def on_operation(self) -> Iterator[None]:
        if not tracing.recording():  # a request that is not sampled: nothing to add
            yield
            return
        span = tracing.start_child("graphql")
        try:
            with tracing.current(span):
                yield
        finally:
            self._finish(span)

    def _finish(self, span: trace.Span) -> None:
        context = self.execution_context
        result = context.result
        finish_operation_span(span, executed_operation(context),
                              list(getattr(result, "errors", None) or []))


def finish_operation_span(span: trace.Span, operation: OperationDefinitionNode | None,
                          errors: list[GraphQLError]) -> None:
    """Name the operation's span after the operation, note its error codes and end it (shared
    with the compiled plans of schema/compiled.py, so a trace looks the same either way)."""
    if operation is not None:
        kind = operation.operation.value
        span.set_attribute("graphql.operation.type", kind)
        if operation.name is not None:
            span.set_attribute("graphql.operation.name", operation.name.value)
            span.update_name(f"{kind} {operation.name.value}")
        else:
            span.update_name(kind)
    codes = sorted({str((e.extensions or {}).get("code", "UNKNOWN")) for e in errors})
    if codes:
        span.set_attribute("graphql.error.codes", codes)
        server = SERVER_CODES.intersection(codes)
        if server:
            span.set_status(Status(StatusCode.ERROR, ",".join(sorted(server))))
    span.end()
