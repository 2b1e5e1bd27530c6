"""The HandleStore contract, run against every backend (the ``store`` fixture's params)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sqlite3
import time
from pathlib import Path

import pytest

from storage import (
    ChangeFailed,
    Handle,
    HandleAlreadyExists,
    HandleStore,
    HandleValue,
    ImportConflict,
    SchemaMismatch,
    SearchTimeout,
    SessionRecord,
    TTLType,
    ValueReference,
    handle_key,
)
from storage.postgres import PostgresStore
from storage.rows import prefix_bounds
from storage.sqlite import SQLiteStore
from storage.sqlite.store import _delete_sql


def rec(name: str, *pairs: tuple[int, bytes], **kw) -> Handle:
    return Handle(name, tuple(HandleValue(i, "URL", d, timestamp=1, **kw) for i, d in pairs))


def put(record: Handle):
    return lambda before: record


async def test_absent_handle_is_none(store):
    assert await store.get("TEST/none") is None


async def test_create_and_get_roundtrips_every_field(store):
    value = HandleValue(
        index=7,
        type="EMAIL.work",
        data=b"\x00\xffbin",
        ttl=1234567,
        ttl_type=TTLType.ABSOLUTE,
        timestamp=1700000000,
        admin_read=False,
        admin_write=True,
        public_read=False,
        public_write=True,
        references=(ValueReference("TEST/other", 3),),
    )
    before, after = await store.update("TEST/a", put(Handle("TEST/a", (value,))))
    assert before is None and after == Handle("TEST/a", (value,))
    assert await store.get("TEST/a") == Handle("TEST/a", (value,))


async def test_lookup_is_case_insensitive_in_ascii_and_keeps_the_created_name(store):
    await store.update("Test/MixedCase", put(rec("Test/MixedCase", (1, b"x"))))
    got = await store.get("TEST/mixedcase")
    assert got is not None and got.handle == "Test/MixedCase"
    # Non-ASCII letters are not folded.
    await store.update("TEST/é", put(rec("TEST/é", (1, b"x"))))
    assert await store.get("TEST/É") is None


async def test_existing_record_keeps_its_name(store):
    await store.update("TEST/Name", put(rec("TEST/Name", (1, b"x"))))
    await store.update("test/name", put(rec("test/name", (1, b"y"))))
    got = await store.get("TEST/NAME")
    assert got.handle == "TEST/Name" and got.values[0].data == b"y"


async def test_change_sees_the_current_record_and_values_are_diffed(store):
    await store.update("TEST/d", put(rec("TEST/d", (1, b"a"), (2, b"b"), (3, b"c"))))
    seen = []

    def change(before):
        seen.append(before)
        return Handle(before.handle, (before.values[0], HandleValue(4, "URL", b"d")))

    before, _ = await store.update("TEST/d", change)
    assert seen == [before] and [v.index for v in before.values] == [1, 2, 3]
    assert [v.index for v in (await store.get("TEST/d")).values] == [1, 4]


async def test_a_change_that_raises_changes_nothing(store):
    await store.update("TEST/r", put(rec("TEST/r", (1, b"a"))))

    def change(before):
        raise HandleAlreadyExists("TEST/r")

    with pytest.raises(HandleAlreadyExists):
        await store.update("TEST/r", change)
    assert await store.get("TEST/r") == rec("TEST/r", (1, b"a"))
    # The store is still usable after the failed transaction.
    await store.update("TEST/r2", put(rec("TEST/r2", (1, b"b"))))
    assert await store.get("TEST/r2") is not None


async def test_delete_returns_before_and_removes_everything(store):
    await store.update("TEST/del", put(rec("TEST/del", (1, b"a"), (2, b"b"))))
    before, after = await store.update("TEST/del", lambda b: None)
    assert after is None and before is not None
    assert await store.get("TEST/del") is None
    assert await store.count_handles("TEST") == 0
    # Deleting what is not there is a no-op.
    assert await store.update("TEST/del", lambda b: None) == (None, None)


async def test_counts_and_listing_are_per_prefix(store):
    for name in ["TEST/b", "TEST/a", "TEST/c", "TEST2/x", "TES/y", "TEST.SUB/z", "test/D"]:
        await store.update(name, put(rec(name, (1, b"v"))))
    assert await store.count_handles("TEST") == 4
    assert await store.count_handles("test") == 4
    assert await store.count_handles("TEST2") == 1
    assert await store.count_handles("NONE") == 0
    names = [n async for batch in store.iter_handles("TEST") for n in batch]
    assert names == ["TEST/a", "TEST/b", "TEST/c", "test/D"]


async def test_listing_pages_batches_and_offsets(store):
    for i in range(25):
        name = f"TEST/{i:03d}"
        await store.update(name, put(rec(name, (1, b"v"))))
    everything = [n async for b in store.iter_handles("TEST", batch=7) for n in b]
    assert everything == [f"TEST/{i:03d}" for i in range(25)]
    batches = [b async for b in store.iter_handles("TEST", batch=7)]
    assert [len(b) for b in batches] == [7, 7, 7, 4]
    page = [n async for b in store.iter_handles("TEST", offset=10, limit=10, batch=3) for n in b]
    assert page == everything[10:20]
    assert [n async for b in store.iter_handles("TEST", offset=30, limit=5) for n in b] == []
    assert [n async for b in store.iter_handles("TEST", limit=0) for n in b] == []


async def _page(store, offset: int, limit: int, prefix: str = "TEST") -> list[str]:
    return [n async for b in store.iter_handles(prefix, offset=offset, limit=limit) for n in b]


async def test_pages_stay_right_as_handles_come_and_go(store):
    """Any page, asked again or after handles were created and deleted before it, shows the
    handles at those positions now (SQLite remembers where pages start)."""
    await _pages_as_handles_come_and_go(store)


async def _toggle(store, names: list[str], name: str) -> list[str]:
    """Delete ``name`` if it is among ``names``, else create it: the names after."""
    if name in names:
        await store.update(name, lambda before: None)
        return [n for n in names if n != name]
    await store.update(name, put(rec(name, (1, b"v"))))
    return sorted([*names, name])


async def _pages_as_handles_come_and_go(store) -> None:
    names = [f"TEST/{i:04d}" for i in range(0, 600, 2)]
    for name in names:
        await store.update(name, put(rec(name, (1, b"v"))))
    await store.update("TEST2/0", put(rec("TEST2/0", (1, b"v"))))  # a neighbouring prefix
    rng = random.Random(5)
    for step in range(6):
        for offset in [*rng.sample(range(0, len(names) + 20), 12), 40, 40, 80]:
            assert await _page(store, offset, 20) == names[offset : offset + 20], (step, offset)
        # A deletion, then a creation, before pages already seen.
        names = await _toggle(store, names, f"TEST/{rng.randrange(600):04d}")
        await store.update(names[3], put(rec(names[3], (1, b"changed"))))  # moves nothing
    assert await _page(store, 0, 5, prefix="TEST2") == ["TEST2/0"]


@pytest.mark.parametrize("columns", ["key, idx", "key"])
async def test_sqlite_deletes_of_many_rows_seek_the_index(tmp_path: Path, columns: str):
    """The statements that delete a write's old search texts find them by the index, however
    many rows they name: a scan of the table would read every value of every handle at each
    write of a record of two values or more."""
    path = tmp_path / "plans.sqlite3"
    await (await SQLiteStore.open(path)).close()  # the schema
    width = len(columns.split(","))
    marks = "(" + ", ".join("?" * width) + ")"
    db = sqlite3.connect(path)
    try:
        for n in (1, 2, 40):
            sql = _delete_sql("value_text", columns).format(", ".join([marks] * n))
            plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", ["k", 1][:width] * n)]
            scans = [step for step in plan if step in ("SCAN value_text", "SCAN t")]
            assert not scans, (n, plan)
            assert any("INDEX" in step or "PRIMARY KEY" in step for step in plan), plan
    finally:
        db.close()


async def test_sqlite_concurrent_deep_pages_skip_once(tmp_path: Path):
    store = await SQLiteStore.open(tmp_path / "deep.sqlite3")
    store.long_skip = 5  # every skip here is a long one
    try:
        names = [f"TEST/{i:03d}" for i in range(300)]
        await store.import_records([rec(n, (1, b"v")) for n in names])
        offsets = [250, 250, 120, 250, 299, 300, 120, 7] * 4
        pages = await asyncio.gather(*(_page(store, o, 10) for o in offsets))
        assert pages == [names[o : o + 10] for o in offsets]
    finally:
        await store.close()


async def test_sqlite_deep_pages_stay_seeks_as_its_own_writes_come_and_go(tmp_path: Path):
    """A handle the store itself creates or deletes moves the remembered page starts after it
    instead of dropping them: the deep page asked again is right, and read from an anchor
    (a short skip), not by skipping from the prefix's start."""
    store = await SQLiteStore.open(tmp_path / "moving.sqlite3")
    store.long_skip = 5
    skips: list[int] = []
    read = store._page_rows

    async def counted(low, high, after, size, skip):  # the real read, its skip noted
        skips.append(skip)
        return await read(low, high, after, size, skip)

    store._page_rows = counted
    try:
        names = [f"TEST/{i:04d}" for i in range(0, 600, 2)]
        await store.import_records([rec(n, (1, b"v")) for n in names])
        assert await _page(store, 250, 10) == names[250:260]
        assert max(skips) == 249  # the first time: a skip from the start
        rng = random.Random(7)
        for _ in range(20):
            skips.clear()
            names = await _toggle(store, names, f"TEST/{rng.randrange(600):04d}")
            await store.update(names[1], put(rec(names[1], (1, b"w"))))  # moves nothing
            assert await _page(store, 250, 10) == names[250:260]
            assert max(skips) <= 2, skips  # from the anchor moved by the write
    finally:
        await store.close()


