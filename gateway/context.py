"""The per-request GraphQL context: who asks, the process's resources, and fresh loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import strawberry
from starlette.requests import Request

from gateway.auth import Caller
from gateway.errors import Unauthenticated
from gateway.resources import Resources

if TYPE_CHECKING:
    from loaders import Loaders


@dataclass
class Context:
    request: Request | None
    resources: Resources
    caller: Caller | None = None
    auth_error: Unauthenticated | None = None
    # Free-form per-request notes, e.g. which fields came from the cache (extensions.cache).
    notes: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def loaders(self) -> Loaders:
        """Loaders live for one request: built lazily, so a query that needs none builds none."""
        from loaders import Loaders

        return Loaders(self.resources, self)

    def require_caller(self) -> Caller:
        """The signed-in caller, or UNAUTHENTICATED (with the token's own problem, if any)."""
        if self.caller is None:
            raise self.auth_error or Unauthenticated()
        return self.caller


Info = strawberry.Info[Context, None]
