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
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import LineTooLong
from aiohttp.log import access_logger
from aiohttp.tcp_helpers import tcp_keepalive, tcp_nodelay
from aiohttp.web_log import AccessLogger
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

    def factory(
        self, handler: Callable[[], RequestHandler], wire: OnTheWire | None = None
    ) -> Callable[[], GuardedProtocol]:
        return lambda: GuardedProtocol(handler, self, wire)

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


def _whole_without_body(data: bytes) -> bool:
    """Whether ``data`` is whole requests (``_WHOLE_REQUESTS``) of which none has a body."""
    if _WHOLE_REQUESTS.fullmatch(data) is None:
        return False
    lowered = data.lower()
    return not any(header in lowered for header in _BODY_HEADERS)


class _Seen:
    """What the access log reads of a request and its answer, for one answered on the wire
    (the attributes of aiohttp's ``BaseRequest`` and ``StreamResponse`` it uses)."""

    __slots__ = ("body_length", "headers", "method", "path_qs", "remote", "status", "version")

    def __init__(self, remote: str | None, path: str, headers: dict, status: int, size: int):
        self.remote, self.path_qs, self.headers = remote, path, headers
        self.method, self.version = "GET", HttpVersion11
        self.status, self.body_length = status, size


class OnTheWire:
    """What a server's connections need to answer on the wire before aiohttp has a handler
    for them: the kept answers, the access logger (one for all such connections; aiohttp
    makes one a handler), the idle timeout, and aiohttp's server (its request count)."""

    def __init__(self, hot: HotAnswers, server: web.Server) -> None:
        self.hot = hot
        self.server = server
        kwargs = server._kwargs
        self.idle_timeout: float = kwargs.get("keepalive_timeout", 3630)
        logger = kwargs.get("access_log", access_logger)
        log_class = kwargs.get("access_log_class", AccessLogger)
        self.logger: AbstractAccessLogger | None = None
        if logger is not None:
            self.logger = log_class(
                logger, kwargs.get("access_log_format", AccessLogger.LOG_FORMAT)
            )
            if not self.logger.enabled:
                self.logger = None


