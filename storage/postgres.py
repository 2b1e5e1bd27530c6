"""PostgreSQL backend on asyncpg: several server nodes on one shared store.

Every change is one transaction on a pooled connection. The record's row is locked
(``SELECT ... FOR UPDATE``) before the change sees it, so concurrent writers of one handle, in
this process or on another node, take turns; two creates of one new handle race on its primary
key, and the loser runs again and sees the winner's record. A COMMIT that returns is durable
(``synchronous_commit`` as the server has it, ``on`` by default).

Any failure to reach the server is ``StoreUnavailable``: the pool opens new connections when
the database is back, so the store recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from typing import TypeVar

import asyncpg

from .anchors import LONG_SKIP, PageAnchors, paged
from .base import (
    Change,
    ChangeListener,
    Exported,
    HandleStore,
    ImportResult,
    Outcome,
    SessionRecord,
    Version,
)
from .errors import (
    HandleError,
    InvalidData,
    SchemaMismatch,
    SearchTimeout,
    StoreUnavailable,
)
from .model import Handle, HandleValue, handle_key, prefix_of
from .rows import (
    PRUNE_HISTORY_SQL,
    SEARCH_COLUMNS,
    VALUE_COLUMNS,
    VERSION_COLUMNS,
    AuthSQL,
    ImportPlan,
    RecordDiff,
    by_key,
    changed_by_key,
    diff_records,
    exported_batches,
    latest_version,
    migrations,
    numbered,
    plan_import,
    prefix_bounds,
    pruned_in_steps,
    records_from_rows,
    run_changes,
    search_query,
    search_rows,
    session_from_row,
    session_row,
    value_from_row,
    value_row,
    version_from_row,
    version_rows,
)

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

_VERSION_TABLE = "handle_server_schema"
_MIGRATION_LOCK = 0x68616E646C65  # pg_advisory_xact_lock key: "handle" in ASCII
_RACE_ATTEMPTS = 8
#: NOTIFY channel of committed changes; the payload is the handle's key ("" for any handle).
CHANNEL = "handle_server_changes"
_MAX_PAYLOAD = 7999  # bytes PostgreSQL allows in a NOTIFY payload
#: How the serving connections name themselves in pg_stat_activity.
APPLICATION_NAME = "handle-server"
_LISTENER_NAME = "handle-server listener"
_PING_INTERVAL = 5.0
#: Errors that mean the database (or the way to it) is not there right now, or that the
#: connection broke under a statement (InternalClientError: "cannot switch to state ...").
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
#: Errors after which a transaction can simply run again.
_RETRY = (asyncpg.UniqueViolationError, asyncpg.SerializationError, asyncpg.DeadlockDetectedError)


SCHEMA_VERSION = latest_version("postgresql")

T = TypeVar("T")

#: Every statement of this store reaches its rows through an index (by key, by key range, by
#: trigram). Without statistics, in a table that grew since autovacuum last analysed it (an
#: import or a stream of batches into a fresh store: minutes), the planner took `key =
#: ANY(512 keys)` for most of the table and scanned all of it, once a batch: quadratic (a
#: 200,000-handle stream took minutes instead of seconds). A sequential scan is still made
#: where no index serves (this only prices it out where one does).
PLANNER_SETTINGS = {"enable_seqscan": "off"}


class _Raced(Exception):
    """A create lost the race for a new handle's key; the transaction runs again."""


def _translated(exc: BaseException, what: str) -> HandleError:
    """The one place where a driver error becomes the store's: data the database refuses
    (a NUL in text, a value out of range: SQLSTATE class 22) is the caller's mistake; the
    rest, the database or the way to it failing."""
    if isinstance(exc, asyncpg.DataError):
        return InvalidData(f"PostgreSQL cannot take this {what}: {exc}")
    return StoreUnavailable(f"PostgreSQL {what} failed: {exc or type(exc).__name__}")


#: Every error of the driver: what ``_translated`` turns into the store's own.
_DRIVER = (*_UNAVAILABLE, asyncpg.PostgresError)


