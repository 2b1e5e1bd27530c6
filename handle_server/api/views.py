"""Thin handlers for the Handle.Net JSON REST API: parse the request, call the service, shape
the answer. Errors are raised, never built here (see ``middlewares.py``)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import orjson
from aiohttp import web

from storage import ValueAlreadyExists, handle_key

from .. import keys, params
from ..cache import Answer
from ..errors import (
    AuthenticationNeeded,
    BodyTooLarge,
    InvalidHandle,
    InvalidValue,
    ProtocolError,
)
from ..responses import cached_response, etag_of, json_response
from ..serializers import value_to_json, values_from_body
from ..service import Precondition
from .history import get_version

__all__ = [
    "API_HANDLES",
    "REVERSE_LOOKUP",
    "delete_handle",
    "get_handle",
    "list_handles",
    "put_handle",
    "resolve_json",
    "reverse_lookup",
]

API_HANDLES = "/api/handles"
#: DELETE: forget cached records (every process on the store), for the server's [[admins]].
API_CACHE = "/api/cache"
#: Where the reference server's reverse-lookup servlet answers (pyhandle's ``search_handle``).
REVERSE_LOOKUP = "/hrls/handles"
_SEARCH_OPTIONS = frozenset({"prefix", "limit", "page"})
_SEARCH_MAX_LIMIT = 10_000
#: An entity tag as HTTP writes it (RFC 9110 §8.8.3), weak or strong.
_ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e\x80-\xff]*"')


async def _json_body(request: web.Request, handle: str) -> object:
    if request.content_type != "application/json":
        raise ProtocolError(
            handle,
            f"Unsupported media type {request.content_type!r}: send Content-Type: application/json",
        )
    try:
        raw = await params.read_body(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[keys.CONFIG].server.max_body_bytes
        raise BodyTooLarge(handle, f"Request body larger than {limit} bytes") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(handle, f"Invalid JSON in PUT request: {exc}") from None


def _record_body(handle: str, values: Sequence, response_code: int, *, pretty: bool) -> bytes:
    """A record's JSON answer, as GET gives it."""
    document = {
        "responseCode": response_code,
        "handle": handle,
        "values": [value_to_json(v) for v in values],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 if pretty else 0)


def record_tags(handle: str, values: Sequence) -> tuple[str, str]:
    """The entity tags a GET of ``handle`` showing ``values`` gives, plain and ``?pretty``."""
    code = 1 if values else 200
    return tuple(  # type: ignore[return-value]
        etag_of(_record_body(handle, values, code, pretty=pretty)) for pretty in (False, True)
    )


def _entity_tags(request: web.Request, header: str, handle: str) -> frozenset[str] | None:
    """The strong entity tags (or ``*``) of a conditional header; a weak tag never matches a
    write (strong comparison, RFC 9110 §13.1.1)."""
    raw = request.headers.getall(header, [])
    if not raw:
        return None
    text = ",".join(raw).strip()
    if text == "*":
        return frozenset({"*"})
    tags = set()
    rest = text
    while rest:
        found = _ENTITY_TAG.match(rest)
        if found is None:
            raise ProtocolError(
                handle,
                f"{header} must be * or a list of entity tags as an answer's ETag gives them "
                f'(e.g. "0f3a..."), got {text[:100]!r}',
            )
        if found.group(1) is None:
            tags.add(found.group(0))
        rest = rest[found.end() :].lstrip(" \t")
        if rest:
            if not rest.startswith(","):
                raise ProtocolError(handle, f"{header}: entity tags are separated by commas")
            rest = rest[1:].lstrip(" \t")
    return frozenset(tags)


def precondition(request: web.Request, handle: str) -> Precondition | None:
    """The write's condition from ``If-Match`` / ``If-None-Match``, if it has one."""
    match = _entity_tags(request, "If-Match", handle)
    none_match = _entity_tags(request, "If-None-Match", handle)
    if match is None and none_match is None:
        return None
    return Precondition(record_tags, match=match, none_match=none_match)


async def get_handle(request: web.Request) -> web.StreamResponse:
    """GET /api/handles/{handle}: resolve (or, with an empty handle, list a prefix)."""
    handle = params.path_handle(request, API_HANDLES + "/")
    if not handle:
        return await list_handles(request)
    if "version" in request.query:
        return await get_version(request, handle)
    return await resolve_json(request, handle)


