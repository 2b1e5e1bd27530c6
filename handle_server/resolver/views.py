"""The resolver proxy, as hdl.handle.net and doi.org serve browsers: ``GET /{handle}``
redirects to the handle's location, ``?noredirect`` (or a record without a location) shows
its public values as a page, ``Accept: application/json`` gets the REST answer, and ``/`` is a
lookup form. The same rules as the REST API apply: only public values are ever used or shown.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from urllib.parse import quote
from xml.etree.ElementTree import Element

from aiohttp import web

from storage import HandleNotFound, HandleValue

from .. import keys, params
from ..api.views import resolve_json
from ..errors import ProtocolError
from ..responses import cached_response, redirect_response, wants_json
from .locations import UnsafeAppend, choose_redirect, is_location_list, location_lists
from .pages import deleted_page, lookup_page, record_page, redirect_body

__all__ = ["RNG", "favicon", "lookup", "resolve", "vary_on_accept"]

#: The random source for weighted location choices (tests replace it with a seeded one).
RNG = web.AppKey("resolver_rng", random.Random)
_PARSE_ON_LOOP_BYTES = 16_384


async def lookup(request: web.Request) -> web.Response:
    """``/``: the lookup form; ``/?hdl=X`` goes to ``/X``, always a path on this server (a
    leading ``/`` would make ``//host``, another site; ``quote`` leaves no ``\\`` either)."""
    handle = request.query.get("hdl", "").strip().lstrip("/")
    if handle:
        raise web.HTTPSeeOther("/" + quote(handle, safe="/"))
    return web.Response(text=lookup_page(), content_type="text/html")


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=404)


async def vary_on_accept(request: web.Request, response: web.StreamResponse) -> None:
    """Every resolver answer (pages, redirects, JSON, errors) depends on ``Accept``: tell
    caches so (an ``on_response_prepare`` hook)."""
    if not request.path.startswith("/api/"):
        response.headers["Vary"] = "Accept"


async def _parsed_lists(values: Sequence[HandleValue]) -> list[Element]:
    """The 10320/loc lists of ``values``; a large one is parsed off the event loop (values
    written before ``[handle] max_location_bytes`` existed may be large)."""
    size = sum(len(v.data) for v in values if is_location_list(v))
    if size > _PARSE_ON_LOOP_BYTES:
        return await asyncio.to_thread(location_lists, values)
    return location_lists(values)


async def resolve(request: web.Request) -> web.StreamResponse:
    """``GET /{handle}``."""
    handle = params.path_handle(request, "/")
    if wants_json(request):
        return await resolve_json(request, handle)
    service = request.app[keys.SERVICE]
    indexes = [params.int_value(i, "index") for i in request.query.getall("index", [])]
    types = request.query.getall("type", [])
    refresh = params.flag(request, "auth", default=False)
    try:
        resolution = await service.resolve(
            handle, indexes=indexes, types=types, public_only=True, identity=None, refresh=refresh
        )
    except HandleNotFound:
        # A browser is told that a deleted handle existed (410); the JSON answer stays 404,
        # as the reference's.
        when = await service.deleted_at(handle)
        if when is None:
            raise
        return web.Response(
            status=410,
            text=deleted_page(handle, when),
            content_type="text/html",
            headers={"Cache-Control": "no-cache"},
        )
    now = service.now()
    if "noredirect" not in request.query:
        entry = resolution.entry
        if entry is not None:  # the whole cached view: its lists are parsed once per entry
            if entry.locations is None:
                entry.locations = await _parsed_lists(resolution.values)
            lists = entry.locations
        else:
            lists = await _parsed_lists(resolution.values)
        try:
            target = choose_redirect(
                resolution.values,
                handle,
                locatt=request.query.getall("locatt", []),
                urlappend=request.query.get("urlappend", ""),
                remote=request.remote,
                country=request.query.get("country"),
                rng=request.app[RNG],
                lists=lists,
            )
        except UnsafeAppend as exc:
            raise ProtocolError(handle, str(exc)) from None
        if target is not None:
            body = redirect_body(target.url)
            if not lists and not request.query_string:  # the same every time: keep it
                request.app[keys.HOT].keep_redirect(request, resolution, target, body)
            return redirect_response(
                target.status, target.url, body, expires=resolution.expires, now=now
            )
    page = record_page(handle, resolution.values).encode("utf-8")
    return cached_response(
        request,
        page,
        content_type="text/html",
        charset="utf-8",
        expires=resolution.expires,
        now=now,
    )
