"""The storage contract. ``HandleStore`` is the only thing the service knows of storage; every
backend implements it and passes ``tests/test_storage_contract.py``."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .model import Handle

__all__ = ["Change", "ChangeListener", "HandleStore", "ImportResult"]

#: A change to one record: given the record as stored (``None`` when the handle does not exist),
#: return the record to store (``None`` to delete the handle), or raise to abort. It runs while
#: the record is locked against other writers, must be pure (no I/O: it may be called again if
#: the backend retries), and sees a consistent record.
Change = Callable[[Handle | None], Handle | None]


class ChangeListener(Protocol):
    """Told of changes made through other connections to the same store (other nodes)."""

    def changed(self, key: str | None) -> None:
        """The handle with ``handle_key`` ``key`` changed; ``None``: any handle may have."""

    def watching(self, live: bool) -> None:
        """``False``: changes may go untold from now on; ``True``: they are told again (and
        some may have gone untold in between)."""


@dataclass(slots=True)
class ImportResult:
    """What ``import_records`` did with each record it was given."""

    created: int = 0
    replaced: int = 0
    unchanged: int = 0

    def __iadd__(self, other: ImportResult) -> ImportResult:
        self.created += other.created
        self.replaced += other.replaced
        self.unchanged += other.unchanged
        return self


class HandleStore(abc.ABC):
    """Persistent handle records.

    Handles are looked up case-insensitively in ASCII: ``storage.model.handle_key`` is the
    comparison form, and a record keeps the spelling it was created with. A prefix is the part
    of a handle before its first ``/``, compared the same way.
    """

    @abc.abstractmethod
    async def get(self, handle: str) -> Handle | None:
        """The record of ``handle``, values sorted by index, or ``None`` if there is none.

        Sees every write that completed before the call started."""

    @abc.abstractmethod
    async def update(self, handle: str, change: Change) -> tuple[Handle | None, Handle | None]:
        """Apply ``change`` to the record of ``handle`` atomically and durably.

        Returns ``(before, after)``. The whole change is one transaction: either all of it is
        stored or (if ``change`` raises, or the store fails) none of it, and the exception is
        re-raised. Two concurrent updates of one handle are serialised: the second sees the
        first's result. A new record is stored under the name ``after.handle``; an existing one
        keeps its stored name. When ``update`` returns, the write survives a crash of the process.
        Values whose content did not change are not rewritten."""

    @abc.abstractmethod
    async def count_handles(self, prefix: str) -> int:
        """How many handles exist under ``prefix`` (cheap: not a scan)."""

    @abc.abstractmethod
    def iter_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None, batch: int = 10_000
    ) -> AsyncIterator[list[str]]:
        """The names of handles under ``prefix`` in a stable order (by ``handle_key``), skipping
        ``offset`` and yielding at most ``limit`` names in lists of at most ``batch``. Served
        from an index: no scan of other prefixes, memory bounded by ``batch``."""

    @abc.abstractmethod
    def iter_records(self, *, after: str = "", batch: int = 1000) -> AsyncIterator[list[Handle]]:
        """Every record, by ``handle_key``, starting after the key ``after``, in lists of at
        most ``batch``: one consistent snapshot (writes that commit meanwhile are not seen),
        memory bounded by ``batch``. For exports."""

    @abc.abstractmethod
    async def import_records(
        self, records: Sequence[Handle], *, replace: bool = False
    ) -> ImportResult:
        """Store ``records`` exactly as given (names, timestamps and all), in one transaction.

        A handle that does not exist is created; one stored with exactly this content is left
        alone (so an import that was cut short can simply run again); one stored with other
        content is replaced if ``replace``, else ``ImportConflict`` is raised and nothing of
        this call is stored. Two records of one handle are a ``ValueError``."""

    async def watch(self, listener: ChangeListener) -> bool:
        """Start telling ``listener`` of every committed change, including those of other
        processes or nodes on the same store, until ``close``. Returns whether this backend can
        tell at all; the default cannot, and a caller must then not trust a cache across
        processes. A backend that can calls ``listener.watching(True)`` once it listens."""
        return False

    async def catch_up(self) -> None:
        """Tell the listeners now of changes other processes committed that they have not been
        told of yet. A cache calls this before every lookup; it returns at once when there is
        nothing new. Backends that push news as it happens (the default) need not do
        anything."""
        return

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; pending writes have already completed."""
