"""Hot answers (``api/hot.py``): an anonymous GET of a cached record answered before routing,
or on the wire by the connection itself (``ops/connections.py``), is byte for byte the view's
answer, for every header and status, and is logged and counted as the view's; it never shows
a private value and never outlives its cache entry; and the connection never answers on the
wire what aiohttp would read otherwise.

The view's own answer to a path comes from the same path with ``?auth=false`` (the default,
spelled out): a request with a query is never answered hot, and the view answers it exactly
as the bare path."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from handle_server import keys
from handle_server.app import create_app
from handle_server.ops.access_log import JSONAccessLogger, LineAccessLogger
from handle_server.ops.connections import ConnectionGuard, GuardedRunner

from .helpers import ADMIN_AUTH, Api, make_config, url_value

PRIVATE = {"index": 2, "type": "EMAIL", "data": "secret@e.org", "permissions": "1100"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


#: The access log of the test servers here: a logger of their own (``serve``'s, once set up by
#: another test, writes past the logging machinery).
ACCESS = "tests.hot.access"


class GuardedTestServer(TestServer):
    """The test server with ``serve``'s connections: each watched by a guard that answers
    kept answers on the wire, with the access log ``serve`` gives (combined lines)."""

    def __init__(self, app: Any, *, idle_timeout: float = 75, log: str = "combined") -> None:
        super().__init__(app)
        self.idle_timeout = idle_timeout
        self.log = log

    async def _make_runner(self, **kwargs: Any) -> GuardedRunner:
        guard = ConnectionGuard(max_connections=100, header_timeout=10, hot=self.app[keys.HOT])
        return GuardedRunner(
            self.app,
            guard,
            keepalive_timeout=self.idle_timeout,
            access_log=logging.getLogger(ACCESS),
            access_log_class=JSONAccessLogger if self.log == "json" else LineAccessLogger,
            access_log_format="" if self.log == "json" else self.log,
            **kwargs,
        )


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    return head + body


async def _raw(api: Api, request: bytes) -> bytes:
    """The whole answer to ``request``, as the server wrote it."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        return await _answer(reader)
    finally:
        writer.close()


