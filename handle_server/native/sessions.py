"""The reference's native sessions: a Diffie-Hellman key exchange (OC 400), then requests that
carry a MAC under the session key (an ``HS_MAC`` credential). A session proves an identity by
one challenge-response inside it; its later requests need only their MAC.

Key exchange (``KEY_EXCHANGE_DH``, the mode the reference's clients use): the client sends its
DH public key (``DH_PUB_KEY``: y, p, g); the server answers with its own public key for the
same group, and both derive the key from the shared secret as Java's legacy DH key agreement
does: protocol 2.4 and later, the answer names the algorithm (AES here: the secret's first 32
bytes); before 2.4, DES (its first 8 bytes, with DES parity bits).

MAC (``AbstractMessage.signMessage(byte[])``): SHA-1 of key, header and body, key; from protocol
2.5 on, of the buffer the reference actually builds (``mac`` says how). A credential's session
counter is never accepted twice in one session, as the reference refuses it (the counter does
not reach the MAC, so this stops a plain replay, not a forged counter).

Sessions live in the store (tickets), as challenges do: the reference's client opens a new
connection for every request, which may reach any worker or node.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from storage import HandleStore

from ..auth.identities import Identity
from . import codec
from .codec import MessageError, Reader

__all__ = ["NativeSession", "NativeSessions", "SessionError"]

KEY_EXCHANGE_DH = 4
ENCRYPT_ALG_DES = 1
ENCRYPT_ALG_AES = 3
MAC = b"HS_MAC"
_DH_KIND = b"DH_PUB_KEY"
#: Counters remembered per session against replays (the newest ones).
_COUNTERS_KEPT = 512
#: Sessions held at once, at most (those that expire first make room).
MAX_SESSIONS = 10_000


class SessionError(Exception):
    """A session request this server cannot set up (RC 501) or a MAC it refuses."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True, slots=True)
class NativeSession:
    session_id: int
    key: bytes
    major: int
    minor: int
    identity: Identity | None = None
    counters: tuple[int, ...] = field(default=())

    def encode(self) -> bytes:
        handle = self.identity.handle.encode() if self.identity else b""
        index = self.identity.index if self.identity else -1
        return (
            struct.pack(">BBi", self.major, self.minor, index)
            + codec.string(self.key)
            + codec.string(handle)
            + struct.pack(">I", len(self.counters))
            + b"".join(struct.pack(">I", c) for c in self.counters)
        )

    @classmethod
    def decode(cls, session_id: int, data: bytes) -> NativeSession:
        major, minor, index = struct.unpack_from(">BBi", data)
        reader = Reader(data, 6)
        key, handle = reader.string(), reader.string().decode()
        counters = tuple(reader.int4() for _ in range(reader.int4()))
        identity = Identity(handle, index) if index >= 0 else None
        return cls(session_id, key, major, minor, identity, counters)


def _ticket(session_id: int) -> bytes:
    return b"native session " + struct.pack(">I", session_id)


