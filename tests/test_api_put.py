"""PUT /api/handles/{handle}: create, replace, add values, mint, value formats, bad input."""

from __future__ import annotations

import io
import logging
import re

import orjson
import pytest

from handle_server import keys
from handle_server.app import create_app
from handle_server.auth.secrets import REDACTED

from .helpers import ADMIN_AUTH, OTHER_AUTH, Api, basic, url_value

UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


async def test_create_is_201_and_replace_is_200_and_replaces_the_whole_record(api):
    status, body = await api.put(
        "TEST/c", [url_value("https://a.org"), {"index": 2, "type": "X", "data": "x"}]
    )
    assert (status, body) == (201, {"responseCode": 1, "handle": "TEST/c"})
    status, body = await api.put("TEST/c", [url_value("https://b.org")])
    assert (status, body) == (200, {"responseCode": 1, "handle": "TEST/c"})
    values = await api.values("TEST/c")
    assert [(v["index"], v["data"]["value"]) for v in values] == [(1, "https://b.org")]


async def test_overwrite_false_on_an_existing_handle_is_409_and_changes_nothing(api):
    await api.put("TEST/o", [url_value("https://a.org")])
    before = await api.values("TEST/o")
    status, body = await api.put(
        "TEST/o", [url_value("https://b.org")], params={"overwrite": "false"}
    )
    assert status == 409 and body["responseCode"] == 101 and body["handle"] == "TEST/o"
    assert await api.values("TEST/o") == before
    status, _ = await api.put(
        "TEST/o2", [url_value("https://b.org")], params={"overwrite": "false"}
    )
    assert status == 201


@pytest.mark.parametrize(
    "body",
    [
        [url_value("https://a.org")],
        {"values": [url_value("https://a.org")]},
        {"values": [url_value("https://a.org")], "handle": "test/SHAPE", "responseCode": 1},
        url_value("https://a.org"),
    ],
    ids=["array", "object", "object-with-same-handle", "single-value"],
)
async def test_every_body_shape_creates(api, body):
    status, _ = await api.put("TEST/shape", body)
    assert status == 201
    values = await api.values("TEST/shape")
    assert [v["data"]["value"] for v in values] == ["https://a.org"]


async def test_timestamps_are_set_by_the_server(aiohttp_client, config):
    clock = [1_700_000_000.0]
    api = Api(await aiohttp_client(create_app(config, clock=lambda: clock[0])))
    await api.put("TEST/t", [url_value("https://a.org", timestamp="1999-01-01T00:00:00Z")])
    assert (await api.values("TEST/t"))[0]["timestamp"] == "2023-11-14T22:13:20Z"
    clock[0] += 60
    await api.put("TEST/t", [{"index": 2, "type": "X", "data": "x"}], params={"index": "2"})
    stamps = [v["timestamp"] for v in await api.values("TEST/t")]
    assert stamps == ["2023-11-14T22:13:20Z", "2023-11-14T22:14:20Z"]


