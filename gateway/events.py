"""What happens after a user's tasks or profile change, in one place.

Mutations call `tasks_changed` after their transaction commits. The cache needs nothing here:
the transaction itself raised the user's `data_version` (a trigger), which keys every cached
figure and response (docs/cache.md). What follows is the replica's read-your-writes record and
the worker layer's repair of the rollup days that the change marked stale. Each step is best
effort: a Redis outage must not fail a mutation that PostgreSQL has already committed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import date

from gateway.redis import breaker_for
from gateway.replica import record_write
from gateway.resources import Resources

log = logging.getLogger(__name__)


async def tasks_changed(resources: Resources, user_id: uuid.UUID,
                        stale_days: Iterable[date] = (), *, rollup_reset: bool = False) -> None:
    """A user's tasks (or the profile fields analytics depend on) changed and were committed.

    `rollup_reset` says the change deleted the user's whole rollup (a new timezone moves every
    local day): a rebuild of their history is queued, or the nightly run would only redo yesterday.
    """
    # With a read replica, this user's reads go to the primary until the replica has replayed
    # this change, so that figures recomputed under the new data version include it.
    await record_write(resources, [user_id])
    # While the cache path's breaker is open (Redis down or hung), a repair is not even tried:
    # it would cost the mutation up to a second, and the nightly run repairs what is left
    # (stale days are computed live meanwhile, so no answer is wrong).
    redis_down = breaker_for(resources.cache_redis, resources.settings).is_open
    if any(True for _ in stale_days) and not redis_down:
        # One repair job per user (deterministic id); never raises, Redis down only costs speed.
        from workers.jobs import enqueue_repair

        await enqueue_repair(resources.arq, user_id)
    if rollup_reset:
        from workers.jobs import enqueue_rebuild

        await enqueue_rebuild(resources.arq, user_id)
    return None
