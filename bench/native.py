"""Native resolution throughput: our server against the CNRI HANDLE.NET 7.3 server, in one run.

    python bench/native.py                    # 10 s a workload
    python bench/native.py --seconds 3        # shorter

The servers run on loopback pinned to core 0, one after the other measured, with their access
logs on (the defaults of both); ours twice, on the default event loop (asyncio) and with
``[server] event_loop = "uvloop"``; the load comes from CNRI's own client (``HdlTool
bench`` in ``../shared/cnri``: one JVM, a fresh ResolutionRequest each time, a new TCP
connection per request as CNRI's client does, after a 1 s warm-up) pinned to core 1. Each
resolves a handle with the same three values (URL, EMAIL, HS_ADMIN) as CNRI's seeded
``CNRI/test-1``. Our ``[native] udp_rate`` is raised for the run (one client address sends
everything). Writes ``bench/native.json`` and prints the rows for ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Server, free_port, machine, pinned

ROOT = Path(__file__).resolve().parent.parent
CNRI = ROOT.parent / "shared" / "cnri"
RATE = re.compile(r"ok=(\d+) bad=(\d+) exceptions=(\d+) rate=([\d.]+) req/s")
WORKLOADS = [("udp", 1), ("tcp", 1), ("udp", 4), ("tcp", 4)]


def hdltool_bench(port: int, proto: str, handle: str, seconds: float, threads: int) -> dict:
    out = subprocess.run(
        [*pinned(1), "bash", str(CNRI / "hdltool.sh"), "bench", "127.0.0.1", str(port), proto,
         handle, str(seconds), str(threads)],
        capture_output=True, text=True, timeout=seconds + 120,
    )  # fmt: skip
    match = RATE.search(out.stdout)
    if match is None:
        raise RuntimeError(f"HdlTool bench said:\n{out.stdout}\n{out.stderr}")
    ok, bad, exceptions, rate = match.groups()
    return {"rate": float(rate), "ok": int(ok), "bad": int(bad), "exceptions": int(exceptions)}


def start_cnri(work: Path) -> tuple[int, Path]:
    port, http = free_port(), free_port()
    directory = work / "cnri"
    out = subprocess.run(
        [*pinned(0), "bash", str(CNRI / "start_cnri.sh"), str(directory), str(port), str(http)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"start_cnri.sh failed:\n{out.stderr}")
    return port, directory


def start_ours(work: Path, loop: str) -> tuple[Server, int]:
    http, native = free_port(), free_port()
    config = work / f"ours-{loop}.toml"
    config.write_text(
        f'[server]\nport = {http}\nevent_loop = "{loop}"\n'
        f'[storage]\npath = "{work / f"h-{loop}.sqlite3"}"\n'
        '[handle]\nprefixes = ["TEST"]\n[[admins]]\nid = "300:0.NA/TEST"\nsecret = "s"\n'
        f'[auth]\nkey_file = "{work / "secret.key"}"\n'
        f'[native]\nenabled = true\nport = {native}\nkey_file = "{work / "native.pem"}"\n'
        # One client address sends every request here: the per-address UDP limit (the
        # defence against amplification, 1,000 a second by default) would measure itself.
        "udp_rate = 1000000\n"
    )
    server = Server(
        ["-m", "handle_server", "serve", "--config", str(config)],
        http,
        work / f"ours-{loop}.log",
        ready_path="/api/handles/0.NA/TEST",
    )
    admin = {"handle": "0.NA/TEST", "index": 300, "permissions": "111111111111"}
    values = [
        {"index": 1, "type": "URL", "data": "http://example.org/test-1"},
        {"index": 2, "type": "EMAIL", "data": "test-1@example.org"},
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": admin}},
    ]
    request = urllib.request.Request(
        f"{server.url}/api/handles/TEST/test-1",
        data=json.dumps(values).encode(),
        method="PUT",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(b"300%3A0.NA%2FTEST:s").decode(),
        },
    )
    urllib.request.urlopen(request, timeout=10).read()
    return server, native


def run(seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "seconds": seconds, "rows": []}
    with tempfile.TemporaryDirectory(prefix="native-bench-") as tmp:
        work = Path(tmp)
        cnri_port, cnri_dir = start_cnri(work)
        try:
            default, default_port = start_ours(work, "asyncio")
            fast, fast_port = start_ours(work, "uvloop")
            with default, fast:
                for proto, threads in WORKLOADS:
                    theirs = hdltool_bench(cnri_port, proto, "CNRI/test-1", seconds, threads)
                    ours = hdltool_bench(default_port, proto, "TEST/test-1", seconds, threads)
                    ours_uv = hdltool_bench(fast_port, proto, "TEST/test-1", seconds, threads)
                    row = {
                        "transport": proto,
                        "client_threads": threads,
                        "ours": ours,
                        "ours_uvloop": ours_uv,
                        "cnri": theirs,
                        "ratio": round(ours["rate"] / theirs["rate"], 2),
                        "ratio_uvloop": round(ours_uv["rate"] / theirs["rate"], 2),
                    }
                    results["rows"].append(row)
                    print(json.dumps(row), flush=True)
        finally:
            subprocess.run(["bash", str(CNRI / "stop_cnri.sh"), str(cnri_dir)], timeout=60)
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        "| transport | client threads | CNRI 7.3 | ours (asyncio, the default) | ours / CNRI "
        "| ours (uvloop) | ours / CNRI | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sides = ("ours", "ours_uvloop", "cnri")
    for row in results["rows"]:
        errors = sum(row[side][k] for side in sides for k in ("bad", "exceptions"))
        lines.append(
            f"| {row['transport'].upper()} | {row['client_threads']} | {row['cnri']['rate']:,.0f}"
            f" | {row['ours']['rate']:,.0f} | {row['ratio']:.2f}x"
            f" | {row['ours_uvloop']['rate']:,.0f} | {row['ratio_uvloop']:.2f}x | {errors} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds a workload")
    args = parser.parse_args()
    if not (CNRI / "hdltool.sh").is_file():
        sys.exit(f"{CNRI} is missing: the CNRI reference is needed")
    results = run(args.seconds)
    (ROOT / "bench" / "native.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