@pytest.mark.parametrize(
    ("data", "type_", "shown"),
    [
        ("plain text", "X", {"format": "string", "value": "plain text"}),
        (
            {"format": "string", "value": "tab\tand\nnewline"},
            "X",
            {"format": "string", "value": "tab\tand\nnewline"},
        ),
        ({"format": "hex", "value": "48656c6c6f"}, "X", {"format": "string", "value": "Hello"}),
        ({"format": "HEX", "value": "000102ff"}, "X", {"format": "base64", "value": "AAEC/w=="}),
        ({"format": "base64", "value": "AAEC/w=="}, "X", {"format": "base64", "value": "AAEC/w=="}),
        ({"format": "base64", "value": "SGVsbG8="}, "X", {"format": "string", "value": "Hello"}),
        (
            {"format": "string", "value": "bell\u0007"},
            "X",
            {"format": "base64", "value": "YmVsbAc="},
        ),
        (
            {
                "format": "admin",
                "value": {"handle": "0.NA/TEST", "index": "200", "permissions": "011111110011"},
            },
            "HS_ADMIN",
            {
                "format": "admin",
                "value": {"handle": "0.NA/TEST", "index": 200, "permissions": "011111110011"},
            },
        ),
        (
            {"format": "admin", "value": {"handle": "0.NA/TEST", "index": 300, "permissions": "*"}},
            "HS_ADMIN",
            {
                "format": "admin",
                "value": {"handle": "0.NA/TEST", "index": 300, "permissions": "111111111111"},
            },
        ),
        (
            {
                "format": "vlist",
                "value": [
                    {"handle": "0.NA/TEST", "index": 300},
                    {"handle": "TEST/user", "index": 301},
                ],
            },
            "HS_VLIST",
            {
                "format": "vlist",
                "value": [
                    {"handle": "0.NA/TEST", "index": 300},
                    {"handle": "TEST/user", "index": 301},
                ],
            },
        ),
        # Admin-record bytes under another type are just bytes.
        (
            {"format": "admin", "value": {"handle": "A/B", "index": 1, "permissions": "*"}},
            "X",
            {"format": "base64", "value": "D/8AAAADQS9CAAAAAQ=="},
        ),
    ],
    ids=[
        "bare-string",
        "string",
        "hex-text",
        "hex-binary",
        "base64",
        "base64-text",
        "control-char",
        "admin",
        "admin-star",
        "vlist",
        "admin-bytes-other-type",
    ],
)
async def test_data_formats_as_the_reference_server_shows_them(api, data, type_, shown):
    status, _ = await api.put("TEST/fmt", [{"index": 1, "type": type_, "data": data}])
    assert status == 201
    assert (await api.values("TEST/fmt"))[0]["data"] == shown


async def test_ttl_permissions_and_references_round_trip(api):
    body = [
        url_value("https://a.org", 1, ttl=60, permissions="1111"),
        {"index": 2, "type": "X", "data": "x", "ttl": "2030-01-01T00:00:00Z", "permissions": "10"},
        {"index": 3, "type": "X", "data": "y", "references": [{"handle": "TEST/r", "index": 1}]},
        {"index": 4, "type": "X", "data": "z", "permissions": "*"},
    ]
    await api.put("TEST/ttl", body)
    values = {v["index"]: v for v in await api.values("TEST/ttl")}
    assert values[1]["ttl"] == 60 and values[1]["permissions"] == "1111"
    # "10" sets public read and write only; the admin flags keep their defaults: 1110, the
    # default, which the reference server does not print.
    assert values[2]["ttl"] == "2030-01-01T00:00:00Z" and "permissions" not in values[2]
    assert values[3]["references"] == [{"handle": "TEST/r", "index": 1}]
    assert values[4]["permissions"] == "1111"


# -- ?index= ------------------------------------------------------------------------------------


@pytest.fixture
async def base(api):
    await api.put(
        "TEST/idx", [url_value("https://a.org", 1), {"index": 2, "type": "X", "data": "2"}]
    )


async def test_adding_new_values_is_201_and_keeps_the_others(api, base):
    status, body = await api.put(
        "TEST/idx", [{"index": 3, "type": "Y", "data": "3"}], params={"index": "3"}
    )
    assert (status, body) == (201, {"responseCode": 1, "handle": "TEST/idx"})
    assert [v["index"] for v in await api.values("TEST/idx")] == [1, 2, 3]


async def test_replacing_any_value_is_200(api, base):
    status, _ = await api.put(
        "TEST/idx",
        {"values": [url_value("https://new.org", 1), {"index": 4, "type": "Z", "data": "4"}]},
        params=[("index", "1"), ("index", "4")],
    )
    assert status == 200
    values = {v["index"]: v["data"]["value"] for v in await api.values("TEST/idx")}
    assert values == {1: "https://new.org", 2: "2", 4: "4"}


async def test_index_various(api, base):
    status, _ = await api.put(
        "TEST/idx", [{"index": 9, "type": "Y", "data": "9"}], params={"index": "various"}
    )
    assert status == 201
    status, _ = await api.put(
        "TEST/idx", [{"index": 9, "type": "Y", "data": "nine"}], params={"index": "various"}
    )
    assert status == 200


async def test_overwrite_false_refuses_existing_values_but_adds_new_ones(api, base):
    before = await api.values("TEST/idx")
    status, body = await api.put(
        "TEST/idx",
        [url_value("https://x.org", 1), {"index": 5, "type": "X", "data": "5"}],
        params=[("index", "1"), ("index", "5"), ("overwrite", "false")],
    )
    assert status == 409 and body["responseCode"] == 201 and "1" in body["message"]
    assert await api.values("TEST/idx") == before
    status, _ = await api.put(
        "TEST/idx",
        [{"index": 5, "type": "X", "data": "5"}],
        params={"index": "5", "overwrite": "false"},
    )
    assert status == 201


