#!/usr/bin/env python3
"""Latency percentiles from a closed-loop client: each connection sends a request, reads the
whole answer, and sends the next; every request's time is kept.

wrk's percentiles stop agreeing with its own throughput above about 50,000 requests a second
on these machines (at 4 connections and 58,000 req/s it reported a mean of 0.73 ms, where
Little's law allows 4 / 58,000 s = 0.07 ms), so ``resolution.py`` asks this client for the
latency of the cached GET as well. It prints one JSON object: rps, mean, p50, p90, p99,
p99.9 and max in milliseconds.

    python bench/latency.py --port 8000 --path /api/handles/BENCH/h --handles 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

try:
    import uvloop
except ImportError:  # (the server's default loop; plain asyncio measures too, slower)
    uvloop = None


async def _connection(
    host: str, port: int, path: str, handles: int, until: float, times: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    clock, pick = time.perf_counter, random.randrange
    try:
        while clock() < until:
            request = f"GET {path}{pick(handles)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            started = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.find(b"\r\nContent-Length: ")
            if at >= 0:
                length = int(head[at + 18 : head.index(b"\r\n", at + 2)])
                await reader.readexactly(length)
            times.append(clock() - started)
    finally:
        writer.close()


async def measure(
    host: str, port: int, path: str, handles: int, connections: int, seconds: float
) -> dict[str, float]:
    times: list[float] = []
    begun = time.perf_counter()
    until = begun + seconds
    await asyncio.gather(
        *(_connection(host, port, path, handles, until, times) for _ in range(connections))
    )
    elapsed = time.perf_counter() - begun
    times.sort()

    def at(fraction: float) -> float:
        return round(times[min(len(times) - 1, int(len(times) * fraction))] * 1000, 3)

    return {
        "connections": connections,
        "requests": len(times),
        "rps": round(len(times) / elapsed, 1),
        "mean_ms": round(sum(times) / len(times) * 1000, 3),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": round(times[-1] * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="each request asks for PATH<n>")
    parser.add_argument("--handles", type=int, required=True, help="n is drawn below this")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.install()
    figures = asyncio.run(
        measure(args.host, args.port, args.path, args.handles, args.connections, args.seconds)
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
