"""Sessions of the Handle.Net REST API (``/api/sessions``) and the ``Handle`` authorization
scheme.

A client opens a session (``POST /api/sessions``) and gets a ``sessionId`` and a server
``nonce``. It proves an identity once, with a challenge-response over its secret key::

    Authorization: Handle version="0", sessionId="...", id="300:TEST/USER01",
        type="HS_SECKEY", alg="PBKDF2-HMAC-SHA256", cnonce="<b64>", signature="<b64>"

and from then on sends only ``Authorization: Handle sessionId="..."``.

The signature: this server stores secret keys hashed (``seckey.py``), so the MAC key is the
PBKDF2-HMAC-SHA256 key derived from the secret with the stored salt and iteration count, not
the secret itself (the reference server MACs with the plain secret, which it keeps). A client
asks for the salt and count by naming the identity (``id``) when it opens or looks at its
session; the answer carries ``keyDerivation``. Then::

    key       = PBKDF2-HMAC-SHA256(secret, salt, iterations, 32 bytes)
    signature = HMAC-SHA256(key, nonce || cnonce)

Sessions live in this process's memory: they end after ``[auth] session_idle_timeout`` seconds
unused, on ``DELETE /api/sessions/this``, or when the server restarts.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from cachetools import TTLCache

from storage import ValueReference

from .seckey import ITERATIONS, parse_hashed

__all__ = [
    "KEY_DERIVATION_ALG",
    "HandleAuthorization",
    "Session",
    "SessionStore",
    "expected_signature",
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

    def norm(s: str) -> str:
        return re.sub(r"[^A-Z0-9]", "", s.upper())

    return norm(given) == norm(wanted)


def expected_signature(stored: bytes, nonce: bytes, cnonce: bytes) -> bytes | None:
    """The signature a client holding the secret behind ``stored`` sends for this
    challenge; ``None`` if ``stored`` is not a hashed secret."""
    parsed = parse_hashed(stored)
    if parsed is None:
        return None
    _, _, key = parsed
    return hmac.new(key, nonce + cnonce, hashlib.sha256).digest()


@dataclass(slots=True)
class Session:
    id: str
    nonce: bytes
    identity: ValueReference | None = None


class SessionStore:
    """Open sessions, by id; each expires ``idle_timeout`` seconds after it was last used."""

    def __init__(
        self,
        *,
        idle_timeout: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions: TTLCache[str, Session] = TTLCache(
            maxsize=max(max_sessions, 1), ttl=max(idle_timeout, 1e-3), timer=clock
        )
        self._pepper = os.urandom(32)

    def open(self) -> Session:
        session = Session(secrets.token_urlsafe(24), os.urandom(32))
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is not None:
            self._sessions[session_id] = session  # used: its idle time starts again
        return session

    def close(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    def __len__(self) -> int:
        return len(self._sessions)

    def key_derivation(self, identity: ValueReference, stored: bytes | None) -> dict:
        """The salt and iteration count a client needs to sign as ``identity``. An identity
        without a hashed secret gets a made-up salt that stays the same for it, so the answer
        does not tell which identities exist."""
        parsed = parse_hashed(stored) if stored is not None else None
        if parsed is None:
            salt = hmac.new(self._pepper, str(identity).encode(), hashlib.sha256).digest()[:16]
            iterations = ITERATIONS
        else:
            iterations, salt, _ = parsed
        return {
            "alg": KEY_DERIVATION_ALG,
            "salt": base64.b64encode(salt).decode("ascii"),
            "iterations": iterations,
        }
