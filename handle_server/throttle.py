"""Failed-authentication throttling: after ``limit`` failures within ``window`` seconds for one
key (an identity, or a client address), that key is refused until the window has passed.

Keys are counted separately, so guessing the secret of one identity from one address slows
down only that identity and that address; other identities and other clients are untouched.
The counts live in the store, so every process and node on it counts together: spreading the
guesses over the nodes of a cluster does not buy more of them. The check runs before any secret
is hashed, so a throttled guesser costs no CPU either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from storage import HandleStore

__all__ = ["FailureThrottle"]


class FailureThrottle:
    def __init__(
        self,
        store: HandleStore,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.limit = limit
        self.window = window
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    async def retry_after(self, keys: Sequence[str]) -> float | None:
        """Seconds until the first of ``keys`` that is throttled may try again, or ``None``."""
        if not self.enabled or not keys:
            return None
        now = self._clock()
        counted = await self._store.failures(keys, since=now - self.window)
        waits = [first + self.window - now for first, n in counted.values() if n >= self.limit]
        return max(waits) if waits else None

    async def failed(self, keys: Sequence[str]) -> None:
        if not self.enabled or not keys:
            return
        now = self._clock()
        await self._store.add_failure(keys, now=now, since=now - self.window)
