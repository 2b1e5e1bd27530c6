"""The resolution cache: TTLs (with a fake clock), bypass, read-your-write, single-flight,
privacy, bounds, and HTTP caching (Cache-Control, ETag, 304)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from handle_server import keys
from handle_server.app import create_app
from storage import Handle, HandleValue

from .helpers import ADMIN_AUTH, Api, basic, make_config, seckey, url_value

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def make_api(aiohttp_client, tmp_path, clock, **cache) -> Api:
    config = make_config(tmp_path, cache=cache) if cache else make_config(tmp_path)
    return Api(await aiohttp_client(create_app(config, clock=clock)))


def app_of(api: Api):
    return api.client.server.app


async def behind_the_cache(api: Api, handle: str, url: str) -> None:
    """Change a record in the store directly, as another node sharing the store would."""
    record = Handle(handle, (HandleValue(1, "URL", url.encode(), timestamp=1),))
    await app_of(api)[keys.STORE].update(handle, lambda before: record)


async def url_of(api: Api, handle: str, **params) -> str:
    status, body = await api.get(handle, params=params or None)
    assert status == 200, body
    return body["values"][0]["data"]["value"]


async def test_an_entry_lives_as_long_as_the_smallest_ttl(aiohttp_client, tmp_path, clock):
    api = await make_api(aiohttp_client, tmp_path, clock)
    await api.put(
        "TEST/ttl",
        [url_value("https://old.org", ttl=3600), {"index": 2, "type": "X", "data": "x", "ttl": 60}],
    )
    assert await url_of(api, "TEST/ttl") == "https://old.org"
    await behind_the_cache(api, "TEST/ttl", "https://new.org")
    clock.now += 59
    assert await url_of(api, "TEST/ttl") == "https://old.org"  # still fresh: served from cache
    clock.now += 2
    assert await url_of(api, "TEST/ttl") == "https://new.org"  # 61 s > the smallest ttl (60)


async def test_absolute_ttl_and_the_ceiling(aiohttp_client, tmp_path, clock):
    api = await make_api(aiohttp_client, tmp_path, clock, max_ttl=30)
    await api.put("TEST/abs", [url_value("https://old.org", ttl="2023-11-14T22:13:40Z")])  # T0+20
    await url_of(api, "TEST/abs")
    await behind_the_cache(api, "TEST/abs", "https://new.org")
    clock.now += 19
    assert await url_of(api, "TEST/abs") == "https://old.org"
    clock.now += 2
    assert await url_of(api, "TEST/abs") == "https://new.org"
    # The ceiling (max_ttl = 30) caps a day-long TTL.
    await api.put("TEST/long", [url_value("https://old.org")])
    await url_of(api, "TEST/long")
    await behind_the_cache(api, "TEST/long", "https://new.org")
    clock.now += 29
    assert await url_of(api, "TEST/long") == "https://old.org"
    clock.now += 2
    assert await url_of(api, "TEST/long") == "https://new.org"


async def test_not_found_is_cached_briefly_and_a_create_clears_it(aiohttp_client, tmp_path, clock):
    api = await make_api(aiohttp_client, tmp_path, clock, not_found_ttl=5)
    assert (await api.get("TEST/later"))[0] == 404
    await behind_the_cache(api, "TEST/later", "https://x.org")
    assert (await api.get("TEST/later"))[0] == 404  # remembered
    clock.now += 6
    assert (await api.get("TEST/later"))[0] == 200
    assert (await api.get("TEST/soon"))[0] == 404
    await api.put("TEST/soon", [url_value("https://soon.org")])  # through the API: cleared
    assert (await api.get("TEST/soon"))[0] == 200


async def test_auth_true_bypasses_and_refreshes(aiohttp_client, tmp_path, clock):
    api = await make_api(aiohttp_client, tmp_path, clock)
    await api.put("TEST/auth", [url_value("https://old.org")])
    await url_of(api, "TEST/auth")
    await behind_the_cache(api, "TEST/auth", "https://new.org")
    assert await url_of(api, "TEST/auth") == "https://old.org"
    assert await url_of(api, "TEST/auth", auth="true") == "https://new.org"
    assert await url_of(api, "TEST/auth") == "https://new.org"  # the refresh was stored


async def test_read_your_write_under_concurrent_readers(aiohttp_client, tmp_path, clock):
    api = await make_api(aiohttp_client, tmp_path, clock)
    await api.put("TEST/ryw", [url_value("https://v0.org")])
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            await api.get("TEST/ryw")

    readers = [asyncio.create_task(reader()) for _ in range(20)]
    try:
        for n in range(1, 41):
            if n % 2:
                await api.put("TEST/ryw", [url_value(f"https://v{n}.org")])
            else:
                await api.put("TEST/ryw", [url_value(f"https://v{n}.org")], params={"index": "1"})
            assert await url_of(api, "TEST/ryw") == f"https://v{n}.org"
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert app_of(api)[keys.SERVICE].cache.stats.hits > 0


async def test_a_burst_of_misses_makes_one_store_read(aiohttp_client, tmp_path, clock):
    api = await make_api(aiohttp_client, tmp_path, clock)
    await api.put("TEST/burst", [url_value("https://a.org")])
    cache = app_of(api)[keys.SERVICE].cache
    before = cache.stats.loads
    lookups = await asyncio.gather(*(cache.lookup("TEST/burst") for _ in range(50)))
    assert cache.stats.loads - before == 1
    assert {lookup.record.values[0].data for lookup in lookups} == {b"https://a.org"}
    # A write that lands while a read is in flight: the read's (maybe old) result goes to its
    # own callers but is not kept, so the next read goes to the store and sees the write.
    load = asyncio.ensure_future(cache.lookup("TEST/burst", refresh=True))
    await asyncio.sleep(0)
    assert not load.done()  # the store read is under way
    cache.invalidate("TEST/burst")  # what every write does before it is answered
    overtaken = await load
    assert "TEST/BURST" not in cache._entries and overtaken.dropped  # (never in the cache)
    await behind_the_cache(api, "TEST/burst", "https://b.org")
    assert (await cache.lookup("TEST/burst")).record.values[0].data == b"https://b.org"


async def test_no_private_value_ever_enters_the_cache(aiohttp_client, tmp_path, clock):
    api = await make_api(aiohttp_client, tmp_path, clock)
    secret = {"index": 2, "type": "SECRET", "data": "s3", "permissions": "1100"}
    await api.put("TEST/priv", [url_value("https://a.org"), secret])
    cache = app_of(api)[keys.SERVICE].cache
    _, body = await api.get("TEST/priv", headers=ADMIN_AUTH)  # sees both; not through the cache
    assert [v["index"] for v in body["values"]] == [1, 2]
    _, body = await api.get("TEST/priv")
    assert [v["index"] for v in body["values"]] == [1]
    entry = cache._entries["TEST/PRIV"]
    assert [v.index for v in entry.record.values] == [1]
    _, body = await api.get("TEST/priv", headers=ADMIN_AUTH)  # and the cache does not hide it
    assert [v["index"] for v in body["values"]] == [1, 2]


async def test_the_cache_is_bounded_and_can_be_off(aiohttp_client, tmp_path, clock):
    api = await make_api(aiohttp_client, tmp_path, clock, max_entries=5)
    for n in range(10):
        await api.put(f"TEST/b{n}", [url_value("https://a.org")])
        await api.get(f"TEST/b{n}")
    cache = app_of(api)[keys.SERVICE].cache
    assert 0 < len(cache) <= 5
    off = await make_api(aiohttp_client, tmp_path / "off", clock, max_ttl=0)
    await off.put("TEST/o", [url_value("https://a.org")])
    cache = app_of(off)[keys.SERVICE].cache
    for _ in range(3):
        await off.get("TEST/o")
    assert len(cache) == 0 and cache.stats.hits == 0 and cache.stats.loads == 3


async def test_http_caching_and_the_304_flow(aiohttp_client, tmp_path, clock):
    api = await make_api(aiohttp_client, tmp_path, clock)
    await api.put("TEST/etag", [url_value("https://a.org", ttl=600)])
    status, _ = await api.get("TEST/etag")
    etag = api.last.headers["ETag"]
    assert status == 200 and etag.startswith('"')
    assert api.last.headers["Cache-Control"] == "public, max-age=600"
    clock.now += 100
    await api.get("TEST/etag")
    assert api.last.headers["Cache-Control"] == "public, max-age=500"  # what is left of it
    async with api.client.get("/api/handles/TEST/etag", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304 and await resp.read() == b""
        assert resp.headers["ETag"] == etag
    await api.put("TEST/etag", [url_value("https://b.org", ttl=600)])
    async with api.client.get("/api/handles/TEST/etag", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 200 and resp.headers["ETag"] != etag
    # An answer made for an authenticated caller is never stored by anyone.
    await api.get("TEST/etag", headers=ADMIN_AUTH)
    assert api.last.headers["Cache-Control"] == "private, no-store"


def test_cache_config_rejects_negatives(tmp_path):
    from handle_server.config import ConfigError

    with pytest.raises(ConfigError, match=r"\[cache\] max_ttl: must not be negative"):
        make_config(tmp_path, cache={"max_ttl": -1})
    assert dataclasses.asdict(make_config(tmp_path).cache)["not_found_ttl"] == 5


async def test_a_kept_answer_repeats_the_name_as_asked_and_goes_with_the_entry(api):
    """The cache keeps a hot handle's finished answer; it is the answer for that spelling
    only, and a write replaces it."""
    await api.put("TEST/Kept", [url_value("https://one.org")])
    for name in ("TEST/Kept", "test/kept", "TEST/Kept", "test/KEPT"):
        status, body = await api.get(name)
        assert status == 200 and body["handle"] == name
        assert body["values"][0]["data"]["value"] == "https://one.org"
    first = api.last.headers["ETag"]
    await api.put("TEST/Kept", [url_value("https://two.org")])
    status, body = await api.get("test/KEPT")
    assert body["values"][0]["data"]["value"] == "https://two.org"
    assert api.last.headers["ETag"] != first


async def test_only_the_servers_admins_purge_and_a_purge_changes_no_record(api):
    """DELETE /api/cache[/{handle}]: for the identities of [[admins]]; an identity that
    proves itself but is not one of them is refused (403); nothing stored changes."""
    status, _ = await api.put("TEST/user", [seckey(300, "user-secret")])
    assert status == 201
    status, _ = await api.put("TEST/kept", [url_value("https://example.org/kept")])
    assert status == 201
    user = basic("300:TEST/user", "user-secret")
    for path in ("/api/cache/TEST/kept", "/api/cache"):
        status, body = await api._call("DELETE", path)
        assert status == 401 and body["responseCode"] == 402, path
        status, body = await api._call("DELETE", path, headers=user)
        assert status == 403 and body["responseCode"] == 400, (path, body)
    status, body = await api._call("DELETE", "/api/cache/TEST/kept", headers=ADMIN_AUTH)
    assert (status, body) == (200, {"responseCode": 1, "handle": "TEST/kept"})
    status, body = await api._call("DELETE", "/api/cache/", headers=ADMIN_AUTH)
    assert status == 400 and body["responseCode"] == 102  # no handle: refused, not "all"
    status, body = await api._call("DELETE", "/api/cache", headers=ADMIN_AUTH)
    assert (status, body) == (200, {"responseCode": 1})
    status, body = await api._call("GET", "/api/cache", headers=ADMIN_AUTH)
    assert status == 405 and api.last.headers["Allow"] == "DELETE"
    status, body = await api.get("TEST/kept")
    assert status == 200 and body["values"][0]["data"]["value"] == "https://example.org/kept"


async def test_a_lookup_that_leaves_the_cache_says_so(aiohttp_client, tmp_path, clock):
    """``Lookup.dropped`` (what a kept answer checks): set when the entry is forgotten,
    replaced by a fresh read, evicted or cleared; not while it stays."""
    api = await make_api(aiohttp_client, tmp_path, clock, max_entries=2)
    cache = app_of(api)[keys.SERVICE].cache
    for name in ("TEST/d1", "TEST/d2", "TEST/d3"):
        await api.put(name, [url_value("https://e.org")])

    async def cached(name: str):
        lookup = await cache.lookup(name)
        assert cache.peek(name) is lookup
        return lookup

    first = await cached("TEST/d1")
    assert (await cache.lookup("TEST/d1")) is first and not first.dropped
    cache.invalidate("TEST/d1")
    assert first.dropped
    first = await cached("TEST/d1")
    fresh = await cache.lookup("TEST/d1", refresh=True)
    assert fresh is not first and first.dropped and cache.peek("TEST/d1") is fresh
    second, third = await cached("TEST/d2"), await cached("TEST/d3")  # two places: d1 goes
    assert cache.peek("TEST/d1") is None and fresh.dropped
    assert not (second.dropped or third.dropped)
    cache.clear()
    assert second.dropped and third.dropped
