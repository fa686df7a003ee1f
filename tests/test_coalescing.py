"""The figure statements of concurrent requests, coalesced (loaders/analytics.py `Coalescer`):
the requests of one event-loop iteration share one `analytics_figures` statement, and each gets
exactly what its own statement would have given it."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from gateway.data.resources import Resources
from loaders.analytics import Coalescer, compute_figures
from tests.factories import UserFactory
from tests.samples import statements_run


async def keys_of(resources: Resources, user_id: Any, days: int) -> dict[str, list[Any]]:
    today = await resources.pool.fetchval(
        "select (now() at time zone timezone)::date from users where id = $1", user_id)
    d_from = today - timedelta(days=days - 1)
    return {"overview": [(user_id, today)], "trends": [(user_id, d_from, today)],
            "productivity": [(user_id, d_from, today)]}


async def test_requests_of_one_moment_share_one_statement_and_get_their_own_figures(
        resources: Resources, users: UserFactory) -> None:
    alice, bob = await users.create(), await users.create(timezone="Asia/Tokyo")
    for user, done in ((alice, 3), (bob, 1)):
        for _ in range(done):
            await users.task(user, status="done", completed_at=datetime.now(UTC))
        await users.task(user)
    asked = [await keys_of(resources, alice.id, 30), await keys_of(resources, bob.id, 7),
             await keys_of(resources, alice.id, 30)]  # the same keys twice: computed once
    alone = [await compute_figures(resources, keys) for keys in asked]
    coalescer = Coalescer(resources)
    before = statements_run(("analytics_figures",))["analytics_figures"]
    together = await asyncio.gather(*(coalescer.compute(keys) for keys in asked))
    assert statements_run(("analytics_figures",))["analytics_figures"] - before == 1
    assert together == alone
    assert together[0]["overview"][0].total_tasks == 4
    assert together[1]["overview"][0].total_tasks == 2


async def test_a_failure_reaches_every_request_and_a_request_gone_is_skipped(
        resources: Resources, users: UserFactory) -> None:
    user = await users.create()
    keys = await keys_of(resources, user.id, 30)
    coalescer = Coalescer(resources)
    results = await asyncio.gather(coalescer.compute(keys), coalescer.compute({"nope": [1]}),
                                   return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results), results
    gone = asyncio.ensure_future(coalescer.compute(keys))
    kept = asyncio.ensure_future(coalescer.compute(keys))
    await asyncio.sleep(0)  # both queued
    gone.cancel()
    assert (await kept)["overview"][0].total_tasks == 0
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_request_alone_runs_as_it_did(resources: Resources, users: UserFactory) -> None:
    user = await users.create()
    await users.task(user, due_date=date.today() - timedelta(days=1))
    keys = await keys_of(resources, user.id, 7)
    assert await Coalescer(resources).compute(keys) == await compute_figures(resources, keys)