async def resolve_json(request: web.Request, handle: str) -> web.Response:
    """The REST answer for ``handle``, with HTTP caching (also the resolver's JSON answer)."""
    indexes = [params.int_value(i, "index") for i in request.query.getall("index", [])]
    types = request.query.getall("type", [])
    identity = await params.identity(request)
    asked = params.flag(request, "publicOnly", default=None)
    public_only = asked if asked is not None else identity is None
    refresh = params.flag(request, "auth", default=False)
    service = request.app[keys.SERVICE]
    resolution = await service.resolve(
        handle,
        indexes=indexes,
        types=types,
        public_only=public_only,
        identity=identity,
        refresh=refresh,
        asked_for_private=asked is False,
    )
    # A public answer of a whole cached view is built once per cache entry (a hot handle is
    # asked for again and again); anything else, every time.
    entry = resolution.entry if identity is None and "pretty" not in request.query else None
    answer = entry.answer if entry is not None else None
    if answer is not None and answer.name == handle:
        body, etag = answer.body, answer.etag
    else:
        body = _record_body(
            handle,
            resolution.values,
            resolution.response_code,
            pretty="pretty" in request.query,
        )
        etag = etag_of(body)
        if entry is not None:
            # A copy of exactly its size: orjson's bytes keep their (4 KiB) buffer.
            entry.answer = answer = Answer(handle, bytes(memoryview(body)), etag)
    if answer is not None and answer.name == handle and request.path.startswith(API_HANDLES):
        # Kept to be answered before routing next time (not the resolver's JSON: it depends
        # on Accept).
        request.app[keys.HOT].keep(request, resolution, answer)
    return cached_response(
        request,
        body,
        etag=etag,
        content_type="application/json",
        expires=resolution.expires if identity is None else None,
        now=service.now(),
    )


def put_values(handle: str, body: object) -> list:
    """The values a PUT body gives for ``handle``, each index once."""
    values = values_from_body(
        body,
        handle,
        same_handle=lambda n: isinstance(n, str) and handle_key(n) == handle_key(handle),
    )
    if len({v.index for v in values}) == len(values):
        return values
    repeated = [i for i, n in Counter(v.index for v in values).items() if n > 1]
    if repeated:
        raise ValueAlreadyExists(
            handle,
            repeated,
            f"Index conflict: index {', '.join(map(str, sorted(repeated)))} "
            "appears more than once in the request",
        )
    return values


def check_indexes(handle: str, index_params: Sequence[str], values: Sequence) -> None:
    """A PUT that adds values (``?index=``) names exactly the indexes of its values, or
    ``various``."""
    if not values:
        raise InvalidValue(handle, "No values given to add")
    if not any(p.strip().lower() == "various" for p in index_params):
        wanted = {params.int_value(p, "index") for p in index_params}
        if wanted != {v.index for v in values}:
            raise ProtocolError(
                handle,
                "Mismatched indexes in PUT request: the index parameters must name exactly "
                "the indexes of the values in the body",
            )
    elif len(index_params) > 1:
        raise ProtocolError(handle, "index=various cannot be combined with other indexes")


async def put_handle(request: web.Request) -> web.Response:
    """PUT /api/handles/{handle}: create, replace, mint, or add/replace values (?index=)."""
    handle = params.path_handle(request, API_HANDLES + "/")
    identity = await params.identity(request)
    service = request.app[keys.SERVICE]
    overwrite = params.flag(request, "overwrite", default=True)
    mint = params.flag(request, "mintNewSuffix", default=False)
    index_params = request.query.getall("index", [])
    if mint and index_params:
        raise ProtocolError(handle, "mintNewSuffix creates a handle: it cannot be used with index")
    if identity is None:  # refused before the body is read: no write is anonymous
        raise AuthenticationNeeded(handle, "Authentication needed")
    condition = precondition(request, handle)
    body = await _json_body(request, handle)
    values = put_values(handle, body)
    if index_params:
        check_indexes(handle, index_params, values)
        all_new = await service.add_values(
            handle, values, overwrite=overwrite, identity=identity, condition=condition
        )
        return json_response(
            request, {"responseCode": 1, "handle": handle}, status=201 if all_new else 200
        )
    if mint:
        minted = await service.mint(handle, values, identity=identity, condition=condition)
        request[keys.HANDLE] = minted
        return json_response(request, {"responseCode": 1, "handle": minted}, status=201)
    created = await service.create(
        handle, values, overwrite=overwrite, identity=identity, condition=condition
    )
    return json_response(
        request, {"responseCode": 1, "handle": handle}, status=201 if created else 200
    )


