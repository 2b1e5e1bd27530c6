"""The SQLite ``HandleStore``: its connections, reads, writes and shared authentication state."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from pathlib import Path

import aiosqlite

from ..anchors import LONG_SKIP, PageAnchors, paged
from ..base import (
    Change,
    ChangeListener,
    Exported,
    HandleStore,
    ImportResult,
    Outcome,
    SessionRecord,
    Version,
)
from ..errors import ChangeFailed, SchemaMismatch, SearchTimeout, StoreUnavailable
from ..model import Handle, HandleValue, handle_key, prefix_of
from ..rows import (
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
from .commit import GroupCommit, Result, Unit, run_group
from .signal import ChangeSignal

__all__ = ["SQLiteStore"]

_BUSY_TIMEOUT_MS = 10_000
#: One record: its name, then its values (none: a row of NULLs), in index order.
_RECORD_SQL = (
    "SELECT h.handle, v.idx, v.type, v.data, v.ttl_type, v.ttl, v.timestamp, v.permissions,"
    " v.refs FROM handles h LEFT JOIN handle_values v ON v.key = h.key WHERE h.key = ?"
    " ORDER BY v.idx"
)
#: The records of several handles, by key (``get_many``).
_RECORDS_SQL = (
    "SELECT h.key, h.handle, v.idx, v.type, v.data, v.ttl_type, v.ttl, v.timestamp,"
    " v.permissions, v.refs FROM handles h LEFT JOIN handle_values v ON v.key = h.key"
    " WHERE h.key IN ({marks}) ORDER BY h.key, v.idx"
)
#: Keys one statement of ``get_many`` asks for.
_MANY_AT_ONCE = 500
_CHANGES_KEPT = 10_000  # rows of handle_changes kept for processes that fell behind
#: value_text rows put in the trigram index in one transaction after an import.
_INDEX_CHUNK = 50_000
_PRUNE_EVERY = 1000  # writes between prunings


SCHEMA_VERSION = latest_version("sqlite")


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (a ``;`` inside a comment or string is no end)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in pending.splitlines()
    ):
        raise ValueError(f"unterminated statement in schema script: {pending.strip()[:60]}")
    return statements


def _text_or_none(data: bytes | str | None) -> str | None:
    """``handle_server_text`` in SQL: a value's data as text for the search index, ``None`` if
    it is not UTF-8 or holds NUL (as PostgreSQL, which cannot store those as text)."""
    if isinstance(data, str):
        text = data
    elif isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    else:
        return None
    return None if "\x00" in text else text


class SQLiteStore(HandleStore):
    def __init__(
        self,
        path: str,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        last_change: int,
        schema_from: int,
    ):
        self.path = path
        self.schema_from = schema_from
        self._writer = writer
        self._reader = reader
        self._searcher: aiosqlite.Connection | None = None  # opened by the first search
        self._search_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._group = GroupCommit(self._run_group, self._group_committed)
        self._signal = ChangeSignal(f"{path}-changes") if path != ":memory:" else None
        if self._signal is not None and self._signal.value() > last_change:
            self._signal.raise_to(last_change, reset=True)  # a file made anew under an old one
        self._seen = last_change  # the last change the listeners were told of
        self._seen_signal = self._signal.value() if self._signal else 0
        self._catching_up = asyncio.Lock()
        self._anchors = PageAnchors()
        #: Rows a listing skips (from the nearest anchor) beyond which it skips alone.
        self.long_skip = LONG_SKIP
        self._listeners: list[ChangeListener] = [self._anchors]

    @classmethod
    async def open(cls, path: str | Path, *, migrate: bool = True) -> SQLiteStore:
        """Open the database at ``path``, creating the file, its folder and the schema if
        needed; bring an older schema up to date if ``migrate``.

        Raises ``SchemaMismatch`` if the file holds a newer schema than this code knows, or an
        older one and ``migrate`` is false."""
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await cls._connect(path)
        try:
            schema_from = await cls._migrate(writer, path, migrate=migrate)
            async with writer.execute("SELECT COALESCE(MAX(seq), 0) FROM handle_changes") as cur:
                (last_change,) = await cur.fetchone()
            reader = await cls._connect(path)
        except BaseException:
            await writer.close()
            raise
        return cls(path, writer, reader, last_change=last_change, schema_from=schema_from)

    @staticmethod
    async def _connect(path: str) -> aiosqlite.Connection:
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        # Savepoints' statement journals in memory, not in temporary files made and closed
        # at every commit (single PUTs, 64 at a time: 2,700 -> 2,890/s).
        await db.execute("PRAGMA temp_store = MEMORY")
        await db.create_function("handle_server_text", 1, _text_or_none, deterministic=True)
        return db

    @staticmethod
    async def _migrate(db: aiosqlite.Connection, path: str, *, migrate: bool) -> int:
        """Apply the migrations the file lacks; returns the version it had. An empty file is
        always given the schema (that is creating it, not migrating it)."""
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute("PRAGMA user_version") as cur:
                (version,) = await cur.fetchone()
            if version > SCHEMA_VERSION:
                raise SchemaMismatch(
                    f"{path} has schema version {version}, but this server knows versions up to "
                    f"{SCHEMA_VERSION}: upgrade handle-server"
                )
            if 0 < version < SCHEMA_VERSION and not migrate:
                raise SchemaMismatch(
                    f"{path} has schema version {version}, this server needs {SCHEMA_VERSION}: "
                    "back it up, then run handle-server migrate"
                )
            for number, script in migrations("sqlite"):
                if number > version:
                    for statement in _statements(script):
                        await db.execute(statement)
                    await db.execute(f"PRAGMA user_version = {number}")
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return version

    async def close(self) -> None:
        with contextlib.suppress(StoreUnavailable):  # (indexed at the next open's search)
            await self.index_pending()
        async with self._write_lock:
            if self._searcher is not None:
                await self._searcher.close()
            await self._reader.close()
            await self._writer.close()
            if self._signal is not None:
                self._signal.close()

    # changes made by other processes

    async def watch(self, listener: ChangeListener) -> bool:
        """Every write logs its handle's key in ``handle_changes`` and raises the shared
        counter; ``catch_up`` reads what other processes logged."""
        self._listeners.append(listener)
        listener.watching(True)
        return True

    async def announce(self, keys: Sequence[str | None]) -> None:
        """Logged in ``handle_changes`` as writes are ("" for every record)."""
        seqs = []
        async with self._transaction() as db:
            for key in keys:
                async with db.execute(
                    "INSERT INTO handle_changes (key) VALUES (?)", (key or "",)
                ) as cur:
                    seqs.append(cur.lastrowid)
        self._published(seqs)

    def caught_up(self) -> bool:
        return (
            self._signal is None or not self._listeners or self._signal.value() == self._seen_signal
        )

    async def catch_up(self) -> None:
        if self._signal is None or not self._listeners:
            return
        if self._signal.value() == self._seen_signal:
            return
        async with self._catching_up:
            signal = self._signal.value()
            if signal == self._seen_signal:
                return  # a concurrent caller caught up
            seen = self._seen
            try:
                rows = await self._reader.execute_fetchall(
                    "SELECT seq, key FROM handle_changes WHERE seq > ? ORDER BY seq", (seen,)
                )
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite read failed: {exc}") from exc
            if rows and rows[0][0] != seen + 1:
                keys: list[str | None] = [None]  # pruned before this process read them
            else:
                keys = list(dict.fromkeys(key for _, key in rows))
            for key in keys:
                for listener in self._listeners:
                    listener.changed(key or None)  # "": every record (``announce``)
            if rows:
                self._seen = max(self._seen, rows[-1][0])
            self._seen_signal = signal

    # reads

    async def get(self, handle: str) -> Handle | None:
        key = handle_key(handle)
        try:
            # One trip to the reader's thread (execute, fetch and close in one call there).
            rows = await self._reader.execute_fetchall(_RECORD_SQL, (key,))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc
        return _record(rows)

    async def count_handles(self, prefix: str) -> int:
        try:
            rows = await self._reader.execute_fetchall(
                "SELECT count FROM prefix_counts WHERE prefix = ?", (handle_key(prefix),)
            )
            row = next(iter(rows), None)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc
        return row[0] if row else 0

    async def iter_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None, batch: int = 10_000
    ) -> AsyncIterator[list[str]]:
        """Pages are read by key (``key > last``). A page deep in a prefix would cost a skip of
        ``offset`` index entries; the first key of every page served is remembered instead
        (``PageAnchors``), so the same or a following page is an index seek."""
        low, high = prefix_bounds(prefix)
        await self.catch_up()  # other processes' writes forget the anchors they moved
        pages = paged(
            lambda after, size, skip: self._page_rows(low, high, after, size, skip),
            self._anchors,
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
    ) -> list[sqlite3.Row]:
        """``size`` (key, handle) rows of ``[low, high)`` after the key ``after`` (or from
        ``low``), skipping ``skip``."""
        if after is None:
            sql = "SELECT key, handle FROM handles WHERE key >= ? AND key < ? ORDER BY key"
            bound = low
        else:
            sql = "SELECT key, handle FROM handles WHERE key > ? AND key < ? ORDER BY key"
            bound = after
        return await self._fetch(sql + " LIMIT ? OFFSET ?", (bound, high, size, skip))

    async def _key_back(self, low: str, key: str, skip: int) -> str | None:
        """The key ``skip`` places down from ``key`` among the keys of ``[low, key]``."""
        rows = await self._fetch(
            "SELECT key FROM handles WHERE key >= ? AND key <= ? ORDER BY key DESC"
            " LIMIT 1 OFFSET ?",
            (low, key, skip),
        )
        return rows[0][0] if rows else None

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """A connection of its own, in one read transaction: a WAL snapshot that writers do
        not disturb (and that does not hold up the reads of the serving connection). SQLite
        failures are ``StoreUnavailable``."""
        own = self.path != ":memory:"
        db = await self._connect(self.path) if own else self._reader
        try:
            await db.execute("BEGIN")
            try:
                yield db
            finally:
                await db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc
        finally:
            if own:
                await db.close()

    async def iter_records(
        self, *, after: str = "", batch: int = 1000
    ) -> AsyncIterator[list[Handle]]:
        async with self._snapshot() as db:
            last = after
            while True:
                names = await db.execute_fetchall(
                    "SELECT key, handle FROM handles WHERE key > ? ORDER BY key LIMIT ?",
                    (last, batch),
                )
                if not names:
                    return
                high = names[-1][0]
                rows = await db.execute_fetchall(
                    f"SELECT key, {VALUE_COLUMNS} FROM handle_values"
                    " WHERE key > ? AND key <= ? ORDER BY key, idx",
                    (last, high),
                )
                yield list(records_from_rows(names, rows).values())
                last = high

    async def iter_exported(
        self, *, after: str = "", batch: int = 1000
    ) -> AsyncIterator[list[Exported]]:
        async with self._snapshot() as db:
            async for entries in exported_batches(db.execute_fetchall, after=after, batch=batch):
                yield entries

    # writes

    async def prune_history(
        self, *, keep_versions: int | None = None, before: float | None = None
    ) -> int:
        if keep_versions is None and before is None:
            return 0

        async def prune(low: str, high: str) -> int:
            async with self._transaction() as db:
                async with db.execute(PRUNE_HISTORY_SQL, (low, high, keep_versions, before)) as cur:
                    return cur.rowcount

        return await pruned_in_steps(self._fetch, prune)

    async def import_records(
        self, records: Sequence[Handle | Exported], *, replace: bool = False
    ) -> ImportResult:
        keyed = by_key(records)
        if not keyed:
            return ImportResult()
        return await asyncio.shield(self._import(keyed, replace))

    async def _import(self, keyed: dict[str, Exported], replace: bool) -> ImportResult:
        seq = None
        async with self._transaction() as db:
            keys = list(keyed)
            stored, histories = await db._execute(_read_for_import, db._conn, keys)
            plan = plan_import(keyed, stored, histories, replace=replace, at=time.time())
            if plan.touched:
                # The rows this adds to value_text are indexed later, together.
                await db.execute(
                    "UPDATE search_index SET pending_from ="
                    " (SELECT COALESCE(MAX(id), 0) + 1 FROM value_text)"
                    " WHERE pending_from IS NULL"
                )
                await self._write_imported(db, plan)
                async with db.execute("SELECT MAX(seq) FROM handle_changes") as cur:
                    (seq,) = await cur.fetchone()
                await db.execute(
                    "DELETE FROM handle_changes WHERE seq <= ?", (seq - _CHANGES_KEPT,)
                )
            await db.executemany(
                f"INSERT INTO handle_versions (key, {VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                plan.versions,
            )
        self._anchors.changed(None)
        if seq is not None and self._signal is not None:
            # Not marked seen: this process's own listeners learn of it like the others.
            self._signal.raise_to(seq)
        return plan.result

    async def index_pending(self) -> None:
        """Put the value texts imports added into the trigram index, ``_INDEX_CHUNK`` rows a
        transaction (a write lock held for a moment at a time). After more than one chunk the
        index is merged into one segment: the chunks' segments would otherwise be merged by
        the writes that come next, stalling each (after 300,000 imported rows, 2,000 inserts
        took 5x as long, some 35 ms more)."""
        rows = await self._reader.execute_fetchall("SELECT pending_from FROM search_index")
        if rows[0][0] is None:
            return  # (nearly always: one read, no write lock)
        chunks = 0
        while True:
            chunks += 1
            async with self._transaction() as db:
                async with db.execute("SELECT pending_from FROM search_index") as cur:
                    (start,) = await cur.fetchone()
                if start is None:
                    return
                async with db.execute("SELECT MAX(id) FROM value_text") as cur:
                    (last,) = await cur.fetchone()
                end = start + _INDEX_CHUNK
                await db.execute(
                    "INSERT INTO value_text_fts (rowid, text)"
                    " SELECT id, text FROM value_text WHERE id >= ? AND id < ?",
                    (start, end),
                )
                done = last is None or end > last
                await db.execute(
                    "UPDATE search_index SET pending_from = ?", (None if done else end,)
                )
            if done:
                break
        if chunks > 1:
            async with self._transaction() as db:
                await db.execute("INSERT INTO value_text_fts (value_text_fts) VALUES ('optimize')")

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction on the writer connection, under the write lock: COMMIT when
        the body completes, ROLLBACK when it raises. SQLite failures are ``StoreUnavailable``."""
        async with self._write_lock:
            db = self._writer
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite could not start a write: {exc}") from exc
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException as exc:
                try:
                    await db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the failure already ended the transaction
                if isinstance(exc, sqlite3.Error):
                    raise StoreUnavailable(f"SQLite write failed: {exc}") from exc
                raise

    @staticmethod
    async def _write_imported(db: aiosqlite.Connection, plan: ImportPlan) -> None:
        gone = [(r.key,) for r in plan.replaced] + [(k,) for k in plan.deleted]
        if gone:
            await db.executemany("DELETE FROM handle_values WHERE key = ?", gone)
            await db.executemany("DELETE FROM value_text WHERE key = ?", gone)
            await db.executemany(
                "UPDATE handles SET handle = ? WHERE key = ?",
                [(r.handle, r.key) for r in plan.replaced],
            )
            await db.executemany("DELETE FROM handles WHERE key = ?", [(k,) for k in plan.deleted])
        if plan.created:
            await db.executemany(
                "INSERT INTO handles (key, handle) VALUES (?, ?)",
                [(r.key, r.handle) for r in plan.created],
            )
        await db.executemany(
            "INSERT INTO prefix_counts (prefix, count) VALUES (?, ?)"
            " ON CONFLICT (prefix) DO UPDATE SET count = count + excluded.count",
            plan.new_per_prefix(),
        )
        await db.executemany(
            f"INSERT INTO handle_values (key, {VALUE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [value_row(r.key, v) for r in plan.written for v in r.values],
        )
        await _index(db, [row for r in plan.written for row in search_rows(r.key, r.values)])
        await db.executemany(
            "INSERT INTO handle_changes (key) VALUES (?)", [(k,) for k in plan.touched]
        )

    async def update(
        self, handle: str, change: Change, *, by: str | None = None
    ) -> tuple[Handle | None, Handle | None]:
        """As the contract says; concurrent updates share transactions (``GroupCommit``)."""
        try:
            (outcome,) = await self._group.submit(
                [(handle_key(handle), change)], atomic=True, by=by
            )
        except ChangeFailed as failed:
            raise failed.error from None
        assert not isinstance(outcome, Exception)
        return outcome

    async def update_many(
        self, changes: Sequence[tuple[str, Change]], *, atomic: bool, by: str | None = None
    ) -> list[Outcome | Exception]:
        """As the contract says: one unit of a group commit (``GroupCommit``)."""
        if not changes:
            return []
        keyed = [(handle_key(handle), change) for handle, change in changes]
        return await self._group.submit(keyed, atomic=atomic, by=by)

    async def history(
        self, handle: str, *, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Version]]:
        key = handle_key(handle)
        rows = await self._fetch(
            f"SELECT {VERSION_COLUMNS} FROM handle_versions WHERE key = ?"
            " ORDER BY version LIMIT ? OFFSET ?",
            (key, -1 if limit is None else limit, offset),
        )
        total = await self._fetch("SELECT count(*) FROM handle_versions WHERE key = ?", (key,))
        return total[0][0], [version_from_row(r) for r in rows]

    async def version(self, handle: str, number: int) -> Version | None:
        rows = await self._fetch(
            f"SELECT {VERSION_COLUMNS} FROM handle_versions WHERE key = ? AND version = ?",
            (handle_key(handle), number),
        )
        return version_from_row(rows[0]) if rows else None

    async def get_many(self, handles: Sequence[str]) -> dict[str, Handle | None]:
        keys = list(dict.fromkeys(handle_key(h) for h in handles))
        try:
            # One trip to the reader's thread for all of them.
            return await self._reader._execute(_read_many, self._reader._conn, keys)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc

    async def _run_group(self, batch: list[Unit]) -> list[Result]:
        """The group in one trip to the writer's thread: its transaction, savepoints, reads
        and writes run there on the plain ``sqlite3`` connection (``commit.run_group``), under
        the write lock. (aiosqlite's ``_execute`` runs a function in that thread: a private
        call of the pinned version, for a tenth of the trips the public calls would take.)
        The page anchors hear of it (``writing``); of the handles it created and deleted once it
        is committed (``_group_committed``), or that it failed."""
        async with self._write_lock:
            writer = self._writer
            self._anchors.writing()
            try:
                return await writer._execute(run_group, writer._conn, batch, _run_one, _run_many)
            except Exception as exc:
                self._anchors.written(None)
                if isinstance(exc, sqlite3.Error):
                    raise StoreUnavailable(f"SQLite write failed: {exc}") from exc
                raise
            # (Cancelled, it may still commit in the writer's thread: the anchors stay told of
            # a write under way, and remember nothing more.)

    def _group_committed(
        self, seqs: list[int], results: list[tuple[str, tuple[Handle | None, Handle | None]]]
    ) -> None:
        """A group is on disk: tell the other processes, and the page anchors of the handles
        that came (+1) and went (-1): they move with them."""
        self._published(seqs)
        self._anchors.written(
            (key, 1 if before is None else -1)
            for key, (before, after) in results
            if (before is None) != (after is None)
        )

    def _published(self, seqs: Sequence[int]) -> None:
        """After the commit of changes ``seqs``: tell the other processes (the counter raised
        once, not once a change: it takes a file lock)."""
        if self._signal is None or not seqs:
            return
        last = max(seqs)
        self._signal.raise_to(last)
        # Nothing committed in between, and this process's cache already forgot its own
        # changes: no need to read them back.
        for seq in sorted(seqs):
            if seq != self._seen + 1:
                break
            self._seen = seq
        if self._seen == last and self._signal.value() == last:
            self._seen_signal = last

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
        """The rows of a read on the reader connection."""
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc

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
        await self.index_pending()  # what an import added, if it is not indexed yet
        sql, params = search_query(
            conditions,
            prefix=prefix,
            readable=readable,
            offset=offset,
            limit=limit,
            dialect="sqlite",
        )
        # Its own connection, one search at a time: the reads that resolve handles never wait
        # behind one.
        loop = asyncio.get_running_loop()
        deadline = None if time_limit is None else loop.time() + time_limit
        try:
            async with asyncio.timeout_at(deadline):
                await self._search_lock.acquire()
        except TimeoutError:
            raise SearchTimeout(time_limit or 0) from None
        try:
            if self._searcher is None:
                self._searcher = await self._connect(self.path)
            db = self._searcher
            try:
                async with asyncio.timeout_at(deadline):
                    async with db.execute(sql, params) as cur:
                        return [row[0] for row in await cur.fetchall()]
            except TimeoutError:
                await db.interrupt()  # the statement stops at its next step
                raise SearchTimeout(time_limit or 0) from None
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite read failed: {exc}") from exc
        finally:
            self._search_lock.release()

    # authentication state

    async def get_session(self, key: bytes, *, now: float) -> SessionRecord | None:
        rows = await self._fetch(AuthSQL.GET_SESSION, (key, now))
        return session_from_row(rows[0]) if rows else None

    async def put_session(
        self,
        session: SessionRecord,
        *,
        now: float,
        limit: int,
        per_identity: int | None = None,
    ) -> bool:
        async with self._transaction() as db:
            async with db.execute(AuthSQL.HAS_SESSION, (session.key,)) as cur:
                new = await cur.fetchone() is None
            if new:
                await db.execute(AuthSQL.DROP_EXPIRED_SESSIONS, (now,))
                identity = session.identity
                if per_identity is not None and identity is not None:
                    whose = (identity.handle, identity.index, now)
                    async with db.execute(AuthSQL.COUNT_IDENTITY_SESSIONS, whose) as cur:
                        (held,) = await cur.fetchone()
                    if held >= per_identity:
                        evict = (*whose, held - per_identity + 1)
                        await db.execute(AuthSQL.EVICT_IDENTITY_SESSIONS, evict)
                async with db.execute(AuthSQL.COUNT_SESSIONS) as cur:
                    (stored,) = await cur.fetchone()
                if stored >= limit:
                    await db.execute(AuthSQL.EVICT_SESSIONS, (stored - limit + 1,))
            async with db.execute(AuthSQL.PUT_SESSION, session_row(session)) as cur:
                return cur.rowcount > 0

    async def renew_session(self, key: bytes, *, expires: float) -> None:
        async with self._transaction() as db:
            await db.execute(AuthSQL.RENEW_SESSION, (expires, key, expires))

    async def failures(self, keys: Sequence[str], *, since: float) -> dict[str, tuple[float, int]]:
        if not keys:
            return {}
        rows = await self._fetch(AuthSQL.failures(len(keys)), (*keys, since))
        return {key: (first, count) for key, first, count in rows}

    async def add_failure(self, keys: Sequence[str], *, now: float, since: float) -> None:
        async with self._transaction() as db:
            await db.executemany(AuthSQL.ADD_FAILURE, [(key, now, since, since) for key in keys])
            await db.execute(AuthSQL.DROP_OLD_FAILURES, (since,))

    async def shared_secret(self, name: str, candidate: bytes) -> bytes:
        async with self._transaction() as db:
            await db.execute(AuthSQL.ADD_SECRET, (name, candidate))
            async with db.execute(AuthSQL.GET_SECRET, (name,)) as cur:
                (value,) = await cur.fetchone()
        return bytes(value)

    async def put_ticket(
        self, key: bytes, data: bytes, *, expires: float, now: float, limit: int
    ) -> None:
        async with self._transaction() as db:
            async with db.execute(AuthSQL.HAS_TICKET, (key,)) as cur:
                new = await cur.fetchone() is None
            if new:
                await db.execute(AuthSQL.DROP_EXPIRED_TICKETS, (now,))
                async with db.execute(AuthSQL.COUNT_TICKETS) as cur:
                    (stored,) = await cur.fetchone()
                if stored >= limit:
                    await db.execute(AuthSQL.EVICT_TICKETS, (stored - limit + 1,))
            await db.execute(AuthSQL.PUT_TICKET, (key, data, expires))

    async def get_ticket(self, key: bytes, *, now: float) -> bytes | None:
        rows = await self._fetch(AuthSQL.GET_TICKET, (key, now))
        return bytes(rows[0][0]) if rows else None

    async def take_ticket(self, key: bytes, *, now: float) -> bytes | None:
        async with self._transaction() as db:
            async with db.execute(AuthSQL.TAKE_TICKET, (key,)) as cur:
                row = await cur.fetchone()
        return bytes(row[0]) if row is not None and row[1] > now else None


