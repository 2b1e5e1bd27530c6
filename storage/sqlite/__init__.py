"""SQLite backend on aiosqlite: the embedded default.

WAL journal with ``synchronous=FULL``: a transaction is on disk when COMMIT returns, so an
answered write survives ``kill -9`` and power loss. One writer connection runs every change as
a ``BEGIN IMMEDIATE`` transaction (serialised in-process by a lock, across processes by SQLite's
own write lock); a separate reader connection serves lookups and never blocks the writer, and
reverse lookups run on a third.

The parts: ``store`` (the ``HandleStore``), ``commit`` (group commit: many writes, one
fsync), ``signal`` (how the processes on one file learn of each other's commits) and
``anchors`` (where listing pages start)."""

from .store import SCHEMA_VERSION, SQLiteStore

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]