def _request(path: str, headers: dict[str, str], version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _dateless(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", answer)


async def _app(aiohttp_client, tmp_path, clock: Clock, *, wire: bool = False) -> tuple[Api, Any]:
    app = create_app(make_config(tmp_path), clock=clock)
    return Api(await aiohttp_client(GuardedTestServer(app) if wire else app)), app


#: The ways a hot answer is given: by ``hot_first`` (aiohttp's test server), or on the wire as
#: well (``serve``'s connections).
WAYS = pytest.mark.parametrize("wire", [False, True], ids=["hot_first", "wire"])


@WAYS
async def test_a_hot_answer_is_the_views_answer_for_every_header_and_status(
    aiohttp_client, tmp_path, wire, caplog
):
    caplog.set_level(logging.INFO, ACCESS)
    clock = Clock()
    api, app = await _app(aiohttp_client, tmp_path, clock, wire=wire)
    hot = app[keys.HOT]
    values = [url_value("https://e.org/h", ttl=600), PRIVATE]
    assert (await api.put("TEST/hot", values))[0] == 201
    status, body = await api.get("TEST/hot")  # the view answers, and keeps the answer
    assert status == 200 and [v["index"] for v in body["values"]] == [1]
    etag = (await api.client.get("/api/handles/TEST/hot")).headers["ETag"]

    variants = [
        {},
        {"If-None-Match": etag},  # 304
        {"If-None-Match": f'"other", {etag}'},  # 304
        {"If-None-Match": '"other"'},  # 200
        {"If-None-Match": "*"},
        {"Accept": "text/html"},  # the API answers JSON whoever asks
        {"Accept-Encoding": "gzip, br"},
        {"Connection": "close"},
        {"X-Forwarded-For": "192.0.2.7"},
    ]
    variants += [  # what the connection leaves to hot_first, or takes itself
        {"Connection": "keep-alive", "User-Agent": "Mozilla/5.0 (X11)", "Referer": "https://r/"},
        {"accept": "application/json", "user-agent": "lower/1.0"},
        {"X-Empty": "", "If-None-Match": f"  {etag}\t"},
    ]
    statuses, on_the_wire = set(), 0
    for seconds in (0, 10, 580):  # max-age and Expires count down with the TTL
        clock.now += seconds
        for headers in variants:
            for version in ("1.1", "1.0"):
                before, wired = hot.answered, hot.on_the_wire
                caplog.clear()
                general = await _raw(
                    api, _request("/api/handles/TEST/hot?auth=false", headers, version)
                )
                assert hot.answered == before
                fast = await _raw(api, _request("/api/handles/TEST/hot", headers, version))
                assert hot.answered == before + 1, headers  # this one was hot
                assert _dateless(fast) == _dateless(general), (headers, version)
                assert b"secret@e.org" not in fast
                statuses.add(fast.split(b" ", 2)[1])
                on_the_wire += hot.on_the_wire - wired
                if wire:  # the same line in the access log
                    lines = [
                        re.sub(r"\[[^]]*\]", "[-]", r.getMessage())  # (the second may turn)
                        for r in caplog.records
                        if r.name == ACCESS
                    ]
                    assert len(lines) == 2, lines
                    assert lines[1] == lines[0].replace("?auth=false", ""), lines
    assert statuses == {b"200", b"304"}
    # On the wire: each variant in HTTP/1.1 (Connection: close too), at each clock.
    assert on_the_wire == (3 * len(variants) if wire else 0)
    # The request metrics count hot answers as the view's.
    metrics = await (await api.client.get("/metrics")).text()
    counted = re.search(
        r'handle_server_requests_total\{method="GET",route="/api/handles/\{handle\}",'
        r'status="200"\} (\S+)',
        metrics,
    )
    assert counted is not None and float(counted.group(1)) >= hot.answered


async def test_what_is_not_an_anonymous_get_of_the_bare_path_is_never_hot(aiohttp_client, tmp_path):
    clock = Clock()
    api, app = await _app(aiohttp_client, tmp_path, clock)
    hot = app[keys.HOT]
    assert (await api.put("TEST/p", [url_value("https://e.org/p"), PRIVATE]))[0] == 201
    await api.get("TEST/p")
    await api.get("TEST/p")
    answered = hot.answered
    assert answered == 1
    # Credentials: the view answers (and shows what they may read).
    status, body = await api.get("TEST/p", headers=ADMIN_AUTH, params={"publicOnly": "false"})
    assert status == 200 and [v["index"] for v in body["values"]] == [1, 2]
    resp = await api.client.get("/api/handles/TEST/p", headers=ADMIN_AUTH)
    assert resp.status == 200 and resp.headers["Cache-Control"] == "private, no-store"
    # A HEAD, a query, the resolver's path, another spelling of the handle.
    assert (await api.client.head("/api/handles/TEST/p")).status == 200
    assert (await api.client.get("/api/handles/TEST/p?index=1")).status == 200
    assert (await api.client.get("/TEST/p", headers={"Accept": "application/json"})).status == 200
    assert (await api.client.get("/api/handles/test/p")).status == 200  # kept, not yet hot
    assert hot.answered == answered


@WAYS
async def test_a_hot_answer_goes_with_its_cache_entry(aiohttp_client, tmp_path, wire):
    """A write, the end of the TTL and a purge of the cache each end a kept answer: the next
    GET is the view's, with what the store holds."""
    clock = Clock()
    api, app = await _app(aiohttp_client, tmp_path, clock, wire=wire)
    hot = app[keys.HOT]

    async def url() -> str:
        # Each on a connection of its own: one that has carried a request with a body (the
        # PUTs here) is aiohttp's from then on.
        answer = await _raw(api, _request("/api/handles/TEST/w", {}))
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        body = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
        return body["values"][0]["data"]["value"]

    assert (await api.put("TEST/w", [url_value("https://e.org/1", ttl=60)]))[0] == 201
    assert await url() == "https://e.org/1"
    assert await url() == "https://e.org/1" and hot.answered == 1
    assert (await api.put("TEST/w", [url_value("https://e.org/2", ttl=60)]))[0] == 200
    assert await url() == "https://e.org/2" and hot.answered == 1  # the view's
    assert await url() == "https://e.org/2" and hot.answered == 2  # hot again
    clock.now += 61  # the TTL ends
    assert await url() == "https://e.org/2" and hot.answered == 2
    assert await url() == "https://e.org/2" and hot.answered == 3
    app[keys.SERVICE].cache.clear()
    assert await url() == "https://e.org/2" and hot.answered == 3
    assert (await api.delete("TEST/w"))[0] == 200
    status, _ = await api.get("TEST/w")
    assert status == 404 and hot.answered == 3
    assert hot.on_the_wire == (3 if wire else 0)


async def test_an_answer_from_outside_the_cache_is_never_hot(aiohttp_client, tmp_path):
    """A record with a TTL of 0 is never cached (nor is a read that a write overtook): its
    answers are the view's every time, however often it is asked."""
    api, app = await _app(aiohttp_client, tmp_path, Clock())
    assert (await api.put("TEST/z", [url_value("https://e.org/z", ttl=0)]))[0] == 201
    for _ in range(3):
        status, _ = await api.get("TEST/z")
        assert status == 200
    assert app[keys.HOT].answered == 0


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@WAYS
async def test_a_hot_redirect_is_the_resolvers_redirect(aiohttp_client, tmp_path, wire):
    clock = Clock()
    api, app = await _app(aiohttp_client, tmp_path, clock, wire=wire)
    hot = app[keys.HOT]
    assert (await api.put("TEST/r", [url_value("https://e.org/r?a=1&b=<2>", ttl=300)]))[0] == 201
    accepts = [{}, {"Accept": BROWSER}, {"Accept": "*/*"}, {"User-Agent": "curl/8.5.0"}]
    for headers in accepts:  # the resolver answers each Accept once, and keeps it
        await _raw(api, _request("/TEST/r", headers))
    for seconds in (0, 100):
        clock.now += seconds
        for headers in [*accepts, {"Accept": BROWSER, "If-None-Match": "*"}]:
            for version in ("1.1", "1.0"):
                before, wired = hot.answered, hot.on_the_wire
                general = await _raw(api, _request("/TEST/r?auth=false", headers, version))
                assert hot.answered == before
                fast = await _raw(api, _request("/TEST/r", headers, version))
                assert hot.answered == before + 1, headers
                assert fast.startswith(f"HTTP/{version} 302 Found\r\n".encode())
                assert _dateless(fast) == _dateless(general), (headers, version)
                assert hot.on_the_wire == (wired + (version == "1.1") if wire else 0)
    # JSON for a client asking for it: the view's, every time.
    before = hot.answered
    for _ in range(2):
        resp = await api.client.get("/TEST/r", headers={"Accept": "application/json"})
        assert resp.status == 200 and (await resp.json())["handle"] == "TEST/r"
    assert hot.answered == before


async def test_a_redirect_chosen_from_a_location_list_is_never_hot(aiohttp_client, tmp_path):
    """10320/loc: the choice may depend on the client's address or on chance."""
    api, app = await _app(aiohttp_client, tmp_path, Clock())
    locations = (
        '<locations><location href="https://a.org/x" weight="1"/>'
        '<location href="https://b.org/x" weight="1"/></locations>'
    )
    loc = {"index": 2, "type": "10320/loc", "data": locations}
    assert (await api.put("TEST/loc", [url_value("https://e.org/l"), loc]))[0] == 201
    targets = set()
    for _ in range(40):
        resp = await api.client.get("/TEST/loc", allow_redirects=False)
        assert resp.status == 302
        targets.add(resp.headers["Location"])
    assert targets == {"https://a.org/x", "https://b.org/x"}
    assert app[keys.HOT].answered == 0


HOT_GET = b"GET /api/handles/TEST/hot HTTP/1.1\r\nHost: test\r\n\r\n"


async def _wired_app(aiohttp_client, tmp_path, **server: Any) -> tuple[Api, Any]:
    app = create_app(make_config(tmp_path), clock=Clock())
    api = Api(await aiohttp_client(GuardedTestServer(app, **server)))
    assert (await api.put("TEST/hot", [url_value("https://e.org/h", ttl=600)]))[0] == 201
    for _ in range(2):  # kept, then answered on the wire
        assert (await _raw(api, HOT_GET)).startswith(b"HTTP/1.1 200 OK\r\n")
    assert app[keys.HOT].on_the_wire == 1
    return api, app


async def _nothing_more(reader: asyncio.StreamReader) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)


async def test_the_connection_answers_only_what_aiohttp_would_read_the_same(
    aiohttp_client, tmp_path
):
    """Bytes that complete a request aiohttp holds part of, a request's body, and requests
    sent together are aiohttp's to read, even when they look like a plain GET: answers stay
    one a request, in order, and what aiohttp holds is never skipped."""
    api, app = await _wired_app(aiohttp_client, tmp_path)
    hot = app[keys.HOT]
    server = api.client.server

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(server.host, server.port)

    # A request begun, then bytes that read alone as a plain GET: a header's value to aiohttp.
    reader, writer = await connect()
    writer.write(b"GET /api/handles/TEST/hot HTTP/1.1\r\nX-Note: ")
    await asyncio.sleep(0.1)
    writer.write(HOT_GET)
    assert (await _answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    await _nothing_more(reader)
    writer.write(HOT_GET)  # the connection is aiohttp's from now on
    assert (await _answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()
    assert hot.on_the_wire == 1

    # A body that reads as a plain GET, sent after its request's headers.
    reader, writer = await connect()
    body = HOT_GET
    auth = ADMIN_AUTH["Authorization"]
    writer.write(
        f"PUT /api/handles/TEST/other HTTP/1.1\r\nHost: test\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    await asyncio.sleep(0.1)
    writer.write(body)
    assert (await _answer(reader)).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    await _nothing_more(reader)
    writer.write(HOT_GET)
    assert (await _answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()
    assert hot.on_the_wire == 1

    # Requests sent together (pipelined): aiohttp's, in order; whole, so the next is wired.
    reader, writer = await connect()
    missing = b"GET /api/handles/TEST/missing HTTP/1.1\r\nHost: test\r\n\r\n"
    writer.write(HOT_GET + missing + HOT_GET)
    statuses = [(await _answer(reader)).split(b"\r\n", 1)[0] for _ in range(3)]
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"]
    assert hot.on_the_wire == 1
    await asyncio.sleep(0.05)  # aiohttp waits for the next request
    writer.write(HOT_GET)
    assert (await _answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    await _nothing_more(reader)
    writer.close()
    assert hot.on_the_wire == 2

    # Connection: close, answered on the wire as aiohttp answers it: said, and done.
    reader, writer = await connect()
    writer.write(HOT_GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert b"\r\nServer: Python/" in (answer := await _answer(reader))
    assert b"\r\nConnection: close\r\n" in answer
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    writer.close()
    assert hot.on_the_wire == 3


@pytest.mark.slow
@pytest.mark.parametrize("aiohttps", [False, True], ids=["wire-only", "aiohttp-first"])
async def test_answers_on_the_wire_keep_a_connection_open_for_idle_timeout_only(
    aiohttp_client, tmp_path, aiohttps
):
    """Whether the connection's first request was aiohttp's (whose handler then keeps the
    idle clock) or every one was answered on the wire (the connection keeps it)."""
    api, app = await _wired_app(aiohttp_client, tmp_path, idle_timeout=1)
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    loop = asyncio.get_running_loop()
    begun = loop.time()
    if aiohttps:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        await asyncio.sleep(0.05)
    for _ in range(4):  # for 1.8 s, each within the idle timeout of the one before
        writer.write(HOT_GET)
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        await asyncio.sleep(0.6)
    # The socket options aiohttp gives a connection it keeps, once it lives on.
    (kept,) = [p for p in api.client.server.runner.server._guard.open if p.transport]
    sock = kept.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    assert app[keys.HOT].on_the_wire == 5
    assert await asyncio.wait_for(reader.read(1), 5) == b""  # closed once idle for 1 s
    assert 2.4 < loop.time() - begun < 4.5
    writer.close()


async def test_a_request_after_one_aiohttp_is_answering_waits_its_turn(aiohttp_client, tmp_path):
    """A plain GET that arrives while aiohttp is answering the request before it is
    answered after that one, by aiohttp."""
    app = create_app(make_config(tmp_path), clock=Clock())
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_slow(request: Any, response: Any) -> None:  # an answer that takes its time
        if request.path == "/api/handles/TEST/slow":
            held.set()
            await release.wait()

    app.on_response_prepare.append(hold_slow)
    api = Api(await aiohttp_client(GuardedTestServer(app)))
    assert (await api.put("TEST/hot", [url_value("https://e.org/h", ttl=600)]))[0] == 201
    for _ in range(2):
        assert (await _raw(api, HOT_GET)).startswith(b"HTTP/1.1 200 OK\r\n")
    hot = app[keys.HOT]
    assert hot.on_the_wire == 1
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /api/handles/TEST/slow HTTP/1.1\r\nHost: test\r\n\r\n")
    await asyncio.wait_for(held.wait(), 5)
    writer.write(HOT_GET)
    await _nothing_more(reader)
    release.set()
    assert (await _answer(reader)).startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert (await _answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()
    assert hot.on_the_wire == 1


async def test_connections_answered_only_on_the_wire_close_when_the_server_stops(
    aiohttp_client, tmp_path
):
    """aiohttp closes the connections its handlers have at shutdown; those it never had are
    closed with them."""
    api, app = await _wired_app(aiohttp_client, tmp_path)
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(HOT_GET)
    assert (await _answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
    assert app[keys.HOT].on_the_wire == 2
    server.runner.server.pre_shutdown()  # what the runner's cleanup does first
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    writer.close()


async def test_an_answer_on_the_wire_has_the_views_json_access_log_line(
    aiohttp_client, tmp_path, caplog
):
    caplog.set_level(logging.INFO, ACCESS)
    api, app = await _wired_app(aiohttp_client, tmp_path, log="json")
    headers = {"User-Agent": "agent/1", "Referer": "https://r.example/"}
    caplog.clear()
    await _raw(api, _request("/api/handles/TEST/hot?auth=false", headers))
    await _raw(api, _request("/api/handles/TEST/hot", headers))
    assert app[keys.HOT].on_the_wire == 2
    general, wired = (orjson.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS)
    assert general.pop("path") == "/api/handles/TEST/hot?auth=false"
    assert wired.pop("path") == "/api/handles/TEST/hot"
    for line in (general, wired):
        assert line.pop("time") and line.pop("duration_s") >= 0
    assert wired == general
    assert wired["referer"] == "https://r.example/" and wired["bytes"] > 300