class PostgresStore(HandleStore):
    def __init__(self, pool: asyncpg.Pool, dsn: str, *, schema_from: int = SCHEMA_VERSION) -> None:
        self._pool = pool
        self.dsn = dsn
        self.schema_from = schema_from
        self._watcher: asyncio.Task[None] | None = None
        self._listeners: list[ChangeListener] = []
        self._live = False
        #: Where listing pages start; trusted only while other nodes' writes are heard
        #: (``_live``), since a handle created or deleted anywhere moves the pages after it.
        self._anchors = PageAnchors()
        self.long_skip = LONG_SKIP

    @classmethod
    async def open(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 10, migrate: bool = True
    ) -> PostgresStore:
        """Connect to ``dsn`` and bring its schema up to date (``migrate``) or only check it.

        An empty database is given the schema either way. Raises ``StoreUnavailable`` if the
        server cannot be reached, ``SchemaMismatch`` if the database holds a schema this code
        does not know (newer), or an older one and ``migrate`` is false."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                command_timeout=30,
                max_inactive_connection_lifetime=300,
                server_settings={"application_name": APPLICATION_NAME, **PLANNER_SETTINGS},
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL is unreachable: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                schema_from = await _migrate(conn, migrate=migrate)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, dsn, schema_from=schema_from)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._pool.close()

    # changes made on other nodes

    async def watch(self, listener: ChangeListener) -> bool:
        """LISTEN on a connection of its own; every write NOTIFYs in its transaction, so
        the news goes out when it commits. A lost connection is told (``watching(False)``) and
        opened again, with a ping every few seconds to find one that died silently."""
        self._listeners.append(listener)
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())
        elif self._live:
            listener.watching(True)
        return True

    async def announce(self, keys: Sequence[str | None]) -> None:
        """A NOTIFY each, as writes send ("" for every record)."""
        for key in keys:
            payload = key if key and len(key.encode("utf-8")) <= _MAX_PAYLOAD else ""
            try:
                await self._pool.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
                raise _translated(exc, "write") from exc

    def _changed(self, payload: str) -> None:
        self._anchors.changed(payload or None)
        for listener in self._listeners:
            listener.changed(payload or None)

    def _watching(self, live: bool) -> None:
        self._anchors.watching(live)
        self._live = live
        for listener in self._listeners:
            listener.watching(live)

    async def _watch(self) -> None:
        delay = 0.05
        while True:
            try:
                conn = await asyncpg.connect(
                    self.dsn, server_settings={"application_name": _LISTENER_NAME}
                )
            except _DRIVER:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, p: self._changed(p))
                self._watching(True)
                delay = 0.05
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), _PING_INTERVAL)
                        break
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), _PING_INTERVAL)
            except _DRIVER:
                pass
            finally:
                self._watching(False)
                conn.terminate()

    # reads

    async def _read(self, query: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """Run a read on the pool; once more on a fresh connection if the one it got had
        broken (a backend that was terminated, a network cut): a read changes nothing, so
        running it again is safe."""
        for attempt in (1, 2):
            try:
                return await query(self._pool)
            except _UNAVAILABLE as exc:
                if attempt == 2 or isinstance(exc, asyncio.TimeoutError):
                    raise _translated(exc, "read") from exc
            except asyncpg.PostgresError as exc:
                raise _translated(exc, "read") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, handle: str) -> Handle | None:
        key = handle_key(handle)
        if "\x00" in key:
            return None  # PostgreSQL text holds no NUL: no handle has one
        rows = await self._read(
            lambda pool: pool.fetch(
                "SELECT h.handle, v.idx, v.type, v.data, v.ttl_type, v.ttl, v.timestamp,"
                " v.permissions, v.refs FROM handles h LEFT JOIN handle_values v ON v.key = h.key"
                " WHERE h.key = $1 ORDER BY v.idx",
                key,
            )
        )
        if not rows:
            return None
        values = tuple(value_from_row(tuple(r)[1:]) for r in rows if r["idx"] is not None)
        return Handle(rows[0]["handle"], values)

    async def get_many(self, handles: Sequence[str]) -> dict[str, Handle | None]:
        keys = list(dict.fromkeys(handle_key(h) for h in handles))
        found: dict[str, Handle | None] = dict.fromkeys(keys)
        asked = [k for k in keys if "\x00" not in k]  # no handle has a NUL
        rows = await self._read(
            lambda pool: pool.fetch(
                "SELECT h.key, h.handle, v.idx, v.type, v.data, v.ttl_type, v.ttl, v.timestamp,"
                " v.permissions, v.refs FROM handles h LEFT JOIN handle_values v ON v.key = h.key"
                " WHERE h.key = ANY($1::text[]) ORDER BY h.key, v.idx",
                asked,
            )
        )
        by_key: dict[str, list] = {}
        for row in rows:
            by_key.setdefault(row["key"], []).append(row)
        for key, group in by_key.items():
            values = tuple(value_from_row(tuple(r)[2:]) for r in group if r["idx"] is not None)
            found[key] = Handle(group[0]["handle"], values)
        return found

    async def history(
        self, handle: str, *, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Version]]:
        key = handle_key(handle)
        if "\x00" in key:
            return 0, []
        rows = await self._read(
            lambda pool: pool.fetch(
                f"SELECT {VERSION_COLUMNS}, count(*) OVER () FROM handle_versions"
                " WHERE key = $1 ORDER BY version LIMIT $2 OFFSET $3",
                key,
                limit,
                offset,
            )
        )
        if rows:
            return int(rows[0][-1]), [version_from_row(tuple(r)[:-1]) for r in rows]
        total = await self._read(
            lambda pool: pool.fetchval("SELECT count(*) FROM handle_versions WHERE key = $1", key)
        )
        return int(total), []

    async def version(self, handle: str, number: int) -> Version | None:
        key = handle_key(handle)
        if "\x00" in key or not -(2**31) <= number < 2**31:
            return None
        row = await self._read(
            lambda pool: pool.fetchrow(
                f"SELECT {VERSION_COLUMNS} FROM handle_versions WHERE key = $1 AND version = $2",
                key,
                number,
            )
        )
        return version_from_row(tuple(row)) if row is not None else None

    async def count_handles(self, prefix: str) -> int:
        count = await self._read(
            lambda pool: pool.fetchval(
                "SELECT count FROM prefix_counts WHERE prefix = $1", handle_key(prefix)
            )
        )
        return int(count or 0)

    async def iter_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None, batch: int = 10_000
    ) -> AsyncIterator[list[str]]:
        """Pages are read by key (``key > last``). A page deep in a prefix would cost a skip
        of ``offset`` index entries; while this store hears of other nodes' writes, the first
        key of every page served is remembered (``PageAnchors``, as the SQLite store does), so
        the same or a following page is an index seek. (A write on another node reaches the
        anchors when its notification arrives, a few milliseconds after its commit: a listing
        in between pages as if it had not happened yet.)"""
        low, high = prefix_bounds(prefix)
        pages = paged(
            lambda after, size, skip: self._page_rows(low, high, after, size, skip),
            self._anchors if self._live else None,
            low,
            offset=offset,
            limit=limit,
            batch=batch,
            long_skip=self.long_skip,
            back=lambda key, skip: self._key_back(low, key, skip),
        )
        async for names in pages:
            yield names

    async def _page_rows(
        self, low: str, high: str, after: str | None, size: int, skip: int
    ) -> list[asyncpg.Record]:
        """``size`` (key, handle) rows of ``[low, high)`` after the key ``after`` (or from
        ``low``), skipping ``skip``."""
        if after is None:
            sql = "SELECT key, handle FROM handles WHERE key >= $1 AND key < $2 ORDER BY key"
            bound = low
        else:
            sql = "SELECT key, handle FROM handles WHERE key > $1 AND key < $2 ORDER BY key"
            bound = after
        try:
            return await self._pool.fetch(sql + " LIMIT $3 OFFSET $4", bound, high, size, skip)
        except _DRIVER as exc:
            raise _translated(exc, "read") from exc

    async def _key_back(self, low: str, key: str, skip: int) -> str | None:
        """The key ``skip`` places down from ``key`` among the keys of ``[low, key]``."""
        try:
            return await self._pool.fetchval(
                "SELECT key FROM handles WHERE key >= $1 AND key <= $2 ORDER BY key DESC"
                " LIMIT 1 OFFSET $3",
                low,
                key,
                skip,
            )
        except _DRIVER as exc:
            raise _translated(exc, "read") from exc

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in one read-only, repeatable-read transaction: a snapshot
        that writes committed meanwhile do not change. Driver failures are the store's."""
        try:
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                yield conn
        except _DRIVER as exc:
            raise _translated(exc, "read") from exc

    async def iter_records(
        self, *, after: str = "", batch: int = 1000
    ) -> AsyncIterator[list[Handle]]:
        async with self._snapshot() as conn:
            last = after
            while True:
                names = await conn.fetch(
                    "SELECT key, handle FROM handles WHERE key > $1 ORDER BY key LIMIT $2",
                    last,
                    batch,
                )
                if not names:
                    return
                high = names[-1]["key"]
                rows = await conn.fetch(
                    f"SELECT key, {VALUE_COLUMNS} FROM handle_values"
                    " WHERE key > $1 AND key <= $2 ORDER BY key, idx",
                    last,
                    high,
                )
                yield list(records_from_rows(names, rows).values())
                last = high

    async def iter_exported(
        self, *, after: str = "", batch: int = 1000
    ) -> AsyncIterator[list[Exported]]:
        async with self._snapshot() as conn:

            async def fetch(sql: str, params: Sequence[object]) -> list[asyncpg.Record]:
                return await conn.fetch(numbered(sql), *params)

            async for entries in exported_batches(fetch, after=after, batch=batch):
                yield entries

    # writes

    async def prune_history(
        self, *, keep_versions: int | None = None, before: float | None = None
    ) -> int:
        if keep_versions is None and before is None:
            return 0

        async def fetch(sql: str, params: Sequence[object]) -> list[asyncpg.Record]:
            return await self._read(lambda pool: pool.fetch(numbered(sql), *params))

        async def prune(low: str, high: str) -> int:
            async def work(conn: asyncpg.Connection) -> int:
                status = await conn.execute(
                    numbered(PRUNE_HISTORY_SQL), low, high, keep_versions, before
                )
                return int(status.split()[-1])  # "DELETE n"

            return await self._transaction(work, "the history")

        return await pruned_in_steps(fetch, prune)

    async def import_records(
        self, records: Sequence[Handle | Exported], *, replace: bool = False
    ) -> ImportResult:
        keyed = by_key(records)
        if not keyed:
            return ImportResult()
        return await asyncio.shield(self._import(keyed, replace))

    async def _import(self, keyed: dict[str, Exported], replace: bool) -> ImportResult:
        keys = sorted(keyed)  # rows locked in one order: concurrent imports cannot deadlock

        async def work(conn: asyncpg.Connection) -> ImportResult:
            stored = await _load_many(conn, keys)
            histories: dict[str, list[Version]] = {}
            for row in await conn.fetch(
                f"SELECT key, {VERSION_COLUMNS} FROM handle_versions"
                " WHERE key = ANY($1::text[]) ORDER BY key, version",
                keys,
            ):
                histories.setdefault(row[0], []).append(version_from_row(tuple(row)[1:]))
            plan = plan_import(keyed, stored, histories, replace=replace, at=time.time())
            if plan.touched:
                await _write_imported(conn, plan)
            if plan.versions:
                await conn.copy_records_to_table(
                    "handle_versions", records=plan.versions, columns=_VERSION_FIELDS
                )
            return plan.result

        result = await self._transaction(work, "the imported handles")
        self._anchors.changed(None)  # handles came: every page may have moved
        return result

    async def update(
        self, handle: str, change: Change, *, by: str | None = None
    ) -> tuple[Handle | None, Handle | None]:
        # Shielded, as in the SQLite store: a started transaction ends (commit or rollback)
        # even if its caller is cancelled.
        return await asyncio.shield(self._update(handle_key(handle), change, by))

    async def _update(
        self, key: str, change: Change, by: str | None
    ) -> tuple[Handle | None, Handle | None]:
        async def work(conn: asyncpg.Connection) -> tuple[Handle | None, Handle | None]:
            before = await _load(conn, key)
            after = change(before)
            if after is not None and handle_key(after.handle) != key:
                raise ValueError(f"a change of {key!r} returned a record for {after.handle!r}")
            await _apply(conn, key, before, after)
            if before != after:
                await _add_versions(conn, {key: [(before, after)]}, by)
            return before, after

        before, after = await self._transaction(work, key)
        if (before is None) != (after is None):
            self._anchors.changed(key)  # a handle came or went: the pages after it moved
        return before, after

    async def update_many(
        self, changes: Sequence[tuple[str, Change]], *, atomic: bool, by: str | None = None
    ) -> list[Outcome | Exception]:
        if not changes:
            return []
        keyed = [(handle_key(handle), change) for handle, change in changes]
        return await asyncio.shield(self._update_many(keyed, atomic, by))

    async def _update_many(
        self, keyed: list[tuple[str, Change]], atomic: bool, by: str | None
    ) -> list[Outcome | Exception]:
        """All the records locked and read at once (existing ones in the order of their
        keys), the changes run on them in memory, and what changed written at once: a few
        statements for the whole call, not a few for each change. A new handle that another
        writer made meanwhile makes the transaction run again (the change then sees it)."""
        keys = sorted({key for key, _ in keyed})

        async def work(conn: asyncpg.Connection) -> list[Outcome | Exception]:
            initial = await _load_many(conn, keys)
            final, renamed, outcomes = run_changes(initial, keyed, atomic=atomic)
            await _write_diff(conn, diff_records(initial, final, renamed))
            await _add_versions(conn, changed_by_key(keyed, outcomes), by)
            return outcomes

        outcomes = await self._transaction(work, f"{len(keys)} handles")
        for (key, _), outcome in zip(keyed, outcomes, strict=True):
            if not isinstance(outcome, Exception) and (outcome[0] is None) != (outcome[1] is None):
                self._anchors.changed(key)
        return outcomes

    async def _transaction(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], what: str
    ) -> T:
        """Run ``work`` in a transaction on a pooled connection; again when it lost a race
        (another writer created the same key first, or a deadlock was broken), so that it sees
        the winner's rows. An unreachable server is ``StoreUnavailable``."""
        for attempt in range(_RACE_ATTEMPTS):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    return await work(conn)
            except _RETRY:
                await asyncio.sleep(0.001 * attempt)
            except _DRIVER as exc:
                raise _translated(exc, "write") from exc
        raise StoreUnavailable(f"{what} kept changing during this write; try again")

    # reverse lookup

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
        sql, params = search_query(
            conditions,
            prefix=prefix,
            readable=readable,
            offset=offset,
            limit=limit,
            dialect="postgresql",
        )
        loop = asyncio.get_running_loop()
        deadline = None if time_limit is None else loop.time() + time_limit
        try:
            async with asyncio.timeout_at(deadline), self._pool.acquire() as conn:
                async with conn.transaction(readonly=True):
                    if deadline is not None:
                        left = max(1, int((deadline - loop.time()) * 1000))
                        await conn.execute(f"SET LOCAL statement_timeout = {left}")
                    rows = await conn.fetch(numbered(sql), *params)
        except (TimeoutError, asyncpg.QueryCanceledError):
            raise SearchTimeout(time_limit or 0) from None
        except _DRIVER as exc:
            raise _translated(exc, "search") from exc
        return [r["handle"] for r in rows]

    # authentication state

    async def get_session(self, key: bytes, *, now: float) -> SessionRecord | None:
        row = await self._read(lambda pool: pool.fetchrow(_SQL["GET_SESSION"], key, now))
        return session_from_row(tuple(row)) if row is not None else None

    async def put_session(
        self,
        session: SessionRecord,
        *,
        now: float,
        limit: int,
        per_identity: int | None = None,
    ) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            if await conn.fetchval(_SQL["HAS_SESSION"], session.key) is None:
                await conn.execute(_SQL["DROP_EXPIRED_SESSIONS"], now)
                identity = session.identity
                if per_identity is not None and identity is not None:
                    whose = (identity.handle, identity.index, now)
                    held = await conn.fetchval(_SQL["COUNT_IDENTITY_SESSIONS"], *whose)
                    if held >= per_identity:
                        evict = (*whose, held - per_identity + 1)
                        await conn.execute(_SQL["EVICT_IDENTITY_SESSIONS"], *evict)
                stored = await conn.fetchval(_SQL["COUNT_SESSIONS"])
                if stored >= limit:
                    await conn.execute(_SQL["EVICT_SESSIONS"], stored - limit + 1)
            status = await conn.execute(_SQL["PUT_SESSION"], *session_row(session))
            return not status.endswith(" 0")

        return await self._transaction(work, "the session")

    async def renew_session(self, key: bytes, *, expires: float) -> None:
        try:
            await self._pool.execute(_SQL["RENEW_SESSION"], expires, key, expires)
        except _DRIVER as exc:
            raise _translated(exc, "write") from exc

    async def failures(self, keys: Sequence[str], *, since: float) -> dict[str, tuple[float, int]]:
        if not keys:
            return {}
        sql = numbered(AuthSQL.failures(len(keys)))
        rows = await self._read(lambda pool: pool.fetch(sql, *keys, since))
        return {r["key"]: (r["first"], r["count"]) for r in rows}

    async def add_failure(self, keys: Sequence[str], *, now: float, since: float) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            # Keys locked in one order, old rows dropped only where no one holds them: two
            # nodes counting failures at once do not deadlock.
            await conn.executemany(
                _SQL["ADD_FAILURE"], [(key, now, since, since) for key in sorted(keys)]
            )
            await conn.execute(_SQL["DROP_OLD_FAILURES"], since)

        await self._transaction(work, "the failure counts")

    async def shared_secret(self, name: str, candidate: bytes) -> bytes:
        async def work(conn: asyncpg.Connection) -> bytes:
            await conn.execute(_SQL["ADD_SECRET"], name, candidate)
            return bytes(await conn.fetchval(_SQL["GET_SECRET"], name))

        return await self._transaction(work, "the shared secret")

    async def put_ticket(
        self, key: bytes, data: bytes, *, expires: float, now: float, limit: int
    ) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            if await conn.fetchval(_SQL["HAS_TICKET"], key) is None:
                await conn.execute(_SQL["DROP_EXPIRED_TICKETS"], now)
                stored = await conn.fetchval(_SQL["COUNT_TICKETS"])
                if stored >= limit:
                    await conn.execute(_SQL["EVICT_TICKETS"], stored - limit + 1)
            await conn.execute(_SQL["PUT_TICKET"], key, data, expires)

        await self._transaction(work, "the ticket")

    async def get_ticket(self, key: bytes, *, now: float) -> bytes | None:
        data = await self._read(lambda pool: pool.fetchval(_SQL["GET_TICKET"], key, now))
        return bytes(data) if data is not None else None

    async def take_ticket(self, key: bytes, *, now: float) -> bytes | None:
        async def work(conn: asyncpg.Connection) -> bytes | None:
            row = await conn.fetchrow(_SQL["TAKE_TICKET"], key)
            return bytes(row["data"]) if row is not None and row["expires"] > now else None

        return await self._transaction(work, "the ticket")


