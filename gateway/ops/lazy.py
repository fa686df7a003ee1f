"""Objects made on first use and kept on their owner: the process's query cache, read router and
statement coalescer live on the lifespan's `Resources` (or a test's stand-in for it) without the
lower layers importing `Resources` or the lifespan making what a process may never use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def kept_on(owner: Any, name: str, make: Callable[[], T]) -> T:
    """`owner.<name>`, made by `make()` and set there the first time it is asked for."""
    value: T | None = getattr(owner, name, None)
    if value is None:
        value = make()
        setattr(owner, name, value)
    return value
