"""SQLite backend on aiosqlite: the embedded default.

WAL journal with ``synchronous=FULL``: a transaction is on disk when COMMIT returns, so an
answered write survives ``kill -9`` and power loss. One writer connection runs every change as
a ``BEGIN IMMEDIATE`` transaction (serialised in-process by a lock, across processes by SQLite's
own write lock); a separate reader connection serves lookups and never blocks the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import aiosqlite

from .base import Change, HandleStore
from .errors import SchemaMismatch, StoreUnavailable
from .model import Handle, HandleValue, handle_key, prefix_of
from .rows import VALUE_COLUMNS, migrations, prefix_bounds, value_from_row, value_row

__all__ = ["SQLiteStore"]

_BUSY_TIMEOUT_MS = 10_000


SCHEMA_VERSION = migrations("sqlite")[-1][0]


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


class SQLiteStore(HandleStore):
    def __init__(self, path: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> SQLiteStore:
        """Open (creating the file and its folder if needed) and migrate the database at ``path``.

        Raises ``SchemaMismatch`` if the file holds a newer schema than this code knows."""
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await cls._connect(path)
        try:
            await cls._migrate(writer, path)
            reader = await cls._connect(path)
        except BaseException:
            await writer.close()
            raise
        return cls(path, writer, reader)

    @staticmethod
    async def _connect(path: str) -> aiosqlite.Connection:
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        return db

    @staticmethod
    async def _migrate(db: aiosqlite.Connection, path: str) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute("PRAGMA user_version") as cur:
                (version,) = await cur.fetchone()
            if version > SCHEMA_VERSION:
                raise SchemaMismatch(
                    f"{path} has schema version {version}, but this server knows versions up to "
                    f"{SCHEMA_VERSION}: upgrade handle-server"
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

    async def close(self) -> None:
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()

    # reads

    async def get(self, handle: str) -> Handle | None:
        key = handle_key(handle)
        try:
            async with self._reader.execute(
                "SELECT h.handle, v.idx, v.type, v.data, v.ttl_type, v.ttl, v.timestamp,"
                " v.permissions, v.refs FROM handles h LEFT JOIN handle_values v ON v.key = h.key"
                " WHERE h.key = ? ORDER BY v.idx",
                (key,),
            ) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc
        if not rows:
            return None
        name = rows[0][0]
        values = tuple(value_from_row(row[1:]) for row in rows if row[1] is not None)
        return Handle(name, values)

    async def count_handles(self, prefix: str) -> int:
        try:
            async with self._reader.execute(
                "SELECT count FROM prefix_counts WHERE prefix = ?", (handle_key(prefix),)
            ) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc
        return row[0] if row else 0

    async def iter_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None, batch: int = 10_000
    ) -> AsyncIterator[list[str]]:
        low, high = prefix_bounds(prefix)
        remaining = limit
        skip = offset
        last: str | None = None
        while remaining is None or remaining > 0:
            size = batch if remaining is None else min(batch, remaining)
            if last is None:
                sql = (
                    "SELECT key, handle FROM handles WHERE key >= ? AND key < ?"
                    " ORDER BY key LIMIT ? OFFSET ?"
                )
                params: tuple = (low, high, size, skip)
            else:
                sql = (
                    "SELECT key, handle FROM handles WHERE key > ? AND key < ? ORDER BY key LIMIT ?"
                )
                params = (last, high, size)
            try:
                async with self._reader.execute(sql, params) as cur:
                    rows = await cur.fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite read failed: {exc}") from exc
            if not rows:
                return
            yield [row[1] for row in rows]
            if len(rows) < size:
                return
            last = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    # writes

    async def update(self, handle: str, change: Change) -> tuple[Handle | None, Handle | None]:
        # Shielded: once started, a transaction commits or rolls back even if the request that
        # asked for it is cancelled, so the connection is never left inside a transaction.
        return await asyncio.shield(self._update(handle_key(handle), change))

    async def _update(self, key: str, change: Change) -> tuple[Handle | None, Handle | None]:
        async with self._write_lock:
            db = self._writer
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite could not start a write: {exc}") from exc
            try:
                before = await self._load(db, key)
                after = change(before)
                if after is not None and handle_key(after.handle) != key:
                    raise ValueError(f"a change of {key!r} returned a record for {after.handle!r}")
                await self._apply(db, key, before, after)
                await db.execute("COMMIT")
            except BaseException as exc:
                try:
                    await db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the failure already ended the transaction
                if isinstance(exc, sqlite3.Error):
                    raise StoreUnavailable(f"SQLite write failed: {exc}") from exc
                raise
        return before, after

    @staticmethod
    async def _load(db: aiosqlite.Connection, key: str) -> Handle | None:
        async with db.execute("SELECT handle FROM handles WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        async with db.execute(
            f"SELECT {VALUE_COLUMNS} FROM handle_values WHERE key = ? ORDER BY idx", (key,)
        ) as cur:
            values = tuple(value_from_row(r) for r in await cur.fetchall())
        return Handle(row[0], values)

    @staticmethod
    async def _apply(
        db: aiosqlite.Connection, key: str, before: Handle | None, after: Handle | None
    ) -> None:
        prefix = handle_key(prefix_of(key))
        if after is None:
            if before is not None:
                await db.execute("DELETE FROM handle_values WHERE key = ?", (key,))
                await db.execute("DELETE FROM handles WHERE key = ?", (key,))
                await db.execute(
                    "UPDATE prefix_counts SET count = count - 1 WHERE prefix = ?", (prefix,)
                )
            return
        if before is None:
            await db.execute("INSERT INTO handles (key, handle) VALUES (?, ?)", (key, after.handle))
            await db.execute(
                "INSERT INTO prefix_counts (prefix, count) VALUES (?, 1)"
                " ON CONFLICT (prefix) DO UPDATE SET count = count + 1",
                (prefix,),
            )
            await _write_values(db, key, after.values)
            return
        old = {v.index: v for v in before.values}
        removed = old.keys() - after.indexes
        if removed:
            await db.executemany(
                "DELETE FROM handle_values WHERE key = ? AND idx = ?",
                [(key, i) for i in sorted(removed)],
            )
        await _write_values(db, key, [v for v in after.values if old.get(v.index) != v])


async def _write_values(db: aiosqlite.Connection, key: str, values: Iterable[HandleValue]) -> None:
    rows = [value_row(key, v) for v in values]
    if rows:
        await db.executemany(
            f"INSERT OR REPLACE INTO handle_values (key, {VALUE_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
