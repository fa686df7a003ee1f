"""What happens after a user's tasks or profile change, in one place.

Mutations call `tasks_changed` after their transaction commits. The cache layer bumps the user's
cache version here (so the next read misses), and the worker layer enqueues the repair of the
rollup days that the change marked stale. Each step is best effort: a Redis outage must not fail
a mutation that PostgreSQL has already committed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import date

from gateway.resources import Resources

log = logging.getLogger(__name__)


async def tasks_changed(resources: Resources, user_id: uuid.UUID,
                        stale_days: Iterable[date] = ()) -> None:
    """A user's tasks (or the profile fields analytics depend on) changed and were committed."""
    # Filled in by the cache issue (version bump) and the workers issue (stale-day repair job).
    return None
