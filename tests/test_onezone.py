"""Onezone: its handle API (path 1), the handle-proxy contract Onezone calls (path 2), and
Onedata's own proxy reaching us through /api/handles (path 3). Requests are replayed as Onezone,
its proxy (hps-b2handle) and the documented curl examples send them."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from handle_server.onezone.service import handle_id_of

from .helpers import (
    ADMIN,
    ADMIN_AUTH,
    API,
    DC_METADATA,
    DC_RDF,
    HID,
    OTHER_AUTH,
    PROPERTIES,
    PROXY,
    SECRET,
    SHARE,
    SHARE_URL,
    Api,
    admin,
    basic,
    make_config,
    proxy_body,
    registration,
    seckey,
)

EDM = (
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
    'xmlns:edm="http://www.europeana.eu/schemas/edm/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
    '<edm:ProvidedCHO rdf:about="#obj"><dc:title>Vase</dc:title></edm:ProvidedCHO></rdf:RDF>'
)
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<metadata>&lol3;</metadata>"
)
EXTERNAL = '<!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><metadata>&x;</metadata>'

ONEZONE_HEADERS = {"content-type": "application/json", "accept": "application/json"}


PUBLIC_URL = "https://pid.example.org"


@pytest.fixture
def config(tmp_path, storage_table):
    return make_config(
        tmp_path,
        storage=storage_table,
        server={"public_url": PUBLIC_URL},
        onezone={
            "handle_services": [
                {"id": "hs-test", "name": "Test handle service", "prefix": "TEST"},
                {"id": "hs-other", "name": "Other handle service", "prefix": "10.5555"},
            ]
        },
    )


async def call(
    api: Api, method: str, path: str, body: Any = None, *, headers: Any = ADMIN_AUTH, **kw: Any
) -> tuple[int, Any]:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    data = body if isinstance(body, bytes) else None if body is None else orjson.dumps(body)
    return await api._call(method, path, data=data, headers=hdrs, **kw)


def assert_onezone_error(status: int, body: Any, expected_status: int, error_id: str) -> dict:
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    assert body["error"]["id"] == error_id, body
    assert body["error"]["description"]
    return body["error"]


async def nothing_registered(api: Api, *, other_handles: int = 0) -> None:
    status, body = await call(api, "GET", f"{API}/handles")
    assert (status, body) == (200, {"handles": []})
    assert (await api.list({"prefix": "TEST"}))[1]["totalCount"] == str(other_handles)


# -- path 1: the Onezone handle API --------------------------------------------------------------


async def test_register_read_modify_delete_a_share_handle(api: Api, client):
    # As the reference's curl example: -u user:password, Content-type, the JSON body.
    status, body = await call(api, "POST", f"{API}/handles", registration())
    assert (status, body) == (201, None)
    assert api.last.headers["Location"] == f"{PUBLIC_URL}{API}/handles/{HID}"

    status, record = await call(api, "GET", f"{API}/handles/{HID}")
    assert status == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record.pop("timestamp"))
    assert isinstance(record.pop("creationTime"), int)
    assert record == {
        "handleId": HID,
        "handleServiceId": "hs-test",
        "handle": f"TEST/{HID}",
        "publicHandle": f"https://hdl.handle.net/TEST/{HID}",
        "resourceType": "Share",
        "resourceId": SHARE,
        "metadataPrefix": "oai_dc",
        "metadata": DC_RDF,
        "creator": {"type": "user", "id": ADMIN},
    }
    status, public = await call(api, "GET", f"{API}/handles/{HID}/public", headers=None)
    assert status == 200 and "creator" not in public and public["metadata"] == DC_RDF
    status, same = await call(api, "GET", f"{API}/handle_services/hs-test/handles/{HID}")
    assert status == 200 and same["metadata"] == DC_RDF
    status, body = await call(api, "GET", f"{API}/handle_services/hs-other/handles/{HID}")
    assert_onezone_error(status, body, 404, "notFound")

    # It is a handle like any other: the REST API and the resolver lead to the share.
    status, resolved = await api.get(f"TEST/{HID}")
    assert status == 200
    by_index = {v["index"]: v for v in resolved["values"]}
    assert by_index[1]["type"] == "URL" and by_index[1]["data"]["value"] == SHARE_URL
    assert by_index[2]["data"]["value"] == DC_RDF
    async with client.get(f"/TEST/{HID}", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == SHARE_URL

    # PATCH: new metadata, seen at once (also through the cached Handle API answer).
    status, body = await call(api, "PATCH", f"{API}/handles/{HID}", {"metadata": DC_METADATA})
    assert (status, body) == (204, None)
    status, record = await call(api, "GET", f"{API}/handles/{HID}")
    assert record["metadata"] == DC_METADATA and record["resourceId"] == SHARE
    status, resolved = await api.get(f"TEST/{HID}", params={"index": "2"})
    assert resolved["values"][0]["data"]["value"] == DC_METADATA

    status, body = await call(api, "DELETE", f"{API}/handles/{HID}")
    assert (status, body) == (204, None)
    status, body = await call(api, "GET", f"{API}/handles/{HID}")
    assert_onezone_error(status, body, 404, "notFound")
    assert (await api.get(f"TEST/{HID}"))[0] == 404
    async with client.get(f"/TEST/{HID}", allow_redirects=False) as resp:
        assert resp.status == 410  # a browser is told the handle existed (its history)
    async with client.get(f"/TEST/{HID}", headers={"Accept": "application/json"}) as resp:
        assert resp.status == 404
    await nothing_registered(api)


async def test_locations_come_from_the_configured_url_not_the_host_header(api: Api):
    evil = {**ADMIN_AUTH, "Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    status, _ = await call(api, "POST", f"{API}/handles", registration(), headers=evil)
    assert status == 201
    assert api.last.headers["Location"] == f"{PUBLIC_URL}{API}/handles/{HID}"


async def test_register_through_user_handles_and_in_edm(api: Api, client):
    body = registration(metadataPrefix="edm", metadata=EDM, handleServiceId="hs-other")
    status, _ = await call(api, "POST", f"{API}/user/handles", body, headers=OTHER_AUTH)
    assert status == 201
    location = api.last.headers["Location"]
    assert location.endswith(f"{API}/user/handles/{HID}")
    path = location.removeprefix(PUBLIC_URL)
    status, record = await call(api, "GET", path, headers=OTHER_AUTH)
    assert status == 200
    assert record["handle"] == f"10.5555/{HID}" and record["metadataPrefix"] == "edm"
    assert record["metadata"] == EDM


async def test_lists_of_handles_and_handle_services(api: Api):
    shares = ["a1", "b2", "c3"]
    for share in shares[:2]:
        assert (await call(api, "POST", f"{API}/handles", registration(resourceId=share)))[0] == 201
    other = registration(resourceId="c3", handleServiceId="hs-other")
    assert (await call(api, "POST", f"{API}/handles", other, headers=OTHER_AUTH))[0] == 201
    # An ordinary handle under the same prefix is not a share handle.
    assert (await api.put("TEST/" + "0" * 32, [{"index": 1, "type": "URL", "data": "x"}]))[0] == 201
    ids = {s: handle_id_of("Share", s) for s in shares}

    status, body = await call(api, "GET", f"{API}/handle_services/hs-test/handles")
    assert status == 200 and sorted(body["handles"]) == sorted([ids["a1"], ids["b2"]])
    status, body = await call(api, "GET", f"{API}/handle_services/hs-other/handles")
    assert_onezone_error(status, body, 403, "forbidden")  # the TEST admin may not list 10.5555
    status, body = await call(
        api, "GET", f"{API}/handle_services/hs-other/handles", headers=OTHER_AUTH
    )
    assert (status, body) == (200, {"handles": [ids["c3"]]})
    # GET /handles: every service the caller may list.
    status, body = await call(api, "GET", f"{API}/handles")
    assert status == 200 and sorted(body["handles"]) == sorted([ids["a1"], ids["b2"]])

    status, body = await call(api, "GET", f"{API}/handle_services")
    assert (status, body) == (200, {"handle_services": ["hs-test", "hs-other"]})
    status, body = await call(api, "GET", f"{API}/handle_services/hs-test")
    assert (status, body) == (
        200,
        {
            "handleServiceId": "hs-test",
            "name": "Test handle service",
            "serviceProperties": {"type": "PID", "prefix": "TEST"},
        },
    )
    status, body = await call(api, "GET", f"{API}/handle_services/hs-test/public", headers=None)
    assert (status, body) == (200, {"handleServiceId": "hs-test", "name": "Test handle service"})
    status, body = await call(api, "GET", f"{API}/handle_services/nope")
    assert_onezone_error(status, body, 404, "notFound")
    for path in ("/handles", "/handle_services", "/handle_services/hs-test/handles"):
        status, body = await call(api, "GET", API + path, headers=None)
        assert_onezone_error(status, body, 401, "unauthorized")
        assert api.last.headers["WWW-Authenticate"].startswith("Basic")


TOO_LARGE = "<metadata>" + " " * (100_000 - len("<metadata></metadata>") + 1) + "</metadata>"


@pytest.mark.parametrize(
    ("body", "error_id", "details"),
    [
        (registration(handleServiceId=...), "missingRequiredValue", {"key": "handleServiceId"}),
        (registration(handleServiceId=7), "badValueString", {"key": "handleServiceId"}),
        (registration(handleServiceId="nope"), "badValueIdNotFound", {"key": "handleServiceId"}),
        (registration(resourceType=...), "missingRequiredValue", {"key": "resourceType"}),
        (
            registration(resourceType="Space"),
            "badValueNotAllowed",
            {"key": "resourceType", "allowed": ["Share"]},
        ),
        (registration(resourceId=...), "missingRequiredValue", {"key": "resourceId"}),
        (registration(resourceId=["x"]), "badValueString", {"key": "resourceId"}),
        (registration(resourceId="a/../b"), "badValueIdentifier", {"key": "resourceId"}),
        (registration(resourceId=""), "badValueIdentifier", {"key": "resourceId"}),
        (registration(metadataPrefix=1), "badValueString", {"key": "metadataPrefix"}),
        (
            registration(metadataPrefix="marc21"),
            "badValueNotAllowed",
            {"key": "metadataPrefix", "allowed": ["oai_dc", "edm"]},
        ),
        (registration(metadata=...), "missingRequiredValue", {"key": "metadata"}),
        (registration(metadata={"dc": "x"}), "badValueString", {"key": "metadata"}),
        (
            registration(metadata="<metadata><dc:title>x</metadata>"),
            "badValueXML",
            {"key": "metadata"},
        ),
        (registration(metadata="just text"), "badValueXML", {"key": "metadata"}),
        (registration(metadata="<record><a/></record>"), "badValueXML", {"key": "metadata"}),
        (registration(metadata=BOMB), "badValueXML", {"key": "metadata"}),
        (registration(metadata=EXTERNAL), "badValueXML", {"key": "metadata"}),
        (registration(metadataPrefix="edm"), "badValueXML", {"key": "metadata"}),  # no CHO
        (
            registration(metadataPrefix="edm", metadata=DC_METADATA),
            "badValueXML",
            {"key": "metadata"},
        ),
        (
            registration(metadata=TOO_LARGE),
            "badValueTextTooLarge",
            {"key": "metadata", "limit": 100_000},
        ),
        (b"{not json", "malformedData", None),
        (b"[1, 2]", "malformedData", None),
        (b"", "malformedData", None),
    ],
)
async def test_a_bad_registration_gets_onezones_error_and_changes_nothing(
    api: Api, body: Any, error_id: str, details: Any
):
    status, answer = await call(api, "POST", f"{API}/handles", body)
    error = assert_onezone_error(status, answer, 400, error_id)
    assert error.get("details") == details
    assert "responseCode" not in answer
    await nothing_registered(api)


async def test_metadata_of_exactly_the_limit_is_kept_byte_for_byte(api: Api):
    text = "<metadata>" + "é" * (100_000 - len("<metadata></metadata>")) + "</metadata>"
    assert len(text) == 100_000
    assert (await call(api, "POST", f"{API}/handles", registration(metadata=text)))[0] == 201
    assert (await call(api, "GET", f"{API}/handles/{HID}"))[1]["metadata"] == text


async def test_one_handle_per_share(api: Api):
    assert (await call(api, "POST", f"{API}/handles", registration()))[0] == 201
    status, body = await call(api, "POST", f"{API}/handles", registration(metadata=DC_METADATA))
    assert_onezone_error(status, body, 409, "alreadyExists")
    other = registration(handleServiceId="hs-other")
    status, body = await call(api, "POST", f"{API}/handles", other, headers=OTHER_AUTH)
    assert_onezone_error(status, body, 409, "alreadyExists")
    assert (await call(api, "GET", f"{API}/handles/{HID}"))[1]["metadata"] == DC_RDF
    assert (await api.get(f"10.5555/{HID}"))[0] == 404


async def test_a_share_registered_again_gets_a_new_handle(api: Api, client):
    """A deleted handle is never given again: resolvers and citations may still hold it, and
    its history names the old registration. The share's next registration gets the next id of
    its line, in whichever handle service."""
    ids = [HID]
    assert (await call(api, "POST", f"{API}/handles", registration()))[0] == 201
    who = ADMIN_AUTH
    for service, auth in (("hs-other", OTHER_AUTH), ("hs-test", ADMIN_AUTH)):
        assert (await call(api, "DELETE", f"{API}/handles/{ids[-1]}", headers=who))[0] == 204
        body = registration(handleServiceId=service)
        assert (await call(api, "POST", f"{API}/handles", body, headers=auth))[0] == 201
        ids.append(api.last.headers["Location"].rsplit("/", 1)[1])
        who = auth
    assert len(set(ids)) == 3
    status, record = await call(api, "GET", f"{API}/handles/{ids[-1]}")
    assert (record["handle"], record["resourceId"]) == (f"TEST/{ids[-1]}", SHARE)
    for old in ids[:2]:
        assert_onezone_error(*await call(api, "GET", f"{API}/handles/{old}"), 404, "notFound")
    async with client.get(f"/TEST/{HID}", allow_redirects=False) as resp:
        assert resp.status == 410  # the first, deleted for good
    async with client.get(f"/TEST/{ids[-1]}", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == SHARE_URL
    status, history = await api._call("GET", f"/api/history/TEST/{HID}", headers=ADMIN_AUTH)
    assert [(v["operation"], v["by"]) for v in history["versions"]] == [
        ("create", ADMIN),
        ("delete", ADMIN),
    ]
    # Still one handle per share.
    status, body = await call(api, "POST", f"{API}/handles", registration())
    assert_onezone_error(status, body, 409, "alreadyExists")
    assert f"TEST/{ids[-1]}" in body["error"]["description"]


async def test_concurrent_registrations_of_one_share_have_one_winner(api: Api):
    bodies = [registration(handleServiceId=s) for s in ("hs-test", "hs-other")] * 4
    auths = [ADMIN_AUTH, OTHER_AUTH] * 4
    results = await asyncio.gather(
        *(
            call(api, "POST", f"{API}/handles", b, headers=a)
            for b, a in zip(bodies, auths, strict=True)
        )
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 7
    found = [(await api.get(f"{p}/{HID}"))[0] for p in ("TEST", "10.5555")]
    assert sorted(found) == [200, 404]


async def test_authentication_and_privileges_map_onto_handle_rights(api: Api):
    # A Onezone service account: an identity on TEST/onedata granted ADD_HANDLE on 0.NA/TEST.
    assert (await api.put("TEST/onedata", [seckey(300, "oz-secret")]))[0] == 201
    grant = [admin("TEST/onedata", 300, "000000000001", at=101)]
    assert (await api.put("0.NA/TEST", grant, params={"index": "101"}))[0] == 201
    onezone = basic("300:TEST/onedata", "oz-secret")
    stranger = basic("301:TEST/onedata", "nope")

    status, body = await call(api, "POST", f"{API}/handles", registration(), headers=None)
    assert_onezone_error(status, body, 401, "unauthorized")
    status, body = await call(api, "POST", f"{API}/handles", registration(), headers=stranger)
    assert_onezone_error(status, body, 401, "unauthorized")
    status, body = await call(api, "POST", f"{API}/handles", registration(), headers=OTHER_AUTH)
    assert_onezone_error(status, body, 403, "forbidden")  # no ADD_HANDLE on 0.NA/TEST
    await nothing_registered(api, other_handles=1)  # TEST/onedata

    assert (await call(api, "POST", f"{API}/handles", registration(), headers=onezone))[0] == 201
    status, record = await call(api, "GET", f"{API}/handles/{HID}", headers=onezone)
    assert status == 200 and record["creator"] == {"type": "user", "id": "300:TEST/onedata"}
    # The creator holds the handle's rights through its HS_ADMIN value; others do not.
    for method, body in (("GET", None), ("PATCH", {"metadata": DC_METADATA}), ("DELETE", None)):
        status, answer = await call(api, method, f"{API}/handles/{HID}", body, headers=OTHER_AUTH)
        assert_onezone_error(status, answer, 403, "forbidden")
        status, answer = await call(api, method, f"{API}/handles/{HID}", body, headers=None)
        assert_onezone_error(status, answer, 401, "unauthorized")
    status, body = await call(api, "GET", f"{API}/handles", headers=onezone)
    assert_onezone_error(status, body, 403, "forbidden")  # no LIST_HANDLES
    assert (await call(api, "GET", f"{API}/handles/{HID}"))[1]["metadata"] == DC_RDF
    patch = {"metadata": DC_METADATA}
    assert (await call(api, "PATCH", f"{API}/handles/{HID}", patch, headers=onezone))[0] == 204
    assert (await call(api, "DELETE", f"{API}/handles/{HID}", headers=onezone))[0] == 204


@pytest.mark.parametrize(
    ("body", "status", "error_id"),
    [
        ({"metadata": "<metadata>"}, 400, "badValueXML"),
        ({"metadata": TOO_LARGE}, 400, "badValueTextTooLarge"),
        ({}, 400, "missingRequiredValue"),
        ({"metadata": 3}, 400, "badValueString"),
        ({"metadata": DC_METADATA, "resourceId": "other"}, 400, "badValueNotAllowed"),
        ({"resourceId": "other"}, 400, "missingRequiredValue"),  # metadata is named first
        (b"nope", 400, "malformedData"),
    ],
)
async def test_a_bad_modification_changes_nothing(api: Api, body: Any, status: int, error_id: str):
    assert (await call(api, "POST", f"{API}/handles", registration()))[0] == 201
    before = await call(api, "GET", f"{API}/handles/{HID}")
    answer = await call(api, "PATCH", f"{API}/handles/{HID}", body)
    assert_onezone_error(*answer, status, error_id)
    assert await call(api, "GET", f"{API}/handles/{HID}") == before


async def test_unknown_handles_paths_and_methods_answer_in_onezones_shape(api: Api):
    for method, path in [
        ("GET", f"{API}/handles/{HID}"),
        ("GET", f"{API}/handles/not-a-handle-id"),
        ("PATCH", f"{API}/handles/{HID}"),
        ("DELETE", f"{API}/handles/{HID}"),
        ("GET", f"{API}/handles/{HID}/public"),
        ("GET", f"{API}/spaces"),
    ]:
        status, body = await call(api, method, path, {"metadata": DC_METADATA})
        assert_onezone_error(status, body, 404, "notFound")
    status, body = await call(api, "PUT", f"{API}/handles")
    assert_onezone_error(status, body, 405, "notSupported")
    assert "POST" in api.last.headers["Allow"]
    # ... while the Handle API keeps its own shape.
    status, body = await api.get("TEST/nothing-here")
    assert status == 404 and body["responseCode"] == 100 and "error" not in body


# -- path 2: the handle-proxy contract ------------------------------------------------------------


def onezone_split(public_handle: str, prefix: str) -> str:
    """What Onezone's unregister_handle does: [_, Suffix] = binary:split(Public, Prefix/)."""
    parts = public_handle.split(f"{prefix}/")
    assert len(parts) == 2, public_handle
    return parts[1]


