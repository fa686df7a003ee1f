"""DataLoaders, one per batch query, built per request (aiodataloader binds the event loop).

`Loaders` is the per-request registry: each loader is created on first use, so a request only pays
for the loaders it needs. A batch function receives every key asked for in one event-loop tick and
answers them with one SQL statement.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from loaders import analytics

if TYPE_CHECKING:
    from gateway.context import Context
    from gateway.resources import Resources


class Loaders:
    def __init__(self, resources: Resources, context: Context) -> None:
        self.resources = resources
        self.context = context

    # Analytics (loaders/analytics.py): created on first use.
    @cached_property
    def user(self) -> analytics.UserLoader:
        return analytics.UserLoader(self.resources.pool)

    @cached_property
    def overview(self) -> analytics.OverviewLoader:
        return analytics.OverviewLoader(self.resources.pool).cached(
            self.resources, self.context)

    @cached_property
    def daily_series(self) -> analytics.DailySeriesLoader:
        return analytics.DailySeriesLoader(self.resources.pool).cached(
            self.resources, self.context)

    @cached_property
    def productivity(self) -> analytics.ProductivityLoader:
        return analytics.ProductivityLoader(self.resources.pool).cached(
            self.resources, self.context)
