"""The one list of URLs."""

from __future__ import annotations

from aiohttp import web

from . import views

__all__ = ["setup_routes"]


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(views.API_HANDLES, views.list_handles)
    r.add_get(views.API_HANDLES + "/{handle:(?s:.*)}", views.get_handle)
    r.add_put(views.API_HANDLES + "/{handle:(?s:.*)}", views.put_handle)
    r.add_delete(views.API_HANDLES + "/{handle:(?s:.*)}", views.delete_handle)
