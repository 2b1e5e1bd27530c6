"""GET /api/handles/{handle}: resolution, filters, publicOnly, and the prefix handle."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from handle_server.auth.secrets import REDACTED

from .helpers import ADMIN_AUTH, OTHER_AUTH, SECRET, url_value

RECORD = [
    url_value("https://example.org/a", 1),
    {"index": 2, "type": "EMAIL", "data": "root@example.org"},
    {"index": 3, "type": "EMAIL.work", "data": "work@example.org"},
    {"index": 4, "type": "email.home", "data": "home@example.org"},
    {"index": 5, "type": "EMAILX", "data": "x@example.org"},
    {"index": 6, "type": "SECRET", "data": "only admins", "permissions": "1100"},
]


@pytest.fixture
async def record(api):
    status, _ = await api.put("TEST/rec", RECORD)
    assert status == 201


async def test_prefix_handle_resolves_for_clients_and_never_shows_a_secret(api):
    status, body = await api.get("0.NA/TEST")
    assert status == 200 and body["responseCode"] == 1 and body["handle"] == "0.NA/TEST"
    by_index = {v["index"]: v for v in body["values"]}
    assert by_index[200]["type"] == "HS_VLIST"
    assert by_index[200]["data"] == {
        "format": "vlist",
        "value": [{"handle": "0.NA/TEST", "index": 300}],
    }
    assert by_index[100]["data"]["value"] == {
        "handle": "0.NA/TEST",
        "index": 200,
        "permissions": "111111111111",
    }
    assert 300 not in by_index  # the HS_SECKEY value is not public
    # An admin sees that there is an HS_SECKEY value, but neither the secret nor its hash.
    status, body = await api.get("0.NA/TEST", headers=ADMIN_AUTH)
    seckey = {v["index"]: v for v in body["values"]}[300]
    assert seckey["type"] == "HS_SECKEY" and seckey["permissions"] == "1100"
    assert seckey["data"] == {"format": "string", "value": REDACTED.decode()}
    assert SECRET not in await api.last.text() and "pbkdf2" not in await api.last.text()


async def test_missing_handle_is_404_with_code_100(api):
    status, body = await api.get("TEST/nothing")
    assert (status, body) == (
        404,
        {"responseCode": 100, "handle": "TEST/nothing", "message": "Handle TEST/nothing not found"},
    )


@pytest.mark.parametrize("handle", ["OTHER/x", "0.NA/OTHER", "0.NA/TEST/more", "TEST.SUB/x"])
async def test_handle_not_homed_here_is_400_with_code_301(api, handle):
    status, body = await api.get(handle)
    assert status == 400 and body["responseCode"] == 301 and body["handle"] == handle


async def test_full_record_and_exact_echo_of_the_requested_handle(api, record):
    status, body = await api.get("test/REC")
    assert status == 200 and body["responseCode"] == 1 and body["handle"] == "test/REC"
    assert [v["index"] for v in body["values"]] == [1, 2, 3, 4, 5]  # 6 is private
    first = body["values"][0]
    assert first["data"] == {"format": "string", "value": "https://example.org/a"}
    assert first["ttl"] == 86400 and first["timestamp"].endswith("Z")
    assert "permissions" not in first  # only shown when not the default 1110


@pytest.mark.parametrize(
    ("params", "indexes"),
    [
        ([("index", "1")], [1]),
        ([("index", "1"), ("index", "3")], [1, 3]),
        ([("type", "EMAIL")], [2]),
        ([("type", "email")], [2]),
        ([("type", "EMAIL.")], [2, 3, 4]),
        ([("type", "EMAIL.work")], [3]),
        ([("type", "URL"), ("type", "EMAIL.home")], [1, 4]),
        ([("index", "5"), ("type", "URL")], [1, 5]),
        ([("index", "1"), ("type", "URL")], [1]),
    ],
)
async def test_index_and_type_filters_select_the_union(api, record, params, indexes):
    status, body = await api.get("TEST/rec", params=params)
    assert status == 200 and body["responseCode"] == 1
    assert [v["index"] for v in body["values"]] == indexes


@pytest.mark.parametrize("params", [[("index", "99")], [("type", "NONE")], [("type", "SECRET")]])
async def test_no_matching_value_is_200_with_code_200_and_no_values(api, record, params):
    status, body = await api.get("TEST/rec", params=params)
    assert (status, body) == (200, {"responseCode": 200, "handle": "TEST/rec", "values": []})


@pytest.mark.parametrize("params", [{"index": "one"}, {"index": "1.5"}, {"index": ""}])
async def test_non_integer_index_is_400_with_code_4(api, record, params):
    status, body = await api.get("TEST/rec", params=params)
    assert status == 400 and body["responseCode"] == 4 and "index" in body["message"]


async def test_public_only_defaults(api, record):
    # Without credentials: private values are dropped silently.
    _, body = await api.get("TEST/rec", params={"type": "SECRET"})
    assert body["values"] == []
    # Asking for them without credentials: 401, a challenge.
    status, body = await api.get("TEST/rec", params={"publicOnly": "false"})
    assert status == 401 and body["responseCode"] == 402
    assert api.last.headers["WWW-Authenticate"].startswith("Basic")
    # With credentials, publicOnly defaults to false.
    _, body = await api.get("TEST/rec", headers=ADMIN_AUTH)
    assert [v["index"] for v in body["values"]] == [1, 2, 3, 4, 5, 6]
    assert body["values"][-1]["permissions"] == "1100"
    _, body = await api.get("TEST/rec", headers=ADMIN_AUTH, params={"publicOnly": "true"})
    assert [v["index"] for v in body["values"]] == [1, 2, 3, 4, 5]


async def test_private_values_need_an_admin_of_the_handle(api, record):
    # As the reference (authenticateUser): an identity not granted READ_VALUE is rc 400.
    status, body = await api.get("TEST/rec", headers=OTHER_AUTH, params={"publicOnly": "false"})
    assert status == 403 and body["responseCode"] == 400
    # ... unless nothing private is asked for.
    status, body = await api.get("TEST/rec", headers=OTHER_AUTH, params={"index": "1"})
    assert status == 200 and [v["index"] for v in body["values"]] == [1]


async def test_a_value_nobody_may_read_is_refused_even_to_an_admin(api):
    await api.put(
        "TEST/sealed",
        [url_value("https://x.org"), {"index": 2, "type": "X", "data": "s", "permissions": "0000"}],
    )
    status, body = await api.get("TEST/sealed", headers=ADMIN_AUTH)
    assert status == 403 and body["responseCode"] == 401
    _, body = await api.get("TEST/sealed")
    assert [v["index"] for v in body["values"]] == [1]


async def test_auth_parameter_works_without_credentials(api, record):
    status, body = await api.get("TEST/rec", params={"auth": "true", "index": "1"})
    assert status == 200 and body["values"][0]["index"] == 1


async def test_bad_boolean_is_refused(api, record):
    status, body = await api.get("TEST/rec", params={"publicOnly": "perhaps"})
    assert status == 400 and body["responseCode"] == 4 and "publicOnly" in body["message"]


async def test_wrong_credentials_on_a_read_are_401(api, record):
    status, body = await api.get("TEST/rec", headers={"Authorization": "Basic bm9wZTpub3Bl"})
    assert status == 401 and body["responseCode"] == 403


@pytest.mark.parametrize("name", ["TEST/ünïcødé", "TEST/with space", "TEST/a?b#c", "TEST/x/y"])
async def test_percent_encoded_handles_round_trip(api, name):
    encoded = quote(name, safe="/")
    status, _ = await api.put(encoded, [url_value("https://x.org")])
    assert status == 201
    status, body = await api.get(encoded)
    assert status == 200 and body["handle"] == name
    # An encoded slash is the same handle.
    status, body = await api.get(quote(name, safe=""))
    assert status == 200 and body["handle"] == name


async def test_pretty_and_head(api, client, record):
    async with client.get("/api/handles/TEST/rec?pretty") as resp:
        text = await resp.text()
    assert text.startswith("{\n  ")
    async with client.head("/api/handles/TEST/rec") as resp:
        assert resp.status == 200


async def test_unknown_api_endpoint_and_method_answer_json(client):
    async with client.get("/api/nothing") as resp:
        assert resp.status == 404 and (await resp.json())["responseCode"] == 4
    async with client.patch("/api/handles/TEST/x") as resp:
        body = await resp.json()
        assert resp.status == 405 and body["responseCode"] == 4
        assert "PUT" in resp.headers["Allow"]
    async with client.put("/api/handles") as resp:  # the listing: read only
        assert resp.status == 405 and resp.headers["Allow"] == "GET,HEAD"
