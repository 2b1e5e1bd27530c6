"""Failed-authentication throttling: after ``limit`` failures within ``window`` seconds for one
key (an identity, or a client address), that key is refused until the window has passed.

Keys are counted separately, so guessing the secret of one identity from one address slows
down only that identity and that address; other identities and other clients are untouched.
The check runs before any secret is hashed, so a throttled guesser costs no CPU either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable

from cachetools import TTLCache

__all__ = ["FailureThrottle"]


class FailureThrottle:
    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        # key -> [first failure time, failures]; an entry lives one window after its first
        # failure, and the table holds at most ``max_keys`` (the oldest go first).
        self._failures: TTLCache[Hashable, list] = TTLCache(
            maxsize=max_keys, ttl=max(window, 1e-3), timer=clock
        )

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def retry_after(self, keys: Iterable[Hashable]) -> float | None:
        """Seconds until the first of ``keys`` that is throttled may try again, or ``None``."""
        if not self.enabled:
            return None
        now = self._clock()
        waits = []
        for key in keys:
            entry = self._failures.get(key)
            if entry is not None and entry[1] >= self.limit:
                waits.append(entry[0] + self.window - now)
        return max(waits) if waits else None

    def failed(self, keys: Iterable[Hashable]) -> None:
        if not self.enabled:
            return
        now = self._clock()
        for key in keys:
            entry = self._failures.get(key)
            if entry is None:
                self._failures[key] = [now, 1]
            else:
                entry[1] += 1
