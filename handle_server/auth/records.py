"""The records that authentication and authorization read (an identity's HS_SECKEY or
HS_PUBKEY, the HS_VLIST groups an HS_ADMIN names), kept between the writes that change them:
an authenticated request then costs no store read for its identity.

They are kept exactly as long as the resolution cache would keep the same handle: it follows
that cache's forgetting (this process's writes before they are answered, other processes'
and nodes' writes as the store tells of them, purges), and keeps nothing while the cache is
off or suspended (``[cache] max_ttl = 0``, or a store that cannot tell of other nodes'
writes right now). A read that a write overtook is not kept. Each record is also kept at
most ``max_age`` seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import LRUCache

from storage import Handle, HandleStore, handle_key

from ..cache import ResolutionCache

__all__ = ["KeptRecords"]


class KeptRecords:
    def __init__(
        self,
        store: HandleStore,
        follows: ResolutionCache,
        *,
        max_entries: int = 1024,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._follows = follows
        self._kept: LRUCache[str, tuple[float, Handle | None]] = LRUCache(max_entries)
        self._max_age = max_age
        self._clock = clock
        #: The reads under way, by key: each is marked stale when its key is forgotten
        #: meanwhile (a write overtook it), and is then not kept.
        self._reads: dict[str, list[_Read]] = {}
        follows.followers.append(self.forget)

    async def get(self, handle: str) -> Handle | None:
        """The stored record of ``handle`` (all its values), as ``HandleStore.get``."""
        key = handle_key(handle)
        await self._store.catch_up()  # other processes' writes are forgotten first
        now = self._clock()
        kept = self._kept.get(key)
        if kept is not None and now < kept[0] and self._follows.enabled:
            return kept[1]
        read = _Read()
        self._reads.setdefault(key, []).append(read)
        try:
            record = await self._store.get(handle)
        finally:
            reads = self._reads[key]
            reads.remove(read)
            if not reads:
                del self._reads[key]
        if not read.stale and self._follows.enabled:
            self._kept[key] = (now + self._max_age, record)
        return record

    def forget(self, key: str | None) -> None:
        """Forget the record of ``handle_key`` ``key``; ``None``: every record."""
        if key is None:
            self._kept.clear()
            overtaken = [read for reads in self._reads.values() for read in reads]
        else:
            self._kept.pop(key, None)
            overtaken = self._reads.get(key, [])
        for read in overtaken:
            read.stale = True


class _Read:
    __slots__ = ("stale",)

    def __init__(self) -> None:
        self.stale = False
