"""Locks by name, made when first wanted and dropped when nobody holds or waits for them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable, Iterable

__all__ = ["KeyedLocks"]


class KeyedLocks:
    """``async with locks(key):`` - holders of one key take turns (``holders`` at a time),
    other keys go on."""

    def __init__(self, holders: int = 1) -> None:
        self._holders = holders
        self._entries: dict[Hashable, list] = {}  # key -> [semaphore, holders and waiters]

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def __call__(self, key: Hashable) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = [asyncio.Semaphore(self._holders), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._entries[key]

    @contextlib.asynccontextmanager
    async def many(self, keys: Iterable[Hashable]) -> AsyncIterator[None]:
        """Hold the turns of all ``keys``, taken in the order given: give them sorted, so
        that two holders of many keys never wait for each other."""
        wanted: list[tuple[Hashable, list]] = []
        held = 0
        try:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._entries[key] = [asyncio.Semaphore(self._holders), 0]
                entry[1] += 1
                wanted.append((key, entry))
                await entry[0].acquire()
                held += 1
            yield
        finally:
            for n, (key, entry) in enumerate(wanted):
                if n < held:
                    entry[0].release()
                entry[1] -= 1
                if entry[1] == 0:
                    del self._entries[key]
