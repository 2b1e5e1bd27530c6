"""What one client may hold of the server's connections (``serve`` applies it).

- **Slow headers.** A request's line and headers must arrive within ``[server]
  header_timeout`` seconds of their first byte, else the connection is closed. Idle keep-alive
  connections are aiohttp's ``keepalive_timeout`` (``idle_timeout``), and bodies
  ``body_timeout``: three clocks, so that a client sending headers at a byte a second is cut
  after seconds, not minutes.
- **Too many connections.** At ``[server] max_connections`` open connections, a new one
  closes the longest-open idle ones (no request in progress, none begun); when none is idle,
  the new one is closed instead.
- **Open files.** ``raise_open_files_limit`` lifts the soft limit to the hard one at start-up
  (the usual 1024 is reached by a thousand idle clients).
- **Accept failures** (out of file descriptors, say) are logged once a minute with a count,
  not once per attempt with a traceback (``AcceptFailureLog``).
- **Requests aiohttp cannot read** (a request line or header over 8,190 bytes, garbled
  HTTP) are answered in the API's shape (JSON, responseCode 4) rather than aiohttp's plain
  text, which quotes what the client sent.

aiohttp has no hook for any of this, so each connection's protocol is wrapped
(``GuardedProtocol``) by a runner whose server makes them (``GuardedRunner``). Whether a
connection is reading headers or busy comes from aiohttp's ``RequestHandler`` (aiohttp is
pinned; ``tests/test_limits.py`` runs every case through ``serve``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

__all__ = [
    "AcceptFailureLog",
    "ConnectionGuard",
    "GuardedProtocol",
    "GuardedRunner",
    "raise_open_files_limit",
]

log = logging.getLogger(__name__)


class ConnectionGuard:
    """The open connections of one server, oldest first, and their header clocks."""

    def __init__(self, *, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open: dict[GuardedProtocol, None] = {}  # insertion order: oldest first
        self.shed = 0  # idle connections closed to make room
        self.refused = 0  # new connections closed for want of room
        self.slow_headers = 0  # connections closed at header_timeout

    def factory(self, server: Callable[[], RequestHandler]) -> Callable[[], GuardedProtocol]:
        return lambda: GuardedProtocol(server(), self)

    def opened(self, protocol: GuardedProtocol) -> None:
        self.open[protocol] = None
        excess = len(self.open) - self.max_connections
        if excess <= 0:
            return
        for other in list(self.open):
            if excess <= 0:
                break
            if other is not protocol and other.idle:
                other.close()
                self.shed += 1
                excess -= 1
        if excess > 0:
            protocol.close()
            self.refused += 1

    def closed(self, protocol: GuardedProtocol) -> None:
        self.open.pop(protocol, None)


class GuardedProtocol(asyncio.Protocol):
    """One connection: aiohttp's handler, watched by the guard."""

    def __init__(self, inner: RequestHandler, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.transport: asyncio.Transport | None = None
        self._header_clock: asyncio.TimerHandle | None = None

    # -- what the connection is doing ------------------------------------------------------

    @property
    def _busy(self) -> bool:
        """A request is being handled, or parsed and waiting to be."""
        return self.inner._current_request is not None or bool(self.inner._messages)

    @property
    def idle(self) -> bool:
        """Between requests: none in progress, none begun."""
        return not self._busy and self._header_clock is None

    def close(self) -> None:
        self._stop_clock()
        if self.transport is not None:
            self.transport.close()

    def _stop_clock(self) -> None:
        if self._header_clock is not None:
            self._header_clock.cancel()
            self._header_clock = None

    def _headers_too_slow(self) -> None:
        self._header_clock = None
        if not self._busy:  # still not a whole request line and headers
            self.guard.slow_headers += 1
            self.close()

    # -- asyncio.Protocol, passed on to aiohttp ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.inner.connection_made(transport)
        self.guard.opened(self)

    def data_received(self, data: bytes) -> None:
        before = self.inner._request_count
        self.inner.data_received(data)
        if self.inner._request_count != before:
            self._stop_clock()  # a whole request line and headers are in
        if data and not self._busy and self._header_clock is None:
            # Bytes of a request whose headers are not all in yet: the clock starts.
            loop = asyncio.get_running_loop()
            self._header_clock = loop.call_later(self.guard.header_timeout, self._headers_too_slow)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        self.guard.closed(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _JsonErrorHandler(RequestHandler):
    """aiohttp's handler, whose answer to a request it could not read is in the API's shape
    (its logging and the connection's end stay aiohttp's)."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)
        if not 400 <= status < 500:
            return response
        if isinstance(exc, LineTooLong):
            told = "the request line or a header is too long (at most 8,190 bytes)"
        else:
            told = "it is not HTTP this server can read"
        body = {"responseCode": 4, "message": f"Malformed request: {told}"}
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class _GuardedServer:
    """aiohttp's ``web.Server`` whose connections come wrapped; everything else is the
    server's own (shutdown, request counts, ...)."""

    def __init__(self, server: web.Server, guard: ConnectionGuard) -> None:
        self._server = server
        # As ``web.Server.__call__`` makes its handlers (aiohttp is pinned).
        self._make = guard.factory(
            lambda: _JsonErrorHandler(server, loop=server._loop, **server._kwargs)
        )

    def __call__(self) -> GuardedProtocol:
        return self._make()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose sites accept connections through ``guard``."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _GuardedServer(server, self.guard)  # type: ignore[return-value]


def raise_open_files_limit() -> tuple[int, int]:
    """Lift the soft limit on open files to the hard limit; the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit on macOS
            log.warning("could not raise the open-files limit from %d: %s", soft, exc)
    return soft, hard


class AcceptFailureLog:
    """An event loop exception handler: failures to accept a connection (asyncio retries them
    itself) are logged once per ``interval`` seconds with how many there were, without a
    traceback; anything else goes to the loop's default handler."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last = -interval
        self._unlogged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "accept" not in message:
            loop.default_exception_handler(context)
            return
        self._unlogged += 1
        now = self._clock()
        if now - self._last < self.interval:
            return
        exc = context.get("exception")
        log.error(
            "cannot accept connections (%d time(s) since the last report): %s",
            self._unlogged,
            getattr(exc, "strerror", None) or exc or message,
        )
        self._last = now
        self._unlogged = 0
