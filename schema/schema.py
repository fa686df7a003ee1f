"""The GraphQL schema: root types composed from one class per domain.

To add a domain, write its `<Domain>Query` / `<Domain>Mutation` in its own module and add it to the
tuples below; the `Subscription` root (live figures over WebSocket) is schema/live.py's.
`schema.graphql` at the repository root is this schema's SDL; `make schema` rewrites it and a
test fails when it drifts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import strawberry
from graphql import ASTValidationRule
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from gateway.ops import tracing
from gateway.ops.settings import Settings
from schema.analytics import AnalyticsQuery
from schema.auth import AuthMutation
from schema.extensions.cache_report import CacheExtension
from schema.extensions.errors import ErrorMasking
from schema.extensions.input_check import InputCheck
from schema.extensions.limits import Limits, limit_extensions
from schema.extensions.tracing import OperationSpan
from schema.live import LiveExecutionContext, LiveSubscription, SubscriptionsOverWebSocket
from schema.scalars import SCALAR_MAP
from schema.system import SystemQuery
from schema.tasks import TaskMutation, TaskQuery
from schema.users import UsersQuery

QUERY_TYPES: tuple[type, ...] = (SystemQuery, TaskQuery, AnalyticsQuery, UsersQuery)
MUTATION_TYPES: tuple[type, ...] = (AuthMutation, TaskMutation)

Query = merge_types("Query", QUERY_TYPES)
Mutation = merge_types("Mutation", MUTATION_TYPES) if MUTATION_TYPES else None
Subscription = LiveSubscription  # one domain so far (schema/live.py), with its description


def graphql_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """Error shaping, the query limits, the cache report (`extensions.cache`, see
    schema/extensions/cache_report.py), in production no introspection, and with tracing on
    (`OTEL_TRACES_EXPORTER`) the operation's span, first so that it encloses the others."""
    production = settings.is_production
    extensions: list[Callable[[], SchemaExtension]] = [
        *([OperationSpan] if tracing.wanted(settings) else []),
        lambda: ErrorMasking(production=production),
        InputCheck,
        *limit_extensions(Limits.from_settings(settings)),
        CacheExtension,
        SubscriptionsOverWebSocket,
    ]
    if production:
        rules: list[type[ASTValidationRule]] = [NoSchemaIntrospectionCustomRule]
        extensions.append(lambda: AddValidationRules(rules))
    return extensions


def build_schema(extensions: Sequence[type[SchemaExtension] | Callable[[], SchemaExtension]] = (),
                 **kwargs: Any) -> strawberry.Schema:
    """The schema with the parse and validation caches (a repeated query is parsed once)."""
    # Our `Date` scalar: a malformed date is BAD_USER_INPUT (schema/scalars.py).
    kwargs.setdefault("config", StrawberryConfig(scalar_map=SCALAR_MAP))
    # Each subscription event with memos of its own, not kept by an idle subscription.
    kwargs.setdefault("execution_context_class", LiveExecutionContext)
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            *extensions,
            lambda: ParserCache(maxsize=512),
            lambda: ValidationCache(maxsize=512),
        ],
        **kwargs,
    )


schema = build_schema()
