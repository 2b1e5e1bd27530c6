"""Limits on what clients may hold of the server at once."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ..errors import ServerTooBusy

__all__ = ["ConcurrencyLimit"]

#: Whether a request holds one of the limit's slots.
_HOLDS_SLOT = web.RequestKey("holds_slot", bool)


class ConcurrencyLimit:
    """``[server] max_concurrent_requests``: a request beyond it is answered 503 (responseCode
    3, RC_SERVER_TOO_BUSY) with Retry-After at once, before it reads a body or the store.

    One instance's ``middleware`` runs in the main application and in each sub-application; a
    request is counted once, at the innermost application it reaches, so that each answers an
    overload in its own error shape.

    A request gives its slot back while it waits for its body (``waiting_for_body``): a client
    that sends headers and then nothing holds a connection, which ``[server] body_timeout`` and
    ``max_connections`` bound, but no slot that a request with work to do could use."""

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
        self._take(request)
        try:
            return await handler(request)
        finally:
            if request.get(_HOLDS_SLOT):
                request[_HOLDS_SLOT] = False
                self.in_flight -= 1

    def _take(self, request: web.Request) -> None:
        if self.in_flight >= self.limit:
            raise ServerTooBusy(
                None, f"More than {self.limit} requests at once; try again", retry_after=1
            )
        self.in_flight += 1
        request[_HOLDS_SLOT] = True

    @contextlib.asynccontextmanager
    async def waiting_for_body(self, request: web.Request) -> AsyncIterator[None]:
        """Around reading ``request``'s body: its slot is free meanwhile, and taken again
        afterwards (503 if there is none by then)."""
        if not request.get(_HOLDS_SLOT):
            yield
            return
        request[_HOLDS_SLOT] = False
        self.in_flight -= 1
        yield  # a body that fails to come ends the request: no slot to take back then
        self._take(request)
