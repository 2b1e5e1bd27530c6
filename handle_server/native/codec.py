"""The Handle protocol's messages (RFC 3651/3652) as the CNRI reference encodes them: the
20-byte envelope, the 24-byte header, the bodies, and the credential.

A message on the wire is ``envelope || header || body || credential``, integers big-endian;
a byte string is a 4-byte length and the bytes. The envelope's ``length`` counts everything
after it. Only the pieces this server reads or writes are here; every decoder checks each
length against what is left and raises ``MessageError`` rather than read past the end.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from storage import HandleValue, TTLType, ValueReference

__all__ = [
    "ENVELOPE",
    "HEADER",
    "Envelope",
    "Message",
    "MessageError",
    "Reader",
    "ResolutionRequest",
    "challenge_body",
    "decode_envelope",
    "decode_handle_body",
    "decode_indexes_body",
    "decode_message",
    "decode_resolution_body",
    "decode_value",
    "decode_values_body",
    "encode_message",
    "encode_resolution_body",
    "encode_value",
    "error_body",
    "handles_body",
    "request_digest",
    "string",
]

# Operation codes (AbstractMessage.OC_*).
OC_RESOLUTION = 1
OC_GET_SITE_INFO = 2
OC_CREATE_HANDLE = 100
OC_DELETE_HANDLE = 101
OC_ADD_VALUE = 102
OC_REMOVE_VALUE = 103
OC_MODIFY_VALUE = 104
OC_LIST_HANDLES = 105
OC_RESPONSE_TO_CHALLENGE = 200
OC_SESSION_SETUP = 400
OC_SESSION_TERMINATE = 403
#: Operation names, for logs.
OPERATIONS = {
    OC_RESOLUTION: "resolution",
    OC_GET_SITE_INFO: "site-info",
    OC_CREATE_HANDLE: "create",
    OC_DELETE_HANDLE: "delete",
    OC_ADD_VALUE: "add-value",
    OC_REMOVE_VALUE: "remove-value",
    OC_MODIFY_VALUE: "modify-value",
    OC_LIST_HANDLES: "list-handles",
    OC_RESPONSE_TO_CHALLENGE: "challenge-answer",
    OC_SESSION_SETUP: "session-setup",
    OC_SESSION_TERMINATE: "session-end",
}
# Response codes (AbstractMessage.RC_*).
RC_SUCCESS = 1
RC_ERROR = 2
RC_SERVER_TOO_BUSY = 3
RC_PROTOCOL_ERROR = 4
RC_OPERATION_NOT_SUPPORTED = 5
RC_HANDLE_NOT_FOUND = 100
RC_INVALID_HANDLE = 102
RC_VALUES_NOT_FOUND = 200
RC_SERVER_NOT_RESP = 301
RC_SERVICE_REFERRAL = 302  # "ask these sites instead": a handle and, mostly, their HS_SITEs
RC_NA_DELEGATE = 303  # "a delegate holds this prefix": its HS_NA_DELEGATE / HS_SITE values
RC_AUTHENTICATION_NEEDED = 402
RC_INVALID_CREDENTIAL = 404
RC_AUTHEN_TIMEOUT = 405
RC_SESSION_TIMEOUT = 500
# Header opflags (Encoder.MSG_FLAG_*).
FLAG_AUTHORITATIVE = 0x80000000
FLAG_CERTIFY = 0x40000000
FLAG_ENCRYPT = 0x20000000
FLAG_RECURSIVE = 0x10000000
FLAG_CACHE_CERTIFY = 0x08000000
FLAG_CONTINUOUS = 0x04000000
FLAG_KEEP_ALIVE = 0x02000000
FLAG_PUBLIC_ONLY = 0x01000000
FLAG_REQUEST_DIGEST = 0x00800000
FLAG_OVERWRITE = 0x00400000
FLAG_MINT = 0x00200000  # create: mint a new suffix (the reference's v8 clients)
# Envelope flags (Encoder.ENV_FLAG_*, the first of its two flag bytes).
ENV_COMPRESSED = 0x80
ENV_ENCRYPTED = 0x40
ENV_TRUNCATED = 0x20
HASH_SHA1 = 2  # Common.HASH_CODE_SHA1

ENVELOPE = struct.Struct(">BBHIIII")  # major, minor, flags, session, request, sequence, length
HEADER = struct.Struct(">IIIHBBII")  # opcode, rc, opflags, serial, recursion, 0, expiry, body


class MessageError(ValueError):
    """Bytes that are not a message this server can read (answered with RC 4)."""


class Envelope(NamedTuple):
    """The 20 bytes before each message (a tuple: every datagram makes one)."""

    major: int
    minor: int
    flags: int = 0
    session_id: int = 0
    request_id: int = 0
    sequence: int = 0
    length: int = 0

    def encode(self) -> bytes:
        return ENVELOPE.pack(
            self.major,
            self.minor,
            self.flags,
            self.session_id,
            self.request_id,
            self.sequence,
            self.length,
        )


@dataclass(frozen=True, slots=True)
class Message:
    op_code: int
    response_code: int
    op_flags: int = 0
    site_serial: int = 0
    recursion: int = 0
    expiration: int = 0
    body: bytes = b""
    credential: bytes = b""
    #: ``header || body`` as received: what a request digest is taken over.
    signed_part: bytes = field(default=b"", compare=False)

    def flag(self, bit: int) -> bool:
        return bool(self.op_flags & bit)


def decode_envelope(data: bytes) -> Envelope:
    if len(data) < ENVELOPE.size:
        raise MessageError(f"an envelope is {ENVELOPE.size} bytes, got {len(data)}")
    return Envelope._make(ENVELOPE.unpack_from(data))


class Reader:
    """Reads a message's fields in order, never past the end."""

    def __init__(self, data: bytes, offset: int = 0, end: int | None = None) -> None:
        self.data, self.at = data, offset
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > self.end:
            raise MessageError("a length runs past the end of the message")
        piece = self.data[self.at : self.at + n]
        self.at += n
        return piece

    def int4(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def string(self) -> bytes:
        return self.take(self.int4())

    def int4_list(self, limit: int = 10_000) -> list[int]:
        count = self.int4()
        if count > limit:
            raise MessageError(f"a list of {count} items")
        return [self.int4() for _ in range(count)]

    def string_list(self, limit: int = 10_000) -> list[bytes]:
        count = self.int4()
        if count > limit:
            raise MessageError(f"a list of {count} items")
        return [self.string() for _ in range(count)]


def decode_message(data: bytes) -> Message:
    """``header || body || credential`` (what follows the envelope)."""
    if len(data) < HEADER.size:
        raise MessageError(f"a message header is {HEADER.size} bytes, got {len(data)}")
    op_code, rc, op_flags, serial, recursion, _, expiration, body_length = HEADER.unpack_from(data)
    reader = Reader(data, HEADER.size)
    body = reader.take(body_length)
    signed_part = data[: reader.at]
    credential = reader.string() if reader.at < len(data) else b""
    return Message(
        op_code, rc, op_flags, serial, recursion, expiration, body, credential, signed_part
    )


def encode_message(message: Message) -> bytes:
    header = HEADER.pack(
        message.op_code,
        message.response_code,
        message.op_flags,
        message.site_serial,
        message.recursion,
        0,
        message.expiration,
        len(message.body),
    )
    return header + message.body + struct.pack(">I", len(message.credential)) + message.credential


@dataclass(frozen=True, slots=True)
class ResolutionRequest:
    handle: bytes
    indexes: list[int]
    types: list[bytes]

    @classmethod
    def decode(cls, body: bytes) -> ResolutionRequest:
        reader = Reader(body)
        return cls(reader.string(), reader.int4_list(), reader.string_list())


def string(data: bytes) -> bytes:
    """A byte string on the wire: its length, then the bytes."""
    return struct.pack(">I", len(data)) + data


_string = string


def decode_values_body(body: bytes, limit: int = 10_000) -> tuple[bytes, list[HandleValue]]:
    """The handle and values of a create, add-value or modify-value request."""
    reader = Reader(body)
    handle = reader.string()
    count = reader.int4()
    if count > limit:
        raise MessageError(f"a list of {count} values")
    return handle, [decode_value(reader) for _ in range(count)]


def decode_indexes_body(body: bytes) -> tuple[bytes, list[int]]:
    """The handle and indexes of a remove-value request."""
    reader = Reader(body)
    return reader.string(), reader.int4_list()


def decode_handle_body(body: bytes) -> bytes:
    """The handle of a delete or list-handles request."""
    return Reader(body).string()


def challenge_body(nonce: bytes, digest_code: int, digest: bytes) -> bytes:
    """An RC 402 body: the request's digest (as the reference always sends it) and the
    nonce; protocol 2.0 had them the other way round, the digest as a byte string."""
    if digest_code == 0:
        return string(nonce) + string(digest)
    return bytes([digest_code]) + digest + string(nonce)


def handles_body(handles: Iterable[bytes], *, digest: bytes = b"") -> bytes:
    """A list-handles answer: the handles, each a byte string."""
    handles = list(handles)
    return digest + struct.pack(">I", len(handles)) + b"".join(string(h) for h in handles)


def encode_value(value: HandleValue) -> bytes:
    ttl_type = 1 if value.ttl_type == TTLType.ABSOLUTE else 0
    references = b"".join(
        _string(r.handle.encode("utf-8")) + struct.pack(">I", r.index) for r in value.references
    )
    return (
        struct.pack(
            ">IIBiB", value.index, value.timestamp, ttl_type, value.ttl, value.permission_bits
        )
        + _string(value.type.encode("utf-8", "surrogatepass"))
        + _string(value.data)
        + struct.pack(">I", len(value.references))
        + references
    )


def decode_value(reader: Reader) -> HandleValue:
    index, timestamp = reader.int4(), reader.int4()
    ttl_type = reader.take(1)[0]
    ttl = int.from_bytes(reader.take(4), "big", signed=True)
    permissions = reader.take(1)[0]
    value_type = reader.string().decode("utf-8", "surrogateescape")
    data = reader.string()
    references = tuple(
        ValueReference(reader.string().decode("utf-8"), reader.int4())
        for _ in range(min(reader.int4(), 10_000))
    )
    return HandleValue(
        index,
        value_type,
        data,
        ttl=ttl,
        ttl_type=TTLType.ABSOLUTE if ttl_type == 1 else TTLType.RELATIVE,
        timestamp=timestamp,
        references=references,
        **HandleValue.flags_from_bits(permissions),
    )


def decode_resolution_body(body: bytes, *, digest: bool = False) -> tuple[bytes, list[HandleValue]]:
    """The handle and values of a resolution answer (``digest``: the body starts with a
    request digest, skipped)."""
    reader = Reader(body)
    if digest:
        reader.take(1 + 20)
    handle = reader.string()
    count = reader.int4()
    if count > 100_000:
        raise MessageError(f"a list of {count} values")
    return handle, [decode_value(reader) for _ in range(count)]


def decode_referral_body(body: bytes, *, digest: bool = False) -> tuple[bytes, list[HandleValue]]:
    """The handle and values of a service referral or NA delegate answer (RC 302 / 303,
    ``ServiceReferralResponse``): as a resolution's, but the values may be left out."""
    reader = Reader(body)
    if digest:
        reader.take(1 + 20)
    handle = reader.string()
    if reader.at >= reader.end:
        return handle, []
    count = reader.int4()
    if count > 100_000:
        raise MessageError(f"a list of {count} values")
    return handle, [decode_value(reader) for _ in range(count)]


def request_digest(request: Message) -> bytes:
    """What a response carries when the request asked for a digest of itself: the hash code
    and the SHA-1 of the request's header and body, as received."""
    return bytes([HASH_SHA1]) + hashlib.sha1(request.signed_part).digest()


def encode_resolution_body(
    handle: bytes, values: Iterable[HandleValue], *, digest: bytes = b""
) -> bytes:
    encoded = [encode_value(v) for v in values]
    return digest + _string(handle) + struct.pack(">I", len(encoded)) + b"".join(encoded)


def error_body(message: str, *, digest: bytes = b"") -> bytes:
    """The body of an error response: the message, as a byte string."""
    return digest + _string(message.encode("utf-8"))