async def test_adding_to_a_missing_handle_is_404(api):
    status, body = await api.put("TEST/none", [url_value("https://a.org")], params={"index": "1"})
    assert status == 404 and body["responseCode"] == 100


# -- mintNewSuffix ------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", ["TEST/", "TEST/doc-"])
async def test_mint_new_suffix(api, stem):
    status, body = await api.put(
        stem, [url_value("https://a.org")], params={"mintNewSuffix": "true"}
    )
    assert status == 201 and body["responseCode"] == 1
    assert re.fullmatch(re.escape(stem) + UUID4, body["handle"])
    status, got = await api.get(body["handle"])
    assert status == 200 and got["values"][0]["data"]["value"] == "https://a.org"
    _, again = await api.put(stem, [url_value("https://b.org")], params={"mintNewSuffix": "true"})
    assert again["handle"] != body["handle"]


@pytest.mark.parametrize(
    ("stem", "params", "code"),
    [
        ("TEST", {"mintNewSuffix": "true"}, 102),
        ("0.NA/", {"mintNewSuffix": "true"}, 301),
        ("TEST/", {"mintNewSuffix": "true", "index": "1"}, 4),
    ],
)
async def test_mint_refusals(api, stem, params, code):
    status, body = await api.put(stem, [url_value("https://a.org")], params=params)
    assert status == 400 and body["responseCode"] == code


# -- secrets ------------------------------------------------------------------------------------


async def test_secret_keys_are_stored_encrypted_and_authenticate(api, client):
    status, _ = await api.put(
        "TEST/USER01",
        [
            {"index": 300, "type": "HS_SECKEY", "data": "user-pass", "permissions": "1100"},
        ],
    )
    assert status == 201
    stored = (await client.app[keys.STORE].get("TEST/USER01")).value_at(300).data
    assert stored.startswith(b"aes256gcm$") and b"user-pass" not in stored
    # A read never shows the secret nor its hash, even to an admin.
    shown = (await api.values("TEST/USER01"))[0]["data"]
    assert shown == {"format": "string", "value": REDACTED.decode()}
    user = basic("300:TEST/USER01", "user-pass")
    # A user identity authenticates, but is no admin of the prefix: 403, not 401.
    status, body = await api.put("TEST/mine", [url_value("https://a.org")], headers=user)
    assert status == 403 and body["responseCode"] == 400
    status, body = await api.put(
        "TEST/mine", [url_value("https://a.org")], headers=basic("300:TEST/USER01", "wrong")
    )
    assert status == 401 and body["responseCode"] == 403
    # Writing back what a read shows keeps the stored secret (a GET-modify-PUT round trip).
    values = await api.values("TEST/USER01")
    assert (await api.put("TEST/USER01", values))[0] == 200
    assert (await client.app[keys.STORE].get("TEST/USER01")).value_at(300).data == stored
    status, _ = await api.get("TEST/USER01", params={"publicOnly": "false"}, headers=user)
    assert status == 403  # the user holds no READ_VALUE on its own handle: no HS_ADMIN there
    # ... but that text is no secret where none is stored, and an empty secret is refused.
    for data in (REDACTED.decode(), ""):
        seckey = {"index": 300, "type": "HS_SECKEY", "data": data}
        status, body = await api.put("TEST/USER02", [seckey])
        assert status == 400 and body["responseCode"] == 202, body


