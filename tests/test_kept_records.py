"""The records authentication reads are kept between the writes that change them
(``auth.records.KeptRecords``): an authenticated request costs no store read for its
identity, and a changed secret counts at once, in this process and in another on the same
store."""

from __future__ import annotations

import asyncio
import re

from handle_server.app import create_app
from handle_server.auth.records import KeptRecords
from handle_server.cache import ResolutionCache
from handle_server.config import CacheConfig
from storage import Handle, HandleStore, HandleValue

from .helpers import ADMIN_AUTH, Api, basic, make_config, seckey, url_value


async def _store_gets(api: Api) -> float:
    """How many times the store was asked for a record (``/metrics``)."""
    async with api.client.get("/metrics") as resp:
        text = await resp.text()
    found = re.search(
        r'^handle_server_store_duration_seconds_count\{operation="get"\} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


async def _listing(api: Api, headers: dict[str, str]) -> int:
    return (await api.list({"prefix": "TEST", "page": 0, "pageSize": 10}, headers=headers))[0]


async def test_an_identity_is_read_once_until_its_record_changes(api: Api):
    """Listings read no record but the identity's: the first reads it, the next ones not. A
    new secret, written through this server, counts at once: the old one is refused."""
    user = basic("300:TEST/USERS", "old-secret")
    assert (await api.put("TEST/USERS", [seckey(300, "old-secret")], headers=ADMIN_AUTH))[0] == 201
    admin = {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
        "handle": "TEST/USERS", "index": 300, "permissions": "111111111111"}}}  # fmt: skip
    assert (await api.put("0.NA/TEST", [admin], params={"index": 100}, headers=ADMIN_AUTH))[0] in (
        200,
        201,
    )
    assert await _listing(api, user) == 200
    gets = await _store_gets(api)
    for _ in range(5):
        assert await _listing(api, user) == 200
    assert await _store_gets(api) == gets  # kept

    assert (await api.put("TEST/USERS", [seckey(300, "new-secret")], headers=ADMIN_AUTH))[0] == 200
    assert await _listing(api, user) == 401
    assert await _listing(api, basic("300:TEST/USERS", "new-secret")) == 200
    assert await _store_gets(api) > gets  # read again after the write


async def test_a_secret_changed_by_another_process_counts_at_once(aiohttp_client, tmp_path):
    """Two servers on one SQLite file: the second keeps the identity, the first changes its
    secret; the second refuses the old secret at its next request (it reads the store's
    change log before it trusts what it kept)."""
    config = make_config(tmp_path)
    one = Api(await aiohttp_client(create_app(config)))
    two = Api(await aiohttp_client(create_app(config)))
    assert (await one.put("TEST/USERS", [seckey(300, "old")], headers=ADMIN_AUTH))[0] == 201
    assert (await one.put("TEST/owned", [url_value("https://e.org")], headers=ADMIN_AUTH))[0] == 201
    admin = {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
        "handle": "TEST/USERS", "index": 300, "permissions": "111111111111"}}}  # fmt: skip
    assert (await one.put("TEST/owned", [admin], params={"index": 100}, headers=ADMIN_AUTH))[0] in (
        200,
        201,
    )

    def write(secret: str, url: str):
        return two.put(
            "TEST/owned", [url_value(url)], params={"index": 1},
            headers=basic("300:TEST/USERS", secret),
        )  # fmt: skip

    assert (await write("old", "https://e.org/1"))[0] == 200
    assert (await write("old", "https://e.org/2"))[0] == 200  # kept by now
    assert (await one.put("TEST/USERS", [seckey(300, "new")], headers=ADMIN_AUTH))[0] == 200
    assert (await write("old", "https://e.org/3"))[0] == 401
    assert (await write("new", "https://e.org/4"))[0] == 200


async def test_a_read_that_a_write_overtook_is_not_kept(store: HandleStore):
    """A record read before a write and delivered after it is answered once, and not kept:
    the next read goes to the store (kept, it would stand for the old record until the next
    write)."""
    cache = ResolutionCache(store, CacheConfig())
    old = Handle("TEST/USERS", (HandleValue(300, "HS_SECKEY", b"old", timestamp=1),))
    new = Handle("TEST/USERS", (HandleValue(300, "HS_SECKEY", b"new", timestamp=2),))
    await store.update("TEST/USERS", lambda before: old)
    read, delivered = asyncio.Event(), asyncio.Event()

    class Slow:
        """The real store, whose next read is delivered only when the test says."""

        def __getattr__(self, name: str):
            return getattr(store, name)

        async def get(self, handle: str):
            record = await store.get(handle)
            read.set()
            await delivered.wait()
            return record

    kept = KeptRecords(Slow(), cache)  # type: ignore[arg-type]
    reading = asyncio.ensure_future(kept.get("TEST/USERS"))
    await asyncio.wait_for(read.wait(), 10)
    await store.update("TEST/USERS", lambda before: new)
    cache.invalidate("TEST/USERS")  # what the service does after every write
    delivered.set()
    assert await reading == old
    read.clear()
    assert await kept.get("TEST/USERS") == new and read.is_set()  # read again
    read.clear()
    assert await kept.get("TEST/USERS") == new and not read.is_set()  # kept now
