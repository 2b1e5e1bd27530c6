"""The resolution cache: public views of handle records, in front of the store.

- Only values with public read are ever put in the cache, so no cache entry holds anything a
  caller without credentials may not read. Reads that may show private values go to the store.
- An entry lives as long as the smallest TTL among the record's values (relative seconds, or
  the moment an absolute TTL expires), never longer than ``max_ttl``; "not found" lives
  ``not_found_ttl``. Entries are bounded by count and by an estimate of their bytes (LRU).
- A burst of misses for one handle makes one store read: the others wait for it.
- ``invalidate`` is called by every write before it is answered. It drops the entry and marks
  any read already in flight as stale, so that read's (possibly old) result is handed to its
  own waiters but never stored: read-your-write holds under concurrent readers.
- Hit and miss counts live in ``stats``; ``on_event``, when set, is told of each (the
  metrics endpoint counts them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple
from xml.etree.ElementTree import Element

from cachetools import Cache, TLRUCache

from storage import Handle, HandleStore, TTLType, handle_key

from .config import CacheConfig

__all__ = ["Answer", "CacheStats", "Lookup", "ResolutionCache", "public_view", "record_ttl"]

_ENTRY_OVERHEAD = 200  # bytes a cached record costs beyond its data, roughly


class Answer(NamedTuple):
    """A finished REST answer kept on a cache entry."""

    name: str  # the handle as asked: the answer repeats its spelling
    body: bytes
    etag: str


@dataclass(slots=True)
class Lookup:
    """A record's public view (``None``: no such handle) and when it stops being fresh.

    ``answer`` holds the view's finished REST answer (the name as asked, whose spelling the
    answer repeats; the body; its ETag) for the API layer to reuse, and ``locations`` the
    view's parsed 10320/loc lists for the resolver, ``native`` its values as the native protocol
    encodes them: all live and die with the entry, so an invalidation drops them too. Nothing
    else in a lookup changes."""

    record: Handle | None
    expires: float
    answer: Answer | None = None
    locations: list[Element] | None = None
    native: bytes | None = None  # the view's values in the native protocol's encoding
    #: Whether the lookup is out of the cache: never stored (a read that a write overtook,
    #: a TTL of 0) or gone since (forgotten, replaced, evicted, cleared). Whoever kept it to
    #: answer from must stop then (and at ``expires``).
    dropped: bool = True


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    invalidations: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def public_view(record: Handle | None) -> Handle | None:
    if record is None:
        return None
    return Handle(record.handle, tuple(v for v in record.values if v.public_read))


def record_ttl(record: Handle, now: float, ceiling: float) -> float:
    """Seconds the record may be cached: the smallest TTL among all its values."""
    ttl = ceiling
    for value in record.values:
        if value.ttl_type is TTLType.ABSOLUTE:
            ttl = min(ttl, value.ttl - now)
        else:
            ttl = min(ttl, value.ttl)
    return max(0.0, ttl)


def _size(record: Handle | None) -> int:
    """About what an entry takes: the record, and the finished answer kept beside it (its JSON
    repeats each value's data and type with about 150 bytes of fields and timestamps)."""
    if record is None:
        return _ENTRY_OVERHEAD
    return (
        2 * _ENTRY_OVERHEAD
        + 2 * len(record.handle)
        + sum(2 * (len(v.data) + len(v.type)) + _ENTRY_OVERHEAD + 150 for v in record.values)
    )


class _Flight:
    __slots__ = ("stale", "task")

    def __init__(self) -> None:
        self.stale = False
        self.task: asyncio.Future[Lookup] | None = None


class _Entries(TLRUCache):
    """The cache's entries: an entry evicted to make room, or cleared, is marked ``dropped``."""

    def popitem(self) -> tuple[str, Lookup]:
        key, lookup = super().popitem()
        lookup.dropped = True
        return key, lookup

    def clear(self) -> None:
        for key in list(self):  # expired ones too: ``self[key]`` would refuse those
            Cache.__getitem__(self, key).dropped = True
        super().clear()


class ResolutionCache:
    def __init__(
        self,
        store: HandleStore,
        config: CacheConfig,
        *,
        clock: Callable[[], float] = time.time,
        fetch: Callable[[str, bool], Awaitable[Handle | None]] | None = None,
    ) -> None:
        """``fetch(handle, authoritative)``: where a miss reads the record (default: the
        store; the global resolver's records come from the Handle System)."""
        self._store = store
        self._config = config
        self._clock = clock
        self._fetch = fetch or (lambda handle, authoritative: store.get(handle))
        self._entries: TLRUCache[str, Lookup] = _Entries(
            maxsize=max(1, config.max_bytes),
            ttu=lambda _key, lookup, _now: lookup.expires,
            timer=clock,
            getsizeof=lambda lookup: _size(lookup.record),
        )
        self._flights: dict[str, _Flight] = {}
        #: False while other processes' changes may be untold (``peek`` then finds nothing).
        self.caught_up: Callable[[], bool] = store.caught_up
        self._suspended = False
        self.stats = CacheStats()
        #: Told of each "hit", "miss", "load" and "invalidation".
        self.on_event: Callable[[str], None] | None = None
        #: Told when everything is forgotten (global mode forgets the sites it knows too).
        self.on_clear: Callable[[], None] | None = None
        #: Told the ``handle_key`` of each record forgotten (``None``: every record), to
        #: forget what they keep of it too (``auth.records.KeptRecords``).
        self.followers: list[Callable[[str | None], None]] = []

    @property
    def clock(self) -> Callable[[], float]:
        """The clock entries expire by (``Lookup.expires``)."""
        return self._clock

    def hit(self) -> None:
        """Count a hit answered from a lookup kept past ``peek`` (while it is not dropped
        and not expired, it is what ``peek`` would return)."""
        self._count("hit")

    def _count(self, event: str) -> None:
        stats = self.stats
        if event == "hit":
            stats.hits += 1
        elif event == "miss":
            stats.misses += 1
        elif event == "load":
            stats.loads += 1
        else:
            stats.invalidations += 1
        if self.on_event is not None:
            self.on_event(event)

    @property
    def enabled(self) -> bool:
        return self._config.max_ttl > 0 and self._config.max_entries > 0 and not self._suspended

    def suspend(self) -> None:
        """Keep nothing until ``resume``: changes made elsewhere may go untold meanwhile."""
        self._suspended = True
        self.clear()

    def resume(self) -> None:
        """Cache again, starting empty (what changed while suspended is unknown)."""
        self.clear()
        self._suspended = False

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, handle: str) -> Lookup | None:
        """The cached public view of ``handle`` if it can be answered from the cache right
        now, without waiting (a hit); ``None`` means: ask ``lookup``."""
        if not self.caught_up():
            return None
        try:  # not ``get``: cachetools' ``get`` checks the expiry twice, ``[]`` once
            cached = self._entries[handle_key(handle)]
        except KeyError:
            return None
        self._count("hit")
        return cached

    def _entry(self, key: str) -> Lookup | None:
        try:
            return self._entries[key]
        except KeyError:
            return None

    async def lookup(self, handle: str, *, refresh: bool = False) -> Lookup:
        """The public view of ``handle``: from the cache, or (on a miss, or ``refresh``, which
        is what ``auth=true`` asks for) from the store, storing the result."""
        key = handle_key(handle)
        await self._store.catch_up()  # what other processes changed is forgotten first
        if not refresh:
            cached = self._entry(key)
            if cached is not None:
                self._count("hit")
                return cached
            flight = self._flights.get(key)
            if flight is not None and flight.task is not None:
                self._count("miss")
                return await asyncio.shield(flight.task)
        self._count("miss")
        flight = _Flight()
        self._flights[key] = flight
        # The read runs as its own task: a cancelled caller does not strand the others.
        flight.task = asyncio.ensure_future(self._load(key, handle, flight, refresh))
        return await asyncio.shield(flight.task)

    async def _load(self, key: str, handle: str, flight: _Flight, refresh: bool) -> Lookup:
        try:
            self._count("load")
            record = public_view(await self._fetch(handle, refresh))
            now = self._clock()
            if record is None:
                ttl = min(self._config.not_found_ttl, self._config.max_ttl)
            else:
                ttl = record_ttl(record, now, self._config.max_ttl)
            lookup = Lookup(record, now + ttl)
            if ttl > 0 and not flight.stale and self.enabled:
                self._store_entry(key, lookup)
            return lookup
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]

    def _store_entry(self, key: str, lookup: Lookup) -> None:
        replaced = self._entries.pop(key, None)
        if replaced is not None:
            replaced.dropped = True
        lookup.dropped = False
        try:
            self._entries[key] = lookup
        except ValueError:  # larger than the whole cache
            lookup.dropped = True
            return
        while len(self._entries) > self._config.max_entries:
            self._entries.popitem()

    def invalidate(self, handle: str) -> None:
        """Forget ``handle``; call after every write to it, before the write is answered."""
        self.forget_key(handle_key(handle))

    def forget_key(self, key: str) -> None:
        """``invalidate`` by ``handle_key`` (as the store tells of other nodes' writes)."""
        self._count("invalidation")
        for follower in self.followers:
            follower(key)
        forgotten = self._entries.pop(key, None)
        if forgotten is not None:
            forgotten.dropped = True
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.stale = True

    def clear(self) -> None:
        if self.on_clear is not None:
            self.on_clear()
        for follower in self.followers:
            follower(None)
        self._entries.clear()
        for flight in self._flights.values():
            flight.stale = True
        self._flights.clear()
