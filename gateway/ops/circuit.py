"""A circuit breaker for a dependency that is allowed to fail, such as the cache's Redis.

A hung Redis costs every command its full socket timeout. After one failure the breaker opens and
callers skip Redis outright for `cooldown` seconds; then exactly one caller is let through as a
probe (half-open). The probe's success closes the breaker, its failure opens it for another
cooldown. So while Redis is down or hangs, the service pays the timeout about once per cooldown,
not once per request.

`CircuitBreaker.call` runs one call through the breaker and bounds what it may cost:

- `timeout`: the whole call (waiting for a slot, a connection, connecting, the command) gets this
  long, whatever the client does inside (redis-py 5 connects under its pool's lock, so calls on a
  hung server would otherwise queue behind each other's connect, one timeout each);
- when a call fails and opens the breaker, every other call still waiting on the dependency is
  cut short at once (`CircuitOpen`): they would only fail the same way, one after another;
- `max_concurrent`: at most this many calls in flight (redis-py's pool raises rather than waits
  when it runs out of connections, which would open the breaker under load).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TypeVar

from gateway.ops import tracing

log = logging.getLogger(__name__)

T = TypeVar("T")


# A deadline that fires this much later than due says the event loop was busy: a timeout then
# is no verdict on the dependency (see `CircuitBreaker.call`).
LOOP_LAG_TOLERANCE = 0.05


class Permit(Enum):
    """Why a call was allowed: the breaker was closed, or this call is the half-open probe."""

    CLOSED = "closed"
    PROBE = "probe"


class CircuitOpen(Exception):
    """The call was not made, or cut short: the breaker is open (or opened while it waited)."""


@dataclass
class BreakerStats:
    """What `CircuitBreaker.call` did, since the breaker was made (for metrics and tests)."""

    calls: int = 0         # calls let through (closed or probe)
    probes: int = 0        # of which half-open probes
    succeeded: int = 0
    failed: int = 0        # reached the dependency and failed (error or timeout)
    aborted: int = 0       # cut short because another call failed and opened the breaker
    skipped: int = 0       # refused at once: the breaker was open
    congested: int = 0     # gave up waiting for a slot (this process was busy): no verdict
    longest_wait: float = 0.0  # the longest any call spent in `call`, seconds

    @property
    def waited(self) -> int:
        """Calls that waited on the dependency and got no answer."""
        return self.failed + self.aborted

    def snapshot(self) -> dict[str, float]:
        return {**asdict(self), "waited": self.waited}


class _Waiter:
    """A call in flight: its deadline, which `failure` moves to now to cut it short."""

    __slots__ = ("aborted", "scope")

    def __init__(self, scope: asyncio.Timeout) -> None:
        self.scope = scope
        self.aborted = False


class CircuitBreaker:
    """Closed → (failure) → open for `cooldown` s → one probe → closed or open again.

    Not thread-safe; it lives in one event loop, like the client it guards.
    """

    def __init__(self, cooldown: float, clock: Callable[[], float] = time.monotonic, *,
                 timeout: float | None = None, max_concurrent: int | None = None,
                 name: str = "dependency") -> None:
        self.cooldown = cooldown
        self.timeout = timeout
        self.name = name
        self.stats = BreakerStats()
        self._clock = clock
        self._opened_at: float | None = None
        self._failed_at: float | None = None
        self._probing = False
        self._max_concurrent = max_concurrent
        self._slots: asyncio.Semaphore | None = None
        self._waiting: set[_Waiter] = set()
        self._answered_since = float("-inf")  # loop time of the last call that succeeded

    @property
    def is_open(self) -> bool:
        """True while calls are being skipped (including while a probe is out)."""
        return self._opened_at is not None

    def allow(self) -> Permit | None:
        """A permit to call the dependency now, or None to skip it.

        When the cooldown has passed, the first caller gets `Permit.PROBE` and everyone else keeps
        skipping until that probe reports back through `success`, `failure` or `abandon`.
        """
        if self._opened_at is None:
            return Permit.CLOSED
        if self._probing or self._clock() - self._opened_at < self.cooldown:
            return None
        self._probing = True
        return Permit.PROBE

    def still_allowed(self, permit: Permit) -> bool:
        """Whether a permit taken earlier is still good (another call may have failed since)."""
        return permit is Permit.PROBE or self._opened_at is None

    def failed_within(self, seconds: float) -> bool:
        """Whether a call failed in the last `seconds` (the dependency may have lost writes)."""
        return self._failed_at is not None and self._clock() - self._failed_at < seconds

    def success(self, permit: Permit | None = None) -> None:
        """A call answered. A call let through while closed that answers after the breaker
        opened does not close it: only the probe's answer does."""
        if permit is Permit.CLOSED and self._opened_at is not None:
            return
        self._opened_at = None
        self._probing = False

    def failure(self, permit: Permit | None = None) -> None:
        """A call failed: open the breaker (again) for a cooldown, and cut short every other call
        still waiting on the dependency. A call let through while closed that fails after the
        breaker opened changes nothing (a probe may be out)."""
        now = self._clock()
        self._failed_at = now
        if permit is Permit.CLOSED and self._opened_at is not None:
            return
        self._opened_at = now
        self._probing = False
        self._abort_waiting()

    def abandon(self, permit: Permit) -> None:
        """A call ended without a verdict (it was cancelled): let the next caller probe."""
        if permit is Permit.PROBE:
            self._probing = False

    def _abort_waiting(self) -> None:
        for waiter in self._waiting:
            if waiter.aborted:
                continue
            waiter.aborted = True
            try:
                waiter.scope.reschedule(asyncio.get_running_loop().time())
            except RuntimeError:  # its own deadline is passing right now, or no loop runs
                pass

    async def call(self, op: Callable[[], Awaitable[T]],
                   failures: tuple[type[BaseException], ...], *, span: str | None = None) -> T:
        """`await op()` through the breaker: `CircuitOpen` when skipped or cut short, the
        exception of `op` (one of `failures`, or `TimeoutError` past `timeout`) when it failed,
        which opens the breaker. Any other exception (a bug, a cancellation) is no verdict.
        `span` names the call's CLIENT span when tracing records (a Redis command's name)."""
        permit = self.allow()
        if permit is None:
            self.stats.skipped += 1
            raise CircuitOpen(f"{self.name}: circuit open")
        self.stats.calls += 1
        if permit is Permit.PROBE:
            self.stats.probes += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiter: _Waiter | None = None
        reached = False  # past the wait for a slot: a timeout from here on is the dependency's
        reached_at = float("inf")
        deadline = None if self.timeout is None else started + self.timeout
        try:
            try:
                async with asyncio.timeout_at(deadline) as scope:
                    waiter = _Waiter(scope)
                    self._waiting.add(waiter)
                    if self._max_concurrent is None:
                        reached, reached_at = True, loop.time()
                        result = await self._reach(op, permit, span)
                    else:
                        if self._slots is None:
                            self._slots = asyncio.Semaphore(self._max_concurrent)
                        async with self._slots:
                            reached, reached_at = True, loop.time()
                            if self.timeout is not None and not waiter.aborted:
                                # The dependency gets its whole timeout from here: a slot
                                # waited for is this process's queue, not the dependency's.
                                deadline = loop.time() + self.timeout
                                scope.reschedule(deadline)
                            result = await self._reach(op, permit, span)
            finally:
                if waiter is not None:
                    self._waiting.discard(waiter)
                self.stats.longest_wait = max(self.stats.longest_wait, loop.time() - started)
        except CircuitOpen:  # it opened while this call waited for a slot
            self.stats.aborted += 1
            self.abandon(permit)
            raise
        except BaseException as exc:
            if waiter is not None and waiter.aborted and isinstance(exc, Exception):
                # cut short because another call failed: no verdict of its own
                self.stats.aborted += 1
                self.abandon(permit)
                raise CircuitOpen(f"{self.name}: circuit opened while waiting") from None
            if isinstance(exc, TimeoutError) and (
                    not reached or self._answered_since > reached_at or (
                        deadline is not None
                        and loop.time() - deadline > LOOP_LAG_TOLERANCE)):
                # No slot came in time; or the dependency answered other calls while this one
                # waited (it is alive: this process was too busy to read the answer in time);
                # or the deadline fired late because the event loop was busy. Either way this
                # process is congested, which says nothing about the dependency. A miss for
                # this call; the breaker stays as it is.
                self.stats.congested += 1
                self.abandon(permit)
                raise CircuitOpen(f"{self.name}: no answer in time (process busy)") from None
            if isinstance(exc, (TimeoutError, *failures)):  # past `timeout`, or `op` failed
                self._failed(permit, exc)
            else:  # a bug or a cancellation: no verdict on the dependency
                self.abandon(permit)
            raise
        self.stats.succeeded += 1
        self._answered_since = loop.time()
        self.success(permit)
        return result

    async def _reach(self, op: Callable[[], Awaitable[T]], permit: Permit,
                     span: str | None) -> T:
        if not self.still_allowed(permit):
            raise CircuitOpen(f"{self.name}: circuit opened while waiting")
        if span is None:
            return await op()
        with tracing.redis_span(span):  # a span only under a recording one (tracing.py)
            return await op()

    def _failed(self, permit: Permit, exc: BaseException) -> None:
        self.stats.failed += 1
        if permit is Permit.PROBE or self._opened_at is None:
            log.warning("%s failed, skipping it for %.0f s: %s", self.name, self.cooldown,
                        type(exc).__name__)
        self.failure(permit)
