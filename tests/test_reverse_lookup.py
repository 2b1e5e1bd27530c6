"""Reverse lookup at /hrls/handles/ (the reference's servlet path, which pyhandle's
search_handle calls): any type, * patterns, prefix scope, paging, privacy; and pyhandle's own
search_handle against it."""

from __future__ import annotations

import asyncio

import pytest
from pyhandle.client.resthandleclient import RESTHandleClient
from pyhandle.handleexceptions import ReverseLookupException

from handle_server import keys
from handle_server.app import create_app
from storage import Handle, HandleValue

from .helpers import ADMIN, ADMIN_AUTH, OTHER_AUTH, SECRET, Api, basic, make_config, url_value


def value(index: int, type_: str, data: str, **extra) -> dict:
    return {"index": index, "type": type_, "data": data, **extra}


@pytest.fixture
async def handles(api: Api) -> Api:
    records = {
        "TEST/r1": [url_value("https://example.org/1"), value(2, "CHECKSUM", "md5:111")],
        "TEST/r2": [url_value("https://example.org/2", permissions="1100")],
        "TEST/r4": [url_value("https://other.net/4"), value(2, "EUDAT/CHECKSUM", "sha:444")],
        "10.5555/r3": [url_value("https://example.org/3")],
    }
    for name, values in records.items():
        headers = OTHER_AUTH if name.startswith("10.5555") else ADMIN_AUTH
        assert (await api.put(name, values, headers=headers))[0] == 201
    return api


async def search(api: Api, query: str, headers=None):
    return await api._call("GET", f"/hrls/handles/?{query}", headers=headers)


async def test_search_by_any_type_and_pattern(handles: Api):
    assert await search(handles, "URL=*example.org*") == (200, ["10.5555/r3", "TEST/r1"])
    assert await search(handles, "URL=*example.org*&CHECKSUM=md5:111") == (200, ["TEST/r1"])
    assert await search(handles, "EUDAT/CHECKSUM=sha:*") == (200, ["TEST/r4"])
    assert await search(handles, "url=https://other.net/4") == (200, ["TEST/r4"])
    assert await search(handles, "URL=*nowhere.example*") == (200, [])
    # Without the trailing slash too.
    assert await handles._call("GET", "/hrls/handles?URL=*other.net*") == (200, ["TEST/r4"])


async def test_search_scope_and_pages(handles: Api):
    assert await search(handles, "URL=*example.org*&prefix=TEST") == (200, ["TEST/r1"])
    assert await search(handles, "URL=*example.org*&prefix=0.NA/10.5555") == (200, ["10.5555/r3"])
    assert await search(handles, "URL=*example.org*&limit=1&page=1") == (200, ["TEST/r1"])
    assert await search(handles, "URL=*example.org*&limit=1&page=2") == (200, [])


async def test_private_values_only_for_the_prefix_admins(handles: Api):
    everything = ["10.5555/r3", "TEST/r1", "TEST/r2"]
    assert await search(handles, "URL=*example.org*", ADMIN_AUTH) == (200, everything)
    # The other prefix's admin, and anyone else, see public values only.
    assert (await search(handles, "URL=*example.org*", OTHER_AUTH))[1] == everything[:2]
    assert (await search(handles, "URL=https://example.org/2"))[1] == []
    # Secret keys are never searchable, not even by their admins.
    assert (await search(handles, "HS_SECKEY=*secret*", ADMIN_AUTH))[1] == []


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("", 400, "TYPE=pattern"),
        ("prefix=TEST", 400, "TYPE=pattern"),
        ("URL=*", 400, "3 characters"),
        ("URL=*ab*", 400, "3 characters"),
        ("URL=*example*&limit=0", 400, "limit"),
        ("URL=*example*&limit=10001", 400, "limit"),
        ("URL=*example*&page=-1", 400, "page"),
        ("URL=*example*&limit=x", 400, "limit"),
        ("URL=*example*&prefix=NOPE", 400, "not homed"),
    ],
)
async def test_bad_searches_get_a_clear_400(handles: Api, query, status, words):
    got, body = await search(handles, query)
    assert got == status and words in body["message"] and body["responseCode"] in (4, 301)


