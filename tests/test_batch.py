"""POST /api/batch: many writes in one request, JSON (atomic or not) and streamed NDJSON, on
both backends, with the single requests' rules."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sqlite3
from typing import Any

import orjson
import pytest

from handle_server.app import create_app

from .helpers import ADMIN_AUTH, OTHER_AUTH, Api, make_config, pg_execute, url_value

BATCH = "/api/batch"


async def post(api: Api, body: Any, *, headers: Any = ADMIN_AUTH, **kwargs: Any):
    return await api._call(
        "POST",
        BATCH,
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
        **kwargs,
    )


def put(handle: str, url: str = "https://a.org", **extra: Any) -> dict:
    return {"op": "put", "handle": handle, "values": [url_value(url)], **extra}


def delete(handle: str, **extra: Any) -> dict:
    return {"op": "delete", "handle": handle, **extra}


def outcome(results: list[dict]) -> list[tuple]:
    return [(r["handle"], r["status"], r["responseCode"]) for r in results]


async def test_a_batch_mixes_creates_updates_deletes_and_failures(api):
    await api.put("TEST/old", [url_value("https://old.org")])
    await api.put("TEST/gone", [url_value("https://gone.org")])
    operations = [
        put("TEST/new"),
        put("TEST/old", "https://changed.org"),
        {"op": "put", "handle": "TEST/old", "values": [{"index": 2, "type": "X", "data": "x"}],
         "index": [2]},
        delete("TEST/gone"),
        delete("TEST/never"),
        put("TEST/new", overwrite=False),
        put("OTHER/x"),
        {"op": "rename", "handle": "TEST/x"},
        put("TEST/bad\x01name"),
        delete("TEST/old", index=[9]),
    ]  # fmt: skip
    status, body = await post(api, {"operations": operations})
    assert status == 200 and body["responseCode"] == 1
    assert outcome(body["results"]) == [
        ("TEST/new", 201, 1),
        ("TEST/old", 200, 1),
        ("TEST/old", 201, 1),
        ("TEST/gone", 200, 1),
        ("TEST/never", 404, 100),
        ("TEST/new", 409, 101),
        ("OTHER/x", 400, 301),
        ("TEST/x", 400, 4),
        ("TEST/bad\x01name", 400, 102),
        ("TEST/old", 400, 200),
    ]
    assert all("message" in r for r in body["results"][4:])
    assert [v["data"]["value"] for v in await api.values("TEST/old")] == [
        "https://changed.org",
        "x",
    ]
    assert await api.values("TEST/new") is not None
    assert await api.values("TEST/gone") is None


async def test_each_operation_sees_the_ones_before_it(api):
    operations = [
        put("TEST/seq"),
        {"op": "put", "handle": "test/SEQ", "values": [{"index": 2, "type": "X", "data": "x"}],
         "index": ["various"]},
        delete("TEST/seq", index=[1]),
        delete("TEST/seq"),
        put("TEST/seq", "https://again.org", overwrite=False),
    ]  # fmt: skip
    status, body = await post(api, {"operations": operations})
    assert status == 200
    assert [r["status"] for r in body["results"]] == [201, 201, 200, 200, 201]
    assert [v["data"]["value"] for v in await api.values("TEST/seq")] == ["https://again.org"]


async def test_a_minted_handle_is_named_in_its_result(api):
    status, body = await post(api, {"operations": [put("TEST/", mintNewSuffix=True)]})
    assert status == 200
    (result,) = body["results"]
    assert result["status"] == 201 and result["handle"].startswith("TEST/")
    assert len(result["handle"]) == len("TEST/") + 36
    assert await api.values(result["handle"]) is not None


async def test_a_batch_has_the_permissions_of_its_identity(api):
    await api.put("TEST/mine", [url_value("https://a.org")])
    status, body = await post(
        api, {"operations": [put("TEST/mine", "https://b.org"), put("TEST/theirs")]},
        headers=OTHER_AUTH,
    )  # fmt: skip
    assert status == 200
    assert outcome(body["results"]) == [("TEST/mine", 403, 400), ("TEST/theirs", 403, 400)]
    assert (await api.values("TEST/mine"))[0]["data"]["value"] == "https://a.org"
    assert await api.values("TEST/theirs") is None
    # The values from the configuration stay as they are, batch or not.
    status, body = await post(api, {"operations": [delete("0.NA/TEST")]})
    assert outcome(body["results"]) == [("0.NA/TEST", 403, 401)]


async def test_an_atomic_batch_applies_everything(api):
    await api.put("TEST/old", [url_value("https://old.org")])
    operations = [put("TEST/a"), put("TEST/b"), delete("TEST/old")]
    status, body = await post(api, {"operations": operations, "atomic": True})
    assert status == 200 and body["responseCode"] == 1
    assert [r["status"] for r in body["results"]] == [201, 201, 200]
    assert await api.values("TEST/a") is not None and await api.values("TEST/old") is None


@pytest.mark.parametrize(
    ("failing", "status", "code"),
    [
        (delete("TEST/never"), 404, 100),  # refused when decided
        (put("TEST/a", overwrite=False), 409, 101),  # refused: the first operation made it
        ({"op": "put", "handle": "TEST/c"}, 400, 4),  # refused when read
    ],
)
async def test_an_atomic_batch_that_fails_applies_nothing(api, failing, status, code):
    await api.put("TEST/old", [url_value("https://old.org")])
    operations = [put("TEST/a"), delete("TEST/old"), failing, put("TEST/b")]
    got, body = await post(api, {"operations": operations, "atomic": True})
    assert (got, body["responseCode"]) == (status, code)
    assert "Operation 2" in body["message"] and "nothing" in body["message"]
    results = body["results"]
    assert [r["status"] for r in results] == [424, 424, status, 424]
    assert results[2]["responseCode"] == code and results[2]["message"]
    assert await api.values("TEST/a") is None and await api.values("TEST/b") is None
    assert await api.values("TEST/old") is not None


async def test_writes_through_a_batch_reach_readers_at_once(api):
    await api.put("TEST/cached", [url_value("https://a.org")])
    status, body = await api.get("TEST/cached")  # now in the cache
    assert status == 200 and body["values"][0]["data"]["value"] == "https://a.org"
    await post(api, {"operations": [put("TEST/cached", "https://b.org")]})
    _, body = await api.get("TEST/cached")
    assert body["values"][0]["data"]["value"] == "https://b.org"
    await post(api, {"operations": [delete("TEST/cached")], "atomic": True})
    assert (await api.get("TEST/cached"))[0] == 404


@pytest.mark.parametrize(
    ("content_type", "raw", "status"),
    [
        ("application/json", b"{not json", 400),
        ("application/json", b"[]", 400),
        ("application/json", b'{"operations": {}}', 400),
        ("application/json", b'{"operations": [], "atomc": true}', 400),
        ("application/json", b'{"operations": [], "atomic": "yes"}', 400),
        ("text/plain", b'{"operations": []}', 400),
    ],
)
async def test_a_malformed_batch_is_refused_whole(api, content_type, raw, status):
    got, body = await api._call(
        "POST", BATCH, data=raw, headers={"Content-Type": content_type, **ADMIN_AUTH}
    )
    assert (got, body["responseCode"]) == (status, 4) and body["message"]


async def test_a_batch_needs_credentials_before_its_body(api):
    status, body = await post(api, {"operations": [put("TEST/x")]}, headers={})
    assert (status, body["responseCode"]) == (401, 402)
    assert await api.values("TEST/x") is None
    assert (await api._call("GET", BATCH))[0] == 405


async def test_a_batch_over_its_bounds_is_413_and_changes_nothing(
    aiohttp_client, tmp_path, storage_table
):
    config = make_config(
        tmp_path, storage=storage_table, batch={"max_operations": 3, "max_body_bytes": 2048}
    )
    api = Api(await aiohttp_client(create_app(config)))
    status, body = await post(api, {"operations": [put(f"TEST/{n}") for n in range(4)]})
    assert (status, body["responseCode"]) == (413, 4) and "x-ndjson" in body["message"]
    status, body = await post(api, {"operations": [put("TEST/big", "https://a.org/" + "x" * 3000)]})
    assert (status, body["responseCode"]) == (413, 4)
    status, body = await post(api, {"operations": [put(f"TEST/{n}") for n in range(3)]})
    assert status == 200
    _, listing = await api.list({"prefix": "TEST"})
    assert listing["totalCount"] == "3"


async def test_batches_racing_another_nodes_writes_create_each_handle_once(aiohttp_client, config):
    """Node a creates 200 handles in one batch while node b creates the same ones one by one
    (overwrite=false): each handle is made exactly once, and the answers say by whom."""
    a = Api(await aiohttp_client(create_app(config)))
    b = Api(await aiohttp_client(create_app(config)))
    names = [f"TEST/r{n}" for n in range(200)]
    batch = post(a, {"operations": [put(n, "https://a.org", overwrite=False) for n in names]})
    singles = [b.put(n, [url_value("https://b.org")], params={"overwrite": "false"}) for n in names]
    (status, body), *answers = await asyncio.gather(batch, *singles)
    assert status == 200
    for name, result, (single, _) in zip(names, body["results"], answers, strict=True):
        assert sorted([result["status"], single]) == [201, 409], name
        winner = "https://a.org" if result["status"] == 201 else "https://b.org"
        assert (await a.values(name))[0]["data"]["value"] == winner


# -- streamed (NDJSON) ---------------------------------------------------------------------


async def stream(api: Api, lines, *, headers: Any = ADMIN_AUTH) -> tuple[int, list[dict]]:
    """POST the lines (an async iterator of bytes) and read the results as they come."""
    async with api.client.post(
        BATCH, data=lines, headers={"Content-Type": "application/x-ndjson", **headers}
    ) as resp:
        results = []
        async for line in resp.content:
            results.append(orjson.loads(line))
        return resp.status, results


async def test_a_stream_answers_a_line_for_each_line(api):
    async def lines():
        yield orjson.dumps(put("TEST/s1")) + b"\n" + orjson.dumps(delete("TEST/none"))
        yield b"\n\n{broken\n" + orjson.dumps(put("TEST/s1", overwrite=False)) + b"\n"
        yield orjson.dumps(put("TEST/s2"))  # the last line needs no newline

    status, results = await stream(api, lines())
    assert status == 200
    assert outcome(results) == [
        ("TEST/s1", 201, 1),
        ("TEST/none", 404, 100),
        (None, 400, 4),
        ("TEST/s1", 409, 101),
        ("TEST/s2", 201, 1),
    ]


async def test_a_broken_stream_keeps_what_came_before(aiohttp_client, tmp_path, storage_table):
    config = make_config(
        tmp_path, storage=storage_table, server={"max_body_bytes": 1024, "body_timeout": 1}
    )
    api = Api(await aiohttp_client(create_app(config)))

    async def too_long():
        yield orjson.dumps(put("TEST/l1")) + b"\n"
        yield orjson.dumps(put("TEST/l2", "https://a.org/" + "x" * 2000)) + b"\n"
        yield orjson.dumps(put("TEST/l3")) + b"\n"

    status, results = await stream(api, too_long())
    assert status == 200
    assert outcome(results) == [("TEST/l1", 201, 1), (None, 413, 4)]
    assert await api.values("TEST/l1") is not None and await api.values("TEST/l3") is None

    async def stalled():
        yield orjson.dumps(put("TEST/t1")) + b"\n"
        await asyncio.sleep(2.5)
        yield orjson.dumps(put("TEST/t2")) + b"\n"

    status, results = await stream(api, stalled())
    assert status == 200  # (sent before the stream broke)
    assert outcome(results) == [("TEST/t1", 201, 1), (None, 408, 4)]
    assert await api.values("TEST/t2") is None


async def test_a_stream_of_200000_creates_in_bounded_memory(
    aiohttp_client, tmp_path, storage_table
):
    """The server holds at most [batch] in_flight operations at once: the process grows by
    far less than the 200,000 operations would take held together (about 600 MB)."""
    api = Api(await aiohttp_client(create_app(make_config(tmp_path, storage=storage_table))))
    total = 200_000

    async def lines():
        for start in range(0, total, 1000):
            yield b"".join(
                orjson.dumps(put(f"TEST/bulk-{n}", f"https://example.org/{n}")) + b"\n"
                for n in range(start, start + 1000)
            )

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    status, results = await stream(api, lines())
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert status == 200 and len(results) == total
    assert all(r["status"] == 201 for r in results)
    assert results[-1]["handle"] == f"TEST/bulk-{total - 1}"
    _, listing = await api.list({"prefix": "TEST", "page": 0, "pageSize": 0})
    assert listing["totalCount"] == str(total)
    assert grown < 150 * 1024, f"grew {grown // 1024} MiB"


async def test_another_node_forgets_what_a_batch_changed(aiohttp_client, config):
    """Node b has the records cached; node a changes and deletes them in one batch; b answers
    with the new records at once (SQLite: the change log; PostgreSQL: notifications)."""
    a = Api(await aiohttp_client(create_app(config)))
    b = Api(await aiohttp_client(create_app(config)))
    await post(a, {"operations": [put(f"TEST/n{n}", "https://old.org") for n in range(3)]})
    for n in range(3):
        assert (await b.get(f"TEST/n{n}"))[1]["values"][0]["data"]["value"] == "https://old.org"
    operations = [
        put("TEST/n0", "https://new.org"),
        delete("TEST/n1"),
        put("TEST/n2", "https://x.org"),
    ]
    assert (await post(a, {"operations": operations, "atomic": True}))[0] == 200
    for _ in range(50):  # PostgreSQL's notifications arrive on their own connection
        answers = [await b.get(f"TEST/n{n}") for n in range(3)]
        if answers[1][0] == 404:
            break
        await asyncio.sleep(0.05)
    assert answers[0][1]["values"][0]["data"]["value"] == "https://new.org"
    assert answers[1][0] == 404
    assert answers[2][1]["values"][0]["data"]["value"] == "https://x.org"


def _fail_writes_of(storage_table: dict, key: str) -> None:
    """Make the database itself refuse to store the handle ``key`` (a trigger): a store that
    fails in the middle of a batch, as a full disk or a lost server does."""
    if storage_table.get("backend") == "postgresql":
        pg_execute(
            storage_table["dsn"],
            "CREATE FUNCTION fail_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.key = '{key}' THEN RAISE EXCEPTION 'the disk is on fire'; END IF;"
            " RETURN NEW; END $$;"
            " CREATE TRIGGER fail_write BEFORE INSERT ON handles FOR EACH ROW"
            " EXECUTE FUNCTION fail_write();",
        )
        return
    with contextlib.closing(sqlite3.connect(storage_table["path"])) as db:
        db.execute(
            f"CREATE TRIGGER fail_write BEFORE INSERT ON handles WHEN NEW.key = '{key}'"
            " BEGIN SELECT RAISE(ABORT, 'the disk is on fire'); END"
        )
        db.commit()


async def test_a_store_failing_mid_batch_fails_its_group_and_keeps_the_rest(
    aiohttp_client, tmp_path, storage_table
):
    """Groups of two: the one the store fails answers 503 for each of its operations and
    stores none of them; the groups before and after it stand. Atomic: nothing at all."""
    config = make_config(tmp_path, storage=storage_table, batch={"in_flight": 2})
    api = Api(await aiohttp_client(create_app(config)))
    assert (await api.put("TEST/first", [url_value("https://first.org")]))[0] == 201  # schema made
    _fail_writes_of(storage_table, "TEST/BOOM")
    names = ["TEST/a", "TEST/b", "TEST/c", "TEST/boom", "TEST/d", "TEST/e"]
    expected = [201, 201, 503, 503, 201, 201]
    status, body = await post(api, {"operations": [put(n) for n in names]})
    assert status == 200
    assert [(r["status"], r["responseCode"]) for r in body["results"]] == [
        (s, 1 if s == 201 else 3)
        for s in expected  # 3: the server is too busy (the store)
    ]
    # What the store said is logged, not told (as for a single request).
    assert "unavailable" in body["results"][2]["message"] and "fire" not in str(body)
    for name, s in zip(names, expected, strict=True):
        assert (await api.get(name))[0] == (200 if s == 201 else 404), name

    # Streamed: the same, line by line.
    lines = b"".join(orjson.dumps(put(n.replace("TEST/", "TEST/s"))) + b"\n" for n in names[:3])
    lines += orjson.dumps(put("TEST/boom")) + b"\n"
    lines += b"".join(orjson.dumps(put(n.replace("TEST/", "TEST/s"))) + b"\n" for n in names[4:])
    async with api.client.post(
        BATCH, data=lines, headers={"Content-Type": "application/x-ndjson", **ADMIN_AUTH}
    ) as resp:
        streamed = [orjson.loads(line) for line in (await resp.read()).splitlines()]
    assert [r["status"] for r in streamed] == expected
    assert (await api.get("TEST/sc"))[0] == 404 and (await api.get("TEST/se"))[0] == 200

    # Atomic: the failure is the store's (503), and nothing is applied.
    operations = [put("TEST/x"), delete("TEST/a"), put("TEST/boom")]
    status, body = await post(api, {"operations": operations, "atomic": True})
    assert (status, body["responseCode"]) == (503, 3) and "fire" not in str(body)
    assert (await api.get("TEST/x"))[0] == 404 and (await api.get("TEST/a"))[0] == 200
    _, history = await api._call("GET", "/api/history/TEST/a", headers=ADMIN_AUTH)
    assert history["totalCount"] == 1  # no version of what failed
