"""Hot answers (``api/hot.py``): an anonymous GET of a cached record answered before routing is
byte for byte the view's answer, for every header and status; it never shows a private value
and never outlives its cache entry.

The view's own answer to a path comes from the same path with ``?auth=false`` (the default,
spelled out): a request with a query is never answered hot, and the view answers it exactly
as the bare path."""

from __future__ import annotations

import asyncio
import re

from handle_server import keys
from handle_server.app import create_app

from .helpers import ADMIN_AUTH, Api, make_config, url_value

PRIVATE = {"index": 2, "type": "EMAIL", "data": "secret@e.org", "permissions": "1100"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def _raw(api: Api, request: bytes) -> bytes:
    """The whole answer to ``request``, as the server wrote it."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
        body = await reader.readexactly(int(length.group(1))) if length else b""
        return head + body
    finally:
        writer.close()


def _request(path: str, headers: dict[str, str], version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _dateless(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", answer)


async def _app(aiohttp_client, tmp_path, clock: Clock) -> tuple[Api, object]:
    app = create_app(make_config(tmp_path), clock=clock)
    return Api(await aiohttp_client(app)), app


async def test_a_hot_answer_is_the_views_answer_for_every_header_and_status(
    aiohttp_client, tmp_path
):
    clock = Clock()
    api, app = await _app(aiohttp_client, tmp_path, clock)
    hot = app[keys.HOT]
    values = [url_value("https://e.org/h", ttl=600), PRIVATE]
    assert (await api.put("TEST/hot", values))[0] == 201
    status, body = await api.get("TEST/hot")  # the view answers, and keeps the answer
    assert status == 200 and [v["index"] for v in body["values"]] == [1]
    etag = (await api.client.get("/api/handles/TEST/hot")).headers["ETag"]

    variants = [
        {},
        {"If-None-Match": etag},  # 304
        {"If-None-Match": f'"other", {etag}'},  # 304
        {"If-None-Match": '"other"'},  # 200
        {"If-None-Match": "*"},
        {"Accept": "text/html"},  # the API answers JSON whoever asks
        {"Accept-Encoding": "gzip, br"},
        {"Connection": "close"},
        {"X-Forwarded-For": "192.0.2.7"},
    ]
    statuses = set()
    for seconds in (0, 10, 580):  # max-age and Expires count down with the TTL
        clock.now += seconds
        for headers in variants:
            for version in ("1.1", "1.0"):
                before = hot.answered
                general = await _raw(
                    api, _request("/api/handles/TEST/hot?auth=false", headers, version)
                )
                assert hot.answered == before
                fast = await _raw(api, _request("/api/handles/TEST/hot", headers, version))
                assert hot.answered == before + 1, headers  # this one was hot
                assert _dateless(fast) == _dateless(general), (headers, version)
                assert b"secret@e.org" not in fast
                statuses.add(fast.split(b" ", 2)[1])
    assert statuses == {b"200", b"304"}
    # The request metrics count hot answers as the view's.
    metrics = await (await api.client.get("/metrics")).text()
    counted = re.search(
        r'handle_server_requests_total\{method="GET",route="/api/handles/\{handle\}",'
        r'status="200"\} (\S+)',
        metrics,
    )
    assert counted is not None and float(counted.group(1)) >= hot.answered


async def test_what_is_not_an_anonymous_get_of_the_bare_path_is_never_hot(aiohttp_client, tmp_path):
    clock = Clock()
    api, app = await _app(aiohttp_client, tmp_path, clock)
    hot = app[keys.HOT]
    assert (await api.put("TEST/p", [url_value("https://e.org/p"), PRIVATE]))[0] == 201
    await api.get("TEST/p")
    await api.get("TEST/p")
    answered = hot.answered
    assert answered == 1
    # Credentials: the view answers (and shows what they may read).
    status, body = await api.get("TEST/p", headers=ADMIN_AUTH, params={"publicOnly": "false"})
    assert status == 200 and [v["index"] for v in body["values"]] == [1, 2]
    resp = await api.client.get("/api/handles/TEST/p", headers=ADMIN_AUTH)
    assert resp.status == 200 and resp.headers["Cache-Control"] == "private, no-store"
    # A HEAD, a query, the resolver's path, another spelling of the handle.
    assert (await api.client.head("/api/handles/TEST/p")).status == 200
    assert (await api.client.get("/api/handles/TEST/p?index=1")).status == 200
    assert (await api.client.get("/TEST/p", headers={"Accept": "application/json"})).status == 200
    assert (await api.client.get("/api/handles/test/p")).status == 200  # kept, not yet hot
    assert hot.answered == answered


async def test_a_hot_answer_goes_with_its_cache_entry(aiohttp_client, tmp_path):
    """A write, the end of the TTL and a purge of the cache each end a kept answer: the next
    GET is the view's, with what the store holds."""
    clock = Clock()
    api, app = await _app(aiohttp_client, tmp_path, clock)
    hot = app[keys.HOT]

    async def url() -> str:
        status, body = await api.get("TEST/w")
        assert status == 200
        return body["values"][0]["data"]["value"]

    assert (await api.put("TEST/w", [url_value("https://e.org/1", ttl=60)]))[0] == 201
    assert await url() == "https://e.org/1"
    assert await url() == "https://e.org/1" and hot.answered == 1
    assert (await api.put("TEST/w", [url_value("https://e.org/2", ttl=60)]))[0] == 200
    assert await url() == "https://e.org/2" and hot.answered == 1  # the view's
    assert await url() == "https://e.org/2" and hot.answered == 2  # hot again
    clock.now += 61  # the TTL ends
    assert await url() == "https://e.org/2" and hot.answered == 2
    assert await url() == "https://e.org/2" and hot.answered == 3
    app[keys.SERVICE].cache.clear()
    assert await url() == "https://e.org/2" and hot.answered == 3
    assert (await api.delete("TEST/w"))[0] == 200
    status, _ = await api.get("TEST/w")
    assert status == 404 and hot.answered == 3


async def test_an_answer_from_outside_the_cache_is_never_hot(aiohttp_client, tmp_path):
    """A record with a TTL of 0 is never cached (nor is a read that a write overtook): its
    answers are the view's every time, however often it is asked."""
    api, app = await _app(aiohttp_client, tmp_path, Clock())
    assert (await api.put("TEST/z", [url_value("https://e.org/z", ttl=0)]))[0] == 201
    for _ in range(3):
        status, _ = await api.get("TEST/z")
        assert status == 200
    assert app[keys.HOT].answered == 0


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_a_hot_redirect_is_the_resolvers_redirect(aiohttp_client, tmp_path):
    clock = Clock()
    api, app = await _app(aiohttp_client, tmp_path, clock)
    hot = app[keys.HOT]
    assert (await api.put("TEST/r", [url_value("https://e.org/r?a=1&b=<2>", ttl=300)]))[0] == 201
    accepts = [{}, {"Accept": BROWSER}, {"Accept": "*/*"}, {"User-Agent": "curl/8.5.0"}]
    for headers in accepts:  # the resolver answers each Accept once, and keeps it
        await _raw(api, _request("/TEST/r", headers))
    for seconds in (0, 100):
        clock.now += seconds
        for headers in [*accepts, {"Accept": BROWSER, "If-None-Match": "*"}]:
            for version in ("1.1", "1.0"):
                before = hot.answered
                general = await _raw(api, _request("/TEST/r?auth=false", headers, version))
                assert hot.answered == before
                fast = await _raw(api, _request("/TEST/r", headers, version))
                assert hot.answered == before + 1, headers
                assert fast.startswith(f"HTTP/{version} 302 Found\r\n".encode())
                assert _dateless(fast) == _dateless(general), (headers, version)
    # JSON for a client asking for it: the view's, every time.
    before = hot.answered
    for _ in range(2):
        resp = await api.client.get("/TEST/r", headers={"Accept": "application/json"})
        assert resp.status == 200 and (await resp.json())["handle"] == "TEST/r"
    assert hot.answered == before


async def test_a_redirect_chosen_from_a_location_list_is_never_hot(aiohttp_client, tmp_path):
    """10320/loc: the choice may depend on the client's address or on chance."""
    api, app = await _app(aiohttp_client, tmp_path, Clock())
    locations = (
        '<locations><location href="https://a.org/x" weight="1"/>'
        '<location href="https://b.org/x" weight="1"/></locations>'
    )
    loc = {"index": 2, "type": "10320/loc", "data": locations}
    assert (await api.put("TEST/loc", [url_value("https://e.org/l"), loc]))[0] == 201
    targets = set()
    for _ in range(40):
        resp = await api.client.get("/TEST/loc", allow_redirects=False)
        assert resp.status == 302
        targets.add(resp.headers["Location"])
    assert targets == {"https://a.org/x", "https://b.org/x"}
    assert app[keys.HOT].answered == 0
