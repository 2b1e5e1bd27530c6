"""pyhandle (EUDAT's client library, from PyPI, unmodified) against this server: every call of
its REST client that talks to a Handle server. pyhandle is synchronous (requests), so each
call runs in a thread while the server answers on the test's event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pyhandle.client.resthandleclient import RESTHandleClient
from pyhandle.handleexceptions import (
    HandleAlreadyExistsException,
    HandleAuthenticationError,
    HandleNotFoundException,
)

from .helpers import ADMIN, SECRET, Api


@pytest.fixture
def base(api: Api) -> str:
    return str(api.client.make_url("")).rstrip("/")


async def call(fn, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def writer(base: str, secret: str = SECRET) -> RESTHandleClient:
    return await call(RESTHandleClient.instantiate_with_username_and_password, base, ADMIN, secret)


async def test_register_resolve_modify_and_delete(api: Api, base: str):
    client = await writer(base)
    handle = "TEST/pyhandle-1"
    created = await call(
        client.register_handle, handle, "https://example.org/a", checksum="md5:abc", EXTRA="x"
    )
    assert created == handle
    with pytest.raises(HandleAlreadyExistsException):
        await call(client.register_handle, handle, "https://example.org/b")

    reader = await call(RESTHandleClient.instantiate_for_read_access, base)
    record = await call(reader.retrieve_handle_record, handle)
    assert record["URL"] == "https://example.org/a" and record["CHECKSUM"] == "md5:abc"
    assert record["EXTRA"] == "x" and "HS_ADMIN" in record
    assert await call(reader.get_value_from_handle, handle, "CHECKSUM") == "md5:abc"
    as_json = await call(reader.retrieve_handle_record_json, handle)
    assert as_json["handle"] == handle and as_json["responseCode"] == 1

    # Change one value, add another: the rest stay as they were.
    await call(client.modify_handle_value, handle, URL="https://example.org/new", NOTE="n")
    record = await call(reader.retrieve_handle_record, handle)
    assert record["URL"] == "https://example.org/new" and record["NOTE"] == "n"
    assert record["CHECKSUM"] == "md5:abc"
    await call(client.add_handle_value, handle, SECOND="2")
    assert await call(reader.get_value_from_handle, handle, "SECOND") == "2"

    await call(client.delete_handle_value, handle, ["NOTE", "SECOND"])
    record = await call(reader.retrieve_handle_record, handle)
    assert "NOTE" not in record and "SECOND" not in record and record["EXTRA"] == "x"

    assert await call(client.delete_handle, handle) == handle
    assert await call(reader.retrieve_handle_record_json, handle) is None
    with pytest.raises(HandleNotFoundException):
        await call(client.delete_handle, handle)
    with pytest.raises(HandleNotFoundException):
        await call(reader.get_value_from_handle, handle, "URL")


async def test_overwrite_minted_names_and_unicode(api: Api, base: str):
    client = await writer(base)
    minted = await call(client.generate_and_register_handle, "TEST", "https://example.org/m")
    assert minted.startswith("TEST/")
    assert await call(client.get_value_from_handle, minted, "URL") == "https://example.org/m"
    await call(client.register_handle, minted, "https://example.org/o", overwrite=True)
    assert await call(client.get_value_from_handle, minted, "URL") == "https://example.org/o"

    name = "TEST/Grüße-ünïcode"
    assert await call(client.register_handle, name, "https://example.org/u") == name
    assert (await call(client.retrieve_handle_record_json, name))["handle"] == name


async def test_a_10320_loc_value_registered_by_pyhandle_drives_the_resolver(api: Api, base):
    client = await writer(base)
    loc = '<locations><location id="0" href="https://mirror.example.org/x" weight="1"/></locations>'
    await call(client.register_handle_kv, "TEST/loc", **{"10320/LOC": loc})
    resp = await api.client.get("/TEST/loc", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "https://mirror.example.org/x"


async def test_a_wrong_secret_is_an_authentication_error(api: Api, base: str):
    client = await writer(base, "not-the-secret")  # pyhandle does not check it up front
    with pytest.raises(HandleAuthenticationError):
        await call(client.register_handle, "TEST/denied", "https://example.org/d")
    assert (await api.get("TEST/denied"))[0] == 404
