"""Every statement a store runs finds its rows of the big tables through an index, on both
backends.

A statement that scans ``handles``, ``handle_values``, ``value_text``, ``handle_versions`` or
``handle_changes`` costs time in proportion to the whole store: unseen with the few rows of a
test, a fifth of a second a write at a million handles (SQLite's deletes of a write's old
search texts did, until their plan was looked at). Here each kind of store call runs on a real
store, every statement it sends is recorded (SQLite's trace, with its values; asyncpg's query
logger, with its arguments), and each one's plan is asked of the database (PostgreSQL's with
the planner settings the store's connections use)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg

from storage import Handle, HandleStore, HandleValue
from storage.postgres import PLANNER_SETTINGS, PostgresStore
from storage.sqlite import SQLiteStore

#: Tables whose size is the store's: a scan of one is a read of everything.
BIG = {"handles", "handle_values", "value_text", "handle_versions", "handle_changes"}
STATEMENTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


def rec(name: str, *pairs: tuple[int, bytes]) -> Handle:
    return Handle(name, tuple(HandleValue(i, "URL", d, timestamp=1) for i, d in pairs))


async def _exercise(store: HandleStore) -> None:
    """Each kind of call a server makes of its store; then it is closed."""
    try:
        await _calls(store)
    finally:
        await store.close()


async def _calls(store: HandleStore) -> None:
    await store.import_records(
        [rec(f"TEST/i{n}", (1, b"https://i.example.org")) for n in range(30)]
    )
    if isinstance(store, SQLiteStore):
        await store.index_pending()
    three = rec("TEST/a", (1, b"https://a.example.org"), (2, b"x"), (3, b"y"))
    await store.update("TEST/a", lambda before: three)  # a create of several values
    two = rec("TEST/a", (1, b"https://b.example.org"), (4, b"z"))
    await store.update("TEST/a", lambda before: two)  # values replaced, added, removed
    await store.update_many(
        [(f"TEST/m{n}", lambda before, n=n: rec(f"TEST/m{n}", (1, b"u"), (2, b"v")))
         for n in range(5)]
        + [("TEST/a", lambda before: rec("TEST/a", (1, b"w"))), ("TEST/i1", lambda b: None)],
        atomic=False,
    )  # fmt: skip
    await store.update("TEST/m0", lambda before: None)  # a delete
    await store.get("TEST/a")
    await store.get_many(["TEST/a", "TEST/m1", "TEST/none"])
    await store.count_handles("TEST")
    assert [n async for page in store.iter_handles("TEST", offset=20, limit=5) for n in page]
    assert await store.search([("URL", "*example.org*")])
    await store.history("TEST/a")
    await store.version("TEST/a", 1)
    await store.prune_history(keep_versions=1)
    await store.prune_history(before=2.0)
    assert [line async for line in store.iter_exported()]


async def test_no_sqlite_statement_scans_a_big_table(tmp_path: Path, monkeypatch):
    sent: set[str] = set()
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        db = connect(*args, **kwargs)
        db.set_trace_callback(sent.add)
        return db

    monkeypatch.setattr(sqlite3, "connect", traced)
    path = tmp_path / "plans.sqlite3"
    await _exercise(await SQLiteStore.open(path))
    monkeypatch.undo()

    assert len(sent) > 20  # the trace saw the store's statements
    db = sqlite3.connect(path)
    try:
        scans: dict[str, list[str]] = {}
        for statement in sent:
            if statement.split(None, 1)[0].upper() not in STATEMENTS:
                continue
            plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}")]
            found = [s for s in plan if s.startswith("SCAN ") and s.split()[1] in BIG]
            if found:
                scans[statement[:300]] = found
    finally:
        db.close()
    assert not scans, scans


async def test_no_postgresql_statement_scans_a_big_table(pg_dsn, monkeypatch):
    sent: dict[str, tuple] = {}
    create_pool = asyncpg.create_pool

    async def logged(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda q: sent.setdefault(q.query, tuple(q.args)))

    async def pool(*args, **kwargs):
        return await create_pool(*args, init=logged, **kwargs)

    monkeypatch.setattr(asyncpg, "create_pool", pool)
    await _exercise(await PostgresStore.open(pg_dsn))
    monkeypatch.undo()

    assert len(sent) > 20  # the logger saw the store's statements
    conn = await asyncpg.connect(pg_dsn, server_settings=PLANNER_SETTINGS)
    try:
        scans: dict[str, list[str]] = {}
        for statement, args in sent.items():
            if statement.split(None, 1)[0].upper() not in STATEMENTS:
                continue
            if ";" in statement.strip().rstrip(";"):
                continue  # a script of the migrations
            try:
                plan = [row[0] for row in await conn.fetch(f"EXPLAIN {statement}", *args)]
            except asyncpg.InterfaceError:  # an executemany's: its first row's arguments
                plan = [row[0] for row in await conn.fetch(f"EXPLAIN {statement}", *args[0])]
            found = [
                line.strip()
                for line in plan
                if "Seq Scan on " in line and line.split("Seq Scan on ")[1].split()[0] in BIG
            ]
            if found:
                scans[statement[:300]] = found
    finally:
        await conn.close()
    assert not scans, scans
