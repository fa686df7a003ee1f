"""A circuit breaker for a dependency that is allowed to fail, such as the cache's Redis.

A hung Redis costs every command its full socket timeout. After one failure the breaker opens and
callers skip Redis outright for `cooldown` seconds; then exactly one caller is let through as a
probe (half-open). The probe's success closes the breaker, its failure opens it for another
cooldown. So while Redis is down or hangs, the service pays the timeout about once per cooldown,
not once per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class Permit(Enum):
    """Why a call was allowed: the breaker was closed, or this call is the half-open probe."""

    CLOSED = "closed"
    PROBE = "probe"


class CircuitBreaker:
    """Closed → (failure) → open for `cooldown` s → one probe → closed or open again.

    Not thread-safe; it lives in one event loop, like the client it guards.
    """

    def __init__(self, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._opened_at: float | None = None
        self._probing = False

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

    def success(self) -> None:
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._opened_at = self._clock()
        self._probing = False

    def abandon(self, permit: Permit) -> None:
        """A call ended without a verdict (it was cancelled): let the next caller probe."""
        if permit is Permit.PROBE:
            self._probing = False