#: ``AuthSQL``'s statements with PostgreSQL's placeholders; the deletes that tidy up skip the
#: rows another transaction holds, so they never wait and take part in no deadlock.
_SQL = {
    name: numbered(sql).replace(AuthSQL.SKIP_LOCKED, "FOR UPDATE SKIP LOCKED")
    for name, sql in vars(AuthSQL).items()
    if name.isupper() and name != "SKIP_LOCKED"
}


async def _load(conn: asyncpg.Connection, key: str) -> Handle | None:
    name = await conn.fetchval("SELECT handle FROM handles WHERE key = $1 FOR UPDATE", key)
    if name is None:
        return None
    rows = await conn.fetch(
        f"SELECT {VALUE_COLUMNS} FROM handle_values WHERE key = $1 ORDER BY idx", key
    )
    return Handle(name, tuple(value_from_row(r) for r in rows))


async def _apply(
    conn: asyncpg.Connection, key: str, before: Handle | None, after: Handle | None
) -> None:
    prefix = handle_key(prefix_of(key))
    if before is not None or after is not None:
        payload = key if len(key.encode("utf-8")) <= _MAX_PAYLOAD else ""
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    if after is None:
        if before is not None:
            await conn.execute("DELETE FROM handles WHERE key = $1", key)  # values cascade
            await conn.execute("DELETE FROM value_text WHERE key = $1", key)
            await _add_counts(conn, {prefix: -1})
        return
    if before is None:
        await conn.execute("INSERT INTO handles (key, handle) VALUES ($1, $2)", key, after.handle)
        await _add_counts(conn, {prefix: 1})
        await _write_values(conn, key, after.values)
        return
    old = {v.index: v for v in before.values}
    removed = sorted(old.keys() - after.indexes)
    if removed:
        await conn.execute(
            "DELETE FROM handle_values WHERE key = $1 AND idx = ANY($2::int[])", key, removed
        )
        await conn.execute(
            "DELETE FROM value_text WHERE key = $1 AND idx = ANY($2::int[])", key, removed
        )
    await _write_values(conn, key, [v for v in after.values if old.get(v.index) != v])


