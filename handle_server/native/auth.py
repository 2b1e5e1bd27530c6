"""Who sends a native request: the reference's challenge-response (RFC 3652, 3.5).

A request that needs an identity is answered with a challenge (RC 402): a session id, a
random nonce and the digest of the request as received. The client answers (OC 200) in that
session with an identity and its proof, and the server then carries out the request it kept:
- ``HS_SECKEY``: a hash code byte (1 MD5, 2 SHA-1) and the hash of secret, nonce, digest,
  secret (protocol 2.0: the MD5 alone);
- ``HS_PUBKEY``: a hash name and the signature of nonce and digest with the identity's
  private key (``signing.py``).
The kept request lives in the store (a ticket), since the reference's client sends its answer
on a new connection, which may reach another worker or node; a ticket is taken once, so an
answer cannot be replayed. Proofs are checked by ``Authenticator.check_proof``, throttled as
every other proof.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from storage import HandleStore

from ..auth.authenticator import Authenticator
from ..auth.identities import PUBKEY_TYPE, SECKEY_TYPE, parse_identity
from ..errors import AuthenticationFailed
from . import codec, signing
from .codec import MessageError, Reader
from .rate import RateLimit

__all__ = ["Challenge", "ChallengeExpired", "Challenges", "InvalidCredential"]

NONCE_BYTES = 16  # Common.CHALLENGE_NONCE_SIZE
#: Challenges waiting for an answer, at most (the oldest make room).
MAX_PENDING = 4096
#: Challenges a second one client address may ask for.
CHALLENGE_RATE = 20
_HASHES = {1: hashlib.md5, 2: hashlib.sha1}
_TICKET = struct.Struct(">BBBI")


class InvalidCredential(AuthenticationFailed):
    """An answer of a kind this server does not verify (RC 404)."""


class ChallengeExpired(AuthenticationFailed):
    """An answer to no pending challenge: expired, answered already, or never made (RC
    405)."""


@dataclass(frozen=True, slots=True)
class Challenge:
    session_id: int
    nonce: bytes
    digest_code: int  # 2 SHA-1; 0 the old MD5 form of protocol 2.0
    digest: bytes
    request: bytes  # the message challenged (header, body, credential)
    major: int
    minor: int
    request_id: int = 0

    @property
    def old_format(self) -> bool:
        return (self.major, self.minor) < (2, 1)

    def encode(self) -> bytes:
        return (
            _TICKET.pack(self.major, self.minor, self.digest_code, self.request_id)
            + codec.string(self.nonce)
            + codec.string(self.digest)
            + self.request
        )

    @classmethod
    def decode(cls, session_id: int, data: bytes) -> Challenge:
        major, minor, code, request_id = _TICKET.unpack_from(data)
        reader = Reader(data, _TICKET.size)
        nonce, digest = reader.string(), reader.string()
        return cls(session_id, nonce, code, digest, data[reader.at :], major, minor, request_id)


def _ticket(session_id: int) -> bytes:
    return b"native challenge " + struct.pack(">I", session_id)


class Challenges:
    def __init__(
        self,
        store: HandleStore,
        authenticator: Authenticator,
        *,
        lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._authenticator = authenticator
        self.lifetime = lifetime
        self._clock = clock
        self.rate = RateLimit(CHALLENGE_RATE)

    async def make(self, envelope: codec.Envelope, request: codec.Message, raw: bytes) -> Challenge:
        """A challenge to ``request`` (``raw``: its bytes, which came in ``envelope``), kept
        for ``lifetime`` seconds; in the request's session, if it has one, else a new id."""
        major, minor = envelope.major, envelope.minor
        if (major, minor) < (2, 1):
            code, digest = 0, hashlib.md5(request.signed_part).digest()
        else:
            code, digest = codec.HASH_SHA1, hashlib.sha1(request.signed_part).digest()
        session_id = envelope.session_id or secrets.randbits(31) or 1
        challenge = Challenge(
            session_id,
            secrets.token_bytes(NONCE_BYTES),
            code,
            digest,
            raw,
            major,
            minor,
            envelope.request_id,
        )
        now = self._clock()
        await self._store.put_ticket(
            _ticket(session_id),
            challenge.encode(),
            expires=now + self.lifetime,
            now=now,
            limit=MAX_PENDING,
        )
        return challenge

    async def take(self, session_id: int) -> Challenge:
        """The challenge waiting in ``session_id``, no longer waiting; ``ChallengeExpired``
        if there is none."""
        data = await self._store.take_ticket(_ticket(session_id), now=self._clock())
        if data is None:
            raise ChallengeExpired(None, "No challenge is waiting in this session")
        return Challenge.decode(session_id, data)

    async def prove(self, challenge: Challenge, answer: bytes, *, client: str | None):
        """The identity ``answer`` (an OC 200 body) proves for ``challenge``; raises
        ``InvalidCredential``, ``AuthenticationFailed``, ``TooManyFailures`` or (a body that
        cannot be read) ``MessageError``."""
        reader = Reader(answer)
        kind = reader.string().decode("utf-8", "replace").upper()
        handle = reader.string().decode("utf-8", "replace")
        index = reader.int4()
        response = reader.string()
        try:
            identity = parse_identity(f"{index}:{handle}")
        except ValueError as exc:
            raise InvalidCredential(None, str(exc)) from None
        if kind not in (SECKEY_TYPE, PUBKEY_TYPE):
            raise InvalidCredential(None, f"Unsupported authentication type {kind[:40]}")
        check = _seckey_check if kind == SECKEY_TYPE else _pubkey_check
        return await self._authenticator.check_proof(
            identity,
            kind,
            lambda key: check(challenge, response, key),
            client=client,
        )


def _seckey_check(challenge: Challenge, response: bytes, secret: bytes) -> bool:
    code = response[0] if response else 0
    if challenge.old_format or code not in _HASHES:
        code, given = 1, response  # protocol 2.0, or a bare MD5 as its clients send
    else:
        given = response[1:]
    hashed = _HASHES[code](secret + challenge.nonce + challenge.digest + secret).digest()
    return hmac.compare_digest(hashed, given)


def _pubkey_check(challenge: Challenge, response: bytes, key_data: bytes) -> bool:
    try:
        reader = Reader(response)
        hash_name, signature = reader.string(), reader.string()
        key = signing.decode_public_key(key_data)
    except (MessageError, ValueError):
        return False
    return signing.verify(key, hash_name, signature, challenge.nonce + challenge.digest)
