"""Reading a request: the handle in its path, its query parameters, its body, and who sends
it. Every API (REST, sessions, the resolver, Onezone) reads requests through here, so that a
parameter means the same everywhere and every body read is bounded."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import unquote

from aiohttp import web

from . import keys
from .auth.identities import Identity
from .errors import ClientDisconnected, InvalidHandle, ProtocolError, RequestTimeout

__all__ = ["flag", "identity", "int_param", "int_value", "path_handle", "read_body"]

_INT = re.compile(r"[+-]?[0-9]{1,18}")
_TRUE = frozenset({"", "true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def path_handle(request: web.Request, mount: str) -> str:
    """The handle in the path after ``mount``, percent-decoded once (so ``TEST%2Fabc`` is
    ``TEST/abc``)."""
    raw = request.rel_url.raw_path[len(mount) :]
    try:
        handle = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidHandle(None, "Handle is not valid UTF-8") from None
    request[keys.HANDLE] = handle
    return handle


def flag(request: web.Request, name: str, default: bool | None) -> bool | None:
    """A boolean parameter: absent -> ``default``; empty, true, yes, 1 -> True; false, no, 0 ->
    False (any case); anything else is refused rather than guessed."""
    given = request.query.getall(name, [])
    if not given:
        return default
    text = given[-1].strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ProtocolError(None, f"{name} must be true or false, got {given[-1]!r}")


def int_value(text: str, name: str) -> int:
    if not _INT.fullmatch(text.strip()):
        raise ProtocolError(None, f"{name} must be an integer, got {text!r}")
    return int(text)


def int_param(request: web.Request, name: str, default: int) -> int:
    given = request.query.getall(name, [])
    if not given:
        return default
    value = int_value(given[-1], name)
    if value > 2**31 - 1:
        raise ProtocolError(None, f"{name} must be at most {2**31 - 1}, got {value}")
    return value


async def identity(request: web.Request) -> Identity | None:
    """Who sends ``request``: ``None`` without credentials; raises for wrong ones."""
    service = request.config_dict[keys.SERVICE]
    return await service.authenticator.authenticate(
        request.headers.get("Authorization"), client=request.remote
    )


async def read_body(request: web.Request) -> bytes:
    """The request body, which must arrive within ``[server] body_timeout`` seconds (a client
    that trickles it in would hold a connection for ever). Every API reads bodies through
    here. While it waits, the request holds no slot of ``max_concurrent_requests``."""
    limit = request.config_dict[keys.CONFIG].server.body_timeout
    try:
        async with request.config_dict[keys.LIMIT].waiting_for_body(request):
            async with asyncio.timeout(limit):
                return await request.read()
    except TimeoutError:
        raise RequestTimeout(
            request.get(keys.HANDLE), f"Request body not received within {limit} seconds"
        ) from None
    except ConnectionResetError:  # aiohttp's "Connection lost"
        raise ClientDisconnected(
            request.get(keys.HANDLE), "The client closed the connection before its body was in"
        ) from None
