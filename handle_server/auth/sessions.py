"""Sessions of the Handle.Net REST API (``/api/sessions``) and the ``Handle`` authorization
scheme.

A client opens a session (``POST /api/sessions``) and gets a ``sessionId`` and a server
``nonce``. It proves an identity once, with a challenge-response over its secret key::

    Authorization: Handle version="0", sessionId="...", id="300:TEST/USER01",
        type="HS_SECKEY", alg="PBKDF2-HMAC-SHA256", cnonce="<b64>", signature="<b64>"

and from then on sends only ``Authorization: Handle sessionId="..."``.

The signature is over the server's nonce and the client's cnonce, with the secret key, in any of
the ways the reference server verifies (``alg``; ``expected_signature``):

- ``HMAC-SHA256`` or ``HMAC-SHA1``: ``HMAC(secret, nonce || cnonce)``;
- ``SHA256`` or ``SHA1``: ``H(secret || nonce || cnonce || secret)`` (MD5 is refused);
- ``PBKDF2-HMAC-SHA256`` (this server's own, kept for its earlier clients):
  ``HMAC-SHA256(PBKDF2-HMAC-SHA256(secret, salt, iterations), nonce || cnonce)``, where a
  client learns the salt and iteration count by naming the identity (``id``) when it opens or
  looks at its session: the answer carries ``keyDerivation``.

Sessions are shared by every process and node on one store, so a client may send each request
to any of them. A session id is signed: random bytes and the time the session was opened, with
an HMAC of both under a key the store keeps for all nodes (``HandleStore.shared_secret``), and
its nonce is derived from the id under that key too. Opening a session therefore stores nothing,
and any node can check an id and recompute its nonce. The store keeps the sessions that proved
an identity, by a digest of their id (the id, a bearer credential, is not stored), and the ones
that were closed, until they would have expired anyway.

A session that has not proved an identity ends ``[auth] session_idle_timeout`` seconds after it
was opened; one that has, that long after it was last used (the expiry moves on at most once a
minute, so a busy session is not a write per request). ``DELETE /api/sessions/this`` ends a
session at once; a restart ends none. At most ``[auth] max_sessions`` proved or closed sessions
are kept: beyond that the closed ones and then those that would expire first are dropped; and at
most ``max_sessions_per_identity`` hold one identity, so no identity can crowd out the others.

Proving an identity through ``/api/sessions`` gives a new session id (in the answer's
``sessionId``) and closes the old one: an id handed to a victim beforehand is worth nothing to
whoever handed it. A proof in the ``Authorization`` header of any other request authenticates
that request only.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from storage import HandleStore, SessionRecord, ValueReference

from .secrets import ITERATIONS, parse_hashed

__all__ = [
    "KEY_DERIVATION_ALG",
    "SIGNATURE_ALGS",
    "HandleAuthorization",
    "Session",
    "SessionStore",
    "derived_signature",
    "expected_signature",
    "known_alg",
    "parse_handle_authorization",
]

KEY_DERIVATION_ALG = "PBKDF2-HMAC-SHA256"

_TOKEN = r"[-A-Za-z0-9!#$%&'*+.`^_|~]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*(,|$)", re.DOTALL)
_FIELDS = (
    "version",
    "sessionid",
    "id",
    "type",
    "alg",
    "cnonce",
    "signature",
    "salt",
    "iterations",
)


@dataclass(frozen=True, slots=True)
class HandleAuthorization:
    """The parameters of an ``Authorization: Handle ...`` header (or of a sessions request's
    JSON body), names case-insensitive as the reference parses them."""

    version: str | None = None
    session_id: str | None = None
    id: str | None = None
    type: str | None = None
    alg: str | None = None
    cnonce: str | None = None
    signature: str | None = None

    @property
    def authenticating(self) -> bool:
        """Whether the parameters try to prove an identity (``id`` alone only asks for its
        key derivation)."""
        return any(x is not None for x in (self.type, self.alg, self.signature))

    @property
    def incomplete(self) -> str | None:
        missing = [
            name
            for name, value in (
                ("id", self.id),
                ("type", self.type),
                ("alg", self.alg),
                ("cnonce", self.cnonce),
                ("signature", self.signature),
            )
            if value is None
        ]
        return ", ".join(missing) if missing else None

    def filled_from(self, other: HandleAuthorization) -> HandleAuthorization:
        """These parameters, with the ones they lack taken from ``other``."""
        return HandleAuthorization(
            *(
                getattr(self, f.name)
                if getattr(self, f.name) is not None
                else getattr(other, f.name)
                for f in dataclasses.fields(self)
            )
        )

    @classmethod
    def from_mapping(cls, fields: dict[str, str]) -> HandleAuthorization:
        lowered = {k.lower(): v for k, v in fields.items() if k.lower() in _FIELDS}
        return cls(
            version=lowered.get("version"),
            session_id=lowered.get("sessionid"),
            id=lowered.get("id"),
            type=lowered.get("type"),
            alg=lowered.get("alg"),
            cnonce=lowered.get("cnonce"),
            signature=lowered.get("signature"),
        )


def parse_handle_authorization(params: str) -> HandleAuthorization | None:
    """The parameters after ``Handle `` in an Authorization header; ``None`` if malformed.
    ``id`` is percent-decoded, as the reference does."""
    fields: dict[str, str] = {}
    pos = 0
    text = params.strip()
    if not text:
        return None
    while pos < len(text):
        match = _PARAM.match(text, pos)
        if match is None:
            return None
        name, raw = match.group(1), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if name.lower() == "id":
            raw = unquote(raw)
        fields[name] = raw
        pos = match.end()
        if match.group(3) == "" and pos < len(text):
            return None
    return HandleAuthorization.from_mapping(fields)


def b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional. Raises ``ValueError``."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def same_alg(given: str, wanted: str) -> bool:
    """Algorithm names compare ignoring case and punctuation (``pbkdf2_hmac_sha256``)."""
    return _norm(given) == _norm(wanted)


#: ``alg`` names (compared with ``same_alg``) -> how the expected signature is made.
_DIGESTS = {"SHA256": "sha256", "SHA2": "sha256", "SHA1": "sha1", "SHA": "sha1"}
_MACS = {"HMACSHA256": "sha256", "HMACSHA1": "sha1"}
SIGNATURE_ALGS = ("HMAC-SHA256", "HMAC-SHA1", "SHA256", "SHA1", KEY_DERIVATION_ALG)


def _norm(alg: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", alg.upper())


def expected_signature(alg: str, secret: bytes, nonce: bytes, cnonce: bytes) -> bytes | None:
    """The signature a client holding ``secret`` sends for this challenge with ``alg`` (one
    of the reference's: ``HMAC-SHA256``, ``HMAC-SHA1``, ``SHA256``, ``SHA1``); ``None`` for
    another ``alg``. ``PBKDF2-HMAC-SHA256`` is ``derived_signature``."""
    name = _norm(alg)
    if name in _MACS:
        return hmac.new(secret, nonce + cnonce, _MACS[name]).digest()
    if name in _DIGESTS:
        return hashlib.new(_DIGESTS[name], secret + nonce + cnonce + secret).digest()
    return None


def known_alg(alg: str) -> bool:
    """Whether a proof may use ``alg`` (any spelling of ``SIGNATURE_ALGS``: ``sha-1``, ...)."""
    return _norm(alg) in _MACS or _norm(alg) in _DIGESTS or same_alg(alg, KEY_DERIVATION_ALG)


def derived_signature(key: bytes, nonce: bytes, cnonce: bytes) -> bytes:
    """``PBKDF2-HMAC-SHA256``'s signature, from the key the derivation gave."""
    return hmac.new(key, nonce + cnonce, hashlib.sha256).digest()


#: A session id: 16 random bytes and the time it was opened, then the first 16 bytes of their
#: HMAC-SHA256; in URL-safe base64 without padding.
_ID_BODY = struct.Struct(">16sd")
_ID_TAG = 16
_ID_LENGTH = _ID_BODY.size + _ID_TAG


@dataclass(slots=True)
class Session:
    id: str
    nonce: bytes
    opened: float
    identity: ValueReference | None = None

    @property
    def key(self) -> bytes:
        """What the store knows the session by."""
        return hashlib.sha256(self.id.encode("ascii")).digest()


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, purpose, hashlib.sha256).digest()


