"""``handle-server migrate``, ``export`` and ``import``, run as the command runs them (its
``main``), on real stores: SQLite files and fresh PostgreSQL schemas."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handle_server.cli.main import main
from storage import (
    Exported,
    Handle,
    HandleValue,
    TTLType,
    ValueReference,
    Version,
    open_store,
    schema_version,
)
from storage.dump import (
    DumpError,
    entry_from_line,
    entry_to_line,
    record_from_line,
    record_to_line,
)
from storage.packed import pack_record, unpack_record
from storage.rows import migrations

from .helpers import (
    pg_execute,
    sqlite_table,
    write_config,
)


def run(coro):
    return asyncio.run(coro)


async def _with(table: dict[str, str], work, *, migrate: bool = False):
    store = await open_store(
        table.get("backend", "sqlite"),
        path=table.get("path", ""),
        dsn=table.get("dsn", ""),
        migrate=migrate,
    )
    try:
        return await work(store)
    finally:
        await store.close()


def sample_records(count: int) -> list[Handle]:
    """Records with every kind of field a store keeps."""
    records = []
    for n in range(count):
        values = [
            HandleValue(1, "URL", f"https://example.org/{n}?ü".encode(), timestamp=1700000000 + n),
            HandleValue(
                2,
                "BIN",
                bytes([n % 256, 0, 255, 10]),
                ttl=1800000000,
                ttl_type=TTLType.ABSOLUTE,
                timestamp=5,
                admin_read=False,
                public_read=False,
                public_write=True,
            ),
        ]
        if n % 3 == 0:
            values.append(
                HandleValue(
                    100,
                    "HS_VLIST",
                    b"\x00\x00\x00\x01",
                    references=(ValueReference("0.NA/TEST", 300), ValueReference("TEST/ü", 0)),
                )
            )
        name = f"TEST/{n:05d}" if n % 5 else f"Test/Mixed-{n}/é"
        records.append(Handle(name, tuple(values)))
    records.append(Handle("TEST/empty"))
    return records


# -- the line format ---------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_values = st.builds(
    HandleValue,
    index=st.integers(-(2**31), 2**31 - 1),
    type=_text,
    data=st.binary(max_size=40) | _text.map(str.encode),
    ttl=st.integers(-(2**63), 2**63 - 1),
    ttl_type=st.sampled_from(TTLType),
    timestamp=st.integers(0, 2**63 - 1),
    admin_read=st.booleans(),
    admin_write=st.booleans(),
    public_read=st.booleans(),
    public_write=st.booleans(),
    references=st.lists(
        st.builds(ValueReference, _text, st.integers(-(2**31), 2**31 - 1)), max_size=3
    ).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.tuples(_text.filter(lambda t: t and "/" not in t), _text.filter(bool)).map(
        lambda p: f"{p[0]}/{p[1]}"  # a prefix never holds a "/"; a suffix may
    ),
    values=st.lists(_values, max_size=5, unique_by=lambda v: v.index),
)
def test_a_record_survives_its_line_exactly(name, values):
    record = Handle(name, tuple(values))
    line = record_to_line(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert record_from_line(line) == record
    assert record_to_line(record_from_line(line)) == line
    # The history's packed form gives it back too, as it reads versions kept as lines.
    packed = pack_record(record)
    assert unpack_record(packed) == record and unpack_record(line) == record
    assert len(packed) < len(line)
    for cut in (1, len(packed) // 2, len(packed) - 1):
        with pytest.raises((ValueError, struct.error)):
            unpack_record(packed[:cut])


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"{", "not JSON"),
        (b"[]", "a record must be"),
        (b'{"handle": "TEST", "values": []}', "prefix/suffix"),
        (b'{"handle": "TEST/x", "values": [1]}', "must be an object"),
        (b'{"handle": "TEST/x", "values": [{"index": 1}]}', "missing"),
        (
            b'{"handle":"TEST/x","values":[{"index":1,"type":"URL","data":{"format":"hex",'
            b'"value":"00"},"ttlType":0,"ttl":1,"timestamp":1,"permissions":"1110",'
            b'"references":[]}]}',
            "string or base64",
        ),
        (
            b'{"handle":"TEST/x","values":[{"index":1,"type":"URL","data":{"format":"base64",'
            b'"value":"!!"},"ttlType":0,"ttl":1,"timestamp":1,"permissions":"11x0",'
            b'"references":[]}]}',
            "permissions",
        ),
        (
            b'{"handle":"TEST/x","values":[{"index":1,"type":"URL","data":{"format":"base64",'
            b'"value":"\xc3\xa9"},"ttlType":0,"ttl":1,"timestamp":1,"permissions":"1110",'
            b'"references":[]}]}',
            "not base64",
        ),
        (
            b'{"handle":"TEST/x","values":[{"index":4294967296,"type":"URL","data":{"format":'
            b'"string","value":""},"ttlType":0,"ttl":1,"timestamp":1,"permissions":"1110",'
            b'"references":[]}]}',
            "index",
        ),
    ],
)
def test_a_bad_line_is_refused_saying_why(line, says):
    with pytest.raises(DumpError, match=says):
        record_from_line(line)


_odd = st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=5)
_not_ints = [None, True, 1.0, "1"]
_int32_edges = st.sampled_from([-(2**31) - 1, -(2**31), 0, 2**31 - 1, 2**31, *_not_ints])
_int64_edges = st.sampled_from([-(2**63) - 1, -(2**63), 0, 2**63 - 1, 2**63, *_not_ints])
#: What a field of a value is replaced with: its edges and what is not of its type.
_replacements = {
    "index": _int32_edges,
    "type": _text | _odd,
    "data": st.fixed_dictionaries(
        {"format": st.sampled_from(["string", "base64", "hex"]), "value": _text | _odd}
    )
    | st.dictionaries(st.sampled_from(["format", "value", "x"]), _text)
    | _odd,
    "ttlType": st.sampled_from([-1, 0, 1, 2, *_not_ints]),
    "ttl": _int64_edges,
    "timestamp": _int64_edges,
    "permissions": st.sampled_from(["1110", "0000", "1111", "11x0", "111", "11100"]) | _odd,
    "references": st.just([]) | st.lists(st.just({"index": 1, "handle": "T/r"}), max_size=1),
    "extra": st.just(1),  # a field no value has
}
_plain_values = st.builds(
    lambda value, text: replace(value, data=text.encode(), references=()), _values, _text
)


@settings(max_examples=1000, deadline=None)
@given(
    value=_plain_values,
    field=st.sampled_from(list(_replacements)),
    drop=st.integers(0, 3).map(lambda n: n == 0),
    data=st.data(),
)
def test_the_quick_read_of_a_value_reads_it_as_the_checked_one_does(value, field, drop, data):
    """``_plain_value`` (an import's values, read without building messages) gives what
    ``_value`` gives, or leaves it to ``_value``: it never takes what ``_value`` refuses.
    A value as an export writes it, with one of its fields replaced (or dropped)."""
    from storage.dump import _plain_value, _record_object, _value

    raw = _record_object(Handle("T/x", (value,)))["values"][0]
    if drop:
        raw.pop(field, None)
    else:
        raw[field] = data.draw(_replacements[field])
    quick = _plain_value(raw)
    try:
        checked = _value(raw, "v")
    except DumpError:
        assert quick is None
    else:
        assert quick is None or quick == checked


_versions = st.lists(
    st.builds(
        lambda gap, at, by, operation, values: (gap, at, by, operation, values),
        st.integers(1, 3),
        st.floats(0, 2e9, allow_nan=False),
        st.none() | st.just("300:0.NA/TEST"),
        st.sampled_from(["create", "modify", "delete", "import"]),
        st.none() | st.lists(_values, max_size=2, unique_by=lambda v: v.index),
    ),
    max_size=4,
)


@settings(max_examples=100, deadline=None)
@given(values=st.none() | st.lists(_values, max_size=3, unique_by=lambda v: v.index),
       steps=_versions)  # fmt: skip
def test_a_handle_and_its_history_survive_their_line_exactly(values, steps):
    number, history = 0, []
    for gap, at, by, operation, kept in steps:
        number += gap
        record = None if kept is None else Handle("Test/h", tuple(kept))
        history.append(Version(number, at, by, operation, record))
    if values is None and not history:
        return  # a deleted handle's line needs its history
    entry = Exported("TEST/h", None if values is None else Handle("TEST/h", tuple(values)),
                     tuple(history))  # fmt: skip
    line = entry_to_line(entry)
    assert entry_from_line(line) == entry and entry_to_line(entry_from_line(line)) == line
    # A line of record_to_line's is an entry with no history carried.
    if entry.record is not None:
        assert entry_from_line(record_to_line(entry.record)) == Exported("TEST/h", entry.record)


_VERSION = '{"version":1,"at":1.5,"by":null,"operation":"create","record":null}'


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"handle":"TEST/x","values":null}', "needs its history"),
        ('{"handle":"TEST/x","values":null,"history":[]}', "needs its history"),
        ('{"handle":"TEST/x","values":[],"history":{}}', "must be a list"),
        ('{"handle":"TEST/x","values":[],"history":[{"version":1}]}', "history\\[0\\] must be"),
        (f'{{"handle":"TEST/x","values":[],"history":[{_VERSION},{_VERSION}]}}', "increasing"),
        ('{"handle":"TEST/x","values":[],"history":[' + _VERSION.replace("1.5", '"x"') + "]}",
         "epoch seconds"),
        ('{"handle":"TEST/x","values":[],"history":[' + _VERSION.replace("create", "x") + "]}",
         "operation must be"),
        ('{"handle":"TEST/x","values":[],"history":['
         + _VERSION.replace("null}", '{"handle":"TEST/y","values":[]}}') + "]}",
         "a record of TEST/y"),
        ('{"handle":"TEST/x","values":[],"extra":1}', "a line must be"),
    ],
)  # fmt: skip
def test_a_bad_history_is_refused_saying_why(line, says):
    with pytest.raises(DumpError, match=says):
        entry_from_line(line)


# -- export and import -------------------------------------------------------------------------


@pytest.fixture
def pg_table(pg_dsn: str) -> dict[str, str]:
    return {"backend": "postgresql", "dsn": pg_dsn}


def test_sqlite_to_postgresql_and_back_is_byte_for_byte(tmp_path, pg_table, capsys):
    source = sqlite_table(tmp_path, "source")
    records = sample_records(2500)

    async def fill(store):
        for start in range(0, len(records), 700):
            await store.import_records(records[start : start + 700])

    run(_with(source, fill))
    source_config = write_config(tmp_path, "source", source)
    pg_config = write_config(tmp_path, "pg", pg_table)
    back_config = write_config(tmp_path, "back", sqlite_table(tmp_path, "back"))

    first = tmp_path / "first.jsonl"
    assert main(["export", "--config", str(source_config), "-o", str(first)]) == 0
    assert first.stat().st_mode & 0o777 == 0o600  # it holds hashed secrets
    assert not (tmp_path / "first.jsonl.partial").exists()
    lines = first.read_bytes().splitlines(keepends=True)
    assert len(lines) == len(records)
    entries = [entry_from_line(line) for line in lines]
    assert [e.record for e in entries] == sorted(records, key=lambda r: r.key)
    # The histories travel too: each record's one version, its import into the source.
    assert all(
        [(v.number, v.operation, v.by, v.record) for v in e.history]
        == [(1, "import", None, e.record)]
        for e in entries
    )

    assert main(["import", "--config", str(pg_config), str(first), "--batch", "300"]) == 0
    second = tmp_path / "second.jsonl"
    assert main(["export", "--config", str(pg_config), "-o", str(second)]) == 0
    assert second.read_bytes() == first.read_bytes()

    assert main(["import", "--config", str(back_config), str(second)]) == 0
    capsys.readouterr()
    assert main(["export", "--config", str(back_config)]) == 0  # to standard output
    assert capsys.readouterr().out.encode() == first.read_bytes()

    async def counts(store):
        return await store.count_handles("TEST")

    assert run(_with(pg_table, counts)) == len(records)


def test_an_import_cut_short_resumes_by_running_it_again(tmp_path, storage_table, capsys):
    config = write_config(tmp_path, "target", storage_table)
    records = sample_records(50)
    lines = [record_to_line(r) for r in records]
    broken = [*lines[:23], b'{"handle": "TEST/broken"}\n', *lines[23:]]
    dump = tmp_path / "dump.jsonl"
    dump.write_bytes(b"".join(broken))

    assert main(["import", "--config", str(config), str(dump), "--batch", "10"]) == 1
    err = capsys.readouterr().err
    assert f"{dump}:24: a line must be" in err
    assert "lines 1-23 are stored (23 created, 0 replaced, 0 already there, 23 versions" in err

    async def stored(store):
        return [r async for batch in store.iter_records() for r in batch]

    assert len(run(_with(storage_table, stored))) == 23  # 2 whole batches and 3 lines

    dump.write_bytes(b"".join(lines))  # the line fixed (here: dropped)
    assert main(["import", "--config", str(config), str(dump), "--batch", "10"]) == 0
    assert run(_with(storage_table, stored)) == sorted(records, key=lambda r: r.key)


def test_an_import_never_overwrites_unless_told(tmp_path, storage_table, capsys):
    config = write_config(tmp_path, "target", storage_table)
    old = Handle("TEST/00001", (HandleValue(1, "URL", b"https://kept.org"),))
    run(_with(storage_table, lambda s: s.import_records([old])))
    dump = tmp_path / "dump.jsonl"
    dump.write_bytes(b"".join(record_to_line(r) for r in sample_records(4)))

    assert main(["import", "--config", str(config), str(dump)]) == 1
    assert "TEST/00001 is stored already, with other values" in capsys.readouterr().err
    assert run(_with(storage_table, lambda s: s.get("TEST/00001"))) == old
    assert run(_with(storage_table, lambda s: s.get("TEST/00002"))) is None  # same batch

    assert main(["import", "--config", str(config), str(dump), "--replace"]) == 0
    assert run(_with(storage_table, lambda s: s.get("TEST/00001"))) == sample_records(4)[1]


def test_histories_and_deleted_handles_travel_byte_for_byte(tmp_path, pg_table):
    source = sqlite_table(tmp_path, "source")

    async def fill(store):
        await store.import_records(sample_records(30))
        for n in range(3):
            changed = Handle("TEST/00001", (HandleValue(1, "URL", f"https://{n}.org".encode()),))
            await store.update("TEST/00001", lambda before, r=changed: r, by="300:0.NA/TEST")
        await store.update("TEST/00002", lambda before: None, by="300:TEST/USER")
        await store.update("TEST/00003", lambda before: None)
        await store.update("TEST/00003", lambda before: Handle("TEST/00003"))  # made again

    run(_with(source, fill))
    first = tmp_path / "first.jsonl"
    assert main(["export", "--config", str(write_config(tmp_path, "s", source)), "-o",
                 str(first)]) == 0  # fmt: skip
    entries = [entry_from_line(line) for line in first.read_bytes().splitlines()]
    assert len(entries) == 31  # the deleted one too
    by_name = {e.handle: e for e in entries}
    assert by_name["TEST/00002"].record is None
    assert [v.operation for v in by_name["TEST/00002"].history] == ["import", "delete"]
    assert [v.operation for v in by_name["TEST/00003"].history] == ["import", "delete", "create"]
    assert [v.by for v in by_name["TEST/00001"].history][1:] == ["300:0.NA/TEST"] * 3

    pg_config = write_config(tmp_path, "pg", pg_table)
    assert main(["import", "--config", str(pg_config), str(first), "--batch", "7"]) == 0
    second = tmp_path / "second.jsonl"
    assert main(["export", "--config", str(pg_config), "-o", str(second)]) == 0
    assert second.read_bytes() == first.read_bytes()
    assert main(["import", "--config", str(pg_config), str(first)]) == 0  # again: nothing new
    assert run(_with(pg_table, lambda s: s.history("TEST/00001")))[0] == 4

    plain = tmp_path / "plain.jsonl"
    assert main(["export", "--config", str(pg_config), "--no-history", "-o", str(plain)]) == 0
    lines = plain.read_bytes().splitlines()
    assert len(lines) == 30 and all(b'"history"' not in line for line in lines)


def test_history_prune_drops_what_is_no_longer_kept(tmp_path, storage_table, capsys):
    config = write_config(tmp_path, "c", storage_table)

    async def fill(store):
        for n in range(4):
            record = Handle("TEST/p", (HandleValue(1, "URL", f"https://{n}.org".encode()),))
            await store.update("TEST/p", lambda before, r=record: r)

    run(_with(storage_table, fill))
    assert main(["history", "prune", "--config", str(config)]) == 2
    assert "nothing bounds the history" in capsys.readouterr().err
    assert main(["history", "prune", "--config", str(config), "--keep-versions", "3"]) == 0
    assert "pruned 1 versions" in capsys.readouterr().out
    with config.open("a") as f:
        f.write("[history]\nkeep_versions = 2\n")
    assert main(["history", "prune", "--config", str(config)]) == 0
    assert "pruned 1 versions" in capsys.readouterr().out
    assert main(["history", "prune", "--config", str(config), "--keep-days", "1"]) == 0
    assert "pruned 0 versions" in capsys.readouterr().out  # (and still the last two)

    async def numbers(store):
        return [v.number for v in (await store.history("TEST/p"))[1]]

    assert run(_with(storage_table, numbers)) == [3, 4]


def test_import_of_a_missing_file_or_without_config(tmp_path, capsys):
    config = write_config(tmp_path, "c", sqlite_table(tmp_path, "c"))
    assert main(["import", "--config", str(config), str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["export"]) == 2
    assert "--config is needed" in capsys.readouterr().err


# -- migrate -----------------------------------------------------------------------------------


_OLD_ROWS = [
    "INSERT INTO handles VALUES ('TEST/OLD', 'TEST/old')",
    # The data: b"https://old.org" (68747470...), and bytes that are not UTF-8.
    "INSERT INTO handle_values VALUES"
    " ('TEST/OLD', 1, 'URL', '68747470733a2f2f6f6c642e6f7267', 0, 86400, 1, 14, ''),"
    " ('TEST/OLD', 2, 'URL', 'ff6f6c642e6f7267', 0, 86400, 1, 14, '')",
    "INSERT INTO prefix_counts VALUES ('TEST', 1)",
]
_OLD_VALUES = (
    HandleValue(1, "URL", b"https://old.org", timestamp=1),
    HandleValue(2, "URL", b"\xffold.org", timestamp=1),
)


def _at_version_1(table: dict[str, str]) -> None:
    """A database as handle-server with schema version 1 left it, holding one handle."""
    backend = table.get("backend", "sqlite")
    (number, script), *_ = migrations(backend)
    assert number == 1
    if backend == "sqlite":
        with sqlite3.connect(table["path"]) as db:
            db.executescript(script)
            for statement in _OLD_ROWS:
                db.execute(re.sub(r"'([0-9a-f]{8,})'", r"x'\1'", statement))
            db.execute("PRAGMA user_version = 1")
    else:
        statements = [
            script,
            "CREATE TABLE handle_server_schema (version INTEGER NOT NULL)",
            "INSERT INTO handle_server_schema VALUES (1)",
            *(re.sub(r"'([0-9a-f]{8,})'", r"'\\x\1'::bytea", s) for s in _OLD_ROWS),
        ]
        pg_execute(table["dsn"], ";\n".join(statements))


def test_serve_refuses_an_older_schema_until_migrate_brings_it_up(tmp_path, capsys, storage_table):
    _at_version_1(storage_table)
    config = write_config(tmp_path, "old", storage_table)
    latest = schema_version(storage_table.get("backend", "sqlite"))

    assert main(["serve", "--config", str(config), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"schema version 1, this server needs {latest}" in err
    assert "handle-server migrate" in err
    assert main(["migrate", "--config", str(config), "--check"]) == 1
    capsys.readouterr()

    assert main(["migrate", "--config", str(config)]) == 0
    assert f"migrated schema version 1 to {latest}" in capsys.readouterr().out
    assert main(["migrate", "--config", str(config), "--check"]) == 0
    assert f"schema version {latest}, up to date" in capsys.readouterr().out
    record = run(_with(storage_table, lambda s: s.get("TEST/old")))
    assert record == Handle("TEST/old", _OLD_VALUES)
    # The tables of later versions are there and work; what was stored is searchable.
    found = run(_with(storage_table, lambda s: s.search([("URL", "https://old.org")])))
    assert found == ["TEST/old"]
    # (The migration skipped the value that is not text: on PostgreSQL, converting it to text
    # fails, and the migration ran.)
    secret = run(_with(storage_table, lambda s: s.shared_secret("sessions", b"k" * 32)))
    assert secret == b"k" * 32


def test_migrate_creates_an_empty_database_and_refuses_a_newer_one(tmp_path, storage_table, capsys):
    config = write_config(tmp_path, "fresh", storage_table)
    assert main(["migrate", "--config", str(config)]) == 0
    assert "created schema version" in capsys.readouterr().out
    assert main(["migrate", "--config", str(config)]) == 0
    assert "up to date" in capsys.readouterr().out

    if "path" in storage_table:
        with sqlite3.connect(storage_table["path"]) as db:
            db.execute("PRAGMA user_version = 99")
    else:

        async def bump(store):
            async with store._pool.acquire() as conn:
                await conn.execute("UPDATE handle_server_schema SET version = 99")

        run(_with(storage_table, bump))
    assert main(["migrate", "--config", str(config)]) == 2
    assert "schema version 99" in capsys.readouterr().err
    assert main(["serve", "--config", str(config), "--port", "0"]) == 2
    assert "upgrade handle-server" in capsys.readouterr().err
