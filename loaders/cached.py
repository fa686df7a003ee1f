"""DataLoaders whose batch function goes through the Redis cache of field results.

A subclass names its `field` ("overview", "trends", "productivity") and its `codec` (how its
values are stored, and their format, which is in every key: `domain.figures.FigureCodec` of the
value type for the analytics figures), and implements `compute(keys)`: one SQL statement for all
the keys it is given.
Once `cached(resources, versions, notes)` has been called on a loader (the per-request registry
does it), its batch function gets the users' data versions from `versions` (the request's user
loader, which already holds the rows: no extra statement), looks every key up with one `MGET`,
calls `compute` with the misses only, and writes them back with one pipelined `SET ... EX`; see
`gateway/cache/fields.py`. A loader never switched on, such as the user loader whose
"today" moves, calls `compute` directly.

Loaders given a `SharedBatch` (`cached(..., shared=...)`; the registry gives the three figure
loaders one per request) go further: the batches they start in the same event-loop tick are
answered together, one `MGET` for all their keys and ONE `compute` call of the shared batch for
the misses of every field (`compute_figures`: one SQL statement), while each field keeps its
own keys, codec, TTL, hits and misses. So an uncached dashboard costs one statement for its
overview, trends and productivity, and the admin page's 100 users one for all their figures.

Cache warming (the figures a dashboard asks for, under the keys its resolvers build) is in
loaders/warming.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from aiodataloader import DataLoader

from gateway.cache.fields import Codec, ComputeParts, Part, PartResult, QueryCache, cache_of
from gateway.ops import tracing
from gateway.ops.batching import answer

if TYPE_CHECKING:
    from gateway.data.resources import Resources

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
VersionsOf = Callable[[list[Any]], Awaitable[dict[Any, int]]]
"""Users' `data_version`s by id, read from PostgreSQL for this request (gateway/cache/fields.py)."""

SETTLE_TICKS = 2
"""Event-loop iterations a shared batch waits, after its first loader's batch, for the batches
of the other loaders: the resolvers of one level of a response ask in the same tick, but
aiodataloader dispatches each loader a tick or so apart when their first loads were."""


class SharedBatch:
    """The batches of several cached loaders that start within a few event-loop ticks of each
    other, answered together: one `versions` call, one `QueryCache.load_parts` (one MGET, one
    `compute` call for the misses of every field, one pipelined SET). One per request (or per
    batch of live pushes), like the loaders that share it."""

    def __init__(self, name: str, cache: QueryCache, versions: VersionsOf,
                 compute: ComputeParts, notes: dict[str, Any] | None = None, *,
                 force: bool = False, keep: bool = True) -> None:
        self.name = name
        self.cache = cache
        self.versions = versions
        self.compute = compute
        self.notes = notes
        self.force = force  # recompute and overwrite every key (cache warming)
        self.keep = keep  # keep the values in the process (QueryCache.load_parts)
        self._queue: list[tuple[Part, asyncio.Future[PartResult]]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # the batches running (kept referenced)

    async def load(self, part: Part, context: contextvars.Context | None = None) -> PartResult:
        """The values of one loader's batch (`part`), with its hits and misses, once the
        shared batch it joins has run. `context` is where the shared batch runs (its span's
        parent): the first joiner's."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PartResult] = loop.create_future()
        self._queue.append((part, future))
        if len(self._queue) == 1:
            loop.call_soon(self._settle, SETTLE_TICKS, context=context)
        return await future

    def _settle(self, ticks: int) -> None:
        if ticks > 0:  # let the other loaders' batches of this tick join first
            asyncio.get_running_loop().call_soon(self._settle, ticks - 1)
            return
        queue, self._queue = self._queue, []
        task = asyncio.ensure_future(answer(queue, self._load))  # every joiner answered
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, parts: list[Part]) -> list[PartResult]:
        """The parts of the loaders that joined, in one go (`answer` hands each its own)."""
        with tracing.child_span(f"loader {self.name}", attributes={
                "loader.fields": [part.field for part in parts],
                "loader.keys": sum(len(part.keys) for part in parts),
                "loader.cached": self.cache.enabled}):
            versions = await self.versions(
                list(dict.fromkeys(key[0] for part in parts for key in part.keys)))
            results = await self.cache.load_parts(parts, versions, self.compute, self.notes,
                                                  force=self.force, keep=self.keep)
            if tracing.recording():  # each joining loader's part, in loader.fields' order
                tracing.annotate(**{"loader.field_keys": [len(p.keys) for p in parts],
                                    "cache.field_hits": [r.hits for r in results],
                                    "cache.field_misses": [r.misses for r in results]})
        return results


class CachedLoader(DataLoader[K, V], Generic[K, V]):
    """Base of the cached analytics loaders; keys are `(user_id, *arguments)` tuples."""

    field: ClassVar[str]
    codec: ClassVar[Codec[Any]]
    _query_cache: QueryCache | None = None
    _notes: dict[str, Any] | None = None
    _force = False
    _resources: Resources | None = None  # set by `cached`: its replica router picks the pool
    _versions: VersionsOf | None = None
    _shared: SharedBatch | None = None

    def cached(self, resources: Resources, versions: VersionsOf,
               notes: dict[str, Any] | None = None, *, force: bool = False,
               shared: SharedBatch | None = None) -> Self:
        """Route this loader through the process's cache, keyed by the data versions that
        `versions` gives; hits and ages are noted in the request's `notes` (for
        `extensions.cache`). `force` recomputes every key and overwrites it (cache warming).
        With `shared`, the batches go through that shared batch (whose own versions, notes,
        compute and `force` are then used), together with the other loaders' of the same ticks."""
        self._query_cache = cache_of(resources)
        self._resources = resources
        self._versions = versions
        self._notes = notes
        self._force = force
        self._shared = shared
        return self

    async def batch_load_fn(self, keys: list[K]) -> list[V]:
        if not tracing.recording():  # no span to make or to run the shared batch under
            return await self._load_batch(keys)
        # A shared batch's span stands for the batches of all the loaders joining it (each
        # one's keys, hits and misses are its attributes), under the code that asked first:
        # the joiners make no span of their own, which would only repeat its time.
        outer = contextvars.copy_context()
        if self._shared is not None:
            return await self._load_batch(keys, outer)
        # One span per batch, under the span of the code that asked first (aiodataloader
        # dispatches with `call_soon`, in a copy of that code's context): the field, the number
        # of keys, and, through the cache, its hits and misses (gateway/cache/fields.py).
        with tracing.child_span(f"loader {self.field}",
                                attributes={"loader.field": self.field,
                                            "loader.keys": len(keys),
                                            "loader.cached": self._query_cache is not None}):
            return await self._load_batch(keys, outer)

    async def _load_batch(self, keys: list[K],
                          outer: contextvars.Context | None = None) -> list[V]:
        if self._shared is not None:
            part = Part(self.field, keys, self.codec)  # type: ignore[arg-type]
            result = await self._shared.load(part, outer)
            return result.values
        if self._query_cache is None or self._versions is None:
            return list(await self.compute(keys))
        versions = await self._versions(list(dict.fromkeys(k[0] for k in keys)))  # type: ignore[index]
        return await self._query_cache.load(self.field, keys, versions,  # type: ignore[arg-type]
                                            self.compute,  # type: ignore[arg-type]
                                            self._notes, codec=self.codec,
                                            force=self._force)

    async def compute(self, keys: Sequence[K]) -> Sequence[V]:
        """The values of `keys`, in order, computed from PostgreSQL in one statement."""
        raise NotImplementedError
