"""A public proxy's work: resolving a handle homed at another site, ours against the CNRI
HANDLE.NET 7.3 server's HTTP interface (its "Handle System Proxy Server", which resolves other
sites' handles through its own resolver when ``allow_recursion`` is on), in one run.

    python bench/proxy.py                  # 10 s a workload
    python bench/proxy.py --seconds 3      # shorter

The Handle System here is on loopback: the CNRI server is the root (``start_cnri.sh``: it
homes ``0.NA/0.NA``), and our own server (a second process, native protocol on) is the site of
prefix ``TEST``, registered at that root as the prefix registry would (``0.NA/TEST`` holding
its HS_SITE). The remote handle is ``TEST/test-1`` (one URL). The two proxies:

- the CNRI server itself, restarted with ``allow_recursion = yes``: ``GET /TEST/test-1`` on its
  HTTP port asks the root (itself) for ``0.NA/TEST``, then our site, and redirects;
- ours, ``[resolver] mode = "global"`` with the CNRI root's ``siteinfo.bin`` as its
  ``root_info``: the same path, then its remote cache.

Both proxies run on core 0 (the site too, idle once the proxies hold the record), wrk on core 1
with 50 connections. The CNRI interface answers one request a connection (it closes each), so
ours is measured that way too (``Connection: close``) and with keep-alive. Writes
``bench/proxy.json`` and prints the rows for ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Server, free_port, machine, pinned, wrk

ROOT = Path(__file__).resolve().parent.parent
CNRI = ROOT.parent / "shared" / "cnri"
HANDLE = "TEST/test-1"
URL = "http://example.org/test-1"


def start_cnri(directory: Path, port: int, http: int) -> None:
    out = subprocess.run(
        [*pinned(0), "bash", str(CNRI / "start_cnri.sh"), str(directory), str(port), str(http)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"start_cnri.sh failed:\n{out.stderr}")


def restart_cnri_recursive(directory: Path, http: int) -> None:
    """Stop the CNRI server, turn ``allow_recursion`` on, start it again as ``start_cnri.sh``
    does (same JVM options, pinned to core 0), and wait until its HTTP interface answers."""
    subprocess.run(["bash", str(CNRI / "stop_cnri.sh"), str(directory)], timeout=60, check=True)
    config = directory / "config.dct"
    text = config.read_text()
    if '"allow_recursion" = "no"' not in text:
        raise RuntimeError(f"{config}: no allow_recursion setting to turn on")
    config.write_text(text.replace('"allow_recursion" = "no"', '"allow_recursion" = "yes"'))
    launch = (
        f'source "{CNRI / "cnri_env.sh"}"; '
        f'setsid {" ".join(pinned(0))} "$JAVA" -server -Xmx512m -Duser.home="{directory}/home" '
        f'$CNRI_JOPTS -cp "$CNRI_CP" net.handle.server.Main "{directory}" '
        f'> "{directory}/server.out" 2>&1 < /dev/null & echo $! > "{directory}/server.pid"'
    )
    subprocess.run(["bash", "-c", launch], check=True, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(
        f"the CNRI server did not come back:\n{(directory / 'server.out').read_text()}"
    )


def start_site(work: Path) -> Server:
    """Our server as the site of prefix TEST, holding TEST/test-1."""
    http, native = free_port(), free_port()
    config = work / "site.toml"
    config.write_text(
        f'[server]\nport = {http}\n[storage]\npath = "{work / "site.sqlite3"}"\n'
        '[handle]\nprefixes = ["TEST"]\n[[admins]]\nid = "300:0.NA/TEST"\nsecret = "s"\n'
        f'[auth]\nkey_file = "{work / "site.key"}"\n'
        f'[native]\nenabled = true\nport = {native}\nkey_file = "{work / "native.pem"}"\n'
    )
    site = Server(
        ["-m", "handle_server", "serve", "--config", str(config)],
        http,
        work / "site.log",
        ready_path="/api/handles/0.NA/TEST",
    )
    auth = "Basic " + base64.b64encode(b"300%3A0.NA%2FTEST:s").decode()
    request = urllib.request.Request(
        f"{site.url}/api/handles/{HANDLE}",
        data=json.dumps([{"index": 1, "type": "URL", "data": URL}]).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", "Authorization": auth},
    )
    urllib.request.urlopen(request, timeout=10).read()
    return site


def register(site: Server, cnri_port: int) -> None:
    """0.NA/TEST at the CNRI root holds the site's HS_SITE, as a prefix registry puts it."""
    with urllib.request.urlopen(f"{site.url}/api/handles/0.NA/TEST?type=HS_SITE") as resp:
        value = json.load(resp)["values"][0]["data"]["value"]
    out = subprocess.run(
        ["bash", str(CNRI / "hdltool.sh"), "create", "127.0.0.1", str(cnri_port), "tcp",
         "0.NA/TEST", "--auth", "300:0.NA/CNRI", "--secret", "cnri-secret", "--no-session",
         "--hexvalue", "1", "HS_SITE", base64.b64decode(value).hex(), "--ttl", "86400"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if not out.stdout.startswith("RC 1 "):
        raise RuntimeError(f"registering 0.NA/TEST failed:\n{out.stdout}\n{out.stderr}")


def start_proxy(work: Path, root_info: Path) -> Server:
    http = free_port()
    config = work / "proxy.toml"
    config.write_text(
        f'[server]\nport = {http}\n[storage]\npath = "{work / "proxy.sqlite3"}"\n'
        f'[auth]\nkey_file = "{work / "proxy.key"}"\n'
        f'[resolver]\nmode = "global"\nroot_info = "{root_info}"\n'
    )
    return Server(
        ["-m", "handle_server", "serve", "--config", str(config)],
        http,
        work / "proxy.log",
        ready_path="/healthz",
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def redirects(url: str) -> str:
    """Where ``url`` redirects (it must: a 302)."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(url, timeout=30)
    except urllib.error.HTTPError as exc:
        if exc.code == 302:
            return exc.headers["Location"]
        raise
    raise RuntimeError(f"{url} did not redirect")


def site_answers(site: Server) -> int:
    """Resolutions of the remote handle the site has answered (its access log)."""
    return len(re.findall(rf'resolution {re.escape(HANDLE)}" 1 ', site.log.read_text()))


def connection_close(work: Path) -> Path:
    script = work / "close.lua"
    script.write_text('wrk.headers["Connection"] = "close"\n')
    return script


def run(seconds: int) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "seconds": seconds, "rows": []}
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        work = Path(tmp)
        directory = work / "cnri"
        cnri_port, cnri_http = free_port(), free_port()
        start_cnri(directory, cnri_port, cnri_http)
        try:
            with start_site(work) as site:
                register(site, cnri_port)
                restart_cnri_recursive(directory, cnri_http)
                with start_proxy(work, directory / "siteinfo.bin") as proxy:
                    theirs_url = f"http://127.0.0.1:{cnri_http}/{HANDLE}"
                    ours_url = f"{proxy.url}/{HANDLE}"
                    for url in (theirs_url, ours_url):  # resolved once: the proxies hold it
                        if redirects(url) != URL:
                            raise RuntimeError(f"{url} does not redirect to {URL}")
                    close = connection_close(work)
                    runs = []
                    for url, script in ((theirs_url, close), (ours_url, close), (ours_url, None)):
                        before = site_answers(site)
                        figures = wrk(url, seconds=seconds, connections=50, script=script)
                        time.sleep(0.5)  # the site's access log is written in batches
                        figures["site_answers"] = site_answers(site) - before
                        del figures["wrk"]
                        runs.append(figures)
                    theirs, ours_close, ours_kept = runs
        finally:
            subprocess.run(["bash", str(CNRI / "stop_cnri.sh"), str(directory)], timeout=60)
    base = theirs["rps"]
    for name, figures in (
        ("CNRI 7.3 HTTP interface, allow_recursion (one request a connection)", theirs),
        ("ours, global mode (one request a connection)", ours_close),
        ("ours, global mode (keep-alive)", ours_kept),
    ):
        results["rows"].append({"proxy": name, **figures, "ratio": round(figures["rps"] / base, 2)})
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        "| proxy | req/s | p50 ms | p99 ms | errors | site asked | vs CNRI |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['proxy']} | {row['rps']:,.0f} | {row['p50_ms']} | {row['p99_ms']} "
            f"| {row['errors']} | {row['site_answers']:,} | {row['ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds a workload")
    args = parser.parse_args()
    if not (CNRI / "start_cnri.sh").is_file():
        sys.exit(f"{CNRI} is missing: the CNRI reference is needed")
    os.environ.setdefault("CNRI_LOG_ACCESSES", "yes")
    results = run(args.seconds)
    (ROOT / "bench" / "proxy.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