# -- one update, in the writer's thread (``commit.run_group``) ---------------------------------


def _run_one(
    db: sqlite3.Connection, key: str, change: Change, by: str | None
) -> tuple[Outcome, int | None]:
    """One update: ``((before, after), seq)``, ``seq`` its change-log number (``None``: nothing
    changed)."""
    before = _load(db, key)
    after = change(before)
    if after is not None and handle_key(after.handle) != key:
        raise ValueError(f"a change of {key!r} returned a record for {after.handle!r}")
    if before is None and after is None:
        return (before, after), None
    _write(db, key, before, after)
    if before != after:
        _add_versions(db, {key: [(before, after)]}, by)
    seq = db.execute("INSERT INTO handle_changes (key) VALUES (?)", (key,)).lastrowid
    if seq % _PRUNE_EVERY == 0:
        db.execute("DELETE FROM handle_changes WHERE seq <= ?", (seq - _CHANGES_KEPT,))
    return (before, after), seq


def _run_many(
    db: sqlite3.Connection, changes: list[tuple[str, Change]], atomic: bool, by: str | None
) -> tuple[list[Outcome | Exception], list[int]]:
    """Many changes (``update_many``): the records read at once, the changes run on them in
    memory, what changed written with one statement of each kind; the change-log numbers."""
    initial = _read_many(db, sorted({key for key, _ in changes}))
    final, renamed, outcomes = run_changes(initial, changes, atomic=atomic)
    diff = diff_records(initial, final, renamed)
    seqs = _write_diff(db, diff)
    _add_versions(db, changed_by_key(changes, outcomes), by)
    # Last: after its first write to the trigram index, every statement of the transaction
    # makes FTS5 write what it holds (see _insert_rows).
    texts = [row for k, v in diff.written for row in search_rows(k, [v])]
    _insert_rows(db, f"value_text ({SEARCH_COLUMNS})", texts)
    return outcomes, seqs


