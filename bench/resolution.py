"""Resolution at the framework's limit: every workload of the server against a floor measured in
the same run, at a million handles.

1. Writes N handles (``BENCH/h0`` ...; a URL and a checksum each) as an export and loads them
   into a fresh SQLite store with ``handle-server import``, the path operators use; reports
   the rate.
2. Starts the **floor** (``bench/floor.py``): a bare aiohttp handler answering a prebuilt body
   the size of a real resolution answer, on the same event loop policy; measured with
   keep-alive (the ratios' base) and with one request a connection.
3. Starts the real server (``handle-server serve``, core 0, its access log on as by default)
   and drives each workload with wrk
   from core 1 for a fixed time: cached GET (a hot set of 10,000 handles, read once before),
   uncached GET (a second server with the cache off, random handles of all N), resolver 302
   (of the hot set, each asked once before, as wrk asks: without an Accept),
   PUT create (new handles, each committed before its answer), PUT update (``?index=2`` of
   random handles), the prefix listing at page 0 and at the last page, 304 revalidation;
   and, where ``../shared/cnri`` and Java are there, the CNRI HANDLE.NET 7.3 server's HTTP
   interface (on core 0 too) answering the same 302 for its seeded handle, one request a
   connection (all it does), against ours for one handle, so and with keep-alive.
4. Fills the cache (a read of as many distinct handles as it holds) and records the
   server's resident memory.
5. Writes ``results.md`` (workload, req/s, ratio to the floor, p50, p99) and ``results.json``
   with the machine (cores, CPU, Python, aiohttp) into ``--output`` (``--quick``:
   ``results-quick.*``).

    python bench/resolution.py            # 1,000,000 handles, 10 s a workload
    python bench/resolution.py --quick    # 10,000 handles, 3 s a workload
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    ADMIN_AUTH,
    Server,
    free_port,
    import_handles,
    machine,
    pinned,
    write_config,
    write_export,
    wrk,
)

HERE = Path(__file__).resolve().parent
CNRI = HERE.parent.parent / "shared" / "cnri"
HOT = 10_000
PAGE_SIZE = 100

_RANDOM = """
math.randomseed(os.time() + {salt})
request = function()
  return wrk.format("GET", "{path}" .. math.random(0, {n} - 1))
end
"""
_SEQUENTIAL = """
local n = -1
request = function()
  n = (n + 1) % {n}
  return wrk.format("GET", "/api/handles/BENCH/h" .. n)
end
"""
_CREATE = """
local n = 0
local headers = {{["Authorization"] = "{auth}", ["Content-Type"] = "application/json"}}
request = function()
  n = n + 1
  local body = '[{{"index":1,"type":"URL","data":"https://new.example.org/' .. n .. '"}}]'
  return wrk.format("PUT", "/api/handles/BENCH/{tag}-" .. n .. "?overwrite=false", headers, body)
end
"""
_CREATE_ADMINISTERED = """
local n = 0
local headers = {{["Authorization"] = "{auth}", ["Content-Type"] = "application/json"}}
local admin = '{{"index":100,"type":"HS_ADMIN","data":{{"format":"admin","value":'
  .. '{{"handle":"0.NA/BENCH","index":300,"permissions":"111111111111"}}}}}}'
request = function()
  n = n + 1
  local body = '[{{"index":1,"type":"URL","data":"https://new.example.org/' .. n .. '"}},'
    .. admin .. ']'
  return wrk.format("PUT", "/api/handles/BENCH/{tag}-" .. n .. "?overwrite=false", headers, body)
end
"""
_UPDATE = """
math.randomseed(os.time())
local headers = {{["Authorization"] = "{auth}", ["Content-Type"] = "application/json"}}
request = function()
  local i = math.random(0, {n} - 1)
  local body = '[{{"index":2,"type":"CHECKSUM","data":"sha256:updated-' .. i .. '"}}]'
  return wrk.format("PUT", "/api/handles/BENCH/h" .. i .. "?index=2", headers, body)
end
"""
_FIXED = """
local headers = {{["Authorization"] = "{auth}"}}
request = function()
  return wrk.format("GET", "{path}", headers)
