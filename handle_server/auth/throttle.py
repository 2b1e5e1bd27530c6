"""Failed-authentication throttling: after ``limit`` failures within ``window`` seconds for one
key, that key is refused until the window has passed (``Authenticator`` says which keys: an
identity guessed from one client address, and a client address for requests that name no
identity).

The counts live in the store, so every process and node on it counts together: spreading the
guesses over the nodes of a cluster does not buy more of them. The check runs before any secret
is hashed, so a throttled guesser costs no CPU either; attempts still being checked count as
failures until they are decided (``pending``), so a burst of concurrent guesses cannot all slip
past the count before the first of them is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

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

    async def retry_after(
        self, keys: Sequence[str], pending: Mapping[str, int] | None = None
    ) -> float | None:
        """Seconds until the first of ``keys`` that is throttled may try again, or ``None``.
        ``pending``: attempts of a key not decided yet, counted as failures."""
        if not self.enabled or not keys:
            return None
        # Taken before the read: an attempt decided meanwhile may be missing from what the
        # read returns, and must then still count as pending.
        undecided = {key: (pending or {}).get(key, 0) for key in keys}
        now = self._clock()
        counted = await self._store.failures(keys, since=now - self.window)
        waits = []
        for key in keys:
            first, n = counted.get(key, (now, 0))
            if n + undecided[key] >= self.limit:
                waits.append(first + self.window - now if n >= self.limit else 1.0)
        return max(waits) if waits else None

    async def failed(self, keys: Sequence[str]) -> None:
        if not self.enabled or not keys:
            return
        now = self._clock()
        await self._store.add_failure(keys, now=now, since=now - self.window)
