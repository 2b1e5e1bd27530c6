"""GET and PUT throughput on SQLite and PostgreSQL, with one and two workers, measured with
wrk in one run; ratios against SQLite with one worker.

Loads N handles into a fresh SQLite file and a fresh PostgreSQL schema (``import_records``),
then for each backend and worker count starts the real server (``serve --workers``) and runs
wrk twice: GET of random handles (through the cache, as a resolver serves), then PUT of one
value of a random handle (``?index=1``, HTTP Basic as a configured admin: a store write and
a cache invalidation per request).

    python bench/backends.py [--handles 10000] [--seconds 10] [--connections 32]
                             [--dsn postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import asyncpg

from storage import Handle, HandleValue, open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import free_port

SECRET = "bench-secret"
GET_LUA = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/handles/BENCH/h" .. math.random(0, {n} - 1))
end
"""
PUT_LUA = """
math.randomseed(os.time() + 1)
counter = 0
request = function()
  counter = counter + 1
  local body = '[{"index":1,"type":"URL","data":{"format":"string","value":'
    .. '"https://example.org/new/' .. counter .. '"}}]'
  return wrk.format("PUT", "/api/handles/BENCH/h" .. math.random(0, {n} - 1) .. "?index=1",
    {["Content-Type"] = "application/json", ["Authorization"] = "{auth}"}, body)
end
"""


async def load(backend: str, n: int, *, path: str = "", dsn: str = "") -> None:
    store = await open_store(backend, path=path, dsn=dsn)
    try:
        for start in range(0, n, 1000):
            await store.import_records(
                [
                    Handle(
                        f"BENCH/h{i}",
                        (
                            HandleValue(1, "URL", f"https://example.org/o/{i}".encode()),
                            HandleValue(2, "CHECKSUM", b"md5:0123456789abcdef0123456789abcdef"),
                        ),
                    )
                    for i in range(start, min(n, start + 1000))
                ]
            )
    finally:
        await store.close()


def wrk(url: str, script: Path, args: argparse.Namespace) -> dict:
    command = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency"]
    out = subprocess.run(
        [*command, "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": re.search(r"50%\s+(\S+)", out).group(1),
        "p99": re.search(r"99%\s+(\S+)", out).group(1),
        "non2xx": int(errors.group(1)) if errors else 0,
    }


def measure(workdir: Path, storage: str, workers: int, args: argparse.Namespace) -> dict:
    port = free_port()
    config = workdir / f"bench-{port}.toml"
    config.write_text(
        f'[server]\nport = {port}\n{storage}\n[handle]\nprefixes = ["BENCH"]\n'
        f'[[admins]]\nid = "300:0.NA/BENCH"\nsecret = "{SECRET}"\n[log]\naccess = false\n'
    )
    command = [sys.executable, "-m", "handle_server", "serve", "--config", str(config)]
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [*command, "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"{url}/api/handles/BENCH/h0", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(1)  # every worker up, not only the first
            token = base64.b64encode(f"300%3A0.NA%2FBENCH:{SECRET}".encode()).decode()
            get_script, put_script = workdir / "get.lua", workdir / "put.lua"
            get_script.write_text(GET_LUA.replace("{n}", str(args.handles)))
            put_script.write_text(
                PUT_LUA.replace("{n}", str(args.handles)).replace("{auth}", f"Basic {token}")
            )
            return {"GET": wrk(url, get_script, args), "PUT": wrk(url, put_script, args)}
        finally:
            server.terminate()
            server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--handles", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--dsn",
        default=os.environ.get("HANDLE_SERVER_TEST_PG_DSN", "postgresql://postgres@127.0.0.1/test"),
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    schema = "bench_" + uuid.uuid4().hex[:12]

    async def pg(statement: str) -> None:
        conn = await asyncpg.connect(args.dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(pg(f"CREATE SCHEMA {schema}"))
    dsn = f"{args.dsn}{'&' if '?' in args.dsn else '?'}search_path={schema}"
    results: dict[tuple[str, int], dict] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            db = workdir / "bench.sqlite3"
            asyncio.run(load("sqlite", args.handles, path=str(db)))
            asyncio.run(load("postgresql", args.handles, dsn=dsn))
            tables = {
                "sqlite": f'[storage]\npath = "{db}"',
                "postgresql": f'[storage]\nbackend = "postgresql"\ndsn = "{dsn}"',
            }
            for backend, table in tables.items():
                for workers in (1, 2):
                    results[backend, workers] = measure(workdir, table, workers, args)
                    print(f"measured {backend} with {workers} worker(s)", file=sys.stderr)
    finally:
        asyncio.run(pg(f"DROP SCHEMA {schema} CASCADE"))
    print(
        f"{args.handles} handles, {args.connections} connections, {args.seconds} s each, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'backend':<12}{'workers':>8}{'':>5}{'req/s':>9}{'p50':>10}{'p99':>10}{'non-2xx':>9}"
        f"{'ratio':>8}"
    )
    for op in ("GET", "PUT"):
        base = results["sqlite", 1][op]["rps"]
        for (backend, workers), r in results.items():
            m = r[op]
            print(
                f"{backend:<12}{workers:>8}{op:>5}{m['rps']:>9,.0f}{m['p50']:>10}{m['p99']:>10}"
                f"{m['non2xx']:>9}{m['rps'] / base:>7.2f}x"
            )


if __name__ == "__main__":
    main()