async def test_only_the_server_makes_stored_forms(api, client):
    """Whatever a client writes as an HS_SECKEY is a secret to keep: a stored form made
    elsewhere (a planted hash of ten million iterations, another value's encrypted form) is
    kept encrypted like any password, and proves nothing but itself."""
    store = client.app[keys.STORE]
    await api.put("TEST/USER01", [{"index": 300, "type": "HS_SECKEY", "data": "user-pass"}])
    copied = (await store.get("TEST/USER01")).value_at(300).data.decode()
    planted = "pbkdf2-sha256$10000000$c2FsdHNhbHRzYWx0c2FsdA==$" + "A" * 43 + "="
    for data in (planted, copied):
        status, _ = await api.put(
            "TEST/USER02", [{"index": 300, "type": "HS_SECKEY", "data": data}]
        )
        assert status in (200, 201)
        stored = (await store.get("TEST/USER02")).value_at(300).data
        assert stored.startswith(b"aes256gcm$") and stored != data.encode()
        # The string itself is now USER02's secret; USER01's password is not.
        assert (await api.get("TEST/x", headers=basic("300:TEST/USER02", data)))[0] == 404
        status, _ = await api.get("TEST/x", headers=basic("300:TEST/USER02", "user-pass"))
        assert status == 401


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 402),
        (basic("300:0.NA/TEST", "wrong"), 403),
        (basic("301:0.NA/TEST", "admin-secret"), 403),
        (basic("300:TEST/nobody", "admin-secret"), 403),
        ({"Authorization": "Basic !!!"}, 403),
        ({"Authorization": "Basic dXNlcg=="}, 403),
        ({"Authorization": "Basic " + "bm90LWFuLWlkZW50aXR5OnNlY3JldA=="}, 403),
        ({"Authorization": "Bearer abc"}, 403),
    ],
    ids=[
        "none",
        "wrong-secret",
        "wrong-index",
        "unknown-handle",
        "not-base64",
        "no-colon",
        "not-an-identity",
        "other-scheme",
    ],
)
async def test_writes_without_valid_credentials_are_401(api, headers, code):
    status, body = await api.put("TEST/auth", [url_value("https://a.org")], headers=headers)
    assert status == 401 and body["responseCode"] == code
    assert api.last.headers["WWW-Authenticate"] == 'Basic realm="handle"'
    assert await api.values("TEST/auth") is None


async def test_pyhandle_style_user_name_with_a_raw_slash_authenticates(api):
    status, _ = await api.put(
        "TEST/py",
        [url_value("https://a.org")],
        headers=basic("300:0.NA/TEST", "admin-secret", safe="/"),
    )
    assert status == 201


async def test_an_admin_of_another_prefix_is_403(api):
    status, body = await api.put("TEST/x", [url_value("https://a.org")], headers=OTHER_AUTH)
    assert status == 403 and body["responseCode"] == 400
    status, _ = await api.put("10.5555/x", [url_value("https://a.org")], headers=OTHER_AUTH)
    assert status == 201


# -- the prefix handle --------------------------------------------------------------------------


async def test_prefix_handle_keeps_its_configured_values(api):
    status, body = await api.put(
        "0.NA/TEST", [{"index": 300, "type": "HS_SECKEY", "data": "x"}], params={"index": "300"}
    )
    assert status == 403 and body["responseCode"] == 401 and "[[admins]]" in body["message"]
    status, _ = await api.delete("0.NA/TEST", params={"index": "200"})
    assert status == 403
    status, _ = await api.delete("0.NA/TEST")
    assert status == 403
    # Other values may be added, and the record written back as read.
    status, _ = await api.put(
        "0.NA/TEST", [{"index": 1, "type": "DESC", "data": "Test prefix"}], params={"index": "1"}
    )
    assert status == 201
    values = await api.values("0.NA/TEST")
    status, _ = await api.put("0.NA/TEST", values)
    assert status == 200
    assert [v["index"] for v in await api.values("0.NA/TEST")] == [1, 100, 200, 300]


# -- bad input: each gets its status and code, and changes nothing ------------------------------

JSON = "application/json"
BIG_LOCATIONS = {
    "index": 10,
    "type": "10320/loc",
    "data": "<locations>"
    + '<location href="https://example.org/a-long-location-path-for-padding"/>' * 1200
    + "</locations>",
}
MANY_VALUES = [url_value(f"https://x.org/{i}", index=i + 1) for i in range(10_000)]
BIG_VALUE = {"index": 1, "type": "X", "data": "x" * 600_000}
HUGE_VALUE = {"index": 1, "type": "X", "data": "x" * 10_000_000}

