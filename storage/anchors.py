"""Page anchors: where the listing pages of a prefix start, so that a page deep in a prefix is
an index seek, not a skip of every row before it."""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

from .model import prefix_of
from .rows import prefix_bounds

__all__ = ["LONG_SKIP", "Back", "PageAnchors", "Rows", "paged"]

#: Rows a listing skips (from the nearest anchor) beyond which it skips alone.
LONG_SKIP = 10_000


class PageAnchors:
    """Where listing pages start: for a prefix's lower bound and an offset, the key just before
    the handle at that offset (an anchor ``(offset, key)``: ``offset`` handles of the prefix
    have keys up to ``key``).

    A handle created or deleted moves every page after it. Told of such a change with no more
    than its key (a ``ChangeListener``: another process's write, a notification), it forgets
    the anchors of the prefix. Told by the store of its own writes (``writing``, then
    ``written`` with the keys that came and went), it moves them instead: an anchor's offset
    goes up by one for each handle created at or before its key and down by one for each
    deleted, so a deep page stays an index seek while handles come and go. (The moves are
    made when a listing next asks, not by the write.) An anchor read before a change, or
    while a write of the store's own was under way (whose commit the read may or may not
    have seen), is not remembered (``generation``)."""

    _MAX_PER_PREFIX = 4096
    #: Moves kept for a prefix's anchors until a listing asks; at more, they are forgotten.
    _MAX_MOVES = 100_000

    def __init__(self) -> None:
        self._offsets: dict[str, list[int]] = {}  # sorted
        self._keys: dict[tuple[str, int], str] = {}
        self._generations: dict[str, int] = {}
        self._epoch = 0  # moved by a change of any handle: every prefix's generation moves
        self._skips: dict[str, asyncio.Lock] = {}
        self._writing = 0  # the store's own writes under way (``writing`` not yet ``written``)
        #: By prefix: ``(key, +1 created / -1 deleted)`` not yet applied to its anchors.
        self._moves: dict[str, list[tuple[str, int]]] = {}

    def skipping(self, low: str) -> asyncio.Lock:
        """Held while a listing of the prefix skips a long way."""
        return self._skips.setdefault(low, asyncio.Lock())

    def generation(self, low: str) -> int | None:
        """What a listing starting now remembers its anchors with; ``None``: nothing (a
        write of the store's own is under way)."""
        if self._writing:
            return None
        # Both counts only grow, so their sum moves whenever either does.
        return self._epoch + self._generations.get(low, 0)

    def writing(self) -> None:
        """The store hands a write to its database: what listings in flight read from now on
        may hold it, so they remember nothing; the anchors stay until ``written``."""
        self._writing += 1
        self._epoch += 1

    def written(self, moved: Iterable[tuple[str, int]] | None) -> None:
        """The write ``writing`` announced is over: committed, with the keys of the handles it
        created (``+1``) and deleted (``-1``), or (``None``) it failed, and whatever it left
        is not known: every anchor is forgotten."""
        self._writing -= 1
        if moved is None:
            self.changed(None)
            return
        for key, delta in moved:
            low = prefix_bounds(prefix_of(key))[0]
            if low not in self._offsets:
                continue  # nothing to move (listings in flight remember nothing: ``writing``)
            moves = self._moves.setdefault(low, [])
            moves.append((key, delta))
            if len(moves) > self._MAX_MOVES:
                self._forget(low)

    def nearest(self, low: str, offset: int) -> tuple[int, str | None]:
        """The anchor at or before ``offset``: ``(its offset, key)``, or ``(0, None)``."""
        if low in self._moves:
            self._move(low)
        offsets = self._offsets.get(low)
        if offsets:
            at = bisect.bisect_right(offsets, offset) - 1
            if at >= 0:
                return offsets[at], self._keys[(low, offsets[at])]
        return 0, None

    def above(self, low: str, offset: int) -> tuple[int, str] | None:
        """The first anchor after ``offset``: ``(its offset, key)``, or ``None``."""
        if low in self._moves:
            self._move(low)
        offsets = self._offsets.get(low)
        if offsets:
            at = bisect.bisect_right(offsets, offset)
            if at < len(offsets):
                return offsets[at], self._keys[(low, offsets[at])]
        return None

    def remember(self, low: str, offset: int, key: str, generation: int | None) -> None:
        if generation is None or generation != self.generation(low):
            return
        if low in self._moves:
            self._move(low)  # the moves so far are in what was read: not to be made again
        if (low, offset) in self._keys:
            return
        offsets = self._offsets.setdefault(low, [])
        if len(offsets) >= self._MAX_PER_PREFIX:
            self._forget(low)
            offsets = self._offsets.setdefault(low, [])
        bisect.insort(offsets, offset)
        self._keys[(low, offset)] = key

    def _move(self, low: str) -> None:
        """Apply the prefix's moves to its anchors. Two anchors that land on one offset (the
        handles between them deleted) are both right: the first stays."""
        moves = sorted(self._moves.pop(low))
        keys = [key for key, _ in moves]
        shifts = list(itertools.accumulate(delta for _, delta in moves))
        moved: dict[int, str] = {}
        for offset in self._offsets.pop(low, []):
            key = self._keys.pop((low, offset))
            at = bisect.bisect_right(keys, key)  # the moves at or before the anchor's key
            offset += shifts[at - 1] if at else 0
            if offset > 0:  # (at 0: the prefix's start, no anchor needed)
                moved.setdefault(offset, key)
        if moved:
            self._offsets[low] = list(moved)  # in order: offsets keep the order of keys
            for offset, key in moved.items():
                self._keys[(low, offset)] = key

    def _forget(self, low: str) -> None:
        self._moves.pop(low, None)
        for offset in self._offsets.pop(low, []):
            del self._keys[(low, offset)]

    def changed(self, key: str | None) -> None:
        if key is None:  # also for prefixes with a listing in flight and no anchor yet
            self._epoch += 1
            self._offsets.clear()
            self._keys.clear()
            self._moves.clear()
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
#: A backend's read back: the key ``skip`` places down from ``key`` among the prefix's keys up
#: to it (``key`` itself, when it is one, at 0); ``None``: no such key.
Back = Callable[[str, int], Awaitable[str | None]]


