"""The export format: JSON Lines, one handle record per line, exact to the byte.

Each line is ``{"handle": ..., "values": [...]}`` with every field a store keeps::

    {"handle":"TEST/1","values":[{"index":1,"type":"URL",
     "data":{"format":"string","value":"https://example.org/"},
     "ttlType":0,"ttl":86400,"timestamp":1700000000,"permissions":"1110","references":[]}]}

An export made with history (the default) adds ``"history"``: the record's versions, oldest
first, each ``{"version": 1, "at": 1700000000.5, "by": "300:0.NA/TEST", "operation": "create",
"record": {"handle": ..., "values": [...]}}`` (``by`` and ``record`` may be ``null``: the server
itself, a deletion); and a deleted handle whose history is kept is a line of its own, with
``"values": null``.

``data`` is ``string`` when the bytes are UTF-8 (so URLs can be read and grepped) and
``base64`` otherwise; either way the bytes come back exactly. ``permissions`` is the Handle
protocol's four flags: admin read, admin write, public read, public write. An export holds the
prefix handles' HS_SECKEY values (salted hashes, not secrets): keep it like a backup.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from .base import OPERATIONS, Exported, Version
from .model import Handle, HandleValue, TTLType, ValueReference, handle_key

__all__ = ["DumpError", "entry_from_line", "entry_to_line", "record_from_line", "record_to_line"]

_VALUE_FIELDS = frozenset(
    {"index", "type", "data", "ttlType", "ttl", "timestamp", "permissions", "references"}
)
_MAX_INT = 2**63 - 1
_VERSION_FIELDS = frozenset({"version", "at", "by", "operation", "record"})
_OPERATIONS = frozenset(OPERATIONS)


class DumpError(ValueError):
    """A line that is not a record in the export format; the message says what is wrong."""


def _data_to_json(data: bytes) -> dict[str, str]:
    try:
        return {"format": "string", "value": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"format": "base64", "value": base64.b64encode(data).decode("ascii")}


def _record_object(record: Handle) -> dict[str, Any]:
    return {
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
                "references": [{"index": r.index, "handle": r.handle} for r in v.references],
            }
            for v in record.values
        ],
    }


def record_to_line(record: Handle) -> bytes:
    """The record as one line, ending in ``\\n``."""
    return orjson.dumps(_record_object(record)) + b"\n"


def entry_to_line(entry: Exported) -> bytes:
    """A handle of an export (with its history, if it carries one) as one line."""
    line: dict[str, Any] = {
        "handle": entry.handle,
        "values": _record_object(entry.record)["values"] if entry.record is not None else None,
    }
    if entry.history is not None:
        line["history"] = [
            {
                "version": v.number,
                "at": v.at,
                "by": v.by,
                "operation": v.operation,
                "record": _record_object(v.record) if v.record is not None else None,
            }
            for v in entry.history
        ]
    return orjson.dumps(line) + b"\n"


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
        except ValueError as exc:  # (binascii's error, or a character outside ASCII)
            raise DumpError(f"{where}: data.value is not base64: {exc}") from None
    raise DumpError(f"{where}: data.format must be string or base64, not {raw['format']!r}")


#: The permission strings there are, and the flags each stands for.
_PERMISSIONS = {
    f"{a:d}{b:d}{c:d}{d:d}": (a, b, c, d)
    for a in (False, True)
    for b in (False, True)
    for c in (False, True)
    for d in (False, True)
}
_DATA_FIELDS = frozenset({"format", "value"})
_TTL_TYPES = (TTLType(0), TTLType(1))


def _plain_value(raw: Any) -> HandleValue | None:
    """The value ``raw`` holds, when it has the usual shape (string data, no references),
    checked as ``_value`` checks it but without making its messages; None for anything else
    (``_value`` then says what is wrong, or reads it)."""
    if type(raw) is not dict or raw.keys() != _VALUE_FIELDS or raw["references"] != []:
        return None
    index, type_, data = raw["index"], raw["type"], raw["data"]
    ttl_type, ttl, timestamp = raw["ttlType"], raw["ttl"], raw["timestamp"]
    flags = _PERMISSIONS.get(raw["permissions"]) if type(raw["permissions"]) is str else None
    if (
        flags is None
        or type(index) is not int
        or not -(2**31) <= index < 2**31
        or type(type_) is not str
        or type(data) is not dict
        or data.keys() != _DATA_FIELDS
        or data["format"] != "string"
        or type(data["value"]) is not str
        or type(ttl_type) is not int
        or ttl_type not in (0, 1)
        or type(ttl) is not int
        or not -_MAX_INT - 1 <= ttl <= _MAX_INT
        or type(timestamp) is not int
        or not -_MAX_INT - 1 <= timestamp <= _MAX_INT
    ):
        return None
    return HandleValue(
        index, type_, data["value"].encode("utf-8"), ttl, _TTL_TYPES[ttl_type], timestamp, *flags
    )


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


def _record(raw: Any, where: str) -> Handle:
    if not isinstance(raw, dict) or set(raw) != {"handle", "values"}:
        raise DumpError(f'{where}: a record must be {{"handle": ..., "values": [...]}}')
    return _record_of(_str(raw["handle"], f"{where}: handle"), raw["values"])


def _record_of(handle: str, values: Any) -> Handle:
    prefix, slash, suffix = handle.partition("/")
    if not (prefix and slash and suffix):
        raise DumpError(f"handle {handle!r}: expected prefix/suffix")
    if not isinstance(values, list):
        raise DumpError("values must be a list")
    parsed = [_plain_value(v) or _value(v, f"{handle} value {n}") for n, v in enumerate(values)]
    try:
        return Handle(handle, tuple(parsed))
    except ValueError as exc:
        raise DumpError(str(exc)) from None


def _loads(line: bytes | str) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DumpError(f"not JSON: {exc}") from None


def record_from_line(line: bytes | str) -> Handle:
    """The record on ``line``; ``DumpError`` says what is wrong with one that is not."""
    return _record(_loads(line), "record")


def entry_from_line(line: bytes | str) -> Exported:
    """The handle on a line of an export (``record_to_line``'s or ``entry_to_line``'s);
    ``DumpError`` says what is wrong with one that is not."""
    raw = _loads(line)
    if not isinstance(raw, dict) or set(raw) - {"history"} != {"handle", "values"}:
        raise DumpError('a line must be {"handle": ..., "values": [...], "history"?: [...]}')
    handle = _str(raw["handle"], "handle")
    if raw["values"] is None:
        if not raw.get("history"):
            raise DumpError(f"{handle}: a deleted handle (values null) needs its history")
        record = None
    else:
        record = _record_of(handle, raw["values"])
    if "history" not in raw:
        return Exported(handle, record)
    history = raw["history"]
    if not isinstance(history, list):
        raise DumpError(f"{handle}: history must be a list")
    versions: list[Version] = []
    for n, item in enumerate(history):
        where = f"{handle} history[{n}]"
        if not isinstance(item, dict) or set(item) != _VERSION_FIELDS:
            raise DumpError(f"{where} must be {{{', '.join(sorted(_VERSION_FIELDS))}}}")
        number = _int(item["version"], f"{where}: version", 1)
        if versions and number <= versions[-1].number:
            raise DumpError(f"{where}: versions must be in increasing order")
        at = item["at"]
        if type(at) not in (int, float) or not 0 <= at < 2**53:
            raise DumpError(f"{where}: at must be a time in epoch seconds, not {at!r}")
        by = item["by"]
        if by is not None:
            by = _str(by, f"{where}: by")
        operation = _str(item["operation"], f"{where}: operation")
        if operation not in _OPERATIONS:
            raise DumpError(f"{where}: operation must be one of {sorted(_OPERATIONS)}")
        kept = item["record"]
        version_record = None if kept is None else _record(kept, where)
        if version_record is not None and version_record.key != handle_key(handle):
            raise DumpError(f"{where}: a record of {version_record.handle}, not of {handle}")
        versions.append(Version(number, float(at), by, operation, version_record))
    return Exported(handle, record, tuple(versions))
