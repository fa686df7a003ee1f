"""DataLoaders, one per batch query, built per request (aiodataloader binds the event loop).

`Loaders` is the per-request registry: each loader is created on first use, so a request only pays
for the loaders it needs. A batch function receives every key asked for in one event-loop tick and
answers them with one SQL statement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.context import Context
    from gateway.resources import Resources


class Loaders:
    def __init__(self, resources: Resources, context: Context) -> None:
        self.resources = resources
        self.context = context