def _add_versions(
    db: sqlite3.Connection, changed: dict[str, list[Outcome]], by: str | None
) -> None:
    """The versions of ``changed`` (key -> its changes' outcomes, in order) in the history."""
    if not changed:
        return
    keys = list(changed)
    last: dict[str, int] = {}
    for start in range(0, len(keys), _MANY_AT_ONCE):
        chunk = keys[start : start + _MANY_AT_ONCE]
        marks = ",".join("?" * len(chunk))
        last.update(
            db.execute(
                f"SELECT key, max(version) FROM handle_versions WHERE key IN ({marks})"
                " GROUP BY key",
                chunk,
            ).fetchall()
        )
    at = time.time()
    rows = [
        row
        for key, outcomes in changed.items()
        for row in version_rows(key, last.get(key, 0) + 1, outcomes, at=at, by=by)
    ]
    _insert_rows(db, f"handle_versions (key, {VERSION_COLUMNS})", rows)


def _read_for_import(
    db: sqlite3.Connection, keys: list[str]
) -> tuple[dict[str, Handle | None], dict[str, list[Version]]]:
    """The records of ``keys`` and their histories."""
    histories: dict[str, list[Version]] = {}
    for start in range(0, len(keys), _MANY_AT_ONCE):
        chunk = keys[start : start + _MANY_AT_ONCE]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT key, {VERSION_COLUMNS} FROM handle_versions WHERE key IN ({marks})"
            " ORDER BY key, version",
            chunk,
        ).fetchall()
        for row in rows:
            histories.setdefault(row[0], []).append(version_from_row(row[1:]))
    return _read_many(db, keys), histories


