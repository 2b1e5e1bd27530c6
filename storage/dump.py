"""The export format: JSON Lines, one handle record per line, exact to the byte.

Each line is ``{"handle": ..., "values": [...]}`` with every field a store keeps::

    {"handle":"TEST/1","values":[{"index":1,"type":"URL",
     "data":{"format":"string","value":"https://example.org/"},
     "ttlType":0,"ttl":86400,"timestamp":1700000000,"permissions":"1110","references":[]}]}

``data`` is ``string`` when the bytes are UTF-8 (so URLs can be read and grepped) and
``base64`` otherwise; either way the bytes come back exactly. ``permissions`` is the Handle
protocol's four flags: admin read, admin write, public read, public write. An export holds the
prefix handles' HS_SECKEY values (salted hashes, not secrets): keep it like a backup.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from .model import Handle, HandleValue, TTLType, ValueReference

__all__ = ["DumpError", "record_from_line", "record_to_line"]

_VALUE_FIELDS = frozenset(
    {"index", "type", "data", "ttlType", "ttl", "timestamp", "permissions", "references"}
)
_MAX_INT = 2**63 - 1


class DumpError(ValueError):
    """A line that is not a record in the export format; the message says what is wrong."""


def _data_to_json(data: bytes) -> dict[str, str]:
    try:
        return {"format": "string", "value": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"format": "base64", "value": base64.b64encode(data).decode("ascii")}


def record_to_line(record: Handle) -> bytes:
    """The record as one line, ending in ``\\n``."""
    return (
        orjson.dumps(
            {
                "handle": record.handle,
                "values": [
                    {
                        "index": v.index,
                        "type": v.type,
                        "data": _data_to_json(v.data),
                        "ttlType": int(v.ttl_type),
                        "ttl": v.ttl,
                        "timestamp": v.timestamp,
                        "permissions": "".join(
                            "1" if f else "0"
                            for f in (v.admin_read, v.admin_write, v.public_read, v.public_write)
                        ),
                        "references": [
                            {"index": r.index, "handle": r.handle} for r in v.references
                        ],
                    }
                    for v in record.values
                ],
            }
        )
        + b"\n"
    )


def _int(raw: Any, what: str, low: int = -_MAX_INT - 1, high: int = _MAX_INT) -> int:
    if type(raw) is not int or not low <= raw <= high:
        raise DumpError(f"{what} must be an integer from {low} to {high}, not {raw!r}")
    return raw


def _str(raw: Any, what: str) -> str:
    if not isinstance(raw, str):
        raise DumpError(f"{what} must be a string, not {raw!r}")
    return raw


def _data(raw: Any, where: str) -> bytes:
    if not isinstance(raw, dict) or set(raw) != {"format", "value"}:
        raise DumpError(f"{where}: data must be {{format, value}}")
    value = _str(raw["value"], f"{where}: data.value")
    if raw["format"] == "string":
        return value.encode("utf-8")
    if raw["format"] == "base64":
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise DumpError(f"{where}: data.value is not base64: {exc}") from None
    raise DumpError(f"{where}: data.format must be string or base64, not {raw['format']!r}")


def _value(raw: Any, where: str) -> HandleValue:
    if not isinstance(raw, dict):
        raise DumpError(f"{where} must be an object")
    if set(raw) != _VALUE_FIELDS:
        missing, extra = _VALUE_FIELDS - set(raw), set(raw) - _VALUE_FIELDS
        raise DumpError(f"{where}: missing {sorted(missing)}, unknown {sorted(extra)}")
    permissions = _str(raw["permissions"], f"{where}: permissions")
    if len(permissions) != 4 or set(permissions) - {"0", "1"}:
        raise DumpError(f"{where}: permissions must be four of 0 and 1, not {permissions!r}")
    ttl_type = _int(raw["ttlType"], f"{where}: ttlType", 0)
    if ttl_type not in (0, 1):
        raise DumpError(f"{where}: ttlType must be 0 (relative) or 1 (absolute)")
    references = raw["references"]
    if not isinstance(references, list):
        raise DumpError(f"{where}: references must be a list")
    refs = []
    for n, ref in enumerate(references):
        if not isinstance(ref, dict) or set(ref) != {"index", "handle"}:
            raise DumpError(f"{where}: references[{n}] must be {{index, handle}}")
        refs.append(
            ValueReference(
                _str(ref["handle"], f"{where}: reference"),
                _int(ref["index"], f"{where}: reference index", -(2**31), 2**31 - 1),
            )
        )
    flags = [c == "1" for c in permissions]
    return HandleValue(
        index=_int(raw["index"], f"{where}: index", -(2**31), 2**31 - 1),
        type=_str(raw["type"], f"{where}: type"),
        data=_data(raw["data"], where),
        ttl=_int(raw["ttl"], f"{where}: ttl"),
        ttl_type=TTLType(ttl_type),
        timestamp=_int(raw["timestamp"], f"{where}: timestamp"),
        admin_read=flags[0],
        admin_write=flags[1],
        public_read=flags[2],
        public_write=flags[3],
        references=tuple(refs),
    )


def record_from_line(line: bytes | str) -> Handle:
    """The record on ``line``; ``DumpError`` says what is wrong with one that is not."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DumpError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or set(raw) != {"handle", "values"}:
        raise DumpError('a record must be {"handle": ..., "values": [...]}')
    handle = _str(raw["handle"], "handle")
    prefix, slash, suffix = handle.partition("/")
    if not (prefix and slash and suffix):
        raise DumpError(f"handle {handle!r}: expected prefix/suffix")
    if not isinstance(raw["values"], list):
        raise DumpError("values must be a list")
    values = [_value(v, f"{handle} value {n}") for n, v in enumerate(raw["values"])]
    try:
        return Handle(handle, tuple(values))
    except ValueError as exc:
        raise DumpError(str(exc)) from None
