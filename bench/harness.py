"""What the benchmark scripts share: the real server as a process, wrk, and the machine.

Everything runs on loopback (127.0.0.1) and every load is bounded in time.
"""

from __future__ import annotations

import base64
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = [
    "Server",
    "ensure_wrk",
    "free_port",
    "import_handles",
    "machine",
    "pinned",
    "rss_mib",
    "write_config",
    "write_export",
    "wrk",
]

ADMIN = "300:0.NA/BENCH"
SECRET = "bench-secret"
#: The Authorization header of the configured admin (the identity percent-encoded).
ADMIN_AUTH = "Basic " + base64.b64encode(f"{quote(ADMIN, safe='')}:{SECRET}".encode()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(core: int) -> list[str]:
    """A command prefix that pins a process to ``core`` where there are two or more."""
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() > 1 else []


def ensure_wrk() -> str:
    """wrk's path; installed from Debian's archive when missing and this user may."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it (apt-get install wrk)", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
        found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is needed: apt-get install wrk")
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of one process, in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) one process has used so far, in seconds (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    import aiohttp

    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class Server:
    """A server process on 127.0.0.1, pinned to core 0, its output in ``log``.

    ``command`` is the argv after the Python interpreter (``-m handle_server serve ...`` or a
    script); the port is the caller's, in the command or its config."""

    def __init__(self, command: list[str], port: int, log: Path, *, ready_path: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._output = log.open("wb")
        self.proc = subprocess.Popen(
            [*pinned(0), sys.executable, *command],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        self._wait(ready_path)

    def _wait(self, path: str, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()}")
            try:
                urllib.request.urlopen(self.url + path, timeout=2).read()
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.log.read_text()}")

    def rss_mib(self) -> float:
        return rss_mib(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._output.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS_MS[unit]


def wrk(
    url: str,
    *,
    seconds: int,
    connections: int,
    script: Path | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Run wrk from core 1 against ``url``: requests/s, p50 and p99 in ms, requests, errors
    (socket errors and answers that are not 2xx or 3xx)."""
    command = [
        *pinned(1),
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99_ms": _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": (int(non2xx.group(1)) if non2xx else 0)
        + (sum(int(n) for n in sockets.groups()) if sockets else 0),
        "wrk": out,
    }


def write_config(path: Path, store: Path | str, *, port: int, **tables: str) -> Path:
    """A server config for the benchmark prefix ``BENCH`` with one configured admin. ``store``
    is a SQLite path, or a PostgreSQL DSN (``postgresql://...``); ``tables`` adds TOML lines
    to a table (``cache="max_ttl = 0"``; ``auth`` replaces ``failure_limit = 0``). The server
    key is made beside the config."""
    if str(store).startswith("postgresql://"):
        storage = f'backend = "postgresql"\ndsn = "{store}"'
    else:
        storage = f'path = "{store}"'
    extra = {"server": "", "log": "access = false", "cache": "", **tables}
    # The load runs from one address: it must not be throttled as a password guesser.
    auth = extra.pop("auth", "failure_limit = 0")
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n{extra.pop("server")}\n'
        f"[storage]\n{storage}\n"
        '[handle]\nprefixes = ["BENCH"]\n'
        f'[[admins]]\nid = "{ADMIN}"\nsecret = "{SECRET}"\n'
        f'[auth]\nkey_file = "{path.parent / "secret.key"}"\n{auth}\n'
        + "".join(f"[{table}]\n{lines}\n" for table, lines in extra.items())
    )
    return path


def write_export(path: Path, n: int) -> Path:
    """``n`` records ``BENCH/h0`` ... in the export format: a URL and a checksum each, the
    shape of a typical PID record."""
    with path.open("w") as out:
        for i in range(n):
            out.write(
                f'{{"handle":"BENCH/h{i}","values":['
                f'{{"index":1,"type":"URL","data":{{"format":"string",'
                f'"value":"https://repository.example.org/objects/{i}"}},'
                '"ttlType":0,"ttl":86400,"timestamp":1764547200,"permissions":"1110",'
                '"references":[]},'
                '{"index":2,"type":"CHECKSUM","data":{"format":"string",'
                f'"value":"sha256:{i:064x}"}},'
                '"ttlType":0,"ttl":86400,"timestamp":1764547200,"permissions":"1110",'
                '"references":[]}]}\n'
            )
    return path


def import_handles(config: Path, export: Path) -> float:
    """``handle-server import`` of ``export`` into the configured store, as an operator runs
    it; returns records per second."""
    lines = sum(1 for _ in export.open("rb"))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "handle_server", "import", "--config", str(config), str(export)],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return lines / (time.perf_counter() - started)
