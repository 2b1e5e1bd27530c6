"""The native protocol over TCP: an envelope, then the message it announces; the answer goes
back on the same connection, which closes after it unless the request asked to keep it open
(the keep-alive opflag).

One ``asyncio.Protocol`` per connection, no stream objects and no task unless a request needs
one: the reference's clients open a connection for every request, so what a connection costs
is most of what a resolution costs. A cached public resolution is answered from
``data_received`` itself (``NativeService.quick``); anything else runs as a task, with reading
paused until its answer is written. A connection that sends nothing whole within ``timeout``
seconds (looked at a few times a second by one timer for all connections, not a timer of
each), or a message that cannot be framed, is closed; at ``max_connections`` open ones (the
``[server]`` limit, counted apart from HTTP's) a new one is closed at once.
"""

from __future__ import annotations

import asyncio
import logging

from . import codec
from .service import NativeService

__all__ = ["NativeTcp"]

log = logging.getLogger(__name__)

_BAD_ENVELOPE = codec.ENV_COMPRESSED | codec.ENV_ENCRYPTED | codec.ENV_TRUNCATED


class NativeTcp:
    """Makes the protocol of each connection (``loop.create_server(tcp.protocol, ...)``)."""

    def __init__(
        self,
        service: NativeService,
        *,
        max_message_bytes: int,
        timeout: float,
        max_connections: int = 4096,
    ):
        self.service = service
        self.max_message_bytes = max_message_bytes
        self.timeout = timeout
        self.max_connections = max_connections
        self.open = 0  # connections now open
        self.refused = 0
        #: Connections waiting for a whole message, each with its deadline (``loop.time()``).
        self._deadlines: dict[_Connection, float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._every = min(1.0, timeout / 4)
        #: Kept: on Python 3.11 each ``get_running_loop`` is a ``getpid`` call.
        self._loop: asyncio.AbstractEventLoop | None = None

    def protocol(self) -> _Connection:
        return _Connection(self)

    def watch(self, connection: _Connection) -> None:
        """``connection`` has ``timeout`` seconds from now to send a whole message."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._deadlines[connection] = loop.time() + self.timeout
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._every, self._sweep)

    def unwatch(self, connection: _Connection) -> None:
        self._deadlines.pop(connection, None)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = [c for c, deadline in self._deadlines.items() if deadline <= now]
        for connection in late:
            del self._deadlines[connection]
            connection.expired()
        self._sweeper = None
        if self._deadlines:
            self._sweeper = loop.call_later(self._every, self._sweep)


class _Connection(asyncio.Protocol):
    def __init__(self, tcp: NativeTcp) -> None:
        self.tcp = tcp
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.client: str | None = None
        self.busy: asyncio.Task[None] | None = None
        self.counted = False  # among ``tcp.open``
        #: Cleared while the transport's buffer is full (made then: most connections never
        #: fill it).
        self.writable: asyncio.Event | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.tcp.open >= self.tcp.max_connections:
            # At the limit the newcomer goes (clients of the reference retry, or use UDP);
            # each connection holds a descriptor for at most ``timeout`` seconds anyway.
            self.tcp.refused += 1
            transport.abort()
            return
        self.tcp.open += 1
        self.counted = True
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else None
        self.tcp.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.tcp.open -= 1
            self.counted = False
            self.tcp.unwatch(self)
        self.transport = None
        if self.writable is not None:
            self.writable.set()  # a writer waiting for room stops at its next look

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.Event()
        self.writable.clear()

    def resume_writing(self) -> None:
        if self.writable is not None:
            self.writable.set()

    def expired(self) -> None:
        """Its deadline passed (``NativeTcp`` unwatched it)."""
        if self.transport is not None and self.busy is None:
            self.transport.close()  # nothing whole in time

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.busy is None:
            self._next()

    def eof_received(self) -> bool:
        return self.busy is not None  # an answer in the works is still sent, then closed

    def _next(self) -> None:
        """Answer the request at the front of the buffer, if it is all in."""
        transport = self.transport
        if transport is None or len(self.buffer) < codec.ENVELOPE.size:
            return
        envelope = codec.decode_envelope(bytes(self.buffer[: codec.ENVELOPE.size]))
        if envelope.length > self.tcp.max_message_bytes or envelope.flags & _BAD_ENVELOPE:
            transport.close()  # not read: nothing in it can be trusted to frame the stream
            return
        end = codec.ENVELOPE.size + envelope.length
        if len(self.buffer) < end:
            return
        packet = bytes(self.buffer[:end])
        del self.buffer[:end]
        data = packet[codec.ENVELOPE.size :]
        keep = _keeps_alive(data)
        quick = self.tcp.service.quick(packet, client=self.client, transport="tcp")
        if quick is not None:
            transport.write(quick)
            self._after(keep)
            return
        transport.pause_reading()
        self.busy = asyncio.ensure_future(self._answer(envelope, data, keep))

    async def _answer(self, envelope: codec.Envelope, data: bytes, keep: bool) -> None:
        try:
            async for answer in self.tcp.service.answers(envelope, data, client=self.client):
                if self.transport is None:
                    return
                self.transport.write(answer)
                if self.writable is not None:  # a long list goes at the client's pace
                    await self.writable.wait()
        except Exception:  # one request never takes the interface down
            log.exception("native TCP request from %s failed", self.client)
            keep = False
        finally:
            self.busy = None
        if self.transport is not None:
            self.transport.resume_reading()
            self._after(keep)

    def _after(self, keep: bool) -> None:
        """The answer is written: close, or (keep-alive) wait for the next request."""
        if self.transport is None:
            return
        if not keep:
            self.transport.close()
            return
        self.tcp.watch(self)  # a new deadline for the next request
        self._next()


def _keeps_alive(data: bytes) -> bool:
    return len(data) >= 12 and bool(int.from_bytes(data[8:12], "big") & codec.FLAG_KEEP_ALIVE)