def _read_many(db: sqlite3.Connection, keys: list[str]) -> dict[str, Handle | None]:
    found: dict[str, Handle | None] = dict.fromkeys(keys)
    for start in range(0, len(keys), _MANY_AT_ONCE):
        chunk = keys[start : start + _MANY_AT_ONCE]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(_RECORDS_SQL.format(marks=marks), chunk).fetchall()
        for key, group in itertools.groupby(rows, key=lambda r: r[0]):
            found[key] = _record([r[1:] for r in group])
    return found


def _write_diff(db: sqlite3.Connection, diff: RecordDiff) -> list[int]:
    """Store ``diff``, but for the search texts of the values it writes (the caller's);
    the change-log numbers of its handles."""
    if not diff.touched:
        return []
    if diff.deleted:
        gone = [(k,) for k in diff.deleted]
        db.executemany("DELETE FROM handle_values WHERE key = ?", gone)
        _delete_rows(db, "value_text", "key", gone)
        db.executemany("DELETE FROM handles WHERE key = ?", gone)
    if diff.created:
        _insert_rows(db, "handles (key, handle)", diff.created)
    if diff.renamed:
        db.executemany("UPDATE handles SET handle = ? WHERE key = ?", diff.renamed)
    if diff.gone:
        db.executemany("DELETE FROM handle_values WHERE key = ? AND idx = ?", diff.gone)
        _delete_rows(db, "value_text", "key, idx", diff.gone)
    if diff.written:
        _insert_rows(
            db, f"handle_values (key, {VALUE_COLUMNS})", [value_row(k, v) for k, v in diff.written]
        )
    for prefix, delta in sorted(diff.deltas.items()):
        if delta:
            db.execute(
                "INSERT INTO prefix_counts (prefix, count) VALUES (?, ?)"
                " ON CONFLICT (prefix) DO UPDATE SET count = count + excluded.count",
                (prefix, delta),
            )
    _insert_rows(db, "handle_changes (key)", [(k,) for k in diff.touched])
    # This transaction is the only writer: its rows took the numbers after the last one.
    last = db.execute("SELECT max(seq) FROM handle_changes").fetchone()[0]
    first = last - len(diff.touched) + 1
    if last // _PRUNE_EVERY != (first - 1) // _PRUNE_EVERY:
        db.execute("DELETE FROM handle_changes WHERE seq <= ?", (last - _CHANGES_KEPT,))
    return list(range(first, last + 1))


