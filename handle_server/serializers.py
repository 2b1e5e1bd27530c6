"""Handle.Net JSON <-> the storage model, and the bodies of every answer.

Input is checked strictly: a value with a missing or unknown field, an unknown data format or
a malformed payload is refused with a message naming the value, never silently reshaped.
Output follows the reference server: a value's ``data.format`` comes from its type and its
bytes (HS_ADMIN -> admin, HS_VLIST -> vlist, readable UTF-8 -> string, else base64), whatever
format it was written in.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any

from storage import DEFAULT_TTL, HandleValue, TTLType, ValueReference

from .auth.secrets import REDACTED
from .encoding import (
    AdminPermission,
    AdminRecord,
    decode_admin,
    decode_vlist,
    encode_admin,
    encode_vlist,
)
from .errors import InvalidValue, ProtocolError

__all__ = [
    "MAX_INDEX",
    "error_body",
    "format_timestamp",
    "value_from_json",
    "value_to_json",
]

MAX_INDEX = 2**31 - 1
_MAX_TTL = 2**31 - 1
_VALUE_FIELDS = frozenset(
    {"index", "type", "data", "ttl", "timestamp", "permissions", "references"}
)
# Controls other than TAB, LF, VT, FF, CR (and C1 controls) make data "binary".
_BINARY_CHARS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_DEFAULT_PERMS = HandleValue(index=1, type="", data=b"").permission_bits
_UNSUPPORTED_FORMATS = ("site", "key")


def error_body(response_code: int, handle: str | None, message: str | None) -> dict[str, Any]:
    """The one shape of every error answer."""
    body: dict[str, Any] = {"responseCode": response_code}
    if handle is not None:
        body["handle"] = handle
    if message:
        body["message"] = message
    return body


def format_timestamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- output ------------------------------------------------------------------------------------


def _text_or_base64(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not _BINARY_CHARS.search(text):
        return {"format": "string", "value": text}
    return {"format": "base64", "value": base64.b64encode(data).decode("ascii")}


def data_to_json(type_: str, data: bytes) -> dict[str, Any]:
    kind = type_.upper()
    if kind == "HS_SECKEY":
        # The stored form never leaves the server (it holds the secret, encrypted). Written
        # back unchanged, this text keeps the stored secret.
        return {"format": "string", "value": REDACTED.decode("ascii")}
    if kind == "HS_ADMIN":
        try:
            admin = decode_admin(data)
        except ValueError:
            pass
        else:
            return {
                "format": "admin",
                "value": {
                    "handle": admin.handle,
                    "index": admin.index,
                    "permissions": admin.permissions.to_string(),
                },
            }
    elif kind == "HS_VLIST":
        try:
            refs = decode_vlist(data)
        except ValueError:
            pass
        else:
            return {
                "format": "vlist",
                "value": [{"handle": r.handle, "index": r.index} for r in refs],
            }
    return _text_or_base64(data)


def _permissions_string(value: HandleValue) -> str:
    return "".join(
        "1" if flag else "0"
        for flag in (value.admin_read, value.admin_write, value.public_read, value.public_write)
    )


def value_to_json(value: HandleValue) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": value.index,
        "type": value.type,
        "data": data_to_json(value.type, value.data),
    }
    if value.permission_bits != _DEFAULT_PERMS:
        out["permissions"] = _permissions_string(value)
    if value.ttl_type is TTLType.ABSOLUTE:
        out["ttl"] = format_timestamp(value.ttl)
    else:
        out["ttl"] = value.ttl
    out["timestamp"] = format_timestamp(value.timestamp)
    if value.references:
        out["references"] = [{"handle": r.handle, "index": r.index} for r in value.references]
    return out


# -- input -------------------------------------------------------------------------------------


def _int_field(raw: Any, what: str, where: str) -> int:
    """An integer given as a JSON number or a decimal string (clients send ``"200"``)."""
    if isinstance(raw, bool):
        raise ProtocolError(None, f"{where}: {what} must be an integer, got {raw!r}")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"-?[0-9]{1,12}", raw.strip()):
        return int(raw.strip())
    raise ProtocolError(None, f"{where}: {what} must be an integer, got {raw!r}")


def _reference(raw: Any, where: str) -> ValueReference:
    if not isinstance(raw, dict) or set(raw) - {"handle", "index"} or "handle" not in raw:
        raise ProtocolError(None, f'{where}: a reference is {{"handle": ..., "index": ...}}')
    handle = raw["handle"]
    if not isinstance(handle, str) or not handle:
        raise ProtocolError(None, f"{where}: a reference's handle must be a non-empty string")
    index = _int_field(raw.get("index", 0), "a reference's index", where)
    if not 0 <= index <= MAX_INDEX:
        raise ProtocolError(None, f"{where}: a reference's index must be 0 to {MAX_INDEX}")
    return ValueReference(handle, index)


def _admin_permissions(raw: Any, where: str) -> AdminPermission:
    try:
        if raw == "*" or raw is True:
            return AdminPermission.all()
        if raw is False:
            return AdminPermission(0)
        if isinstance(raw, str):
            return AdminPermission.from_string(raw)
        if isinstance(raw, int) and 0 <= raw <= 0x0FFF:
            return AdminPermission(raw)
        if isinstance(raw, list) and len(raw) == 12 and all(isinstance(b, bool | int) for b in raw):
            return AdminPermission(sum(1 << bit for bit, on in enumerate(raw) if on))
    except ValueError as exc:
        raise ProtocolError(None, f"{where}: {exc}") from None
    raise ProtocolError(
        None, f"{where}: admin permissions must be 12 characters of 0 and 1, got {raw!r}"
    )


def data_from_json(raw: Any, where: str) -> bytes:
    """The bytes a value's ``data`` stands for. A bare string is UTF-8 text."""
    if isinstance(raw, str):
        return raw.encode("utf-8")
    if not isinstance(raw, dict):
        raise ProtocolError(
            None, f'{where}: data must be a string or {{"format": ..., "value": ...}}'
        )
    extra = set(raw) - {"format", "value"}
    if extra:
        raise ProtocolError(None, f"{where}: unknown field(s) in data: {', '.join(sorted(extra))}")
    if "value" not in raw:
        raise ProtocolError(None, f"{where}: data has no value")
    fmt = raw.get("format", "string")
    if not isinstance(fmt, str):
        raise ProtocolError(None, f"{where}: data format must be a string")
    fmt = fmt.lower()
    value = raw["value"]
    if fmt == "string":
        if not isinstance(value, str):
            raise ProtocolError(None, f"{where}: a string value must be a JSON string")
        return value.encode("utf-8")
    if fmt == "base64":
        if not isinstance(value, str):
            raise ProtocolError(None, f"{where}: a base64 value must be a JSON string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(None, f"{where}: value is not valid base64") from None
    if fmt == "hex":
        if not isinstance(value, str):
            raise ProtocolError(None, f"{where}: a hex value must be a JSON string")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise ProtocolError(None, f"{where}: value is not valid hex") from None
    if fmt == "admin":
        if not isinstance(value, dict) or set(value) - {"handle", "index", "permissions"}:
            raise ProtocolError(
                None, f'{where}: an admin value is {{"handle", "index", "permissions"}}'
            )
        handle = value.get("handle")
        if not isinstance(handle, str) or not handle:
            raise ProtocolError(None, f"{where}: an admin value needs a handle")
        index = _int_field(value.get("index"), "the admin index", where)
        if not 0 <= index <= MAX_INDEX:
            raise ProtocolError(None, f"{where}: the admin index must be 0 to {MAX_INDEX}")
        perms = _admin_permissions(value.get("permissions", "*"), where)
        return encode_admin(AdminRecord(handle, index, perms))
    if fmt == "vlist":
        if not isinstance(value, list):
            raise ProtocolError(None, f"{where}: a vlist value is an array of references")
        return encode_vlist(_reference(item, where) for item in value)
    if fmt in _UNSUPPORTED_FORMATS:
        raise ProtocolError(
            None,
            f"{where}: the {fmt!r} format is not supported by this server; "
            'send the value\'s bytes with format "base64"',
        )
    raise ProtocolError(
        None, f"{where}: unknown data format {fmt!r} (string, base64, hex, admin or vlist)"
    )


def _parse_time(text: str, where: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(
            None, f"{where}: ttl {text!r} is neither seconds nor an ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = int(moment.timestamp())
    if not 0 <= seconds <= _MAX_TTL:
        raise ProtocolError(None, f"{where}: ttl {text!r} is out of range")
    return seconds


def _permission_flags(raw: Any, where: str) -> dict[str, bool]:
    """``adminRead adminWrite publicRead publicWrite`` as ``0``/``1``, read from the right (a
    shorter string leaves the leftmost flags at their defaults); ``*`` means all."""
    names = ("admin_read", "admin_write", "public_read", "public_write")
    if raw == "*":
        return dict.fromkeys(names, True)
    if not isinstance(raw, str) or not 1 <= len(raw) <= 4 or set(raw) - {"0", "1"}:
        raise ProtocolError(
            None, f"{where}: permissions must be up to 4 characters of 0 and 1, got {raw!r}"
        )
    return {name: ch == "1" for name, ch in zip(names[4 - len(raw) :], raw, strict=True)}


def value_from_json(raw: Any, position: int) -> HandleValue:
    """One value of a PUT body. ``timestamp`` is left at 0: the service stamps every write."""
    where = f"value #{position + 1}"
    if not isinstance(raw, dict):
        raise ProtocolError(None, f"{where}: a handle value must be a JSON object")
    if "index" in raw and isinstance(raw["index"], int) and not isinstance(raw["index"], bool):
        where = f"value at index {raw['index']}"
    extra = set(raw) - _VALUE_FIELDS
    if extra:
        raise ProtocolError(None, f"{where}: unknown field(s) {', '.join(sorted(extra))}")
    for required in ("index", "type", "data"):
        if required not in raw:
            raise ProtocolError(None, f"{where}: missing {required!r}")
    index = _int_field(raw["index"], "index", where)
    if not 1 <= index <= MAX_INDEX:
        raise InvalidValue(None, f"{where}: indexes must be positive (1 to {MAX_INDEX})")
    type_ = raw["type"]
    if not isinstance(type_, str) or not type_:
        raise ProtocolError(None, f"{where}: type must be a non-empty string")
    if _BINARY_CHARS.search(type_) or "\t" in type_ or "\n" in type_ or "\r" in type_:
        raise ProtocolError(None, f"{where}: type must not contain control characters")
    data = data_from_json(raw["data"], where)
    ttl, ttl_type = DEFAULT_TTL, TTLType.RELATIVE
    if "ttl" in raw and raw["ttl"] is not None:
        if isinstance(raw["ttl"], str) and not raw["ttl"].strip().lstrip("-").isdigit():
            ttl, ttl_type = _parse_time(raw["ttl"], where), TTLType.ABSOLUTE
        else:
            ttl = _int_field(raw["ttl"], "ttl", where)
            if not 0 <= ttl <= _MAX_TTL:
                raise ProtocolError(None, f"{where}: ttl must be 0 to {_MAX_TTL} seconds")
    flags = {}
    if "permissions" in raw:
        flags = _permission_flags(raw["permissions"], where)
    references: tuple[ValueReference, ...] = ()
    if raw.get("references") is not None:
        if not isinstance(raw["references"], list):
            raise ProtocolError(None, f"{where}: references must be an array")
        references = tuple(_reference(r, where) for r in raw["references"])
    if (
        "timestamp" in raw
        and raw["timestamp"] is not None
        and not isinstance(raw["timestamp"], str | int)
    ):
        raise ProtocolError(None, f"{where}: timestamp must be a string")
    return HandleValue(
        index=index,
        type=type_,
        data=data,
        ttl=ttl,
        ttl_type=ttl_type,
        references=references,
        **flags,
    )


def values_from_body(body: Any, handle: str, *, same_handle: Any) -> list[HandleValue]:
    """The values of a PUT body: an array of values, ``{"values": [...]}`` (other properties
    ignored, but a ``handle`` that names another handle is refused) or a single value."""
    if isinstance(body, list):
        items = body
    elif isinstance(body, dict) and "values" in body:
        items = body["values"]
        if not isinstance(items, list):
            raise ProtocolError(handle, 'Invalid JSON in PUT request: "values" must be an array')
        named = body.get("handle")
        if named is not None and not same_handle(named):
            raise ProtocolError(handle, f"Mismatched handle in PUT request: {named!r}")
    elif isinstance(body, dict) and {"index", "type", "data"} <= body.keys():
        items = [body]
    else:
        raise ProtocolError(
            handle,
            "Invalid JSON in PUT request: expected an array of handle values, "
            '{"values": [...]}, or one handle value',
        )
    values = []
    for position, raw in enumerate(items):
        try:
            values.append(value_from_json(raw, position))
        except (ProtocolError, InvalidValue) as exc:
            exc.handle = handle
            raise
    return values
