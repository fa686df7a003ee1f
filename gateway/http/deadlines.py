"""The request deadline of the HTTP edge (`TIMEOUT` seconds), checked by one timer per event loop
rather than one per request.

Why not `asyncio.timeout`: it arms and cancels a timer per request and, on Python 3.11, asks for
the running loop three times, each a `getpid` system call (python/cpython#100363, gone in 3.12):
about 4 µs of every request, a tenth of a cached answer in process (docs/performance.md). Here a
request costs a dictionary entry; while requests are in flight a timer runs every `RESOLUTION`
seconds and cancels those whose deadline has passed, so a deadline fires up to `RESOLUTION` late
(`TIMEOUT` is whole seconds, 30 by default).

Cancelling works as `asyncio.timeout`'s: the request's task is cancelled, and `Deadline.close`
says whether the `CancelledError` that ends it is the deadline's (the edge then answers 504) or
somebody else's too (the client went away, shutdown: it propagates), by `Task.uncancel`'s count.
"""

from __future__ import annotations

import asyncio

RESOLUTION = 0.5  # seconds between two looks at the deadlines in flight


class Deadlines:
    """The deadlines of the requests in flight on one event loop, all `seconds` long: kept in
    the order they were set, which is the order they fall due."""

    __slots__ = ("loop", "pending", "seconds", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        self.pending: dict[Deadline, float] = {}
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> Deadline:
        """The deadline of the request running in the current task, from now."""
        deadline = Deadline(self, asyncio.current_task(self.loop))
        self.pending[deadline] = self.loop.time() + self.seconds
        if self.timer is None:
            self.timer = self.loop.call_later(RESOLUTION, self._sweep)
        return deadline

    def _sweep(self) -> None:
        self.timer = None
        now = self.loop.time()
        due = []
        for deadline, when in self.pending.items():
            if when > now:  # and so are all those set after it
                break
            due.append(deadline)
        for deadline in due:
            del self.pending[deadline]
            deadline.expire()
        if self.pending:
            self.timer = self.loop.call_later(RESOLUTION, self._sweep)


class Deadline:
    """One request's deadline (`Deadlines.start`)."""

    __slots__ = ("cancelling", "closed", "expired", "owner", "task")

    def __init__(self, owner: Deadlines, task: asyncio.Task[object] | None) -> None:
        if task is None:
            raise RuntimeError("a request deadline needs a task to cancel")
        self.owner = owner
        self.task = task
        self.cancelling = task.cancelling()  # cancellations already asked for, not ours
        self.expired = False
        self.closed: bool | None = None  # what `close` returned, once it has run

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def disarm(self) -> None:
        """No deadline from now on (a response has begun: a streamed body may take longer)."""
        self.owner.pending.pop(self, None)

    def close(self) -> bool:
        """At the request's end, whatever ended it: whether the deadline cancelled the task and
        nothing else did. Only the first call counts (`Task.uncancel` is called once)."""
        if self.closed is None:
            self.disarm()
            self.closed = self.expired and self.task.uncancel() <= self.cancelling
        return self.closed
