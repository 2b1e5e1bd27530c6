"""The one list of URLs. The resolver's catch-all comes last."""

from __future__ import annotations

from aiohttp import web

from . import keys
from .api import batch, docs, history, sessions
from .api import views as api
from .native import views as native
from .onezone import views as onezone
from .ops import views as ops
from .resolver import views as resolver

__all__ = ["setup_routes"]


async def _unknown_api(request: web.Request) -> web.Response:
    path = request.path
    if path == api.API_HANDLES:  # the listing is read-only
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    if path.startswith(api.API_HANDLES + "/"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "PUT", "DELETE"])
    if path == api.API_CACHE or path.startswith(api.API_CACHE + "/"):
        raise web.HTTPMethodNotAllowed(request.method, ["DELETE"])
    if path == batch.API_BATCH:
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    if path.startswith(history.API_HISTORY + "/"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    if path.rstrip("/") == sessions.SESSIONS:
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    if path.rstrip("/") == sessions.SESSION_THIS:
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "PUT", "POST", "DELETE"])
    raise web.HTTPNotFound()


def setup_routes(app: web.Application) -> None:
    r = app.router
    onezone_config = app[keys.CONFIG].onezone
    # Sub-applications, so that their errors are Onezone's shape (see onezone/views.py).
    limit = app[keys.LIMIT]
    if onezone_config.api_base:
        app.add_subapp(onezone_config.api_base, onezone.onezone_api(limit.middleware))
    if onezone_config.proxy_base:
        app.add_subapp(onezone_config.proxy_base, onezone.onezone_proxy(limit.middleware))
    r.add_get(api.API_HANDLES, api.list_handles)
    r.add_get(api.API_HANDLES + "/{handle:(?s:.*)}", api.get_handle)
    r.add_put(api.API_HANDLES + "/{handle:(?s:.*)}", api.put_handle)
    r.add_delete(api.API_HANDLES + "/{handle:(?s:.*)}", api.delete_handle)
    r.add_delete(api.API_CACHE, api.purge_cache)
    r.add_delete(api.API_CACHE + "/{handle:(?s:.*)}", api.purge_cache)
    r.add_post(batch.API_BATCH, batch.post_batch)
    r.add_get(history.API_HISTORY + "/{handle:(?s:.*)}", history.get_history)
    r.add_post(sessions.SESSIONS, sessions.open_session)
    r.add_get(sessions.SESSION_THIS, sessions.session_this)
    r.add_put(sessions.SESSION_THIS, sessions.session_this)
    r.add_post(sessions.SESSION_THIS, sessions.session_this)
    r.add_delete(sessions.SESSION_THIS, sessions.end_session)
    r.add_get("/api/openapi.json", docs.openapi_json)
    r.add_get("/api/docs", docs.api_docs)
    r.add_route("*", "/api/{tail:(?s:.*)}", _unknown_api)
    r.add_get(api.REVERSE_LOOKUP, api.reverse_lookup)
    r.add_get(api.REVERSE_LOOKUP + "/", api.reverse_lookup)
    r.add_get("/metrics", ops.metrics)
    r.add_get("/healthz", ops.healthz)
    r.add_get("/readyz", ops.readyz)
    if app[keys.CONFIG].native.enabled:  # native messages POSTed to any path
        r.add_post("/{tail:(?s:.*)}", native.message)
    r.add_get("/", resolver.lookup)
    r.add_get("/favicon.ico", resolver.favicon)
    r.add_get("/{handle:(?s:.+)}", resolver.resolve)
