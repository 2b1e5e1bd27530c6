"""The rules of the Handle System's operations: resolve, create, mint, add_values,
remove_values, delete, list.

Every write is a pure *change* handed to ``HandleStore.update``: it sees the record as stored,
under the store's write lock, and either returns the new record or raises. The checks that
decide an answer (exists? which indexes are new?) therefore see exactly the record they change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from storage import (
    PREFIX_HANDLE_AUTHORITY,
    Change,
    ChangeFailed,
    Handle,
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    HandleStore,
    HandleValue,
    Outcome,
    SearchTimeout,
    StoreUnavailable,
    ValueAlreadyExists,
    ValueReference,
    ValuesNotFound,
    Version,
    handle_key,
    prefix_of,
)

from .auth.authenticator import Authenticator
from .auth.authorizer import Authorizer, describe
from .auth.identities import SECKEY_TYPE, Identity
from .auth.permissions import Needs, merge_added, needs_to_remove, needs_to_replace
from .auth.records import KeptRecords
from .auth.secrets import KEEP_MARKERS, KeyFileError, SecretKeeper
from .auth.sessions import SessionStore
from .auth.throttle import FailureThrottle
from .cache import Lookup, ResolutionCache
from .config import Config
from .encoding import AdminPermission, AdminRecord, encode_admin, encode_vlist
from .errors import (
    AuthenticationNeeded,
    InsufficientPermissions,
    InvalidAdmin,
    InvalidHandle,
    InvalidValue,
    PreconditionFailed,
    ProtocolError,
    RecordTooLarge,
    ServerNotResponsible,
)
from .locks import KeyedLocks
from .resolver.locations import is_location_list

__all__ = ["BatchRefused", "HandleService", "Precondition", "Resolution", "WriteOp"]

log = logging.getLogger(__name__)

ADMIN_GROUP_INDEX = 200
PREFIX_ADMIN_INDEX = 100
_MINT_ATTEMPTS = 8
_WRITE_ATTEMPTS = 16
P = AdminPermission
#: plan(record as stored) -> (record to store, what it needs, whose HS_ADMIN values decide)
Plan = Callable[[Handle | None], tuple[Handle | None, Needs | Sequence[Needs], Handle | str | None]]
# Control characters, DEL, and lone surrogates (from bad percent-decoding) never form a handle.
_FORBIDDEN_IN_HANDLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
# A new handle's name also holds no C1 control, line or paragraph separator, byte order mark,
# or bidirectional mark, embedding, override or isolate: a PID that displays as another one
# (TEST/\u202egnp.exe) is a phishing aid. Existing names stay readable and deletable.
_FORBIDDEN_IN_NEW_HANDLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)


@dataclass(frozen=True, slots=True)
class Resolution:
    """The values a caller may see; ``response_code`` 1, or 200 when none matched.

    ``expires`` is when a public answer stops being fresh (for HTTP caching); ``None`` for an
    answer that may hold private values, which nobody should keep."""

    handle: str
    values: tuple[HandleValue, ...]
    expires: float | None = None
    #: The cache entry this very view (all its public values) came from, which keeps its
    #: finished answer; ``None`` when the values were filtered or read past the cache.
    entry: Lookup | None = None
    #: The cache that holds ``entry``.
    cache: ResolutionCache | None = None

    @property
    def response_code(self) -> int:
        return 1 if self.values else 200


@dataclass(frozen=True, slots=True)
class Precondition:
    """A conditional write (HTTP's ``If-Match`` / ``If-None-Match``), decided against the
    record the write changes, inside the write: it applies only if the record is unchanged.

    ``match``: the entity tags of which the record must have one (``"*"``: any record at
    all); ``none_match``: those it must have none of (``"*"``: there must be no record).
    A record's tags are those of the caller's own read of it (``publicOnly=false``, no
    filter): ``tags(name, values)`` gives them for the values that read shows."""

    tags: Callable[[str, Sequence[HandleValue]], Collection[str]]
    match: frozenset[str] | None = None
    none_match: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class WriteOp:
    """A write planned, not yet applied: the handle it changes and its plan; for adding
    values, the indexes it adds."""

    handle: str
    plan: Plan
    new_indexes: frozenset[int] | None = None

    def created(self, before: Handle | None) -> bool:
        """Whether applying it to ``before`` made something new (HTTP's 201): a handle, or
        (adding values) values at new indexes only."""
        if self.new_indexes is None:
            return before is None
        return before is not None and not (before.indexes & self.new_indexes)


class BatchRefused(Exception):
    """An atomic batch changed nothing: its write at ``index`` was refused with ``error``."""

    def __init__(self, index: int, error: HandleError) -> None:
        super().__init__(f"write {index} refused: {error}")
        self.index = index
        self.error = error


def type_matches(value_type: str, wanted: str) -> bool:
    """``type=X`` matches X only; ``type=X.`` matches X and its period-delimited subtypes.
    Case-insensitive, as the reference server."""
    t, w = value_type.upper(), wanted.upper()
    if w.endswith("."):
        return t == w[:-1] or t.startswith(w)
    return t == w


def select(values: Iterable[HandleValue], indexes: Collection[int], types: Sequence[str]):
    """The union of the values at ``indexes`` and those of ``types``; all without either."""
    if not indexes and not types:
        return list(values)
    return [v for v in values if v.index in indexes or any(type_matches(v.type, w) for w in types)]


#: Where a prefix handle holds this site's HS_SITE (as the reference's prefix handles do).
SITE_INDEX = 1


def _is_managed(value: HandleValue, *, site: bool = False) -> bool:
    """Values of a prefix handle that come from the configuration: the admins' secret keys,
    the admin group at index 200, and (``site``: the native protocol is served) the HS_SITE
    at index 1."""
    return (
        value.type.upper() == SECKEY_TYPE
        or value.index == ADMIN_GROUP_INDEX
        or (site and value.index == SITE_INDEX and value.type.upper() == "HS_SITE")
    )


class HandleService:
    def __init__(
        self,
        store: HandleStore,
        config: Config,
        keeper: SecretKeeper,
        *,
        authenticator: Authenticator | None = None,
        authorizer: Authorizer | None = None,
        cache: ResolutionCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.keeper = keeper
        self.authenticator = authenticator or Authenticator(
            store,
            keeper,
            throttle=FailureThrottle(
                store, config.auth.failure_limit, config.auth.failure_window, clock=clock
            ),
            sessions=SessionStore(
                store,
                idle_timeout=config.auth.session_idle_timeout,
                max_sessions=config.auth.max_sessions,
                max_per_identity=config.auth.max_sessions_per_identity,
                clock=clock,
            ),
            clock=clock,
        )
        self.authorizer = authorizer or Authorizer(store, config)
        self.cache = cache or ResolutionCache(store, config.cache, clock=clock)
        self.authenticator.written = self.cache.invalidate
        kept = KeptRecords(store, self.cache, clock=clock)
        self.authenticator.read_record = self.authorizer.read_record = kept.get
        self._clock = clock
        self._prefixes = {handle_key(p): p for p in config.handle.prefixes}
        self._locks = KeyedLocks()  # writes to one handle in this process take turns
        self._search_turns = asyncio.Semaphore(config.search.max_concurrent)
        #: This site's HS_SITE record when the native protocol is served: prefix handles
        #: carry it (set before ``start``).
        self.site: bytes | None = None
        #: ``[resolver] mode = "global"``: the cache of the records homed elsewhere, which
        #: fetches them through the Handle System (set by the application).
        self.remote: ResolutionCache | None = None

    def now(self) -> float:
        return self._clock()

    # -- names -----------------------------------------------------------------------------

    def check_handle(
        self, handle: str, *, stem: bool = False, homed_elsewhere: bool = False
    ) -> None:
        """Syntax, then responsibility (unless the handle is known to be ``homed_elsewhere``,
        as in global mode). ``stem``: the start of a handle to mint, which may end in
        ``/``."""
        if not handle:
            raise InvalidHandle(handle, "Empty handle invalid")
        if len(handle.encode("utf-8", "surrogatepass")) > self.config.handle.max_handle_length:
            raise InvalidHandle(
                handle[:64] + "...",
                f"Handle longer than {self.config.handle.max_handle_length} bytes",
            )
        if _FORBIDDEN_IN_HANDLE.search(handle):
            raise InvalidHandle(handle, "Handle contains control characters")
        prefix, slash, suffix = handle.partition("/")
        if not slash or not prefix or (not suffix and not stem):
            raise InvalidHandle(handle, f"Invalid handle {handle!r}: expected prefix/suffix")
        if not homed_elsewhere and not self.is_homed(handle):
            raise ServerNotResponsible(handle, f"Prefix {prefix} is not homed on this server")

    def is_homed(self, handle: str) -> bool:
        prefix, _, suffix = handle.partition("/")
        key = handle_key(prefix)
        if key == PREFIX_HANDLE_AUTHORITY:
            return handle_key(suffix) in self._prefixes
        return key in self._prefixes

    @staticmethod
    def is_prefix_handle(handle: str) -> bool:
        return handle_key(prefix_of(handle)) == PREFIX_HANDLE_AUTHORITY

    # -- reads -----------------------------------------------------------------------------

    async def resolve(
        self,
        handle: str,
        *,
        indexes: Collection[int] = (),
        types: Sequence[str] = (),
        public_only: bool,
        identity: Identity | None,
        refresh: bool = False,
        asked_for_private: bool = False,
    ) -> Resolution:
        """The values of ``handle`` the caller may see. Public answers come through the cache
        (``refresh``, the API's ``auth=true``, bypasses it and stores a fresh read); an answer
        that may hold private values is always read from the store.

        Not ``public_only``: permission is decided before the values are looked at, so the
        answer never tells whether private values exist. Anonymous callers are refused (401);
        an identity without READ_VALUE on the record is refused (403) if it
        ``asked_for_private`` (``publicOnly=false``), else gets the public values only."""
        if self.remote is not None and not self.is_homed(handle):
            # Global mode, a handle homed elsewhere: its public values, as its site gives
            # them (a proxy proves no identity to other sites).
            self.check_handle(handle, homed_elsewhere=True)
            self._check_proxied(handle)
            return await self._public(self.remote, handle, indexes, types, refresh)
        self.check_handle(handle)
        if public_only:
            return await self._public(self.cache, handle, indexes, types, refresh)
        if identity is None:
            raise AuthenticationNeeded(handle, "Authentication needed to read non-public values")
        record = await self.store.get(handle)
        if record is None:
            raise HandleNotFound(handle)
        if not await self.authorizer.holds(identity, handle, P.READ_VALUE, record):
            if asked_for_private:
                raise InvalidAdmin(
                    handle,
                    f"{identity} does not hold READ_VALUE on {handle}, needed for its "
                    "non-public values (ask with publicOnly=true for the public ones)",
                )
            chosen = select((v for v in record.values if v.public_read), indexes, types)
            return Resolution(handle, tuple(chosen))
        chosen = select(record.values, indexes, types)
        unreadable = sorted(v.index for v in chosen if not v.public_read and not v.admin_read)
        if unreadable:
            listed = ", ".join(map(str, unreadable))
            raise InsufficientPermissions(
                handle, f"The values at index {listed} of {handle} are readable by no one"
            )
        return Resolution(handle, tuple(chosen))

    def _check_proxied(self, handle: str) -> None:
        """``[resolver] allow_prefixes`` / ``deny_prefixes``: a prefix covers itself and the
        prefixes derived from it (``10.1000`` covers ``10.1000.5``); for a prefix handle
        ``0.NA/X``, X is the prefix."""
        authority, _, rest = handle.partition("/")
        prefix = rest if handle_key(authority) == PREFIX_HANDLE_AUTHORITY else authority
        key = handle_key(prefix)

        def covered(listed: Sequence[str]) -> bool:
            return any(key == handle_key(p) or key.startswith(handle_key(p) + ".") for p in listed)

        r = self.config.resolver
        if covered(r.deny_prefixes) or (r.allow_prefixes and not covered(r.allow_prefixes)):
            raise ServerNotResponsible(handle, f"This proxy does not resolve prefix {prefix}")

    @staticmethod
    async def _public(
        cache: ResolutionCache,
        handle: str,
        indexes: Collection[int],
        types: Sequence[str],
        refresh: bool,
    ) -> Resolution:
        lookup = await cache.lookup(handle, refresh=refresh)
        if lookup.record is None:
            raise HandleNotFound(handle)
        if not indexes and not types:
            return Resolution(handle, lookup.record.values, lookup.expires, lookup, cache)
        chosen = select(lookup.record.values, indexes, types)
        return Resolution(handle, tuple(chosen), lookup.expires)

    async def read_record(self, handle: str, *, fresh: bool) -> Handle | None:
        """The record of ``handle`` for a caller that decides itself what it shows (Onezone's
        API): as stored, private values included (``fresh``), or the cached public view."""
        if fresh:
            return await self.store.get(handle)
        return (await self.cache.lookup(handle)).record

    async def history(
        self, handle: str, *, identity: Identity | None, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Version]]:
        """The versions of ``handle``'s record (``HandleStore.history``), for an identity that
        may read its non-public values (READ_VALUE on the record, or on its last record if it
        was deleted). The records show only what that identity may read: values readable by
        no one are left out (secret keys are shown redacted, as everywhere)."""
        await self._check_history_reader(handle, identity)
        total, versions = await self.store.history(handle, offset=offset, limit=limit)
        return total, [_readable(v) for v in versions]

    async def version(self, handle: str, number: int, *, identity: Identity | None) -> Version:
        """Version ``number`` of ``handle``'s history, as ``history`` shows it."""
        await self._check_history_reader(handle, identity)
        found = await self.store.version(handle, number)
        if found is None:
            raise HandleNotFound(handle, f"{handle} has no version {number}")
        return _readable(found)

    async def ever_existed(self, handle: str) -> bool:
        """Whether ``handle``'s history holds any version (it exists, or did)."""
        total, _ = await self.store.history(handle, limit=0)
        return total > 0

    async def deleted_at(self, handle: str) -> float | None:
        """When ``handle`` (homed here, not found) was deleted, if its history says it was."""
        if self.remote is not None and not self.is_homed(handle):
            return None
        last = await self._last_versions(handle, 1)
        return last[0].at if last and last[0].record is None else None

    async def _last_versions(self, handle: str, count: int) -> list[Version]:
        """The last ``count`` versions of ``handle``'s history (fewer if it has fewer)."""
        total, _ = await self.store.history(handle, limit=0)
        if not total:
            return []
        _, last = await self.store.history(handle, offset=max(0, total - count), limit=count)
        return last

    async def _check_history_reader(self, handle: str, identity: Identity | None) -> None:
        if identity is None:
            raise AuthenticationNeeded(handle, "Authentication needed to read a history")
        self.check_handle(handle)
        record = await self.store.get(handle)
        if record is None:
            # Deleted (or never made): decided on its last record, the version before the
            # deletion.
            last = await self._last_versions(handle, 2)
            record = next((v.record for v in reversed(last) if v.record is not None), None)
            if record is None:
                raise HandleNotFound(handle)
        if not await self.authorizer.holds(identity, handle, P.READ_VALUE, record):
            raise InvalidAdmin(
                handle,
                f"{identity} does not hold READ_VALUE on {handle}, needed for its history",
            )

    async def count_handles(self, prefix: str, identity: Identity | None) -> int:
        """How many handles ``prefix`` has; the caller needs LIST_HANDLES on its prefix
        handle."""
        if identity is None:
            raise AuthenticationNeeded(None, "Authentication needed to list handles")
        authority_name = f"{PREFIX_HANDLE_AUTHORITY}/{prefix}"
        authority = await self.authorizer.read_record(authority_name)  # kept between writes
        if not await self.authorizer.holds(identity, authority_name, P.LIST_HANDLES, authority):
            raise InvalidAdmin(None, f"{identity} does not hold LIST_HANDLES on {authority_name}")
        return await self.store.count_handles(prefix)

    async def require(
        self, identity: Identity | None, record: Handle, permission: AdminPermission
    ) -> None:
        """Raise unless ``identity`` holds ``permission`` on ``record`` (for callers that show
        a record only to its administrators, as the Onezone API does)."""
        if identity is None:
            raise AuthenticationNeeded(record.handle, "Authentication needed")
        await self._authorize(identity, record.handle, Needs(permission), record)

    def iter_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None
    ) -> AsyncIterator[list[str]]:
        """Names under ``prefix``; call ``count_handles`` first, which checks the caller."""
        return self.store.iter_handles(prefix, offset=offset, limit=limit)

    def listing_prefix(self, prefix: str) -> str:
        """``0.NA/TEST`` or ``TEST`` -> ``TEST``; raises for a prefix not homed here."""
        authority, slash, rest = prefix.partition("/")
        name = rest if slash and handle_key(authority) == PREFIX_HANDLE_AUTHORITY else prefix
        if not name or "/" in name:
            raise InvalidHandle(None, f"Invalid prefix {prefix!r}")
        if handle_key(name) not in self._prefixes:
            raise ServerNotResponsible(None, f"Prefix {name} is not homed on this server")
        return name

    async def search(
        self,
        conditions: Sequence[tuple[str, str]],
        *,
        prefix: str | None,
        identity: Identity | None,
        offset: int,
        limit: int,
    ) -> list[str]:
        """Reverse lookup (``HandleStore.search``) over the homed prefixes. Values without
        public read count only for the configured admins of their prefix: deciding per record
        through HS_ADMIN would mean reading every match.

        Bounded by ``[search]``: at most ``max_conditions`` conditions (identical ones count
        once), ``max_concurrent`` searches at once in this process, each within ``timeout``
        seconds, its wait for a turn included (``SearchTimeout``)."""
        limits = self.config.search
        conditions = list(dict.fromkeys((t.upper(), p) for t, p in conditions))
        if any(_FORBIDDEN_IN_HANDLE.search(t + p) for t, p in conditions):
            raise ProtocolError(None, "Search types and patterns hold no control characters")
        if len(conditions) > limits.max_conditions:
            raise ProtocolError(
                None,
                f"A search may hold at most {limits.max_conditions} different TYPE=pattern "
                f"conditions, got {len(conditions)}",
            )
        name = self.listing_prefix(prefix) if prefix is not None else None
        readable = [
            p
            for p in self.config.handle.prefixes
            if self.authorizer.is_config_admin(identity, f"{p}/")
        ]
        deadline = time.monotonic() + limits.timeout
        try:
            async with asyncio.timeout(limits.timeout):
                await self._search_turns.acquire()
        except TimeoutError:
            raise SearchTimeout(limits.timeout) from None
        try:
            return await self.store.search(
                conditions,
                prefix=name,
                readable=readable,
                offset=offset,
                limit=limit,
                time_limit=max(0.001, deadline - time.monotonic()),
            )
        except ValueError as exc:
            raise ProtocolError(None, f"Cannot search: {exc}") from None
        finally:
            self._search_turns.release()

    # -- writes ----------------------------------------------------------------------------

    async def _update(
        self, handle: str, change: Change, identity: Identity | None = None
    ) -> tuple[Handle | None, Handle | None]:
        """Every write goes through here: the store applies it, then (also if it failed, to be
        safe) the cache forgets the handle, before the caller can answer."""
        try:
            by = str(identity) if identity is not None else None
            return await self.store.update(handle, change, by=by)
        finally:
            self.cache.invalidate(handle)

    async def _write(
        self,
        handle: str,
        identity: Identity | None,
        plan: Plan,
        condition: Precondition | None = None,
    ) -> tuple[Handle | None, Handle | None]:
        """Run ``plan`` against the record as stored, check that ``identity`` holds what it
        needs, then store its result, provided the record has not changed meanwhile (if it
        has, all of it runs again). So the permission decided is the permission for exactly
        the record that is changed, and the slow part (groups, other records) runs outside
        the store's write lock. A ``condition`` is decided after the permission (it tells
        about the record) and, like it, for exactly the record that is changed."""
        if identity is None:
            raise AuthenticationNeeded(handle, "Authentication needed")
        async with self._locks(handle_key(handle)):
            for attempt in range(_WRITE_ATTEMPTS):
                before = await self.store.get(handle)
                after = await self._decide(handle, identity, plan, before, condition)
                try:
                    return await self._update(handle, _unless_changed(before, after), identity)
                except _Raced:
                    # Another process wrote the handle in between (writes in this one wait
                    # for each other): look again, after a short random pause.
                    await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise StoreUnavailable(f"{handle} kept changing during this write; try again")

    async def write_batch(
        self, ops: Sequence[WriteOp], identity: Identity | None, *, atomic: bool
    ) -> list[Outcome | HandleError]:
        """Apply ``ops`` in order, each as the single write would (the same plans,
        permissions, limits and race checks), with one store read and one commit for all.

        ``atomic``: all or nothing; ``BatchRefused`` names the first write refused, and
        nothing is stored. Otherwise each write applies or is refused on its own, and the
        answer holds its outcome or its error, in order. A write sees what the writes before
        it did (also to the same handle)."""
        if identity is None:
            raise AuthenticationNeeded(None, "Authentication needed")
        results: list[Outcome | HandleError | None] = [None] * len(ops)
        pending = list(range(len(ops)))
        async with self._locks.many(sorted({handle_key(op.handle) for op in ops})):
            for attempt in range(_WRITE_ATTEMPTS):
                raced = await self._batch_round(ops, pending, identity, atomic, results)
                if not raced:
                    return results  # type: ignore[return-value]
                # Another process wrote one of the handles in between: those writes (and,
                # atomic, all of them) are read and decided again.
                pending = raced
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise StoreUnavailable("The batch's handles kept changing during this write; try again")

    async def _batch_round(
        self,
        ops: Sequence[WriteOp],
        pending: list[int],
        identity: Identity,
        atomic: bool,
        results: list[Outcome | HandleError | None],
    ) -> list[int]:
        """Read, decide and store the ``pending`` writes once; the ones that raced another
        process (to run again), filling ``results`` with the others."""
        state = await self.store.get_many([ops[i].handle for i in pending])
        authorities: dict[str, Handle | None] = {}

        async def read(name: str) -> Handle | None:
            """A record whose HS_ADMIN values decide: as the writes before left it."""
            key = handle_key(name)
            if key in state:
                return state[key]
            if key not in authorities:
                authorities[key] = await self.authorizer.read_record(name)
            return authorities[key]

        decided: list[int] = []
        changes: list[tuple[str, Change]] = []
        for i in pending:
            op = ops[i]
            key = handle_key(op.handle)
            before = state[key]
            try:
                after = await self._decide(op.handle, identity, op.plan, before, None, read)
            except HandleError as error:
                if atomic:
                    raise BatchRefused(i, error) from None
                results[i] = error
                continue
            state[key] = after
            decided.append(i)
            changes.append((op.handle, _unless_changed(before, after)))
        try:
            outcomes = await self.store.update_many(changes, atomic=atomic, by=str(identity))
        except ChangeFailed as failed:
            if isinstance(failed.error, _Raced):
                return pending
            if isinstance(failed.error, StoreUnavailable):
                raise failed.error from None  # the store's failure, not the write's
            if isinstance(failed.error, HandleError):
                raise BatchRefused(decided[failed.index], failed.error) from None
            raise failed.error from None
        finally:
            for handle, _ in changes:
                self.cache.invalidate(handle)
        raced = []
        for i, outcome in zip(decided, outcomes, strict=True):
            if isinstance(outcome, _Raced):
                raced.append(i)
            elif isinstance(outcome, Exception) and not isinstance(outcome, HandleError):
                raise outcome
            else:
                results[i] = outcome
        return raced

    async def _decide(
        self,
        handle: str,
        identity: Identity,
        plan: Plan,
        before: Handle | None,
        condition: Precondition | None,
        read: Callable[[str], Awaitable[Handle | None]] | None = None,
    ) -> Handle | None:
        """The record ``plan`` makes of ``before`` (as stored), if ``identity`` may make it
        and ``condition`` holds; else raise. ``read`` reads the record whose HS_ADMIN values
        decide when it is not ``before`` (a creation's prefix handle): by default as
        authorization reads records, kept between writes (``KeptRecords``)."""
        try:
            after, needs, authority = plan(before)
        except _RefusedOnceAllowed as refusal:
            # Decided on permission first: the answer is the same whether or not the
            # values it names exist, to anyone who may not change them.
            await self._authorize(identity, handle, refusal.needs, refusal.authority)
            if condition is not None:
                await self._check_condition(handle, identity, before, condition)
            raise refusal.error from None
        if isinstance(authority, str):
            authority = await (read or self.authorizer.read_record)(authority)
        await self._authorize(identity, handle, needs, authority)
        if condition is not None:
            await self._check_condition(handle, identity, before, condition)
        # After the check: the sizes would tell others what the record holds.
        if after is not None:
            self._check_size(after)
        return after

    async def _check_condition(
        self, handle: str, identity: Identity, record: Handle | None, condition: Precondition
    ) -> None:
        """Raise ``PreconditionFailed`` unless ``record`` (as stored) meets ``condition``."""
        if record is None:
            if condition.match is not None:
                raise PreconditionFailed(
                    handle, f"{handle} does not exist: If-Match needs a stored record"
                )
            return
        if condition.none_match is not None and "*" in condition.none_match:
            raise PreconditionFailed(handle, f"{handle} exists (If-None-Match: *)")
        if condition.match is not None and "*" in condition.match:
            if condition.none_match is None:
                return
        view = await self.visible_values(identity, handle, record)
        tags = set(condition.tags(handle, view)) if view is not None else set()
        if condition.match is not None and "*" not in condition.match:
            if not tags & condition.match:
                raise PreconditionFailed(
                    handle,
                    f"{handle} has changed: its record no longer has the entity tag given "
                    "in If-Match (read it again)",
                )
        if condition.none_match is not None and tags & condition.none_match:
            raise PreconditionFailed(
                handle, f"{handle} has one of the entity tags given in If-None-Match"
            )

    async def visible_values(
        self, identity: Identity, handle: str, record: Handle
    ) -> tuple[HandleValue, ...] | None:
        """The values an unfiltered ``publicOnly=false`` read of ``record`` by ``identity``
        shows (``resolve``'s rules): all of them with READ_VALUE, else the public ones;
        ``None`` where that read is refused (a value readable by no one)."""
        if not await self.authorizer.holds(identity, handle, P.READ_VALUE, record):
            return tuple(v for v in record.values if v.public_read)
        if any(not v.public_read and not v.admin_read for v in record.values):
            return None
        return record.values

    def _check_size(self, record: Handle) -> None:
        limits = self.config.handle
        if len(record.values) > limits.max_values:
            raise InvalidValue(
                record.handle,
                f"{record.handle} would hold {len(record.values)} values; at most "
                f"{limits.max_values} are kept per handle",
            )
        size = sum(
            len(v.type.encode("utf-8", "surrogatepass")) + len(v.data) for v in record.values
        )
        if size > limits.max_record_bytes:
            raise RecordTooLarge(
                record.handle,
                f"{record.handle} would hold {size} bytes of values; at most "
                f"{limits.max_record_bytes} are kept per handle",
            )

    async def _authorize(
        self,
        identity: Identity,
        handle: str,
        needs: Needs | Sequence[Needs],
        authority: Handle | None,
    ) -> None:
        """Allow the write if ``identity`` holds one of the alternatives in ``needs``; values
        with admin write off stay unchanged whoever asks."""
        alternatives = (needs,) if isinstance(needs, Needs) else tuple(needs)
        read_only = sorted({i for n in alternatives for i in n.read_only})
        for alternative in alternatives:
            if await self.authorizer.holds(identity, handle, alternative.permissions, authority):
                if read_only:  # told only to those who may otherwise change the record
                    raise InsufficientPermissions(
                        handle,
                        f"Value is read-only: admin write is off for the value at index "
                        f"{', '.join(map(str, read_only))}",
                    )
                return
        wanted = " or ".join(describe(n.permissions) for n in alternatives)
        where = (
            "its prefix handle"
            if authority is None
            else f"the HS_ADMIN values of {authority.handle}"
        )
        raise InvalidAdmin(handle, f"{identity} does not hold {wanted} on {handle} ({where})")

    def _prepare(self, values: Iterable[HandleValue]) -> list[HandleValue]:
        """Stamp the write time and hash any secret key given in plain."""
        now = int(self._clock())
        prepared = []
        limit = self.config.handle.max_value_bytes
        for value in values:
            if len(value.data) > limit:
                raise InvalidValue(
                    None,
                    f"The value at index {value.index} holds {len(value.data)} bytes; "
                    f"at most {limit} are kept per value",
                )
            if is_location_list(value) and len(value.data) > self.config.handle.max_location_bytes:
                raise InvalidValue(
                    None,
                    f"The location list (10320/loc) at index {value.index} holds "
                    f"{len(value.data)} bytes; at most {self.config.handle.max_location_bytes}",
                )
            data = None
            if value.type.upper() == SECKEY_TYPE and value.data not in KEEP_MARKERS:
                if not value.data:
                    raise InvalidValue(None, f"The HS_SECKEY at index {value.index} is empty")
                # Whatever a client gives is a secret to keep, never a stored form taken as
                # it is (one made elsewhere could be anything: a hash costing seconds a guess).
                data = self.keeper.keep(value.data)
            prepared.append(value.stamped(now, data))
        return prepared

    @staticmethod
    def _restore_secrets(
        handle: str, before: Handle | None, values: Sequence[HandleValue]
    ) -> list[HandleValue]:
        """Secret keys written back as a read shows them (``REDACTED``) keep the stored
        secret."""
        restored = []
        for value in values:
            if value.type.upper() == SECKEY_TYPE and value.data in KEEP_MARKERS:
                old = before.value_at(value.index) if before is not None else None
                if old is None or old.type.upper() != SECKEY_TYPE:
                    raise InvalidValue(
                        handle,
                        f"The HS_SECKEY at index {value.index} has no stored secret to keep: "
                        "give the secret key",
                    )
                value = dataclasses.replace(value, data=old.data)
            restored.append(value)
        return restored

    def _new_record(self, name: str, prepared: Sequence[HandleValue]):
        """The plan for a handle that does not exist yet: ADD_HANDLE on its prefix handle."""
        if _FORBIDDEN_IN_NEW_HANDLE.search(name):
            raise InvalidHandle(
                name,
                "Handle contains control, invisible or bidirectional formatting characters",
            )
        fresh = self._restore_secrets(name, None, prepared)
        prefix_handle = f"{PREFIX_HANDLE_AUTHORITY}/{self.authorizer.administered_prefix(name)}"
        return Handle(name, tuple(fresh)), Needs(P.ADD_HANDLE), prefix_handle

    def _guard(self, before: Handle | None, after: Handle | None) -> None:
        """The configured values of a prefix handle change only through the configuration."""
        if before is None or not self.is_prefix_handle(before.handle):
            return
        if after is None:
            raise InsufficientPermissions(
                before.handle,
                f"The prefix handle {before.handle} is homed from the configuration "
                "and cannot be deleted",
            )
        site = self.site is not None
        old = {v.index: v for v in before.values if _is_managed(v, site=site)}
        new = {v.index: v for v in after.values if _is_managed(v, site=site)}
        changed = sorted(
            i
            for i in old.keys() | new.keys()
            if i not in old or i not in new or not old[i].same_content(new[i])
        )
        if changed:
            raise InsufficientPermissions(
                before.handle,
                f"The values at index {', '.join(map(str, changed))} of {before.handle} "
                "(admin secret keys and the admin group from [[admins]], this site's HS_SITE "
                "from [native]) come from the configuration: change them there and restart",
            )

    def plan_create(
        self, handle: str, values: Sequence[HandleValue], *, overwrite: bool
    ) -> WriteOp:
        """Create ``handle`` with ``values``, or (``overwrite``) replace its whole record.

        A new handle needs ADD_HANDLE on the prefix handle. Replacing one needs what the
        difference needs (``permissions.needs_to_replace``), or ADD_ADMIN, or DELETE_HANDLE on
        the handle itself, as the reference server. No HS_ADMIN value is added for the caller:
        a handle created without one can be changed only by the prefix's configured admins."""
        self.check_handle(handle)
        prepared = self._prepare(values)

        def plan(before: Handle | None):
            if before is None:
                return self._new_record(handle, prepared)
            if not overwrite:
                raise HandleAlreadyExists(handle)
            after, needs = needs_to_replace(before, self._restore_secrets(handle, before, prepared))
            self._guard(before, after)
            return after, _replace_alternatives(needs), before

        return WriteOp(handle, plan, new_indexes=None)

    def plan_mint(self, stem: str, values: Sequence[HandleValue]) -> WriteOp:
        """Create a new handle named ``stem`` + a random UUID."""
        self.check_handle(stem, stem=True)
        if self.is_prefix_handle(stem):
            raise InvalidHandle(stem, "Cannot mint prefix handles")
        prepared = self._prepare(values)
        name = stem + str(uuid.uuid4())
        self.check_handle(name)

        def plan(before: Handle | None):
            if before is not None:
                raise HandleAlreadyExists(name)
            return self._new_record(name, prepared)

        return WriteOp(name, plan, new_indexes=None)

    def plan_add_values(
        self, handle: str, values: Sequence[HandleValue], *, overwrite: bool
    ) -> WriteOp:
        """Add ``values`` to an existing handle, replacing those at the same indexes when
        ``overwrite``."""
        self.check_handle(handle)
        prepared = self._prepare(values)
        new_indexes = frozenset(v.index for v in prepared)

        def plan(before: Handle | None):
            if before is None:
                raise HandleNotFound(handle)
            clash = before.indexes & new_indexes
            if clash and not overwrite:
                added = [v for v in prepared if v.index not in clash]
                _, needs = merge_added(before, self._restore_secrets(handle, before, added))
                raise _RefusedOnceAllowed(
                    ValueAlreadyExists(handle, clash), needs | Needs(P.ADD_VALUE), before
                )
            after, needs = merge_added(before, self._restore_secrets(handle, before, prepared))
            self._guard(before, after)
            return after, needs, before

        return WriteOp(handle, plan, new_indexes=new_indexes)

    def plan_remove_values(self, handle: str, indexes: Collection[int]) -> WriteOp:
        """Remove the values at ``indexes``; all must exist, else nothing is removed."""
        self.check_handle(handle)
        wanted = set(indexes)

        def plan(before: Handle | None):
            if before is None:
                raise HandleNotFound(handle)
            missing = wanted - before.indexes
            if missing:
                needs = needs_to_remove(before, wanted & before.indexes) | Needs(P.REMOVE_VALUE)
                raise _RefusedOnceAllowed(ValuesNotFound(handle, missing), needs, before)
            after = Handle(before.handle, tuple(v for v in before.values if v.index not in wanted))
            self._guard(before, after)
            return after, needs_to_remove(before, wanted), before

        return WriteOp(handle, plan, new_indexes=None)

    def plan_delete(self, handle: str) -> WriteOp:
        self.check_handle(handle)

        def plan(before: Handle | None):
            if before is None:
                raise HandleNotFound(handle)
            self._guard(before, None)
            return None, Needs(P.DELETE_HANDLE), before

        return WriteOp(handle, plan, new_indexes=None)

    async def create(
        self,
        handle: str,
        values: Sequence[HandleValue],
        *,
        overwrite: bool,
        identity: Identity | None,
        condition: Precondition | None = None,
    ) -> bool:
        """``plan_create``, applied. True if the handle is new."""
        op = self.plan_create(handle, values, overwrite=overwrite)
        before, _ = await self._write(handle, identity, op.plan, condition)
        return before is None

    async def mint(
        self,
        stem: str,
        values: Sequence[HandleValue],
        *,
        identity: Identity | None,
        condition: Precondition | None = None,
    ) -> str:
        """``plan_mint``, applied (with another name if one was taken); the name."""
        for _ in range(_MINT_ATTEMPTS):
            op = self.plan_mint(stem, values)
            try:
                await self._write(op.handle, identity, op.plan, condition)
            except HandleAlreadyExists:
                log.warning("minted suffix collided with an existing handle: %s", op.handle)
                continue
            return op.handle
        raise HandleAlreadyExists(stem)  # pragma: no cover - 8 UUID collisions in a row

    async def add_values(
        self,
        handle: str,
        values: Sequence[HandleValue],
        *,
        overwrite: bool,
        identity: Identity | None,
        condition: Precondition | None = None,
    ) -> bool:
        """``plan_add_values``, applied. True if every value was new."""
        op = self.plan_add_values(handle, values, overwrite=overwrite)
        before, _ = await self._write(handle, identity, op.plan, condition)
        return op.created(before)

    async def modify_values(
        self, handle: str, values: Sequence[HandleValue], *, identity: Identity | None
    ) -> None:
        """Replace the values at the indexes of ``values``; all must exist, else nothing
        changes (the native protocol's modify-value)."""
        self.check_handle(handle)
        prepared = self._prepare(values)
        wanted = {v.index for v in prepared}

        def plan(before: Handle | None):
            if before is None:
                raise HandleNotFound(handle)
            restored = self._restore_secrets(handle, before, prepared)
            after, needs = merge_added(before, restored)
            missing = wanted - before.indexes
            if missing:
                raise _RefusedOnceAllowed(ValuesNotFound(handle, missing), needs, before)
            self._guard(before, after)
            return after, needs, before

        await self._write(handle, identity, plan)

    async def remove_values(
        self,
        handle: str,
        indexes: Collection[int],
        *,
        identity: Identity | None,
        condition: Precondition | None = None,
    ) -> None:
        """``plan_remove_values``, applied."""
        op = self.plan_remove_values(handle, indexes)
        await self._write(handle, identity, op.plan, condition)

    async def delete(
        self,
        handle: str,
        *,
        identity: Identity | None,
        condition: Precondition | None = None,
    ) -> None:
        op = self.plan_delete(handle)
        await self._write(handle, identity, op.plan, condition)

    async def purge(self, handle: str | None, *, identity: Identity | None) -> None:
        """Forget the cached record of ``handle`` (``None``: every cached record, and what
        global mode keeps of other prefixes' sites) in every process on this store. For the
        server's operators: the identities of ``[[admins]]``."""
        if identity is None:
            raise AuthenticationNeeded(handle, "Purging the cache needs an [[admins]] identity")
        operators = {(a.index, handle_key(a.handle)) for a in self.config.admins}
        if (identity.index, handle_key(identity.handle)) not in operators:
            raise InvalidAdmin(
                handle, f"{identity} is not among this server's [[admins]]: it may not purge"
            )
        if handle is not None:
            self.check_handle(handle, homed_elsewhere=True)
        key = handle_key(handle) if handle is not None else None
        _CacheInvalidator(self).changed(key)  # this process at once; the others are told
        await self.store.announce([key])

    # -- start-up --------------------------------------------------------------------------

    async def start(self) -> None:
        """Before the first request: home the prefixes, fetch the sessions' shared key, and
        start following other nodes' writes."""
        await self.home_prefixes()
        await self.authenticator.sessions.start()
        await self.watch_store()

    async def watch_store(self) -> None:
        """Keep the cache true to writes made by other nodes on the same store: each one the
        store tells of is forgotten; while the store cannot tell (not listening yet, or its
        channel lost) nothing is cached."""
        self.cache.suspend()
        if not await self.store.watch(_CacheInvalidator(self)):
            self.cache.resume()  # this store has one process: its own writes invalidate

    async def home_prefixes(self, *, rekey: bool = False) -> None:
        """Make each configured prefix's handle ``0.NA/<prefix>`` hold exactly the configured
        admins: an HS_SECKEY value (kept encrypted) at each admin's index, and an HS_VLIST at
        200 naming them; a new prefix handle also gets an HS_ADMIN at 100 granting that group
        everything; and, when the native protocol is served, this site's HS_SITE at 1 (what
        the Handle System finds this site by). Secrets already kept as configured stay as
        they are; other values are left alone.

        An admin secret kept with another server key means this node's ``[auth] key_file``
        is not the one the others use: ``KeyFileError``, unless ``rekey`` (the key was lost,
        and ``handle-server keygen --rekey-admins`` keeps the admins' secrets anew)."""
        for prefix in self.config.handle.prefixes:
            name = f"{PREFIX_HANDLE_AUTHORITY}/{prefix}"
            admins = [a for a in self.config.admins if handle_key(a.prefix) == handle_key(prefix)]
            current = await self.store.get(name)
            now = int(self._clock())
            wanted: dict[int, HandleValue] = {}
            for admin in admins:
                secret = admin.secret.encode("utf-8")
                existing = current.value_at(admin.index) if current else None
                stored = existing.data if existing is not None else b""
                other_key = SecretKeeper.kept_with(stored)
                if other_key not in (None, self.keeper.key_id) and not rekey:
                    raise KeyFileError(
                        f"{admin.id}'s secret was kept with server key {other_key.decode()}, and "
                        f"{self.config.auth.key_file} holds key {self.keeper.key_id.decode()}: "
                        "every node on one store needs the same key file. If that key is lost, "
                        "run handle-server keygen --rekey-admins (other identities will then "
                        "need new secrets)"
                    )
                if existing is None or not self.keeper.matches(secret, stored):
                    stored = self.keeper.keep(secret)
                wanted[admin.index] = HandleValue(
                    index=admin.index,
                    type=SECKEY_TYPE,
                    data=stored,
                    timestamp=now,
                    public_read=False,
                )
            if admins:
                group = encode_vlist(ValueReference(name, a.index) for a in admins)
                wanted[ADMIN_GROUP_INDEX] = HandleValue(
                    index=ADMIN_GROUP_INDEX, type="HS_VLIST", data=group, timestamp=now
                )
            held = current.value_at(SITE_INDEX) if current else None
            if self.site is not None and held is not None and held.type.upper() != "HS_SITE":
                log.warning(
                    "%s holds a %s at index %d, where this site's HS_SITE goes: it is left "
                    "alone, and the Handle System cannot learn this site from %s",
                    name,
                    held.type,
                    SITE_INDEX,
                    name,
                )
            elif self.site is not None:
                wanted[SITE_INDEX] = HandleValue(
                    index=SITE_INDEX, type="HS_SITE", data=self.site, timestamp=now
                )
            homed = functools.partial(_homed, name, wanted, now, site=self.site is not None)
            await self._update(name, homed)
            log.info("homed prefix %s with %d admin(s)", prefix, len(admins))


def _homed(
    name: str, wanted: dict[int, HandleValue], now: int, before: Handle | None, *, site: bool
) -> Handle:
    """The prefix handle ``name`` with its configured values set to ``wanted`` (unchanged ones
    keep their timestamps) and its other values kept; a new one also gets an HS_ADMIN at 100
    granting the admin group every permission."""
    kept = {v.index: v for v in (before.values if before else ()) if not _is_managed(v, site=site)}
    for index, value in wanted.items():
        old = before.value_at(index) if before else None
        kept[index] = old if old is not None and old.same_content(value) else value
    if before is None and PREFIX_ADMIN_INDEX not in kept:
        admin = AdminRecord(name, ADMIN_GROUP_INDEX, AdminPermission.all())
        kept[PREFIX_ADMIN_INDEX] = HandleValue(
            index=PREFIX_ADMIN_INDEX, type="HS_ADMIN", data=encode_admin(admin), timestamp=now
        )
    return Handle(before.handle if before else name, tuple(kept.values()))


class _CacheInvalidator:
    """Store news -> the caches (see ``storage.ChangeListener``): the local records', and in
    global mode the remote records' (told of purges)."""

    def __init__(self, service: HandleService) -> None:
        self._service = service

    def changed(self, key: str | None) -> None:
        for cache in (self._service.cache, self._service.remote):
            if cache is None:
                continue
            if key is None:
                cache.clear()
            else:
                cache.forget_key(key)

    def watching(self, live: bool) -> None:
        if live:
            self._service.cache.resume()
        else:
            self._service.cache.suspend()


def _readable(version: Version) -> Version:
    """``version`` without the values nobody may read."""
    record = version.record
    if record is None or all(v.public_read or v.admin_read for v in record.values):
        return version
    shown = tuple(v for v in record.values if v.public_read or v.admin_read)
    return dataclasses.replace(version, record=Handle(record.handle, shown))


def _unless_changed(before: Handle | None, after: Handle | None) -> Change:
    """The change that stores ``after``, provided the record is still ``before``."""

    def change(current: Handle | None) -> Handle | None:
        if current != before:
            raise _Raced
        return after

    return change


class _Raced(Exception):
    """The record changed between a write's permission check and its store update."""


class _RefusedOnceAllowed(Exception):
    """A plan's refusal (``error``) that would tell what a record holds: it is answered only
    to an identity holding ``needs`` on ``authority``; anyone else is refused for want of
    permission, whether or not the values exist."""

    def __init__(self, error: HandleError, needs: Needs, authority: Handle) -> None:
        self.error, self.needs, self.authority = error, needs, authority


def _replace_alternatives(needs: Needs) -> tuple[Needs, ...]:
    """Replacing a whole record is allowed with what its difference needs, or with ADD_ADMIN,
    or with DELETE_HANDLE (``HandleServer.doCreateHandle``)."""
    if not needs.permissions:
        return (needs,)
    fallbacks = (
        Needs(P.ADD_ADMIN, needs.read_only),
        Needs(P.DELETE_HANDLE, needs.read_only),
    )
    if needs.permissions & P.ADD_ADMIN:
        return fallbacks
    return (needs, *fallbacks)
