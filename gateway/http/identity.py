"""Who is asking, worked out once per request and kept in the request's state.

`identify` decodes the bearer token (and finds the client IP) the first time any layer of the
edge asks: the rate limiter, the response cache, the GraphQL view or the CSV export. The token
only names a user: `account_of` reads that account's row from the primary, once per request, and
`verified_caller` takes the role from it, so a demoted admin or a deleted account loses its rights
at once, not when the token expires (docs/api.md, "Tokens"). The row is the one the analytics
resolvers need anyway (with the local today and the data version that keys the cache), so the
GraphQL view primes the user loader with it.
"""

from __future__ import annotations

import uuid
from typing import Any

from domain.figures import UserRow
from gateway.data.db import query
from gateway.data.resources import Resources
from gateway.errors import Unauthenticated
from gateway.ops.logs import current_request
from gateway.ops.settings import Settings
from gateway.security.access import Caller, bearer_token, decode_access_token
from gateway.security.ratelimit import TrustedProxies, client_ip

ACCOUNT = "account"              # request-state key: the caller's user row, or None
ACCOUNT_ERROR = "account_error"  # request-state key: why it could not be read
Account = UserRow
"""The caller's user row, as the analytics' user loader holds it (domain/figures.py)."""


async def account_of(scope: Any, resources: Resources, user_id: uuid.UUID) -> Account | None:
    """The user row of `user_id` (None when the account no longer exists), read from the primary
    once per request and kept in the request's state for whoever asks next (the response cache,
    then the GraphQL context). A failure to read it is kept too, and raised again."""
    state: dict[str, Any] = scope.setdefault("state", {})
    if ACCOUNT_ERROR in state:
        raise state[ACCOUNT_ERROR]
    if ACCOUNT not in state:
        try:
            rows = await resources.pool.fetch(query("analytics_users"), [user_id])
        except Exception as exc:
            state[ACCOUNT_ERROR] = exc
            raise
        state[ACCOUNT] = UserRow.from_record(rows[0]) if rows else None
    account: Account | None = state[ACCOUNT]
    return account


def verified_caller(caller: Caller, account: Account | None) -> Caller:
    """The caller with the role the database gives it; UNAUTHENTICATED for a deleted account."""
    if account is None:
        raise Unauthenticated("The account of this token no longer exists")
    if account.role == caller.role:
        return caller
    return Caller(caller.id, account.role)




def header(scope: Any, name: bytes) -> str | None:
    """A request header's value (latin-1, as HTTP sends it), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def identify(scope: Any, settings: Settings, trusted: TrustedProxies | None = None
             ) -> dict[str, Any]:
    """The caller (from the bearer token, not yet checked against the database) and the client
    IP of a request, worked out once and kept in the request's state: `state["caller"]` (a
    `Caller` or None), `state["auth_error"]` (the token's problem, or None), `state["client_ip"]`.
    """
    state: dict[str, Any] = scope.setdefault("state", {})
    if "caller" not in state:
        state["client_ip"] = client_ip(scope, trusted or TrustedProxies(settings.trusted_proxies))
        state["caller"] = None
        state["auth_error"] = None
        try:
            token = bearer_token(header(scope, b"authorization"))
            if token is not None:
                state["caller"] = decode_access_token(settings, token)
        except Unauthenticated as exc:
            state["auth_error"] = exc
        info = current_request.get()
        if info is not None and state["caller"] is not None:
            info.user_id = str(state["caller"].id)
    return state
