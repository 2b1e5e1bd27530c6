"""Page anchors: where the listing pages of a prefix start, so that a page deep in a prefix is
an index seek, not a skip of every row before it."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from .model import prefix_of
from .rows import prefix_bounds

__all__ = ["LONG_SKIP", "PageAnchors", "Rows", "paged"]

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
        self.prefix_changed(prefix_of(key))

    def prefix_changed(self, prefix: str) -> None:
        """A handle under ``prefix`` came or went."""
        low = prefix_bounds(prefix)[0]
        self._generations[low] = self._generations.get(low, 0) + 1
        self._forget(low)

    def watching(self, live: bool) -> None:
        self.changed(None)


#: A backend's page read: ``(key, handle)`` rows of the prefix, ``size`` of them after the key
#: ``after`` (from the prefix's start when ``None``), skipping ``skip`` first.
Rows = Callable[[str | None, int, int], Awaitable[Sequence[Sequence[str]]]]


async def paged(
    rows: Rows,
    anchors: PageAnchors | None,
    low: str,
    *,
    offset: int,
    limit: int | None,
    batch: int,
    long_skip: int = LONG_SKIP,
) -> AsyncIterator[list[str]]:
    """The handles of the prefix whose keys start at ``low``, from ``offset``, at most
    ``limit``, in lists of ``batch``: read by key, each page after the last key of the one
    before. With ``anchors`` the start of every page served is remembered, so the same or a
    following page is an index seek instead of a skip of ``offset`` rows; a long skip is made
    by one listing of a prefix at a time, the others asking meanwhile wait for its anchor.
    Without (a store that cannot tell when other processes move pages), each deep page skips
    from the prefix's start."""
    generation = anchors.generation(low) if anchors is not None else 0

    async def skip_to(start: int, after: str | None) -> str | None:
        """The key just before the handle at ``offset``, from the anchor ``(start, after)``
        (remembered: it anchors this page next time); ``None``: no handle there."""
        if offset == start:
            return after
        first = await rows(after, 1, offset - start - 1)
        if not first:
            return None
        if anchors is not None:
            anchors.remember(low, offset, first[0][0], generation)
        return first[0][0]

    last: str | None = None
    if offset > 0:
        if anchors is None:
            last = await skip_to(0, None)
        else:
            start, last = anchors.nearest(low, offset)
            if offset - start > long_skip:
                async with anchors.skipping(low):
                    start, last = anchors.nearest(low, offset)
                    last = await skip_to(start, last)
            elif offset > start:
                last = await skip_to(start, last)
        if last is None:  # past the prefix's last handle
            return
    remaining = limit
    served = 0
    while remaining is None or remaining > 0:
        size = batch if remaining is None else min(batch, remaining)
        page = await rows(last, size, 0)
        if not page:
            return
        yield [row[1] for row in page]
        served += len(page)
        last = page[-1][0]
        if anchors is not None:
            anchors.remember(low, offset + served, last, generation)
        if len(page) < size:
            return
        if remaining is not None:
            remaining -= len(page)
