"""Cached vs uncached resolution throughput, measured with wrk in one run.

Loads N handles into a fresh SQLite store, then serves them twice from the real server
process: with the cache (default settings) and with the cache off (``max_ttl = 0``). wrk
(Debian package ``wrk``) requests random handles for a fixed time from another core. Prints
requests/s, latency, the ratio, and the server's own hit ratio (from its shutdown log line).

    python bench/cache_ratio.py [--handles 10000] [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from storage import Handle, HandleValue
from storage.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import free_port, pinned

LUA = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/handles/BENCH/h" .. math.random(0, {n} - 1))
end
"""


async def load(path: Path, n: int) -> float:
    store = await SQLiteStore.open(path)
    started = time.perf_counter()
    try:
        for i in range(n):
            name = f"BENCH/h{i}"
            record = Handle(
                name,
                (
                    HandleValue(1, "URL", f"https://example.org/object/{i}".encode(), timestamp=1),
                    HandleValue(
                        2, "CHECKSUM", b"md5:0123456789abcdef0123456789abcdef", timestamp=1
                    ),
                ),
            )
            await store.update(name, lambda before, r=record: r)
    finally:
        await store.close()
    return n / (time.perf_counter() - started)


def measure(workdir: Path, db: Path, n: int, args: argparse.Namespace, max_ttl: int) -> dict:
    port = free_port()
    config = workdir / f"bench-{max_ttl}.toml"
    config.write_text(
        f'[server]\nport = {port}\n[storage]\npath = "{db}"\n[handle]\nprefixes = ["BENCH"]\n'
        f"[cache]\nmax_ttl = {max_ttl}\n[log]\naccess = false\n"
    )
    log_path = workdir / f"server-{max_ttl}.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [*pinned(0), sys.executable, "-m", "handle_server", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"{url}/api/handles/BENCH/h0", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
            script = workdir / "random.lua"
            script.write_text(LUA.replace("{n}", str(n)))
            out = subprocess.run(
                [
                    *pinned(1),
                    "wrk",
                    "-t1",
                    f"-c{args.connections}",
                    f"-d{args.seconds}s",
                    "--latency",
                    "-s",
                    str(script),
                    url,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            server.terminate()  # it logs its cache statistics as it stops
            server.wait(20)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+(\S+)", out).group(1)
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "non2xx": int(errors.group(1)) if errors else 0,
        "log": log_path.read_text(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--handles", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        db = workdir / "bench.sqlite3"
        rate = asyncio.run(load(db, args.handles))
        print(f"loaded {args.handles} handles ({rate:,.0f}/s through SQLiteStore.update)")
        cached = measure(workdir, db, args.handles, args, max_ttl=86400)
        uncached = measure(workdir, db, args.handles, args, max_ttl=0)
    print(f"{'workload':<14}{'req/s':>10}{'p50':>10}{'p99':>10}{'non-2xx':>9}")
    for name, r in (("cached GET", cached), ("uncached GET", uncached)):
        print(f"{name:<14}{r['rps']:>10,.0f}{r['p50']:>10}{r['p99']:>10}{r['non2xx']:>9}")
    print(f"cached / uncached = {cached['rps'] / uncached['rps']:.2f}x")
    stats = re.search(r"cache: .*", cached["log"])
    print(f"server with cache: {stats.group(0) if stats else 'no statistics logged'}")


if __name__ == "__main__":
    main()
