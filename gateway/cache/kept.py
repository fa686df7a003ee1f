"""What a process keeps of the cache in its own memory: a bounded LRU of entries that expire.

Every cache key names the user's data version (docs/cache.md), so the value under a key never
changes: one kept here is exactly what Redis holds under the same key, and using it asks Redis
nothing. The field cache keeps decoded figures (gateway/cache/fields.py), the response cache
whole answers (gateway/http/response_cache.py); both are bounded by `CACHE_LOCAL_ENTRIES`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class Kept(Generic[V]):
    """At most `size` entries (0: none), the least recently used dropped first, none returned
    at or after its `expires_at` (the caller's clock, in seconds)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        return list(self._entries)

    def get(self, key: str, now: float) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if now >= found[1]:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: str, value: V, expires_at: float) -> None:
        if not self.size:
            return
        self._entries[key] = (value, expires_at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