async def test_sqlite_pages_follow_another_process_writes(tmp_path: Path):
    first = await SQLiteStore.open(tmp_path / "shared.sqlite3")
    second = await SQLiteStore.open(tmp_path / "shared.sqlite3")
    try:
        names = [f"TEST/{i:03d}" for i in range(0, 200, 2)]
        for name in names:
            await first.update(name, put(rec(name, (1, b"v"))))
        assert await _page(first, 50, 10) == names[50:60]
        await second.update("TEST/001", put(rec("TEST/001", (1, b"v"))))
        assert await _page(first, 50, 10) == sorted([*names, "TEST/001"])[50:60]
        await second.update("TEST/000", lambda before: None)
        assert await _page(first, 50, 10) == sorted([*names[1:], "TEST/001"])[50:60]
    finally:
        await first.close()
        await second.close()


async def _live_postgres(dsn: str) -> PostgresStore:
    """A PostgreSQL store that hears other nodes' writes (so it keeps page anchors)."""
    store = await PostgresStore.open(dsn)
    told = _Told()
    await store.watch(told)
    await asyncio.wait_for(told.live.wait(), 10)
    return store


async def test_postgresql_pages_seek_from_anchors_and_stay_right(pg_dsn):
    """While it hears other nodes' writes, the PostgreSQL store remembers where pages start
    (as SQLite's does): pages stay right as handles come and go, deep pages skip once."""
    store = await _live_postgres(pg_dsn)
    try:
        await _pages_as_handles_come_and_go(store)
        await asyncio.sleep(0.2)  # the notifications of its own last writes have arrived
        low = prefix_bounds("TEST")[0]
        await _page(store, 80, 20)
        assert store._anchors.nearest(low, 100)[0] == 100  # the next page starts from there
        store.long_skip = 5
        names = [f"DEEP/{i:03d}" for i in range(300)]
        await store.import_records([rec(n, (1, b"v")) for n in names])
        offsets = [250, 250, 120, 250, 299, 300, 120, 7] * 4
        pages = await asyncio.gather(*(_page(store, o, 10, prefix="DEEP") for o in offsets))
        assert pages == [names[o : o + 10] for o in offsets]
    finally:
        await store.close()


async def test_postgresql_pages_follow_another_nodes_writes(pg_dsn):
    first = await _live_postgres(pg_dsn)
    second = await PostgresStore.open(pg_dsn)
    try:
        names = [f"TEST/{i:03d}" for i in range(0, 200, 2)]
        for name in names:
            await first.update(name, put(rec(name, (1, b"v"))))
        assert await _page(first, 50, 10) == names[50:60]
        for change, expected in (
            (("TEST/001", put(rec("TEST/001", (1, b"v")))), sorted([*names, "TEST/001"])),
            (("TEST/000", lambda before: None), sorted([*names[1:], "TEST/001"])),
        ):
            await second.update(*change)
            for _ in range(200):  # the other node's NOTIFY arrives within milliseconds
                if await _page(first, 50, 10) == expected[50:60]:
                    break
                await asyncio.sleep(0.01)
            assert await _page(first, 50, 10) == expected[50:60]
    finally:
        await first.close()
        await second.close()


async def test_concurrent_updates_of_one_record_are_serialised(store):
    await store.update("TEST/counter", put(rec("TEST/counter", (1, b"0"))))

    def increment(before):
        n = int(before.values[0].data)
        return rec(before.handle, (1, str(n + 1).encode()))

    await asyncio.gather(*(store.update("TEST/counter", increment) for _ in range(50)))
    assert (await store.get("TEST/counter")).values[0].data == b"50"


async def test_concurrent_creates_have_one_winner(store):
    def create_once(before):
        if before is not None:
            raise HandleAlreadyExists("TEST/once")
        return rec("TEST/once", (1, b"x"))

    results = await asyncio.gather(
        *(store.update("TEST/once", create_once) for _ in range(30)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, HandleAlreadyExists) for r in results if isinstance(r, Exception))
    assert await store.count_handles("TEST") == 1


