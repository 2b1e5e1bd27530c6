"""/metrics (parsed by prometheus-client's own parser), /healthz, /readyz and the access log
formats."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import typing

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_log import AccessLogger
from prometheus_client.parser import text_string_to_metric_families

from handle_server.app import create_app
from handle_server.config import ConfigError, parse_config
from handle_server.ops.access_log import ACCESS_FORMATS, LineAccessLogger

from .helpers import Api, Server, make_config, url_value


async def scrape(api: Api) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    resp = await api.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def requests(samples, route: str, method: str, status: int) -> float:
    labels = (("method", method), ("route", route), ("status", str(status)))
    return samples.get(("handle_server_requests_total", labels), 0)


async def test_per_prefix_counts_are_opt_in(aiohttp_client, tmp_path):
    config = make_config(tmp_path, metrics={"per_prefix_counts": True})
    api = Api(await aiohttp_client(create_app(config)))
    assert (await api.put("TEST/m1", [url_value("https://m.org")]))[0] == 201
    samples = await scrape(api)
    assert samples[("handle_server_handles", (("prefix", "TEST"),))] == 1
    assert samples[("handle_server_handles", (("prefix", "10.5555"),))] == 0


async def test_health_and_readiness(api: Api):
    assert await api._call("GET", "/healthz") == (200, {"status": "ok"})
    assert await api._call("GET", "/readyz") == (200, {"status": "ok"})


async def test_metrics_count_requests_cache_and_store(api: Api):
    route = "/api/handles/{handle}"
    assert (await api.put("TEST/m1", [url_value("https://m.org")]))[0] == 201
    for _ in range(3):
        assert (await api.get("TEST/m1"))[0] == 200
    assert (await api.get("TEST/none"))[0] == 404
    assert (await api.get("TEST/m1", headers={"Authorization": "Basic !!"}))[0] == 401
    resp = await api.client.get("/TEST/none", allow_redirects=False)  # the resolver's route
    assert resp.status == 404

    samples = await scrape(api)
    assert requests(samples, route, "GET", 200) == 3
    assert requests(samples, route, "GET", 404) == 1
    assert requests(samples, route, "GET", 401) == 1
    assert requests(samples, route, "PUT", 201) == 1
    count = samples[
        ("handle_server_request_duration_seconds_count", (("method", "GET"), ("route", route)))
    ]
    assert count == 5
    hits = samples[("handle_server_cache_lookups_total", (("result", "hit"),))]
    misses = samples[("handle_server_cache_lookups_total", (("result", "miss"),))]
    assert hits >= 2 and misses >= 2  # TEST/m1 after the write, TEST/none
    for operation in ("get", "update"):
        key = ("handle_server_store_duration_seconds_count", (("operation", operation),))
        assert samples[key] >= 1, operation
    # How many handles a prefix has is for those who may list it: not shown unless opted in.
    assert not [key for key in samples if key[0] == "handle_server_handles"]
    assert requests(samples, "/{handle}", "GET", 404) == 1
    # Made-up methods are counted together, so no client can grow the label set.
    for method in ("PROPFIND", "PURGE"):
        assert (await api.client.request(method, "/api/handles/TEST/m1")).status == 405
    # The scrape itself is counted by the next one.
    again = await scrape(api)
    assert requests(again, "/metrics", "GET", 200) == 1
    assert requests(again, "/api/{tail}", "other", 405) == 2
    assert not [k for k in again if ("method", "PURGE") in k[1]]


def test_an_unknown_access_format_is_refused():
    with pytest.raises(ConfigError, match=r"\[log\] access_format"):
        parse_config({"log": {"access_format": "xml"}})


@pytest.mark.parametrize("access_format", ["json", "common"])
async def test_access_log_formats(tmp_path, access_format):
    config = tmp_path / "server.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "h.sqlite3"}"\n[handle]\nprefixes = ["TEST"]\n'
        f'[[admins]]\nid = "300:0.NA/TEST"\nsecret = "s3cret"\n'
        f'[log]\naccess_format = "{access_format}"\n'
    )
    server = Server(["--config", str(config)], tmp_path)
    try:
        await server.ready()
        async with aiohttp.ClientSession() as session:
            url = f"{server.base}/api/handles/TEST/a?index=1"
            async with session.get(url, headers={"User-Agent": "probe/1"}) as resp:
                assert resp.status == 404
    finally:
        server.stop()
    lines = [ln for ln in server.log.read_text().splitlines() if "TEST/a" in ln]
    assert len(lines) == 1, server.log.read_text()
    if access_format == "json":
        entry = json.loads(lines[0])  # the whole line is the object
        assert entry["method"] == "GET" and entry["path"] == "/api/handles/TEST/a?index=1"
        assert entry["status"] == 404 and entry["user_agent"] == "probe/1"
        assert entry["remote"] == "127.0.0.1" and entry["duration_s"] >= 0
        assert entry["time"].endswith("+00:00") and "worker" not in entry
    else:
        assert "127.0.0.1 - - [" in lines[0]
        request, size = '"GET /api/handles/TEST/a?index=1 HTTP/1.1" 404 ', lines[0].split()[-1]
        assert lines[0].endswith(request + size) and size.isdigit()
        assert "probe/1" not in lines[0]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("access_format", ["combined", "common"])
async def test_our_access_lines_are_aiohttps_byte_for_byte(access_format):
    """``LineAccessLogger`` (what ``serve`` uses) writes the line aiohttp's own access logger
    writes for ``ACCESS_FORMATS``: the same requests through two real servers, one each."""

    async def answer(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "200"))
        return web.Response(status=status, text="x" * int(request.query.get("n", "1")))

    captured = []
    for name, cls in (("aiohttp", AccessLogger), ("ours", LineAccessLogger)):
        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        logger = logging.getLogger(f"test.access.{name}.{access_format}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        lines = _Lines()
        logger.handlers[:] = [lines]
        fmt = ACCESS_FORMATS[access_format] if cls is AccessLogger else access_format
        server = TestServer(app)
        await server.start_server(access_log=logger, access_log_class=cls, access_log_format=fmt)
        async with TestClient(server) as client:
            for path, headers in (
                ("/TEST/a?n=10", {}),
                ("/api/handles/TEST/%C3%A9?index=1&status=404", {"User-Agent": "probe/1"}),
                ("/x?status=302", {"Referer": "https://r.example/", "User-Agent": 'a "q"'}),
            ):
                async with client.get(path, headers=headers, allow_redirects=False) as resp:
                    await resp.read()
        for _ in range(100):  # the line is written after the answer
            if len(lines.lines) == 3:
                break
            await asyncio.sleep(0.01)
        captured.append(lines.lines)
    theirs, ours = captured
    stamp = re.compile(r"\[\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]")
    assert len(ours) == 3 and all(stamp.search(line) for line in ours), ours
    # The same lines, the start times aside (two servers, a moment apart)...
    assert [stamp.sub("[T]", line) for line in ours] == [stamp.sub("[T]", line) for line in theirs]
    # ...and the same start time for the same request duration, to the second.
    for _ in range(5):
        now = time.time()
        mine = LineAccessLogger(logging.getLogger("test.stamp"))
        mine.log(_Fake(), _Fake(), 1.5)
        theirs_stamp = AccessLogger._format_t(None, None, 1.5)  # type: ignore[arg-type]
        if int(time.time()) == int(now):  # not across a second's boundary
            break
    assert stamp.search(mine._stamp) and mine._stamp == theirs_stamp


class _Fake:
    """The least of a request and a response that a line needs."""

    remote = "192.0.2.1"
    method = "GET"
    path_qs = "/x"
    version = aiohttp.HttpVersion11
    headers: typing.ClassVar[dict[str, str]] = {}
    status = 200
    body_length = 0
