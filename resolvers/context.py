"""The per-request GraphQL context: who asks, the process's resources, and fresh loaders.

The HTTP edge builds it (gateway/http/graphql_view.py) with the caller it has already verified
against the database (gateway/http/identity.py); resolvers read it through `Info`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import strawberry

from gateway.data.resources import Resources
from gateway.errors import Unauthenticated
from gateway.security.access import Caller

if TYPE_CHECKING:
    from loaders import Loaders

@dataclass
class Context:
    request: Any  # the edge's Starlette request (None outside HTTP); resolvers need not read it
    resources: Resources
    caller: Caller | None = None
    client_ip: str | None = None  # as the edge worked it out (`TRUSTED_PROXIES` applied)
    # Why there is no caller: the token's problem, or why the database could not say who it is.
    auth_error: Exception | None = None
    # Strawberry's response stub: headers set here reach the HTTP response (see `no_store`).
    response: Any = None
    # Free-form per-request notes, e.g. which fields came from the cache (extensions.cache).
    notes: dict[str, Any] = field(default_factory=dict)
    # The caller's account row as the edge read it (primes the user loader).
    account: Any = None
    # Live pushes: where the figure statements record the data version they saw
    # (loaders/analytics.py's Snapshots; resolvers/live.py).
    snapshots: Any = None
    # Whether the loaders keep the figures they read in the process's cache (not for live
    # pushes: loaders/__init__.py).
    keep_figures: bool = True

    @cached_property
    def loaders(self) -> Loaders:
        """Loaders live for one request: built lazily, so a query that needs none builds none."""
        from loaders import Loaders

        return Loaders(self.resources, self.notes, self.snapshots, keep=self.keep_figures)

    def fresh(self) -> Context:
        """The same caller and request with new loaders and notes: for running the operation
        again from the start (a compiled plan that hands over to graphql-core)."""
        context = Context(request=self.request, resources=self.resources, caller=self.caller,
                          client_ip=self.client_ip, auth_error=self.auth_error,
                          response=self.response, account=self.account,
                          keep_figures=self.keep_figures)
        if self.caller is not None and self.account is not None:
            context.loaders.user.prime(self.caller.id, self.account)
        return context

    def require_caller(self) -> Caller:
        """The signed-in caller, or UNAUTHENTICATED (with the token's own problem, if any), or
        SERVICE_UNAVAILABLE when the database could not confirm the account."""
        if self.caller is None:
            raise self.auth_error or Unauthenticated()
        return self.caller

    def no_store(self) -> None:
        """Mark the response as one no cache may keep (it carries tokens)."""
        if self.response is not None:
            self.response.headers["cache-control"] = "no-store"


Info = strawberry.Info[Context, None]
