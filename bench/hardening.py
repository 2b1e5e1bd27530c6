"""What an attacker without credentials can cost the server (issue 19's figures), measured on
loopback against the real server process:

- the time of a refusal: a wrong secret for an identity that exists, against an identity that
  does not (they must not tell apart);
- a burst of 100 concurrent wrong secrets for one identity, throttled at 10: how many were
  checked, and the server's CPU seconds, for a secret kept encrypted and for one an earlier
  version stored hashed (PBKDF2, 600,000 iterations);
- reverse lookup at its bound: 10 conditions matching every one of 10,000 handles, and the
  150 conditions that used to run for seconds (refused now);
- the latency of a read while 2,000 idle connections are open.

    python bench/hardening.py [--json FILE]

Every load is bounded and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    ADMIN_AUTH,
    Server,
    free_port,
    import_handles,
    machine,
    write_config,
    write_export,
)

LEGACY = "300:BENCH/legacy"
KEPT = "300:BENCH/kept"


def basic(identity: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def identities_export(path: Path) -> Path:
    """Two identities: one whose secret an earlier version stored hashed, imported as it was
    (the import keeps data byte for byte), and one written through the API later."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", b"the-legacy-secret", salt, 600_000)
    legacy = "$".join(
        [
            "pbkdf2-sha256",
            "600000",
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )
    value = {
        "index": 300, "type": "HS_SECKEY", "data": {"format": "string", "value": legacy},
        "ttlType": 0, "ttl": 86400, "timestamp": 1764547200, "permissions": "1100",
        "references": [],
    }  # fmt: skip
    path.write_text(json.dumps({"handle": "BENCH/legacy", "values": [value]}) + "\n")
    return path


async def refusal_times(url: str, n: int = 200) -> dict[str, float]:
    out = {}
    async with aiohttp.ClientSession() as session:
        for label, identity in (("existing", KEPT), ("unknown", "300:BENCH/nobody")):
            times = []
            for _ in range(n):
                started = time.perf_counter()
                async with session.get(
                    f"{url}/api/handles/BENCH/x", headers=basic(identity, "wrong")
                ) as r:
                    assert r.status == 401, r.status
                times.append((time.perf_counter() - started) * 1000)
            out[f"{label}_median_ms"] = round(statistics.median(times), 3)
            out[f"{label}_p90_ms"] = round(statistics.quantiles(times, n=10)[-1], 3)
    return out


async def burst(server: Server, identity: str, n: int = 100) -> dict[str, float]:
    before = cpu_seconds(server.proc.pid)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:

        async def one() -> int:
            async with session.get(
                f"{server.url}/api/handles/BENCH/x", headers=basic(identity, "guess")
            ) as r:
                return r.status

        statuses = await asyncio.gather(*(one() for _ in range(n)))
    return {
        "checked_401": statuses.count(401),
        "refused_429": statuses.count(429),
        "server_cpu_s": round(cpu_seconds(server.proc.pid) - before, 3),
        "wall_s": round(time.perf_counter() - started, 3),
    }


async def searches(url: str) -> dict[str, float]:
    ten = ["*exa*", "*xam*", "*amp*", "*mpl*", "*ple*", "*le.*", "*e.o*", "*.or*", "*org*", "*rg/*"]
    out = {}
    async with aiohttp.ClientSession() as session:
        for label, query in (
            ("ten_conditions", "&".join(f"URL={p}" for p in ten) + "&limit=10000"),
            ("150_conditions", "&".join(f"URL=*exa{n}*" for n in range(150))),
            ("150_repeats", "&".join(["URL=*example*"] * 150) + "&limit=10000"),
        ):
            started = time.perf_counter()
            async with session.get(f"{url}/hrls/handles/?{query}") as r:
                body = await r.json()
            out[f"{label}_ms"] = round((time.perf_counter() - started) * 1000, 1)
            out[f"{label}_status"] = r.status
            out[f"{label}_found"] = len(body) if isinstance(body, list) else 0
    return out


async def reads_with_idle_connections(url: str, port: int, idle: int = 2000) -> dict[str, float]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, idle + 512)), hard))
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
    try:
        await asyncio.sleep(0.5)
        times = []
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                started = time.perf_counter()
                async with session.get(f"{url}/api/handles/BENCH/h1") as r:
                    assert r.status == 200
                times.append((time.perf_counter() - started) * 1000)
        return {
            "idle_connections": idle,
            "read_median_ms": round(statistics.median(times), 3),
            "read_max_ms": round(max(times), 3),
        }
    finally:
        for s in sockets:
            s.close()


async def measure() -> dict:
    results: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="hardening-") as folder:
        work = Path(folder)
        port = free_port()
        config = write_config(
            work / "c.toml", work / "h.sqlite3", port=port, auth="failure_limit = 10"
        )
        import_handles(config, write_export(work / "handles.jsonl", 10_000))
        import_handles(config, identities_export(work / "legacy.jsonl"))
        with Server(
            ["-m", "handle_server", "serve", "--config", str(config)],
            port,
            work / "server.log",
            ready_path="/healthz",
        ) as server:
            async with aiohttp.ClientSession() as session:
                body = [{"index": 300, "type": "HS_SECKEY", "data": "the-kept-secret"}]
                headers = {"Authorization": ADMIN_AUTH}
                async with session.put(
                    f"{server.url}/api/handles/BENCH/kept", json=body, headers=headers
                ) as r:
                    assert r.status == 201, await r.text()
            results["burst_kept_encrypted"] = await burst(server, KEPT)
            results["burst_legacy_pbkdf2"] = await burst(server, LEGACY)
            results["search"] = await searches(server.url)
            results["idle"] = await reads_with_idle_connections(server.url, port)
        # Refusal times with the throttle off, so that every attempt is checked.
        port = free_port()
        config = write_config(work / "open.toml", work / "h.sqlite3", port=port)
        with Server(
            ["-m", "handle_server", "serve", "--config", str(config)],
            port,
            work / "open.log",
            ready_path="/healthz",
        ) as server:
            results["refusal"] = await refusal_times(server.url)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    figures = json.dumps(asyncio.run(measure()), indent=2)
    print(figures)
    if args.json is not None:
        args.json.write_text(figures + "\n")


if __name__ == "__main__":
    main()