end
"""
_REVALIDATE = """
math.randomseed(os.time())
local tags = {{{tags}}}
request = function()
  local i = math.random(1, #tags)
  return wrk.format("GET", "/api/handles/BENCH/h" .. (i - 1), {{["If-None-Match"] = tags[i]}})
end
"""


def script(work: Path, name: str, template: str, **values: Any) -> Path:
    path = work / f"{name}.lua"
    path.write_text(template.format(**values))
    return path


async def warm(url: str, n: int, connections: int = 32, *, resolver: bool = False) -> None:
    """Read ``/api/handles/BENCH/h0`` ... ``h{n-1}`` once each; with ``resolver``, ask the
    resolver for each (``/BENCH/h0`` ...) as wrk does, without an ``Accept``."""
    names = iter(range(n))
    path, status = ("/BENCH/h", 302) if resolver else ("/api/handles/BENCH/h", 200)
    async with aiohttp.ClientSession(skip_auto_headers=["Accept"]) as session:

        async def reader() -> None:
            for i in names:
                async with session.get(f"{url}{path}{i}", allow_redirects=False) as resp:
                    await resp.read()
                    assert resp.status == status, (i, resp.status)

        await asyncio.gather(*(reader() for _ in range(connections)))


def etags(url: str, n: int) -> list[str]:
    found = []
    for i in range(n):
        with urllib.request.urlopen(f"{url}/api/handles/BENCH/h{i}") as resp:
            found.append(resp.headers["ETag"])
    return found


def first_listing(url: str) -> float:
    """Milliseconds of one listing, asked alone."""
    request = urllib.request.Request(url, headers={"Authorization": ADMIN_AUTH})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as resp:
        resp.read()
    return round((time.perf_counter() - started) * 1000, 1)


def closed_loop(port: int, path: str, n: int, seconds: int) -> dict[str, Any]:
    """The latency of ``path<i>`` (random ``i`` below ``n``) from ``latency.py``'s closed-loop
    client on core 1, 4 connections: wrk's percentiles stop agreeing with its throughput
    above about 50,000 requests a second."""
    command = [*pinned(1), sys.executable, str(HERE / "latency.py"), "--port", str(port)]
    command += ["--path", path, "--handles", str(n), "--seconds", str(min(seconds, 5))]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def row(name: str, result: dict[str, Any], floor: float | None) -> dict[str, Any]:
    return {
        "workload": name,
        "rps": round(result["rps"], 1),
        "ratio_to_floor": round(result["rps"] / floor, 3) if floor else None,
        "p50_ms": round(result["p50_ms"], 2),
        "p99_ms": round(result["p99_ms"], 2),
        "requests": result["requests"],
        "errors": result["errors"],
    }


def reference_rows(
    work: Path,
    ours: str,
    seconds: int,
    connections: int,
    figures: dict[str, Any],
    rows: list[dict[str, Any]],
) -> None:
    """The same 302 from the CNRI HANDLE.NET 7.3 server's HTTP interface (``start_cnri.sh``:
    its seeded ``CNRI/test-1``, on core 0 like ours), which answers one request a connection,
    against ours for one handle, one request a connection and with keep-alive. Skipped, with
    a line saying so, where the reference or Java is missing."""
    if not (CNRI / "start_cnri.sh").is_file() or shutil.which("java") is None:
        print(f"the CNRI reference ({CNRI}) or Java is missing: no rows against it")
        return
    directory = work / "cnri"
    for attempt in (1, 2):  # (it starts in 2 s; a CI run once saw it hang past 300 s)
        port, http = free_port(), free_port()
        try:
            started = subprocess.run(
                [*pinned(0), "bash", str(CNRI / "start_cnri.sh"), str(directory), str(port),
                 str(http)],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            subprocess.run(
                ["bash", str(CNRI / "stop_cnri.sh"), str(directory)],
                capture_output=True, timeout=60,
            )  # fmt: skip
            print(f"the CNRI server did not start within 120 s (attempt {attempt}): {exc.stderr!r}")
            continue
        if started.returncode != 0:
            print(f"the CNRI server did not start: no rows against it\n{started.stderr}")
            return
        break
    else:
        print("the CNRI server did not start: no rows against it")
        return
    close = work / "close.lua"  # (written for the floor's row)
    try:
        theirs = wrk(
            f"http://127.0.0.1:{http}/CNRI/test-1",
            seconds=seconds, connections=connections, script=close,
        )  # fmt: skip
    finally:
        subprocess.run(["bash", str(CNRI / "stop_cnri.sh"), str(directory)], timeout=60)
    one = f"{ours}/BENCH/h0"
    ours_close = wrk(one, seconds=seconds, connections=connections, script=close)
    ours_kept = wrk(one, seconds=seconds, connections=connections)
    # wrk counts the reference's close after each answer as a read error: not an error here.
    theirs["errors"] = max(0, theirs["errors"] - theirs["requests"])
    floor = rows[0]["rps"]
    for name, measured in (
        ("CNRI 7.3 HTTP interface, 302 (one request a connection)", theirs),
        ("ours, 302 of one handle (one request a connection)", ours_close),
        ("ours, 302 of one handle (keep-alive)", ours_kept),
    ):
        rows.append(row(name, measured, floor))
    figures["vs_cnri"] = {
        "one_request_a_connection": round(ours_close["rps"] / theirs["rps"], 2),
        "keep_alive": round(ours_kept["rps"] / theirs["rps"], 2),
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, seconds, connections = args.handles, args.seconds, args.connections
    hot = min(HOT, n)
    db = work / "bench.sqlite3"
    figures: dict[str, Any] = {"handles": n, "seconds_per_workload": seconds}
    figures["machine"] = machine()
    rows: list[dict[str, Any]] = []

    export = write_export(work / "load.jsonl", n)
    port = free_port()
    # The access log on, as the server's default is (the floor has none).
    config = write_config(work / "cached.toml", db, port=port, log="access = true")
    started = time.perf_counter()
    figures["import_per_s"] = round(import_handles(config, export), 1)
    figures["import_s"] = round(time.perf_counter() - started, 1)
    export.unlink()
    print(f"imported {n:,} handles in {figures['import_s']} s ({figures['import_per_s']:,.0f}/s)")

    serve = ["-m", "handle_server", "serve", "--config"]
    with Server([*serve, str(config)], port, work / "cached.log", ready_path="/healthz") as srv:
        with urllib.request.urlopen(f"{srv.url}/api/handles/BENCH/h0") as resp:
            (work / "answer.json").write_bytes(resp.read())
        figures["answer_bytes"] = (work / "answer.json").stat().st_size

        floor_port = free_port()
        floor_cmd = [str(HERE / "floor.py"), "--port", str(floor_port)]
        floor_cmd += ["--body", str(work / "answer.json")]
        with Server(floor_cmd, floor_port, work / "floor.log", ready_path="/") as floor_srv:
            get_hot = script(work, "hot", _RANDOM, salt=0, path="/api/handles/BENCH/h", n=hot)
            floor = wrk(floor_srv.url, seconds=seconds, connections=connections, script=get_hot)
            close = script(work, "close", 'wrk.headers["Connection"] = "close"\n')
            floor_close = wrk(floor_srv.url, seconds=seconds, connections=connections, script=close)
        rows.append(row("floor (bare aiohttp, same body)", floor, None))
        base = floor["rps"]
        rows.append(row("floor, one request a connection", floor_close, base))
        print(f"floor: {base:,.0f} req/s")

        asyncio.run(warm(srv.url, hot))
        measured = wrk(srv.url, seconds=seconds, connections=connections, script=get_hot)
        rows.append(row("cached GET /api/handles/{h}", measured, base))
        figures["cached_latency"] = closed_loop(srv.port, "/api/handles/BENCH/h", hot, seconds)
        asyncio.run(warm(srv.url, hot, resolver=True))  # as the cached GETs were
        resolver = script(work, "resolver", _RANDOM, salt=1, path="/BENCH/h", n=hot)
        measured = wrk(srv.url, seconds=seconds, connections=connections, script=resolver)
        rows.append(row("resolver 302 GET /{h}", measured, base))
        reference_rows(work, srv.url, seconds, connections, figures, rows)
        tags = ",".join(f"'{t}'" for t in etags(srv.url, min(100, n)))
        revalidate = script(work, "revalidate", _REVALIDATE, tags=tags)
        measured = wrk(srv.url, seconds=seconds, connections=connections, script=revalidate)
        rows.append(row("304 revalidation (If-None-Match)", measured, base))

        create = script(work, "create", _CREATE, auth=ADMIN_AUTH, tag=f"new{int(time.time())}")
        measured = wrk(srv.url, seconds=seconds, connections=connections, script=create)
        rows.append(row("PUT create (new handle, durable)", measured, base))
        # As pyhandle and Onezone create: a URL and the handle's own HS_ADMIN.
        tag = f"adm{int(time.time())}"
        create = script(work, "create2", _CREATE_ADMINISTERED, auth=ADMIN_AUTH, tag=tag)
        measured = wrk(srv.url, seconds=seconds, connections=connections, script=create)
        rows.append(row("PUT create, URL + HS_ADMIN (durable)", measured, base))
        update = script(work, "update", _UPDATE, auth=ADMIN_AUTH, n=n)
        measured = wrk(srv.url, seconds=seconds, connections=connections, script=update)
        rows.append(row("PUT update (?index=2)", measured, base))

        # Each page at full load, and alone (one connection: the latency of one listing,
        # without 31 others queued before it). Asked once first, alone and timed: the first
        # deep page since the server started counts its way there (once: the server then
        # remembers where pages start, and moves that with its own writes).
        last = max(0, math.ceil(n / PAGE_SIZE) - 1)
        figures["list_first_ms"] = {}
        for label, page in (("page 0", 0), (f"last page ({last})", last)):
            path = f"/api/handles?prefix=BENCH&page={page}&pageSize={PAGE_SIZE}"
            figures["list_first_ms"][label] = first_listing(srv.url + path)
            listing = script(work, f"list{page}", _FIXED, auth=ADMIN_AUTH, path=path)
            for clients in (connections, 1):
                measured = wrk(srv.url, seconds=seconds, connections=clients, script=listing)
                name = f"list {label}, pageSize {PAGE_SIZE}, {clients} connection(s)"
                rows.append(row(name, measured, base))

        # The cache full: as many distinct handles read as it holds (or all of them).
        fill = min(n, args.cache_entries)
        sequential = script(work, "fill", _SEQUENTIAL, n=fill)
        cached_before = srv.rss_mib()
        filled = wrk(srv.url, seconds=args.fill_seconds, connections=connections, script=sequential)
        figures["rss_mib"] = round(srv.rss_mib(), 1)
        figures["rss_before_fill_mib"] = round(cached_before, 1)
        figures["cache_fill_reads"] = filled["requests"]
        figures["cache_fill_distinct"] = min(filled["requests"], fill)

    uncached_port = free_port()
    uncached = write_config(
        work / "uncached.toml", db, port=uncached_port, cache="max_ttl = 0", log="access = true"
    )
    with Server(
        [*serve, str(uncached)], uncached_port, work / "uncached.log", ready_path="/healthz"
    ) as srv:
        get_any = script(work, "any", _RANDOM, salt=2, path="/api/handles/BENCH/h", n=n)
        measured = wrk(srv.url, seconds=seconds, connections=connections, script=get_any)
        rows.insert(2, row("uncached GET (cache off, random of all)", measured, base))
    figures["rows"] = rows
    return figures


def markdown(figures: dict[str, Any]) -> str:
    m = figures["machine"]
    lines = [
        f"# Resolution benchmark: {figures['handles']:,} handles",
        "",
        f"{m['date']}; {m['cores']} cores ({m['cpu']}); Python {m['python']}, aiohttp "
        f"{m['aiohttp']}; {m['platform']}. Server on core 0, wrk on core 1, "
        f"{figures['seconds_per_workload']} s a workload, {figures['connections']} connections "
        "unless a row says otherwise; "
        f"answer body {figures['answer_bytes']} bytes.",
        "",
        "| workload | req/s | ratio to floor | p50 | p99 | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in figures["rows"]:
        ratio = f"{r['ratio_to_floor']:.2f}x" if r["ratio_to_floor"] is not None else "1.00x"
        lines.append(
            f"| {r['workload']} | {r['rps']:,.0f} | {ratio} | {r['p50_ms']:.2f} ms "
            f"| {r['p99_ms']:.2f} ms | {r['errors']} |"
        )
    lines += [
        "",
        f"- Import: {figures['handles']:,} handles in {figures['import_s']} s "
        f"({figures['import_per_s']:,.0f}/s, `handle-server import`).",
        f"- Server RSS with the cache full ({figures['cache_fill_distinct']:,} distinct handles "
        f"read): {figures['rss_mib']:.0f} MiB (before the fill: "
        f"{figures['rss_before_fill_mib']:.0f} MiB).",
    ]
    if "cached_latency" in figures:
        c = figures["cached_latency"]
        lines.append(
            f"- Cached GET latency from a closed-loop client (`latency.py`, {c['connections']} "
            f"connections, {c['rps']:,.0f} req/s): p50 {c['p50_ms']:.2f} ms, p90 "
            f"{c['p90_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms, p99.9 {c['p999_ms']:.2f} ms, max "
            f"{c['max_ms']:.2f} ms (wrk's percentiles above about 50,000 req/s are its own)."
        )
    if "list_first_ms" in figures:
        firsts = ", ".join(f"{k} {v:,.1f} ms" for k, v in figures["list_first_ms"].items())
        lines.append(
            f"- The first listing of each page, alone, before its rows were measured: {firsts} "
            "(the first deep page since the server started counts its way there, once)."
        )
    if "vs_cnri" in figures:
        vs = figures["vs_cnri"]
        lines.append(
            "- Ours against the CNRI 7.3 HTTP interface's 302: "
            f"{vs['one_request_a_connection']:.2f}x one request a connection, "
            f"{vs['keep_alive']:.2f}x with keep-alive (its closes are not counted as errors). "
            "Native resolution against it: `bench/native.py`."
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 handles, 3 s a workload")
    parser.add_argument("--handles", type=int)
    parser.add_argument("--seconds", type=int)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--cache-entries", type=int, default=100_000, help="[cache] max_entries")
    parser.add_argument("--output", type=Path, default=HERE)
    args = parser.parse_args()
    args.handles = args.handles or (10_000 if args.quick else 1_000_000)
    args.seconds = args.seconds or (3 if args.quick else 10)
    args.fill_seconds = 5 if args.quick else 60
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(args, Path(tmp))
    figures["connections"] = args.connections
    stem = "results-quick" if args.quick else "results"
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{stem}.json").write_text(json.dumps(figures, indent=2) + "\n")
    text = markdown(figures)
    (args.output / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
