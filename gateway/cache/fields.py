"""The Redis cache of analytics field results: versioned keys, single flight, fail-open.

A cached figure lives at `analytics:{<user_id>}:f<format>:v<version>:<field>:<args...>`:

- the `{user_id}` hash tag keeps all of a user's keys in one Redis Cluster slot;
- `f<format>` is the format of the stored values, which the loader's `Codec` names (for the
  analytics figures a hash of the value type's fields, derived at import by
  `domain.figures.FigureCodec`): entries written by a release that shaped them differently are
  never read, and an entry that cannot be decoded anyway is a miss, never an error;
- `<version>` is the user's `users.data_version` in PostgreSQL, which the transaction of every
  change to the user's figures raises (triggers of sql/migrations/0002_data_versions.sql). The
  request reads it from PostgreSQL (with the user row it loads anyway) before it reads the cache,
  so an entry computed before an acknowledged write is never answered after it, whatever Redis
  lost, kept or restored; the old keys simply expire with their TTL (docs/cache.md);
- the user id, field and every argument are in the key, so one user's figure can never be
  answered to another.

A batch of keys costs one `MGET` of the values; misses are computed with one `compute` call and
written back with one pipelined `SET ... EX`. A batch may hold the keys of several fields
(`load_parts`, which loaders/cached.py's shared batch uses): each field keeps its keys, codec,
TTL, hits and misses, and one `compute` call gets the misses of them all, so that one SQL
statement answers a dashboard's overview, trends and productivity.

Stampedes: concurrent misses of one key in this process await a single computation (single
flight), and across processes a short `SET NX PX` lock lets one process compute while the others
poll the value for a moment, then compute themselves if it does not come.

Fail-open: every Redis call goes through `resources.cache_redis` (200 ms timeouts, no retries) and
the client's circuit breaker (`gateway.cache.clients.breaker_for`, shared with the rate limiter);
any Redis failure is a miss. Socket operations get `REDIS_CACHE_TIMEOUT`, a whole call three;
the first failure opens the breaker, cuts short the calls still waiting on Redis, and skips Redis
for `CACHE_CIRCUIT_SECONDS`, after which one call probes it. So a hung Redis costs a request at most
about one timeout. For a lock's lifetime after a failure nobody waits on another's lock (it may be
an orphan whose value and release were lost): the waiter computes. Nothing has to be replayed when
Redis returns: invalidation lives in PostgreSQL, not in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import Any, Protocol, TypeVar

import orjson
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.cache.clients import breaker_for
from gateway.cache.kept import Kept
from gateway.ops import tracing
from gateway.ops.batching import TickBatcher
from gateway.ops.circuit import CircuitOpen
from gateway.ops.lazy import kept_on
from gateway.ops.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")
Key = tuple[Any, ...]
"""A loader key: the user id first, then the field's arguments (dates, strings, enums, None)."""
Compute = Callable[[list[Key]], Awaitable[Sequence[Any]]]

CACHE_HITS = Counter("analytics_cache_hits_total", "Analytics field results answered from Redis",
                     ["field"])
CACHE_MISSES = Counter("analytics_cache_misses_total",
                       "Analytics field results computed because Redis did not have them",
                       ["field"])

LOCK_TTL_MS = 5000        # a computing process's claim on a key; expires if the process dies
LOCK_WAIT_SECONDS = 2.0   # how long a process polls for another's result before computing itself
POLL_INTERVAL = 0.02
REDIS_FAILURES = (RedisError, OSError, TimeoutError)

# Delete a lock only if it is still ours (it may have expired and been taken by another process).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


class CacheUnavailable(Exception):
    """Redis failed or is being skipped by the circuit breaker: treat as a miss."""


class _LeaderGone(Exception):
    """The request computing a key was cancelled; whoever waited for it computes instead."""


# --- keys ------------------------------------------------------------------------------------


class Codec(Protocol[V]):
    """How a loader's values are stored: `encode` makes a value JSON-compatible, `decode` reads
    it back (raising on a value of another shape, which the cache then treats as a miss), and
    `format` names the shape, in every key. The cache knows no value type: the loader gives its
    codec (`domain.figures.FigureCodec` for the analytics figures)."""

    @property
    def format(self) -> str: ...

    def encode(self, value: V) -> Any: ...

    def decode(self, data: Any) -> V: ...


class PlainJson:
    """A codec for values that are JSON already (dicts, lists, numbers, text), stored and read
    as they are; `format` is whatever the caller names their shape."""

    def __init__(self, format: str) -> None:
        self.format = format

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, data: Any) -> Any:
        return data