async def test_concurrent_updates_fail_alone(store):
    """Updates in flight together (SQLite commits them as a group) succeed or fail each on its
    own: a raising change takes nothing of the others with it, nor leaves anything behind."""
    await store.update("TEST/counter", put(rec("TEST/counter", (1, b"0"))))

    def increment(before):
        return rec(before.handle, (1, str(int(before.values[0].data) + 1).encode()))

    def create_unless_odd(n):
        def change(before):
            if n % 2:
                raise HandleAlreadyExists(f"TEST/g{n}")
            return rec(f"TEST/g{n}", (1, f"https://g.org/{n}".encode()))

        return change

    calls = [store.update(f"TEST/g{n}", create_unless_odd(n)) for n in range(60)]
    calls += [store.update("TEST/counter", increment) for _ in range(20)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [n for n, r in enumerate(results[:60]) if isinstance(r, HandleAlreadyExists)]
    assert failed == list(range(1, 60, 2))
    assert not any(isinstance(r, Exception) for r in results[60:])
    for n in range(60):
        stored = await store.get(f"TEST/g{n}")
        assert (stored is None) == bool(n % 2), n
    assert (await store.get("TEST/counter")).values[0].data == b"20"
    assert await store.count_handles("TEST") == 31


async def test_get_many_reads_like_get(store):
    await store.update("TEST/m1", put(rec("TEST/M1", (1, b"a"), (2, b"b"))))
    await store.update("TEST/m2", put(Handle("TEST/m2", ())))
    names = ["test/m1", "TEST/m2", "TEST/none", "TEST/M1"] + [f"TEST/x{n}" for n in range(1200)]
    found = await store.get_many(names)
    assert set(found) == {handle_key(n) for n in names}  # one each, by key
    m1, m2 = found[handle_key("TEST/m1")], found[handle_key("TEST/m2")]
    assert m1 == await store.get("TEST/m1") == rec("TEST/M1", (1, b"a"), (2, b"b"))
    assert m2 == Handle("TEST/m2", ())
    assert found[handle_key("TEST/none")] is None and found[handle_key("TEST/x1199")] is None
    assert await store.get_many([]) == {}


def _create(name: str, data: bytes = b"x"):
    def change(before):
        if before is not None:
            raise HandleAlreadyExists(name)
        return rec(name, (1, data))

    return change


async def test_update_many_applies_in_order_in_one_call(store):
    await store.update("TEST/old", put(rec("TEST/old", (1, b"a"))))
    outcomes = await store.update_many(
        [
            ("TEST/n1", _create("TEST/n1")),
            ("TEST/old", lambda before: None),
            ("TEST/n1", lambda before: rec(before.handle, (1, before.values[0].data + b"2"))),
        ],
        atomic=True,
    )
    assert outcomes == [
        (None, rec("TEST/n1", (1, b"x"))),
        (rec("TEST/old", (1, b"a")), None),
        (rec("TEST/n1", (1, b"x")), rec("TEST/n1", (1, b"x2"))),
    ]
    assert await store.get("TEST/n1") == rec("TEST/n1", (1, b"x2"))
    assert await store.get("TEST/old") is None
    assert await store.count_handles("TEST") == 1
    assert await store.update_many([], atomic=True) == []


async def test_an_atomic_update_many_that_fails_stores_nothing(store):
    await store.update("TEST/keep", put(rec("TEST/keep", (1, b"a"))))
    changes = [("TEST/a1", _create("TEST/a1")), ("TEST/keep", lambda before: None)]
    # Creating TEST/keep works (the change before deleted it); creating TEST/a1 again does
    # not (the first change made it): each change sees what the ones before it did.
    changes += [("TEST/keep", _create("TEST/keep", b"new")), ("TEST/a1", _create("TEST/a1"))]
    with pytest.raises(ChangeFailed) as failed:
        await store.update_many(changes, atomic=True)
    assert failed.value.index == 3 and isinstance(failed.value.error, HandleAlreadyExists)
    assert await store.get("TEST/a1") is None
    assert await store.get("TEST/keep") == rec("TEST/keep", (1, b"a"))
    assert await store.count_handles("TEST") == 1
    # The store goes on.
    assert (await store.update_many(changes[:3], atomic=True))[2][1] == rec(
        "TEST/keep", (1, b"new")
    )


async def test_a_change_of_update_many_that_is_not_atomic_fails_alone(store):
    await store.update("TEST/keep", put(rec("TEST/keep", (1, b"a"))))
    changes = [(f"TEST/b{n}", _create(f"TEST/b{n}")) for n in range(5)]
    changes.insert(2, ("TEST/keep", _create("TEST/keep")))
    outcomes = await store.update_many(changes, atomic=False)
    assert isinstance(outcomes[2], HandleAlreadyExists)
    assert [o for n, o in enumerate(outcomes) if n != 2] == [
        (None, rec(f"TEST/b{n}", (1, b"x"))) for n in range(5)
    ]
    assert await store.count_handles("TEST") == 6
    assert await store.get("TEST/keep") == rec("TEST/keep", (1, b"a"))


async def test_update_many_writes_exactly_what_changed(store):
    """Values removed, rewritten and added; a handle deleted and made again under another
    spelling takes the new name; the search index and the counts follow."""

    def url(i: int, text: str) -> HandleValue:
        return HandleValue(i, "URL", text.encode(), timestamp=1)

    await store.update("TEST/k", put(Handle("TEST/k", (url(1, "https://keep.org"),
                       url(2, "https://removed.org"), url(3, "https://before.org")))))  # fmt: skip
    after = Handle("TEST/k", (url(1, "https://keep.org"), url(3, "https://rewritten.org"),
                              url(4, "https://added.org")))  # fmt: skip
    outcomes = await store.update_many(
        [
            ("TEST/k", put(after)),
            ("TEST/brief", put(Handle("TEST/brief", (url(1, "https://brief.org"),)))),
            ("TEST/brief", lambda before: None),
        ],
        atomic=False,
    )
    assert outcomes[2] == (Handle("TEST/brief", (url(1, "https://brief.org"),)), None)
    assert await store.get("TEST/k") == after
    assert await store.get("TEST/brief") is None
    assert await store.search([("URL", "*removed.org*")]) == []
    assert await store.search([("URL", "*before.org*")]) == []
    assert await store.search([("URL", "*rewritten.org*")]) == ["TEST/k"]
    assert await store.search([("URL", "*added.org*")]) == ["TEST/k"]
    assert await store.search([("URL", "*brief.org*")]) == []
    again = Handle("test/K", (url(1, "https://again.org"),))
    await store.update_many([("TEST/k", lambda before: None), ("test/K", put(again))], atomic=True)
    assert await store.get("TEST/k") == again
    assert [n async for batch in store.iter_handles("TEST") for n in batch] == ["test/K"]
    assert await store.count_handles("TEST") == 1


async def test_update_many_beside_single_updates(store):
    """Batches and single updates in flight together each stand or fall as they should."""
    await store.update("TEST/counter", put(rec("TEST/counter", (1, b"0"))))

    def increment(before):
        return rec(before.handle, (1, str(int(before.values[0].data) + 1).encode()))

    def failing(before):
        raise HandleAlreadyExists("TEST/counter")

    calls = [store.update("TEST/counter", increment) for _ in range(10)]
    calls += [
        store.update_many([("TEST/counter", increment), ("TEST/counter", failing)], atomic=True)
        for _ in range(5)
    ]
    calls += [
        store.update_many([("TEST/counter", increment), ("TEST/counter", failing)], atomic=False)
        for _ in range(5)
    ]
    calls += [
        store.update_many(
            [(f"TEST/big{n}", _create(f"TEST/big{n}")) for n in range(600)], atomic=True
        )
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, ChangeFailed) and r.index == 1 for r in results[10:15])
    assert (await store.get("TEST/counter")).values[0].data == b"15"
    assert await store.count_handles("TEST") == 601


