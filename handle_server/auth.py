"""Who is asking (authentication) and what they may do (authorization).

Authentication: HTTP Basic with the user name the percent-encoded identity ``index:handle``
and the password its secret key. The secret is checked against the HS_SECKEY value stored at
that index of that handle (hashed; see ``seckey.py``), so any identity whose handle holds an
HS_SECKEY value can authenticate. A verified secret is remembered (keyed by the stored hash, so
a changed secret is checked afresh) to keep the slow hash off every request.

Authorization, as far as this version goes: the configured ``[[admins]]`` of a prefix may do
everything to every handle under it and to its prefix handle. HS_ADMIN and HS_VLIST checks slot
in behind ``Authorizer``; nothing else decides a permission.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from urllib.parse import unquote

from cachetools import LRUCache

from storage import HandleStore, ValueReference, handle_key

from .config import PREFIX_HANDLE_AUTHORITY, Config
from .errors import AuthenticationFailed, AuthenticationNeeded, InvalidAdmin
from .seckey import verify_secret

__all__ = ["Authenticator", "Authorizer", "Identity", "parse_identity"]

SECKEY_TYPE = "HS_SECKEY"


#: An identity is a reference to the value (an HS_SECKEY) that proves it: ``index:handle``.
Identity = ValueReference


def parse_identity(text: str) -> Identity:
    """``300:0.NA/TEST`` -> Identity. Raises ``ValueError``."""
    index, sep, handle = text.partition(":")
    if not sep or not index.isdigit() or not handle or "/" not in handle:
        raise ValueError(f"{text!r} is not an identity index:handle")
    value = int(index)
    if not 1 <= value <= 2**31 - 1:
        raise ValueError(f"{text!r} has an index out of range")
    return Identity(handle, value)


class Authenticator:
    def __init__(self, store: HandleStore, *, remembered: int = 10_000) -> None:
        self._store = store
        self._verified: LRUCache[tuple[tuple[int, str], bytes], bytes] = LRUCache(remembered)
        self._pepper = os.urandom(32)  # process-local: the cache holds no usable secret

    def _fingerprint(self, secret: bytes) -> bytes:
        return hmac.new(self._pepper, secret, hashlib.sha256).digest()

    def remember(self, identity: Identity, stored: bytes, secret: bytes) -> None:
        """Note that ``secret`` verifies against ``stored`` (start-up has just hashed it)."""
        self._verified[(identity.key, stored)] = self._fingerprint(secret)

    async def authenticate(self, header: str | None) -> Identity | None:
        """The identity an ``Authorization`` header proves, ``None`` without one.

        Raises ``AuthenticationFailed`` for a malformed header, an unknown identity or a wrong
        secret; the message never says which of the last two it was."""
        if header is None:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise AuthenticationFailed(
                None, f"Unsupported authorization scheme {scheme!r}: use HTTP Basic"
            )
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise AuthenticationFailed(None, "Malformed Basic credentials") from None
        user, sep, secret = decoded.partition(b":")
        if not sep:
            raise AuthenticationFailed(None, "Malformed Basic credentials")
        try:
            identity = parse_identity(unquote(user.decode("utf-8"), errors="strict"))
        except (UnicodeDecodeError, ValueError):
            raise AuthenticationFailed(
                None, "The Basic user name must be a percent-encoded identity index:handle"
            ) from None
        stored = await self._stored_secret(identity)
        if stored is not None:
            known = self._verified.get((identity.key, stored))
            if known is not None and hmac.compare_digest(known, self._fingerprint(secret)):
                return identity
            if await asyncio.to_thread(verify_secret, secret, stored):
                self.remember(identity, stored, secret)
                return identity
        raise AuthenticationFailed(None, f"Authentication failed for {identity}")

    async def _stored_secret(self, identity: Identity) -> bytes | None:
        record = await self._store.get(identity.handle)
        value = record.value_at(identity.index) if record else None
        if value is None or value.type.upper() != SECKEY_TYPE:
            return None
        return value.data


class Authorizer:
    """Decides what an identity may do. Today: the configured admins of a prefix may do
    everything under it (as a Handle.Net server's ``server_admins``)."""

    def __init__(self, config: Config) -> None:
        self._admins: dict[str, set[tuple[int, str]]] = {}
        for admin in config.admins:
            self._admins.setdefault(handle_key(admin.prefix), set()).add(
                (admin.index, handle_key(admin.handle))
            )

    @staticmethod
    def _administered_prefix(handle: str) -> str:
        """The prefix whose admins administer ``handle``: ``TEST`` for ``TEST/x`` and for the
        prefix handle ``0.NA/TEST``."""
        authority, _, rest = handle.partition("/")
        if handle_key(authority) == PREFIX_HANDLE_AUTHORITY:
            return handle_key(rest)
        return handle_key(authority)

    def is_admin(self, identity: Identity | None, handle: str) -> bool:
        if identity is None:
            return False
        return identity.key in self._admins.get(self._administered_prefix(handle), set())

    def require_admin(self, identity: Identity | None, handle: str) -> None:
        """Allow a write to ``handle``, or raise ``AuthenticationNeeded``/``InvalidAdmin``."""
        if identity is None:
            raise AuthenticationNeeded(handle, "Authentication needed")
        if not self.is_admin(identity, handle):
            raise InvalidAdmin(handle, f"{identity} is not an administrator of {handle}")

    def require_list(self, identity: Identity | None, prefix: str) -> None:
        """Allow listing the handles under ``prefix``."""
        if identity is None:
            raise AuthenticationNeeded(None, "Authentication needed to list handles")
        if identity.key not in self._admins.get(handle_key(prefix), set()):
            raise InvalidAdmin(None, f"{identity} may not list handles under {prefix}")
