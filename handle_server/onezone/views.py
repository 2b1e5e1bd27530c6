"""The Onezone handle API and the handle-proxy contract: two sub-applications whose answers and
errors are in Onezone's shape (``{"error": {"id", "details", "description"}}``), never in the
Handle API's. Their one error table is ``ONEZONE_ERRORS`` below."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from storage import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    StoreUnavailable,
    ValueAlreadyExists,
)

from .. import keys, params
from ..auth.identities import Identity
from ..config import HandleServiceConfig, OnezoneConfig
from ..errors import (
    AuthenticationFailed,
    AuthenticationNeeded,
    InsufficientPermissions,
    InvalidAdmin,
    ServerTooBusy,
    TooManyFailures,
    TryAgainLater,
)
from ..params import read_body
from .service import OnezoneError, parse_registration

__all__ = ["ONEZONE_ERRORS", "onezone_api", "onezone_proxy"]

log = logging.getLogger(__name__)

#: Onezone error id -> HTTP status (ctool ``errors:to_http_code``).
ONEZONE_ERRORS: dict[str, int] = {
    "badValueString": 400,
    "badValueXML": 400,
    "badValueTextTooLarge": 400,
    "badValueNotAllowed": 400,
    "badValueIdNotFound": 400,
    "badValueIdentifier": 400,
    "badValueJSON": 400,
    "missingRequiredValue": 400,
    "malformedData": 400,
    "notSupported": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "notFound": 404,
    "alreadyExists": 409,
    "tooManyRequests": 429,
    "internalServerError": 500,
    "serviceUnavailable": 503,
}

#: Handle errors from the service below, in Onezone's terms (by class, along the MRO).
_FROM_HANDLE_ERRORS: dict[type[HandleError], str] = {
    HandleNotFound: "notFound",
    HandleAlreadyExists: "alreadyExists",
    ValueAlreadyExists: "alreadyExists",
    AuthenticationNeeded: "unauthorized",
    AuthenticationFailed: "unauthorized",
    InvalidAdmin: "forbidden",
    InsufficientPermissions: "forbidden",
    TooManyFailures: "tooManyRequests",
    StoreUnavailable: "serviceUnavailable",
    ServerTooBusy: "serviceUnavailable",
}


def error_body(error_id: str, description: str, details: dict[str, Any] | None) -> bytes:
    error: dict[str, Any] = {"id": error_id, "description": description}
    if details:
        error["details"] = details
    return orjson.dumps({"error": error})


def _onezone_error(exc: HandleError) -> OnezoneError:
    for cls in type(exc).__mro__:
        if cls in _FROM_HANDLE_ERRORS:
            error_id = _FROM_HANDLE_ERRORS[cls]
            break
    else:
        # What a Handle rule refused in the request (a bad handle, a prefix not homed here).
        return OnezoneError("malformedData", f"Provided data could not be used: {exc.message}")
    if isinstance(exc, StoreUnavailable):
        return OnezoneError(error_id, "The handle store is unavailable; try again shortly.")
    return OnezoneError(error_id, exc.message)


@web.middleware
async def onezone_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    headers: dict[str, str] = {}
    try:
        return await handler(request)
    except OnezoneError as exc:
        error = exc
    except HandleError as exc:
        if isinstance(exc, StoreUnavailable):
            log.error("store unavailable: %s", exc.message)
        if isinstance(exc, TryAgainLater):
            headers.update(exc.retry_after_header)
        error = _onezone_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            error = OnezoneError("notFound", "The resource could not be found.")
        elif exc.status == 405:
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            error = OnezoneError(
                "notSupported", f"No {request.method} operation on {request.path}."
            )
            return _answer(error, 405, headers)
        elif exc.status == 413:
            limit = request.config_dict[keys.CONFIG].server.max_body_bytes
            error = OnezoneError(
                "malformedData", f"Request body larger than {limit} bytes.", limit=limit
            )
            return _answer(error, 413, headers)
        else:
            error = OnezoneError("malformedData", exc.reason)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        error = OnezoneError("internalServerError", "The server has encountered an error.")
    if error.id == "unauthorized":
        headers["WWW-Authenticate"] = 'Basic realm="handle"'
    return _answer(error, ONEZONE_ERRORS.get(error.id, 400), headers)


def _answer(error: OnezoneError, status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(
        body=error_body(error.id, error.description, error.details),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def _body(request: web.Request) -> Any:
    """The JSON body (whatever the Content-Type says: Onezone's clients are not all careful)."""
    raw = await read_body(request)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise OnezoneError(
            "malformedData", "Provided data could not be understood by the server."
        ) from None


async def _authenticated(request: web.Request) -> Identity:
    identity = await params.identity(request)
    if identity is None:
        raise AuthenticationNeeded(
            None, "You must authenticate yourself to perform this operation."
        )
    return identity


def _config(request: web.Request) -> OnezoneConfig:
    return request.config_dict[keys.CONFIG].onezone


# -- the Onezone handle API --------------------------------------------------------------------


def _location(request: web.Request, path: str) -> str:
    # The configured URL, never the request's Host header (which the client chooses).
    return request.config_dict[keys.CONFIG].server.base_url + _config(request).api_base + path


async def register(request: web.Request) -> web.Response:
    """POST /handles: 201 with the new handle resource in Location."""
    return await _register(request, "/handles")


async def register_user_handle(request: web.Request) -> web.Response:
    """POST /user/handles: as POST /handles, the Location under /user/handles."""
    return await _register(request, "/user/handles")


async def _register(request: web.Request, collection: str) -> web.Response:
    identity = await _authenticated(request)
    registration = parse_registration(await _body(request), _config(request))
    share = await request.config_dict[keys.ONEZONE].register(registration, identity)
    return web.Response(
        status=201, headers={"Location": _location(request, f"{collection}/{share.handle_id}")}
    )


async def get_handle(request: web.Request) -> web.Response:
    """GET /handles/{hid}: the full record (handle_view)."""
    onezone = request.config_dict[keys.ONEZONE]
    share = await onezone.get(request.match_info["hid"], await params.identity(request))
    return _json(share.to_json(_config(request).public_handle_base, public=False))


async def get_public_handle(request: web.Request) -> web.Response:
    """GET /handles/{hid}/public: the record without its creator; no authentication."""
    share = await request.config_dict[keys.ONEZONE].get_public(request.match_info["hid"])
    return _json(share.to_json(_config(request).public_handle_base, public=True))


async def modify_handle(request: web.Request) -> web.Response:
    """PATCH /handles/{hid}: new metadata; 204."""
    identity = await _authenticated(request)
    await request.config_dict[keys.ONEZONE].modify(
        request.match_info["hid"], await _body(request), identity
    )
    return web.Response(status=204)


async def delete_handle(request: web.Request) -> web.Response:
    """DELETE /handles/{hid}: the record and the handle; 204."""
    await request.config_dict[keys.ONEZONE].delete(
        request.match_info["hid"], await params.identity(request)
    )
    return web.Response(status=204)


async def list_handles(request: web.Request) -> web.Response:
    """GET /handles: the handleIds of every handle service the caller may list."""
    ids = await request.config_dict[keys.ONEZONE].list_ids(await params.identity(request))
    return _json({"handles": ids})


def _service(request: web.Request) -> HandleServiceConfig:
    return request.config_dict[keys.ONEZONE].service(request.match_info["id"])


def _service_json(service: HandleServiceConfig, *, public: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"handleServiceId": service.id, "name": service.name}
    if not public:
        body["serviceProperties"] = {"type": "PID", "prefix": service.prefix}
    return body


async def list_services(request: web.Request) -> web.Response:
    """GET /handle_services: the configured handle services (any authenticated caller)."""
    await _authenticated(request)
    services = request.config_dict[keys.ONEZONE].services()
    return _json({"handle_services": [s.id for s in services]})


async def get_service(request: web.Request) -> web.Response:
    """GET /handle_services/{id}: name and prefix (any authenticated caller)."""
    await _authenticated(request)
    return _json(_service_json(_service(request), public=False))


async def get_public_service(request: web.Request) -> web.Response:
    """GET /handle_services/{id}/public: id and name, no authentication."""
    return _json(_service_json(_service(request), public=True))


async def list_service_handles(request: web.Request) -> web.Response:
    """GET /handle_services/{id}/handles: its handleIds (LIST_HANDLES on its prefix)."""
    service = _service(request)
    onezone = request.config_dict[keys.ONEZONE]
    ids = await onezone.list_ids(await params.identity(request), service)
    return _json({"handles": ids})


async def get_service_handle(request: web.Request) -> web.Response:
    """GET /handle_services/{id}/handles/{hid}: the full record of one of its handles."""
    service = _service(request)
    onezone = request.config_dict[keys.ONEZONE]
    share = await onezone.get(
        request.match_info["hid"], await params.identity(request), service_id=service.id
    )
    return _json(share.to_json(_config(request).public_handle_base, public=False))


def onezone_api(*middlewares: Any) -> web.Application:
    """The Onezone handle API; ``middlewares`` run inside its error handling."""
    app = web.Application(middlewares=[onezone_errors, *middlewares])
    r = app.router
    r.add_post("/handles", register)
    r.add_post("/user/handles", register_user_handle)
    r.add_get("/handles", list_handles)
    r.add_get("/handles/{hid}", get_handle)
    r.add_get("/user/handles/{hid}", get_handle)
    r.add_get("/handles/{hid}/public", get_public_handle)
    r.add_patch("/handles/{hid}", modify_handle)
    r.add_delete("/handles/{hid}", delete_handle)
    r.add_get("/handle_services", list_services)
    r.add_get("/handle_services/{id}", get_service)
    r.add_get("/handle_services/{id}/public", get_public_service)
    r.add_get("/handle_services/{id}/handles", list_service_handles)
    r.add_get("/handle_services/{id}/handles/{hid}", get_service_handle)
    return app


# -- the handle-proxy contract -------------------------------------------------------------------


def _proxy_args(request: web.Request) -> dict[str, Any]:
    hndl = request.query.getall("hndl", [])
    return {
        "hndl": hndl[-1] if hndl else None,
        "header": request.headers.get("Authorization"),
        "client": request.remote,
    }


async def proxy_put(request: web.Request) -> web.Response:
    """PUT {proxy}/handle?hndl=: register; 201 {"handle": "<public handle URL>"}."""
    onezone = request.config_dict[keys.ONEZONE]
    public = await onezone.proxy_register(body=await _body(request), **_proxy_args(request))
    return _json({"handle": public}, status=201)


async def proxy_delete(request: web.Request) -> web.Response:
    """DELETE {proxy}/handle?hndl=: unregister; 200."""
    onezone = request.config_dict[keys.ONEZONE]
    name = await onezone.proxy_unregister(body=await _body(request), **_proxy_args(request))
    return _json({"message": "Handle unregistered successfully", "handle": name})


async def proxy_patch(request: web.Request) -> web.Response:
    """PATCH {proxy}/handle?hndl=<public handle>: new URL and metadata; 204."""
    onezone = request.config_dict[keys.ONEZONE]
    await onezone.proxy_modify(body=await _body(request), **_proxy_args(request))
    return web.Response(status=204)


def onezone_proxy(*middlewares: Any) -> web.Application:
    """The handle-proxy contract; ``middlewares`` run inside its error handling."""
    app = web.Application(middlewares=[onezone_errors, *middlewares])
    app.router.add_put("/handle", proxy_put)
    app.router.add_patch("/handle", proxy_patch)
    app.router.add_delete("/handle", proxy_delete)
    return app
