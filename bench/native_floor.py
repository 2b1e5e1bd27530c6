"""The floor of the native benchmark: the most a Python server on this event loop can answer
here. It answers every request, over UDP and over TCP (one request a connection, then close,
as our server does for CNRI's client), with the same prebuilt answer bytes (taken from our
server) and the request's id put in: no decoding, no cache, no log, nothing else.

    python bench/native_floor.py --port 2641 --answer answer.bin [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

#: The envelope (RFC 3652 §2.2.1): the request id is bytes 8-12, the message length 16-20.
ENVELOPE = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answer", type=Path, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = parser.parse_args()
    answer = args.answer.read_bytes()
    head, tail = answer[:8], answer[12:]

    class Tcp(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            if len(self.buffer) < ENVELOPE:
                return
            if len(self.buffer) >= ENVELOPE + int.from_bytes(self.buffer[16:20], "big"):
                self.transport.write(head + self.buffer[8:12] + tail)
                self.transport.close()

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple) -> None:
            self.transport.sendto(head + data[8:12] + tail, addr)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Tcp, "127.0.0.1", args.port)
        await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", args.port))
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
