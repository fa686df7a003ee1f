"""A request leaves no reference cycles behind.

The API spaces out the garbage collector's passes (`tune_gc`, gateway/ops/runtime.py): whatever a
request leaves in a reference cycle waits for a full pass, and under concurrency the process grows
with it. A bound method of the per-request `Loaders` kept by its own loaders made every request's
loaders, futures and figures such a cycle (64 admin pages at a time grew the API from 80 to
262 MiB, docs/performance.md), and so did every operation graphql-core executed (its context's
helpers are bound methods of the context: schema/live.py). Here each kind of request runs
with the collector saving what it finds (`gc.DEBUG_SAVEALL`), and nothing may be found.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from gateway.dev.asgi import post_graphql
from gateway.ops.settings import Settings
from tests.factories import UserFactory

DASHBOARD = """{ overview { totalTasks completionRate statusDistribution { todo done } }
  trends(period: DAY) { points { date tasksCreated } } productivity { score currentStreak } }"""
ADMIN_PAGE = """{ users(first: 100) { edges { node { id overview { totalTasks
  priorityDistribution { high } } } } } }"""
CREATE = """mutation { createTask(input: {title: "cycle", priority: HIGH}) { id status } }"""


async def _post(app: Any, token: str, query: str) -> dict[str, Any]:
    """One POST /graphql through the ASGI application itself (no HTTP client whose own objects
    would count)."""
    status, body = await post_graphql(app, orjson.dumps({"query": query}), token)
    assert status == 200, body
    answer: dict[str, Any] = orjson.loads(body)
    assert "errors" not in answer, answer
    return answer


@pytest.mark.parametrize("cache", [False, True], ids=["uncached", "cached"])
async def test_requests_leave_no_reference_cycles(
        cache: bool, settings: Settings, users: UserFactory, app_with: Callable[..., Any],
        token_for: Callable[..., str]) -> None:
    admin = await users.create(role="admin")
    people = [await users.create() for _ in range(3)]
    for person in people:
        await users.task(person, status="done", priority="high",
                         completed_at=datetime.now(UTC) - timedelta(hours=1))
    requests = [(token_for(admin.id, "admin"), ADMIN_PAGE),
                *((token_for(person.id), DASHBOARD) for person in people),
                (token_for(people[0].id), CREATE)]
    async with app_with(settings, enable_query_cache=cache) as client:
        app = client.app
        for token, query in requests:  # first uses: plans, statements, pools' connections
            await _post(app, token, query)
        gc.collect()
        # Everything that exists now is held until the check: only what the requests make can
        # become garbage in between. Otherwise a socket of an earlier test, closed by its peer
        # meanwhile, showed up (asyncio's socket transport keeps a bound method of itself).
        existing = gc.get_objects()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(2):  # the second time served as a repeat is (cached, kept)
                for token, query in requests:
                    await _post(app, token, query)
            gc.collect()
            garbage = Counter(type(found).__qualname__ for found in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            del existing
    assert not garbage, f"left in reference cycles: {garbage.most_common(12)}"
