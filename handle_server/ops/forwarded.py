"""Who the client is, behind reverse proxies the configuration trusts.

A request from an address in ``[server] trusted_proxies`` is taken to come from the address its
``X-Forwarded-For`` names: the nearest hop that is not itself a trusted proxy (entries further
left were written by the client and prove nothing). From anywhere else, ``X-Forwarded-For`` is
ignored: a client cannot choose the address it is throttled and located by.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

__all__ = ["TrustedProxies"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    def __init__(self, blocks: Sequence[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(block, strict=False) for block in blocks
        )

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The client's address, given the connection's ``peer`` and every
        ``X-Forwarded-For`` header in order."""
        if peer is None or not self._trusted(peer):
            return peer
        hops = [h.strip() for header in forwarded_for for h in header.split(",")]
        client = peer
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # not an address: what lies beyond it cannot be trusted either
            client = hop
            if not self._trusted(hop):
                break
        return client

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        client = self.client(request.remote, request.headers.getall("X-Forwarded-For", []))
        if client != request.remote:
            request = request.clone(remote=client)
        return await handler(request)
