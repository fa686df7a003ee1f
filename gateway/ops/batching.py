"""Calls made in one event-loop iteration, answered together by one call.

Used where many requests of a process ask for the same kind of I/O at the same moment: the field
cache's `MGET`s (gateway/cache/fields.py), the figure statements of concurrent requests
(loaders/analytics.py, `Coalescer`). `answer` (and `fail_waiters` in it) is also how the
loaders' shared batches answer their loaders (loaders/cached.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def fail_waiters(futures: Iterable[asyncio.Future[Any]], exc: BaseException) -> None:
    """Every waiter not yet answered gets the failure, or is cancelled when it is not an
    `Exception` (a cancellation): nobody hangs. The exception is marked retrieved, since a waiter
    may be gone (a request that timed out) and would leave a warning."""
    for future in futures:
        if not future.done():
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()
            else:
                future.cancel()


async def answer(queue: Sequence[tuple[T, asyncio.Future[R]]],
                 run: Callable[[list[T]], Awaitable[Sequence[R]]]) -> None:
    """Answer each waiter of `queue` with its item's result of ONE `run(items)` call (results in
    the items' order); a waiter whose caller is gone is skipped. A failure of `run` reaches
    every waiter (`fail_waiters`), and a cancellation is raised on after."""
    try:
        results = await run([item for item, _ in queue])
    except BaseException as exc:
        fail_waiters((future for _, future in queue), exc)
        if not isinstance(exc, Exception):
            raise
        return
    for (_, future), result in zip(queue, results, strict=True):
        if not future.done():
            future.set_result(result)


class TickBatcher(Generic[T, R]):
    """`submit(item)` calls of one event-loop iteration, answered by ONE `run(items)` call, which
    returns their results in the same order. A failure of `run` reaches each of them; one whose
    caller is gone is skipped."""

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]]) -> None:
        self._run = run
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # the batches running (kept referenced)

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        task = asyncio.ensure_future(answer(queue, self._run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
