"""The native protocol over UDP: one request in one datagram, one answer in one datagram.

An answer goes to an address nobody has verified, so this interface must not be an
amplifier (as DNS servers learned): an answer is sent only if it fits in one datagram of the
reference's size (512 bytes), so the bytes sent are never more than 512 for a request of at
least ~60. In place of a longer answer goes a short RC 2 ("ask over TCP"), which the
reference's resolver takes as a failed interface: it asks again over TCP at once (silence
would cost it its UDP retries, seconds). Answers to one source address are also limited to
``rate`` a second (a token bucket); of the requests over it, every other one gets a short RC 2
no longer than the request, and the rest none."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from . import codec
from .codec import MessageError
from .rate import RateLimit
from .service import NativeService

__all__ = ["MAX_DATAGRAM", "NativeUdp"]

log = logging.getLogger(__name__)

#: The reference's UDP packet size (Common.MAX_UDP_PACKET_SIZE).
MAX_DATAGRAM = 512
_TOO_LONG = "Answer too long for UDP: ask over TCP"
#: UDP requests being answered at once; more are dropped.
_MAX_WORKING = 1024


class NativeUdp(asyncio.DatagramProtocol):
    def __init__(
        self,
        service: NativeService,
        *,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.rate = RateLimit(rate, clock)
        self.transport: asyncio.DatagramTransport | None = None
        self._working: set[asyncio.Future[None]] = set()
        self.too_long = 0
        self.over_rate = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if not self.rate.allows(addr[0]):
            # Over the rate: every other request gets a "slip", a short RC 2 no longer than
            # the request (nothing to amplify), so a real client turns to TCP at once; the
            # rest are dropped (as DNS response rate limiting does).
            self.over_rate += 1
            envelope = self._envelope(data)
            if envelope is not None and self.over_rate % 2 == 0 and self.transport is not None:
                slip = self.service.refusal(envelope, data[codec.ENVELOPE.size :], "use TCP")
                if len(slip) <= len(data):
                    self.transport.sendto(slip, addr)
            return
        quick = self.service.quick(data, client=addr[0], transport="udp")
        if quick is not None and len(quick) <= MAX_DATAGRAM and self.transport is not None:
            self.transport.sendto(quick, addr)
            return
        envelope = self._envelope(data)
        if envelope is None:
            return
        if len(self._working) >= _MAX_WORKING:
            self.over_rate += 1  # a flood from many addresses: no queue grows without end
            return
        message = data[codec.ENVELOPE.size :]
        task = asyncio.ensure_future(self._answer(envelope, message, addr))
        self._working.add(task)
        task.add_done_callback(self._working.discard)

    @staticmethod
    def _envelope(data: bytes) -> codec.Envelope | None:
        """The datagram's envelope; ``None`` for multi-packet, encrypted or compressed
        requests, lying lengths and what is not a message at all (dropped)."""
        try:
            envelope = codec.decode_envelope(data)
        except MessageError:
            return None
        if envelope.length != len(data) - codec.ENVELOPE.size or envelope.flags:
            return None
        return envelope

    async def _answer(self, envelope: codec.Envelope, message: bytes, addr: tuple) -> None:
        try:
            answer = await self.service.answer(envelope, message, client=addr[0], transport="udp")
        except Exception:  # one datagram never takes the interface down
            log.exception("native UDP request from %s failed", addr[0])
            return
        if len(answer) > MAX_DATAGRAM:
            self.too_long += 1
            answer = self.service.refusal(
                envelope, message, "Answer too long for UDP: ask over TCP"
            )
            if len(answer) > MAX_DATAGRAM:  # pragma: no cover - an error answer is short
                return
        if self.transport is not None:
            self.transport.sendto(answer, addr)
