"""What one client may hold of the server: requests at once, time to send a body, idle and
half-sent connections, header floods. Each limit is in the config with a safe default."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sqlite3
import struct
import time

import aiohttp
import orjson
import pytest

from handle_server import keys
from handle_server.app import create_app
from handle_server.config import ConfigError, parse_config
from handle_server.ops.connections import AcceptFailureLog

from .helpers import ADMIN_AUTH, Api, Server, make_config, url_value

BODY = orjson.dumps([url_value("https://slow.org")])


async def half_sent_put(
    port: int, handle: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A PUT whose headers arrive and whose body stops after its first byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = ADMIN_AUTH["Authorization"]
    writer.write(
        f"PUT /api/handles/{handle} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY[:1]
    )
    await writer.drain()
    return reader, writer


async def test_slow_bodies_hold_no_slot_and_get_408(aiohttp_server, tmp_path, storage_table):
    server_table = {"max_concurrent_requests": 2, "body_timeout": 2}
    config = make_config(tmp_path, storage=storage_table, server=server_table)
    server = await aiohttp_server(create_app(config))
    started = time.monotonic()
    slow = []
    for n in range(4):  # one at a time: authenticating, each holds a slot
        slow.append(await half_sent_put(server.port, f"TEST/slow-{n}"))
        await asyncio.sleep(0.2)  # now it waits for its body

    async with aiohttp.ClientSession() as session:
        api = Api(_Prefixed(session, str(server.make_url(""))))
        # Twice the limit waiting for bodies, and requests with work to do still get slots.
        assert (await api.get("TEST/anything"))[0] == 404
        status, _ = await api.put("TEST/during", [url_value("https://a.org")])
        assert status == 201

        for reader, writer in slow:  # the server gives up on each at body_timeout
            head = await asyncio.wait_for(reader.readuntil(b"seconds"), 10)
            assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
            assert b'"responseCode":4' in head and b"not received within 2 seconds" in head
            writer.close()
        assert time.monotonic() - started < 8

        status, _ = await api.put("TEST/after", [url_value("https://a.org")])
        assert status == 201
        for n in range(4):
            assert (await api.get(f"TEST/slow-{n}"))[0] == 404  # nothing half-written


async def test_requests_beyond_the_limit_are_503(aiohttp_server, tmp_path):
    """Two writes wait on a store whose write lock another process holds; a third request
    finds no slot."""
    config = make_config(tmp_path, server={"max_concurrent_requests": 2})
    server = await aiohttp_server(create_app(config))
    async with aiohttp.ClientSession() as session:
        api = Api(_Prefixed(session, str(server.make_url(""))))
        outside = sqlite3.connect(config.storage.path, isolation_level=None)
        outside.execute("BEGIN IMMEDIATE")
        try:
            writes = [
                asyncio.create_task(api.put(f"TEST/w{n}", [url_value("https://a.org")]))
                for n in range(2)
            ]
            limit = server.app[keys.LIMIT]
            for _ in range(500):  # until both hold their slots, waiting for the lock (5 s)
                if limit.in_flight == 2:
                    break
                await asyncio.sleep(0.01)
            status, body = await api.get("TEST/anything")
            assert (status, body["responseCode"]) == (503, 3)
            assert api.last.headers["Retry-After"] == "1"
            status, body = await api._call("GET", "/api/v3/onezone/handle_services/x/public")
            assert status == 503 and body["error"]["id"] == "serviceUnavailable"  # its own shape
        finally:
            outside.execute("ROLLBACK")
            outside.close()
        assert [(await w)[0] for w in writes] == [201, 201]
        assert (await api.get("TEST/anything"))[0] == 404


async def test_a_write_without_credentials_is_refused_before_its_body(aiohttp_server, tmp_path):
    server = await aiohttp_server(create_app(make_config(tmp_path)))
    for method, path in (
        ("PUT", "/api/handles/TEST/x"),
        ("PUT", "/api/handles/TEST/?mintNewSuffix=true"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n[".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # no body awaited
        assert head.startswith(b"HTTP/1.1 401 "), head
        writer.close()


class _Prefixed:
    """A client session that prefixes paths with the server's URL (what ``Api`` expects)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base.rstrip("/")

    def request(self, method: str, path: str, **kwargs):
        return self.session.request(method, self.base + path, **kwargs)