DECODE_FAILURES = (ValueError, TypeError, KeyError, IndexError, AttributeError)
"""What decoding a stored value of an unexpected shape may raise: the entry is then a miss."""
Versions = Mapping[Any, int]
"""Each user's `users.data_version`, as the request read it from PostgreSQL."""


def _arg(value: Any) -> str:
    """One key argument as text; `:` is escaped so that arguments cannot run into each other."""
    if value is None:
        return "-"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, date | datetime):
        value = value.isoformat()
    return str(value).replace("%", "%25").replace(":", "%3A")


def cache_key(field: str, key: Key, version: int, fmt: str) -> str:
    """`analytics:{<user_id>}:f<fmt>:v<version>:<field>:<args...>` for a loader key, `fmt`
    being the format of the values (the loader's `Codec.format`)."""
    user_id, *args = key
    parts = [f"analytics:{{{user_id}}}:f{_arg(fmt)}:v{version}:{field}",
             *(_arg(a) for a in args)]
    return ":".join(parts)


def _lock_key(key: str) -> str:
    return f"{key}:lock"


# --- values ----------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot cache a {type(value).__name__}")


def encode(value: Any, written_at: float) -> bytes:
    """The stored form: `[written_at, value]`, so that a hit can report its age."""
    return orjson.dumps([written_at, value], default=_default)


def decode(raw: bytes, codec: Codec[V]) -> tuple[V, float]:
    """The value and when it was written; raises one of `DECODE_FAILURES` (or orjson's
    `JSONDecodeError`, a ValueError) for an entry of another shape."""
    written_at, data = orjson.loads(raw)
    return codec.decode(data), float(written_at)


def _decoded(raw: bytes, codec: Codec[V], ckey: str) -> tuple[V, float] | None:
    """`decode`, or None (a miss) for an entry that is not of the codec's shape: a release that
    stored another shape under the same format, or a corrupted value. Never an error for the
    client; the entry is recomputed and overwritten."""
    try:
        return decode(raw, codec)
    except DECODE_FAILURES as exc:
        log.warning("cache entry %s is not of format %s (%s): recomputed", ckey, codec.format,
                    exc)
        return None


async def _mget(redis: Redis, keys: list[str]) -> list[bytes | None]:
    """MGET that also works on Redis Cluster, where keys of several users span slots."""
    mget_nonatomic = getattr(redis, "mget_nonatomic", None)
    if mget_nonatomic is not None:
        return list(await mget_nonatomic(keys))
    return list(await redis.mget(keys))


