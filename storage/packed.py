"""A record packed into bytes, as the history keeps each version of it: about a third of its
export line (a URL and an HS_ADMIN value: 166 bytes against 534), and cheaper to make.

Layout, big-endian: a format byte (``1``), the name, the number of values, then each value:
index (int32), type, data, TTL type (uint8), TTL (int64), timestamp (int64), permission bits
(uint8, ``HandleValue.permission_bits``) and its references (a count, then index (int32) and
handle of each). A string or data is its length (uint32) and its bytes (text as UTF-8, lone
surrogates kept as the export keeps them).

Versions written before this format hold the record's export line (``storage.dump``); they
begin with ``{``, and ``unpack_record`` reads them too."""

from __future__ import annotations

import struct

from .dump import record_from_line
from .model import Handle, HandleValue, TTLType, ValueReference

__all__ = ["pack_record", "unpack_record"]

_FORMAT = 1
_COUNT = struct.Struct(">I")
_INDEX = struct.Struct(">i")
_TAIL = struct.Struct(">BqqBI")  # TTL type, TTL, timestamp, permission bits, references


def _text(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return _COUNT.pack(len(raw)) + raw


def pack_record(record: Handle) -> bytes:
    """``record`` as bytes; ``unpack_record`` gives it back exactly."""
    parts = [bytes((_FORMAT,)), _text(record.handle), _COUNT.pack(len(record.values))]
    for v in record.values:
        parts += (
            _INDEX.pack(v.index),
            _text(v.type),
            _COUNT.pack(len(v.data)),
            v.data,
            _TAIL.pack(int(v.ttl_type), v.ttl, v.timestamp, v.permission_bits, len(v.references)),
        )
        for ref in v.references:
            parts += (_INDEX.pack(ref.index), _text(ref.handle))
    return b"".join(parts)


class _Reader:
    __slots__ = ("at", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.at = 1

    def take(self, form: struct.Struct) -> tuple:
        values = form.unpack_from(self.raw, self.at)
        self.at += form.size
        return values

    def data(self) -> bytes:
        (size,) = self.take(_COUNT)
        if self.at + size > len(self.raw):
            raise ValueError("a packed record ends early")
        chunk = self.raw[self.at : self.at + size]
        self.at += size
        return chunk

    def text(self) -> str:
        return self.data().decode("utf-8", "surrogatepass")


def unpack_record(raw: bytes) -> Handle:
    """The record ``pack_record`` packed (or, from before it, the export line of it)."""
    raw = bytes(raw)
    if raw[:1] == b"{":
        return record_from_line(raw)
    if raw[:1] != bytes((_FORMAT,)):
        raise ValueError(f"not a packed record (format {raw[:1]!r})")
    reader = _Reader(raw)
    name = reader.text()
    (count,) = reader.take(_COUNT)
    values = []
    for _ in range(count):
        (index,) = reader.take(_INDEX)
        kind = reader.text()
        data = reader.data()
        ttl_type, ttl, timestamp, bits, refs = reader.take(_TAIL)
        references = []
        for _ in range(refs):
            (ref_index,) = reader.take(_INDEX)
            references.append(ValueReference(reader.text(), ref_index))
        values.append(
            HandleValue(
                index,
                kind,
                data,
                ttl,
                TTLType(ttl_type),
                timestamp,
                **HandleValue.flags_from_bits(bits),
                references=tuple(references),
            )
        )
    if reader.at != len(raw):
        raise ValueError("a packed record has bytes after its end")
    return Handle(name, tuple(values))