async def test_a_cancelled_caller_does_not_break_the_transaction(store):
    task = asyncio.ensure_future(store.update("TEST/c1", put(rec("TEST/c1", (1, b"x")))))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.update("TEST/c2", put(rec("TEST/c2", (1, b"y"))))
    assert await store.get("TEST/c2") is not None


async def test_sqlite_data_survives_reopen(tmp_path: Path):
    path = tmp_path / "reopen.sqlite3"
    s = await SQLiteStore.open(path)
    await s.update("TEST/p", put(rec("TEST/p", (1, b"kept"))))
    await s.close()
    s = await SQLiteStore.open(path)
    try:
        assert (await s.get("TEST/p")).values[0].data == b"kept"
        assert await s.count_handles("TEST") == 1
    finally:
        await s.close()


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path):
    import sqlite3

    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 999")
    with pytest.raises(SchemaMismatch, match="999"):
        await SQLiteStore.open(path)


async def test_postgres_data_survives_reopen_and_a_newer_schema_is_refused(pg_dsn: str):
    s = await PostgresStore.open(pg_dsn)
    await s.update("TEST/p", put(rec("TEST/p", (1, b"kept"))))
    await s.close()
    s = await PostgresStore.open(pg_dsn)
    try:
        assert (await s.get("TEST/p")).values[0].data == b"kept"
        assert await s.count_handles("TEST") == 1
        async with s._pool.acquire() as conn:
            await conn.execute("UPDATE handle_server_schema SET version = 999")
    finally:
        await s.close()
    with pytest.raises(SchemaMismatch, match="999"):
        await PostgresStore.open(pg_dsn)


# -- export and import -------------------------------------------------------------------------


async def _all_records(store, **kw) -> list[Handle]:
    return [r async for batch in store.iter_records(**kw) for r in batch]


async def test_iter_records_yields_every_record_in_key_order_in_batches(store):
    names = ["TEST/b", "10.5555/z", "Test/A", "TEST/c/d", "TEST/é"]
    for n, name in enumerate(names):
        await store.update(name, put(rec(name, (1, f"v{n}".encode()), (2, b"\x00"))))
    await store.update("TEST/novalues", put(Handle("TEST/novalues")))
    batches = [batch async for batch in store.iter_records(batch=2)]
    assert [len(b) for b in batches] == [2, 2, 2]
    got = [r for b in batches for r in b]
    assert [r.key for r in got] == sorted(r.key for r in got)
    assert {r.handle for r in got} == {*names, "TEST/novalues"}
    for record in got:
        assert record == await store.get(record.handle)  # names, values, every field
    after = await _all_records(store, after=got[2].key)
    assert after == got[3:]


async def test_iter_records_is_one_snapshot(store):
    for n in range(6):
        await store.update(f"TEST/s{n}", put(rec(f"TEST/s{n}", (1, b"old"))))
    records = store.iter_records(batch=2)
    first = await anext(records)
    # Written while the export runs: neither the change nor the new handle is seen.
    await store.update("TEST/s5", put(rec("TEST/s5", (1, b"new"))))
    await store.update("TEST/s9", put(rec("TEST/s9", (1, b"new"))))
    rest = [r async for batch in records for r in batch]
    seen = first + rest
    assert [r.handle for r in seen] == [f"TEST/s{n}" for n in range(6)]
    assert all(r.values[0].data == b"old" for r in seen)


async def test_import_creates_keeps_and_refuses_or_replaces(store):
    from storage import ImportConflict

    a = rec("TEST/a", (1, b"a"))
    b = Handle("Test/B", (HandleValue(5, "X", b"\xff", timestamp=99, public_read=False),))
    result = await store.import_records([a, b])
    assert (result.created, result.replaced, result.unchanged) == (2, 0, 0)
    assert await store.get("TEST/b") == b  # stored exactly: name, timestamp, flags
    assert await store.count_handles("TEST") == 2

    again = await store.import_records([a, b])  # an import run twice changes nothing
    assert (again.created, again.replaced, again.unchanged) == (0, 0, 2)

    changed = rec("TEST/a", (1, b"other"))
    with pytest.raises(ImportConflict):
        await store.import_records([rec("TEST/new", (1, b"n")), changed])
    assert await store.get("TEST/new") is None  # the whole batch is refused
    assert await store.get("TEST/a") == a

    result = await store.import_records([rec("TEST/new", (1, b"n")), changed], replace=True)
    assert (result.created, result.replaced, result.unchanged) == (1, 1, 0)
    assert await store.get("TEST/a") == changed
    assert await store.count_handles("TEST") == 3

    with pytest.raises(ValueError, match="twice"):
        await store.import_records([rec("TEST/d", (1, b"1")), rec("test/D", (1, b"2"))])
    assert await store.get("TEST/d") is None


# -- authentication state shared by every node --------------------------------------------------

ADMIN_ID = ValueReference("0.NA/TEST", 300)


def session(key: bytes, expires: float, identity: ValueReference | None = ADMIN_ID):
    return SessionRecord(key, identity, expires)


async def test_sessions_are_stored_found_and_expire(store):
    assert await store.get_session(b"k1", now=100) is None
    assert await store.put_session(session(b"k1", 200), now=100, limit=10)
    assert await store.get_session(b"k1", now=150) == session(b"k1", 200)
    assert await store.get_session(b"k1", now=200) is None  # expired
    # Another identity proved in the same session replaces the first.
    other = ValueReference("TEST/user", 301)
    assert await store.put_session(session(b"k1", 300, other), now=150, limit=10)
    assert (await store.get_session(b"k1", now=150)).identity == other


