"""The one place where exceptions become HTTP answers: the status and responseCode of
``errors.status_and_code``, as JSON or, for a browser, a page."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import ClientConnectionResetError, web

from storage import HandleError, StoreUnavailable

from . import keys
from .errors import (
    RC_ERROR,
    RC_PROTOCOL_ERROR,
    ClientDisconnected,
    RequestTimeout,
    TryAgainLater,
    client_message,
    status_and_code,
)
from .resolver.pages import error_page
from .responses import json_response, wants_json
from .serializers import error_body

__all__ = ["error_middleware"]

log = logging.getLogger(__name__)

_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Basic realm="handle"'}

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
        message = client_message(exc)
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
    except ClientConnectionResetError:
        # The client hung up while a streamed answer (a listing, a batch's results) was
        # being written: nobody hears an answer. Logged with 499, as a request body cut
        # short is; aiohttp finds the connection gone when it writes this one.
        response = json_response(
            request,
            error_body(RC_PROTOCOL_ERROR, request.get(keys.HANDLE), "The client went away"),
            status=499,
        )
        response.force_close()
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response(
            request,
            error_body(RC_ERROR, request.get(keys.HANDLE), "Internal server error"),
            status=500,
        )