async def _load_many(conn: asyncpg.Connection, keys: list[str]) -> dict[str, Handle | None]:
    """The records of ``keys`` (sorted), the existing ones locked in that order."""
    names = await conn.fetch(
        "SELECT key, handle FROM handles WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE",
        keys,
    )
    rows = await conn.fetch(
        f"SELECT key, {VALUE_COLUMNS} FROM handle_values WHERE key = ANY($1::text[])"
        " ORDER BY key, idx",
        [r["key"] for r in names],
    )
    found: dict[str, Handle | None] = dict.fromkeys(keys)
    found.update(records_from_rows([tuple(r) for r in names], rows))
    return found


async def _write_diff(conn: asyncpg.Connection, diff: RecordDiff) -> None:
    """Store ``diff`` in a few statements (COPY for the values)."""
    if not diff.touched:
        return
    await conn.execute(
        "SELECT pg_notify($1, k) FROM unnest($2::text[]) AS k",
        CHANNEL,
        [k if len(k.encode("utf-8")) <= _MAX_PAYLOAD else "" for k in diff.touched],
    )
    if diff.deleted:
        await conn.execute("DELETE FROM handles WHERE key = ANY($1::text[])", diff.deleted)
        await conn.execute("DELETE FROM value_text WHERE key = ANY($1::text[])", diff.deleted)
    if diff.created:
        await conn.execute(
            "INSERT INTO handles (key, handle) SELECT * FROM unnest($1::text[], $2::text[])",
            [k for k, _ in diff.created],
            [name for _, name in diff.created],
        )
    if diff.renamed:
        await conn.executemany("UPDATE handles SET handle = $1 WHERE key = $2", diff.renamed)
    if diff.gone:
        pairs = ([k for k, _ in diff.gone], [i for _, i in diff.gone])
        for table in ("handle_values", "value_text"):
            await conn.execute(
                f"DELETE FROM {table} WHERE (key, idx) IN"
                " (SELECT * FROM unnest($1::text[], $2::int[]))",
                *pairs,
            )
    if diff.written:
        await conn.copy_records_to_table(
            "handle_values",
            records=[value_row(k, v) for k, v in diff.written],
            columns=["key", *(c.strip() for c in VALUE_COLUMNS.split(","))],
        )
        searchable = [row for k, v in diff.written for row in search_rows(k, [v])]
        if searchable:
            await conn.copy_records_to_table(
                "value_text",
                records=searchable,
                columns=[c.strip() for c in SEARCH_COLUMNS.split(",")],
            )
    # Last: a row every create and delete of the prefix locks, which this transaction would
    # otherwise hold while it waits for other writers' new handles (and they for it).
    await _add_counts(conn, diff.deltas)


