"""Site information (an HS_SITE value, ``siteinfo.bin``, a root_info): which servers make up a
site, where they listen, and their public keys, in the reference's binary record and in the
JSON form its ``SiteInfoConverter`` writes.

Binary: format version (2 bytes, 1), protocol version (major, minor), serial number (2
bytes), flags (0x80 primary, 0x40 multi-primary), hash option, hash filter (a byte string),
attributes (name and value byte strings), then the servers: id, a 16-byte address (IPv4 in
the last four bytes), the public key (``signing.encode_public_key``), and interfaces of one
type byte (1 admin, 2 query, 3 both), one protocol byte (0 UDP, 1 TCP, 2 HTTP) and a port.
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

from storage import HandleValue

from ..config import Config
from .codec import MessageError, Reader, encode_value

__all__ = ["Interface", "Server", "SiteError", "SiteInfo", "root_info", "this_site"]

HASH_BY_ALL = 2
_PRIMARY = 0x80
_MULTI_PRIMARY = 0x40
ADMIN = 1
QUERY = 2
UDP, TCP, HTTP = 0, 1, 2
_PROTOCOL_NAMES = {UDP: "UDP", TCP: "TCP", HTTP: "HTTP"}


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@dataclass(frozen=True, slots=True)
class Interface:
    protocol: int  # UDP, TCP, HTTP
    port: int
    kind: int = ADMIN | QUERY

    def encode(self) -> bytes:
        return struct.pack(">BBI", self.kind, self.protocol, self.port)

    def to_json(self) -> dict[str, Any]:
        return {
            "query": bool(self.kind & QUERY),
            "admin": bool(self.kind & ADMIN),
            "protocol": _PROTOCOL_NAMES.get(self.protocol, self.protocol),
            "port": self.port,
        }


@dataclass(frozen=True, slots=True)
class Server:
    server_id: int
    address: str  # an IPv4 or IPv6 address
    public_key: bytes
    interfaces: tuple[Interface, ...]

    @property
    def address_bytes(self) -> bytes:
        packed = ipaddress.ip_address(self.address).packed
        return packed.rjust(16, b"\x00")

    def encode(self) -> bytes:
        return (
            struct.pack(">I", self.server_id)
            + self.address_bytes
            + _string(self.public_key)
            + struct.pack(">I", len(self.interfaces))
            + b"".join(i.encode() for i in self.interfaces)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "serverId": self.server_id,
            "address": self.address,
            "publicKey": {
                "format": "base64",
                "value": base64.b64encode(self.public_key).decode("ascii"),
            },
            "interfaces": [i.to_json() for i in self.interfaces],
        }


@dataclass(frozen=True, slots=True)
class SiteInfo:
    serial: int
    servers: tuple[Server, ...]
    primary: bool = True
    multi_primary: bool = False
    version: tuple[int, int] = (2, 5)
    hash_option: int = HASH_BY_ALL
    hash_filter: bytes = b""
    attributes: tuple[tuple[bytes, bytes], ...] = field(default=())

    def encode(self) -> bytes:
        flags = (_PRIMARY if self.primary else 0) | (_MULTI_PRIMARY if self.multi_primary else 0)
        attributes = b"".join(_string(name) + _string(value) for name, value in self.attributes)
        return (
            struct.pack(">HBBHBB", 1, *self.version, self.serial, flags, self.hash_option)
            + _string(self.hash_filter)
            + struct.pack(">I", len(self.attributes))
            + attributes
            + struct.pack(">I", len(self.servers))
            + b"".join(s.encode() for s in self.servers)
        )

    @classmethod
    def decode(cls, data: bytes) -> SiteInfo:
        """Raises ``MessageError`` for bytes that are not a site record."""
        reader = Reader(data)
        _, major, minor, serial, flags, hash_option = struct.unpack(">HBBHBB", reader.take(8))
        hash_filter = reader.string()
        count = reader.int4()
        if count > 1000:
            raise MessageError(f"a site with {count} attributes")
        attributes = tuple((reader.string(), reader.string()) for _ in range(count))
        count = reader.int4()
        if count > 1000:
            raise MessageError(f"a site with {count} servers")
        servers = []
        for _ in range(count):
            server_id = reader.int4()
            raw = reader.take(16)
            is_v4 = raw[:12] == bytes(12)
            address = str(ipaddress.ip_address(raw[12:] if is_v4 else raw))
            key = reader.string()
            interfaces = []
            for _ in range(min(reader.int4(), 100)):
                kind, protocol = reader.take(1)[0], reader.take(1)[0]
                interfaces.append(Interface(protocol, reader.int4(), kind))
            servers.append(Server(server_id, address, key, tuple(interfaces)))
        return cls(
            serial,
            tuple(servers),
            primary=bool(flags & _PRIMARY),
            multi_primary=bool(flags & _MULTI_PRIMARY),
            version=(major, minor),
            hash_option=hash_option,
            hash_filter=hash_filter,
            attributes=attributes,
        )

    def to_json(self) -> dict[str, Any]:
        """The reference's JSON form (what its ``SiteInfoConverter`` writes)."""
        out: dict[str, Any] = {
            "version": 1,
            "protocolVersion": f"{self.version[0]}.{self.version[1]}",
            "serialNumber": self.serial,
            "primarySite": self.primary,
            "multiPrimary": self.multi_primary,
        }
        if self.hash_option != HASH_BY_ALL:
            out["hashOption"] = self.hash_option
        if self.hash_filter:
            out["hashFilter"] = self.hash_filter.decode("utf-8", "replace")
        if self.attributes:
            out["attributes"] = [
                {"name": n.decode("utf-8", "replace"), "value": v.decode("utf-8", "replace")}
                for n, v in self.attributes
            ]
        out["servers"] = [s.to_json() for s in self.servers]
        return out


def root_info(sites: list[SiteInfo], *, timestamp: int) -> bytes:
    """A ``root_info`` file naming ``sites`` as the root (the reference's global values: the
    length, the count, then HS_SITE values)."""
    values = b"".join(
        encode_value(HandleValue(i + 1, "HS_SITE", site.encode(), timestamp=timestamp))
        for i, site in enumerate(sites)
    )
    body = struct.pack(">I", len(sites)) + values
    return struct.pack(">I", len(body)) + body


class SiteError(ValueError):
    """This server's site cannot be described (no address the Handle System could reach)."""


def this_site(config: Config, public_key: bytes) -> SiteInfo:
    """This server's HS_SITE: one primary server, its native TCP (administration and
    queries), UDP (queries) and, over plain HTTP, its HTTP port (both), as the reference's
    sites list them; ``public_key`` is the server key's public half, encoded."""
    native, server = config.native, config.server
    address = native.public_address or native.host or server.host
    try:
        unspecified = ipaddress.ip_address(address).is_unspecified
    except ValueError:
        unspecified = True
    if unspecified:
        raise SiteError(
            f"[native] public_address is needed: {address!r} is not one address the Handle "
            "System could reach this server at"
        )
    interfaces = []
    if native.tcp:
        interfaces.append(Interface(TCP, native.port, ADMIN | QUERY))
    if native.udp:
        interfaces.append(Interface(UDP, native.port, QUERY))
    if not server.tls_cert:  # the Handle System's HTTP interfaces are plain HTTP
        interfaces.append(Interface(HTTP, server.port, ADMIN | QUERY))
    return SiteInfo(
        native.site_serial,
        (Server(1, address, public_key, tuple(interfaces)),),
        attributes=((b"desc", b"handle-server"),),
    )
