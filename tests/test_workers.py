"""Several processes on one store: servers on one SQLite file keep their caches true to each
other's writes at once (the change log), and ``serve --workers N`` runs, shares the port,
restarts a worker that dies and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import storage.sqlite.store
from handle_server import keys
from handle_server.app import create_app

from .helpers import ADMIN_AUTH, Api, Server, handle_header, make_config, sign, url_value


async def _url(api: Api, handle: str):
    status, body = await api.get(handle)
    return body["values"][0]["data"]["value"] if status == 200 else status


async def test_servers_on_one_sqlite_file_see_each_others_writes_at_once(aiohttp_client, tmp_path):
    config = make_config(tmp_path)
    a_app, b_app = create_app(config), create_app(config)  # each opens the file itself
    a = Api(await aiohttp_client(a_app))
    b = Api(await aiohttp_client(b_app))
    names = [f"TEST/x{n}" for n in range(20)]
    for name in names:
        assert (await a.put(name, [url_value("https://old.org")]))[0] == 201
        assert await _url(b, name) == "https://old.org"  # cached on B for a day
    b_cache = b_app[keys.SERVICE].cache
    hits = b_cache.stats.hits
    assert [await _url(b, n) for n in names] == ["https://old.org"] * 20
    assert b_cache.stats.hits == hits + 20

    for n, name in enumerate(names):
        if n % 4:
            assert (await a.put(name, [url_value(f"https://new{n}.org")]))[0] == 200
        else:
            assert (await a.delete(name))[0] == 200
    # No waiting: the first read after the writes were answered shows them.
    assert [await _url(b, n) for n in names] == [
        404 if n % 4 == 0 else f"https://new{n}.org" for n in range(20)
    ]
    # And B's own writes reach A's cache the same way.
    assert await _url(a, "TEST/x1") == "https://new1.org"
    assert (await b.put("TEST/x1", [url_value("https://from-b.org")]))[0] == 200
    assert await _url(a, "TEST/x1") == "https://from-b.org"


async def test_a_server_that_fell_behind_the_pruned_change_log_forgets_everything(
    aiohttp_client, tmp_path, monkeypatch
):
    monkeypatch.setattr(storage.sqlite.store, "_CHANGES_KEPT", 3)
    monkeypatch.setattr(storage.sqlite.store, "_PRUNE_EVERY", 2)
    config = make_config(tmp_path)
    a = Api(await aiohttp_client(create_app(config)))
    b = Api(await aiohttp_client(create_app(config)))
    assert (await a.put("TEST/early", [url_value("https://old.org")]))[0] == 201
    assert await _url(b, "TEST/early") == "https://old.org"
    assert (await a.put("TEST/early", [url_value("https://new.org")]))[0] == 200
    for n in range(10):  # the log row of TEST/early's change is pruned meanwhile
        assert (await a.put(f"TEST/other{n}", [url_value("https://o.org")]))[0] == 201
    assert await _url(b, "TEST/early") == "https://new.org"


# -- serve --workers ---------------------------------------------------------------------------


def _workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(c)
        for c in children
        if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()  # not the resource tracker
    ]


async def _until(condition, what: str, within: float = 20.0):
    deadline = time.monotonic() + within
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return result


@pytest.mark.slow
async def test_serve_with_two_workers(tmp_path, storage_table):
    config = tmp_path / "server.toml"
    lines = [f'{k} = "{v}"' for k, v in storage_table.items()]
    config.write_text(
        "[storage]\n" + "\n".join(lines) + '\n[handle]\nprefixes = ["TEST"]\n'
        '[[admins]]\nid = "300:0.NA/TEST"\nsecret = "admin-secret"\n'
    )
    server = Server(["--config", str(config), "--workers", "2"], tmp_path)
    try:
        await server.ready()

        def two_workers(without: int | None = None) -> list[int] | None:
            found = _workers_of(server.proc.pid)
            return found if len(found) == 2 and without not in found else None

        workers = await _until(two_workers, "two workers")
        # Every request on a connection of its own: the kernel spreads them over the workers.
        url = f"{server.base}/api/handles/TEST/w"
        value = [{"index": 1, "type": "URL", "data": "https://one.org"}]
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        ) as session:
            reads = 0

            async def read() -> str:
                nonlocal reads
                reads += 1
                async with session.get(url) as resp:
                    return (await resp.json())["values"][0]["data"]["value"]

            async with session.put(url, json=value, headers=ADMIN_AUTH) as resp:
                assert resp.status == 201
            # Both workers listening and answering before the writes (the first that listens
            # answers the readiness check; the other may still be starting).
            deadline = time.monotonic() + 20
            while _readers(server.log.read_text()) != {"1", "2"}:
                assert time.monotonic() < deadline, "the second worker never answered"
                await read()
            for round_ in ("https://two.org", "https://three.org"):
                before = [await read() for _ in range(30)]  # now cached in both workers
                assert len(set(before)) == 1
                value[0]["data"] = round_
                async with session.put(url, json=value, headers=ADMIN_AUTH) as resp:
                    assert resp.status == 200
                if "path" in storage_table:  # one file: seen at once
                    assert {await read() for _ in range(30)} == {round_}
                else:  # PostgreSQL: as soon as the notification is in (well under a second)
                    deadline = time.monotonic() + 5
                    while {await read() for _ in range(30)} != {round_}:
                        assert time.monotonic() < deadline

            # A session opened and proved on one worker is known on the other.
            sessions = f"{server.base}/api/sessions"
            async with session.post(sessions, json={"id": "300:0.NA/TEST"}) as resp:
                opened = await resp.json()
            cnonce, signature = sign("admin-secret", opened["keyDerivation"], opened["nonce"])
            proof = handle_header(
                opened["sessionId"], id="300%3A0.NA%2FTEST", type="HS_SECKEY",
                alg="PBKDF2-HMAC-SHA256", cnonce=cnonce, signature=signature,
            )  # fmt: skip
            async with session.put(sessions + "/this", headers=proof) as resp:
                assert resp.status == 200
                proved = await resp.json()  # a new session id: the one opened is closed
            only_session = handle_header(proved["sessionId"])
            for _ in range(20):
                async with session.get(sessions + "/this", headers=only_session) as resp:
                    assert resp.status == 200 and (await resp.json())["authenticated"]
            async with session.delete(sessions + "/this", headers=only_session) as resp:
                assert resp.status == 204
            for _ in range(20):
                async with session.get(sessions + "/this", headers=only_session) as resp:
                    assert resp.status == 403

            # /metrics, from whichever worker answers, counts the reads of both.
            # (A worker adds its counts to the shared figures within a second of an answer.)
            deadline = time.monotonic() + 5
            while (answered := await _handle_gets(session, server.base)) < reads:
                assert time.monotonic() < deadline, (answered, reads)
                await asyncio.sleep(0.1)

        # A worker that dies is started again; the others serve meanwhile.
        os.kill(workers[0], signal.SIGKILL)
        replaced = await _until(lambda: two_workers(workers[0]), "the dead one replaced")
        assert workers[1] in replaced
        await server.ready()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        ) as session:
            # What the dead worker counted still counts.
            for _ in range(10):
                assert await _handle_gets(session, server.base) >= answered
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        server.stop()
    log = server.log.read_text()
    assert "worker 1 died (exit code -9); starting it again" in log
    # Both workers answered reads and looked at the session (the access log names the worker).
    assert _readers(log) == {"1", "2"}, log
    assert _readers(log, "/api/sessions/this") == {"1", "2"}, log


async def _handle_gets(session: aiohttp.ClientSession, base: str) -> float:
    """The GETs of /api/handles/{handle} answered 200, as /metrics reports them."""
    async with session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    wanted = {"route": "/api/handles/{handle}", "method": "GET", "status": "200"}
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "handle_server_requests_total" and s.labels == wanted
    )


def _readers(log: str, path: str = "/api/handles/TEST/w") -> set[str]:
    """The workers whose access log shows a GET of ``path``."""
    return set(
        re.findall(rf"\[worker (\d)\] handle_server.access: .* \"GET {re.escape(path)} ", log)
    )
