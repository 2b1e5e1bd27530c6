"""Several nodes on one PostgreSQL: writes cross nodes' caches, and a node whose database goes
away answers 503 and recovers by itself. Node B reaches the database through a TCP relay the
test can cut, as a network failure would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from handle_server import keys
from handle_server.app import create_app

from .helpers import Api, basic, make_config, url_value


class Relay:
    """A TCP relay to the database that can be cut (every connection closed, new ones
    refused) and restored on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()


@pytest.fixture
async def relay(pg_dsn: str) -> AsyncIterator[Relay]:
    parts = urlsplit(pg_dsn)
    r = Relay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await r.start()
    yield r
    with contextlib.suppress(Exception):
        await r.cut()


def _via(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def _node(aiohttp_client: Any, tmp_path: Any, dsn: str) -> tuple[Api, Any]:
    config = make_config(tmp_path, storage={"backend": "postgresql", "dsn": dsn})
    app = create_app(config)
    client = await aiohttp_client(app)
    cache = app[keys.SERVICE].cache
    await _until(lambda: cache.enabled, "the node to listen for changes")
    return Api(client), cache


async def _until(condition: Any, what: str, within: float = 10.0) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def _url(api: Api, handle: str) -> tuple[int, Any]:
    status, body = await api.get(handle)
    return status, body["values"][0]["data"]["value"] if status == 200 else body


async def test_a_write_on_one_node_clears_the_cache_of_another(aiohttp_client, tmp_path, pg_dsn):
    a, _ = await _node(aiohttp_client, tmp_path, pg_dsn)
    b, b_cache = await _node(aiohttp_client, tmp_path, pg_dsn)
    assert (await a.put("TEST/shared", [url_value("https://old.org")]))[0] == 201
    assert await _url(b, "TEST/shared") == (200, "https://old.org")
    hits = b_cache.stats.hits
    assert await _url(b, "TEST/shared") == (200, "https://old.org")
    assert b_cache.stats.hits == hits + 1  # B answers from its cache (TTL: a day)

    assert (await a.put("TEST/shared", [url_value("https://new.org")]))[0] == 200
    # The NOTIFY is sent at A's commit; B forgets the handle when it arrives (well under a
    # millisecond here; waited for, not assumed).
    seen: list[Any] = []

    async def b_sees_it() -> bool:
        seen.append(await _url(b, "TEST/shared"))
        return seen[-1] == (200, "https://new.org")

    deadline = time.monotonic() + 5
    while not await b_sees_it():
        assert time.monotonic() < deadline, seen[-1]
        await asyncio.sleep(0.01)
    # Deletes cross too.
    assert (await a.delete("TEST/shared"))[0] == 200
    deadline = time.monotonic() + 5
    while (await b.get("TEST/shared"))[0] != 404:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_a_node_that_loses_the_database_answers_503_and_recovers(
    aiohttp_client, tmp_path, pg_dsn, relay
):
    a, _ = await _node(aiohttp_client, tmp_path, pg_dsn)
    b, b_cache = await _node(aiohttp_client, tmp_path, _via(pg_dsn, relay.port))
    assert (await a.put("TEST/r", [url_value("https://before.org")]))[0] == 201
    assert await _url(b, "TEST/r") == (200, "https://before.org")  # now in B's cache

    await relay.cut()
    # B lost its notification channel too: it drops its cache rather than serve what may be
    # stale, and answers 503 (the Handle API's error shape, no traceback) while it cannot read.
    await _until(lambda: not b_cache.enabled, "B to stop caching")
    status, body = await b.get("TEST/r")
    assert status == 503
    assert body == {
        "responseCode": 3,
        "handle": "TEST/r",
        "message": "The handle store is unavailable; try again shortly",
    }
    status, body = await b.put("TEST/r2", [url_value("https://x.org")])
    assert status == 503 and body["responseCode"] == 3
    # Its readiness check says so (a load balancer takes it out); it is alive all the same.
    status, body = await b._call("GET", "/readyz")
    assert status == 503 and body["status"] == "unavailable" and body["store"]
    assert (await b._call("GET", "/healthz"))[0] == 200
    # Meanwhile A changes the record; B cannot hear of it.
    assert (await a.put("TEST/r", [url_value("https://after.org")]))[0] == 200

    await relay.restore()
    deadline = time.monotonic() + 15
    while (got := await _url(b, "TEST/r"))[0] != 200:
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.05)
    assert got == (200, "https://after.org")
    assert (await b.put("TEST/r2", [url_value("https://x.org")]))[0] == 201
    assert (await b._call("GET", "/readyz"))[0] == 200
    await _until(lambda: b_cache.enabled, "B to cache again")


async def test_a_storm_of_broken_connections_is_never_a_500(
    aiohttp_client, tmp_path, pg_dsn, caplog
):
    """Every serving connection is terminated every 150 ms while reads and writes go on: each
    request is answered as it should be, or 503, never 500 (a connection cut mid-statement
    once escaped as asyncpg's InternalClientError)."""
    config = make_config(
        tmp_path, storage={"backend": "postgresql", "dsn": pg_dsn}, cache={"max_ttl": 0}
    )
    api = Api(await aiohttp_client(create_app(config)))
    for n in range(20):
        assert (await api.put(f"TEST/s{n}", [url_value(f"https://s.org/{n}")]))[0] == 201
    import asyncpg

    from storage.postgres import APPLICATION_NAME

    killer = await asyncpg.connect(pg_dsn)
    statuses: list[int] = []
    stop = asyncio.Event()

    async def storm() -> None:
        while not stop.is_set():
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = $1 AND pid <> pg_backend_pid()",
                APPLICATION_NAME,
            )
            await asyncio.sleep(0.15)

    async def client(worker: int) -> None:
        n = 0
        while not stop.is_set():
            handle = f"TEST/s{(worker + n) % 20}"
            if n % 3:
                status, _ = await api.get(handle)
            else:
                status, _ = await api.put(handle, [url_value(f"https://t.org/{n}")])
            statuses.append(status)
            n += 1

    storming = asyncio.create_task(storm())
    clients = [asyncio.create_task(client(w)) for w in range(8)]
    await asyncio.sleep(4)
    stop.set()
    await asyncio.gather(storming, *clients)
    await killer.close()
    assert len(statuses) > 100 and set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(200) > len(statuses) // 2  # reads retried on a fresh connection
    assert "unhandled error" not in caplog.text


async def test_nul_in_a_search_or_an_identity_is_refused_alike_on_both_backends(api: Api):
    status, body = await api._call("GET", "/hrls/handles/?URL=*exa%00mple*")
    assert (status, body["responseCode"]) == (400, 4)
    status, body = await api.get("TEST/x", headers=basic("300:TEST/a\x00b", "secret"))
    assert (status, body["responseCode"]) == (401, 403)
