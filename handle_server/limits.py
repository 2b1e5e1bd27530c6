"""Limits on what clients may hold of the server at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import ServerTooBusy

__all__ = ["ConcurrencyLimit"]


class ConcurrencyLimit:
    """``[server] max_concurrent_requests``: a request beyond it is answered 503 (responseCode
    3, RC_SERVER_TOO_BUSY) with Retry-After at once, before it reads a body or the store.

    One instance's ``middleware`` runs in the main application and in each sub-application; a
    request is counted once, at the innermost application it reaches, so that each answers an
    overload in its own error shape."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.match_info.apps[-1] is not request.app:
            return await handler(request)  # a sub-application's request: counted there
        if self.in_flight >= self.limit:
            raise ServerTooBusy(
                None, f"More than {self.limit} requests at once; try again", retry_after=1
            )
        self.in_flight += 1
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1
