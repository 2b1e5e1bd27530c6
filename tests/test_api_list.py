"""GET /api/handles?prefix=P&page=K&pageSize=S."""

from __future__ import annotations

import orjson
import pytest

from .helpers import ADMIN_AUTH, OTHER_AUTH, url_value

NAMES = [f"TEST/h{i:02d}" for i in range(25)]


@pytest.fixture
async def handles(api):
    for name in reversed(NAMES):
        status, _ = await api.put(name, [url_value("https://a.org")])
        assert status == 201
    await api.put("10.5555/elsewhere", [url_value("https://b.org")], headers=OTHER_AUTH)


async def test_list_everything_in_a_stable_order(api, handles):
    status, body = await api.list({"prefix": "TEST"})
    assert status == 200
    assert body == {"responseCode": 1, "prefix": "TEST", "totalCount": "25", "handles": NAMES}
    assert api.last.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    ("page", "size", "expected"),
    [
        (0, 10, NAMES[:10]),
        (1, 10, NAMES[10:20]),
        (2, 10, NAMES[20:]),
        (3, 10, []),
        (0, 0, []),
        (0, 100, NAMES),
        (24, 1, NAMES[24:]),
    ],
)
async def test_pages_are_zero_based(api, handles, page, size, expected):
    status, body = await api.list({"prefix": "TEST", "page": page, "pageSize": size})
    assert status == 200
    assert body == {
        "responseCode": 1,
        "prefix": "TEST",
        "totalCount": "25",
        "page": page,
        "pageSize": size,
        "handles": expected,
    }


@pytest.mark.parametrize(
    "params",
    [{"page": -1, "pageSize": 10}, {"page": 0}, {"pageSize": 5}, {"page": 2, "pageSize": -1}],
)
async def test_missing_or_negative_paging_lists_all(api, handles, params):
    _, body = await api.list({"prefix": "TEST", **params})
    assert body["handles"] == NAMES and "page" not in body


async def test_pages_cover_the_listing_exactly_once(api, handles):
    seen = []
    for page in range(4):
        _, body = await api.list({"prefix": "TEST", "page": page, "pageSize": 7})
        seen += body["handles"]
    assert seen == NAMES


async def test_prefix_handle_form_and_echo(api, handles):
    _, body = await api.list({"prefix": "0.NA/TEST"})
    assert body["prefix"] == "0.NA/TEST" and body["totalCount"] == "25"
    _, body = await api.list({"prefix": "test"})
    assert body["prefix"] == "test" and len(body["handles"]) == 25


async def test_deleted_handles_leave_the_listing(api, handles):
    await api.delete(NAMES[0])
    _, body = await api.list({"prefix": "TEST"})
    assert body["totalCount"] == "24" and body["handles"] == NAMES[1:]


@pytest.mark.parametrize(
    ("params", "headers", "status", "code"),
    [
        ({"prefix": "TEST"}, {}, 401, 402),
        ({"prefix": "TEST"}, OTHER_AUTH, 403, 400),
        ({"prefix": "OTHER"}, ADMIN_AUTH, 400, 301),
        ({"prefix": "TEST", "page": "x", "pageSize": "10"}, ADMIN_AUTH, 400, 4),
        ({"prefix": "TEST", "page": "0", "pageSize": "1e3"}, ADMIN_AUTH, 400, 4),
        ({"prefix": "TEST", "page": "0", "pageSize": str(2**40)}, ADMIN_AUTH, 400, 4),
        ({"prefix": ""}, ADMIN_AUTH, 400, 102),
        ({}, ADMIN_AUTH, 400, 102),
    ],
    ids=[
        "no-credentials",
        "other-prefix-admin",
        "not-homed",
        "page-not-int",
        "size-not-int",
        "size-too-big",
        "empty-prefix",
        "no-prefix",
    ],
)
async def test_listing_refusals(api, handles, params, headers, status, code):
    got_status, body = await api.list(params, headers=headers)
    assert (got_status, body["responseCode"]) == (status, code)
    assert body["message"]


async def test_empty_handle_without_prefix_is_invalid(client):
    async with client.get("/api/handles/") as resp:
        body = await resp.json()
    assert resp.status == 400 and body["responseCode"] == 102


async def test_a_page_answered_whole_is_byte_for_byte_the_streamed_one(api):
    """Pages of up to 1,000 handles are answered in one write; larger ones are streamed. The
    same thousand handles, as a page of 1,000 and as one of 1,001, are the same bytes but
    for the pageSize they repeat."""
    operations = [
        {"op": "put", "handle": f"TEST/w{i:04d}", "values": [url_value(f"https://e.org/{i}")]}
        for i in range(1000)
    ]
    status, _ = await api._call(
        "POST", "/api/batch", json={"operations": operations}, headers=ADMIN_AUTH
    )
    assert status == 200
    bodies = []
    for size in (1000, 1001):
        async with api.client.get(
            "/api/handles", params={"prefix": "TEST", "page": 0, "pageSize": size},
            headers=ADMIN_AUTH,
        ) as resp:  # fmt: skip
            assert resp.status == 200 and resp.content_type == "application/json"
            chunked = resp.headers.get("Transfer-Encoding") == "chunked"
            bodies.append((chunked, await resp.read()))
    (whole_chunked, whole), (streamed_chunked, streamed) = bodies
    assert (whole_chunked, streamed_chunked) == (False, True)
    assert whole.replace(b'"pageSize":1000', b'"pageSize":1001') == streamed
    assert len(orjson.loads(whole)["handles"]) == 1000