#: Parameters one statement of ``_insert_rows`` / ``_delete_rows`` binds at most (SQLite's
#: limit is 32,766).
_MAX_PARAMS = 30_000


def _insert_rows(db: sqlite3.Connection, into: str, rows: Sequence[Sequence[object]]) -> None:
    """``INSERT INTO {into} VALUES`` ``rows``, as few statements as the parameters allow
    (cheaper than ``executemany``'s statement a row).

    Above all for ``value_text``: its trigger writes the trigram index, and FTS5 writes what
    it holds to disk at the start of every statement of a transaction (its savepoint), so one
    statement a row made a segment a row: 3.6x slower, merges included."""
    _by_rows(db, f"INSERT INTO {into} VALUES {{}}", rows)


def _delete_rows(
    db: sqlite3.Connection, table: str, columns: str, rows: Sequence[Sequence[object]]
) -> None:
    """Delete the rows of ``table`` whose ``columns`` hold one of ``rows``, as few statements
    as the parameters allow (see ``_insert_rows``)."""
    _by_rows(db, _delete_sql(table, columns), rows)


def _delete_sql(table: str, columns: str) -> str:
    """``_delete_rows``'s statement, its ``{}`` the list of rows. Rows of more than one column
    are found by a join on the table's index: SQLite plans ``(a, b) IN (VALUES (?, ?), (?,
    ?))`` of more than one row as a scan of the whole table (every write of a record of two
    values or more read all of ``value_text``: 0.2 s a write at a million handles)."""
    names = [c.strip() for c in columns.split(",")]
    if len(names) == 1:
        return f"DELETE FROM {table} WHERE {names[0]} IN (VALUES {{}})"
    on = " AND ".join(f"t.{c} = x.column{i}" for i, c in enumerate(names, 1))
    return (
        f"DELETE FROM {table} WHERE rowid IN"
        f" (SELECT t.rowid FROM (VALUES {{}}) AS x JOIN {table} AS t ON {on})"
    )


