"""Batch write throughput (``POST /api/batch``) on SQLite and PostgreSQL, against single PUTs
in the same run.

For each backend a fresh store and the real server (``serve``, pinned to core 0; this client
on core 1), then, each on handles of its own:
- single ``PUT /api/handles/{h}`` creates, 64 at a time over keep-alive connections (the
  baseline: what a migration does without batches);
- one JSON batch of 10,000 creates, ``"atomic": true`` (one transaction);
- one streamed NDJSON batch of 200,000 creates (the issue's figure), the answer read as it
  comes, its peak RSS beside it.
Every request is answered with a durable commit. The request bodies are made before the
clock starts. Writes ``bench/batch.json`` and prints the rows for ``bench/README.md``.

    python bench/batch.py [--stream 200000] [--singles 20000]
                          [--dsn postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ADMIN_AUTH, Server, free_port, machine, write_config

ROOT = Path(__file__).resolve().parent.parent
AUTH = ADMIN_AUTH


def record(name: str) -> dict[str, Any]:
    return {
        "index": 1,
        "type": "URL",
        "data": {"format": "string", "value": f"https://repository.example.org/{name}"},
    }


async def singles(url: str, n: int, concurrency: int = 64) -> float:
    bodies = [orjson.dumps([record(f"s{i}")]) for i in range(n)]
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(range(n))

        async def worker() -> None:
            for i in queue:
                async with session.put(
                    f"{url}/api/handles/BENCH/s{i}", data=bodies[i], headers=headers
                ) as resp:
                    if resp.status != 201:
                        raise RuntimeError(f"PUT answered {resp.status}: {await resp.text()}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - start)


async def json_batch(url: str, n: int) -> float:
    operations = [
        {"op": "put", "handle": f"BENCH/j{i}", "values": [record(f"j{i}")]} for i in range(n)
    ]
    body = orjson.dumps({"operations": operations, "atomic": True})
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        async with session.post(f"{url}/api/batch", data=body, headers=headers) as resp:
            answer = await resp.json()
        elapsed = time.perf_counter() - start
    if resp.status != 200 or {r["status"] for r in answer["results"]} != {201}:
        raise RuntimeError(f"JSON batch answered {resp.status}")
    return n / elapsed


async def streamed(url: str, n: int, server: Server) -> tuple[float, float]:
    lines = [
        orjson.dumps({"op": "put", "handle": f"BENCH/n{i}", "values": [record(f"n{i}")]}) + b"\n"
        for i in range(n)
    ]
    chunks = [b"".join(lines[i : i + 500]) for i in range(0, n, 500)]
    del lines

    async def body():
        for chunk in chunks:
            yield chunk

    peak = [server.rss_mib()]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], server.rss_mib())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    headers = {"Authorization": AUTH, "Content-Type": "application/x-ndjson"}
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        async with session.post(f"{url}/api/batch", data=body(), headers=headers) as resp:
            created = 0
            async for line in resp.content:
                if orjson.loads(line)["status"] != 201:
                    raise RuntimeError(f"streamed batch answered {line!r}")
                created += 1
        elapsed = time.perf_counter() - start
    done.set()
    watcher.join()
    if created != n:
        raise RuntimeError(f"streamed batch answered {created} of {n}")
    return n / elapsed, peak[0]


def run_backend(name: str, store: str, work: Path, args: argparse.Namespace) -> dict:
    port = free_port()
    config = write_config(work / f"{name}.toml", store, port=port)
    command = ["-m", "handle_server", "serve", "--config", str(config)]
    with Server(command, port, work / f"{name}.log", ready_path="/healthz") as server:
        single = asyncio.run(singles(server.url, args.singles))
        atomic = asyncio.run(json_batch(server.url, 10_000))
        stream, peak = asyncio.run(streamed(server.url, args.stream, server))
    row = {
        "backend": name,
        "single_puts_per_s": round(single),
        "json_atomic_10k_per_s": round(atomic),
        "stream_per_s": round(stream),
        "stream_handles": args.stream,
        "stream_ratio_to_single": round(stream / single, 1),
        "server_peak_rss_mib": round(peak),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stream", type=int, default=200_000)
    parser.add_argument("--singles", type=int, default=20_000)
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "HANDLE_SERVER_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})  # this client: core 1, the server: core 0
    results: dict[str, Any] = {"machine": machine(), "rows": []}
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        work = Path(tmp)
        results["rows"].append(run_backend("sqlite", str(work / "h.sqlite3"), work, args))
        schema = "bench_" + uuid.uuid4().hex[:12]

        async def schema_sql(sql: str) -> None:
            conn = await asyncpg.connect(args.dsn)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(schema_sql(f"CREATE SCHEMA {schema}"))
        try:
            separator = "&" if "?" in args.dsn else "?"
            dsn = f"{args.dsn}{separator}search_path={schema}"
            results["rows"].append(run_backend("postgresql", dsn, work, args))
        finally:
            asyncio.run(schema_sql(f"DROP SCHEMA {schema} CASCADE"))
    (ROOT / "bench" / "batch.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print("| backend | single PUTs (64 at a time) | JSON batch, atomic, 10,000 | "
          "NDJSON stream, 200,000 | stream / single | server peak RSS |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in results["rows"]:
        print(
            f"| {r['backend']} | {r['single_puts_per_s']:,}/s | {r['json_atomic_10k_per_s']:,}/s"
            f" | {r['stream_per_s']:,}/s | {r['stream_ratio_to_single']}x"
            f" | {r['server_peak_rss_mib']} MiB |"
        )


if __name__ == "__main__":
    main()
