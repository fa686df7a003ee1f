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

Cache warming (the figures a dashboard asks for, under the keys its resolvers build) is in
loaders/warming.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from aiodataloader import DataLoader

from gateway.cache.fields import Codec, QueryCache, cache_of
from gateway.ops import tracing

if TYPE_CHECKING:
    from gateway.data.resources import Resources

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
VersionsOf = Callable[[list[Any]], Awaitable[dict[Any, int]]]
"""Users' `data_version`s by id, read from PostgreSQL for this request (gateway/cache/fields.py)."""


class CachedLoader(DataLoader[K, V], Generic[K, V]):
    """Base of the cached analytics loaders; keys are `(user_id, *arguments)` tuples."""

    field: ClassVar[str]
    codec: ClassVar[Codec[Any]]
    _query_cache: QueryCache | None = None
    _notes: dict[str, Any] | None = None
    _force = False
    _resources: Resources | None = None  # set by `cached`: its replica router picks the pool
    _versions: VersionsOf | None = None

    def cached(self, resources: Resources, versions: VersionsOf,
               notes: dict[str, Any] | None = None, *, force: bool = False) -> Self:
        """Route this loader through the process's cache, keyed by the data versions that
        `versions` gives; hits and ages are noted in the request's `notes` (for
        `extensions.cache`). `force` recomputes every key and overwrites it (cache warming)."""
        self._query_cache = cache_of(resources)
        self._resources = resources
        self._versions = versions
        self._notes = notes
        self._force = force
        return self

    async def batch_load_fn(self, keys: list[K]) -> list[V]:
        if not tracing.ENABLED:
            return await self._load_batch(keys)
        # One span per batch, under the span of the code that asked first (aiodataloader
        # dispatches with `call_soon`, in a copy of that code's context): the field, the number
        # of keys, and, through the cache, its hits and misses (gateway/cache/fields.py).
        with tracing.child_span(f"loader {self.field}",
                                attributes={"loader.field": self.field,
                                            "loader.keys": len(keys),
                                            "loader.cached": self._query_cache is not None}):
            return await self._load_batch(keys)

    async def _load_batch(self, keys: list[K]) -> list[V]:
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
