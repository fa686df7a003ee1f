"""JSON responses of the edge, and which HTTP status a refusal's code gets."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The HTTP status of a GraphQL response whose errors say the client should wait and retry.
RETRY_STATUSES = {"RATE_LIMITED": 429, "SERVICE_UNAVAILABLE": 503}
# The status of a refusal made outside GraphQL (a plain route, or before GraphQL ran).
ERROR_STATUSES = {"UNAUTHENTICATED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404,
                  "BAD_USER_INPUT": 400, "QUERY_TOO_COMPLEX": 400, **RETRY_STATUSES}


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def run_capturing(app: ASGIApp, scope: Scope, receive: Receive,
                        send: Send) -> bytes | None:
    """Run the app, passing its response through; returns the body of a 200 response, else
    None (the response cache and the persisted-query store keep only those)."""
    status = 0
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
        await send(message)

    await app(scope, receive, capture)
    return b"".join(chunks) if status == 200 else None

