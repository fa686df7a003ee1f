"""Cache warming: the dashboard figures of many users computed and stored ahead of the requests.

`warm_users` fills the cache with the figures a dashboard asks for, under the very keys the
dashboard's resolvers build, so that a warmed key is a hit for the next dashboard request. The
workers' `warm_cache` job calls it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import loaders.analytics as analytics
from domain.ranges import default_range
from gateway.cache.fields import cache_of
from loaders.cached import SharedBatch

if TYPE_CHECKING:
    from gateway.data.resources import Resources

WARM_BATCH = 200  # users per warming round: one statement for all their figures


async def warm_users(resources: Resources, user_ids: Iterable[uuid.UUID]) -> int:
    """Compute and store the dashboard figures (overview, the default 30-day DAY trend and the
    default productivity) of these users; returns how many users were warmed.

    The keys are built as the resolvers build them, from each user's local today, so a warmed
    figure is what the dashboard reads. Existing entries are recomputed and their TTL renewed.
    """
    ids = list(dict.fromkeys(user_ids))
    warmed = 0
    for start in range(0, len(ids), WARM_BATCH):
        batch = ids[start:start + WARM_BATCH]
        users = [u for u in await analytics.UserLoader(resources.pool).compute(batch)
                 if u is not None]
        if not users:
            continue
        known = {u.id: u.data_version for u in users}

        async def versions(ids: list[Any], known: dict[Any, int] = known) -> dict[Any, int]:
            return {i: known[i] for i in ids}

        # The three kinds through one shared batch, as a request's loaders: one statement.
        shared = SharedBatch("figures", cache_of(resources), versions,
                             partial(analytics.compute_figures, resources), force=True)
        overview = analytics.OverviewLoader(resources.pool)
        series = analytics.DailySeriesLoader(resources.pool)
        extras = analytics.ProductivityLoader(resources.pool)
        for loader in (overview, series, extras):
            loader.cached(resources, versions, force=True, shared=shared)
        overview_keys = [(u.id, u.today) for u in users]
        # The dashboard's default range: the DAY window ending at the user's local today (DAY
        # trends and productivity share it).
        range_keys = [(u.id, *default_range("DAY", u.today)) for u in users]
        await asyncio.gather(overview.load_many(overview_keys), series.load_many(range_keys),
                             extras.load_many(range_keys))
        warmed += len(users)
    return warmed

