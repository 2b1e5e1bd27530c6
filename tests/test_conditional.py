"""Conditional writes: If-Match and If-None-Match on PUT and DELETE, decided against the record
the write changes (the writer's own publicOnly=false read of it), on both backends."""

from __future__ import annotations

import asyncio

import pytest

from handle_server.app import create_app

from .helpers import ADMIN_AUTH, OTHER_AUTH, Api, url_value

PRIVATE = {"index": 2, "type": "EMAIL", "data": "x@a.org", "permissions": "1100"}


async def etag(api: Api, handle: str, *, headers=ADMIN_AUTH, params=None) -> str:
    status, _ = await api.get(handle, headers=headers, params=params)
    assert status == 200
    return api.last.headers["ETag"]


@pytest.fixture
async def record(api: Api) -> str:
    assert (await api.put("TEST/c", [url_value("https://a.org")]))[0] == 201
    return await etag(api, "TEST/c")


async def test_a_write_with_the_current_tag_applies_and_the_old_tag_then_fails(api, record):
    status, body = await api.put(
        "TEST/c", [url_value("https://b.org")], headers={**ADMIN_AUTH, "If-Match": record}
    )
    assert (status, body) == (200, {"responseCode": 1, "handle": "TEST/c"})
    status, body = await api.put(
        "TEST/c", [url_value("https://c.org")], headers={**ADMIN_AUTH, "If-Match": record}
    )
    assert (status, body["responseCode"], body["handle"]) == (412, 2, "TEST/c")
    assert "If-Match" in body["message"]
    assert (await api.values("TEST/c"))[0]["data"]["value"] == "https://b.org"
    # The answer after the write carries the new tag, which works for the next write.
    fresh = await etag(api, "TEST/c")
    assert fresh != record
    status, _ = await api.put(
        "TEST/c", [url_value("https://d.org")], headers={**ADMIN_AUTH, "If-Match": fresh}
    )
    assert status == 200


async def test_a_tag_in_a_list_and_the_pretty_tag_match(api, record):
    pretty = await etag(api, "TEST/c", params={"pretty": ""})
    assert pretty != record
    listed = f'"00000000000000000000000000000000", {pretty}'
    status, _ = await api.put(
        "TEST/c", [url_value("https://b.org")], headers={**ADMIN_AUTH, "If-Match": listed}
    )
    assert status == 200


async def test_a_public_read_tags_a_record_without_private_values(api, record):
    """Anyone's read shows the writer's whole view of a record whose values are all public."""
    public = await etag(api, "TEST/c", headers={})
    assert public == record
    status, _ = await api.put(
        "TEST/c", [url_value("https://b.org")], headers={**ADMIN_AUTH, "If-Match": public}
    )
    assert status == 200


async def test_the_tag_is_of_the_writers_view_private_values_included(api):
    await api.put("TEST/p", [url_value("https://a.org"), PRIVATE])
    public = await etag(api, "TEST/p", headers={})
    full = await etag(api, "TEST/p")
    assert public != full
    change = [url_value("https://b.org"), PRIVATE]
    status, body = await api.put("TEST/p", change, headers={**ADMIN_AUTH, "If-Match": public})
    assert (status, body["responseCode"]) == (412, 2)
    status, _ = await api.put("TEST/p", change, headers={**ADMIN_AUTH, "If-Match": full})
    assert status == 200


async def test_a_changed_private_value_changes_the_tag(api):
    """Two tools editing one record: one changes only a private value; the other, which read
    before, is refused."""
    await api.put("TEST/p", [url_value("https://a.org"), PRIVATE])
    seen = await etag(api, "TEST/p")
    other = {**PRIVATE, "data": "y@a.org"}
    assert (await api.put("TEST/p", [other], params={"index": "2"}))[0] == 200
    status, _ = await api.put(
        "TEST/p", [url_value("https://b.org"), PRIVATE], headers={**ADMIN_AUTH, "If-Match": seen}
    )
    assert status == 412
    assert (await api.values("TEST/p"))[1]["data"]["value"] == "y@a.org"


async def test_if_none_match_star_creates_only(api, record):
    star = {**ADMIN_AUTH, "If-None-Match": "*"}
    status, body = await api.put("TEST/new", [url_value("https://n.org")], headers=star)
    assert (status, body["responseCode"]) == (201, 1)
    status, body = await api.put("TEST/c", [url_value("https://b.org")], headers=star)
    assert (status, body["responseCode"]) == (412, 2) and "If-None-Match" in body["message"]
    assert (await api.values("TEST/c"))[0]["data"]["value"] == "https://a.org"


async def test_if_none_match_with_the_current_tag_refuses(api, record):
    headers = {**ADMIN_AUTH, "If-None-Match": record}
    status, _ = await api.put("TEST/c", [url_value("https://b.org")], headers=headers)
    assert status == 412
    headers = {**ADMIN_AUTH, "If-None-Match": '"00000000000000000000000000000000"'}
    status, _ = await api.put("TEST/c", [url_value("https://b.org")], headers=headers)
    assert status == 200


