"""Page anchors: where the listing pages of a prefix start, so that a page deep in a prefix is
an index seek, not a skip of every row before it."""

from __future__ import annotations

import asyncio
import bisect

from .model import prefix_of
from .rows import prefix_bounds

__all__ = ["LONG_SKIP", "PageAnchors"]

#: Rows a listing skips (from the nearest anchor) beyond which it skips alone.
LONG_SKIP = 10_000


class PageAnchors:
    """Where listing pages start: for a prefix's lower bound and an offset, the key just before
    the handle at that offset. Told of every change (a ``ChangeListener``), it forgets the
    anchors of the prefix changed: a handle created or deleted moves every page after it. An
    anchor read before such a change is not remembered after it (``generation``)."""

    _MAX_PER_PREFIX = 4096

    def __init__(self) -> None:
        self._offsets: dict[str, list[int]] = {}  # sorted
        self._keys: dict[tuple[str, int], str] = {}
        self._generations: dict[str, int] = {}
        self._epoch = 0  # moved by a change of any handle: every prefix's generation moves
        self._skips: dict[str, asyncio.Lock] = {}

    def skipping(self, low: str) -> asyncio.Lock:
        """Held while a listing of the prefix skips a long way."""
        return self._skips.setdefault(low, asyncio.Lock())

    def generation(self, low: str) -> int:
        # Both counts only grow, so their sum moves whenever either does.
        return self._epoch + self._generations.get(low, 0)

    def nearest(self, low: str, offset: int) -> tuple[int, str | None]:
        """The anchor at or before ``offset``: ``(its offset, key)``, or ``(0, None)``."""
        offsets = self._offsets.get(low)
        if offsets:
            at = bisect.bisect_right(offsets, offset) - 1
            if at >= 0:
                return offsets[at], self._keys[(low, offsets[at])]
        return 0, None

    def remember(self, low: str, offset: int, key: str, generation: int) -> None:
        if generation != self.generation(low) or (low, offset) in self._keys:
            return
        offsets = self._offsets.setdefault(low, [])
        if len(offsets) >= self._MAX_PER_PREFIX:
            self._forget(low)
            offsets = self._offsets.setdefault(low, [])
        bisect.insort(offsets, offset)
        self._keys[(low, offset)] = key

    def _forget(self, low: str) -> None:
        for offset in self._offsets.pop(low, []):
            del self._keys[(low, offset)]

    def changed(self, key: str | None) -> None:
        if key is None:  # also for prefixes with a listing in flight and no anchor yet
            self._epoch += 1
            self._offsets.clear()
            self._keys.clear()
            return
        low = prefix_bounds(prefix_of(key))[0]
        self._generations[low] = self._generations.get(low, 0) + 1
        self._forget(low)

    def watching(self, live: bool) -> None:
        self.changed(None)
