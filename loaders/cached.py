"""DataLoaders whose batch function goes through the Redis cache of field results.

A subclass names its `field` ("overview", "trends", "productivity") and implements
`compute(keys)`: one SQL statement for all the keys it is given, values as JSON-compatible dicts.
Once `cached(resources, versions, context)` has been called on a loader (the per-request registry
does it), its batch function gets the users' data versions from `versions` (the request's user
loader, which already holds the rows: no extra statement), looks every key up with one `MGET`,
calls `compute` with the misses only, and writes them back with one pipelined `SET ... EX`; see
`gateway/cache.py`. A loader never switched on, such as the user loader whose
"today" moves, calls `compute` directly.

`warm_users` fills the cache with the figures a dashboard asks for, under the very keys the
dashboard's resolvers build, so that a warmed key is a hit for the next dashboard request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from aiodataloader import DataLoader

from gateway.cache import QueryCache, cache_of

if TYPE_CHECKING:
    from gateway.context import Context
    from gateway.resources import Resources

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
WARM_BATCH = 200  # users per warming round: one statement per figure for this many users
VersionsOf = Callable[[list[Any]], Awaitable[dict[Any, int]]]
"""Users' `data_version`s by id, read from PostgreSQL for this request (see gateway/cache.py)."""


class CachedLoader(DataLoader[K, V], Generic[K, V]):
    """Base of the cached analytics loaders; keys are `(user_id, *arguments)` tuples."""

    field: ClassVar[str]
    _query_cache: QueryCache | None = None
    _notes: dict[str, Any] | None = None
    _force = False
    _resources: Resources | None = None  # set by `cached`: its replica router picks the pool
    _versions: VersionsOf | None = None

    def cached(self, resources: Resources, versions: VersionsOf,
               context: Context | None = None, *, force: bool = False) -> Self:
        """Route this loader through the process's cache, keyed by the data versions that
        `versions` gives; hits and ages are noted on the request's `context.notes` (for
        `extensions.cache`). `force` recomputes every key and overwrites it (cache warming)."""
        self._query_cache = cache_of(resources)
        self._resources = resources
        self._versions = versions
        self._notes = context.notes if context is not None else None
        self._force = force
        return self

    async def batch_load_fn(self, keys: list[K]) -> list[V]:
        if self._query_cache is None or self._versions is None:
            return list(await self.compute(keys))
        versions = await self._versions(list(dict.fromkeys(k[0] for k in keys)))  # type: ignore[index]
        return await self._query_cache.load(self.field, keys, versions,  # type: ignore[arg-type]
                                            self.compute,  # type: ignore[arg-type]
                                            self._notes, force=self._force)

    async def compute(self, keys: Sequence[K]) -> Sequence[V]:
        """The values of `keys`, in order, computed from PostgreSQL in one statement."""
        raise NotImplementedError


async def warm_users(resources: Resources, user_ids: Iterable[uuid.UUID]) -> int:
    """Compute and store the dashboard figures (overview, the default 30-day DAY trend and the
    default productivity) of these users; returns how many users were warmed.

    The keys are built as the resolvers build them, from each user's local today, so a warmed
    figure is what the dashboard reads. Existing entries are recomputed and their TTL renewed.
    """
    from loaders import analytics  # the analytics loaders build on this module

    ids = list(dict.fromkeys(user_ids))
    warmed = 0
    for start in range(0, len(ids), WARM_BATCH):
        batch = ids[start:start + WARM_BATCH]
        users = [u for u in await analytics.UserLoader(resources.pool).compute(batch)
                 if u is not None]
        if not users:
            continue
        known = {uuid.UUID(u["id"]): int(u["data_version"]) for u in users}

        async def versions(ids: list[Any], known: dict[Any, int] = known) -> dict[Any, int]:
            return {i: known[i] for i in ids}

        overview = analytics.OverviewLoader(resources.pool)
        series = analytics.DailySeriesLoader(resources.pool)
        extras = analytics.ProductivityLoader(resources.pool)
        for loader in (overview, series, extras):
            loader.cached(resources, versions, force=True)
        overview_keys = [(uuid.UUID(u["id"]), u["today"]) for u in users]
        range_keys = [(uuid.UUID(u["id"]), *default_range(u["today"])) for u in users]
        await overview.load_many(overview_keys)
        await series.load_many(range_keys)
        await extras.load_many(range_keys)
        warmed += len(users)
    return warmed


def default_range(today: str) -> tuple[date, date]:
    """The dashboard's default range: the 30 days ending at the user's local today (DAY trends
    and productivity share it)."""
    from loaders.analytics import default_from

    to = date.fromisoformat(today)
    return default_from("DAY", to), to
