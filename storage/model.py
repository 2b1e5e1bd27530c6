"""The records a store keeps: a handle and its values, as the Handle System defines them.

No I/O here. A value's ``data`` is the raw bytes the Handle protocol carries (an HS_ADMIN
value holds the binary admin record, an HS_VLIST value the binary reference list); how those
bytes look in JSON is the HTTP layer's business.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_TTL",
    "PREFIX_HANDLE_AUTHORITY",
    "Handle",
    "HandleValue",
    "TTLType",
    "ValueReference",
    "handle_key",
    "prefix_of",
]

DEFAULT_TTL = 86400
#: The naming authority of prefix handles: ``0.NA/TEST`` is the prefix handle of ``TEST``.
PREFIX_HANDLE_AUTHORITY = "0.NA"


class TTLType(enum.IntEnum):
    """How a value's ``ttl`` is read: seconds to cache it, or the moment (epoch seconds) it
    expires."""

    RELATIVE = 0
    ABSOLUTE = 1


@dataclass(frozen=True, slots=True)
class ValueReference:
    """A reference to one value of a handle: ``index:handle`` (index 0 means any index)."""

    handle: str
    index: int

    def __str__(self) -> str:
        return f"{self.index}:{self.handle}"

    @property
    def key(self) -> tuple[int, str]:
        """The comparison form: the index and the handle's ``handle_key``."""
        return self.index, handle_key(self.handle)


@dataclass(frozen=True, slots=True)
class HandleValue:
    """One value of a handle record.

    ``timestamp`` is seconds since the epoch, set by the server on every write. The four
    permission flags are the Handle protocol's per-value access bits; their defaults are the
    reference server's (admins read and write, everybody reads, nobody else writes).
    """

    index: int
    type: str
    data: bytes
    ttl: int = DEFAULT_TTL
    ttl_type: TTLType = TTLType.RELATIVE
    timestamp: int = 0
    admin_read: bool = True
    admin_write: bool = True
    public_read: bool = True
    public_write: bool = False
    references: tuple[ValueReference, ...] = ()

    @property
    def permission_bits(self) -> int:
        """The flags packed as the protocol packs them: admin read 8, admin write 4,
        public read 2, public write 1."""
        return (
            (8 if self.admin_read else 0)
            | (4 if self.admin_write else 0)
            | (2 if self.public_read else 0)
            | (1 if self.public_write else 0)
        )

    @staticmethod
    def flags_from_bits(bits: int) -> dict[str, bool]:
        """The inverse of :attr:`permission_bits`, as keyword arguments."""
        return {
            "admin_read": bool(bits & 8),
            "admin_write": bool(bits & 4),
            "public_read": bool(bits & 2),
            "public_write": bool(bits & 1),
        }

    def stamped(self, timestamp: int, data: bytes | None = None) -> HandleValue:
        """This value as written at ``timestamp`` (holding ``data``, if given): what
        ``dataclasses.replace`` makes, for a fifth of its cost (every value written is
        stamped)."""
        return HandleValue(
            self.index,
            self.type,
            self.data if data is None else data,
            self.ttl,
            self.ttl_type,
            timestamp,
            self.admin_read,
            self.admin_write,
            self.public_read,
            self.public_write,
            self.references,
        )

    def same_content(self, other: HandleValue) -> bool:
        """Equal in everything but the write timestamp."""
        return (
            self.index == other.index
            and self.type == other.type
            and self.data == other.data
            and self.ttl == other.ttl
            and self.ttl_type == other.ttl_type
            and self.permission_bits == other.permission_bits
            and self.references == other.references
        )


@dataclass(frozen=True, slots=True)
class Handle:
    """A handle and its values, kept sorted by index (indexes are unique within a record).

    ``handle`` is the name as it was first created; lookups are case-insensitive in ASCII
    (see :func:`handle_key`).
    """

    handle: str
    values: tuple[HandleValue, ...] = field(default=())

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.values, key=lambda v: v.index))
        indexes = [v.index for v in ordered]
        if len(set(indexes)) != len(indexes):
            raise ValueError(f"duplicate value indexes in record {self.handle!r}")
        object.__setattr__(self, "values", ordered)

    @property
    def key(self) -> str:
        return handle_key(self.handle)

    def value_at(self, index: int) -> HandleValue | None:
        for value in self.values:
            if value.index == index:
                return value
        return None

    @property
    def indexes(self) -> frozenset[int]:
        return frozenset(v.index for v in self.values)


def handle_key(handle: str) -> str:
    """The form a handle is stored and compared under: ASCII letters upper-cased, everything
    else untouched. Handles are case-insensitive in ASCII only (RFC 3650)."""
    if handle.isascii():  # (nearly always; str.upper would fold non-ASCII letters too)
        return handle.upper()
    return handle.encode("utf-8", "surrogatepass").upper().decode("utf-8", "surrogatepass")


def prefix_of(handle: str) -> str:
    """The naming authority part of a handle: everything before the first ``/``."""
    return handle.split("/", 1)[0]