async def test_a_renewed_session_lives_longer_and_only_later(store):
    await store.put_session(session(b"k", 200), now=100, limit=10)
    await store.renew_session(b"k", expires=400)
    await store.renew_session(b"k", expires=300)  # earlier: ignored
    assert (await store.get_session(b"k", now=399)).expires == 400
    await store.renew_session(b"unknown", expires=400)
    assert await store.get_session(b"unknown", now=0) is None


async def test_a_closed_session_stays_closed(store):
    await store.put_session(session(b"k", 200), now=100, limit=10)
    assert await store.put_session(session(b"k", 250, None), now=100, limit=10)
    assert await store.get_session(b"k", now=150) == session(b"k", 250, None)
    # Neither proving an identity again nor renewing opens it.
    assert not await store.put_session(session(b"k", 500), now=150, limit=10)
    await store.renew_session(b"k", expires=600)
    assert await store.get_session(b"k", now=150) == session(b"k", 250, None)
    # A session closed before it proved anything is stored closed, too.
    assert await store.put_session(session(b"fresh", 250, None), now=100, limit=10)
    assert not await store.put_session(session(b"fresh", 500), now=150, limit=10)


async def test_sessions_beyond_the_limit_drop_expired_then_closed_then_soonest(store):
    await store.put_session(session(b"old", 110), now=100, limit=3)
    await store.put_session(session(b"soon", 300), now=100, limit=3)
    await store.put_session(session(b"late", 900), now=100, limit=3)
    # At the limit, after "old" expired: "old" goes, nothing else.
    await store.put_session(session(b"closed", 800, None), now=120, limit=3)
    assert await store.get_session(b"soon", now=120) is not None
    # Full again: the closed one goes first, then the one that expires soonest.
    await store.put_session(session(b"new1", 1000), now=130, limit=3)
    assert await store.get_session(b"closed", now=130) is None
    await store.put_session(session(b"new2", 1000), now=130, limit=3)
    assert await store.get_session(b"soon", now=130) is None
    for key in (b"late", b"new1", b"new2"):
        assert await store.get_session(key, now=130) is not None
    # Updating a stored session evicts nobody.
    await store.put_session(session(b"late", 2000), now=130, limit=3)
    for key in (b"late", b"new1", b"new2"):
        assert await store.get_session(key, now=130) is not None


async def test_failures_count_within_their_window(store):
    keys = ["identity 300:0.NA/TEST", "client 192.0.2.1"]
    assert await store.failures(keys, since=0) == {}
    await store.add_failure(keys, now=100, since=40)
    await store.add_failure(keys[1:], now=110, since=50)
    assert await store.failures(keys, since=50) == {keys[0]: (100, 1), keys[1]: (100, 2)}
    assert await store.failures(keys[:1], since=50) == {keys[0]: (100, 1)}
    # After the window of the first failure, counting starts again.
    assert await store.failures(keys, since=100) == {}
    await store.add_failure(keys[1:], now=170, since=110)
    assert await store.failures(keys, since=110) == {keys[1]: (170, 1)}
    # The identity's old count was dropped when the client failed again.
    assert await store.failures(keys, since=0) == {keys[1]: (170, 1)}


async def test_concurrent_failures_are_all_counted(store):
    keys = [f"client 192.0.2.{i}" for i in range(3)]
    await asyncio.gather(
        *(store.add_failure([keys[i % 3], keys[(i + 1) % 3]], now=100, since=0) for i in range(30))
    )
    assert await store.failures(keys, since=0) == {key: (100, 20) for key in keys}


async def test_a_shared_secret_is_made_once(store):
    first = await store.shared_secret("sessions", b"a" * 32)
    assert first == b"a" * 32
    assert await store.shared_secret("sessions", b"b" * 32) == first
    assert await store.shared_secret("other", b"c" * 32) == b"c" * 32


async def test_tickets_expire_are_taken_once_and_are_bounded(store):
    await store.put_ticket(b"a", b"challenge a", expires=200, now=100, limit=3)
    assert await store.get_ticket(b"a", now=150) == b"challenge a"
    assert await store.get_ticket(b"a", now=200) is None  # expired
    await store.put_ticket(b"a", b"renewed", expires=300, now=150, limit=3)
    assert await store.get_ticket(b"a", now=250) == b"renewed"
    # Taken once: the second taker (and any later reader) finds nothing.
    taken = await asyncio.gather(*(store.take_ticket(b"a", now=250) for _ in range(5)))
    assert sorted(taken, key=bool) == [None] * 4 + [b"renewed"]
    assert await store.get_ticket(b"a", now=250) is None
    # An expired ticket cannot be taken.
    await store.put_ticket(b"old", b"x", expires=260, now=250, limit=3)
    assert await store.take_ticket(b"old", now=260) is None
    # At the limit the tickets that expire first make room.
    for i, expires in enumerate((500, 400, 600)):
        await store.put_ticket(b"k%d" % i, b"v", expires=expires, now=300, limit=3)
    await store.put_ticket(b"new", b"v", expires=700, now=300, limit=3)
    held = [k for k in (b"k0", b"k1", b"k2", b"new") if await store.get_ticket(k, now=300)]
    assert held == [b"k0", b"k2", b"new"]


# -- reverse lookup -----------------------------------------------------------------------------


def val(index: int, type_: str, data: bytes, *, public: bool = True) -> HandleValue:
    return HandleValue(index, type_, data, timestamp=1, public_read=public)


async def _search_fixture(store) -> None:
    records = [
        Handle("TEST/a", (val(1, "URL", b"https://example.org/a"), val(2, "CHECKSUM", b"md5:111"))),
        Handle("TEST/b", (val(1, "URL", b"https://example.org/b", public=False),)),
        Handle("TEST/c", (val(1, "url", b"https://other.net/c"), val(2, "CHECKSUM", b"md5:111"))),
        Handle("OTHER/d", (val(1, "URL", b"https://example.org/d"),)),
        Handle("TEST/e", (val(300, "HS_SECKEY", b"https://example.org/secret"),)),
        Handle("TEST/f", (val(1, "URL", b"\xff\xfehttps://example.org/f"),)),
        Handle("TEST/g", (val(1, "EUDAT/CHECKSUM", b"sha:abc*[x]?_%"),)),
    ]
    for record in records:
        await store.update(record.handle, put(record))


async def test_search_matches_type_and_pattern_from_public_values(store):
    await _search_fixture(store)
    assert await store.search([("URL", "*example.org*")]) == ["OTHER/d", "TEST/a"]
    assert await store.search([("url", "https://example.org/a")]) == ["TEST/a"]
    assert await store.search([("URL", "*EXAMPLE.ORG*")]) == []  # data is case-sensitive
    assert await store.search([("URL", "*.net/c")]) == ["TEST/c"]  # the type is not
    assert await store.search([("CHECKSUM", "md5:111")]) == ["TEST/a", "TEST/c"]
    # Every condition must hold.
    both = [("URL", "*example.org*"), ("CHECKSUM", "md5:111")]
    assert await store.search(both) == ["TEST/a"]
    # Any type, with characters that are wildcards to SQL taken as themselves.
    assert await store.search([("EUDAT/CHECKSUM", "sha:abc*[x]?_%")]) == ["TEST/g"]
    assert await store.search([("EUDAT/CHECKSUM", "*[x]?_%")]) == ["TEST/g"]
    assert await store.search([("EUDAT/CHECKSUM", "sha:abc_x")]) == []