@pytest.mark.slow
async def test_idle_and_half_sent_connections_are_closed_and_header_floods_refused(tmp_path):
    """Through ``serve`` itself, which is where ``idle_timeout`` is applied."""
    config = tmp_path / "limits.toml"
    config.write_text(
        "[server]\nidle_timeout = 1\nbody_timeout = 1\n"
        f'[storage]\npath = "{tmp_path / "h.sqlite3"}"\n[handle]\nprefixes = ["TEST"]\n'
        '[[admins]]\nid = "300:0.NA/TEST"\nsecret = "admin-secret"\n'
    )
    server = Server(["--config", str(config)], tmp_path)
    try:
        await server.ready()

        def closed_after(request: bytes) -> float:
            with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
                s.sendall(request)
                started = time.monotonic()
                while s.recv(65536):
                    pass
                return time.monotonic() - started

        assert closed_after(b"") < 5  # connected, sent nothing
        assert closed_after(b"GET /api/handles/TEST/x HTTP/1.1\r\nHost: x\r\n") < 5  # half-sent

        flood = "".join(f"X-Flood-{n}: {'y' * 8000}\r\n" for n in range(200))
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
            try:
                s.sendall(f"GET /api/handles/TEST/x HTTP/1.1\r\nHost: x\r\n{flood}\r\n".encode())
            except OSError:
                pass  # the server may close before it has read everything
            answer = s.recv(65536)
        assert answer == b"" or answer.split(b" ")[1] in (b"400", b"431")

        # A NUL inside a credential: aiohttp refuses it, and the log must not quote it.
        token = ADMIN_AUTH["Authorization"].removeprefix("Basic ")
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
            s.sendall(f"GET /healthz HTTP/1.1\r\nAuthorization: Basic {token}\0\r\n\r\n".encode())
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.0 400 ") and token.encode() not in answer

        # A request line over aiohttp's 8,190 bytes: answered in the API's shape, not quoted.
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
            s.sendall(f"GET /api/handles/TEST/{'q' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head, _, body = s.recv(65536).partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400" and b"application/json" in head
        assert json.loads(body)["responseCode"] == 4 and b"qqqq" not in body

        # Every API bounds its body: a sessions request that stops mid-body gets 408.
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
            s.sendall(
                b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            assert s.recv(65536).startswith(b"HTTP/1.1 408 ")

        # A client that hangs up mid-body: no 5xx, no traceback (the access log says 499).
        for head in (
            f"PUT /api/handles/TEST/gone HTTP/1.1\r\nAuthorization: Basic {token}\r\n",
            "POST /api/sessions HTTP/1.1\r\n",
        ):
            with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
                s.sendall(
                    f"{head}Host: x\r\nContent-Type: application/json\r\n"
                    "Content-Length: 100\r\n\r\n[".encode()
                )
                await asyncio.sleep(0.3)

        async with aiohttp.ClientSession() as session:  # still serving
            async with session.get(f"{server.base}/healthz") as resp:
                assert resp.status == 200
    finally:
        server.stop()
    log = server.log.read_text()
    assert '"PUT /api/handles/TEST/gone HTTP/1.1" 499 ' in log
    assert '"POST /api/sessions HTTP/1.1" 499 ' in log
    assert '" 5' not in log  # no 5xx answer in the access log
    assert "malformed HTTP request from 127.0.0.1 refused with 400 (BadHttpMessage)" in log
    assert token not in log and "Traceback" not in log


@pytest.mark.slow
async def test_a_client_that_hangs_up_during_a_listing_is_logged_499_not_an_error(tmp_path):
    """A listing is streamed: a client gone before its end made the next write fail, which
    was logged as an unhandled error with a traceback (and answered 500 to nobody). It is a
    499 in the access log, as a request body cut short is."""
    config = tmp_path / "gone.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "h.sqlite3"}"\n[handle]\nprefixes = ["TEST"]\n'
        '[[admins]]\nid = "300:0.NA/TEST"\nsecret = "admin-secret"\n'
    )
    server = Server(["--config", str(config)], tmp_path)
    try:
        await server.ready()
        operations = [
            {"op": "put", "handle": f"TEST/gone-{i}", "values": [url_value(f"https://e.org/{i}")]}
            for i in range(3000)
        ]
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{server.base}/api/batch", json={"operations": operations}, headers=ADMIN_AUTH
            ) as resp:
                assert resp.status == 200
        token = ADMIN_AUTH["Authorization"]
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
                s.sendall(
                    f"GET /api/handles?prefix=TEST HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: {token}\r\n\r\n".encode()
                )
                # Gone at once, with a reset: the listing's writes find no client.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as session:  # still serving, and whole
            async with session.get(
                f"{server.base}/api/handles?prefix=TEST", headers=ADMIN_AUTH
            ) as resp:
                assert resp.status == 200 and len((await resp.json())["handles"]) == 3000
    finally:
        server.stop()
    log = server.log.read_text()
    assert '"GET /api/handles?prefix=TEST HTTP/1.1" 499 ' in log
    assert "Traceback" not in log and " ERROR " not in log
    assert '" 5' not in log  # no 5xx answer in the access log


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("server", "max_concurrent_requests", 0),
        ("server", "idle_timeout", 0),
        ("server", "body_timeout", 100_000),
        ("handle", "max_values", 0),
        ("handle", "max_value_bytes", 10),
    ],
)
def test_limits_must_be_sane(table, key, value):
    with pytest.raises(ConfigError, match=rf"\[{table}\] {key}: must be"):
        parse_config({table: {key: value}}, source="limits.toml")