async def proxy(api: Api, method: str, hndl: str, body: Any) -> tuple[int, Any]:
    # handle_proxy_client: the URL is a plain concatenation with an urlencoded hndl.
    path = f"{PROXY}/handle?hndl={quote(hndl, safe='')}"
    return await call(api, method, path, body, headers=ONEZONE_HEADERS)


async def test_the_handle_proxy_contract(api: Api, client):
    suffix = "a0Zq9b01Xy"  # base62 of 6 random bytes, as current Onezone makes them
    status, body = await proxy(api, "PUT", suffix, proxy_body())
    assert status == 201 and api.last.content_type == "application/json"
    assert body == {"handle": f"https://hdl.handle.net/TEST/{suffix}"}
    assert onezone_split(body["handle"], "TEST") == suffix

    # A handle like any other, with the metadata kept as given.
    status, resolved = await api.get(f"TEST/{suffix}")
    by_index = {v["index"]: v for v in resolved["values"]}
    assert by_index[1]["data"]["value"] == SHARE_URL
    assert by_index[2]["data"]["value"] == DC_METADATA
    async with client.get(f"/TEST/{suffix}", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == SHARE_URL

    # modify_handle: hndl is the whole public handle, urlencoded.
    moved = "https://onezone.example.org/share/moved"
    status, body = await proxy(
        api,
        "PATCH",
        f"https://hdl.handle.net/TEST/{suffix}",
        proxy_body(url=moved, metadata=DC_RDF),
    )
    assert (status, body) == (204, None)
    status, resolved = await api.get(f"TEST/{suffix}")
    by_index = {v["index"]: v for v in resolved["values"]}
    assert by_index[1]["data"]["value"] == moved and by_index[2]["data"]["value"] == DC_RDF

    # unregister_handle: the service properties at the root of the DELETE body.
    status, body = await proxy(api, "DELETE", suffix, PROPERTIES)
    assert status == 200 and body["message"] == "Handle unregistered successfully"
    assert (await api.get(f"TEST/{suffix}"))[0] == 404


async def test_proxy_accepts_every_hndl_form_onezone_has_sent(api: Api):
    # DOI services send prefix/suffix; Onezone before 2024-09 made 7 base64url characters.
    doi = {**PROPERTIES, "type": "DOI"}
    status, _ = await proxy(api, "PUT", "TEST/doi-1", {**proxy_body(), "serviceProperties": doi})
    assert status == 201
    assert (await proxy(api, "PUT", "aB-_x9Q", proxy_body()))[0] == 201
    assert (await api.get("TEST/aB-_x9Q"))[0] == 200
    # Older Onezones deleted by the whole public handle; DOI ones by prefix/suffix.
    assert (await proxy(api, "DELETE", "https://hdl.handle.net/TEST/aB-_x9Q", PROPERTIES))[0] == 200
    assert (await proxy(api, "DELETE", "TEST/doi-1", doi))[0] == 200
    assert (await api.list({"prefix": "TEST"}))[1]["totalCount"] == "0"


@pytest.mark.parametrize(
    ("method", "body", "status", "error_id"),
    [
        ("PUT", proxy_body(password="wrong"), 401, "unauthorized"),
        ("PUT", proxy_body(username="", password=""), 401, "unauthorized"),
        ("PUT", proxy_body(username="not-an-identity"), 401, "unauthorized"),
        ("PUT", proxy_body(username="300:0.NA/10.5555", password="other-secret"), 403, "forbidden"),
        ("PUT", proxy_body(prefix="99.999"), 400, "malformedData"),  # not homed here
        ("PUT", proxy_body(prefix=""), 400, "missingRequiredValue"),
        ("PUT", proxy_body(url="javascript:alert(1)"), 400, "badValueString"),
        ("PUT", proxy_body(url="http://[oops"), 400, "badValueString"),
        ("PUT", proxy_body(metadata="<metadata>"), 400, "badValueXML"),
        ("PUT", proxy_body(metadata=BOMB), 400, "badValueXML"),
        ("PUT", {"url": SHARE_URL}, 400, "missingRequiredValue"),
        ("PUT", {**proxy_body(), "metadata": "x"}, 400, "badValueJSON"),
        ("PUT", b"<xml/>", 400, "malformedData"),
        ("DELETE", {**PROPERTIES, "password": "wrong"}, 401, "unauthorized"),
        ("DELETE", PROPERTIES, 404, "notFound"),
        ("PATCH", proxy_body(), 404, "notFound"),
    ],
)
async def test_a_bad_proxy_request_is_refused_and_changes_nothing(
    api: Api, method: str, body: Any, status: int, error_id: str
):
    answer = await proxy(api, method, "newsuffix1", body)
    assert_onezone_error(*answer, status, error_id)
    assert (await api.list({"prefix": "TEST"}))[1]["totalCount"] == "0"


async def test_proxy_refuses_to_take_over_an_existing_handle(api: Api):
    assert (await api.put("TEST/taken", [{"index": 1, "type": "URL", "data": "https://a.org"}]))[
        0
    ] == 201
    status, body = await proxy(api, "PUT", "taken", proxy_body())
    assert_onezone_error(status, body, 409, "alreadyExists")
    assert (await api.get("TEST/taken"))[1]["values"][0]["data"]["value"] == "https://a.org"
    # A missing hndl is named.
    status, body = await call(api, "PUT", f"{PROXY}/handle", proxy_body(), headers=ONEZONE_HEADERS)
    assert assert_onezone_error(status, body, 400, "missingRequiredValue")["details"] == {
        "key": "hndl"
    }


async def test_proxy_credentials_with_an_encoded_colon_or_a_basic_header(api: Api):
    encoded = proxy_body(username="300%3A0.NA/TEST")
    assert (await proxy(api, "PUT", "enc1", encoded))[0] == 201
    bare = proxy_body()
    del bare["serviceProperties"]["username"], bare["serviceProperties"]["password"]
    path = f"{PROXY}/handle?hndl=hdr1"
    assert (await call(api, "PUT", path, bare, headers={**ONEZONE_HEADERS, **ADMIN_AUTH}))[0] == 201
    assert (await call(api, "PUT", f"{PROXY}/handle?hndl=hdr2", bare, headers=ONEZONE_HEADERS))[
        0
    ] == 401


# -- path 3: Onedata's hps-b2handle proxy in front of /api/handles --------------------------------


def hps_auth(username: str, password: str) -> dict[str, str]:
    """requests' HTTPBasicAuth(username.replace(':', '%3A'), password), as hps sends it."""
    user = username.replace(":", "%3A")
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def hps_record(url: str, admin_handle: str = "0.NA/TEST") -> dict[str, Any]:
    return {
        "values": [
            {"index": 1, "type": "url", "data": url},
            {
                "index": 100,
                "type": "HS_ADMIN",
                "data": {
                    "format": "admin",
                    "value": {"handle": admin_handle, "index": 200, "permissions": "011111110011"},
                },
            },
        ]
    }


@pytest.mark.parametrize("admin_handle", ["0.NA/TEST", "0.NA/'TEST'"])  # the 2021 hps quoted it
async def test_onedatas_own_proxy_through_the_handle_api(api: Api, client, admin_handle: str):
    auth = {**hps_auth(ADMIN, SECRET), "Content-Type": "application/json"}
    async with client.put(
        "/api/handles/TEST/share1",
        data=orjson.dumps(hps_record(SHARE_URL, admin_handle)),
        headers=auth,
    ) as resp:
        assert resp.status == 201
        body = await resp.json()
    assert body == {"responseCode": 1, "handle": "TEST/share1"}
    async with client.get("/TEST/share1", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == SHARE_URL
    _, resolved = await api.get("TEST/share1")
    assert resolved["values"][0]["type"] == "url"  # the type kept as sent
    async with client.delete(
        "/api/handles/TEST/share1",
        headers={**hps_auth(ADMIN, SECRET), "Accept": "application/json"},
    ) as resp:
        assert resp.status == 200
        assert await resp.json() == {"responseCode": 1, "handle": "TEST/share1"}
    assert (await api.get("TEST/share1"))[0] == 404