async def test_search_scope_privacy_and_paging(store):
    await _search_fixture(store)
    pattern = [("URL", "*example.org*")]
    assert await store.search(pattern, prefix="test") == ["TEST/a"]
    # A private value counts only under a prefix the caller may read.
    assert await store.search(pattern, readable=["TEST"]) == ["OTHER/d", "TEST/a", "TEST/b"]
    assert await store.search(pattern, readable=["OTHER"]) == ["OTHER/d", "TEST/a"]
    # Secret keys and data that is not text are never found.
    assert await store.search(pattern, readable=["TEST", "OTHER"], prefix="TEST") == [
        "TEST/a",
        "TEST/b",
    ]
    assert await store.search([("HS_SECKEY", "*example*")], readable=["TEST"]) == []
    assert await store.search(pattern, readable=["TEST"], offset=1, limit=1) == ["TEST/a"]


async def test_the_search_index_follows_every_write(store):
    await _search_fixture(store)
    pattern = [("URL", "*example.org*")]
    changed = Handle("TEST/a", (val(1, "URL", b"https://moved.example.net/a"),))
    await store.update("TEST/a", put(changed))
    await store.update("OTHER/d", lambda before: None)
    assert await store.search(pattern) == []
    assert await store.search([("URL", "*moved*")]) == ["TEST/a"]
    # A value that became secret, and one that became private, are no longer found.
    await store.update("TEST/c", put(Handle("TEST/c", (val(1, "HS_SECKEY", b"other.net"),))))
    assert await store.search([("URL", "*other.net*")]) == []
    assert await store.search([("HS_SECKEY", "*other.net*")], readable=["TEST"]) == []
    # Imports are indexed like any write.
    await store.import_records([Handle("TEST/i", (val(1, "URL", b"https://imported.org"),))])
    assert await store.search([("URL", "*imported*")]) == ["TEST/i"]


async def test_sqlite_indexes_imported_texts_together_and_after_a_crash(tmp_path, monkeypatch):
    """SQLite: the texts an import adds go into the trigram index afterwards, in chunks (here
    of 7 rows), at the next search or at close; writes and deletes meanwhile, ids reused, and
    an import cut short (its store never closed) leave an index that finds exactly what is
    stored."""
    import storage.sqlite.store as sqlite_store

    monkeypatch.setattr(sqlite_store, "_INDEX_CHUNK", 7)
    path = tmp_path / "store.sqlite3"
    first = await SQLiteStore.open(path)
    await first.update("TEST/old", put(Handle("TEST/old", (val(1, "URL", b"https://x.org/old"),))))
    urls = [Handle(f"TEST/i{n}", (val(1, "URL", b"https://x.org/i%d" % n),)) for n in range(30)]
    await first.import_records(urls)
    # Meanwhile: a write, a deleted imported record, an indexed record deleted and written
    # again (a reused id).
    await first.update("TEST/new", put(Handle("TEST/new", (val(1, "URL", b"https://x.org/new"),))))
    await first.update("TEST/i3", lambda before: None)
    await first.update("TEST/old", lambda before: None)
    await first.update("TEST/old", put(Handle("TEST/old", (val(1, "URL", b"https://x.org/o2"),))))
    more = [Handle(f"TEST/j{n}", (val(1, "URL", b"https://x.org/j%d" % n),)) for n in range(9)]
    await first.import_records(more)
    # Cut short: this store is never closed; another opens the file, as after a crash.
    second = await SQLiteStore.open(path)
    try:
        expected = sorted(
            [f"TEST/i{n}" for n in range(30) if n != 3]
            + [f"TEST/j{n}" for n in range(9)]
            + ["TEST/new", "TEST/old"]
        )
        assert sorted(await second.search([("URL", "https://x.org/*")])) == expected
        assert await second.search([("URL", "*x.org/o2")]) == ["TEST/old"]
        assert await second.search([("URL", "*x.org/old")]) == []
        assert await second.search([("URL", "*x.org/i3")]) == []
        # And the index and its table agree (FTS5's own check).
        await second._writer.execute(
            "INSERT INTO value_text_fts (value_text_fts, rank) VALUES ('integrity-check', 1)"
        )
    finally:
        for opened in (second, first):
            with contextlib.suppress(Exception):  # (a failure above must not hang the run)
                await opened.close()


async def test_sqlite_a_text_written_below_the_imports_ids_is_indexed_at_once(tmp_path):
    """SQLite: an id below the first one an import added (the highest rows deleted, their
    ids given again) is indexed as it is written: the import's catch-up starts above it."""
    store = await SQLiteStore.open(tmp_path / "store.sqlite3")
    try:
        for name in ("TEST/a", "TEST/b"):
            await store.update(
                name, put(Handle(name, (val(1, "URL", b"https://y.org/" + name.encode()),)))
            )
        await store.import_records([Handle("TEST/c", (val(1, "URL", b"https://y.org/c"),))])
        await store.update("TEST/c", lambda before: None)
        await store.update("TEST/b", lambda before: None)
        await store.update("TEST/d", put(Handle("TEST/d", (val(1, "URL", b"https://y.org/d"),))))
        assert await store.search([("URL", "https://y.org/*")]) == ["TEST/a", "TEST/d"]
    finally:
        await store.close()


async def test_search_patterns_must_be_findable_from_the_index(store):
    await _search_fixture(store)
    for pattern in ("*", "ab", "*ab*", "a*b*c"):
        with pytest.raises(ValueError, match="3 characters"):
            await store.search([("URL", pattern)])
    with pytest.raises(ValueError):
        await store.search([])
    # Next to one the index finds, any pattern is checked on what it found.
    assert await store.search([("URL", "*"), ("CHECKSUM", "md5:111")]) == ["TEST/a", "TEST/c"]
    assert await store.search([("CHECKSUM", "md5:111"), ("URL", "*.n*")]) == ["TEST/c"]
    assert await store.search([("NOTE", "*"), ("CHECKSUM", "md5:111")]) == []
    private = [("URL", "*"), ("URL", "https://example.org/b")]
    assert await store.search(private) == []
    assert await store.search(private, readable=["TEST"]) == ["TEST/b"]


