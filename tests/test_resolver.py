"""The resolver proxy: GET /{handle}, as a state table of records and requests."""

from __future__ import annotations

import random
from urllib.parse import quote

import pytest

from handle_server import keys
from handle_server.app import create_app
from handle_server.resolver import views as proxy

from .helpers import Api, make_config, url_value

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def loc(xml: str, index: int = 10) -> dict:
    return {"index": index, "type": "10320/loc", "data": xml}


@pytest.fixture
async def resolver(aiohttp_client, tmp_path):
    app = create_app(make_config(tmp_path))
    app[proxy.RNG] = random.Random(7)
    return Api(await aiohttp_client(app))


async def fetch(api: Api, path: str, headers: dict | None = None):
    async with api.client.get(path, headers=headers or BROWSER, allow_redirects=False) as resp:
        return resp.status, resp.headers, await resp.text()


LOCS = (
    '<locations chooseby="locatt,weighted">'
    '<location href="https://a.example/html" view="html" weight="0"/>'
    '<location href="https://b.example/pdf" view="pdf" weight="1" http_sc="303"/>'
    "</locations>"
)

CASES = [
    # (id, record, query, status, location)
    ("url", [url_value("https://example.org/doc")], "", 302, "https://example.org/doc"),
    (
        "url-before-subtype",
        [
            url_value("https://sub.org", 1) | {"type": "URL.mirror"},
            url_value("https://plain.org", 2),
        ],
        "",
        302,
        "https://plain.org",
    ),
    (
        "subtype-only",
        [url_value("https://sub.org", 3) | {"type": "url.mirror"}],
        "",
        302,
        "https://sub.org",
    ),
    (
        "first-url-by-index",
        [url_value("https://two.org", 2), url_value("https://one.org", 1) | {"type": "URL"}],
        "",
        302,
        "https://one.org",
    ),
    (
        "urlappend",
        [url_value("https://example.org/doc")],
        "?urlappend=%3Fpage%3D2",
        302,
        "https://example.org/doc?page=2",
    ),
    (
        "loc-weighted",
        [url_value("https://legacy.org"), loc(LOCS)],
        "",
        303,
        "https://b.example/pdf",
    ),
    (
        "loc-locatt",
        [url_value("https://legacy.org"), loc(LOCS)],
        "?locatt=view:html",
        302,
        "https://a.example/html",
    ),
    (
        "loc-locatt-no-match",
        [url_value("https://legacy.org"), loc(LOCS)],
        "?locatt=view:epub",
        303,
        "https://b.example/pdf",
    ),
    (
        "loc-template",
        [loc('<locations><location href_template="https://r.org/?id={hdl}"/></locations>')],
        "",
        302,
        "https://r.org/?id=TEST%2Frec",
    ),
    (
        "loc-score",
        [
            loc(
                '<locations chooseby="score"><location href="https://low.org" score="1"/>'
                '<location href="https://high.org" score="5"/></locations>'
            )
        ],
        "",
        302,
        "https://high.org",
    ),
    (
        "loc-country",
        [
            loc(
                '<locations chooseby="country,score">'
                '<location href="https://de.org" country="de"/>'
                '<location href="https://fr.org" country="fr" score="9"/></locations>'
            )
        ],
        "?country=DE",
        302,
        "https://de.org",
    ),
    (
        "loc-set-status",
        [loc('<locations http_sc="301"><location href="https://moved.org"/></locations>')],
        "",
        301,
        "https://moved.org",
    ),
    (
        "loc-legacy-weight",
        [
            url_value("https://legacy.org"),
            loc('<locations urlWeight="1"><location href="https://l.org" weight="0"/></locations>'),
        ],
        "",
        302,
        "https://legacy.org",
    ),
    (
        "loc-no-legacy",
        [
            url_value("https://legacy.org"),
            loc(
                '<locations no_legacy="true"><location href="https://only.org" '
                'weight="0"/></locations>'
            ),
        ],
        "",
        302,
        "https://only.org",
    ),
    (
        "loc-invalid-xml",
        [url_value("https://legacy.org"), loc("<locations><oops")],
        "",
        302,
        "https://legacy.org",
    ),
    (
        "loc-entity-bomb",
        [
            url_value("https://legacy.org"),
            loc(
                '<!DOCTYPE l [<!ENTITY a "aaaaaaaa">]><locations>'
                '<location href="https://&a;.org"/></locations>'
            ),
        ],
        "",
        302,
        "https://legacy.org",
    ),
    ("no-url", [{"index": 2, "type": "EMAIL", "data": "a@b.org"}], "", 200, None),
    ("noredirect", [url_value("https://example.org/doc")], "?noredirect", 200, None),
    (
        "private-url-not-used",
        [
            url_value("https://secret.org") | {"permissions": "1100"},
            url_value("https://public.org", 2) | {"type": "URL.public"},
        ],
        "",
        302,
        "https://public.org",
    ),
    (
        "type-filter",
        [url_value("https://a.org"), url_value("https://b.org", 2) | {"type": "URL.b"}],
        "?type=URL.b",
        302,
        "https://b.org",
    ),
]


