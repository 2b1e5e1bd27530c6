"""Record history: ``GET /api/history/{handle}`` (every version, oldest first, paged as the
listing is) and ``GET /api/handles/{handle}?version=N`` (the record after version N), for
identities that may read the handle's non-public values."""

from __future__ import annotations

from aiohttp import web

from storage import Version

from .. import keys, params
from ..errors import InvalidHandle, ProtocolError
from ..responses import json_response
from ..serializers import format_timestamp, value_to_json

__all__ = ["API_HISTORY", "get_history", "get_version"]

API_HISTORY = "/api/history"
#: Nobody is to keep a history answer: it holds non-public values.
_PRIVATE = {"Cache-Control": "private, no-store"}


def version_to_json(version: Version) -> dict:
    record = version.record
    return {
        "version": version.number,
        "timestamp": format_timestamp(int(version.at)),
        "by": version.by,
        "operation": version.operation,
        "values": [value_to_json(v) for v in record.values] if record is not None else [],
    }


async def get_history(request: web.Request) -> web.Response:
    """GET /api/history/{handle}[?page=K&pageSize=S]."""
    handle = params.path_handle(request, API_HISTORY + "/")
    if not handle:
        raise InvalidHandle(None, "Empty handle invalid: give the handle whose history to show")
    identity = await params.identity(request)
    page = params.int_param(request, "page", -1)
    page_size = params.int_param(request, "pageSize", -1)
    offset, limit = 0, None
    if page >= 0 and page_size >= 0:
        offset, limit = page * page_size, page_size
    total, versions = await request.app[keys.SERVICE].history(
        handle, identity=identity, offset=offset, limit=limit
    )
    body: dict = {"responseCode": 1, "handle": handle, "totalCount": total}
    if limit is not None:
        body["page"], body["pageSize"] = page, page_size
    body["versions"] = [version_to_json(v) for v in versions]
    return json_response(request, body, headers=_PRIVATE)


async def get_version(request: web.Request, handle: str) -> web.Response:
    """GET /api/handles/{handle}?version=N: the record as version N left it."""
    given = request.query.getall("version")
    if len(given) > 1:
        raise ProtocolError(handle, "Give one version")
    number = params.int_param(request, "version", 0)
    if number < 1:
        raise ProtocolError(handle, f"version counts from 1, got {number}")
    if {"index", "type", "auth", "publicOnly"} & request.query.keys():
        raise ProtocolError(handle, "version= shows a whole record: no index, type or auth")
    identity = await params.identity(request)
    version = await request.app[keys.SERVICE].version(handle, number, identity=identity)
    body = {"responseCode": 1, "handle": handle, **version_to_json(version)}
    if version.record is None:
        body["responseCode"] = 200  # deleted by this version: a record of no values
    return json_response(request, body, headers=_PRIVATE)
