"""What one client may hold of the server: requests at once, time to send a body, idle and
half-sent connections, header floods. Each limit is in the config with a safe default."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import orjson
import pytest

from handle_server.app import create_app
from handle_server.config import ConfigError, parse_config

from .conftest import ADMIN_AUTH, Api, make_config, url_value
from .test_server_process import Server

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


async def test_requests_beyond_the_limit_are_503_and_slow_bodies_408(
    aiohttp_server, tmp_path, storage_table
):
    server_table = {"max_concurrent_requests": 2, "body_timeout": 2}
    config = make_config(tmp_path, storage=storage_table, server=server_table)
    server = await aiohttp_server(create_app(config))
    started = time.monotonic()
    slow = [await half_sent_put(server.port, f"TEST/slow-{n}") for n in range(2)]
    await asyncio.sleep(0.3)  # both are in their handlers, waiting for their bodies

    async with aiohttp.ClientSession() as session:
        api = Api(_Prefixed(session, str(server.make_url(""))))
        status, body = await api.get("TEST/anything")
        assert (status, body["responseCode"]) == (503, 3)
        assert api.last.headers["Retry-After"] == "1"
        status, body = await api._call("GET", "/api/v3/onezone/handle_services/x/public")
        assert status == 503 and body["error"]["id"] == "serviceUnavailable"  # its own shape

        for reader, writer in slow:  # the server gives up on each at body_timeout
            head = await asyncio.wait_for(reader.readuntil(b"seconds"), 10)
            assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
            assert b'"responseCode":4' in head and b"not received within 2 seconds" in head
            writer.close()
        assert time.monotonic() - started < 8

        status, _ = await api.put("TEST/after", [url_value("https://a.org")])
        assert status == 201
        for n in range(2):
            assert (await api.get(f"TEST/slow-{n}"))[0] == 404  # nothing half-written


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
        f'[server]\nidle_timeout = 1\n[storage]\npath = "{tmp_path / "h.sqlite3"}"\n'
        '[handle]\nprefixes = ["TEST"]\n'
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
            assert s.recv(65536).startswith(b"HTTP/1.0 400 ")

        async with aiohttp.ClientSession() as session:  # still serving
            async with session.get(f"{server.base}/healthz") as resp:
                assert resp.status == 200
    finally:
        server.stop()
    log = server.log.read_text()
    assert "malformed HTTP request from 127.0.0.1 refused with 400 (BadHttpMessage)" in log
    assert token not in log and "Traceback" not in log


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