async def test_if_match_star_needs_a_record(api, record):
    star = {**ADMIN_AUTH, "If-Match": "*"}
    status, body = await api.put("TEST/absent", [url_value("https://n.org")], headers=star)
    assert (status, body["responseCode"]) == (412, 2) and "does not exist" in body["message"]
    assert await api.values("TEST/absent") is None
    assert (await api.put("TEST/c", [url_value("https://b.org")], headers=star))[0] == 200


async def test_a_tag_for_a_handle_that_does_not_exist_fails_its_creation(api, record):
    status, _ = await api.put(
        "TEST/absent", [url_value("https://n.org")], headers={**ADMIN_AUTH, "If-Match": record}
    )
    assert status == 412
    assert await api.values("TEST/absent") is None


async def test_conditional_deletes(api, record):
    stale = '"00000000000000000000000000000000"'
    status, body = await api.delete("TEST/c", headers={**ADMIN_AUTH, "If-Match": stale})
    assert (status, body["responseCode"]) == (412, 2)
    assert await api.values("TEST/c") is not None
    status, _ = await api.delete("TEST/c", headers={**ADMIN_AUTH, "If-Match": record})
    assert status == 200
    assert await api.values("TEST/c") is None


async def test_conditional_value_writes(api, record):
    """PUT ?index= and DELETE ?index= are conditional too, and a stale tag wins over the
    missing index it names (the precondition comes before the operation's own answer)."""
    added = [{"index": 2, "type": "X", "data": "x"}]
    status, _ = await api.put(
        "TEST/c", added, params={"index": "2"}, headers={**ADMIN_AUTH, "If-Match": record}
    )
    assert status == 201
    status, _ = await api.delete(
        "TEST/c", params={"index": "2"}, headers={**ADMIN_AUTH, "If-Match": record}
    )
    assert status == 412
    status, _ = await api.delete(
        "TEST/c", params={"index": "9"}, headers={**ADMIN_AUTH, "If-Match": record}
    )
    assert status == 412
    current = await etag(api, "TEST/c")
    status, body = await api.delete(
        "TEST/c", params={"index": "9"}, headers={**ADMIN_AUTH, "If-Match": current}
    )
    assert (status, body["responseCode"]) == (400, 200)
    assert [v["index"] for v in await api.values("TEST/c")] == [1, 2]


async def test_permission_comes_before_the_condition(api, record):
    """Whoever may not write learns nothing of the record from the condition."""
    stale = '"00000000000000000000000000000000"'
    for tag in (stale, record):
        status, body = await api.put(
            "TEST/c", [url_value("https://b.org")], headers={**OTHER_AUTH, "If-Match": tag}
        )
        assert (status, body["responseCode"]) == (403, 400)
        status, body = await api.put(
            "TEST/c", [url_value("https://b.org")], headers={"If-Match": tag}
        )
        assert (status, body["responseCode"]) == (401, 402)


@pytest.mark.parametrize(
    "header",
    [
        "W/{tag}",  # weak: strong comparison never matches it
        "{bare}",  # not quoted: not an entity tag at all (400)
        '{tag} "x"',  # no comma between tags (400)
    ],
)
async def test_weak_and_malformed_tags_change_nothing(api, record, header):
    value = header.format(tag=record, bare=record.strip('"'))
    status, body = await api.put(
        "TEST/c", [url_value("https://b.org")], headers={**ADMIN_AUTH, "If-Match": value}
    )
    if value.startswith("W/"):
        assert (status, body["responseCode"]) == (412, 2)
    else:
        assert (status, body["responseCode"]) == (400, 4) and "entity tag" in body["message"]
    assert (await api.values("TEST/c"))[0]["data"]["value"] == "https://a.org"


async def test_fifty_conditional_writes_from_one_tag_have_exactly_one_winner(
    aiohttp_client, config
):
    """Two nodes on one store, 25 writes each, all holding the same tag: one applies, 49 are
    refused, and the record is the winner's."""
    a = Api(await aiohttp_client(create_app(config)))
    b = Api(await aiohttp_client(create_app(config)))
    assert (await a.put("TEST/race", [url_value("https://start.org")]))[0] == 201
    tag = await etag(a, "TEST/race")
    results = await asyncio.gather(
        *(
            (a if n % 2 else b).put(
                "TEST/race",
                [url_value(f"https://{n}.org")],
                headers={**ADMIN_AUTH, "If-Match": tag},
            )
            for n in range(50)
        )
    )
    statuses = [status for status, _ in results]
    assert sorted(statuses) == [200] + [412] * 49
    winner = statuses.index(200)
    assert (await a.values("TEST/race"))[0]["data"]["value"] == f"https://{winner}.org"
    assert (await b.values("TEST/race"))[0]["data"]["value"] == f"https://{winner}.org"
