"""The one place where exceptions become answers: exception class -> (HTTP status, Handle
responseCode), with the statuses the reference server uses for those codes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from storage import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    InvalidData,
    SearchTimeout,
    StoreUnavailable,
    ValueAlreadyExists,
    ValuesNotFound,
)

from . import keys
from .errors import (
    AuthenticationFailed,
    AuthenticationNeeded,
    BodyTooLarge,
    ClientDisconnected,
    InsufficientPermissions,
    InvalidAdmin,
    InvalidHandle,
    InvalidValue,
    ProtocolError,
    RecordTooLarge,
    RequestTimeout,
    ServerNotResponsible,
    ServerTooBusy,
    TooManyFailures,
    TryAgainLater,
)
from .resolver.pages import error_page
from .responses import json_response, wants_json
from .serializers import error_body

__all__ = ["ERROR_TABLE", "error_middleware"]

log = logging.getLogger(__name__)

RC_ERROR = 2
RC_PROTOCOL_ERROR = 4

#: exception class -> (HTTP status, responseCode). Looked up along the class's MRO.
ERROR_TABLE: dict[type[HandleError], tuple[int, int]] = {
    BodyTooLarge: (413, RC_PROTOCOL_ERROR),
    RequestTimeout: (408, RC_PROTOCOL_ERROR),
    ClientDisconnected: (499, RC_PROTOCOL_ERROR),  # nginx's "client closed request"
    ProtocolError: (400, RC_PROTOCOL_ERROR),
    InvalidData: (400, RC_PROTOCOL_ERROR),
    StoreUnavailable: (503, 3),  # RC_SERVER_TOO_BUSY
    SearchTimeout: (503, 3),
    HandleNotFound: (404, 100),
    HandleAlreadyExists: (409, 101),
    InvalidHandle: (400, 102),
    ValuesNotFound: (400, 200),  # a GET that matches nothing is a 200 answer, not an error
    ValueAlreadyExists: (409, 201),
    InvalidValue: (400, 202),
    RecordTooLarge: (413, 202),
    ServerNotResponsible: (400, 301),
    InvalidAdmin: (403, 400),
    InsufficientPermissions: (403, 401),
    AuthenticationNeeded: (401, 402),
    AuthenticationFailed: (401, 403),  # the reference answers a wrong secret with 401 too
    TooManyFailures: (429, 3),  # RC_SERVER_TOO_BUSY; the reference has no throttling
    ServerTooBusy: (503, 3),  # RC_SERVER_TOO_BUSY
}

_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Basic realm="handle"'}


def status_and_code(exc: HandleError) -> tuple[int, int]:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return 500, RC_ERROR


#: Paths whose answers are JSON whoever asks (the resolver's pages are HTML for browsers).
_JSON_PATHS = ("/api/", "/hrls/")


def _wants_page(request: web.Request) -> bool:
    """The resolver answers browsers with HTML; the API, and clients asking for JSON, get JSON."""
    return not request.path.startswith(_JSON_PATHS) and not wants_json(request)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except HandleError as exc:
        status, code = status_and_code(exc)
        if isinstance(exc, StoreUnavailable):
            log.error("store unavailable: %s", exc.message)
            message = "The handle store is unavailable; try again shortly"
        else:
            message = exc.message
        handle = exc.handle if exc.handle is not None else request.get(keys.HANDLE)
        headers = _WWW_AUTHENTICATE if status == 401 else None
        if isinstance(exc, TryAgainLater):
            headers = exc.retry_after_header
        if _wants_page(request):
            response = web.Response(
                text=error_page(status, message, handle),
                status=status,
                content_type="text/html",
                headers=headers,
            )
        else:
            response = json_response(
                request, error_body(code, handle, message), status=status, headers=headers
            )
        if isinstance(exc, RequestTimeout | ClientDisconnected):
            response.force_close()  # the rest of its body is not waited for
        return response
    except web.HTTPException as exc:
        if not request.path.startswith(_JSON_PATHS) or exc.status < 400:
            raise
        if exc.status == 413:
            message = (
                f"Request body larger than {request.app[keys.CONFIG].server.max_body_bytes} bytes"
            )
        elif exc.status == 405:
            message = f"Unknown method {request.method} for {request.path}"
        elif exc.status == 404:
            message = f"Unknown HTTP API endpoint {request.path}"
        else:
            message = exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return json_response(
            request,
            error_body(RC_PROTOCOL_ERROR, request.get(keys.HANDLE), message),
            status=exc.status,
            headers=headers,
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response(
            request,
            error_body(RC_ERROR, request.get(keys.HANDLE), "Internal server error"),
            status=500,
        )