class GuardedProtocol(asyncio.Protocol):
    """One connection: aiohttp's handler, watched by the guard.

    With ``wire``, the handler is made only when a request comes that is not answered on the
    wire: until then the connection keeps its own idle clock (aiohttp's ``keepalive_timeout``),
    and a client that asks only for kept answers costs no aiohttp objects at all."""

    def __init__(
        self,
        make_inner: Callable[[], RequestHandler],
        guard: ConnectionGuard,
        wire: OnTheWire | None = None,
    ) -> None:
        self._make_inner = make_inner
        self.inner: RequestHandler | None = None
        self.guard = guard
        self.wire = wire
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()  # (made by the loop, for a connection)
        self._header_clock: asyncio.TimerHandle | None = None
        #: Whether aiohttp's parser has been given only whole requests without a body.
        self._whole = wire is not None
        self._remote: str | None = None
        self._paused = False  # the transport's buffer is full (the client is not reading)
        #: Before aiohttp has the connection: when it may be closed as idle, and the clock.
        self._idle_until = 0.0
        self._idle_clock: asyncio.TimerHandle | None = None
        self._tuned = False  # the socket's options set

    # -- what the connection is doing ------------------------------------------------------

    @property
    def _busy(self) -> bool:
        """A request is being handled, or parsed and waiting to be."""
        inner = self.inner
        return inner is not None and (inner._current_request is not None or bool(inner._messages))

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

    def _idle_check(self) -> None:
        self._idle_clock = None
        if self.inner is not None:
            return  # aiohttp's clock now
        if self._loop.time() < self._idle_until:
            self._idle_clock = self._loop.call_at(self._idle_until, self._idle_check)
        else:
            self.close()

    def _hand_over(self) -> RequestHandler:
        """aiohttp's handler for the connection, from now on."""
        if self._idle_clock is not None:
            self._idle_clock.cancel()
            self._idle_clock = None
        inner = self.inner = self._make_inner()
        inner.connection_made(self.transport)  # type: ignore[arg-type]
        if self._paused:
            inner.pause_writing()
        return inner

    # -- asyncio.Protocol, passed on to aiohttp ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")  # as aiohttp's ``request.remote``
        if peer is not None:
            self._remote = str(peer[0]) if isinstance(peer, (list, tuple)) else str(peer)
        if self.wire is None:
            self._hand_over()
        elif self.wire.idle_timeout > 0:  # as aiohttp's handler would (its socket options
            # wait for the connection to outlive its first answer: see ``_on_the_wire``)
            self._idle_until = self._loop.time() + self.wire.idle_timeout
            self._idle_clock = self._loop.call_at(self._idle_until, self._idle_check)
        self.guard.opened(self)

    def data_received(self, data: bytes) -> None:
        inner = self.inner
        if self._whole:
            if self._on_the_wire(data, inner):
                return
            self._whole = _whole_without_body(data)
        if inner is None:
            inner = self._hand_over()
        before = inner._request_count
        inner.data_received(data)
        if inner._request_count != before:
            self._stop_clock()  # a whole request line and headers are in
        if data and not self._busy and self._header_clock is None:
            # Bytes of a request whose headers are not all in yet: the clock starts.
            self._header_clock = self._loop.call_later(
                self.guard.header_timeout, self._headers_too_slow
            )

    def _on_the_wire(self, data: bytes, inner: RequestHandler | None) -> bool:
        """Answer ``data`` here if it is one plain ``GET`` of a kept answer and aiohttp (if it
        has the connection) is idle between requests; whether it was."""
        if inner is not None:
            waiter = inner._waiter
            if waiter is None or waiter.done() or inner._close or inner._force_close:
                return False  # a request of aiohttp's under way, or the connection ending
        if self._paused or len(data) > 8190:
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
        wire = self.wire
        assert wire is not None and self.transport is not None
        loop = self._loop
        started = loop.time()
        path = match.group(1).decode()
        found = wire.hot.wire(
            path,
            accept.decode() if accept is not None else "",
            if_none_match.decode() if if_none_match is not None else None,
            close=close,
        )
        if found is None:
            return False
        answer, status = found
        self.transport.write(answer)
        # What aiohttp does with a request it has answered: counted, logged, and the
        # connection's idle clock started again (or the connection closed).
        logger: AbstractAccessLogger | None
        if inner is None:
            wire.server.requests_count += 1
            logger = wire.logger
        else:
            inner._request_count += 1
            if inner._manager is not None:
                inner._manager.requests_count += 1
            logger = inner.access_logger if inner._logging_enabled else None
        if logger is not None:
            seen = _Seen(self._remote, path, logged, status, len(answer))
            logger.log(seen, seen, loop.time() - started)  # type: ignore[arg-type]
        if close:  # (aiohttp's handler ends with the connection)
            if inner is not None:
                inner._keepalive = False
            self.transport.close()
        elif inner is None:
            self._idle_until = loop.time() + wire.idle_timeout
            if not self._tuned:  # it lives on: aiohttp's socket options, as it sets them
                self._tuned = True  # (an answer alone in its segment needs no TCP_NODELAY)
                tcp_keepalive(self.transport)
                tcp_nodelay(self.transport, True)
        elif inner._keepalive and inner._keepalive_timeout > 0:
            close_time = loop.time() + inner._keepalive_timeout
            inner._next_keepalive_close_time = close_time
            if inner._keepalive_handle is None:
                inner._keepalive_handle = loop.call_at(close_time, inner._process_keepalive)
        return True

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        if self._idle_clock is not None:
            self._idle_clock.cancel()
            self._idle_clock = None
        self.guard.closed(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._paused = True
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        if self.inner is not None:
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
        self._guard = guard
        # As ``web.Server.__call__`` makes its handlers (aiohttp is pinned).
        self._make = guard.factory(
            lambda: _JsonErrorHandler(server, loop=server._loop, **server._kwargs),
            OnTheWire(guard.hot, server) if guard.hot is not None else None,
        )

    def __call__(self) -> GuardedProtocol:
        return self._make()

    def pre_shutdown(self) -> None:
        """aiohttp closes the connections its handlers have; the guard closes the others."""
        for protocol in list(self._guard.open):
            if protocol.inner is None:
                protocol.close()
        self._server.pre_shutdown()

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
