"""The Handle protocol's binary forms of HS_ADMIN and HS_VLIST data (RFC 3651), and the
HS_ADMIN permission bits.

An HS_ADMIN value's data is a 2-byte permission mask, the admin handle (4-byte length, UTF-8
bytes) and a 4-byte index; an HS_VLIST value's data is a 4-byte count of references, each a
handle (4-byte length, bytes) and a 4-byte index. Integers are big-endian.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from storage import ValueReference

__all__ = [
    "AdminPermission",
    "AdminRecord",
    "decode_admin",
    "decode_vlist",
    "encode_admin",
    "encode_vlist",
]

_MAX_ITEMS = 1_000_000


class AdminPermission(enum.IntFlag):
    """HS_ADMIN permission bits, bit 0 first, as the reference server numbers them."""

    ADD_HANDLE = 0x0001
    DELETE_HANDLE = 0x0002
    ADD_DERIVED_PREFIX = 0x0004
    DELETE_DERIVED_PREFIX = 0x0008
    MODIFY_VALUE = 0x0010
    REMOVE_VALUE = 0x0020
    ADD_VALUE = 0x0040
    MODIFY_ADMIN = 0x0080
    REMOVE_ADMIN = 0x0100
    ADD_ADMIN = 0x0200
    READ_VALUE = 0x0400
    LIST_HANDLES = 0x0800

    @classmethod
    def all(cls) -> AdminPermission:
        return cls(0x0FFF)

    def to_string(self) -> str:
        """Twelve ``0``/``1`` characters, bit 11 (list handles) first, as the REST API
        shows them."""
        return "".join("1" if self & (1 << bit) else "0" for bit in range(11, -1, -1))

    @classmethod
    def from_string(cls, text: str) -> AdminPermission:
        if len(text) != 12 or set(text) - {"0", "1"}:
            raise ValueError(
                f'admin permissions must be 12 characters of 0 and 1 (or "*"), got {text!r}'
            )
        return cls(int(text, 2))


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """The data of an HS_ADMIN value: who (``index:handle``) may do what."""

    handle: str
    index: int
    permissions: AdminPermission


def _read_bytes(data: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">i", data, offset)
    offset += 4
    if length < 0 or offset + length > len(data):
        raise ValueError("byte string runs past the end of the data")
    return data[offset : offset + length], offset + length


def encode_admin(record: AdminRecord) -> bytes:
    name = record.handle.encode("utf-8")
    return struct.pack(f">Hi{len(name)}si", int(record.permissions), len(name), name, record.index)


def decode_admin(data: bytes) -> AdminRecord:
    """Raises ``ValueError`` if ``data`` is not an admin record."""
    try:
        (perms,) = struct.unpack_from(">H", data, 0)
        name, offset = _read_bytes(data, 2)
        (index,) = struct.unpack_from(">i", data, offset)
        offset += 4
    except struct.error as exc:
        raise ValueError(f"not an admin record: {exc}") from None
    # Old servers wrote the mask as 4 bytes; their records end 2 bytes later.
    if offset not in (len(data), len(data) - 2):
        raise ValueError("unexpected bytes after the admin record")
    return AdminRecord(name.decode("utf-8"), index, AdminPermission(perms & 0x0FFF))


def encode_vlist(references: Iterable[ValueReference]) -> bytes:
    refs = list(references)
    parts = [struct.pack(">i", len(refs))]
    for ref in refs:
        name = ref.handle.encode("utf-8")
        parts.append(struct.pack(f">i{len(name)}si", len(name), name, ref.index))
    return b"".join(parts)


def decode_vlist(data: bytes) -> tuple[ValueReference, ...]:
    """Raises ``ValueError`` if ``data`` is not a value reference list."""
    try:
        (count,) = struct.unpack_from(">i", data, 0)
        if count < 0 or count > _MAX_ITEMS:
            raise ValueError(f"implausible reference count {count}")
        offset = 4
        refs = []
        for _ in range(count):
            name, offset = _read_bytes(data, offset)
            (index,) = struct.unpack_from(">i", data, offset)
            offset += 4
            refs.append(ValueReference(name.decode("utf-8"), index))
    except struct.error as exc:
        raise ValueError(f"not a value list: {exc}") from None
    if offset != len(data):
        raise ValueError("unexpected bytes after the value list")
    return tuple(refs)
