"""The native protocol over TCP: an envelope, then the message it announces; the answer goes
back on the same connection, which closes after it unless the request asked to keep it open
(the keep-alive opflag)."""

from __future__ import annotations

import asyncio
import logging

from . import codec
from .codec import MessageError
from .service import NativeService

__all__ = ["NativeTcp"]

log = logging.getLogger(__name__)


class NativeTcp:
    def __init__(self, service: NativeService, *, max_message_bytes: int, timeout: float):
        self.service = service
        self.max_message_bytes = max_message_bytes
        self.timeout = timeout

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: requests in turn until the client stops, a request does not ask
        to keep the connection, or a message cannot be read."""
        peer = writer.get_extra_info("peername")
        client = peer[0] if isinstance(peer, tuple) else None
        try:
            while True:
                async with asyncio.timeout(self.timeout):
                    head = await reader.readexactly(codec.ENVELOPE.size)
                    envelope = codec.decode_envelope(head)
                    if envelope.length > self.max_message_bytes or envelope.flags & (
                        codec.ENV_COMPRESSED | codec.ENV_ENCRYPTED | codec.ENV_TRUNCATED
                    ):
                        return  # not read: nothing in it can be trusted to frame the stream
                    data = await reader.readexactly(envelope.length)
                async for answer in self.service.answers(envelope, data, client=client):
                    writer.write(answer)
                    await writer.drain()
                if not _keeps_alive(data):
                    return
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, MessageError):
            return
        finally:
            writer.close()


def _keeps_alive(data: bytes) -> bool:
    return len(data) >= 12 and bool(int.from_bytes(data[8:12], "big") & codec.FLAG_KEEP_ALIVE)