BAD = [
    # (id, handle, params, body or raw bytes, content type, status, responseCode)
    ("malformed-json", "TEST/fixed", None, b'[{"index": 1,', "application/json", 400, 4),
    ("invalid-utf8", "TEST/fixed", None, b'["\xff"]', "application/json", 400, 4),
    ("empty-body", "TEST/fixed", None, b"", "application/json", 400, 4),
    ("string-body", "TEST/fixed", None, "hello", "application/json", 400, 4),
    ("object-without-values", "TEST/fixed", None, {"foo": 1}, "application/json", 400, 4),
    ("values-not-array", "TEST/fixed", None, {"values": {}}, "application/json", 400, 4),
    (
        "other-handle",
        "TEST/fixed",
        None,
        {"values": [], "handle": "TEST/other"},
        "application/json",
        400,
        4,
    ),
    ("value-not-object", "TEST/fixed", None, ["x"], "application/json", 400, 4),
    ("no-type", "TEST/fixed", None, [{"index": 1, "data": "x"}], "application/json", 400, 4),
    ("no-data", "TEST/fixed", None, [{"index": 1, "type": "X"}], "application/json", 400, 4),
    ("no-index", "TEST/fixed", None, [{"type": "X", "data": "x"}], "application/json", 400, 4),
    (
        "empty-type",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "", "data": "x"}],
        "application/json",
        400,
        4,
    ),
    (
        "unknown-field",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "X", "data": "x", "colour": 1}],
        "application/json",
        400,
        4,
    ),
    (
        "bad-format",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "X", "data": {"format": "xml", "value": "x"}}],
        "application/json",
        400,
        4,
    ),
    (
        "site-format",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "HS_SITE", "data": {"format": "site", "value": {}}}],
        "application/json",
        400,
        4,
    ),
    (
        "bad-base64",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "X", "data": {"format": "base64", "value": "%%%"}}],
        "application/json",
        400,
        4,
    ),
    (
        "bad-hex",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "X", "data": {"format": "hex", "value": "zz"}}],
        "application/json",
        400,
        4,
    ),
    (
        "data-number",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "X", "data": 5}],
        "application/json",
        400,
        4,
    ),
    (
        "bad-admin-perms",
        "TEST/fixed",
        None,
        [
            {
                "index": 100,
                "type": "HS_ADMIN",
                "data": {
                    "format": "admin",
                    "value": {"handle": "0.NA/TEST", "index": 200, "permissions": "0111"},
                },
            }
        ],
        "application/json",
        400,
        4,
    ),
    (
        "index-zero",
        "TEST/fixed",
        None,
        [{"index": 0, "type": "X", "data": "x"}],
        "application/json",
        400,
        202,
    ),
    (
        "index-negative",
        "TEST/fixed",
        None,
        [{"index": -1, "type": "X", "data": "x"}],
        "application/json",
        400,
        202,
    ),
    (
        "index-huge",
        "TEST/fixed",
        None,
        [{"index": 2**31, "type": "X", "data": "x"}],
        "application/json",
        400,
        202,
    ),
    (
        "index-text",
        "TEST/fixed",
        None,
        [{"index": "one", "type": "X", "data": "x"}],
        "application/json",
        400,
        4,
    ),
    (
        "index-bool",
        "TEST/fixed",
        None,
        [{"index": True, "type": "X", "data": "x"}],
        "application/json",
        400,
        4,
    ),
    (
        "duplicate-index",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "X", "data": "x"}, {"index": 1, "type": "Y", "data": "y"}],
        "application/json",
        409,
        201,
    ),
    (
        "negative-ttl",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "X", "data": "x", "ttl": -5}],
        "application/json",
        400,
        4,
    ),
    (
        "bad-ttl",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "X", "data": "x", "ttl": "soon"}],
        "application/json",
        400,
        4,
    ),
    (
        "bad-permissions",
        "TEST/fixed",
        None,
        [{"index": 1, "type": "X", "data": "x", "permissions": "12"}],
        "application/json",
        400,
        4,
    ),
    ("text-plain", "TEST/fixed", None, [url_value("https://x.org")], "text/plain", 400, 4),
    (
        "form",
        "TEST/fixed",
        None,
        [url_value("https://x.org")],
        "application/x-www-form-urlencoded",
        400,
        4,
    ),
    (
        "index-mismatch",
        "TEST/fixed",
        {"index": "2"},
        [url_value("https://x.org")],
        "application/json",
        400,
        4,
    ),
    (
        "index-not-int",
        "TEST/fixed",
        {"index": "x"},
        [url_value("https://x.org")],
        "application/json",
        400,
        4,
    ),
    (
        "various-and-index",
        "TEST/fixed",
        [("index", "various"), ("index", "1")],
        [url_value("https://x.org")],
        "application/json",
        400,
        4,
    ),
    ("no-values-to-add", "TEST/fixed", {"index": "various"}, [], "application/json", 400, 202),
    (
        "overwrite-garbage",
        "TEST/fixed",
        {"overwrite": "maybe"},
        [url_value("https://x.org")],
        "application/json",
        400,
        4,
    ),
    ("empty-handle", "", None, [url_value("https://x.org")], "application/json", 400, 102),
    ("no-slash", "TEST", None, [url_value("https://x.org")], "application/json", 400, 102),
    ("empty-suffix", "TEST/", None, [url_value("https://x.org")], "application/json", 400, 102),
    (
        "nul-in-handle",
        "TEST/a%00b",
        None,
        [url_value("https://x.org")],
        "application/json",
        400,
        102,
    ),
    (
        "newline-in-handle",
        "TEST/a%0Ab",
        None,
        [url_value("https://x.org")],
        "application/json",
        400,
        102,
    ),
    (
        "bad-utf8-handle",
        "TEST/a%FFb",
        None,
        [url_value("https://x.org")],
        "application/json",
        400,
        102,
    ),
    (
        "too-long-handle",
        "TEST/" + "x" * 1100,
        None,
        [url_value("https://x.org")],
        "application/json",
        400,
        102,
    ),
    ("not-homed", "OTHER/x", None, [url_value("https://x.org")], "application/json", 400, 301),
    # Hostile sizes and shapes: the limits of [server] and [handle] (defaults).
    ("deep-nesting", "TEST/fixed", None, b"[" * 100_000 + b"]" * 100_000, JSON, 400, 4),
    ("ten-thousand-values", "TEST/fixed", None, MANY_VALUES, JSON, 400, 202),
    ("value-over-max-value-bytes", "TEST/fixed", None, [BIG_VALUE], JSON, 400, 202),
    ("ten-megabyte-value", "TEST/fixed", None, [HUGE_VALUE], JSON, 413, 4),
    (
        "added-past-max-values",
        "TEST/fixed",
        {"index": "various"},
        MANY_VALUES[1:1001],
        JSON,
        400,
        202,
    ),
    ("location-list-over-max", "TEST/fixed", None, [BIG_LOCATIONS], JSON, 400, 202),
    # Names that display as something they are not.
    (
        "bidi-override-in-handle",
        "TEST/%E2%80%AEgnp.exe",
        None,
        [url_value("https://x.org")],
        JSON,
        400,
        102,
    ),
    (
        "bidi-isolate-in-handle",
        "TEST/a%E2%81%A6b",
        None,
        [url_value("https://x.org")],
        JSON,
        400,
        102,
    ),
    ("c1-control-in-handle", "TEST/a%C2%85b", None, [url_value("https://x.org")], JSON, 400, 102),
    ("bom-in-handle", "TEST/%EF%BB%BFa", None, [url_value("https://x.org")], JSON, 400, 102),
    (
        "bidi-in-minted-stem",
        "TEST/%E2%80%AE",
        {"mintNewSuffix": "true"},
        [url_value("https://x.org")],
        JSON,
        400,
        102,
    ),
]