#: The columns of ``handle_versions``, as COPY names them.
_VERSION_FIELDS = ["key", *(c.strip() for c in VERSION_COLUMNS.split(","))]


async def _add_versions(
    conn: asyncpg.Connection, changed: dict[str, list[Outcome]], by: str | None
) -> None:
    """The versions of ``changed`` (key -> its changes' outcomes, in order) in the history."""
    if not changed:
        return
    last = dict(
        await conn.fetch(
            "SELECT key, max(version) FROM handle_versions WHERE key = ANY($1::text[])"
            " GROUP BY key",
            list(changed),
        )
    )
    at = time.time()
    rows = [
        row
        for key, outcomes in changed.items()
        for row in version_rows(key, last.get(key, 0) + 1, outcomes, at=at, by=by)
    ]
    await conn.copy_records_to_table("handle_versions", records=rows, columns=_VERSION_FIELDS)


async def _add_counts(conn: asyncpg.Connection, deltas: dict[str, int]) -> None:
    """Add ``deltas`` to the prefixes' counts of handles, in the order of their names."""
    for prefix, delta in sorted(deltas.items()):
        if delta:
            await conn.execute(
                "INSERT INTO prefix_counts (prefix, count) VALUES ($1, $2)"
                " ON CONFLICT (prefix) DO UPDATE SET count = prefix_counts.count + $2",
                prefix,
                delta,
            )


