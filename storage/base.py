"""The storage contract. ``HandleStore`` is the only thing the service knows of storage; every
backend implements it and passes ``tests/test_storage_contract.py``."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from .model import Handle, ValueReference, handle_key

__all__ = [
    "OPERATIONS",
    "Change",
    "ChangeListener",
    "Exported",
    "HandleStore",
    "ImportResult",
    "Outcome",
    "SessionRecord",
    "Version",
]

#: A change to one record: given the record as stored (``None`` when the handle does not exist),
#: return the record to store (``None`` to delete the handle), or raise to abort. It runs while
#: the record is locked against other writers, must be pure (no I/O: it may be called again if
#: the backend retries), and sees a consistent record.
Change = Callable[[Handle | None], Handle | None]
#: What an update did: the record before it and after it.
Outcome = tuple[Handle | None, Handle | None]


class ChangeListener(Protocol):
    """Told of changes made through other connections to the same store (other nodes)."""

    def changed(self, key: str | None) -> None:
        """The handle with ``handle_key`` ``key`` changed; ``None``: any handle may have."""

    def watching(self, live: bool) -> None:
        """``False``: changes may go untold from now on; ``True``: they are told again (and
        some may have gone untold in between)."""


@dataclass(slots=True)
class ImportResult:
    """What ``import_records`` did with each record it was given (a deleted handle's entry
    that deleted a stored record counts as replacing it), and how many versions it added to
    histories."""

    created: int = 0
    replaced: int = 0
    unchanged: int = 0
    versions: int = 0

    def __iadd__(self, other: ImportResult) -> ImportResult:
        self.created += other.created
        self.replaced += other.replaced
        self.unchanged += other.unchanged
        self.versions += other.versions
        return self


#: What a version's change did (``Version.operation``).
OPERATIONS = ("create", "add", "modify", "remove", "replace", "delete", "import")


@dataclass(frozen=True, slots=True)
class Version:
    """One change of a record, as its history keeps it: its number (from 1, per handle), when
    (epoch seconds), the identity that made it (``index:handle``; ``None``: the server
    itself), what it did (one of ``OPERATIONS``) and the record after it (``None``:
    deleted)."""

    number: int
    at: float
    by: str | None
    operation: str
    record: Handle | None


@dataclass(frozen=True, slots=True)
class Exported:
    """A handle as an export holds it: its record (``None``: deleted, its history is what is
    left of it) and its history, oldest first (``None``: not carried)."""

    handle: str
    record: Handle | None
    history: tuple[Version, ...] | None = None

    @property
    def key(self) -> str:
        return handle_key(self.handle)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What the store keeps of a session of the ``Handle`` authorization scheme: the identity
    it proved (``None``: the session was closed) and when it expires (epoch seconds). ``key``
    is a digest of the session id; the id itself is never stored."""

    key: bytes
    identity: ValueReference | None
    expires: float


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
    async def update(
        self, handle: str, change: Change, *, by: str | None = None
    ) -> tuple[Handle | None, Handle | None]:
        """Apply ``change`` to the record of ``handle`` atomically and durably; if it changed
        the record, its history gains a version made ``by`` that identity, in the same
        transaction.

        Returns ``(before, after)``. The whole change is one transaction: either all of it is
        stored or (if ``change`` raises, or the store fails) none of it, and the exception is
        re-raised. Two concurrent updates of one handle are serialised: the second sees the
        first's result. A new record is stored under the name ``after.handle``; an existing one
        keeps its stored name. When ``update`` returns, the write survives a crash of the process.
        Values whose content did not change are not rewritten."""

    @abc.abstractmethod
    async def get_many(self, handles: Sequence[str]) -> dict[str, Handle | None]:
        """The records of ``handles`` by ``handle_key`` (``None`` for those that do not exist),
        as ``get`` reads each, in one read (or a few, for many handles)."""

    @abc.abstractmethod
    async def update_many(
        self, changes: Sequence[tuple[str, Change]], *, atomic: bool, by: str | None = None
    ) -> list[Outcome | Exception]:
        """Apply ``changes`` (handle, change) in order, as ``update`` applies one (a version
        for each change that changed a record), in one transaction: durable when this
        returns, one commit for all. A change sees the record as the changes before it left
        it.

        ``atomic``: if a change raises (or the store fails), nothing of the call is stored and
        ``ChangeFailed`` says which change and why. Otherwise a change that raises is rolled
        back alone, and its exception stands in its place in the answer."""

    @abc.abstractmethod
    async def history(
        self, handle: str, *, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Version]]:
        """How many versions ``handle``'s history holds, and the ones from ``offset`` on
        (at most ``limit``), oldest first. A deleted handle keeps its history."""

    @abc.abstractmethod
    async def version(self, handle: str, number: int) -> Version | None:
        """Version ``number`` of ``handle``'s history, if it holds it."""

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
    def iter_exported(self, *, after: str = "", batch: int = 1000) -> AsyncIterator[list[Exported]]:
        """As ``iter_records``, with each record's history, and the deleted handles whose
        history is kept (record ``None``): every handle the store knows of."""

    @abc.abstractmethod
    async def import_records(
        self, records: Sequence[Handle | Exported], *, replace: bool = False
    ) -> ImportResult:
        """Store ``records`` exactly as given (names, timestamps and all), in one transaction.

        A handle that does not exist is created; one stored with exactly this content is left
        alone (so an import that was cut short can simply run again); one stored with other
        content is replaced if ``replace`` (an ``Exported`` without record deletes it), else
        ``ImportConflict`` is raised and nothing of this call is stored. Two records of one
        handle are a ``ValueError``.

        History (``rows.plan_import``): the versions an ``Exported`` carries that its stored
        history lacks are added, provided the stored history is where the given one begins
        (otherwise the histories differ: ``ImportConflict``, or with ``replace`` the stored
        one is kept, as a history is never rewritten). When the record then differs from the
        history's last version (a plain ``Handle`` creating or replacing one, say), a version
        by the server (``by`` ``None``) says the import made it so: operation ``import``
        (``delete`` for a deletion)."""

    @abc.abstractmethod
    async def prune_history(
        self, *, keep_versions: int | None = None, before: float | None = None
    ) -> int:
        """Drop, of every handle's history, the versions older than its last
        ``keep_versions`` and those made before the time ``before`` (epoch seconds), but never
        a handle's last version (its numbers go on, and a deleted handle's tombstone stays).
        Runs a batch of handles a transaction. Returns how many versions went."""

    async def watch(self, listener: ChangeListener) -> bool:
        """Start telling ``listener`` of every committed change, including those of other
        processes or nodes on the same store, until ``close``. Returns whether this backend can
        tell at all; the default cannot, and a caller must then not trust a cache across
        processes. A backend that can calls ``listener.watching(True)`` once it listens."""
        return False

    async def announce(self, keys: Sequence[str | None]) -> None:
        """Tell the listeners of every process on this store that the records of ``keys``
        (``handle_key``s; ``None``: every record) may have changed, changing nothing: their
        caches forget them (a purge). This process's own caches are the caller's to clear.
        The default, for a store no other process shares: nobody to tell."""
        return

    def caught_up(self) -> bool:
        """Whether ``catch_up`` has nothing to tell now (checked without waiting): a cache
        may then answer without calling it. The default, for backends that push news as it
        happens: always."""
        return True

    async def catch_up(self) -> None:
        """Tell the listeners now of changes other processes committed that they have not been
        told of yet. A cache calls this before every lookup; it returns at once when there is
        nothing new. Backends that push news as it happens (the default) need not do
        anything."""
        return

    @abc.abstractmethod
    async def search(
        self,
        conditions: Sequence[tuple[str, str]],
        *,
        prefix: str | None = None,
        readable: Collection[str] = (),
        offset: int = 0,
        limit: int = 1000,
        time_limit: float | None = None,
    ) -> list[str]:
        """Reverse lookup: the names of the handles that hold, for each ``(type, pattern)`` of
        ``conditions``, a value of that type (compared case-insensitively) whose data, as
        text, matches ``pattern`` (``*`` matches any run of characters; every other character
        only itself, case-sensitively). Only handles under ``prefix`` if given; by
        ``handle_key``, skipping ``offset``, at most ``limit``.

        A value without public read counts only under a prefix in ``readable``. Values of
        binary or secret types (HS_SECKEY, HS_ADMIN, HS_VLIST, ...: the list is in the schema)
        and data that is not UTF-8 text are never matched. Served from an index: at least one
        pattern must hold 3 characters in a row other than ``*`` (``rows.search_pattern_problem``),
        else ``ValueError``; the others (``*`` alone: any value of that type) are checked on
        the handles that one finds. Identical conditions count once.

        Runs apart from the reads that resolve handles (a connection of its own), and within
        ``time_limit`` seconds, waiting for that connection included: a search still running then
        is stopped, and ``SearchTimeout`` raised."""

    # -- authentication state shared by every process and node on this store -----------------

    @abc.abstractmethod
    async def get_session(self, key: bytes, *, now: float) -> SessionRecord | None:
        """The session stored under ``key``, ``None`` if there is none or it expired."""

    @abc.abstractmethod
    async def put_session(
        self,
        session: SessionRecord,
        *,
        now: float,
        limit: int,
        per_identity: int | None = None,
    ) -> bool:
        """Store ``session``. A new key is added (first dropping the sessions that expired by
        ``now`` and, when ``limit`` are stored, the ones that expire first, closed ones before
        open ones; and, with ``per_identity``, when its identity has that many open sessions,
        the ones of that identity that expire first); an open session gets ``session``'s
        identity (a closed one gets ``None``: it is closed) and expiry. A closed session stays
        closed: then nothing is stored and the answer is ``False``. Atomic."""

    @abc.abstractmethod
    async def renew_session(self, key: bytes, *, expires: float) -> None:
        """Move the expiry of the open session ``key`` to ``expires`` (later only)."""

    @abc.abstractmethod
    async def failures(self, keys: Sequence[str], *, since: float) -> dict[str, tuple[float, int]]:
        """Failed authentications counted for ``keys`` whose first failure is after ``since``:
        ``{key: (time of the first failure, failures since)}``."""

    @abc.abstractmethod
    async def add_failure(self, keys: Sequence[str], *, now: float, since: float) -> None:
        """Count one failure at ``now`` for each of ``keys``: a key whose first failure is at
        or before ``since`` (or that has none) starts again at one. Counts of other keys that
        ended by ``since`` are dropped."""

    @abc.abstractmethod
    async def shared_secret(self, name: str, candidate: bytes) -> bytes:
        """The secret called ``name``: ``candidate`` (stored now) if there was none yet, else
        the one stored first. Every process and node on this store gets the same bytes."""

    # -- tickets: short-lived state one request leaves for a later one ---------------------------

    @abc.abstractmethod
    async def put_ticket(
        self, key: bytes, data: bytes, *, expires: float, now: float, limit: int
    ) -> None:
        """Store ``data`` under ``key`` until ``expires`` (replacing what ``key`` held). A new
        key first drops the tickets expired by ``now`` and, when ``limit`` are stored, the ones
        that expire first. Atomic."""

    @abc.abstractmethod
    async def get_ticket(self, key: bytes, *, now: float) -> bytes | None:
        """The data stored under ``key``, ``None`` if there is none or it expired by ``now``."""

    @abc.abstractmethod
    async def take_ticket(self, key: bytes, *, now: float) -> bytes | None:
        """As ``get_ticket``, and remove it: of several callers taking one ticket at once,
        one gets it."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; pending writes have already completed."""
