"""The `Subscription` root: a user's figures pushed over WebSocket (docs/api.md, "Subscriptions").

Each event has exactly the shape of the matching query (`overview`, `trends`, `productivity`, or
all three as one `Dashboard`), built from the same figures by the same types of
schema/analytics.py. resolvers/live.py authorizes, files the subscription in the process's hub
and yields one frame per push; the fields here compute the figures from that frame (each once per
push, whichever subscriptions of the process ask for the same ones).
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

import strawberry
from graphql import ExecutionResult
from graphql.pyutils import RefMap
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.graphql import OperationType

from gateway.errors import BadUserInput
from resolvers import live
from resolvers.context import Info
from schema.analytics import FromArg, Overview, Period, Productivity, Trends
from schema.compiled import compiled_event


@strawberry.type(description="The three figures a dashboard shows, as one event.")
class Dashboard:
    frame: strawberry.Private[live.Frame]

    @strawberry.field
    async def overview(self) -> Overview:
        return Overview.from_value(await live.overview(self.frame))

    @strawberry.field
    async def trends(self, period: Period = Period.DAY, from_: FromArg = None,
                     to: datetime.date | None = None) -> Trends:
        return Trends.from_value(await live.trends(self.frame, period.value, from_, to))

    @strawberry.field
    async def productivity(self, from_: FromArg = None,
                           to: datetime.date | None = None) -> Productivity:
        return Productivity.from_value(await live.productivity(self.frame, from_, to))


async def _dashboard(frame: live.Frame) -> Dashboard:
    return Dashboard(frame=frame)


@strawberry.type(name="Subscription", description=(
    "A user's figures (default the caller), pushed at once on subscribe, then whenever they "
    "change and at the user's local midnight. Each event has exactly the shape of the matching "
    "query."))
class LiveSubscription:
    @strawberry.subscription
    async def dashboard(self, info: Info, user_id: strawberry.ID | None = None
                        ) -> AsyncIterator[Dashboard]:
        return await live.follow(info, "dashboard", user_id, _dashboard)

    @strawberry.subscription
    async def overview(self, info: Info, user_id: strawberry.ID | None = None
                       ) -> AsyncIterator[Overview]:
        async def event(frame: live.Frame) -> Overview:
            return Overview.from_value(await live.overview(frame))

        return await live.follow(info, "overview", user_id, event)

    @strawberry.subscription
    async def trends(self, info: Info, user_id: strawberry.ID | None = None,
                     period: Period = Period.DAY, from_: FromArg = None,
                     to: datetime.date | None = None) -> AsyncIterator[Trends]:
        async def event(frame: live.Frame) -> Trends:
            return Trends.from_value(await live.trends(frame, period.value, from_, to))

        return await live.follow(info, "trends", user_id, event)

    @strawberry.subscription
    async def productivity(self, info: Info, user_id: strawberry.ID | None = None,
                           from_: FromArg = None,
                           to: datetime.date | None = None) -> AsyncIterator[Productivity]:
        async def event(frame: live.Frame) -> Productivity:
            return Productivity.from_value(await live.productivity(frame, from_, to))

        return await live.follow(info, "productivity", user_id, event)


class SubscriptionsOverWebSocket(SchemaExtension):
    """A subscription sent over HTTP is refused with BAD_USER_INPUT before it runs: it is served
    only on the WebSocket, where a connection has its place in the hub."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.operation_type is OperationType.SUBSCRIPTION \
                and not isinstance(context.context, live.LiveContext):
            raise BadUserInput("Subscriptions are served over WebSocket (the "
                               "graphql-transport-ws protocol) on /graphql; see docs/api.md, "
                               "Subscriptions")
        yield


class LiveExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, except that each event of a subscription is executed with memos of
    its own (the sub-fields collected per type, the execution plans), dropped with it. graphql-core
    shares them between a subscription's events, so an idle subscription would keep those of its
    last push (about 5 KiB for a dashboard) for its whole life; collecting them again for each
    push costs microseconds. Queries and mutations are executed as before, except that a
    finished operation's context lets go of its helpers (`build_response`)."""

    def build_per_event_executor(self, payload: Any) -> Any:
        """The event completed by the document's compiled plan when it has one (schema/compiled.py;
        graphql-core's executor then only when the plan hands over), else by graphql-core."""
        compiled = compiled_event(self, payload, lambda: self._graphql_core_event(payload))
        return compiled if compiled is not None else self._graphql_core_event(payload)

    def build_response(self, data: Any) -> Any:
        """graphql-core's response; then, for a complete one, the context drops its resolver
        helpers (`async_helpers`: two bound methods of the context itself). They made every
        operation graphql-core executed a reference cycle holding the request's context,
        loaders and figures until one of the collector's full passes, which the API spaces out
        (gateway/ops/runtime.py; tests/test_reference_cycles.py). Nothing runs in this context
        after a complete response; an incremental one (`@defer`, `@stream`) keeps them."""
        response = super().build_response(data)
        if isinstance(response, ExecutionResult):
            self.__dict__.pop("async_helpers", None)
        return response

    def _graphql_core_event(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        for name, memo in (("_relevant_sub_fields", {}), ("_initial_execution_plans", RefMap()),
                           ("_deferred_execution_plans", RefMap())):
            if hasattr(executor, name):  # graphql-core 3.3's names; otherwise left shared
                setattr(executor, name, memo)
        return executor