@pytest.mark.parametrize(
    ("handle", "params", "body", "ctype", "status", "code"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
async def test_bad_input_is_refused_and_changes_nothing(
    api, handle, params, body, ctype, status, code
):
    await api.put("TEST/fixed", [url_value("https://fixed.org")])
    before = await api.values("TEST/fixed")
    _, listing = await api.list({"prefix": "TEST"})
    raw = body if isinstance(body, bytes) else None
    if isinstance(body, list) and body and body[0] is HUGE_VALUE:
        raw = io.BytesIO(orjson.dumps(body))  # aiohttp streams it, as a client would
    got_status, got = await api.put(handle, body, params=params, content_type=ctype, raw=raw)
    assert (got_status, got["responseCode"]) == (status, code), got
    assert got["message"]
    assert await api.values("TEST/fixed") == before
    _, after = await api.list({"prefix": "TEST"})
    assert after == listing


async def test_a_body_over_the_limit_is_413(aiohttp_client, tmp_path):
    from .helpers import make_config

    api = Api(
        await aiohttp_client(create_app(make_config(tmp_path, server={"max_body_bytes": 2048})))
    )
    big = [{"index": 1, "type": "X", "data": "x" * 4096}]
    status, body = await api.put("TEST/big", big)
    assert status == 413 and body["responseCode"] == 4 and "2048" in body["message"]
    assert await api.values("TEST/big") is None
    status, _ = await api.put("TEST/big", [{"index": 1, "type": "X", "data": "x" * 1000}])
    assert status == 201


async def test_a_record_over_max_record_bytes_is_413_and_changes_nothing(
    aiohttp_client, tmp_path, storage_table
):
    from .helpers import make_config

    config = make_config(
        tmp_path, storage=storage_table, server={"max_body_bytes": 4 * 1024 * 1024}
    )  # [handle] max_record_bytes is its default, 1 MiB
    api = Api(await aiohttp_client(create_app(config)))

    def large(index: int) -> dict:
        return {"index": index, "type": "DESC", "data": "x" * 400_000}

    def streamed(values: list) -> io.BytesIO:
        return io.BytesIO(orjson.dumps(values))  # as a client sends a large body

    values = [large(1), large(2), large(3)]
    status, body = await api.put("TEST/big", values, raw=streamed(values))
    assert (status, body["responseCode"]) == (413, 202) and "1048576" in body["message"]
    assert await api.values("TEST/big") is None
    values = [large(1), large(2)]
    assert (await api.put("TEST/big", values, raw=streamed(values)))[0] == 201
    before = await api.values("TEST/big")
    for params, values in (
        ({"index": "3"}, [large(3)]),  # added
        (None, [large(1), large(2), large(3)]),  # replaced
        (  # a value grown, one added
            {"index": "various"},
            [large(2) | {"data": "y" * 500_000}, large(3) | {"data": "z" * 200_000}],
        ),
    ):
        status, body = await api.put("TEST/big", values, params=params, raw=streamed(values))
        assert (status, body["responseCode"]) == (413, 202), params
        assert await api.values("TEST/big") == before
    _, listing = await api.list({"prefix": "TEST"})
    assert listing["handles"] == ["TEST/big"]


async def test_secrets_never_reach_the_log(api, caplog):
    caplog.set_level(logging.DEBUG)
    await api.put("TEST/USER02", [{"index": 300, "type": "HS_SECKEY", "data": "user-pass-02"}])
    await api.put(
        "TEST/l", [url_value("https://a.org")], headers=basic("300:0.NA/TEST", "not-it-99")
    )
    await api.put(
        "TEST/l", [url_value("https://a.org")], headers=basic("300:TEST/USER02", "user-pass-02")
    )
    await api.get("TEST/USER02", headers=ADMIN_AUTH)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged  # the access log did record the requests
    for secret in ("admin-secret", "user-pass-02", "not-it-99"):
        assert secret not in logged


async def test_path_tricks_name_the_handle_they_resolve_to(api):
    """Dot segments are removed before routing (RFC 3986), so a write addresses the handle
    the cleaned path names and is authorized for that one; %2F is a slash, and dots inside a
    suffix are part of its name."""
    await api.put("TEST/fixed", [url_value("https://fixed.org")])
    prefix_before = await api.values("0.NA/TEST")
    status, body = await api.put("TEST/../0.NA/TEST", [url_value("https://x.org")])
    assert (status, body["handle"], body["responseCode"]) == (403, "0.NA/TEST", 401)
    assert await api.values("0.NA/TEST") == prefix_before
    status, body = await api.put("TEST/x/../fixed", [url_value("https://x.org")], headers=None)
    assert (status, body["responseCode"]) == (401, 402)
    assert [v["data"]["value"] for v in await api.values("TEST/fixed")] == ["https://fixed.org"]

    status, body = await api.put("TEST%2Fencoded", [url_value("https://e.org")])
    assert (status, body["handle"]) == (201, "TEST/encoded")
    status, body = await api.put("TEST/..%2Fodd", [url_value("https://o.org")])
    assert (status, body["handle"]) == (201, "TEST/../odd")
    _, listing = await api.list({"prefix": "TEST"})
    assert listing["handles"] == ["TEST/../odd", "TEST/encoded", "TEST/fixed"]