class SessionStore:
    """The sessions of every node on ``store`` (see the module's docstring). ``start`` must
    have run before the first session is opened."""

    def __init__(
        self,
        store: HandleStore,
        *,
        idle_timeout: float,
        max_sessions: int,
        max_per_identity: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.idle_timeout = max(idle_timeout, 1e-3)
        self.max_sessions = max(max_sessions, 1)
        self.max_per_identity = max(max_per_identity, 1)
        self._renew_after = min(60.0, self.idle_timeout / 10)
        self._clock = clock
        self._id_key = self._nonce_key = self._salt_key = b""

    async def start(self) -> None:
        """Fetch the key every node signs with (made now by the first node to start)."""
        secret = await self._store.shared_secret("sessions", os.urandom(32))
        self._id_key = _derive(secret, b"session id")
        self._nonce_key = _derive(secret, b"session nonce")
        self._salt_key = _derive(secret, b"made-up salt")

    def _tag(self, body: bytes) -> bytes:
        if not self._id_key:
            raise RuntimeError("SessionStore.start has not run")
        return hmac.new(self._id_key, body, hashlib.sha256).digest()[:_ID_TAG]

    def _session(self, token: bytes, opened: float) -> Session:
        session_id = base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")
        nonce = hmac.new(self._nonce_key, token, hashlib.sha256).digest()
        return Session(session_id, nonce, opened)

    def open(self) -> Session:
        """A new session: nothing is stored until it proves an identity."""
        opened = self._clock()
        body = _ID_BODY.pack(os.urandom(16), opened)
        return self._session(body + self._tag(body), opened)

    def _parse(self, session_id: str) -> Session | None:
        """The session ``session_id`` names, if this server's nodes signed it."""
        if len(session_id) > 2 * _ID_LENGTH:
            return None
        try:
            token = b64decode(session_id)
        except ValueError:
            return None
        if len(token) != _ID_LENGTH:
            return None
        body, tag = token[: _ID_BODY.size], token[_ID_BODY.size :]
        if not hmac.compare_digest(tag, self._tag(body)):
            return None
        _, opened = _ID_BODY.unpack(body)
        return self._session(token, opened)

    async def get(self, session_id: str, *, renew: bool = True) -> Session | None:
        """The open session ``session_id``, with the identity it proved; ``None`` if the id is
        not one of ours, or the session expired or was closed. Using a session that proved an
        identity moves its expiry on (unless not ``renew``)."""
        session = self._parse(session_id)
        if session is None:
            return None
        now = self._clock()
        record = await self._store.get_session(session.key, now=now)
        if record is None:
            # Never proved anything (or its record expired, which is later than this).
            return session if now < session.opened + self.idle_timeout else None
        if record.identity is None:
            return None  # closed
        session.identity = record.identity
        if renew and record.expires < now + self.idle_timeout - self._renew_after:
            await self._store.renew_session(session.key, expires=now + self.idle_timeout)
        return session

    async def sign_in(
        self, session: Session, identity: ValueReference, *, known_before: bool = True
    ) -> Session | None:
        """``session`` proved ``identity``: the session that holds it from now on, on every
        node. One whose id was ``known_before`` the proof (perhaps to someone else) is closed
        and a new one holds the identity instead: the old id is worth nothing after the
        proof. ``None`` if ``session`` was closed meanwhile. At most
        ``max_sessions_per_identity`` sessions hold one identity: its oldest go."""
        now = self._clock()
        fresh = session
        if known_before:
            closed = SessionRecord(session.key, None, now + self.idle_timeout)
            if not await self._store.put_session(closed, now=now, limit=self.max_sessions):
                return None
            fresh = self.open()
        record = SessionRecord(fresh.key, identity, now + self.idle_timeout)
        await self._store.put_session(
            record, now=now, limit=self.max_sessions, per_identity=self.max_per_identity
        )
        fresh.identity = identity
        return fresh

    async def close(self, session_id: str) -> bool:
        """End the session ``session_id``; ``False`` if it was not open."""
        session = await self.get(session_id, renew=False)  # its record is rewritten below
        if session is None:
            return False
        # Kept as closed until the id would have expired unused: after that it is refused
        # anyway.
        closed = SessionRecord(session.key, None, session.opened + self.idle_timeout)
        await self._store.put_session(closed, now=self._clock(), limit=self.max_sessions)
        return True

    def key_derivation(self, identity: ValueReference, stored: bytes | None) -> dict:
        """The salt and iteration count a client needs to sign as ``identity`` with
        ``PBKDF2-HMAC-SHA256``: those of a legacy stored hash, else a salt made up for the
        identity that stays the same for it on every node (so the answer does not tell which
        identities exist, nor how their secrets are kept)."""
        parsed = parse_hashed(stored) if stored is not None else None
        if parsed is None:
            salt, iterations = self.made_up_salt(identity), ITERATIONS
        else:
            iterations, salt, _ = parsed
        return {
            "alg": KEY_DERIVATION_ALG,
            "salt": base64.b64encode(salt).decode("ascii"),
            "iterations": iterations,
        }

    def made_up_salt(self, identity: ValueReference) -> bytes:
        return hmac.new(self._salt_key, str(identity).encode(), hashlib.sha256).digest()[:16]
