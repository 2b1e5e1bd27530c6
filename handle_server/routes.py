"""The one list of URLs. The resolver's catch-all comes last."""

from __future__ import annotations

from aiohttp import web

from . import keys, onezone_views, ops_views, proxy, session_views, views

__all__ = ["setup_routes"]


async def _unknown_api(request: web.Request) -> web.Response:
    path = request.path
    if path == views.API_HANDLES:  # the listing is read-only
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    if path.startswith(views.API_HANDLES + "/"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "PUT", "DELETE"])
    if path.rstrip("/") == session_views.SESSIONS:
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    if path.rstrip("/") == session_views.SESSION_THIS:
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "PUT", "POST", "DELETE"])
    raise web.HTTPNotFound()


def setup_routes(app: web.Application) -> None:
    r = app.router
    onezone = app[keys.CONFIG].onezone
    # Sub-applications, so that their errors are Onezone's shape (see onezone_views.py).
    limit = app[keys.LIMIT]
    if onezone.api_base:
        app.add_subapp(onezone.api_base, onezone_views.onezone_api(limit.middleware))
    if onezone.proxy_base:
        app.add_subapp(onezone.proxy_base, onezone_views.onezone_proxy(limit.middleware))
    r.add_get(views.API_HANDLES, views.list_handles)
    r.add_get(views.API_HANDLES + "/{handle:(?s:.*)}", views.get_handle)
    r.add_put(views.API_HANDLES + "/{handle:(?s:.*)}", views.put_handle)
    r.add_delete(views.API_HANDLES + "/{handle:(?s:.*)}", views.delete_handle)
    r.add_post(session_views.SESSIONS, session_views.open_session)
    r.add_get(session_views.SESSION_THIS, session_views.session_this)
    r.add_put(session_views.SESSION_THIS, session_views.session_this)
    r.add_post(session_views.SESSION_THIS, session_views.session_this)
    r.add_delete(session_views.SESSION_THIS, session_views.end_session)
    r.add_get("/api/openapi.json", ops_views.openapi_json)
    r.add_get("/api/docs", ops_views.api_docs)
    r.add_route("*", "/api/{tail:(?s:.*)}", _unknown_api)
    r.add_get(views.REVERSE_LOOKUP, views.reverse_lookup)
    r.add_get(views.REVERSE_LOOKUP + "/", views.reverse_lookup)
    r.add_get("/metrics", ops_views.metrics)
    r.add_get("/healthz", ops_views.healthz)
    r.add_get("/readyz", ops_views.readyz)
    r.add_get("/", proxy.lookup)
    r.add_get("/favicon.ico", proxy.favicon)
    r.add_get("/{handle:(?s:.+)}", proxy.resolve)