async def test_wrong_credentials_are_401(handles: Api):
    got, body = await search(handles, "URL=*example*", basic(ADMIN, "wrong"))
    assert (got, body["responseCode"]) == (401, 403)


async def test_pyhandle_search_handle(handles: Api):
    base = str(handles.client.make_url("")).rstrip("/")
    client = await asyncio.to_thread(
        RESTHandleClient.instantiate_for_read_and_search, base, ADMIN, SECRET
    )
    found = await asyncio.to_thread(client.search_handle, URL="*example.org*")
    assert found == ["10.5555/r3", "TEST/r1", "TEST/r2"]
    found = await asyncio.to_thread(client.search_handle, URL="*example.org*", prefix="TEST")
    assert found == ["TEST/r1", "TEST/r2"]
    # pyhandle needs a URL: "*" (any) next to the value really searched for.
    found = await asyncio.to_thread(client.search_handle, URL="*", CHECKSUM="md5:111")
    assert found == ["TEST/r1"]
    # Any type, once the client is told it may ask for it.
    custom = await asyncio.to_thread(
        RESTHandleClient.instantiate_for_read_and_search,
        base,
        ADMIN,
        SECRET,
        allowed_search_keys=["URL", "EUDAT/CHECKSUM"],
    )
    found = await asyncio.to_thread(
        custom.search_handle, URL="*other.net*", **{"EUDAT/CHECKSUM": "sha:444"}
    )
    assert found == ["TEST/r4"]
    wrong = await asyncio.to_thread(
        RESTHandleClient.instantiate_for_read_and_search, base, ADMIN, "wrong"
    )
    with pytest.raises(ReverseLookupException):
        await asyncio.to_thread(wrong.search_handle, URL="*example.org*")


async def test_conditions_are_bounded_and_repeats_merged(handles: Api):
    # The default [search] max_conditions is 10: identical conditions count once ...
    repeated = "&".join(["URL=*example.org*"] * 150)
    assert await search(handles, repeated) == (200, ["10.5555/r3", "TEST/r1"])
    # ... and more different ones than that are refused before anything is searched.
    many = "&".join(f"URL=*example.org/{n}*" for n in range(11))
    status, body = await search(handles, many)
    assert (status, body["responseCode"]) == (400, 4) and "at most 10" in body["message"]
    ten = "&".join(f"URL=*example.org*{'*' * n}" for n in range(10))
    assert (await search(handles, ten))[0] == 200


async def test_searches_never_starve_resolution(aiohttp_client, tmp_path, storage_table):
    """Costly searches queue for their own turns (and, on SQLite, their own connection):
    reads of handles go on meanwhile. Before, every search ran on the reader connection, so
    reads waited until all the searches queued before them were done."""
    config = make_config(tmp_path, storage=storage_table, search={"max_concurrent": 1})
    app = create_app(config)
    api = Api(await aiohttp_client(app))
    records = [
        Handle(
            f"TEST/s{n}", (HandleValue(1, "URL", f"https://example.org/{n}".encode(), timestamp=1),)
        )
        for n in range(20_000)
    ]
    await app[keys.STORE].import_records(records)
    costly = "&".join(f"URL={p}" for p in ("*exa*", "*xam*", "*amp*", "*mpl*", "*ple*", "*org*"))
    searches = [asyncio.create_task(search(api, costly + "&limit=10000")) for _ in range(4)]
    await asyncio.sleep(0.05)  # the first search is running
    for n in range(5):
        status, _ = await api.get(f"TEST/s{n}", params={"auth": "true"})  # past the cache
        assert status == 200
    assert not all(task.done() for task in searches)  # the reads did not wait for them
    assert [len((await task)[1]) for task in searches] == [10000] * 4
