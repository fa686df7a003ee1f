"""Request bodies and refusals at the HTTP edge.

- `load_json` parses a request's JSON (the POST body in `GraphQLBodyGate`, the `variables` and
  `extensions` query parameters of GET in the GraphQL view): UTF-8 only, strict JSON, at most
  `MAX_JSON_DEPTH` levels. Anything else is `RequestRefused`, a 400 with BAD_USER_INPUT, instead
  of a `RecursionError` or `UnicodeDecodeError` (500) deeper down. The depth bound is well under
  what the rest of the request path can take (orjson encodes at most 254 levels, the response
  cache hashes the variables with it) and far above what any operation of the schema needs.
- `error_body`: every refusal made outside GraphQL has the shape of a GraphQL error.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from cross_web import HTTPException

from gateway.errors import BadUserInput

MAX_JSON_DEPTH = 64  # levels of arrays and objects in a request's JSON, the outer object included
# Request-state key: `(body, parsed)` of a POST /graphql, read and parsed once by the body gate
# (gateway/http/middleware.py) for the response cache and the GraphQL view; for a GET /graphql
# `(query string, parameters decoded)`, kept by gateway/http/persisted.py for the response cache.
# A persisted query's text, once resolved, is the `query` of `parsed`.
GRAPHQL_BODY = "graphql_body"


def parsed_body(scope: Any) -> tuple[bytes, dict[str, Any]] | None:
    """The `(body, parsed JSON object)` kept for this request (see `GRAPHQL_BODY`), or None."""
    state = scope.get("state")
    kept: tuple[bytes, dict[str, Any]] | None = state.get(GRAPHQL_BODY) if state else None
    return kept


def printable(text: str) -> str:
    """`text` with unpaired surrogates written as `\\udXXX` escapes, so it can be encoded."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(message: str, code: str, **extensions: Any) -> dict[str, Any]:
    """The body of a refusal, in the shape of a GraphQL error."""
    return {"errors": [{"message": printable(message),
                        "extensions": {"code": code, **extensions}}]}


# --- request JSON -----------------------------------------------------------------------------


class RequestRefused(HTTPException):
    """A request refused before GraphQL runs; the HTTP view answers it as `error_body`."""

    def __init__(self, message: str, code: str = BadUserInput.code, status: int = 400) -> None:
        super().__init__(status, message)
        self.code = code


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(data: bytes | str, what: str = "The request body") -> Any:
    """The JSON value of `data`, or `RequestRefused` naming `what` was wrong with it."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        value = _load_leniently(data, what, str(exc))
    if _too_deep(data, value):
        raise RequestRefused(f"{what} nests too deeply: at most {MAX_JSON_DEPTH} levels of "
                             "arrays and objects")
    return value


def _load_leniently(data: bytes | str, what: str, reason: str) -> Any:
    """orjson refused `data`: say why, or parse what it refuses and JSON allows (an escaped lone
    surrogate such as `"\\ud800"`, which `InputCheck` then refuses naming its argument)."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestRefused(f"{what} is not valid UTF-8") from None
    else:
        text = data
    if reason.startswith("depth limit exceeded"):
        raise RequestRefused(f"{what} nests too deeply: at most {MAX_JSON_DEPTH} levels of "
                             "arrays and objects")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestRefused(f"{what} nests too deeply: at most {MAX_JSON_DEPTH} levels of "
                             "arrays and objects") from None
    except ValueError:
        raise RequestRefused(f"Unable to parse {what[0].lower()}{what[1:]} as JSON") from None


def _too_deep(data: bytes | str, value: Any) -> bool:
    # Fast path: JSON cannot nest deeper than it has brackets (most requests have a few).
    if isinstance(data, bytes):
        brackets = data.count(b"[") + data.count(b"{")
    else:
        brackets = data.count("[") + data.count("{")
    if brackets <= MAX_JSON_DEPTH:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