@pytest.mark.parametrize(
    ("record", "query", "status", "location"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_resolution_state_table(resolver, record, query, status, location):
    assert (await resolver.put("TEST/rec", record))[0] == 201
    got_status, headers, body = await fetch(resolver, "/TEST/rec" + query)
    assert got_status == status, body
    if location is None:
        assert "Location" not in headers and "<table>" in body
    else:
        assert headers["Location"] == location
        assert headers["Cache-Control"].startswith("public, max-age=")
        assert "Handle Redirect" in body


async def test_weighted_choice_follows_the_weights(resolver):
    xml = (
        '<locations chooseby="weighted"><location href="https://one.org" weight="1"/>'
        '<location href="https://three.org" weight="3"/></locations>'
    )
    await resolver.put("TEST/w", [loc(xml)])
    seen = {"https://one.org": 0, "https://three.org": 0}
    for _ in range(200):
        _, headers, _ = await fetch(resolver, "/TEST/w")
        seen[headers["Location"]] += 1
    assert 20 < seen["https://one.org"] < 80 and seen["https://three.org"] > 120


async def test_the_values_page_shows_public_values_only(resolver):
    await resolver.put(
        "TEST/page",
        [
            url_value("https://example.org/doc"),
            {"index": 2, "type": "EMAIL", "data": "owner@example.org"},
            {"index": 3, "type": "SECRET", "data": "hidden-value", "permissions": "1100"},
            {
                "index": 100,
                "type": "HS_ADMIN",
                "data": {
                    "format": "admin",
                    "value": {"handle": "0.NA/TEST", "index": 200, "permissions": "011111110011"},
                },
            },
        ],
    )
    status, headers, body = await fetch(resolver, "/TEST/page?noredirect")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Handle TEST/page" in body and "owner@example.org" in body
    assert '<a href="https://example.org/doc"' in body
    assert "200:0.NA/TEST (permissions 011111110011)" in body
    assert "hidden-value" not in body and "SECRET" not in body
    assert "<script" not in body and "http://" not in body.split("</style>")[0]  # no assets


async def test_values_are_escaped_never_markup(resolver):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await resolver.put(
        "TEST/xss",
        [
            {"index": 1, "type": "DESC", "data": evil},
            {"index": 2, "type": "<b>T</b>", "data": "javascript:alert(1)"},
            url_value('https://ok.org/"><script>alert(2)</script>', 3),
        ],
    )
    status, _, body = await fetch(resolver, "/TEST/xss?noredirect")
    assert status == 200
    assert "<script>alert" not in body and "<img src=x" not in body and "<b>T</b>" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body
    assert 'href="javascript:' not in body
    # The redirect page escapes too, and does not link a script URL.
    await resolver.put("TEST/jsurl", [url_value("javascript:alert(1)")])
    status, _, body = await fetch(resolver, "/TEST/jsurl")
    assert status == 302 and 'href="javascript:' not in body


async def test_not_found_and_refused_pages(resolver):
    status, headers, body = await fetch(resolver, "/TEST/none")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert "Handle not found" in body and "TEST/none" in body
    status, _, body = await fetch(resolver, "/OTHER/x")
    assert status == 400 and "not homed" in body
    status, _, body = await fetch(resolver, "/" + quote("TEST/<script>x</script>", safe="/"))
    assert status == 404 and "<script>x" not in body and "&lt;script&gt;x" in body


async def test_json_by_accept(resolver):
    await resolver.put("TEST/j", [url_value("https://example.org")])
    status, headers, body = await fetch(resolver, "/TEST/j", {"Accept": "application/json"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert '"responseCode":1' in body and '"handle":"TEST/j"' in body
    assert headers["Vary"] == "Accept"
    status, headers, body = await fetch(resolver, "/TEST/none", {"Accept": "application/json"})
    assert status == 404 and '"responseCode":100' in body and headers["Vary"] == "Accept"
    status, headers, _ = await fetch(resolver, "/TEST/j", {"Accept": "*/*"})  # curl: redirect
    assert status == 302 and headers["Vary"] == "Accept"


async def test_lookup_form_and_query(resolver):
    status, _, body = await fetch(resolver, "/")
    assert status == 200 and '<form action="/"' in body and 'name="hdl"' in body
    status, headers, _ = await fetch(resolver, "/?hdl=TEST/abc%20d")
    assert status == 303 and headers["Location"] == "/TEST/abc%20d"


async def test_the_page_answers_304_when_unchanged(resolver):
    await resolver.put("TEST/c", [{"index": 1, "type": "DESC", "data": "no url here"}])
    status, headers, _ = await fetch(resolver, "/TEST/c")
    etag = headers["ETag"]
    status, _, body = await fetch(resolver, "/TEST/c", {**BROWSER, "If-None-Match": etag})
    assert status == 304 and body == ""
    await resolver.put("TEST/c", [{"index": 1, "type": "DESC", "data": "changed"}])
    status, _, body = await fetch(resolver, "/TEST/c", {**BROWSER, "If-None-Match": etag})
    assert status == 200 and "changed" in body


async def test_head_and_the_api_are_not_shadowed(resolver):
    await resolver.put("TEST/h", [url_value("https://example.org")])
    async with resolver.client.head("/TEST/h", allow_redirects=False) as resp:
        assert resp.status == 302
    status, body = await resolver.get("TEST/h")
    assert status == 200 and body["handle"] == "TEST/h"


# -- hostile requests: open redirects, unparseable input, pages' headers -------------------------

APPEND_CASES = [
    # (id, stored URL, urlappend, status, Location)
    ("path", "https://example.org/doc", "/part", 302, "https://example.org/doc/part"),
    ("query", "https://example.org", "?x=1", 302, "https://example.org?x=1"),
    ("fragment", "https://example.org/d", "#p2", 302, "https://example.org/d#p2"),
    ("user-info", "https://example.org", "@evil.example", 400, None),
    ("longer-host", "https://example.org", ".evil.example/x", 400, None),
    ("port", "https://example.org", ":8443/x", 400, None),
    ("unparseable", "https://example.org", "[", 400, None),
    ("bracketed-host", "https://example.org", "]", 400, None),
    (
        "crlf",
        "https://example.org/d",
        "\r\nSet-Cookie: a=b",
        302,
        "https://example.org/d%0D%0ASet-Cookie:%20a=b",
    ),
]


@pytest.mark.parametrize(
    ("url", "append", "status", "location"),
    [c[1:] for c in APPEND_CASES],
    ids=[c[0] for c in APPEND_CASES],
)
async def test_urlappend_never_changes_the_target_host(resolver, url, append, status, location):
    assert (await resolver.put("TEST/app", [url_value(url)]))[0] == 201
    got, headers, body = await fetch(resolver, "/TEST/app?urlappend=" + quote(append, safe=""))
    assert got == status, body
    if location is None:
        assert "Location" not in headers and "urlappend" in body
    else:
        assert headers["Location"] == location


async def test_urlappend_is_checked_against_location_lists_too(resolver):
    await resolver.put(
        "TEST/lapp", [loc('<locations><location href="https://a.org"/></locations>')]
    )
    status, headers, _ = await fetch(resolver, "/TEST/lapp?urlappend=%40evil.example")
    assert status == 400 and "Location" not in headers
    status, headers, _ = await fetch(resolver, "/TEST/lapp?urlappend=%2Fy")
    assert status == 302 and headers["Location"] == "https://a.org/y"


@pytest.mark.parametrize("hdl", ["/evil.example/x", "//evil.example/x", "/\\evil.example", "\\\\x"])
async def test_the_lookup_form_redirects_only_to_this_server(resolver, hdl):
    status, headers, _ = await fetch(resolver, "/?hdl=" + quote(hdl, safe=""))
    assert status == 303
    location = headers["Location"]
    assert location.startswith("/") and not location.startswith("//"), location
    assert "\\" not in location


async def test_a_stored_unparseable_url_is_shown_not_a_500(resolver):
    await resolver.put("TEST/oops", [url_value("http://[oops")])
    status, _, body = await fetch(resolver, "/TEST/oops?noredirect")
    assert status == 200 and "http://[oops" in body and 'href="http://[oops"' not in body
    status, headers, body = await fetch(resolver, "/TEST/oops")
    assert status == 302 and headers["Location"] == "http://[oops"


async def test_pages_carry_security_headers(resolver):
    await resolver.put("TEST/sec", [url_value("https://example.org")])
    for path in ("/", "/TEST/sec?noredirect", "/TEST/none", "/TEST/sec", "/api/docs"):
        async with resolver.client.get(path, headers=BROWSER, allow_redirects=False) as resp:
            assert resp.content_type == "text/html", path
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["X-Frame-Options"] == "DENY"
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert "script-src" not in csp and "unsafe-inline" not in csp
    async with resolver.client.get("/api/handles/TEST/sec") as resp:
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "Content-Security-Policy" not in resp.headers


async def test_location_lists_are_parsed_once_per_cache_entry(aiohttp_client, tmp_path):
    app = create_app(make_config(tmp_path))
    resolver = Api(await aiohttp_client(app))
    xml = '<locations><location href="https://a.org/one"/></locations>'
    await resolver.put("TEST/once", [loc(xml)])
    assert (await fetch(resolver, "/TEST/once"))[1]["Location"] == "https://a.org/one"
    cache = app[keys.SERVICE].cache
    entry = await cache.lookup("TEST/once")
    kept = entry.locations
    assert kept is not None and kept[0][0].get("href") == "https://a.org/one"
    assert (await fetch(resolver, "/TEST/once"))[1]["Location"] == "https://a.org/one"
    assert (await cache.lookup("TEST/once")).locations is kept  # not parsed again
    # A write drops the entry and with it the parsed form.
    await resolver.put("TEST/once", [loc(xml.replace("one", "two"))])
    assert (await fetch(resolver, "/TEST/once"))[1]["Location"] == "https://a.org/two"