async def paged(
    rows: Rows,
    anchors: PageAnchors | None,
    low: str,
    *,
    offset: int,
    limit: int | None,
    batch: int,
    long_skip: int = LONG_SKIP,
    back: Back | None = None,
) -> AsyncIterator[list[str]]:
    """The handles of the prefix whose keys start at ``low``, from ``offset``, at most
    ``limit``, in lists of ``batch``: read by key, each page after the last key of the one
    before. With ``anchors`` the start of every page served is remembered, so the same or a
    following page is an index seek instead of a skip of ``offset`` rows; a page starts from
    the nearest anchor, before it or (read ``back``) after it, as anchors moved by the store's
    own writes may lie just past it; a long skip is made by one listing of a prefix at a time,
    the others asking meanwhile wait for its anchor. Without (a store that cannot tell when
    other processes move pages), each deep page skips from the prefix's start."""
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

    async def seek(anchors: PageAnchors) -> str | None:
        """``skip_to`` from the nearest anchor, or back from the first after ``offset`` when
        that one is nearer."""
        start, after = anchors.nearest(low, offset)
        above = anchors.above(low, offset) if back is not None else None
        if back is not None and above is not None and above[0] - offset < offset - start:
            # ``above[0]`` keys up to ``above[1]``: the one at ``offset`` of them is the key
            # just before the handle at ``offset``.
            key = await back(above[1], above[0] - offset)
            if key is not None:
                anchors.remember(low, offset, key, generation)
                return key
        return await skip_to(start, after)

    def distance(anchors: PageAnchors) -> int:
        start = anchors.nearest(low, offset)[0]
        above = anchors.above(low, offset) if back is not None else None
        return min(offset - start, above[0] - offset if above is not None else offset)

    last: str | None = None
    if offset > 0:
        if anchors is None:
            last = await skip_to(0, None)
        elif distance(anchors) > long_skip:
            async with anchors.skipping(low):
                last = await seek(anchors)
        else:
            last = await seek(anchors)
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
