"""DataLoaders, one per batch query, built per request (aiodataloader binds the event loop).

`Loaders` is the per-request registry: each loader is created on first use, so a request only pays
for the loaders it needs. A batch function receives every key asked for in one event-loop tick and
answers them with one SQL statement; the three figure loaders (overview, trends, productivity)
share one batch (`figures`, loaders/cached.py: `SharedBatch`), so that the figures of every kind
asked for in the same ticks cost one MGET and one SQL statement (`analytics_figures`) together.
"""

from __future__ import annotations

from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, TypeVar

import loaders.analytics as analytics
from gateway.cache.fields import cache_of
from loaders.cached import SharedBatch

if TYPE_CHECKING:
    from gateway.data.resources import Resources

F = TypeVar("F", bound="analytics.FigureLoader[Any, Any]")


class Loaders:
    def __init__(self, resources: Resources, notes: dict[str, Any] | None = None,
                 snapshots: analytics.Snapshots | None = None, *, keep: bool = True) -> None:
        self.resources = resources
        self.notes = notes  # the request's notes: cache hits and ages (`extensions.cache`)
        self.snapshots = snapshots  # live pushes: the versions the figures were computed at
        # Whether the figures read or computed are kept in the process (gateway/cache/kept.py):
        # not for live pushes, whose hub keeps the figures it needs (resolvers/live.py), and
        # whose first pushes would otherwise fill it with thousands of idle users' figures.
        self.keep = keep
        self._futures: dict[str, _FuturesByUser] = {}  # the figure loaders' caches, by field

    # Analytics (loaders/analytics.py): created on first use.
    @cached_property
    def user(self) -> analytics.UserLoader:
        return analytics.UserLoader(self.resources.pool)

    @cached_property
    def data_versions(self) -> DataVersions:
        """The users' `data_version`s, which key their cached figures (`DataVersions`)."""
        return DataVersions(self.user)

    @cached_property
    def figures(self) -> SharedBatch:
        """The batch the figure loaders share: one statement for every kind they miss."""
        # A request's statement is shared with the other requests' of the same moment
        # (`Coalescer`). Live pushes run their own: the hub already batches a change's pushes,
        # and their statement may read the versions it saw too (`snapshots`).
        compute = analytics.coalescer_of(self.resources).compute \
            if self.snapshots is None and self.keep \
            else partial(analytics.compute_figures, self.resources, snapshots=self.snapshots)
        return SharedBatch("figures", cache_of(self.resources), self.data_versions, compute,
                           self.notes, keep=self.keep)

    def _figure(self, kind: type[F]) -> F:
        loader = kind(self.resources.pool,
                      cache_map=self._futures.setdefault(kind.field, _FuturesByUser()))
        return loader.cached(self.resources, self.data_versions, self.notes, shared=self.figures)

    @cached_property
    def overview(self) -> analytics.OverviewLoader:
        return self._figure(analytics.OverviewLoader)

    @cached_property
    def daily_series(self) -> analytics.DailySeriesLoader:
        return self._figure(analytics.DailySeriesLoader)

    @cached_property
    def productivity(self) -> analytics.ProductivityLoader:
        return self._figure(analytics.ProductivityLoader)

    # The figure values by (field, key), read and written by live pushes (resolvers/live.py),
    # which update a user's figures from the changes rather than recompute them.

    def figures_of(self, user_id: Any) -> dict[tuple[str, tuple[Any, ...]], Any]:
        """The figure values this request has computed for `user_id`, by (field, key)."""
        values = {}
        for field, futures in self._futures.items():
            for key in futures.keys_of(user_id):
                future = futures.get(key)
                if future is not None and future.done() and not future.cancelled() \
                        and future.exception() is None:
                    values[field, key] = future.result()
        return values

    def prime_figures(self, values: dict[tuple[str, tuple[Any, ...]], Any]) -> None:
        """Give the figure loaders these values, so that asking for them runs no statement."""
        loaders: dict[str, analytics.FigureLoader[Any, Any]] = {
            loader.field: loader
            for loader in (self.overview, self.daily_series, self.productivity)}
        for (field, key), value in values.items():
            loaders[field].prime(key, value)


class _FuturesByUser(dict[Any, Any]):
    """A figure loader's cache (its futures by key, as aiodataloader keeps them), which also
    knows each user's keys: a live batch of thousands of users (a listener's catch-up) asks for
    each user's figures, and scanning every key for each would cost the square of their number."""

    def __init__(self) -> None:
        super().__init__()
        self._by_user: dict[Any, list[Any]] = {}

    def __setitem__(self, key: Any, future: Any) -> None:
        if key not in self:
            self._by_user.setdefault(key[0], []).append(key)
        super().__setitem__(key, future)

    def keys_of(self, user_id: Any) -> list[Any]:
        """The keys of `user_id` ever set (one since removed is no longer in the cache)."""
        return self._by_user.get(user_id, [])


class DataVersions:
    """The users' `data_version`s, which key their cached figures: from the user loader, so from
    rows this request has already read (resolvers load the user before its figures).

    An object of its own rather than a method of `Loaders`: the figure loaders and the shared
    batch keep it, and a bound method would keep the registry that keeps them, a reference
    cycle. Every request's loaders, futures and figures then waited for one of the garbage
    collector's full passes, which `tune_gc` spaces out (gateway/ops/runtime.py): 64 admin pages
    at a time (100 users' overviews each) grew the API to 262 MiB (docs/performance.md)."""

    __slots__ = ("user",)

    def __init__(self, user: analytics.UserLoader) -> None:
        self.user = user

    async def __call__(self, user_ids: list[Any]) -> dict[Any, int]:
        users = await self.user.load_many(user_ids)
        # A user deleted meanwhile has no figures to cache; -1 never matches a stored version.
        return {uid: u.data_version if u is not None else -1
                for uid, u in zip(user_ids, users, strict=True)}