def _serve_config(tmp_path, **server) -> list[str]:
    path = tmp_path / "guard.toml"
    table = "".join(f"{key} = {value}\n" for key, value in server.items())
    path.write_text(
        f"[server]\n{table}"
        f'[storage]\npath = "{tmp_path / "h.sqlite3"}"\n[handle]\nprefixes = ["TEST"]\n'
    )
    return ["--config", str(path)]


async def _answers_at_once(server: Server) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(f"{server.base}/api/handles/TEST/none") as resp:
            assert resp.status == 404


@pytest.mark.slow
async def test_slow_headers_are_cut_at_header_timeout(tmp_path):
    server = Server(_serve_config(tmp_path, header_timeout=1, idle_timeout=60), tmp_path)
    try:
        await server.ready()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        request = b"GET /api/handles/TEST/x HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
        closed = None
        for byte in request:  # a byte every 0.2 s: never idle, never done
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed = time.monotonic() - started
                break
            if reader.at_eof() or (await _eof_within(reader, 0.2)):
                closed = time.monotonic() - started
                break
        writer.close()
        assert closed is not None and closed < 5, closed  # header_timeout, not idle_timeout
        await _answers_at_once(server)
        # A request whose headers come at once is not cut, however long it keeps the connection.
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.get(f"{server.base}/healthz") as resp:
                    assert resp.status == 200
                await asyncio.sleep(1.5)
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


async def _eof_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except TimeoutError:
        return False


@pytest.mark.slow
async def test_idle_connections_are_shed_at_max_connections(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    server = Server(_serve_config(tmp_path, max_connections=400, idle_timeout=60), tmp_path)
    opened: list[socket.socket] = []  # every socket this test opens, closed at the end
    try:
        await server.ready()
        for _ in range(1000):  # far more than the limit, each connected and silent
            opened.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        await asyncio.sleep(0.5)
        await _answers_at_once(server)  # still serving
        for s in opened:
            s.setblocking(False)
        shut = sum(1 for s in opened if _closed_by_peer(s))
        assert shut >= 600, shut  # at most max_connections are kept
        assert not _closed_by_peer(opened[-1])  # the newest are the ones kept
        for s in opened:
            s.close()
        opened.clear()
        await asyncio.sleep(0.5)
        # 300 bodies that never finish hold no request slot: anonymous reads go on. (They
        # are no idle connections either: at max_connections they are not shed, and a new
        # connection is refused until body_timeout ends theirs.)
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(
                b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
            opened.append(s)
        await _answers_at_once(server)
    finally:
        for s in opened:
            s.close()
        server.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "Traceback" not in server.log.read_text()


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_accept_failures_are_logged_once_a_minute(caplog):
    now = [100.0]
    handler = AcceptFailureLog(interval=60, clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        failure = {
            "message": "socket.accept() out of system resource",
            "exception": OSError(24, "Too many open files"),
        }
        for _ in range(500):
            handler(loop, failure)
            now[0] += 0.1  # 50 s in all
        now[0] += 20
        handler(loop, failure)
    finally:
        loop.close()
    lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(lines) == 2 and "Too many open files" in lines[0].getMessage()
    assert "(500 time(s)" in lines[1].getMessage() and lines[1].exc_info is None
