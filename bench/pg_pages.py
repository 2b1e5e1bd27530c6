"""A deep listing page on PostgreSQL: read by OFFSET (a store not listening for other nodes'
writes) against read from a remembered page start (a listening store, as the server runs).

    python bench/pg_pages.py [--handles 100000] [--dsn postgresql://...]

Imports the handles into a schema of its own (dropped afterwards), then reads the page of 100
at 90 % of the prefix 50 times each way, in this process, and prints the mean.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import Handle, HandleValue
from storage.postgres import PostgresStore


class _Live:
    def __init__(self) -> None:
        self.live = asyncio.Event()

    def changed(self, key: str | None) -> None:
        pass

    def watching(self, live: bool) -> None:
        if live:
            self.live.set()


async def run(dsn: str, handles: int) -> None:
    schema = "bench_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    separator = "&" if "?" in dsn else "?"
    store = await PostgresStore.open(f"{dsn}{separator}options=-csearch_path%3D{schema}")
    try:
        for start in range(0, handles, 10_000):
            batch = range(start, min(handles, start + 10_000))
            url = (HandleValue(1, "URL", b"https://example.org/"),)
            await store.import_records([Handle(f"TEST/{i:08d}", url) for i in batch])
        offset = handles * 9 // 10

        async def page() -> list[str]:
            return [
                n async for b in store.iter_handles("TEST", offset=offset, limit=100) for n in b
            ]

        for label in ("by OFFSET (not listening)", "from a page anchor (listening)"):
            if label.startswith("from"):
                live = _Live()
                await store.watch(live)
                await asyncio.wait_for(live.live.wait(), 10)
            await page()
            started = time.perf_counter()
            for _ in range(50):
                assert len(await page()) == 100
            mean = (time.perf_counter() - started) / 50 * 1000
            print(f"page at {offset:,} of {handles:,}, {label}: {mean:.2f} ms")
    finally:
        await store.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--handles", type=int, default=100_000)
    parser.add_argument("--dsn", default="postgresql://postgres:postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    asyncio.run(run(args.dsn, args.handles))


if __name__ == "__main__":
    main()
