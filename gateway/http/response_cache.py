"""Whole-response cache for a caller's own dashboard queries.

The field cache (gateway/cache/fields.py) saves the SQL, but a cached dashboard still pays for
GraphQL execution of some 250 fields, which costs more than everything else in the request. A
dashboard asks the same question again and again, so the response itself is cached too:

- Only queries whose root fields are all in `CACHEABLE_ROOTS` (the caller's own `overview`,
  `trends`, `productivity`, without `userId`), from a signed-in caller, over POST or GET (a GET by
  persisted-query hash arrives here with its text: gateway/http/persisted.py). Everything else,
  mutations, admin queries and `me` included, goes through GraphQL as usual.
- Key: `gql:{<user_id>}:f<format>:v<version>:<sha256 of query, variables, operation name>`.
  The format (`RESPONSE_FORMAT`) is a hash of the schema's SDL and of the shapes of every figure
  type (`domain.figures.FIGURES_FORMAT`), derived at import: a release that changes either reads
  none of the previous release's answers. The version is the user's `users.data_version`, read
  from PostgreSQL with the caller's account row (`gateway.http.identity.account_of`, which also
  refuses a deleted account before any hit), so every change that invalidates the user's fields
  (tasks, timezone, daily goal, rollup repair) invalidates the cached responses too, whatever
  Redis lost or restored meanwhile; the `{user_id}` hash tag keeps the keys in the user's
  cluster slot.
- TTL: the shortest TTL of the fields asked for, and never past the user's next local midnight
  (default ranges end "today"), so a hit is what GraphQL would answer, within the field TTLs.
- Only answers without errors are stored, without `extensions`; a hit says so in
  `extensions.cache.response` when the cache report is wanted (outside production, or with
  `X-Cache-Debug: 1`).
- Redis trouble is a miss (the field cache's circuit breaker is shared), never an error; so is a
  database that cannot be read (GraphQL then answers 503 for it).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any

import orjson
from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.types import ASGIApp, Receive, Scope, Send

from domain.figures import FIGURES_FORMAT, digest
from domain.ranges import seconds_to_midnight
from gateway.cache.fields import (
    CACHE_HITS,
    CACHE_MISSES,
    CacheUnavailable,
    cache_of,
)
from gateway.cache.kept import Kept
from gateway.data.resources import Resources
from gateway.http.bodies import parsed_body
from gateway.http.identity import Account, account_of, header, identify
from gateway.http.responses import run_capturing
from gateway.ops.settings import Settings
from gateway.security.access import Caller
from gateway.security.ratelimit import TrustedProxies
from schema.extensions.cache_report import DEBUG_HEADER
from schema.schema import schema as graphql_schema

log = logging.getLogger(__name__)

CACHEABLE_ROOTS = frozenset({"overview", "trends", "productivity", "__typename"})
FIELD = "response"  # the `field` label of the hit/miss counters
_PLANS_MAX = 512


def response_format(sdl: str, figures_format: str = FIGURES_FORMAT) -> str:
    """The format of cached responses: changes with the schema (what a response can hold) and
    with the shape of any figure (what the resolvers computed it from)."""
    return digest("response1", sdl, figures_format)


RESPONSE_FORMAT = response_format(graphql_schema.as_str())


class _Plans:
    """Which query texts are cacheable, and the TTL-deciding root fields: parsed once per text."""

    def __init__(self) -> None:
        self._plans: OrderedDict[str, frozenset[str] | None] = OrderedDict()

    def roots(self, text: str, operation_name: str | None) -> frozenset[str] | None:
        key = f"{operation_name or ''}\0{text}"
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        plan = _cacheable_roots(text)
        self._plans[key] = plan
        if len(self._plans) > _PLANS_MAX:
            self._plans.popitem(last=False)
        return plan


def _cacheable_roots(text: str) -> frozenset[str] | None:
    """The root field names of a cacheable query, or None when it is not one."""
    try:
        document = parse(text)
    except GraphQLError:
        return None  # GraphQL will answer with the syntax error
    if len(document.definitions) != 1:
        return None  # fragments or several operations: not worth the risk
    operation = document.definitions[0]
    if not isinstance(operation, OperationDefinitionNode):
        return None
    if operation.operation is not OperationType.QUERY:
        return None
    names = set()
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode):
            return None
        if selection.name.value not in CACHEABLE_ROOTS:
            return None
        if any(arg.name.value == "userId" for arg in selection.arguments or ()):
            return None  # someone else's figures: the field cache and authorization handle it
        names.add(selection.name.value)
    return frozenset(names)


def response_key(user_id: Any, version: int, query_digest: str,
                 fmt: str = RESPONSE_FORMAT) -> str:
    """`gql:{<user_id>}:f<format>:v<version>:<digest>`: the key of a cached response."""
    return f"gql:{{{user_id}}}:f{fmt}:v{version}:{query_digest}"


class ResponseCache:
    """Wraps the GraphQL ASGI app: answers cacheable dashboard queries from Redis."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.production = settings.is_production
        self.trusted = TrustedProxies(settings.trusted_proxies)
        self.plans = _Plans()
        # The responses this process has lately read or stored, by key: a key names the user's
        # data version, so one kept is exactly what Redis holds (gateway/cache/kept.py).
        self.kept: Kept[bytes] = Kept(settings.cache_local_entries)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        resources: Resources | None = getattr(scope["app"].state, "resources", None)
        if (scope["type"] != "http" or scope["method"] not in ("GET", "POST") or resources is None
                or not (self.settings.enable_query_cache and self.settings.enable_response_cache)):
            await self.app(scope, receive, send)
            return
        # The caller, decoded once per request (the rate limiter may have done it already).
        caller: Caller | None = identify(scope, self.settings, self.trusted)["caller"]
        # The body gate read and parsed the body already (gateway/http/bodies.py), or for a GET
        # the persisted-query step decoded the query string: not again.
        kept = parsed_body(scope)
        request = kept[1] if kept is not None else None
        if caller is None or request is None:
            await self.app(scope, receive, send)
            return
        text, variables, name = request.get("query"), request.get("variables"), \
            request.get("operationName")
        roots = self.plans.roots(text, name) if isinstance(text, str) else None
        if not roots:
            await self.app(scope, receive, send)
            return
        query_digest = hashlib.sha256(orjson.dumps([text, variables, name],
                                             option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        cache = cache_of(resources)
        try:
            account = await account_of(scope, resources, caller.id)
        except Exception:  # kept in the request state: GraphQL answers for it (503 or 500)
            account = None
        if account is None:
            await self.app(scope, receive, send)
            return
        key = response_key(caller.id, account.data_version, query_digest)
        cached = self.kept.get(key, time.time())
        if cached is None:
            try:
                cached = (await cache.mget([key]))[0]
            except CacheUnavailable:
                await self.app(scope, receive, send)
                return
            if cached is not None:
                written, _, _ = cached.partition(b"\n")
                self._keep(key, cached, float(written), self._ttl(resources, account, roots))
        if cached is not None:
            CACHE_HITS.labels(field=FIELD).inc()
            await self._answer(scope, send, cached)
            return
        CACHE_MISSES.labels(field=FIELD).inc()
        captured = await run_capturing(self.app, scope, receive, send)
        if captured is not None:
            await self._store(resources, account, key, roots, captured)

    def _keep(self, key: str, payload: bytes, written_at: float, ttl: int) -> None:
        """Keep a response in the process until its TTL from when it was written."""
        self.kept.put(key, payload, written_at + ttl)

    @staticmethod
    def _ttl(resources: Resources, account: Account, roots: frozenset[str]) -> int:
        """The shortest TTL of the fields asked for, and never past the user's next local
        midnight, when "today" moves (DST-safe)."""
        ttls = cache_of(resources).ttls  # the fields' TTLs, from the settings
        ttl = min([ttls[root] for root in roots if root in ttls]
                  or [resources.settings.cache_ttl_overview])
        return max(1, min(ttl, int(seconds_to_midnight(account.timezone))))

    async def _answer(self, scope: Scope, send: Send, cached: bytes) -> None:
        written, _, body = cached.partition(b"\n")
        if not self.production or header(scope, DEBUG_HEADER.encode()) == "1":
            age = round(max(0.0, time.time() - float(written)), 1)
            body = orjson.dumps({**orjson.loads(body), "extensions": {
                "cache": {FIELD: {"hit": True, "age": age}}}})
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-response-cache", b"hit")]})
        await send({"type": "http.response.body", "body": body})

    async def _store(self, resources: Resources, account: Account, key: str,
                     roots: frozenset[str], body: bytes) -> None:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(answer, dict) or "errors" in answer or "data" not in answer:
            return
        answer.pop("extensions", None)
        ttl = self._ttl(resources, account, roots)
        written_at = time.time()
        payload = f"{written_at:.3f}\n".encode() + orjson.dumps(answer)
        self._keep(key, payload, written_at, ttl)
        await cache_of(resources).set_raw(key, payload, ttl)
