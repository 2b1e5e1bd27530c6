"""Native resolution throughput: our server against the CNRI HANDLE.NET 7.3 server, in one run.

    python bench/native.py                    # 10 s a workload
    python bench/native.py --seconds 3        # shorter
    python bench/native.py --rounds 5         # steadier medians

The servers run on loopback pinned to core 0, one after the other measured, with their access
logs on (the defaults of both); ours twice, on the default event loop (uvloop) and with
``[server] event_loop = "asyncio"``; beside them the floor (``native_floor.py``: a Python
server on uvloop that answers every request with our server's answer bytes, doing nothing
else), which says what any Python server can do here. The load comes from CNRI's own
client (``HdlTool bench`` in ``../shared/cnri``: one JVM, a fresh ResolutionRequest each
time, a new TCP connection per request as CNRI's client does, after a 1 s warm-up) pinned
to core 1. Each
resolves a handle with the same three values (URL, EMAIL, HS_ADMIN) as CNRI's seeded
``CNRI/test-1``. This machine's figures move by up to 40 % between runs of a few seconds, so
each workload is measured ``--rounds`` times (3), every side once a round in an order that
turns each round; a row gives each side's median rate and the median of the rounds' ratios
(each from one round's measures, a few seconds apart). Our ``[native] udp_rate`` is raised
for the run (one client address sends everything). Writes ``bench/native.json`` and prints
the rows for ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Server, cpu_seconds, free_port, machine, pinned

ROOT = Path(__file__).resolve().parent.parent
CNRI = ROOT.parent / "shared" / "cnri"
RATE = re.compile(r"ok=(\d+) bad=(\d+) exceptions=(\d+) rate=([\d.]+) req/s")
WORKLOADS = [("udp", 1), ("tcp", 1), ("udp", 4), ("tcp", 4)]
#: Seconds ``HdlTool bench`` resolves before it counts.
WARM_UP = 1


def hdltool_bench(
    port: int, proto: str, handle: str, seconds: float, threads: int, pid: int | None = None
) -> dict:
    """One measure: ``HdlTool bench``'s counts and rate; with ``pid`` (the server's process)
    also the server's CPU time an answer, in microseconds. The client is the bottleneck of
    every workload here (the server's core is not saturated), so the rate says how fast the
    pair answers one client; the CPU an answer says what each answer costs the server's
    core, that is how many it could answer. It counts the warm-up's answers at the measured
    rate (the warm-up's CPU is in the process's time)."""
    before = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run(
        [*pinned(1), "bash", str(CNRI / "hdltool.sh"), "bench", "127.0.0.1", str(port), proto,
         handle, str(seconds), str(threads)],
        capture_output=True, text=True, timeout=seconds + 120,
    )  # fmt: skip
    match = RATE.search(out.stdout)
    if match is None:
        raise RuntimeError(f"HdlTool bench said:\n{out.stdout}\n{out.stderr}")
    ok, bad, exceptions, rate = match.groups()
    measure = {"rate": float(rate), "ok": int(ok), "bad": int(bad), "exceptions": int(exceptions)}
    if pid is not None and measure["rate"]:
        answers = measure["rate"] * (seconds + WARM_UP)
        measure["cpu_us"] = round((cpu_seconds(pid) - before) / answers * 1e6, 1)
    return measure


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


def resolution_answer(port: int) -> bytes:
    """Our server's answer, over UDP, to a public-only resolution of ``TEST/test-1``."""
    handle = b"TEST/test-1"
    body = struct.pack(">I", len(handle)) + handle + bytes(8)  # no index or type filter
    flags = 0x01000000  # public only, as CNRI's client asks
    message = struct.pack(">IIIHBBII", 1, 0, flags, 0, 0, 0, 0, len(body)) + body + bytes(4)
    envelope = struct.pack(">BBHIIII", 2, 10, 0, 0, 7, 0, len(message))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(envelope + message, ("127.0.0.1", port))
        answer = sock.recv(4096)
    if int.from_bytes(answer[24:28], "big") != 1:  # the response code: success
        raise RuntimeError(f"our server did not resolve TEST/test-1: {answer!r}")
    return answer


class Floor:
    """``native_floor.py`` answering ``answer`` on a port of its own, pinned to core 0."""

    def __init__(self, work: Path, answer: bytes) -> None:
        self.port = free_port()
        (work / "answer.bin").write_bytes(answer)
        self.proc = subprocess.Popen(
            [*pinned(0), sys.executable, str(ROOT / "bench" / "native_floor.py"),
             "--port", str(self.port), "--answer", str(work / "answer.bin")],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if self.proc.stdout is None or self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise RuntimeError("native_floor.py did not start")

    def __enter__(self) -> Floor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(30)


SIDES = ("cnri", "floor", "ours", "ours_asyncio")


def run(seconds: float, rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": machine(), "seconds": seconds, "rounds": rounds, "rows": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="native-bench-") as tmp:
        work = Path(tmp)
        cnri_port, cnri_dir = start_cnri(work)
        cnri_pid = int((cnri_dir / "server.pid").read_text())
        try:
            fast, fast_port = start_ours(work, "uvloop")
            standard, standard_port = start_ours(work, "asyncio")
            with fast, standard, Floor(work, resolution_answer(fast_port)) as floor:
                targets = {
                    "cnri": (cnri_port, "CNRI/test-1", cnri_pid),
                    "floor": (floor.port, "TEST/test-1", floor.proc.pid),
                    "ours": (fast_port, "TEST/test-1", fast.proc.pid),
                    "ours_asyncio": (standard_port, "TEST/test-1", standard.proc.pid),
                }
                for proto, threads in WORKLOADS:
                    measured: dict[str, list[dict]] = {side: [] for side in SIDES}
                    for turn in range(rounds):
                        for side in SIDES[turn % 4 :] + SIDES[: turn % 4]:
                            port, handle, pid = targets[side]
                            measured[side].append(
                                hdltool_bench(port, proto, handle, seconds, threads, pid)
                            )
                    row = summary(proto, threads, measured)
                    results["rows"].append(row)
                    print(json.dumps(row), flush=True)
        finally:
            subprocess.run(["bash", str(CNRI / "stop_cnri.sh"), str(cnri_dir)], timeout=60)
    return results


def summary(proto: str, threads: int, measured: dict[str, list[dict]]) -> dict[str, Any]:
    """A workload's row: each side's median rate (with every round's, and the errors of
    all), and the medians of the rounds' ratios."""

    def ratio(top: str, bottom: str) -> float:
        pairs = zip(measured[top], measured[bottom], strict=True)
        return round(statistics.median(a["rate"] / b["rate"] for a, b in pairs), 2)

    row: dict[str, Any] = {"transport": proto, "client_threads": threads}
    for side, runs in measured.items():
        row[side] = {
            "rate": statistics.median(r["rate"] for r in runs),
            "rounds": [r["rate"] for r in runs],
            "cpu_us": statistics.median(r["cpu_us"] for r in runs),
            "ok": sum(r["ok"] for r in runs),
            "bad": sum(r["bad"] for r in runs),
            "exceptions": sum(r["exceptions"] for r in runs),
        }
    row["ratio"] = ratio("ours", "cnri")
    row["ratio_asyncio"] = ratio("ours_asyncio", "cnri")
    row["floor_ratio"] = ratio("floor", "cnri")
    row["of_floor"] = ratio("ours", "floor")
    row["cpu_ratio"] = round(row["cnri"]["cpu_us"] / row["ours"]["cpu_us"], 2)
    return row


def table(results: dict[str, Any]) -> str:
    lines = [
        "| transport | client threads | CNRI 7.3 | floor | floor / CNRI | ours (uvloop, the "
        "default) | ours / CNRI | ours / floor | ours (asyncio) | ours / CNRI | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        errors = sum(row[side][k] for side in SIDES for k in ("bad", "exceptions"))
        lines.append(
            f"| {row['transport'].upper()} | {row['client_threads']} | {row['cnri']['rate']:,.0f}"
            f" | {row['floor']['rate']:,.0f} | {row['floor_ratio']:.2f}x"
            f" | {row['ours']['rate']:,.0f} | {row['ratio']:.2f}x | {row['of_floor']:.2f}x"
            f" | {row['ours_asyncio']['rate']:,.0f} | {row['ratio_asyncio']:.2f}x | {errors} |"
        )
    lines += [
        "",
        "| transport | client threads | server CPU an answer, us: CNRI 7.3 | floor | ours | "
        "ours (asyncio) | answers a core-second, ours / CNRI |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['transport'].upper()} | {row['client_threads']}"
            + "".join(f" | {row[side]['cpu_us']:.1f}" for side in SIDES)
            + f" | {row['cpu_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds a workload")
    parser.add_argument("--rounds", type=int, default=3, help="measures of each side a workload")
    args = parser.parse_args()
    if not (CNRI / "hdltool.sh").is_file():
        sys.exit(f"{CNRI} is missing: the CNRI reference is needed")
    results = run(args.seconds, args.rounds)
    (ROOT / "bench" / "native.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
