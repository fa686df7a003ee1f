"""Persisted queries at the HTTP edge: Apollo's automatic persisted queries (APQ) and trusted
documents, resolved into the query text before anything else reads the request.

APQ (`ENABLE_PERSISTED_QUERIES`): a client sends `extensions.persistedQuery = {"version": 1,
"sha256Hash": "<hex>"}` instead of the query (POST, or GET so that a CDN can cache the URL).

- hash only: answered from the store; an unknown hash is `PersistedQueryNotFound`
  (`PERSISTED_QUERY_NOT_FOUND`, HTTP 200 with `Cache-Control: private, no-cache,
  must-revalidate` so that no CDN keeps it), and the client sends the query with its hash;
- query and hash: the hash must be the SHA-256 of the query's UTF-8 text (else 400, "provided sha
  does not match query"); the query runs as usual and, once GraphQL ran it (the response has
  `data`: it parsed, passed the query limits and validated), is stored under the hash.

The store: a bounded LRU of this process in front of Redis (`apq:v1:<hash>`, `APQ_TTL` seconds,
through the cache client and its circuit breaker). Redis down is only a miss of what the LRU lacks
(the client then re-sends the query), never an error.

Trusted documents (`TRUSTED_DOCUMENTS_FILE`, written by `python -m gateway documents add`): a
listed document can always be asked for by its hash. With `TRUSTED_DOCUMENTS_ONLY=true` nothing
else runs: an unlisted hash is `PERSISTED_QUERY_NOT_IN_LIST` and a query whose hash is not listed
`QUERY_NOT_IN_SAFELIST` (Apollo Router's codes), both 400; the APQ store is neither read nor
written.

Where: `PersistedQueries` wraps the `/graphql` route outside the response cache. A resolved POST
gets the query added to the body the body gate parsed (gateway/http/bodies.py); a GET gets it added
to its query string. So the response cache (a GET by hash is cached like the POSTed query), the
parse and validation caches and the query limits all see the real query text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.cache.fields import CACHE_HITS, CACHE_MISSES, CacheUnavailable, cache_of
from gateway.data.resources import Resources
from gateway.errors import BadUserInput
from gateway.http.bodies import GRAPHQL_BODY, RequestRefused, load_json, parsed_body
from gateway.http.middleware import send_error
from gateway.http.responses import run_capturing
from gateway.ops.metrics import REJECTED
from gateway.ops.settings import Settings, SettingsError

log = logging.getLogger(__name__)

APQ_FORMAT = "v1"                 # in the Redis key: a new format is a new key space
APQ_TTL = 7 * 24 * 3600           # seconds a registered query stays in Redis
LRU_MAX_BYTES = 8 * 1024 * 1024   # query text this process keeps, in all (characters)
MAX_STORED_BYTES = 64 * 1024      # characters: a longer query runs but is not stored
FIELD = "persisted_query"         # the `field` label of the cache hit/miss counters
TRUSTED_FORMAT = "trusted-documents"
TRUSTED_VERSION = 1
NO_CACHE = [(b"cache-control", b"private, no-cache, must-revalidate")]
_HASH = re.compile(r"^[0-9a-f]{64}$")


def document_hash(text: str) -> str:
    """The SHA-256 (hex) of a document's UTF-8 text, as APQ clients compute it. A lone
    surrogate (JSON allows `"\\ud800"`) is hashed as it came rather than refused: it matches
    nothing."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def apq_key(query_hash: str) -> str:
    """`apq:v1:<hash>`: where Redis keeps a registered query's text."""
    return f"apq:{APQ_FORMAT}:{query_hash}"


