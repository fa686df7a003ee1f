"""JSON responses of the edge, and which HTTP status a refusal's code gets."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

# The HTTP status of a GraphQL response whose errors say the client should wait and retry.
RETRY_STATUSES = {"RATE_LIMITED": 429, "SERVICE_UNAVAILABLE": 503}
# The status of a refusal made outside GraphQL (a plain route, or before GraphQL ran).
ERROR_STATUSES = {"UNAUTHENTICATED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404,
                  "BAD_USER_INPUT": 400, "QUERY_TOO_COMPLEX": 400, **RETRY_STATUSES}


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