async def _write_imported(conn: asyncpg.Connection, plan: ImportPlan) -> None:
    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)  # other nodes forget everything
    gone = [r.key for r in plan.replaced] + plan.deleted
    if gone:
        await conn.execute("DELETE FROM handle_values WHERE key = ANY($1::text[])", gone)
        await conn.execute("DELETE FROM value_text WHERE key = ANY($1::text[])", gone)
        await conn.executemany(
            "UPDATE handles SET handle = $1 WHERE key = $2",
            [(r.handle, r.key) for r in plan.replaced],
        )
        await conn.execute("DELETE FROM handles WHERE key = ANY($1::text[])", plan.deleted)
    if plan.created:
        await conn.executemany(
            "INSERT INTO handles (key, handle) VALUES ($1, $2)",
            [(r.key, r.handle) for r in plan.created],
        )
    await conn.copy_records_to_table(
        "handle_values",
        records=[value_row(r.key, v) for r in plan.written for v in r.values],
        columns=["key", *(c.strip() for c in VALUE_COLUMNS.split(","))],
    )
    await conn.copy_records_to_table(
        "value_text",
        records=[row for r in plan.written for row in search_rows(r.key, r.values)],
        columns=[c.strip() for c in SEARCH_COLUMNS.split(",")],
    )
    await _add_counts(conn, dict(plan.new_per_prefix()))  # last, as in _write_diff