# --- batches of several fields ------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One field's keys in a batch of several fields (`QueryCache.load_parts`), with the codec
    of its values."""

    field: str
    keys: Sequence[Key]
    codec: Codec[Any]


@dataclass(frozen=True)
class PartResult:
    """A part's values, in the order of its keys, and how many came from Redis (with their
    ages) or were computed."""

    values: list[Any]
    ages: list[float]
    misses: int

    @property
    def hits(self) -> int:
        return len(self.ages)


ComputeParts = Callable[[Mapping[str, list[Key]]], Awaitable[Mapping[str, Sequence[Any]]]]
"""Computes the missing keys of several fields in one go: field → keys in, field → their values
(in the same order) out."""


@dataclass(frozen=True)
class _Entry:
    """One key of a batch: its field, its Redis key and the codec of its value."""

    field: str
    key: Key
    ckey: str
    codec: Codec[Any]


async def _computed(compute: ComputeParts, entries: Sequence[_Entry]) -> list[Any]:
    """The values of `entries`, in order, from one `compute` call given them grouped by field."""
    positions: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        positions.setdefault(entry.field, []).append(i)
    values = await compute({field: [entries[i].key for i in at]
                            for field, at in positions.items()})
    results: list[Any] = [None] * len(entries)
    for field, at in positions.items():
        for i, value in zip(at, values[field], strict=True):
            results[i] = value
    return results


def _split(parts: Sequence[Part], values: list[Any], ages: list[float | None],
           missing: Sequence[int]) -> list[PartResult]:
    """The flat results of a batch cut back into its parts (whose keys are consecutive)."""
    missed = set(missing)
    results = []
    start = 0
    for part in parts:
        end = start + len(part.keys)
        results.append(PartResult(
            values=values[start:end],
            ages=[age for age in ages[start:end] if age is not None],
            misses=sum(1 for i in range(start, end) if i in missed)))
        start = end
    return results


# --- the cache -------------------------------------------------------------------------------


class QueryCache:
    """The cache of one process: its Redis client, circuit breaker and in-flight computations."""

    def __init__(self, redis: Redis, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.enabled = settings.enable_query_cache
        self.ttls = {"overview": settings.cache_ttl_overview,
                     "trends": settings.cache_ttl_trends,
                     "productivity": settings.cache_ttl_productivity}
        self.default_ttl = min(self.ttls.values())
        # The client's breaker, shared with the rate limiter (and the response cache, through
        # this cache): bounded calls (gateway/cache/clients.py), skipped for CACHE_CIRCUIT_SECONDS
        # after a failure, and never more in flight than the pool has connections (redis-py's
        # pool raises "Too many connections" instead of waiting, which would trip the breaker).
        self.breaker = breaker_for(redis, settings)
        self._clock = clock
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._mgets: TickBatcher[list[str], list[bytes | None]] = TickBatcher(self._run_mgets)
        # The values this process has read or written lately, decoded, by key: a key names the
        # user's data version, so its value never changes, and one kept here is exactly what
        # Redis holds (`CACHE_LOCAL_ENTRIES` at most, the least recently used dropped first, none
        # kept past its field's TTL).
        # Each entry: the value and when it was written (for its age).
        self._local: Kept[tuple[Any, float]] = Kept(settings.cache_local_entries)

    def _remember(self, entry: _Entry, value: Any, written_at: float) -> None:
        self._local.put(entry.ckey, (value, written_at), written_at + self.ttl_of(entry.field))

    # -- Redis calls, all through the breaker --

    async def _call(self, op: Callable[[], Awaitable[T]], command: str) -> T:
        try:
            return await self.breaker.call(op, REDIS_FAILURES, span=command)
        except CircuitOpen as exc:
            raise CacheUnavailable(str(exc)) from None
        except REDIS_FAILURES as exc:  # logged by the breaker when it opens
            raise CacheUnavailable(type(exc).__name__) from exc

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        """MGET, coalesced: every MGET asked for in one event-loop iteration, by any request of
        this process, goes to Redis as one command. Under load this divides the round trips (and
        the connections they need) by the number of concurrent requests; a failure
        (CacheUnavailable, or a bug) reaches every caller of the batch."""
        return await self._mgets.submit(keys)

    async def _run_mgets(self, key_lists: list[list[str]]) -> list[list[bytes | None]]:
        unique = list(dict.fromkeys(key for keys in key_lists for key in keys))
        raw = await self._call(partial(_mget, self.redis, unique), "MGET")
        found = dict(zip(unique, raw, strict=True))
        return [[found[key] for key in keys] for keys in key_lists]

    async def set_raw(self, key: str, payload: bytes, ttl: int) -> None:
        """`SET key payload EX ttl` through the breaker; a Redis failure is only logged (a value
        not stored is a miss next time, nothing worse)."""
        try:
            await self._call(partial(self.redis.set, key, payload, ex=ttl), "SET")
        except CacheUnavailable:
            pass

    # -- the loader path --

    async def load(self, field: str, keys: Sequence[Key], versions: Versions, compute: Compute,
                   notes: dict[str, Any] | None = None, *, codec: Codec[Any],
                   force: bool = False) -> list[Any]:
        """The values of `keys` for `field`: from Redis where present, else from `compute`.

        `versions` holds the `users.data_version` of every user of `keys`, read from PostgreSQL
        before this call (so before anything is computed: a value is never stored under a
        version newer than the data it was computed from).

        `compute` gets the missing keys only, in one call, and returns their values in order.
        `codec` writes and reads them, and its `format` is in every key; the codec reads back
        exactly the value it wrote (domain/figures.py, tested on random figures), so a computed
        value is returned as computed and a hit gives the same. An entry that does not decode
        is a miss. `force` recomputes and rewrites every key (cache warming).
        """
        async def compute_part(keys_of: Mapping[str, list[Key]]) -> dict[str, Sequence[Any]]:
            return {field: await compute(keys_of[field])}

        [part] = await self.load_parts([Part(field, keys, codec)], versions, compute_part, notes,
                                       force=force)
        return part.values

    async def load_parts(self, parts: Sequence[Part], versions: Versions,
                         compute: ComputeParts, notes: dict[str, Any] | None = None, *,
                         force: bool = False, keep: bool = True) -> list[PartResult]:
        """`load` for the keys of several fields at once, one `PartResult` per part in order:
        one MGET for them all, and `compute` called with the missing keys of every field
        together (field → keys; it returns field → values in the same order), so that one SQL
        statement can answer them. Each field keeps its own keys, codec, TTL and counts: the
        same entries, hits and misses as one `load` per field. `keep=False`: the values read
        or computed are not kept in the process (live pushes keep their own, resolvers/live.py)."""
        if not self.enabled:  # no Redis key needed
            entries = [_Entry(part.field, key, "", part.codec)
                       for part in parts for key in part.keys]
            values = await _computed(compute, entries) if entries else []
            return _split(parts, values, [None] * len(entries), [])
        entries = [_Entry(part.field, key, cache_key(part.field, key, versions[key[0]],
                                                     part.codec.format), part.codec)
                   for part in parts for key in part.keys]
        if not entries:
            return [PartResult([], [], 0) for _ in parts]
        results: list[Any] = [None] * len(entries)
        missing = list(range(len(entries)))
        hit: list[float | None] = [None] * len(entries)  # each hit's age
        redis_ok = True
        if not force:
            now = self._clock()
            remote = []
            for i, entry in enumerate(entries):
                kept = self._local.get(entry.ckey, now)
                if kept is None:
                    remote.append(i)
                else:
                    results[i], written_at = kept
                    hit[i] = max(0.0, now - written_at)
            raw: list[bytes | None] = []
            if remote:
                try:
                    raw = await self.mget([entries[i].ckey for i in remote])
                except CacheUnavailable:
                    raw, redis_ok = [None] * len(remote), False
                now = self._clock()
            missing = []
            for i, item in zip(remote, raw, strict=True):
                entry = entries[i]
                found = _decoded(item, entry.codec, entry.ckey) if item is not None else None
                if found is None:
                    missing.append(i)
                else:
                    results[i], written_at = found
                    hit[i] = max(0.0, now - written_at)
                    if keep:
                        self._remember(entry, results[i], written_at)
        counted = _split(parts, results, hit, missing)
        if not force:  # warming is not traffic: it would drown the hit ratio in misses
            for part, result in zip(parts, counted, strict=True):
                self._count(part.field, notes, hits=result.ages, misses=result.misses)
            if tracing.recording():  # on the span of the loader batch asking (loaders/cached.py)
                tracing.annotate(**{"cache.hits": sum(r.hits for r in counted),
                                    "cache.misses": sum(r.misses for r in counted)})
        if missing:
            values = await self._fill([entries[i] for i in missing], compute, redis_ok)
            computed_at = self._clock()
            for i, value in zip(missing, values, strict=True):
                results[i] = value
                if keep:
                    self._remember(entries[i], value, computed_at)
        return _split(parts, results, hit, missing)

    def _count(self, field: str, notes: dict[str, Any] | None, hits: list[float],
               misses: int) -> None:
        if hits:
            CACHE_HITS.labels(field=field).inc(len(hits))
        if misses:
            CACHE_MISSES.labels(field=field).inc(misses)
        if notes is not None:
            entry = notes.setdefault("cache", {}).setdefault(
                field, {"hits": 0, "misses": 0, "age": None})
            entry["hits"] += len(hits)
            entry["misses"] += misses
            if hits:
                entry["age"] = max(entry["age"] or 0.0, *hits)

    async def _fill(self, entries: list[_Entry], compute: ComputeParts,
                    redis_ok: bool) -> list[Any]:
        """Compute missing keys once per process: join computations already in flight."""
        loop = asyncio.get_running_loop()
        own: list[int] = []
        joined: list[tuple[int, asyncio.Future[Any]]] = []
        for i, entry in enumerate(entries):
            future = self._inflight.get(entry.ckey)
            if future is None:
                self._inflight[entry.ckey] = loop.create_future()
                own.append(i)
            else:
                joined.append((i, future))

        results: list[Any] = [None] * len(entries)
        if own:
            futures = [self._inflight[entries[i].ckey] for i in own]
            try:
                values = await self._compute_and_store([entries[i] for i in own], compute,
                                                       redis_ok)
            except BaseException as exc:
                error = exc if isinstance(exc, Exception) else _LeaderGone()
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
                        future.exception()  # retrieved: nobody may be waiting
                raise
            finally:
                for i, future in zip(own, futures, strict=True):
                    if self._inflight.get(entries[i].ckey) is future:
                        del self._inflight[entries[i].ckey]
            for i, future, value in zip(own, futures, values, strict=True):
                results[i] = value
                if not future.done():
                    future.set_result(value)

        orphans: list[int] = []
        for i, future in joined:
            try:
                # shield: a waiter being cancelled must not cancel everyone's shared future
                results[i] = await asyncio.shield(future)
            except _LeaderGone:
                orphans.append(i)
        if orphans:
            values = await self._compute_and_store([entries[i] for i in orphans], compute,
                                                   redis_ok)
            for i, value in zip(orphans, values, strict=True):
                results[i] = value
        return results

    async def _compute_and_store(self, entries: list[_Entry], compute: ComputeParts,
                                 redis_ok: bool) -> list[Any]:
        """Across processes: take the Redis lock of each key, compute the keys we hold, wait
        briefly for the others' results, compute what never came; then store ours."""
        if not redis_ok:
            return await _computed(compute, entries)
        token = secrets.token_hex(8)

        async def lock() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.set(_lock_key(entry.ckey), token, nx=True, px=LOCK_TTL_MS)
                return list(await pipe.execute())

        try:
            held = [bool(r) for r in await self._call(lock, "SET NX")]
        except CacheUnavailable:
            return await _computed(compute, entries)

        mine = [i for i, h in enumerate(held) if h]
        theirs = [i for i, h in enumerate(held) if not h]
        results: list[Any] = [None] * len(entries)
        computed: list[int] = []

        async def compute_mine() -> None:
            if mine:
                values = await _computed(compute, [entries[i] for i in mine])
                for i, value in zip(mine, values, strict=True):
                    results[i] = value
                computed.extend(mine)

        async def wait_theirs() -> None:
            if not theirs:
                return
            found = await self._wait_for([entries[i] for i in theirs])
            late = [i for i, value in zip(theirs, found, strict=True) if value is _ABSENT]
            for i, value in zip(theirs, found, strict=True):
                if value is not _ABSENT:
                    results[i] = value
            if late:
                values = await _computed(compute, [entries[i] for i in late])
                for i, value in zip(late, values, strict=True):
                    results[i] = value
                computed.extend(late)

        try:
            await asyncio.gather(compute_mine(), wait_theirs())
        except BaseException:
            await self._release([entries[i].ckey for i in mine], token)
            raise
        now = self._clock()
        payloads = {i: encode(entries[i].codec.encode(results[i]), now) for i in computed}
        await self._store({entries[i].ckey: (payload, self.ttl_of(entries[i].field))
                           for i, payload in payloads.items()},
                          [entries[i].ckey for i in mine], token)
        return results

    def ttl_of(self, field: str) -> int:
        """How long a value of `field` is kept, in seconds."""
        return self.ttls.get(field, self.default_ttl)

    async def _wait_for(self, entries: list[_Entry]) -> list[Any]:
        """Poll for values another process is computing; `_ABSENT` where none came in time
        (or where the other process gave up its lock without writing)."""
        found: list[Any] = [_ABSENT] * len(entries)
        if self.breaker.failed_within(LOCK_TTL_MS / 1000):
            # Redis failed a moment ago: the lock may belong to a computation whose result and
            # release never reached Redis (this process's or another's, cut off by the same
            # outage). Waiting for it would cost up to LOCK_WAIT_SECONDS for nothing.
            return found
        waiting = list(range(len(entries)))
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL)
            keys = [entries[i].ckey for i in waiting]
            both = keys + [_lock_key(k) for k in keys]
            try:
                raw = await self.mget(both)
            except CacheUnavailable:
                break
            values, locks = raw[:len(keys)], raw[len(keys):]
            still: list[int] = []
            for i, value, lock in zip(waiting, values, locks, strict=True):
                entry = entries[i]
                decoded = _decoded(value, entry.codec, entry.ckey) if value is not None else None
                if decoded is not None:
                    found[i] = decoded[0]
                elif value is None and lock is not None:
                    still.append(i)
            waiting = still
        return found

    async def _store(self, payloads: dict[str, tuple[bytes, int]], locks: list[str],
                     token: str) -> None:
        """One pipelined round trip: `SET ... EX ttl` for the values, release our locks."""
        if not payloads and not locks:
            return

        async def write() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for ckey, (payload, ttl) in payloads.items():
                    pipe.set(ckey, payload, ex=ttl)
                for ckey in locks:
                    pipe.eval(_RELEASE, 1, _lock_key(ckey), token)
                await pipe.execute()

        try:
            await self._call(write, "SET EVAL")
        except CacheUnavailable:
            pass  # the answer is computed; not storing it only costs the next request

    async def _release(self, ckeys: list[str], token: str) -> None:
        if not ckeys:
            return

        async def release() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for ckey in ckeys:
                    pipe.eval(_RELEASE, 1, _lock_key(ckey), token)
                await pipe.execute()

        try:
            await asyncio.shield(self._call(release, "EVAL"))
        except (CacheUnavailable, asyncio.CancelledError):
            pass  # the locks expire on their own after LOCK_TTL_MS


class _Absent:
    pass


_ABSENT: Any = _Absent()


def cache_of(resources: Any) -> QueryCache:
    """The process's cache, created on first use and kept on the lifespan's `Resources`."""
    return kept_on(resources, "query_cache",
                   lambda: QueryCache(resources.cache_redis, resources.settings))
