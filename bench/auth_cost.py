"""What authorization costs a write and a private read, in one run: the same requests made as a
configured admin (no HS_ADMIN lookup: the baseline), as an identity an HS_ADMIN value names
directly, and as one it reaches through two nested HS_VLIST groups; and, on a second server with
throttling off (``failure_limit = 0``), as the configured admin again, which shows what looking
up the failure counts in the store costs each authenticated request.

Real HTTP against the app on a local port (aiohttp's test server), a fresh SQLite file, one
connection, requests one after another, so the figures are latencies, not throughput.

    python bench/auth_cost.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from aiohttp.test_utils import TestClient, TestServer

from handle_server.app import create_app
from handle_server.config import parse_config

ADMIN = ("300:0.NA/BENCH", "bench-admin-secret")
USER = ("300:BENCH/USERS", "bench-user-secret")
ALL = "111111111111"


def basic(identity: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def admin_value(handle: str, index: int, at: int = 100) -> dict:
    value = {"handle": handle, "index": index, "permissions": ALL}
    return {"index": at, "type": "HS_ADMIN", "data": {"format": "admin", "value": value}}


def vlist(at: int, handle: str, index: int) -> dict:
    refs = [{"handle": handle, "index": index}]
    return {"index": at, "type": "HS_VLIST", "data": {"format": "vlist", "value": refs}}


async def timed(client: TestClient, n: int, method: str, path: str, headers, body=None):
    samples = []
    for i in range(n):
        started = time.perf_counter()
        kwargs = {"headers": headers}
        if body is not None:
            kwargs["json"] = body(i)
            kwargs["params"] = {"index": str(body(i)[0]["index"])}
        else:
            kwargs["params"] = {"publicOnly": "false"}
        async with client.request(method, path, **kwargs) as resp:
            await resp.read()
            assert resp.status in (200, 201), (resp.status, await resp.text())
        samples.append(time.perf_counter() - started)
    return statistics.mean(samples) * 1e3, statistics.quantiles(samples, n=100)[98] * 1e3


async def measure(n: int, tmp: str, auth: dict, only_admin: bool) -> list[tuple]:
    config = parse_config(
        {
            "storage": {"path": str(Path(tmp) / f"bench-{len(auth)}.sqlite3")},
            "handle": {"prefixes": ["BENCH"]},
            "admins": [{"id": ADMIN[0], "secret": ADMIN[1]}],
            "log": {"access": False},
            "auth": {"key_file": str(Path(tmp) / "secret.key"), **auth},
        }
    )
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    rows = []
    try:
        root = basic(*ADMIN)
        seckey = {"index": 300, "type": "HS_SECKEY", "data": USER[1], "permissions": "1100"}
        await client.put("/api/handles/BENCH/USERS", json=[seckey], headers=root)
        groups = [vlist(200, "BENCH/USERS", 300), vlist(201, "BENCH/GROUPS", 200)]
        await client.put("/api/handles/BENCH/GROUPS", json=groups, headers=root)
        private = {"index": 2, "type": "NOTE", "data": "private", "permissions": "1100"}
        url = {"index": 1, "type": "URL", "data": "https://example.org/"}
        cases = {
            "configured admin (baseline)": ("BENCH/as-admin", ("BENCH/USERS", 999), root),
            "HS_ADMIN names the identity": ("BENCH/direct", ("BENCH/USERS", 300), None),
            "through 2 nested groups": ("BENCH/nested", ("BENCH/GROUPS", 201), None),
        }
        if only_admin:
            cases = {"configured admin, no throttle": cases["configured admin (baseline)"]}
        user = basic(*USER)
        for name, (handle, grant, headers) in cases.items():
            record = [url, private, admin_value(*grant)]
            await client.put(f"/api/handles/{handle}", json=record, headers=root)
            who = headers or user
            await timed(client, 20, "GET", f"/api/handles/{handle}", who)  # warm up

            def body(i: int) -> list[dict]:
                return [{"index": 1000 + i % 500, "type": "X", "data": str(i)}]  # max_values

            write = await timed(client, n, "PUT", f"/api/handles/{handle}", who, body)
            read = await timed(client, n, "GET", f"/api/handles/{handle}", who)
            rows.append((name, write, read))
    finally:
        await client.close()
    return rows


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = await measure(n, tmp, {}, only_admin=False)
        rows += await measure(n, tmp, {"failure_limit": 0}, only_admin=True)
    base_write, base_read = rows[0][1][0], rows[0][2][0]
    print(f"{n} sequential requests each, one connection, mean / p99 in ms")
    print(f"{'caller':32} {'PUT ?index= (add)':>26} {'GET publicOnly=false':>26}")
    for name, (w, w99), (r, r99) in rows:
        print(
            f"{name:32} {w:7.3f} / {w99:6.3f} ({w / base_write:4.2f}x)"
            f" {r:7.3f} / {r99:6.3f} ({r / base_read:4.2f}x)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    asyncio.run(main(parser.parse_args().requests))
