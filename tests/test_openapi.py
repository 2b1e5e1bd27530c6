"""The OpenAPI 3.1 description at /api/openapi.json: well formed, and true to real answers
(each one is checked against the schema the description gives for its path, method and
status); and the readable page at /api/docs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from handle_server import keys
from handle_server.app import create_app
from storage import Handle

from .helpers import (
    ADMIN_AUTH,
    API,
    HID,
    PROXY,
    Api,
    make_config,
    proxy_body,
    registration,
    url_value,
)

DOC_URI = "urn:handle-server:openapi"


@pytest.fixture
async def described(api: Api) -> tuple[Api, dict[str, Any]]:
    status, doc = await api._call("GET", "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    return api, doc


def _operation(doc: dict, path: str, method: str) -> tuple[str, dict]:
    """The described operation a concrete path falls under: of the templates it matches, the
    one with the most literal text (``/handles/{hid}/public`` before ``/handles/{hid}``)."""
    candidates = []
    for template, item in doc["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "(.+)", re.escape(template))
        if re.fullmatch(pattern, path) and method in item:
            literal = len(re.sub(r"\{[^}]+\}", "", template))
            candidates.append((-literal, template, item[method]))
    assert candidates, f"{method.upper()} {path} is not described"
    _, template, op = min(candidates)
    return template, op


def check(doc: dict, method: str, path: str, status: int, body: Any) -> None:
    template, op = _operation(doc, path.split("?")[0], method.lower())
    answers = op["responses"]
    assert str(status) in answers, f"{method} {template} answered {status}, not described"
    content = answers[str(status)].get("content", {})
    if "application/json" not in content:
        return
    registry = Registry().with_resource(DOC_URI, Resource(doc, DRAFT202012))
    schema = dict(content["application/json"]["schema"])
    if "$ref" in schema:
        schema["$ref"] = DOC_URI + schema["$ref"]
    schema = _absolute(schema)
    Draft202012Validator(schema, registry=registry).validate(body)


def _absolute(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (DOC_URI + v if k == "$ref" and v.startswith("#") else _absolute(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolute(v) for v in node]
    return node


def test_the_description_is_well_formed(api: Api):
    from handle_server.api.openapi import describe

    doc = describe()
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    text = repr(doc)
    for ref in re.findall(r"'#/components/schemas/(\w+)'", text):
        assert ref in doc["components"]["schemas"], ref
    operation_ids = [
        op["operationId"]
        for item in doc["paths"].values()
        for method, op in item.items()
        if method != "parameters"
    ]
    assert len(operation_ids) == len(set(operation_ids))


async def test_real_answers_match_the_description(described):
    api, doc = described
    put = {"json": [url_value("https://o.org")], "headers": ADMIN_AUTH}
    calls = [
        ("PUT", "/api/handles/TEST/o1", put),
        ("PUT", "/api/handles/TEST/o1", {**put, "params": {"overwrite": "false"}}),
        ("PUT", "/api/handles/TEST/o1", {"json": {"values": "x"}, "headers": ADMIN_AUTH}),
        ("PUT", "/api/handles/TEST/o2", {"json": [url_value("https://o.org")]}),
        ("PUT", "/api/handles/TEST/", {"json": [url_value("https://m.org")], "headers": ADMIN_AUTH,
                                       "params": {"mintNewSuffix": "true"}}),
        ("GET", "/api/handles/TEST/o1", {}),
        ("GET", "/api/handles/TEST/o1", {"params": {"type": "NOTHING"}}),
        ("GET", "/api/handles/TEST/none", {}),
        ("GET", "/api/handles/NOPE/x", {}),
        ("GET", "/api/handles", {"params": {"prefix": "TEST"}, "headers": ADMIN_AUTH}),
        ("GET", "/api/handles", {"params": {"prefix": "TEST", "page": "0", "pageSize": "1"},
                                 "headers": ADMIN_AUTH}),
        ("DELETE", "/api/handles/TEST/o1", {"params": {"index": "7"}, "headers": ADMIN_AUTH}),
        ("DELETE", "/api/handles/TEST/o1", {"headers": ADMIN_AUTH}),
        ("DELETE", "/api/handles/TEST/o1", {"headers": ADMIN_AUTH}),
        ("POST", "/api/batch", {"json": {"operations": [
            {"op": "put", "handle": "TEST/b1", "values": [url_value("https://b.org")]},
            {"op": "delete", "handle": "TEST/none"}]}, "headers": ADMIN_AUTH}),
        ("POST", "/api/batch", {"json": {"atomic": True, "operations": [
            {"op": "delete", "handle": "TEST/none"}]}, "headers": ADMIN_AUTH}),
        ("POST", "/api/batch", {"json": {"operations": "x"}, "headers": ADMIN_AUTH}),
        ("GET", "/api/history/TEST/o1", {"headers": ADMIN_AUTH}),
        ("GET", "/api/history/TEST/o1", {"headers": ADMIN_AUTH,
                                         "params": {"page": "0", "pageSize": "1"}}),
        ("GET", "/api/history/TEST/nothing", {"headers": ADMIN_AUTH}),
        ("GET", "/api/handles/TEST/o1", {"headers": ADMIN_AUTH, "params": {"version": "1"}}),
        ("POST", "/api/sessions", {"json": {"id": "300:0.NA/TEST"}}),
        ("GET", "/api/sessions/this", {}),
        ("GET", "/hrls/handles/", {"params": {"URL": "*m.org*"}}),
        ("GET", "/hrls/handles/", {"params": {"URL": "*"}}),
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
    ]  # fmt: skip
    statuses = set()
    for method, path, kwargs in calls:
        async with api.client.request(method, path, **kwargs) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            check(doc, method, path, resp.status, body)
            statuses.add(resp.status)
    assert {200, 201, 400, 401, 403, 404, 409} <= statuses
    # A version made by an import (operation "import", by the server) is described too.
    await api.client.app[keys.STORE].import_records([Handle("TEST/imported")])
    for path in ("/api/history/TEST/imported", "/api/handles/TEST/imported?version=1"):
        async with api.client.get(path, headers=ADMIN_AUTH) as resp:
            body = await resp.json()
            assert body.get("operation", body.get("versions", [{}])[0].get("operation")) == "import"
            check(doc, "GET", path, resp.status, body)
    async with api.client.get("/metrics") as resp:
        check(doc, "GET", "/metrics", resp.status, None)


async def test_the_docs_page_names_every_operation_and_needs_nothing_else(described):
    api, doc = described
    async with api.client.get("/api/docs") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    for item in doc["paths"].values():
        for method, op in item.items():
            if method != "parameters":
                assert f"id='{op['operationId']}'" in page
    assert "<script" not in page and not re.search(r"(src|href)=['\"]?https?:", page)


async def test_onezone_answers_match_the_description(aiohttp_client, tmp_path, storage_table):
    services = [{"id": "hs-test", "name": "Test handle service", "prefix": "TEST"}]
    config = make_config(tmp_path, storage=storage_table, onezone={"handle_services": services})
    client = await aiohttp_client(create_app(config))
    async with client.get("/api/openapi.json") as resp:
        doc = await resp.json()
    auth = {**ADMIN_AUTH, "Content-Type": "application/json"}
    calls = [
        ("POST", f"{API}/handles", {"json": registration(), "headers": auth}),
        ("POST", f"{API}/handles", {"json": registration(), "headers": auth}),
        ("POST", f"{API}/user/handles", {"json": registration(resourceId="x"), "headers": auth}),
        ("POST", f"{API}/handles", {"json": registration(handleServiceId="no")}),
        ("POST", f"{API}/handles", {"json": registration(handleServiceId="no"), "headers": auth}),
        ("GET", f"{API}/handles", {"headers": auth}),
        ("GET", f"{API}/handles/{HID}", {"headers": auth}),
        ("GET", f"{API}/user/handles/{HID}", {"headers": auth}),
        ("GET", f"{API}/handles/{HID}/public", {}),
        ("GET", f"{API}/handles/nothing/public", {}),
        ("PATCH", f"{API}/handles/{HID}", {"json": {"metadata": "<metadata/>"}, "headers": auth}),
        ("PATCH", f"{API}/handles/{HID}", {"json": {"resourceId": "y"}, "headers": auth}),
        ("GET", f"{API}/handle_services", {"headers": auth}),
        ("GET", f"{API}/handle_services/hs-test", {"headers": auth}),
        ("GET", f"{API}/handle_services/hs-test/public", {}),
        ("GET", f"{API}/handle_services/nothing/public", {}),
        ("GET", f"{API}/handle_services/hs-test/handles", {"headers": auth}),
        ("GET", f"{API}/handle_services/hs-test/handles/{HID}", {"headers": auth}),
        ("DELETE", f"{API}/handles/{HID}", {"headers": auth}),
        ("DELETE", f"{API}/handles/{HID}", {"headers": auth}),
        ("PUT", f"{PROXY}/handle?hndl=p1", {"json": proxy_body()}),
        ("PUT", f"{PROXY}/handle?hndl=p1", {"json": proxy_body()}),
        ("PUT", f"{PROXY}/handle?hndl=p2", {"json": proxy_body(password="wrong")}),
        ("PATCH", f"{PROXY}/handle?hndl=TEST/p1", {"json": proxy_body(url="https://m.org")}),
        ("PATCH", f"{PROXY}/handle?hndl=TEST/p1", {"json": proxy_body(url="ftp://x")}),
        ("DELETE", f"{PROXY}/handle?hndl=p1", {"json": proxy_body()}),
        ("DELETE", f"{PROXY}/handle?hndl=p1", {"json": proxy_body()}),
    ]
    statuses = set()
    for method, path, kwargs in calls:
        async with client.request(method, path, **kwargs) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            check(doc, method, path, resp.status, body)
            statuses.add(resp.status)
    assert {200, 201, 204, 400, 401, 404, 409} <= statuses

    config = make_config(
        tmp_path, storage=storage_table, onezone={"api_base": "", "proxy_base": ""}
    )
    async with (await aiohttp_client(create_app(config))).get("/api/openapi.json") as resp:
        assert not [p for p in (await resp.json())["paths"] if "onezone" in p or "onedata" in p]
