"""The concurrency rules of the API, over real HTTP on one SQLite file."""

from __future__ import annotations

import asyncio

from handle_server.app import create_app

from .helpers import Api, url_value


async def test_concurrent_exclusive_creates_have_exactly_one_winner(api):
    results = await asyncio.gather(
        *(
            api.put("TEST/race", [url_value(f"https://{n}.org")], params={"overwrite": "false"})
            for n in range(50)
        )
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 49
    assert all(body["responseCode"] == 101 for status, body in results if status == 409)
    _, listing = await api.list({"prefix": "TEST"})
    assert listing["totalCount"] == "1"


async def test_concurrent_mints_never_collide(api):
    results = await asyncio.gather(
        *(
            api.put("TEST/", [url_value("https://a.org")], params={"mintNewSuffix": "true"})
            for _ in range(1000)
        )
    )
    assert {status for status, _ in results} == {201}
    names = {body["handle"] for _, body in results}
    assert len(names) == 1000
    _, listing = await api.list({"prefix": "TEST"})
    assert listing["totalCount"] == "1000" and set(listing["handles"]) == names


async def test_concurrent_value_writes_lose_nothing(api):
    await api.put("TEST/many", [url_value("https://a.org")])
    results = await asyncio.gather(
        *(
            api.put(
                "TEST/many", [{"index": i, "type": "X", "data": str(i)}], params={"index": str(i)}
            )
            for i in range(2, 52)
        )
    )
    assert {status for status, _ in results} == {201}
    assert [v["index"] for v in await api.values("TEST/many")] == list(range(1, 52))


async def test_concurrent_deletes_and_writes_leave_a_whole_record(api):
    await api.put("TEST/flip", [url_value("https://a.org"), {"index": 2, "type": "X", "data": "x"}])
    ops = []
    for n in range(20):
        ops.append(api.delete("TEST/flip"))
        ops.append(
            api.put(
                "TEST/flip",
                [url_value(f"https://{n}.org"), {"index": 2, "type": "X", "data": str(n)}],
            )
        )
    await asyncio.gather(*ops)
    values = await api.values("TEST/flip")
    if values is not None:  # whichever came last, the record is one PUT's, whole
        assert [v["index"] for v in values] == [1, 2]
        n = values[1]["data"]["value"]
        assert values[0]["data"]["value"] == f"https://{n}.org"


async def test_two_servers_on_one_store_lose_no_write(aiohttp_client, config):
    """Two apps on one store (one SQLite file, or one PostgreSQL database), as two processes or
    nodes: each decides permissions on the record it read, and a write whose record changed
    meanwhile starts over instead of clobbering."""
    a = Api(await aiohttp_client(create_app(config)))
    b = Api(await aiohttp_client(create_app(config)))
    await a.put("TEST/shared", [url_value("https://a.org")])
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).put(
                "TEST/shared", [{"index": i, "type": "X", "data": str(i)}], params={"index": str(i)}
            )
            for i in range(2, 42)
        )
    )
    assert {status for status, _ in results} == {201}
    assert [v["index"] for v in await a.values("TEST/shared")] == list(range(1, 42))


async def test_exclusive_creates_and_mints_across_two_servers(aiohttp_client, config):
    """overwrite=false on two nodes at once: exactly one winner; mints never collide."""
    a = Api(await aiohttp_client(create_app(config)))
    b = Api(await aiohttp_client(create_app(config)))
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).put(
                "TEST/contested", [url_value(f"https://{i}.org")], params={"overwrite": "false"}
            )
            for i in range(20)
        )
    )
    assert sorted(status for status, _ in results) == [201] + [409] * 19
    minted = await asyncio.gather(
        *(
            (a if i % 2 else b).put(
                "TEST/", [url_value("https://m.org")], params={"mintNewSuffix": "true"}
            )
            for i in range(40)
        )
    )
    assert {status for status, _ in minted} == {201}
    assert len({body["handle"] for _, body in minted}) == 40
    assert (await a.list({"prefix": "TEST"}))[1]["totalCount"] == "41"