async def test_a_search_past_its_time_limit_is_stopped(store):
    """A costly search (many conditions over many values) given less time than it needs is
    stopped with SearchTimeout; the store answers reads and further searches as before."""
    await store.import_records(
        [rec(f"TEST/s{n:05d}", (1, f"https://example.org/{n}".encode())) for n in range(5000)]
    )
    costly = [("URL", "*xam*"), ("URL", "*amp*"), ("URL", "*mpl*"), ("URL", "*ple*")]
    with pytest.raises(SearchTimeout):
        await store.search(costly, time_limit=0.0005)
    assert (await store.get("TEST/s00042")).values[0].data == b"https://example.org/42"
    assert len(await store.search(costly, limit=10_000, time_limit=60)) == 5000
    # Identical conditions count once.
    assert await store.search([("URL", "*/4242"), ("url", "*/4242")]) == ["TEST/s04242"]


async def test_sessions_per_identity_are_bounded(store):
    other = ValueReference("TEST/OTHER", 300)
    for n in range(3):
        await store.put_session(session(b"o%d" % n, 500 + n, other), now=100, limit=100)
    for n in range(5):
        stored = session(b"a%d" % n, 200 + n)
        assert await store.put_session(stored, now=100, limit=100, per_identity=3)
    # The identity keeps its 3 newest; the other identity's sessions are untouched.
    kept = [n for n in range(5) if await store.get_session(b"a%d" % n, now=150)]
    assert kept == [2, 3, 4]
    assert all([await store.get_session(b"o%d" % n, now=150) for n in range(3)])
    # Renewing one already stored evicts nothing.
    assert await store.put_session(session(b"a2", 300), now=150, limit=100, per_identity=3)
    assert [n for n in range(5) if await store.get_session(b"a%d" % n, now=150)] == [2, 3, 4]


class _Told:
    """A change listener that keeps what it is told."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []
        self.live = asyncio.Event()

    def changed(self, key: str | None) -> None:
        self.keys.append(key)

    def watching(self, live: bool) -> None:
        if live:
            self.live.set()


async def test_an_announcement_reaches_the_other_processes_and_changes_nothing(
    store, tmp_path: Path, request: pytest.FixtureRequest
):
    """``announce`` (a purge): another process on the same store hears of the keys (``None``:
    every record) as it hears of writes; no record changes."""
    if isinstance(store, SQLiteStore):
        other: HandleStore = await SQLiteStore.open(tmp_path / "store.sqlite3")
    else:
        other = await PostgresStore.open(request.getfixturevalue("pg_dsn"))
    try:
        await store.update("TEST/kept", put(rec("TEST/kept", (1, b"v"))))
        told = _Told()
        assert await other.watch(told)
        await asyncio.wait_for(told.live.wait(), 10)
        await other.catch_up()
        told.keys.clear()
        await store.announce(["test/kept", None])
        for _ in range(200):
            await other.catch_up()
            if len(told.keys) >= 2:
                break
            await asyncio.sleep(0.02)
        assert told.keys == ["test/kept", None]
        assert (await other.get("TEST/kept")).values[0].data == b"v"
    finally:
        await other.close()


async def test_every_change_keeps_a_version_in_its_history(store):
    one = rec("TEST/h", (1, b"a"))
    two = rec("TEST/h", (1, b"a"), (2, b"b"))
    await store.update("TEST/h", put(one), by="300:0.NA/TEST")
    await store.update("TEST/h", put(two), by="300:TEST/USER")
    await store.update("TEST/h", put(two), by="300:TEST/USER")  # unchanged: no version
    await store.update("TEST/h", put(rec("TEST/h", (1, b"A"), (2, b"b"))))
    await store.update("TEST/h", put(rec("TEST/h", (1, b"A"))))
    await store.update("TEST/h", put(rec("TEST/h", (3, b"c"))))
    await store.update("test/H", lambda before: None, by="300:0.NA/TEST")
    total, versions = await store.history("test/h")
    assert total == 6
    assert [(v.number, v.by, v.operation) for v in versions] == [
        (1, "300:0.NA/TEST", "create"),
        (2, "300:TEST/USER", "add"),
        (3, None, "modify"),
        (4, None, "remove"),
        (5, None, "replace"),
        (6, "300:0.NA/TEST", "delete"),
    ]
    assert versions[0].record == one and versions[1].record == two
    assert versions[-1].record is None and versions[-1].operation == "delete"
    assert all(a.at <= b.at for a, b in itertools.pairwise(versions))
    # A deleted handle keeps its history; made again, it continues it.
    await store.update("TEST/h", put(rec("TEST/h", (1, b"again"))))
    total, page = await store.history("TEST/h", offset=5, limit=2)
    assert total == 7 and [(v.number, v.operation) for v in page] == [(6, "delete"), (7, "create")]
    assert (await store.version("TEST/h", 2)).record == two
    assert await store.version("TEST/h", 9) is None
    assert await store.history("TEST/never") == (0, [])


async def test_update_many_keeps_a_version_for_each_change(store):
    await store.update_many(
        [
            ("TEST/m", put(rec("TEST/m", (1, b"a")))),
            ("TEST/m", put(rec("TEST/m", (1, b"a"), (2, b"b")))),
            ("TEST/n", put(rec("TEST/n", (1, b"n")))),
            ("TEST/m", put(rec("TEST/m", (1, b"a"), (2, b"b")))),  # unchanged
        ],
        atomic=False,
        by="300:0.NA/TEST",
    )
    _, versions = await store.history("TEST/m")
    assert [(v.number, v.operation, v.by) for v in versions] == [
        (1, "create", "300:0.NA/TEST"),
        (2, "add", "300:0.NA/TEST"),
    ]
    assert (await store.history("TEST/n"))[0] == 1

    def fail(before):
        raise HandleAlreadyExists("TEST/m")

    with pytest.raises(ChangeFailed):
        await store.update_many(
            [("TEST/m", lambda before: None), ("TEST/o", fail)], atomic=True, by="x"
        )
    assert (await store.history("TEST/m"))[0] == 2  # nothing of a failed batch is kept


async def test_an_import_keeps_a_version_saying_so(store):
    a, b = rec("TEST/ia", (1, b"a")), rec("TEST/ib", (1, b"b"))
    result = await store.import_records([a, b])
    assert (result.created, result.versions) == (2, 2)
    _, (version,) = await store.history("TEST/ia")
    assert (version.number, version.operation, version.by, version.record) == (
        1,
        "import",
        None,
        a,
    )
    again = await store.import_records([a, b])  # stored so already: nothing new
    assert (again.unchanged, again.versions) == (2, 0)
    changed = rec("TEST/ia", (1, b"A"))
    await store.import_records([changed], replace=True)
    _, versions = await store.history("TEST/ia")
    assert [(v.number, v.operation, v.record) for v in versions] == [
        (1, "import", a),
        (2, "import", changed),
    ]


async def _made_with_history(store) -> None:
    """Handles with a few versions each, and a deleted one (a tombstone)."""
    await store.update("TEST/live", put(rec("TEST/live", (1, b"1"))), by="300:0.NA/TEST")
    await store.update("TEST/live", put(rec("TEST/live", (1, b"2"))), by="300:TEST/USER")
    await store.update("Test/Gone", put(rec("Test/Gone", (1, b"g"))), by="300:0.NA/TEST")
    await store.update("TEST/gone", lambda before: None, by="300:0.NA/TEST")
    await store.update("TEST/plain", put(rec("TEST/plain", (1, b"p"))))


async def _exported(store, batch=1000) -> list:
    return [e async for entries in store.iter_exported(batch=batch) for e in entries]


async def test_an_export_carries_histories_and_deleted_handles(store):
    await _made_with_history(store)
    entries = await _exported(store, batch=2)  # steps of two keys: the tombstone among them
    assert [(e.handle, e.record is None, len(e.history)) for e in entries] == [
        ("Test/Gone", True, 2),  # the name it had
        ("TEST/live", False, 2),
        ("TEST/plain", False, 1),
    ]
    assert entries[1].history == tuple((await store.history("TEST/live"))[1])
    assert [e.record for e in entries if e.record] == [
        r async for batch in store.iter_records() for r in batch
    ]


async def test_an_import_of_an_export_rebuilds_every_history(store, tmp_path):
    await _made_with_history(store)
    entries = await _exported(store)
    other = await SQLiteStore.open(tmp_path / "copy.db")
    try:
        result = await other.import_records(entries)
        assert (result.created, result.unchanged, result.versions) == (2, 1, 5)
        assert await _exported(other) == entries  # the same, version by version
        again = await other.import_records(entries)
        assert (again.created, again.unchanged, again.versions) == (0, 3, 0)
        # A history that goes on from the stored one adds the rest (an import resumed).
        await store.update("TEST/live", put(rec("TEST/live", (1, b"3"))), by="300:0.NA/TEST")
        (live,) = [e for e in await _exported(store) if e.handle == "TEST/live"]
        result = await other.import_records([live], replace=True)
        assert (result.replaced, result.versions) == (1, 1)
        assert (await other.history("TEST/live"))[1] == list(live.history)
    finally:
        await other.close()


async def test_an_import_never_rewrites_a_history(store):
    await _made_with_history(store)
    (live,) = [e for e in await _exported(store) if e.handle == "TEST/live"]
    await store.update("TEST/live", put(rec("TEST/live", (1, b"other"))), by="300:X/Y")
    with pytest.raises(ImportConflict):  # its history went another way here
        await store.import_records([live])
    result = await store.import_records([live], replace=True)
    assert (result.replaced, result.versions) == (1, 1)
    _, versions = await store.history("TEST/live")
    # The stored history stands; the import is a version of its own.
    assert [(v.number, v.by, v.operation) for v in versions] == [
        (1, "300:0.NA/TEST", "create"),
        (2, "300:TEST/USER", "modify"),
        (3, "300:X/Y", "modify"),
        (4, None, "import"),
    ]
    assert await store.get("TEST/live") == live.record == versions[-1].record


async def test_an_imported_tombstone_deletes_only_when_told(store):
    await _made_with_history(store)
    (gone,) = [e for e in await _exported(store) if e.record is None]
    await store.update("TEST/gone", put(rec("TEST/gone", (1, b"back"))), by="300:0.NA/TEST")
    with pytest.raises(ImportConflict):
        await store.import_records([gone])
    result = await store.import_records([gone], replace=True)
    assert result.replaced == 1 and await store.get("TEST/gone") is None
    assert await store.count_handles("TEST") == 2
    _, versions = await store.history("TEST/gone")
    assert [v.operation for v in versions] == ["create", "delete", "create", "delete"]


async def test_pruning_keeps_each_handles_last_versions(store):
    for n in range(5):
        await store.update("TEST/p", put(rec("TEST/p", (1, str(n).encode()))))
    await store.update("TEST/q", put(rec("TEST/q", (1, b"q"))))
    await store.update("TEST/q", lambda before: None)
    assert await store.prune_history() == 0  # no bound: nothing
    assert await store.prune_history(keep_versions=2) == 3
    _, versions = await store.history("TEST/p")
    assert [v.number for v in versions] == [4, 5]
    assert [v.number for v in (await store.history("TEST/q"))[1]] == [1, 2]
    # Before a time: all but each handle's last (the tombstone of a deleted one stays).
    assert await store.prune_history(before=time.time() + 1) == 2
    assert [v.number for v in (await store.history("TEST/p"))[1]] == [5]
    assert [v.operation for v in (await store.history("TEST/q"))[1]] == ["delete"]
    # The numbers go on.
    await store.update("TEST/p", put(rec("TEST/p", (1, b"x"))))
    assert [v.number for v in (await store.history("TEST/p"))[1]] == [5, 6]
    assert await store.prune_history(keep_versions=5, before=0) == 0


async def test_every_key_column_of_postgresql_compares_bytes(pg_dsn):
    """Keys are walked in one order across tables (listing, export with histories): each key
    column compares bytes, whatever the database's collation."""
    store = await PostgresStore.open(pg_dsn)
    try:
        rows = await store._pool.fetch(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND column_name IN ('key', 'prefix')"
            " AND data_type = 'text'"
        )
    finally:
        await store.close()
    assert {r["table_name"] for r in rows} >= {"handles", "handle_values", "handle_versions"}
    assert {(r["table_name"], r["collation_name"]) for r in rows} == {
        (r["table_name"], "C") for r in rows
    }


