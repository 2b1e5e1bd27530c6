"""Per-address rate limits for the native interfaces: a token bucket per key."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RateLimit"]


class RateLimit:
    """At most ``rate`` events a second per key (a token bucket each), for at most ``keys``
    keys at once: past that, the buckets that are full again (their keys quiet for a second
    or more, so forgetting them changes nothing) are dropped, and if that is not enough, the
    half first seen."""

    def __init__(
        self, rate: float, clock: Callable[[], float] = time.monotonic, *, keys: int = 100_000
    ) -> None:
        self.rate = rate
        self.keys = keys
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, when last counted]

    def allows(self, key: str) -> bool:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.keys:
                self._forget(now)
            bucket = self._buckets[key] = [self.rate, now]
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.rate:
            tokens = self.rate
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return True
        bucket[0] = tokens
        return False

    def _forget(self, now: float) -> None:
        full = [k for k, (tokens, then) in self._buckets.items() if now - then >= 1]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.keys:  # a flood from many addresses at once
            for key in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[key]
