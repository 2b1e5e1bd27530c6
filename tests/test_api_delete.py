"""DELETE /api/handles/{handle}, whole or ?index=."""

from __future__ import annotations

import pytest

from .helpers import OTHER_AUTH, url_value


@pytest.fixture
async def record(api):
    await api.put(
        "TEST/d",
        [
            url_value("https://a.org", 1),
            {"index": 2, "type": "X", "data": "2"},
            {"index": 3, "type": "X", "data": "3"},
        ],
    )


async def test_delete_a_handle(api, record):
    status, body = await api.delete("test/D")
    assert (status, body) == (200, {"responseCode": 1, "handle": "test/D"})
    status, _ = await api.get("TEST/d")
    assert status == 404


async def test_delete_a_missing_handle_is_404_and_names_it(api):
    status, body = await api.delete("TEST/none")
    assert status == 404 and body["responseCode"] == 100 and body["handle"] == "TEST/none"


async def test_delete_values_by_index(api, record):
    status, body = await api.delete("TEST/d", params=[("index", "2"), ("index", "3")])
    assert (status, body) == (200, {"responseCode": 1, "handle": "TEST/d"})
    assert [v["index"] for v in await api.values("TEST/d")] == [1]


async def test_deleting_a_missing_index_is_400_code_200_and_removes_nothing(api, record):
    status, body = await api.delete("TEST/d", params=[("index", "2"), ("index", "99")])
    assert status == 400 and body["responseCode"] == 200 and "99" in body["message"]
    assert [v["index"] for v in await api.values("TEST/d")] == [1, 2, 3]


async def test_delete_values_of_a_missing_handle_is_404(api):
    status, body = await api.delete("TEST/none", params={"index": "1"})
    assert status == 404 and body["responseCode"] == 100


@pytest.mark.parametrize(("headers", "status", "code"), [({}, 401, 402), (OTHER_AUTH, 403, 400)])
async def test_delete_needs_an_admin(api, record, headers, status, code):
    got_status, body = await api.delete("TEST/d", headers=headers)
    assert (got_status, body["responseCode"]) == (status, code)
    assert await api.values("TEST/d") is not None


async def test_delete_index_not_an_integer_is_400(api, record):
    status, body = await api.delete("TEST/d", params={"index": "two"})
    assert status == 400 and body["responseCode"] == 4
    assert len(await api.values("TEST/d")) == 3


async def test_delete_not_homed_is_400_code_301(api):
    status, body = await api.delete("OTHER/x")
    assert status == 400 and body["responseCode"] == 301
