"""Record history over the REST API: GET /api/history/{handle} and ?version=N, on both
backends: every kind of change through the single requests and batches, who may read it, and
what it shows."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from handle_server.app import create_app
from handle_server.auth.secrets import REDACTED

from .helpers import (
    ADMIN,
    ADMIN_AUTH,
    OTHER_AUTH,
    Api,
    admin,
    basic,
    make_config,
    seckey,
    url_value,
    vlist,
)

PRIVATE = {"index": 2, "type": "EMAIL", "data": "x@a.org", "permissions": "1100"}
NOBODY = {"index": 3, "type": "NOTE", "data": "hidden", "permissions": "0000"}


async def history(api: Api, handle: str, *, headers=ADMIN_AUTH, params=None):
    return await api._call("GET", f"/api/history/{handle}", headers=headers, params=params)


def urls(version: dict) -> list:
    return [v["data"]["value"] for v in version["values"]]


async def test_every_change_is_a_version_with_who_and_what(api):
    await api.put("TEST/h", [url_value("https://one.org")])
    await api.put("TEST/h", [{"index": 2, "type": "X", "data": "x"}], params={"index": "2"})
    await api.put("TEST/h", [url_value("https://two.org")], params={"index": "1"})
    await api.delete("TEST/h", params={"index": "2"})
    await api.put("TEST/h", [url_value("https://three.org", 5)])
    batch = {"operations": [{"op": "delete", "handle": "TEST/h"}]}
    await api._call(
        "POST", "/api/batch", data=orjson.dumps(batch),
        headers={"Content-Type": "application/json", **ADMIN_AUTH},
    )  # fmt: skip
    await api.put("TEST/h", [url_value("https://again.org")])  # made again: continues
    status, body = await history(api, "test/H")
    assert status == 200 and api.last.headers["Cache-Control"] == "private, no-store"
    assert body["responseCode"] == 1 and body["handle"] == "test/H" and body["totalCount"] == 7
    versions = body["versions"]
    assert [(v["version"], v["operation"], v["by"]) for v in versions] == [
        (1, "create", ADMIN),
        (2, "add", ADMIN),
        (3, "modify", ADMIN),
        (4, "remove", ADMIN),
        (5, "replace", ADMIN),
        (6, "delete", ADMIN),
        (7, "create", ADMIN),
    ]
    assert urls(versions[0]) == ["https://one.org"]
    assert urls(versions[2]) == ["https://two.org", "x"]
    assert versions[5]["values"] == []
    assert all(v["timestamp"].endswith("Z") for v in versions)
    # Pages, as the listing's.
    status, body = await history(api, "TEST/h", params={"page": "1", "pageSize": "3"})
    assert (body["page"], body["pageSize"], body["totalCount"]) == (1, 3, 7)
    assert [v["version"] for v in body["versions"]] == [4, 5, 6]


async def test_a_version_of_a_record_and_of_a_deleted_handle(api):
    await api.put("TEST/v", [url_value("https://one.org")])
    await api.put("TEST/v", [url_value("https://two.org")])
    await api.delete("TEST/v")
    status, body = await api.get("TEST/v", params={"version": "1"}, headers=ADMIN_AUTH)
    assert status == 200 and body["responseCode"] == 1 and body["version"] == 1
    assert urls(body) == ["https://one.org"] and body["operation"] == "create"
    status, body = await api.get("TEST/v", params={"version": "3"}, headers=ADMIN_AUTH)
    assert (status, body["responseCode"], body["values"]) == (200, 200, [])
    status, body = await api.get("TEST/v", params={"version": "4"}, headers=ADMIN_AUTH)
    assert (status, body["responseCode"]) == (404, 100) and "no version 4" in body["message"]
    # The handle itself is gone, as the reference answers.
    assert (await api.get("TEST/v"))[0] == 404
    for bad in ("0", "x", "-1"):
        status, body = await api.get("TEST/v", params={"version": bad}, headers=ADMIN_AUTH)
        assert (status, body["responseCode"]) == (400, 4)


async def test_who_may_read_a_history(api):
    """Anonymous: 401. An identity without READ_VALUE (here: one that may only add values):
    403. One with it (an HS_ADMIN of the handle): every version. Refusals are the same for a
    deleted handle; one that never existed is 404 to those allowed at all."""
    user = basic("300:TEST/USER", "user-pass")
    await api.put("TEST/USER", [seckey(300, "user-pass")])
    await api.put("TEST/mine", [url_value("https://a.org"), admin("TEST/USER", 300)])
    await api.put("TEST/theirs", [url_value("https://b.org")])
    assert (await history(api, "TEST/mine", headers={}))[0] == 401
    status, body = await history(api, "TEST/theirs", headers=user)
    assert (status, body["responseCode"]) == (403, 400)
    status, body = await history(api, "TEST/mine", headers=user)
    assert status == 200 and body["totalCount"] == 1
    await api.delete("TEST/mine")
    assert (await history(api, "TEST/mine", headers=user))[0] == 200
    assert (await history(api, "TEST/theirs", headers=OTHER_AUTH))[0] == 403
    status, body = await history(api, "TEST/never")
    assert (status, body["responseCode"]) == (404, 100)
    status, body = await api.get("TEST/theirs", params={"version": "1"}, headers=user)
    assert (status, body["responseCode"]) == (403, 400)


async def test_a_history_never_shows_what_nobody_may_read_nor_secrets(api):
    await api.put("TEST/s", [url_value("https://a.org"), PRIVATE, NOBODY, seckey(300, "pw")])
    _, body = await history(api, "TEST/s")
    (version,) = body["versions"]
    shown = {v["index"]: v["data"]["value"] for v in version["values"]}
    assert shown == {1: "https://a.org", 2: "x@a.org", 300: REDACTED.decode()}
    assert "hidden" not in str(body) and "pw" not in orjson.dumps(body).decode()


@pytest.mark.parametrize(("path", "code"), [("/api/history/", 102), ("/api/history/NOPE/x", 301)])
async def test_a_history_needs_a_handle_homed_here(api, path, code):
    status, body = await api._call("GET", path, headers=ADMIN_AUTH)
    assert (status, body["responseCode"]) == (400, code)


async def test_writes_by_a_group_member_name_the_member(api):
    await api.put("TEST/USER", [seckey(300, "user-pass")])
    await api.put("0.NA/TEST", [vlist(201, ("TEST/USER", 300))], params={"index": "201"})
    await api.put("0.NA/TEST", [admin("0.NA/TEST", 201, at=101)], params={"index": "101"})
    user = basic("300:TEST/USER", "user-pass")
    made = [url_value("https://u.org"), admin("0.NA/TEST", 201)]
    assert (await api.put("TEST/by-user", made, headers=user))[0] == 201
    _, body = await history(api, "TEST/by-user")
    assert [v["by"] for v in body["versions"]] == ["300:TEST/USER"]


async def test_the_server_prunes_what_history_no_longer_keeps(
    aiohttp_client, tmp_path, storage_table
):
    config = make_config(
        tmp_path, storage=storage_table, history={"keep_versions": 2, "prune_every": 1}
    )
    api = Api(await aiohttp_client(create_app(config)))
    for n in range(4):
        await api.put("TEST/pruned", [url_value(f"https://{n}.org")])
    await api.delete("TEST/pruned")
    for _ in range(100):  # pruned within a second or so
        _, body = await history(api, "TEST/pruned")
        if body["totalCount"] == 2:
            break
        await asyncio.sleep(0.05)
    assert [(v["version"], v["operation"]) for v in body["versions"]] == [
        (4, "modify"),
        (5, "delete"),
    ]
