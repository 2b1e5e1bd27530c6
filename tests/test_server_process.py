"""The real server as a subprocess: start-up contract, and durability under ``kill -9``."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import trustme

from .helpers import (
    ADMIN_AUTH,
    BACKENDS,
    SECRET,
    Server,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(
        f'[storage]\npath = "{tmp_path / "data" / "handles.sqlite3"}"\n'
        '[handle]\nprefixes = ["TEST"]\n'
        f'[[admins]]\nid = "300:0.NA/TEST"\nsecret = "{SECRET}"\n'
    )
    return path


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


async def test_serve_with_a_config_file(tmp_path, config_file, servers):
    server = Server(["--config", str(config_file), "--host", "127.0.0.1"], tmp_path)
    servers.append(server)
    await server.ready()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.base}/api/handles/0.NA/TEST") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["handle"] == "0.NA/TEST"
        async with session.put(
            f"{server.base}/api/handles/TEST/p",
            json=[{"index": 1, "type": "URL", "data": "https://p.org"}],
            headers=ADMIN_AUTH,
        ) as resp:
            assert resp.status == 201
    assert (tmp_path / "data" / "handles.sqlite3").exists()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_serve_on_either_event_loop(tmp_path, config_file, servers, loop):
    if loop == "asyncio":  # uvloop is the default: the standard library's loop is asked for
        config_file.write_text(config_file.read_text() + '[server]\nevent_loop = "asyncio"\n')
    server = Server(["--config", str(config_file)], tmp_path)
    servers.append(server)
    await server.ready()
    async with aiohttp.ClientSession() as session:
        async with session.put(
            f"{server.base}/api/handles/TEST/uv",
            json=[{"index": 1, "type": "URL", "data": "https://uv.org"}],
            headers=ADMIN_AUTH,
        ) as resp:
            assert resp.status == 201
        async with session.get(f"{server.base}/TEST/uv", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "https://uv.org"
    # uvloop is imported only when it runs the server: its extension is mapped into the process.
    maps = await asyncio.to_thread(Path(f"/proc/{server.proc.pid}/maps").read_text)
    assert ("uvloop" in maps) == (loop == "uvloop")


async def test_serve_without_a_config_uses_the_working_directory(tmp_path, servers):
    server = Server([], tmp_path)
    servers.append(server)
    await server.ready()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.base}/api/handles/TEST/x") as resp:
            assert resp.status == 400 and (await resp.json())["responseCode"] == 301
    assert (tmp_path / "var" / "handles.sqlite3").exists()
    assert "no prefixes homed" in server.log.read_text()


@pytest.fixture(params=BACKENDS)
def any_backend_config(request: pytest.FixtureRequest, tmp_path: Path, config_file: Path) -> Path:
    """The server's config file, once on SQLite and once on a fresh PostgreSQL schema."""
    if request.param == "postgresql":
        dsn = request.getfixturevalue("pg_dsn")
        text = config_file.read_text().split("[handle]", 1)[1]
        config_file.write_text(f'[storage]\nbackend = "postgresql"\ndsn = "{dsn}"\n[handle]{text}')
    return config_file


