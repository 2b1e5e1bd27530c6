"""Per-address rate limits for the native interfaces: a token bucket per key."""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import LRUCache

__all__ = ["RateLimit"]


class RateLimit:
    """At most ``rate`` events a second per key (a token bucket each)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: LRUCache[str, tuple[float, float]] = LRUCache(100_000)

    def allows(self, key: str) -> bool:
        now = self._clock()
        tokens, then = self._buckets.get(key, (self.rate, now))
        tokens = min(self.rate, tokens + (now - then) * self.rate)
        allowed = tokens >= 1
        self._buckets[key] = (tokens - 1 if allowed else tokens, now)
        return allowed
