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
- **Hot answers on the wire.** A lone plain ``GET`` of a path whose answer the application
  keeps (``api/hot.py``), arriving on an idle HTTP/1.1 connection, is answered
  here with the kept bytes, logged and counted as aiohttp would; anything else goes to
  aiohttp. Only while everything the connection has given aiohttp was whole requests
  without a body (so aiohttp's parser holds no part of one) and aiohttp is waiting for the
  next (so answers stay in order).
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
import re
import resource
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

if TYPE_CHECKING:
    from ..api.hot import HotAnswers

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

    def __init__(
        self, *, max_connections: int, header_timeout: float, hot: HotAnswers | None = None
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.hot = hot  # the application's kept answers, given on the wire
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


#: A token (a header's name), as HTTP defines it.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
#: One request that may be answered on the wire: a ``GET`` of a path without a query or
#: fragment, in HTTP/1.1, with headers of printable ASCII, each on one line, and no body.
_PLAIN_GET = re.compile(
    rb'GET (/[!"$->@-~]*) HTTP/1\.1\r\n((?:' + _TOKEN + rb":[\t -~]*\r\n){0,100})\r\n"
)
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[\t ]*([\t -~]*?)[\t ]*\r\n")
#: Whole requests, one or more, each with a name for every header and (checked apart) none
#: announcing a body: what aiohttp's parser reads to its end, holding nothing back.
_WHOLE_REQUESTS = re.compile(
    rb"(?:[A-Z]+ [!-~]+ HTTP/1\.[01]\r\n(?:" + _TOKEN + rb":[\t -~\x80-\xff]*\r\n)*\r\n)+"
)
_BODY_HEADERS = (b"\ncontent-length:", b"\ntransfer-encoding:", b"\nupgrade:", b"\nexpect:")
#: Headers after which a request is aiohttp's to answer.
_NOT_ON_THE_WIRE = frozenset(
    (b"authorization", b"content-length", b"transfer-encoding", b"upgrade", b"expect")
)


class _Seen:
    """What the access log reads of a request and its answer, for one answered on the wire
    (the attributes of aiohttp's ``BaseRequest`` and ``StreamResponse`` it uses)."""

    __slots__ = ("body_length", "headers", "method", "path_qs", "remote", "status", "version")

    def __init__(self, remote: str | None, path: str, headers: dict, status: int, size: int):
        self.remote, self.path_qs, self.headers = remote, path, headers
        self.method, self.version = "GET", HttpVersion11
        self.status, self.body_length = status, size


class GuardedProtocol(asyncio.Protocol):
    """One connection: aiohttp's handler, watched by the guard."""

    def __init__(self, inner: RequestHandler, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.transport: asyncio.Transport | None = None
        self._header_clock: asyncio.TimerHandle | None = None
        #: Whether aiohttp's parser has been given only whole requests without a body.
        self._whole = guard.hot is not None
        self._remote: str | None = None

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
        peer = transport.get_extra_info("peername")  # as aiohttp's ``request.remote``
        if peer is not None:
            self._remote = str(peer[0]) if isinstance(peer, (list, tuple)) else str(peer)

    def data_received(self, data: bytes) -> None:
        if self._whole:
            if self._on_the_wire(data):
                return
            self._whole = _WHOLE_REQUESTS.fullmatch(data) is not None and not any(
                h in data.lower() for h in _BODY_HEADERS
            )
        before = self.inner._request_count
        self.inner.data_received(data)
        if self.inner._request_count != before:
            self._stop_clock()  # a whole request line and headers are in
        if data and not self._busy and self._header_clock is None:
            # Bytes of a request whose headers are not all in yet: the clock starts.
            loop = asyncio.get_running_loop()
            self._header_clock = loop.call_later(self.guard.header_timeout, self._headers_too_slow)

    def _on_the_wire(self, data: bytes) -> bool:
        """Answer ``data`` here if it is one plain ``GET`` of a kept answer and aiohttp is
        idle between requests; whether it was."""
        inner = self.inner
        waiter = inner._waiter
        if waiter is None or waiter.done() or inner._close or inner._force_close:
            return False  # a request of aiohttp's under way, or the connection ending
        if inner._paused or len(data) > 8190:
            return False  # the client is not reading its answers; a long request
        match = _PLAIN_GET.fullmatch(data)
        if match is None:
            return False
        accept = if_none_match = None
        close = False
        logged: dict[str, str] = {}
        for name, value in _HEADER.findall(match.group(2)):
            name = name.lower()
            if name == b"accept":
                accept = value if accept is None else accept
            elif name == b"if-none-match":
                if_none_match = value if if_none_match is None else if_none_match
            elif name == b"connection":
                value = value.lower()
                if value == b"close":
                    close = True
                elif value != b"keep-alive":
                    return False
            elif name in _NOT_ON_THE_WIRE:
                return False
            elif name == b"referer":
                logged.setdefault("Referer", value.decode())
            elif name == b"user-agent":
                logged.setdefault("User-Agent", value.decode())
        assert self.guard.hot is not None
        started = inner._loop.time()
        path = match.group(1).decode()
        found = self.guard.hot.wire(
            path,
            accept.decode() if accept is not None else "",
            if_none_match.decode() if if_none_match is not None else None,
            close=close,
        )
        if found is None:
            return False
        wire, status = found
        assert self.transport is not None
        self.transport.write(wire)
        # What aiohttp does with a request it has answered: counted, logged, and the
        # connection's idle clock started again.
        inner._request_count += 1
        if inner._manager is not None:
            inner._manager.requests_count += 1
        logger = inner.access_logger
        if inner._logging_enabled and logger is not None:
            seen = _Seen(self._remote, path, logged, status, len(wire))
            logger.log(seen, seen, inner._loop.time() - started)  # type: ignore[arg-type]
        if close:  # (aiohttp's handler ends with the connection)
            inner._keepalive = False
            self.transport.close()
        elif inner._keepalive and inner._keepalive_timeout > 0:
            close_time = inner._loop.time() + inner._keepalive_timeout
            inner._next_keepalive_close_time = close_time
            if inner._keepalive_handle is None:
                inner._keepalive_handle = inner._loop.call_at(close_time, inner._process_keepalive)
        return True

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
