"""The per-request GraphQL context: who asks, the process's resources, and fresh loaders.

The caller is checked against the database once per request (`account_of`): a token names a
user id, but the role that authorizes and the account's existence are read from `users`, so a
demoted admin or a deleted account loses its rights at once, not when the token expires
(docs/api.md, "Tokens"). The row read is the one the analytics resolvers need anyway (with the
local today and the data version that keys the cache), so it costs no extra statement there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import strawberry
from starlette.requests import Request

from gateway.auth import Caller
from gateway.db import query
from gateway.errors import Unauthenticated
from gateway.resources import Resources

if TYPE_CHECKING:
    from loaders import Loaders

ACCOUNT = "account"              # request-state key: the caller's user row, or None
ACCOUNT_ERROR = "account_error"  # request-state key: why it could not be read
Account = dict[str, Any]
"""The caller's user row as `loaders.analytics.user_value` shapes it."""


async def account_of(scope: Any, resources: Resources, user_id: uuid.UUID) -> Account | None:
    """The user row of `user_id` (None when the account no longer exists), read from the primary
    once per request and kept in the request's state for whoever asks next (the response cache,
    then the GraphQL context). A failure to read it is kept too, and raised again."""
    state: dict[str, Any] = scope.setdefault("state", {})
    if ACCOUNT_ERROR in state:
        raise state[ACCOUNT_ERROR]
    if ACCOUNT not in state:
        from loaders.analytics import user_value

        try:
            rows = await resources.pool.fetch(query("analytics_users"), [user_id])
        except Exception as exc:
            state[ACCOUNT_ERROR] = exc
            raise
        state[ACCOUNT] = user_value(rows[0]) if rows else None
    account: Account | None = state[ACCOUNT]
    return account


def verified_caller(caller: Caller, account: Account | None) -> Caller:
    """The caller with the role the database gives it; UNAUTHENTICATED for a deleted account."""
    if account is None:
        raise Unauthenticated("The account of this token no longer exists")
    if account["role"] == caller.role:
        return caller
    return Caller(caller.id, str(account["role"]))


@dataclass
class Context:
    request: Request | None
    resources: Resources
    caller: Caller | None = None
    # Why there is no caller: the token's problem, or why the database could not say who it is.
    auth_error: Exception | None = None
    # Strawberry's response stub: headers set here reach the HTTP response (see `no_store`).
    response: Any = None
    # Free-form per-request notes, e.g. which fields came from the cache (extensions.cache).
    notes: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def loaders(self) -> Loaders:
        """Loaders live for one request: built lazily, so a query that needs none builds none."""
        from loaders import Loaders

        return Loaders(self.resources, self)

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