def _java_int(n: int) -> bytes:
    return n.to_bytes(n.bit_length() // 8 + 1, "big")


def _des_parity(key: bytes) -> bytes:
    """DES keys carry odd parity in each byte's low bit (as Java's DESKey sets it)."""
    out = bytearray()
    for byte in key:
        high = byte & 0xFE
        out.append(high | ((bin(high).count("1") & 1) ^ 1))
    return bytes(out)


def derive_key(shared: int, p: int, algorithm: int) -> bytes:
    """The session key Java's ``KeyAgreement.generateSecret(alg)`` makes of the shared secret
    (the secret as bytes the length of ``p``)."""
    secret = shared.to_bytes((p.bit_length() + 7) // 8, "big")
    if algorithm == ENCRYPT_ALG_DES:
        return _des_parity(secret[:8])
    size = 32 if len(secret) >= 32 else 24 if len(secret) >= 24 else 16
    return secret[:size]


def mac(
    key: bytes,
    signed_part: bytes,
    *,
    major: int,
    minor: int,
    session_id: int,
    request_id: int,
    counter: int,
) -> bytes:
    """The SHA-1 MAC of a message's header and body under ``key``, byte for byte as the
    reference computes it. From protocol 2.5 on its buffer was meant to hold key, versions,
    session id, request id, counter, message, key; but each ``writeInt`` there returns 4 (the
    bytes written), not the next offset, so the ids land at offset 4 and the message and the
    closing key are written from offset 4 on, over them, leaving zeros at the end. Clients
    and servers of the reference all compute that, so this one does too."""
    if (major, minor) < (2, 5):
        return hashlib.sha1(key + signed_part + key).digest()
    k = len(key)
    buf = bytearray(2 * k + len(signed_part) + 2 + 3 * 4)
    buf[0:k] = key
    buf[k], buf[k + 1] = major, minor
    buf[k + 2 : k + 6] = struct.pack(">I", session_id)
    buf[4:8] = struct.pack(">I", request_id)
    buf[4:8] = struct.pack(">I", counter)
    buf[4 : 4 + len(signed_part)] = signed_part
    buf[4 + len(signed_part) : 4 + len(signed_part) + k] = key
    return hashlib.sha1(bytes(buf)).digest()


def mac_credential(counter: int, digest: bytes) -> bytes:
    """An ``HS_MAC`` credential section: version, reserved, flags, no signer, the counter,
    the type, then the hash code and the MAC."""
    section = codec.string(bytes([codec.HASH_SHA1])) + codec.string(digest)
    return (
        b"\x00\x00\x00\x00"
        + codec.string(b"")
        + struct.pack(">I", counter)
        + codec.string(MAC)
        + struct.pack(">I", len(section))
        + section
    )


def read_mac_credential(credential: bytes) -> tuple[int, int, bytes]:
    """(counter, hash code, MAC) of an ``HS_MAC`` credential; ``MessageError`` otherwise."""
    reader = Reader(credential, 4)
    reader.string()
    counter = reader.int4()
    if reader.string() != MAC:
        raise MessageError("not an HS_MAC credential")
    reader.int4()
    hash_code = reader.string()
    return counter, hash_code[0] if hash_code else 0, reader.string()


class NativeSessions:
    def __init__(
        self,
        store: HandleStore,
        *,
        lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.lifetime = lifetime
        self._clock = clock

    async def setup(self, body: bytes, major: int, minor: int) -> tuple[NativeSession, bytes]:
        """A new session from an OC 400 body; and the key-exchange data of the answer."""
        reader = Reader(body)
        mode = int.from_bytes(reader.take(2), "big")
        reader.int4()  # the timeout the client asks for: sessions here last ``lifetime``
        reader.string()  # the identity it means to prove; the challenge decides
        reader.int4()
        if mode != KEY_EXCHANGE_DH:
            raise SessionError(501, f"Key exchange mode {mode} is not served: use DH (4)")
        key_reader = Reader(reader.string())
        if key_reader.string() != _DH_KIND:
            raise SessionError(501, "The exchange key is not a DH public key")
        key_reader.take(2)
        y, p, g = (int.from_bytes(key_reader.string(), "big") for _ in range(3))
        if not (512 <= p.bit_length() <= 4096 and p % 2 == 1 and 1 < g < p - 1 and 1 < y < p - 1):
            raise SessionError(501, "Unusable DH parameters")
        x = secrets.randbelow(p - 3) + 2
        ours = pow(g, x, p)
        shared = pow(y, x, p)
        public = (
            codec.string(_DH_KIND)
            + b"\x00\x00"
            + b"".join(codec.string(_java_int(n)) for n in (ours, p, g))
        )
        if (major, minor) >= (2, 4):
            algorithm, data = ENCRYPT_ALG_AES, struct.pack(">I", ENCRYPT_ALG_AES) + public
        else:
            algorithm, data = ENCRYPT_ALG_DES, public
        session_id = secrets.randbits(31) or 1
        session = NativeSession(session_id, derive_key(shared, p, algorithm), major, minor)
        await self.save(session)
        return session, data

    async def get(self, session_id: int) -> NativeSession | None:
        data = await self._store.get_ticket(_ticket(session_id), now=self._clock())
        return NativeSession.decode(session_id, data) if data is not None else None

    async def save(self, session: NativeSession) -> None:
        now = self._clock()
        await self._store.put_ticket(
            _ticket(session.session_id),
            session.encode(),
            expires=now + self.lifetime,
            now=now,
            limit=MAX_SESSIONS,
        )

    async def end(self, session_id: int) -> bool:
        return await self._store.take_ticket(_ticket(session_id), now=self._clock()) is not None

    async def check_mac(
        self, session: NativeSession, envelope: codec.Envelope, request: codec.Message
    ) -> NativeSession:
        """``session`` with the request's counter remembered, if the request carries the
        session's MAC; ``SessionError`` (RC 404 missing, 502 wrong, 505 replayed) if not."""
        if not request.credential:
            raise SessionError(404, "Session request missing MAC code.")
        try:
            counter, _, given = read_mac_credential(request.credential)
        except MessageError:
            raise SessionError(502, "Session authentication failed.") from None
        expected = mac(
            session.key,
            request.signed_part,
            major=envelope.major,
            minor=envelope.minor,
            session_id=envelope.session_id,
            request_id=envelope.request_id,
            counter=counter,
        )
        if not hmac.compare_digest(expected, given):
            raise SessionError(502, "Session authentication failed.")
        if (envelope.major, envelope.minor) < (2, 5):
            return session  # no counter in the MAC: nothing to remember
        if counter in session.counters:
            raise SessionError(505, f"Duplicate session counter {counter}")
        kept = (*session.counters, counter)[-_COUNTERS_KEPT:]
        return replace(session, counters=kept)
