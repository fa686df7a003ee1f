"""The edge's request deadlines (gateway/http/deadlines.py): one timer per loop, cancelling as
`asyncio.timeout` does. The whole edge's 504 and 503 are in tests/test_timeouts.py."""

from __future__ import annotations

import asyncio

import pytest

from gateway.http import deadlines
from gateway.http.deadlines import Deadline, Deadlines


@pytest.fixture(autouse=True)
def fast_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadlines, "RESOLUTION", 0.01)


async def _request(owner: Deadlines, work: float) -> tuple[str, Deadline]:
    """A request of `work` seconds under a deadline, ended as the edge ends it."""
    deadline = owner.start()
    try:
        try:
            await asyncio.sleep(work)
        except asyncio.CancelledError as exc:
            if deadline.close():
                raise TimeoutError from exc
            raise
        finally:
            deadline.close()
    except TimeoutError:
        return "deadline", deadline
    return "answered", deadline


async def test_only_the_requests_past_their_deadline_are_cancelled() -> None:
    owner = Deadlines(asyncio.get_running_loop(), 0.05)
    results = await asyncio.gather(_request(owner, 5), _request(owner, 0.001),
                                   _request(owner, 5))
    assert [outcome for outcome, _ in results] == ["deadline", "answered", "deadline"]
    assert results[0][1].expired and not results[1][1].expired
    assert owner.pending == {}
    await asyncio.sleep(0.03)
    assert owner.timer is None  # nothing in flight: no timer left behind


async def test_a_disarmed_deadline_never_fires() -> None:
    owner = Deadlines(asyncio.get_running_loop(), 0.02)
    deadline = owner.start()
    deadline.disarm()  # a response has begun
    await asyncio.sleep(0.1)
    assert not deadline.expired
    assert deadline.close() is False


async def _cancelled_request(owner: Deadlines, also_cancelled: bool) -> bool:
    """What `close` says of a request cancelled by its deadline, and by somebody else too."""
    seen: list[bool] = []

    async def request() -> None:
        deadline = owner.start()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen.append(deadline.close())
            raise

    task = asyncio.create_task(request())
    await asyncio.sleep(0)  # the request has begun
    next(iter(owner.pending)).expire()  # its deadline passes
    if also_cancelled:
        task.cancel()  # and the client goes away (or the server shuts down) at that moment
    with pytest.raises(asyncio.CancelledError):
        await task
    return seen[0]


async def test_another_cancellation_is_not_taken_for_the_deadline() -> None:
    """As with `asyncio.timeout`: the deadline's own cancellation becomes the 504, but when
    somebody else cancelled the request too, it stays cancelled."""
    owner = Deadlines(asyncio.get_running_loop(), 60)
    assert await _cancelled_request(owner, also_cancelled=False) is True
    assert await _cancelled_request(owner, also_cancelled=True) is False


async def test_a_deadline_made_on_another_loop_is_not_reused() -> None:
    """The edge keeps one `Deadlines` per loop (the tests run the app on several)."""
    from gateway.http.middleware import EdgeMiddleware
    from gateway.ops.metrics import RequestMetrics
    from gateway.ops.settings import Settings

    edge = EdgeMiddleware(lambda *a: None, Settings.load(), RequestMetrics(["/graphql"]))
    first = edge._deadlines()
    assert edge._deadlines() is first
    other = asyncio.new_event_loop()
    try:
        edge.deadlines = Deadlines(other, 1)  # as left by another loop
        assert edge._deadlines().loop is asyncio.get_running_loop()
    finally:
        other.close()