def _by_rows(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[object]]) -> None:
    """``sql`` with its ``{}`` a list of ``rows``' tuples, a chunk of them a statement."""
    if not rows:
        return
    width = len(rows[0])
    per = _MAX_PARAMS // width
    marks = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        db.execute(
            sql.format(", ".join([marks] * len(chunk))), [field for row in chunk for field in row]
        )


def _load(db: sqlite3.Connection, key: str) -> Handle | None:
    return _record(db.execute(_RECORD_SQL, (key,)).fetchall())


def _record(rows: Sequence[Sequence]) -> Handle | None:
    """The record ``_RECORD_SQL``'s rows show, or ``None`` (no rows: no such handle)."""
    if not rows:
        return None
    return Handle(rows[0][0], tuple(value_from_row(r[1:]) for r in rows if r[1] is not None))


def _write(db: sqlite3.Connection, key: str, before: Handle | None, after: Handle | None) -> None:
    prefix = handle_key(prefix_of(key))
    if after is None:
        if before is not None:
            db.execute("DELETE FROM handle_values WHERE key = ?", (key,))
            db.execute("DELETE FROM value_text WHERE key = ?", (key,))
            db.execute("DELETE FROM handles WHERE key = ?", (key,))
            db.execute("UPDATE prefix_counts SET count = count - 1 WHERE prefix = ?", (prefix,))
        return
    if before is None:
        db.execute("INSERT INTO handles (key, handle) VALUES (?, ?)", (key, after.handle))
        db.execute(
            "INSERT INTO prefix_counts (prefix, count) VALUES (?, 1)"
            " ON CONFLICT (prefix) DO UPDATE SET count = count + 1",
            (prefix,),
        )
        _write_values(db, key, after.values)
        return
    old = {v.index: v for v in before.values}
    removed = old.keys() - after.indexes
    if removed:
        gone = [(key, i) for i in sorted(removed)]
        db.executemany("DELETE FROM handle_values WHERE key = ? AND idx = ?", gone)
        _delete_rows(db, "value_text", "key, idx", gone)
    _write_values(db, key, [v for v in after.values if old.get(v.index) != v])


def _write_values(db: sqlite3.Connection, key: str, values: Iterable[HandleValue]) -> None:
    """Store ``values`` of ``key`` (replacing those at their indexes), and their search text."""
    values = list(values)
    if not values:
        return
    db.executemany(
        f"INSERT OR REPLACE INTO handle_values (key, {VALUE_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [value_row(key, v) for v in values],
    )
    _delete_rows(db, "value_text", "key, idx", [(key, v.index) for v in values])
    _insert_rows(db, f"value_text ({SEARCH_COLUMNS})", search_rows(key, values))


async def _index(db: aiosqlite.Connection, rows: list[tuple]) -> None:
    """Add ``search_rows`` to the search index (the FTS table follows by triggers)."""
    if rows:
        await db.executemany(
            f"INSERT INTO value_text ({SEARCH_COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows
        )