async def delete_handle(request: web.Request) -> web.Response:
    """DELETE /api/handles/{handle}: the whole handle, or the values at ?index=."""
    handle = params.path_handle(request, API_HANDLES + "/")
    identity = await params.identity(request)
    service = request.app[keys.SERVICE]
    indexes = [params.int_value(i, "index") for i in request.query.getall("index", [])]
    condition = precondition(request, handle)
    if indexes:
        await service.remove_values(handle, indexes, identity=identity, condition=condition)
    else:
        await service.delete(handle, identity=identity, condition=condition)
    return json_response(request, {"responseCode": 1, "handle": handle})


async def purge_cache(request: web.Request) -> web.Response:
    """DELETE /api/cache/{handle}: forget the cached record of one handle, homed here or (in
    global mode) elsewhere, in every process; DELETE /api/cache: forget every cached record.
    For the identities of [[admins]]."""
    handle = params.path_handle(request, API_CACHE + "/") if request.match_info else None
    identity = await params.identity(request)
    await request.app[keys.SERVICE].purge(handle, identity=identity)
    body: dict = {"responseCode": 1}
    if handle is not None:
        body["handle"] = handle
    return json_response(request, body)


#: Listing pages of at most this many handles are answered whole; larger ones and unpaged
#: listings are streamed as the store gives them.
_WHOLE_PAGE = 1000


async def list_handles(request: web.Request) -> web.StreamResponse:
    """GET /api/handles?prefix=P&page=K&pageSize=S: the handles under a prefix, streamed."""
    given = request.query.getall("prefix", [])
    if not given:
        raise InvalidHandle(None, "Empty handle invalid: give a handle, or prefix= to list")
    prefix = given[-1]
    identity = await params.identity(request)
    service = request.app[keys.SERVICE]
    name = service.listing_prefix(prefix)
    page = params.int_param(request, "page", -1)
    page_size = params.int_param(request, "pageSize", -1)
    total = await service.count_handles(name, identity)
    head: dict = {"responseCode": 1, "prefix": prefix, "totalCount": str(total)}
    offset, limit = 0, None
    if page >= 0 and page_size >= 0:
        head["page"], head["pageSize"] = page, page_size
        offset, limit = page * page_size, page_size
    if limit is not None and limit <= _WHOLE_PAGE:
        # A page of a few handles is sent in one write, not streamed in five.
        batches = service.iter_handles(name, offset=offset, limit=limit)
        handles = [handle async for batch in batches for handle in batch]
        body = orjson.dumps(head)[:-1] + b',"handles":' + orjson.dumps(handles) + b"}"
        return web.Response(body=body, content_type="application/json")
    response = web.StreamResponse()
    response.content_type = "application/json"
    await response.prepare(request)
    await response.write(orjson.dumps(head)[:-1] + b',"handles":[')
    first = True
    async for batch in service.iter_handles(name, offset=offset, limit=limit):
        chunk = b",".join(orjson.dumps(h) for h in batch)
        await response.write(chunk if first else b"," + chunk)
        first = False
    await response.write(b"]}")
    await response.write_eof()
    return response


async def reverse_lookup(request: web.Request) -> web.Response:
    """GET /hrls/handles/?URL=*example.org*&CHECKSUM=md5:...[&prefix=P][&limit=N][&page=K]: the
    handles whose values match every TYPE=pattern (any type; ``*`` is the wildcard), as a JSON
    array of names, ``limit`` (default 1000, at most 10,000) per page, pages counted from 0.
    Anyone may search public values; a prefix's configured admins search its private ones too."""
    conditions = [(k, v) for k, v in request.query.items() if k.lower() not in _SEARCH_OPTIONS]
    if not conditions:
        raise ProtocolError(None, "Give at least one TYPE=pattern to search for, e.g. ?URL=*x.org*")
    limit = params.int_param(request, "limit", 1000)
    page = params.int_param(request, "page", 0)
    if not 1 <= limit <= _SEARCH_MAX_LIMIT:
        raise ProtocolError(None, f"limit must be between 1 and {_SEARCH_MAX_LIMIT}, got {limit}")
    if page < 0:
        raise ProtocolError(None, f"page must not be negative, got {page}")
    prefixes = request.query.getall("prefix", [])
    identity = await params.identity(request)
    names = await request.app[keys.SERVICE].search(
        conditions,
        prefix=prefixes[-1] if prefixes else None,
        identity=identity,
        offset=page * limit,
        limit=limit,
    )
    return json_response(request, names)