class Refusal(Exception):
    """A persisted-query request answered here, before GraphQL: `error_body(message, code)`."""

    def __init__(self, status: int, message: str, code: str, reason: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.reason = status, message, code, reason
        self.headers = headers or []


def not_found() -> Refusal:
    return Refusal(200, "PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND", "", NO_CACHE)


def not_supported() -> Refusal:
    return Refusal(200, "PersistedQueryNotSupported", "PERSISTED_QUERY_NOT_SUPPORTED", "",
                   NO_CACHE)


def bad_input(message: str) -> Refusal:
    return Refusal(400, message, BadUserInput.code, "persisted_query_bad_input")


# --- trusted documents: the allow-list file ---------------------------------------------------


@dataclass(frozen=True)
class TrustedDocument:
    body: str
    name: str | None = None
    source: str | None = None


def load_trusted(path: Path) -> dict[str, TrustedDocument]:
    """The documents of an allow-list file by hash; `ValueError` saying what is wrong with it."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if (not isinstance(content, dict) or content.get("format") != TRUSTED_FORMAT
            or not isinstance(content.get("documents"), dict)):
        raise ValueError(f"{path} is not a trusted documents file (written by "
                         "`python -m gateway documents add`)")
    if content.get("version") != TRUSTED_VERSION:
        raise ValueError(f"{path} has format version {content.get('version')!r}; this release "
                         f"reads version {TRUSTED_VERSION}")
    documents = {}
    for query_hash, entry in content["documents"].items():
        body = entry.get("body") if isinstance(entry, dict) else None
        if not isinstance(body, str) or document_hash(body) != query_hash:
            raise ValueError(f"{path}: the document listed as {query_hash} does not have that "
                             "hash; re-add it with `python -m gateway documents add`")
        documents[query_hash] = TrustedDocument(body, entry.get("name"), entry.get("source"))
    return documents


def save_trusted(path: Path, documents: Mapping[str, TrustedDocument]) -> None:
    """Write the allow-list (sorted by hash, so that its diffs are readable), atomically."""
    content = {"format": TRUSTED_FORMAT, "version": TRUSTED_VERSION, "documents": {
        query_hash: {"name": doc.name, "source": doc.source, "body": doc.body}
        for query_hash, doc in sorted(documents.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    os.replace(temporary, path)


def trusted_for(settings: Settings) -> dict[str, TrustedDocument]:
    """The allow-list the settings name: empty when the file does not exist and is not required;
    `SettingsError` naming the setting when it cannot be read."""
    path = Path(settings.trusted_documents_file)
    if not settings.trusted_documents_only and not path.exists():
        return {}
    try:
        return load_trusted(path)
    except ValueError as exc:
        raise SettingsError(f"TRUSTED_DOCUMENTS_FILE: {exc}") from None


# --- the APQ store ------------------------------------------------------------------------------


class QueryStore:
    """Registered query texts: an LRU of this process, bounded in bytes, in front of Redis."""

    def __init__(self, max_bytes: int = LRU_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._texts: OrderedDict[str, str] = OrderedDict()

    def knows(self, query_hash: str) -> bool:
        """Whether this process holds the query already (no need to register it again)."""
        return query_hash in self._texts

    def _remember(self, query_hash: str, text: str) -> None:
        if query_hash in self._texts:
            self._texts.move_to_end(query_hash)
            return
        self._texts[query_hash] = text
        self.size += len(text)
        while self.size > self.max_bytes and self._texts:
            _, dropped = self._texts.popitem(last=False)
            self.size -= len(dropped)

    async def get(self, resources: Resources, query_hash: str) -> str | None:
        text = self._texts.get(query_hash)
        if text is not None:
            self._texts.move_to_end(query_hash)
            return text
        try:
            raw = (await cache_of(resources).mget([apq_key(query_hash)]))[0]
        except CacheUnavailable:
            return None
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
        if document_hash(text) != query_hash:  # not what was stored under it: ignore it
            log.warning("APQ entry %s does not match its hash; ignored", apq_key(query_hash))
            return None
        self._remember(query_hash, text)
        return text

    async def put(self, resources: Resources, query_hash: str, text: str) -> None:
        """Keep `text` here and in Redis; Redis trouble only costs the other processes a miss."""
        self._remember(query_hash, text)
        await cache_of(resources).set_raw(apq_key(query_hash),
                                          text.encode("utf-8", "surrogatepass"), APQ_TTL)


# --- the request --------------------------------------------------------------------------------


@dataclass
class _Request:
    """The GraphQL request as the client sent it, and how to hand on a changed one."""

    scope: Scope
    fields: dict[str, Any]

    @classmethod
    def of(cls, scope: Scope) -> _Request | None:
        """POST: the body the body gate parsed; GET: the query string, decoded (kept in the request
        state for the response cache). None when there is nothing to read (GraphQL refuses it)."""
        if scope["method"] == "POST":
            kept = parsed_body(scope)
            return cls(scope, kept[1]) if kept is not None else None
        if scope["method"] != "GET":
            return None
        raw = scope.get("query_string", b"")
        params = dict(QueryParams(raw))
        if "query" not in params and "extensions" not in params:
            return None  # GraphiQL's page, or nothing: Strawberry answers
        fields: dict[str, Any] = dict(params)
        try:
            for name in ("variables", "extensions"):
                if fields.get(name):
                    fields[name] = load_json(fields[name], f"The {name} parameter")
        except RequestRefused:
            return None  # the view refuses it the same way
        scope.setdefault("state", {})[GRAPHQL_BODY] = (raw, fields)
        return cls(scope, fields)

    def with_query(self, text: str) -> Scope:
        """The scope to hand on, its request carrying `text` as the query."""
        fields = {**self.fields, "query": text}
        if self.scope["method"] == "POST":
            body = parsed_body(self.scope)
            assert body is not None
            self.scope["state"][GRAPHQL_BODY] = (body[0], fields)
            return self.scope
        params = [(name, value) for name, value in QueryParams(self.scope["query_string"])
                  .multi_items() if name != "query"]
        # (surrogatepass: a stored text may hold a lone surrogate, which plain UTF-8 refuses)
        query_string = urlencode([("query", text), *params],
                                 errors="surrogatepass").encode("latin-1")
        self.scope["state"][GRAPHQL_BODY] = (query_string, fields)
        return {**self.scope, "query_string": query_string}


def _persisted(fields: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """`(hash, query or None)` of a request using the persisted-query extension, else None."""
    extensions = fields.get("extensions")
    if not isinstance(extensions, dict) or "persistedQuery" not in extensions:
        return None
    persisted = extensions["persistedQuery"]
    if not isinstance(persisted, dict):
        raise bad_input('extensions.persistedQuery must be an object: {"version": 1, '
                        '"sha256Hash": "<hex>"}')
    version = persisted.get("version")
    if type(version) is not int or version != 1:
        raise Refusal(400, "Unsupported persisted query version", BadUserInput.code,
                      "persisted_query_bad_input")
    query_hash = persisted.get("sha256Hash")
    if not isinstance(query_hash, str) or not _HASH.match(query_hash.lower()):
        raise bad_input("extensions.persistedQuery.sha256Hash must be 64 hexadecimal characters")
    query = fields.get("query")
    return query_hash.lower(), query if isinstance(query, str) and query else None


# --- the ASGI wrapper --------------------------------------------------------------------------


class PersistedQueries:
    """Wraps the `/graphql` route: turns a persisted query's hash into its text (or refuses it)
    before the response cache and GraphQL read the request."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.enabled = settings.enable_persisted_queries
        self.trusted_only = settings.trusted_documents_only
        self.trusted = {query_hash: doc.body for query_hash, doc in trusted_for(settings).items()}
        self.store = QueryStore()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        resources: Resources | None = getattr(scope["app"].state, "resources", None)
        request = _Request.of(scope) if resources is not None else None
        if request is None or resources is None:
            await self.app(scope, receive, send)
            return
        try:
            scope, register = await self._resolve(request, resources)
        except Refusal as refusal:
            if refusal.reason:
                REJECTED.labels(refusal.reason).inc()
            await send_error(send, refusal.status, refusal.message, refusal.code,
                             refusal.headers)
            return
        if register is None:
            await self.app(scope, receive, send)
        else:
            await self._run_and_register(scope, receive, send, resources, *register)

    async def _resolve(self, request: _Request, resources: Resources
                       ) -> tuple[Scope, tuple[str, str] | None]:
        """The scope to run (with the query text resolved), and `(hash, text)` to register once
        GraphQL ran it, if any. Raises `Refusal` for a request answered here."""
        persisted = _persisted(request.fields)
        if persisted is None:
            self._check_listed(request.fields.get("query"))
            return request.scope, None
        query_hash, query = persisted
        if query is not None and document_hash(query) != query_hash:
            raise bad_input("provided sha does not match query")
        listed = self.trusted.get(query_hash)
        if listed is not None:
            return (request.scope if query is not None else request.with_query(listed)), None
        if self.trusted_only:
            raise Refusal(400, f"Persisted query '{query_hash}' not found in the persisted "
                          "query list", "PERSISTED_QUERY_NOT_IN_LIST",
                          "persisted_query_not_in_list")
        if not self.enabled:
            raise not_supported()
        if query is not None:
            stored = len(query) <= MAX_STORED_BYTES and not self.store.knows(query_hash)
            return request.scope, ((query_hash, query) if stored else None)
        text = await self.store.get(resources, query_hash)
        if text is None:
            CACHE_MISSES.labels(field=FIELD).inc()
            raise not_found()
        CACHE_HITS.labels(field=FIELD).inc()
        return request.with_query(text), None

    def _check_listed(self, query: Any) -> None:
        """With `TRUSTED_DOCUMENTS_ONLY`, a query sent as text must be a listed document."""
        if self.trusted_only and isinstance(query, str) and document_hash(query) not in \
                self.trusted:
            raise Refusal(400, "The operation body was not found in the persisted query "
                          "safelist", "QUERY_NOT_IN_SAFELIST", "query_not_in_safelist")

    async def _run_and_register(self, scope: Scope, receive: Receive, send: Send,
                                resources: Resources, query_hash: str, text: str) -> None:
        """Run the query, then store it if GraphQL ran it: the response is a 200 with `data`
        (a query that does not parse, breaks a limit or does not validate has none)."""
        body = await run_capturing(self.app, scope, receive, send)
        if body is None:
            return
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return  # not one JSON document (a stream): not worth storing
        if isinstance(answer, dict) and answer.get("data") is not None:
            await self.store.put(resources, query_hash, text)