async def _write_values(conn: asyncpg.Connection, key: str, values: Iterable[HandleValue]) -> None:
    """Store ``values`` of ``key`` (replacing those at their indexes), and their search text."""
    values = list(values)
    if not values:
        return
    await conn.executemany(
        f"INSERT INTO handle_values (key, {VALUE_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (key, idx) DO UPDATE SET type = EXCLUDED.type, data = EXCLUDED.data,"
        " ttl_type = EXCLUDED.ttl_type, ttl = EXCLUDED.ttl, timestamp = EXCLUDED.timestamp,"
        " permissions = EXCLUDED.permissions, refs = EXCLUDED.refs",
        [value_row(key, v) for v in values],
    )
    await conn.execute(
        "DELETE FROM value_text WHERE key = $1 AND idx = ANY($2::int[])",
        key,
        [v.index for v in values],
    )
    searchable = search_rows(key, values)
    if searchable:
        await conn.executemany(
            f"INSERT INTO value_text ({SEARCH_COLUMNS}) VALUES ($1, $2, $3, $4, $5)", searchable
        )


async def schema_version(conn: asyncpg.Connection) -> int:
    """The schema version of the database ``conn`` is on (0: empty)."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _VERSION_TABLE)
    if not exists:
        return 0
    return int(await conn.fetchval(f"SELECT version FROM {_VERSION_TABLE}"))


async def _migrate(conn: asyncpg.Connection, *, migrate: bool) -> int:
    """Apply the migrations the database lacks, each with its version, in one transaction
    that holds an advisory lock (nodes starting together do not run them twice); returns the
    version it had. An empty database is always given the schema."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        version = await schema_version(conn)
        where = "The PostgreSQL database"
        if version > SCHEMA_VERSION:
            raise SchemaMismatch(
                f"{where} has schema version {version}, but this server knows versions up to "
                f"{SCHEMA_VERSION}: upgrade handle-server"
            )
        if version == SCHEMA_VERSION:
            return version
        if version > 0 and not migrate:
            raise SchemaMismatch(
                f"{where} has schema version {version}, this server needs {SCHEMA_VERSION}: "
                "back it up, then run handle-server migrate"
            )
        if version == 0:
            await conn.execute(f"CREATE TABLE {_VERSION_TABLE} (version INTEGER NOT NULL)")
            await conn.execute(f"INSERT INTO {_VERSION_TABLE} VALUES (0)")
        for number, script in migrations("postgresql"):
            if number > version:
                await conn.execute(script)
                await conn.execute(f"UPDATE {_VERSION_TABLE} SET version = $1", number)
    return version
