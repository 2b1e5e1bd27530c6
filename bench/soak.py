"""A bounded soak: mixed reads and writes at a fixed rate against the real server, on loopback.

Loads N handles (``handle-server import``), starts ``serve`` on 127.0.0.1, then sends requests
on a fixed schedule (open loop: a slow answer does not slow the schedule, and each latency is
counted from the moment its request was due) for ``--minutes``, and stops by itself. The mix:
70% REST GET of random handles, 10% resolver redirects, 10% value updates (``PUT ?index=2``),
10% new handles. The server's resident memory is sampled every 10 s. At the end every handle
it created is read back.

Prints errors (goal 0), p50/p99 latency, and RSS at the start and end (goal flat), and writes
them as JSON with ``--json``.

    python bench/soak.py [--minutes 10] [--rate 200] [--handles 10000] [--json soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

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

AUTH = {"Authorization": ADMIN_AUTH, "Content-Type": "application/json"}
MAX_IN_FLIGHT = 1000


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def soak(server: Server, args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    total = int(args.rate * args.minutes * 60)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    created: list[str] = []
    rss: list[tuple[float, float]] = []
    in_flight = 0

    async def one(session: aiohttp.ClientSession, due: float, n: int) -> None:
        nonlocal in_flight
        pick = rng.random()
        name = f"BENCH/h{rng.randrange(args.handles)}"
        try:
            if pick < 0.7:
                request = session.get(f"{server.url}/api/handles/{name}")
                ok = (200,)
            elif pick < 0.8:
                request = session.get(f"{server.url}/{name}", allow_redirects=False)
                ok = (302,)
            elif pick < 0.9:
                body = [{"index": 2, "type": "CHECKSUM", "data": f"sha256:soak-{n}"}]
                request = session.put(
                    f"{server.url}/api/handles/{name}?index=2", json=body, headers=AUTH
                )
                ok = (200, 201)
            else:
                name = f"BENCH/soak-{n}"
                body = [{"index": 1, "type": "URL", "data": f"https://soak.example.org/{n}"}]
                request = session.put(
                    f"{server.url}/api/handles/{name}?overwrite=false", json=body, headers=AUTH
                )
                ok = (201,)
            async with request as resp:
                await resp.read()
                if resp.status not in ok:
                    errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
                elif pick >= 0.9:
                    created.append(name)
        except (TimeoutError, aiohttp.ClientError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            latencies.append(time.perf_counter() - due)
            in_flight -= 1

    async def sample_rss(stop: asyncio.Event, started: float) -> None:
        while not stop.is_set():
            rss.append((time.perf_counter() - started, server.rss_mib()))
            try:
                await asyncio.wait_for(stop.wait(), 10)
            except TimeoutError:
                pass

    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(stop, started))
        tasks: set[asyncio.Task] = set()
        late = 0
        for n in range(total):
            due = started + n / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= MAX_IN_FLIGHT:  # the server is that far behind: count, do not pile
                late += 1
                continue
            in_flight += 1
            task = asyncio.create_task(one(session, due, n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if n and n % (args.rate * 60) == 0:
                done = sorted(latencies[-args.rate * 60 :])
                print(
                    f"  {n / args.rate / 60:4.0f} min: {n:,} sent, p99 of the last minute "
                    f"{percentile(done, 0.99) * 1000:.1f} ms, errors {sum(errors.values())}, "
                    f"RSS {rss[-1][1]:.0f} MiB",
                    flush=True,
                )
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        stop.set()
        await sampler
        rss.append((elapsed, server.rss_mib()))
        missing = 0
        for name in created:  # every create answered 201 is there
            async with session.get(f"{server.url}/api/handles/{name}") as resp:
                missing += resp.status != 200
    ordered = sorted(latencies)
    return {
        "requests": total,
        "seconds": round(elapsed, 1),
        "achieved_rate": round(len(latencies) / elapsed, 1),
        "errors": sum(errors.values()) + late,
        "errors_by_kind": {**errors, **({"late": late} if late else {})},
        "p50_ms": round(percentile(ordered, 0.5) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "created": len(created),
        "created_missing": missing,
        "rss_start_mib": round(rss[1][1] if len(rss) > 1 else rss[0][1], 1),
        "rss_end_mib": round(rss[-1][1], 1),
        "rss_max_mib": round(max(r for _, r in rss), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=200, help="requests per second")
    parser.add_argument("--handles", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.minutes <= 0 or args.minutes > 120 or args.rate <= 0 or args.rate > 20_000:
        sys.exit("--minutes must be in (0, 120] and --rate in (0, 20000]")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        config = write_config(work / "soak.toml", work / "soak.sqlite3", port=port)
        rate = import_handles(config, write_export(work / "load.jsonl", args.handles))
        print(f"loaded {args.handles:,} handles ({rate:,.0f}/s, handle-server import)")
        print(f"soak: {args.rate} req/s for {args.minutes:g} min on 127.0.0.1:{port}")
        command = ["-m", "handle_server", "serve", "--config", str(config)]
        with Server(command, port, work / "server.log", ready_path="/healthz") as server:
            result = asyncio.run(soak(server, args))
    result["machine"] = machine()
    result["settings"] = {"rate": args.rate, "minutes": args.minutes, "handles": args.handles}
    for key, value in result.items():
        if key not in ("machine", "settings"):
            print(f"{key:>16}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if result["errors"] or result["created_missing"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
