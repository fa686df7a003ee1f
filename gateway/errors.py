"""The errors a client may see. Each carries an `extensions.code` of docs/api.md ("Errors").

Resolvers raise these; anything else is unexpected and masked as INTERNAL_SERVER_ERROR before it
reaches the client (see schema/extensions/errors.py).
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError


class GatewayError(GraphQLError):
    """An expected error: its message and code are safe to show to the client."""

    code = "INTERNAL_SERVER_ERROR"
    default_message = "Internal server error"

    def __init__(self, message: str | None = None, **extensions: Any) -> None:
        super().__init__(message or self.default_message,
                         extensions={"code": self.code, **extensions})


class Unauthenticated(GatewayError):
    code = "UNAUTHENTICATED"
    default_message = "Authentication required"


class Forbidden(GatewayError):
    code = "FORBIDDEN"
    default_message = "You may not see or change this"


class NotFound(GatewayError):
    code = "NOT_FOUND"
    default_message = "Not found"


class BadUserInput(GatewayError):
    """Bad arguments; `field` names the argument or input field at fault."""

    code = "BAD_USER_INPUT"
    default_message = "Bad input"

    def __init__(self, message: str, field: str | None = None, **extensions: Any) -> None:
        if field is not None:
            extensions["field"] = field
        super().__init__(message, **extensions)


class RateLimited(GatewayError):
    code = "RATE_LIMITED"
    default_message = "Too many requests; slow down"


class QueryTooComplex(GatewayError):
    code = "QUERY_TOO_COMPLEX"
    default_message = "Query too complex"


class ServiceUnavailable(GatewayError):
    code = "SERVICE_UNAVAILABLE"
    default_message = "The service is busy; try again shortly"