async def test_every_answered_write_survives_kill_9(tmp_path, any_backend_config, servers):
    config_file = any_backend_config
    server = Server(["--config", str(config_file)], tmp_path)
    servers.append(server)
    await server.ready()
    answered: dict[str, int] = {}  # handle -> how many of its writes were answered with success
    stop = asyncio.Event()

    async def writer(session: aiohttp.ClientSession, worker: int) -> None:
        for n in range(1000):
            if stop.is_set():
                return
            name = f"TEST/w{worker}-{n}"
            try:
                async with session.put(
                    f"{server.base}/api/handles/{name}",
                    json=[
                        {"index": 1, "type": "URL", "data": f"https://{worker}.org/{n}"},
                        {"index": 2, "type": "N", "data": str(n)},
                    ],
                    headers=ADMIN_AUTH,
                ) as resp:
                    if resp.status != 201:
                        return
                answered[name] = 1
                async with session.put(
                    f"{server.base}/api/handles/{name}?index=3",
                    json=[{"index": 3, "type": "UPDATED", "data": "yes"}],
                    headers=ADMIN_AUTH,
                ) as resp:
                    if resp.status != 201:
                        return
                answered[name] = 2
            except (TimeoutError, aiohttp.ClientError):
                return

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks = [asyncio.create_task(writer(session, w)) for w in range(40)]
        while sum(answered.values()) < 1200:
            await asyncio.sleep(0.01)
            assert not all(t.done() for t in tasks), "writers ended before the kill"
        server.kill()  # mid-stream: 40 writes in flight
        stop.set()
        await asyncio.gather(*tasks)

    restarted = Server(["--config", str(config_file)], tmp_path)
    servers.append(restarted)
    await restarted.ready()
    async with aiohttp.ClientSession() as session:
        for name, writes in answered.items():
            async with session.get(f"{restarted.base}/api/handles/{name}") as resp:
                assert resp.status == 200, name
                values = {v["index"]: v["data"]["value"] for v in (await resp.json())["values"]}
            worker, n = name.removeprefix("TEST/w").split("-")
            assert values[1] == f"https://{worker}.org/{n}" and values[2] == n  # never half
            if writes == 2:
                assert values[3] == "yes"
        async with session.get(
            f"{restarted.base}/api/handles", params={"prefix": "TEST"}, headers=ADMIN_AUTH
        ) as resp:
            listing = await resp.json()
    # Writes in flight at the kill may or may not have landed; nothing answered is missing,
    # and the count kept beside the records agrees with them.
    assert set(answered) <= set(listing["handles"])
    assert int(listing["totalCount"]) == len(listing["handles"])


async def test_serve_https_with_tls_cert_and_key(tmp_path, config_file, servers):
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    config_file.write_text(
        config_file.read_text()
        + f'[server]\ntls_cert = "{tmp_path / "cert.pem"}"\ntls_key = "{tmp_path / "key.pem"}"\n'
    )
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    server = Server(["--config", str(config_file), "--host", "0.0.0.0"], tmp_path, tls=client_tls)
    servers.append(server)
    await server.ready()
    async with aiohttp.ClientSession() as session:
        async with session.put(
            f"{server.base}/api/handles/TEST/tls",
            json=[{"index": 1, "type": "URL", "data": "https://tls.org"}],
            headers=ADMIN_AUTH,
            ssl=client_tls,
        ) as resp:
            assert resp.status == 201
        with pytest.raises(aiohttp.ClientError):  # no plain HTTP on the TLS port
            async with session.get(f"http://127.0.0.1:{server.port}/api/handles/TEST/tls"):
                pass
    server.stop()
    log = server.log.read_text()
    assert f"serving on https://0.0.0.0:{server.port}" in log
    assert "plain HTTP" not in log


async def test_plain_http_on_a_public_address_warns(tmp_path, config_file, servers):
    server = Server(["--config", str(config_file), "--host", "0.0.0.0"], tmp_path)
    servers.append(server)
    await server.ready()
    server.stop()
    assert "serving plain HTTP on 0.0.0.0" in server.log.read_text()
    loopback = Server(["--config", str(config_file), "--host", "127.0.0.1"], tmp_path)
    servers.append(loopback)
    await loopback.ready()
    loopback.stop()
    assert "plain HTTP" not in loopback.log.read_text()


def test_unusable_tls_files_stop_start_up(tmp_path, config_file):
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    config_file.write_text(
        config_file.read_text()
        + f'[server]\ntls_cert = "{tmp_path / "cert.pem"}"\ntls_key = "{tmp_path / "key.pem"}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "handle_server", "serve", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "[server] tls_cert/tls_key: cannot load" in done.stderr
