"""Who is asking, worked out once per request and kept in the request's state.

`identify` decodes the bearer token (and finds the client IP) the first time any layer of the
edge asks: the rate limiter, the response cache, the GraphQL view or the CSV export. The token
only names a user: `account_of` reads that account's row from the primary, once per request, and
`verified_caller` takes the role from it, so a demoted admin or a deleted account loses its rights
at once, not when the token expires (docs/api.md, "Tokens"). The row is the one the analytics
resolvers need anyway (with the local today and the data version that keys the cache), so the
GraphQL view primes the user loader with it. The process keeps the rows it read until it hears that
they changed (`ACCOUNT_CACHE_SECONDS`, gateway/data/accounts.py): most requests read none.
"""

from __future__ import annotations

import uuid
from typing import Any

from domain.figures import UserRow
from domain.ranges import seconds_to_midnight
from gateway.data.db import query
from gateway.data.resources import Resources
from gateway.errors import Unauthenticated
from gateway.ops.logs import current_request
from gateway.ops.metrics import ACCOUNT_ROWS_KEPT, ACCOUNT_ROWS_READ
from gateway.ops.settings import Settings
from gateway.security.access import Caller, bearer_token, decode_access_token
from gateway.security.ratelimit import TrustedProxies, client_ip

ACCOUNT = "account"              # request-state key: the caller's user row, or None
ACCOUNT_ERROR = "account_error"  # request-state key: why it could not be read
MIDNIGHT_MARGIN_S = 5.0  # rows are not kept into the last seconds of the user's day
Account = UserRow
"""The caller's user row, as the analytics' user loader holds it (domain/figures.py)."""


async def account_of(scope: Any, resources: Resources, user_id: uuid.UUID, *,
                     fresh: bool = False) -> Account | None:
    """The user row of `user_id` (None when the account no longer exists): the process's kept row
    (gateway/data/accounts.py) or one read from the primary, once per request, and kept in the
    request's state for whoever asks next (the response cache, then the GraphQL context). A
    failure to read it is kept too, and raised again. `fresh`: from the primary, and not kept
    by the process (a subscription socket's sign-in: once per socket, and 10,000 idle sockets
    would fill the account cache with rows no request asks for)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    if ACCOUNT_ERROR in state:
        raise state[ACCOUNT_ERROR]
    if ACCOUNT not in state:
        accounts = None if fresh else getattr(resources, "accounts", None)
        kept: Account | None = accounts.get(user_id) if accounts is not None else None
        if kept is not None:
            ACCOUNT_ROWS_KEPT.inc()
            state[ACCOUNT] = kept
            return kept
        ACCOUNT_ROWS_READ.inc()
        generation = accounts.generation if accounts is not None else 0
        try:
            rows = await resources.pool.fetch(query("analytics_users"), [user_id])
        except Exception as exc:
            state[ACCOUNT_ERROR] = exc
            raise
        state[ACCOUNT] = UserRow.from_record(rows[0]) if rows else None
        if accounts is not None and state[ACCOUNT] is not None:
            accounts.put(user_id, state[ACCOUNT], generation, keep_for(state[ACCOUNT]))
    account: Account | None = state[ACCOUNT]
    return account


def keep_for(account: Account) -> float:
    """How long the process may keep an account row (gateway/data/accounts.py): not past the
    user's next local midnight, less `MIDNIGHT_MARGIN_S`, since the row carries its local today
    by the database's clock."""
    return seconds_to_midnight(account.timezone) - MIDNIGHT_MARGIN_S


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
        trusted = trusted or TrustedProxies.of(settings.trusted_proxies)
        state["client_ip"] = client_ip(scope, trusted)
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