async def test_postgresql_reads_by_key_through_the_index_before_any_statistics(pg_dsn):
    """A batch's reads must probe the index even in a table autovacuum has not analysed
    yet (a store filling fast): with the planner's defaults they scanned the whole table
    every batch."""
    store = await PostgresStore.open(pg_dsn)
    keyed = [
        "SELECT key, handle FROM handles WHERE key = ANY($1::text[]) ORDER BY key",
        "SELECT key, idx FROM handle_values WHERE key = ANY($1::text[]) ORDER BY key, idx",
        "SELECT key, max(version) FROM handle_versions WHERE key = ANY($1::text[]) GROUP BY key",
    ]
    try:
        async with store._pool.acquire() as conn:
            for table in ("handles", "handle_values", "handle_versions"):
                await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        for start in range(0, 20_000, 2_000):
            await store.update_many(
                [
                    (f"TEST/{n}", put(rec(f"TEST/{n}", (1, b"u"))))
                    for n in range(start, start + 2_000)
                ],
                atomic=True,
            )
        keys = [f"TEST/{n}" for n in range(512)]

        async def plans(conn) -> list[str]:
            return [
                " ".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", keys)) for sql in keyed
            ]

        async with store._pool.acquire() as conn:
            assert all("Seq Scan" not in plan for plan in await plans(conn))
            async with conn.transaction():  # the planner's defaults: what this prevents
                await conn.execute("SET LOCAL enable_seqscan = on")
                assert any("Seq Scan" in plan for plan in await plans(conn))
    finally:
        await store.close()
