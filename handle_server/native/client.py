"""Asking other Handle servers: the client side of the native protocol, as the reference's
resolver (``HandleResolver``) does it, for resolving handles not homed here (issue: the global
proxy).

- ``NativeClient.send``: one request to one server of a site: over UDP first (a few tries,
  each with a short wait), then TCP, as the reference's resolver falls back when UDP is
  silent, truncated or answers RC 2; within one overall deadline.
- ``server_for``: which server of a multi-server site holds a handle (the reference's hash:
  the last four bytes of the MD5 of the upper-cased handle, or its prefix or suffix part, as a
  Java int, its absolute value modulo the number of servers).
- ``GlobalResolver``: a handle's prefix handle ``0.NA/<prefix>`` asked of the root sites,
  its HS_SITE values (or those of the handle its HS_SERV names) kept for their TTL, then the
  handle asked of a server of the primary site or, when that does not answer, of the others
  (mirrors) in turn.
- ``read_root_info``: the root sites from a root_info (the reference's global values), a
  siteinfo.bin, or its JSON form.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from storage import HandleValue, TTLType

from . import codec, signing
from .codec import Envelope, Message, MessageError, Reader
from .site import HTTP, QUERY, TCP, UDP, Interface, Server, SiteInfo

__all__ = [
    "GlobalResolver",
    "NativeClient",
    "UpstreamError",
    "read_root_info",
    "server_for",
]

_MAX_ANSWER = 4 * 1024 * 1024
HASH_BY_PREFIX, HASH_BY_SUFFIX, HASH_BY_ALL = 0, 1, 2
#: What a prefix handle is asked for (the reference's LOCATION types, less the admin ones).
_PREFIX_TYPES = [b"HS_SITE", b"HS_NA_DELEGATE", b"HS_SERV"]
#: Referrals, delegations and service handles followed for one handle at most (the
#: reference resolver's recursionCountLimit).
_RECURSION_LIMIT = 40


class UpstreamError(Exception):
    """No server of the sites asked answered in time (or any answered only with errors)."""


class _Budget:
    """The referrals one resolution may still follow: sites that refer in a circle run it
    out instead of the deadline."""

    def __init__(self, limit: int = _RECURSION_LIMIT) -> None:
        self.left = limit

    def spend(self, handle: bytes) -> None:
        self.left -= 1
        if self.left < 0:
            raise UpstreamError(f"too many referrals and delegations, at {handle!r}")


@dataclass(frozen=True, slots=True)
class _Service:
    """Who answers for a prefix: its sites, the sites it delegates derived prefixes to, and
    for how long (seconds) that may be remembered."""

    sites: list[SiteInfo]
    delegates: list[SiteInfo]
    ttl: float


def _sites(values: Sequence[HandleValue], kind: bytes) -> list[SiteInfo]:
    """The sites in ``values`` of type ``kind`` (HS_SITE or HS_NA_DELEGATE); values that do
    not decode are passed over."""
    found = []
    for value in values:
        if value.type.upper().encode() == kind:
            with contextlib.suppress(MessageError, ValueError, struct.error):
                found.append(SiteInfo.decode(value.data))
    return found


def _ttl(values: Sequence[HandleValue], now: float) -> float:
    """Seconds the sites named in ``values`` may be remembered: their smallest TTL."""
    ttls = [
        v.ttl - now if v.ttl_type is TTLType.ABSOLUTE else v.ttl
        for v in values
        if v.type.upper() in ("HS_SITE", "HS_NA_DELEGATE", "HS_SERV")
    ]
    return max(0.0, min(ttls, default=0))


def _java_remainder(value: int, divisor: int) -> int:
    return value - divisor * int(value / divisor)


def server_for(site: SiteInfo, handle: bytes) -> Server:
    """The server of ``site`` responsible for ``handle`` (``SiteInfo.determineServer``)."""
    if len(site.servers) == 1:
        return site.servers[0]
    prefix, slash, suffix = handle.partition(b"/")
    part = {HASH_BY_PREFIX: prefix, HASH_BY_SUFFIX: suffix if slash else b""}.get(
        site.hash_option, handle
    )
    digest = hashlib.md5(part.upper()).digest()
    value = int.from_bytes(digest[-4:], "big", signed=True)
    value = abs(value) if value != -(2**31) else value  # Java's Math.abs leaves MIN_VALUE
    return site.servers[_java_remainder(value, len(site.servers))]


class NativeClient:
    def __init__(
        self,
        *,
        udp_wait: float = 1.0,
        udp_tries: int = 2,
        version: tuple[int, int] = (2, 5),
    ) -> None:
        self.udp_wait = udp_wait
        self.udp_tries = udp_tries
        self.version = version

    async def send(self, server: Server, message: Message, *, within: float) -> Message:
        """``message`` to ``server``: UDP first, then TCP; ``UpstreamError`` if neither
        answers ``within`` seconds."""
        request_id = secrets.randbits(31) or 1
        body = codec.encode_message(message)
        envelope = Envelope(*self.version, request_id=request_id, length=len(body))
        data = envelope.encode() + body
        interfaces = [i for i in server.interfaces if i.kind & QUERY]
        order = sorted(interfaces, key=lambda i: {UDP: 0, TCP: 1, HTTP: 2}.get(i.protocol, 3))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        failure = "no interface to ask"
        for interface in order:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                if interface.protocol == UDP:
                    answer = await self._udp(server.address, interface, data, request_id, left)
                elif interface.protocol == TCP:
                    answer = await self._tcp(server.address, interface, data, request_id, left)
                else:
                    continue
            except (OSError, TimeoutError, MessageError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
                continue
            if answer is None or answer.response_code == codec.RC_ERROR:
                failure = "an error, or nothing, over UDP"
                continue  # as the reference: RC 2 from an interface means try the next
            return answer
        raise UpstreamError(f"{server.address}: {failure}")

    async def _udp(
        self, address: str, interface: Interface, data: bytes, request_id: int, left: float
    ) -> Message | None:
        loop = asyncio.get_running_loop()
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, datagram: bytes, addr: tuple) -> None:
                answers.put_nowait(datagram)

        transport, _ = await loop.create_datagram_endpoint(
            Receiver, remote_addr=(address, interface.port)
        )
        try:
            for _ in range(self.udp_tries):
                transport.sendto(data)
                wait = min(self.udp_wait, left)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        while True:
                            datagram = await answers.get()
                            message = _read(datagram, request_id)
                            if message is not None:
                                return message
                left -= wait
                if left <= 0:
                    break
            return None
        finally:
            transport.close()

    async def _tcp(
        self, address: str, interface: Interface, data: bytes, request_id: int, left: float
    ) -> Message | None:
        async with asyncio.timeout(left):
            reader, writer = await asyncio.open_connection(address, interface.port)
            try:
                writer.write(data)
                await writer.drain()
                head = await reader.readexactly(codec.ENVELOPE.size)
                envelope = codec.decode_envelope(head)
                if envelope.length > _MAX_ANSWER:
                    raise MessageError(f"an answer of {envelope.length} bytes")
                rest = await reader.readexactly(envelope.length)
            finally:
                writer.close()
        return _read(head + rest, request_id)


def _read(data: bytes, request_id: int) -> Message | None:
    """The answer in ``data`` if it is one, whole, to request ``request_id``."""
    try:
        envelope = codec.decode_envelope(data)
    except MessageError:
        return None
    if envelope.request_id != request_id or envelope.flags & codec.ENV_TRUNCATED:
        return None
    if envelope.length != len(data) - codec.ENVELOPE.size:
        return None
    message = codec.decode_message(data[codec.ENVELOPE.size :])
    return message if message.response_code else None


def read_root_info(data: bytes) -> list[SiteInfo]:
    """The root sites in a root_info file, a siteinfo.bin, or the JSON form of either."""
    text = data.lstrip()
    if text[:1] in (b"{", b"["):
        parsed = json.loads(text)
        return [_site_from_json(s) for s in (parsed if isinstance(parsed, list) else [parsed])]
    if data[:2] == b"\x00\x01":
        with contextlib.suppress(MessageError, ValueError):
            return [SiteInfo.decode(data)]
    reader = Reader(data)
    reader.int4()  # the length of what follows
    count = reader.int4()
    values = [codec.decode_value(reader) for _ in range(min(count, 1000))]
    return [SiteInfo.decode(v.data) for v in values if v.type.upper() == "HS_SITE"]


def _site_from_json(obj: dict) -> SiteInfo:
    servers = []
    for server in obj.get("servers", obj.get("serverList", [])):
        key = server.get("publicKey", {})
        raw = key.get("value", "") if isinstance(key, dict) else ""
        interfaces = tuple(
            Interface(
                {"UDP": UDP, "TCP": TCP, "HTTP": HTTP}.get(str(i.get("protocol")).upper(), 3),
                int(i["port"]),
                (QUERY if i.get("query") else 0) | (1 if i.get("admin") else 0),
            )
            for i in server.get("interfaces", server.get("interfaceList", []))
        )
        servers.append(
            Server(int(server["serverId"]), server["address"], base64.b64decode(raw), interfaces)
        )
    major, _, minor = str(obj.get("protocolVersion", "2.5")).partition(".")
    return SiteInfo(
        int(obj.get("serialNumber", 1)),
        tuple(servers),
        primary=bool(obj.get("primarySite", True)),
        multi_primary=bool(obj.get("multiPrimary", False)),
        version=(int(major), int(minor or 0)),
        hash_option=int(obj.get("hashOption", HASH_BY_ALL)),
        hash_filter=str(obj.get("hashFilter", "")).encode(),
        attributes=tuple(
            (str(a["name"]).encode(), str(a["value"]).encode()) for a in obj.get("attributes", [])
        ),
    )


class GlobalResolver:
    """Resolves handles homed anywhere in the Handle System, starting from ``roots``."""

    def __init__(
        self,
        roots: Sequence[SiteInfo],
        client: NativeClient | None = None,
        *,
        timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
        observed: Callable[[str, str, float], None] = lambda server, outcome, seconds: None,
        concurrency: int = 16,
        certify: bool = False,
    ) -> None:
        """``observed(server, outcome, seconds)``: told of each request to a server
        (``host:port``), ``answered`` or ``failed``. At most ``concurrency`` requests are at
        one server at once; more wait for their turn, within their deadline. ``certify``:
        every answer must be signed with the key the server's HS_SITE holds (an answer that
        is not counts as none: the next site is asked)."""
        self.roots = list(roots)
        self.certify = certify
        self.concurrency = concurrency
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}  # address -> (its, users)
        self.client = client or NativeClient()
        self.timeout = timeout
        self._clock = clock
        self._observed = observed
        self._sites: dict[bytes, tuple[list[SiteInfo], float]] = {}  # prefix -> sites, until
        self._site_flights: dict[bytes, asyncio.Future[list[SiteInfo]]] = {}

    def forget_sites(self) -> None:
        """Forget every prefix's sites: the next resolution of each asks the roots again."""
        self._sites.clear()

    async def resolve(
        self, handle: str, *, types: Sequence[str] = (), authoritative: bool = False
    ) -> Message:
        """The answer of the site responsible for ``handle`` (RC 1 with values, 100, ...);
        ``UpstreamError`` if no site answers within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        name = handle.encode("utf-8")
        sites = await self.sites_for(name, deadline)
        return await self._ask(sites, name, [t.encode() for t in types], authoritative, deadline)

    async def sites_for(
        self, handle: bytes, deadline: float, budget: _Budget | None = None
    ) -> list[SiteInfo]:
        """The sites responsible for ``handle``: the roots for ``0.NA/...`` handles, else
        those its prefix's handle names (``0.NA/<prefix>`` at the roots, or, for a derived
        prefix the roots do not hold, down its parents' HS_NA_DELEGATE sites), kept for the
        TTL of the values that named them. ``LookupError``: no such prefix."""
        prefix = handle.partition(b"/")[0]
        if prefix.upper() == b"0.NA":
            return self.roots
        key = prefix.upper()
        cached = self._sites.get(key)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        flight = self._site_flights.get(key)
        if flight is None:  # one lookup of a prefix at a time; the others wait for it
            flight = asyncio.ensure_future(self._look_up(prefix, deadline, budget or _Budget()))
            self._site_flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(flight)

    def _landed(self, key: bytes, flight: asyncio.Future[list[SiteInfo]]) -> None:
        del self._site_flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: waiters that gave up leave no warning behind

    async def _look_up(self, prefix: bytes, deadline: float, budget: _Budget) -> list[SiteInfo]:
        service = await self._prefix_service(prefix, deadline, budget)
        if not service.sites:
            raise LookupError(f"prefix {prefix.decode(errors='replace')} names no site")
        self._sites[prefix.upper()] = (service.sites, self._clock() + service.ttl)
        return service.sites

    async def _prefix_service(self, prefix: bytes, deadline: float, budget: _Budget) -> _Service:
        """Who answers for ``prefix``, as ``HandleResolver.findPrefixService`` finds it."""
        na_handle = b"0.NA/" + prefix
        answer = await self._ask(self.roots, na_handle, _PREFIX_TYPES, False, deadline, budget)
        service = await self._service_in(answer, na_handle, deadline, budget)
        if service is not None and (service.sites or service.delegates):
            return service
        if answer.response_code == codec.RC_HANDLE_NOT_FOUND and b"." in prefix:
            return await self._delegated(prefix, deadline, budget)
        if answer.response_code in (codec.RC_HANDLE_NOT_FOUND, codec.RC_SUCCESS):
            raise LookupError(f"prefix {prefix.decode(errors='replace')} is not known")
        raise UpstreamError(f"the root answered RC {answer.response_code} for {na_handle!r}")

    async def _delegated(self, prefix: bytes, deadline: float, budget: _Budget) -> _Service:
        """A derived prefix (``10.1234.5``) the roots do not hold: its top parent's handle
        (``0.NA/10``) names HS_NA_DELEGATE sites, which are asked for the next level
        (``10.1234``, slashless), and so on while a level names delegates; the level that
        names none has its sites asked for the whole prefix. (The reference's resolver also
        reads HS_NAMESPACE to decide whether a level delegates; this one does not.)"""
        parts = prefix.split(b".")
        na_handle = b"0.NA/" + parts[0]
        answer = await self._ask(self.roots, na_handle, _PREFIX_TYPES, False, deadline, budget)
        service = await self._service_in(answer, na_handle, deadline, budget)
        if service is None or not service.delegates:
            raise LookupError(f"prefix {prefix.decode(errors='replace')} is not known")
        level = 1
        while level < len(parts):
            level = level + 1 if service.delegates else len(parts)
            parent = b".".join(parts[:level])
            budget.spend(parent)
            ask = service.delegates or service.sites
            answer = await self._ask(ask, parent, _PREFIX_TYPES, False, deadline, budget)
            found = await self._service_in(answer, parent, deadline, budget)
            if found is None or not (found.sites or found.delegates):
                if answer.response_code in (codec.RC_HANDLE_NOT_FOUND, codec.RC_SUCCESS):
                    raise LookupError(f"prefix {prefix.decode(errors='replace')} is not known")
                raise UpstreamError(f"RC {answer.response_code} for {parent!r}")
            service = _Service(found.sites, found.delegates, min(service.ttl, found.ttl))
        return service

    async def _service_in(
        self, answer: Message, asked: bytes, deadline: float, budget: _Budget
    ) -> _Service | None:
        """The sites and delegates an answer about a prefix handle (``asked``) names: its
        HS_SITE and HS_NA_DELEGATE values, or those of the service handle its HS_SERV names;
        an RC 303 (NA delegate) answer is followed to the delegates it names, which are asked
        for the prefix without ``0.NA/``. ``None``: the answer names nothing."""
        digest = answer.flag(codec.FLAG_REQUEST_DIGEST)
        if answer.response_code == codec.RC_NA_DELEGATE:
            budget.spend(asked)
            referred, values = codec.decode_referral_body(answer.body, digest=digest)
            delegates = _sites(values, b"HS_NA_DELEGATE") or _sites(values, b"HS_SITE")
            if not delegates:  # the referral names a handle that holds them
                holder = await self._service_of(referred, deadline, budget)
                delegates = (holder.delegates or holder.sites) if holder else []
            if not delegates:
                return None
            slashless = asked[5:] if asked[:5].upper() == b"0.NA/" else asked
            answer = await self._ask(delegates, slashless, _PREFIX_TYPES, False, deadline, budget)
            return await self._service_in(answer, slashless, deadline, budget)
        if answer.response_code != codec.RC_SUCCESS:
            return None
        _, values = codec.decode_resolution_body(answer.body, digest=digest)
        now = self._clock()
        sites, delegates = _sites(values, b"HS_SITE"), _sites(values, b"HS_NA_DELEGATE")
        if sites or delegates:
            return _Service(sites, delegates, _ttl(values, now))
        for value in values:
            if value.type.upper() == "HS_SERV":  # a service handle holds the sites
                budget.spend(value.data)
                found = await self._service_of(value.data, deadline, budget)
                if found is not None:
                    return _Service(found.sites, found.delegates, min(found.ttl, _ttl(values, now)))
        return None

    async def _service_of(self, handle: bytes, deadline: float, budget: _Budget) -> _Service | None:
        """The sites and delegates the handle ``handle`` holds (a service handle, or the one a
        referral names), asked of the sites responsible for it."""
        sites = await self.sites_for(handle, deadline, budget)
        answer = await self._ask(sites, handle, _PREFIX_TYPES, False, deadline, budget)
        return await self._service_in(answer, handle, deadline, budget)

    async def _ask(
        self,
        sites: Sequence[SiteInfo],
        handle: bytes,
        types: Sequence[bytes],
        authoritative: bool,
        deadline: float,
        budget: _Budget | None = None,
    ) -> Message:
        """``handle`` asked of the primary sites first, then the others (mirrors), until
        one answers. An RC 302 (service referral) answer is followed: the request goes to the
        sites it names (or those of the handle it names), as the reference's resolver does."""
        answer = await self._ask_once(sites, handle, types, authoritative, deadline)
        while answer.response_code == codec.RC_SERVICE_REFERRAL:
            budget = budget or _Budget()
            budget.spend(handle)
            referred, values = codec.decode_referral_body(
                answer.body, digest=answer.flag(codec.FLAG_REQUEST_DIGEST)
            )
            sites = _sites(values, b"HS_SITE")
            if not sites:  # the referral names a handle that holds the sites
                service = await self._service_of(referred, deadline, budget)
                sites = service.sites if service is not None else []
            if not sites:
                raise UpstreamError(f"a service referral for {handle!r} names no site")
            answer = await self._ask_once(sites, handle, types, authoritative, deadline)
        return answer

    @contextlib.asynccontextmanager
    async def _turn(self, address: str, within: float) -> AsyncIterator[None]:
        """One of ``address``'s ``concurrency`` slots, waited for at most ``within`` seconds
        (``UpstreamError`` then). Only servers in use have a semaphore."""
        semaphore, users = self._slots.get(address) or (asyncio.Semaphore(self.concurrency), 0)
        self._slots[address] = (semaphore, users + 1)
        try:
            try:
                async with asyncio.timeout(within):
                    await semaphore.acquire()
            except TimeoutError:
                raise UpstreamError(f"{address}: no turn within the time left") from None
            try:
                yield
            finally:
                semaphore.release()
        finally:
            semaphore, users = self._slots[address]
            if users == 1:
                del self._slots[address]
            else:
                self._slots[address] = (semaphore, users - 1)

    async def _ask_once(
        self,
        sites: Sequence[SiteInfo],
        handle: bytes,
        types: Sequence[bytes],
        authoritative: bool,
        deadline: float,
    ) -> Message:
        flags = codec.FLAG_RECURSIVE | codec.FLAG_PUBLIC_ONLY
        if authoritative:
            flags |= codec.FLAG_AUTHORITATIVE
        if self.certify:
            flags |= codec.FLAG_CERTIFY
        body = (
            codec.string(handle)
            + struct.pack(">I", 0)
            + struct.pack(">I", len(types))
            + b"".join(codec.string(t) for t in types)
        )
        request = Message(codec.OC_RESOLUTION, 0, flags, 0xFFFF, 0, 0, body)
        ordered = sorted(sites, key=lambda s: not s.primary)
        if authoritative:
            ordered = [s for s in ordered if s.primary] or ordered
        loop = asyncio.get_running_loop()
        failures = []
        for site in ordered:
            left = deadline - loop.time()
            if left <= 0:
                break
            server = server_for(site, handle)
            started = loop.time()
            try:
                async with self._turn(server.address, left):
                    left = deadline - loop.time()
                    answer = await self.client.send(server, request, within=left)
            except UpstreamError as exc:
                self._observed(server.address, "failed", loop.time() - started)
                failures.append(str(exc))
                continue
            if self.certify and not signing.signed_by(answer, server.public_key):
                self._observed(server.address, "failed", loop.time() - started)
                failures.append(f"{server.address}: the answer is not signed with its key")
                continue
            self._observed(server.address, "answered", loop.time() - started)
            return answer
        raise UpstreamError("; ".join(failures) or "no time left to ask any site")
