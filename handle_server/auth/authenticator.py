"""Who is asking: authentication.

An identity is ``index:handle``: the HS_SECKEY value at that index of that
handle holds its secret (kept encrypted with the server key; see ``secrets.py``), so any handle
on this server can carry identities, created through the API like any other value. Two ways to
prove one:
- HTTP Basic, user name the percent-encoded identity, password the secret key;
- the ``Handle`` scheme in a session (``sessions.py``): a challenge-response once, then the
  session id alone.
Failures are counted per identity guessed from an address, and per address (``throttle.py``
and the throttling section below). Sessions and failure counts live in the store, shared by
every process and node on it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn
from urllib.parse import unquote

from storage import Handle, HandleStore, handle_key

from ..errors import AuthenticationFailed, TooManyFailures
from ..locks import KeyedLocks
from . import pubkeys
from .identities import PUBKEY_TYPE, SECKEY_TYPE, Identity, parse_identity
from .secrets import ITERATIONS, SecretKeeper, parse_hashed, verify_hashed
from .sessions import (
    KEY_DERIVATION_ALG,
    SIGNATURE_ALGS,
    HandleAuthorization,
    Session,
    SessionStore,
    b64decode,
    derived_signature,
    expected_signature,
    known_alg,
    parse_handle_authorization,
    same_alg,
)
from .throttle import FailureThrottle

__all__ = ["Authenticator"]

log = logging.getLogger(__name__)

#: Secret checks at once for one identity, and for one client address (a legacy hash or a
#: PBKDF2 proof costs a fraction of a second of CPU).
_HASHES_AT_ONCE = 2


class Authenticator:
    def __init__(
        self,
        store: HandleStore,
        keeper: SecretKeeper,
        *,
        throttle: FailureThrottle | None = None,
        sessions: SessionStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.keeper = keeper
        self.throttle = throttle or FailureThrottle(store, 0, 0, clock=clock)
        self.sessions = sessions or SessionStore(
            store, idle_timeout=1800, max_sessions=10_000, clock=clock
        )
        self._pending: Counter[str] = Counter()  # throttle key -> attempts being checked
        self._hashing = KeyedLocks(_HASHES_AT_ONCE)
        #: Told the handle of each record it writes (the service's cache forgets it).
        self.written: Callable[[str], None] = lambda handle: None
        #: Where an identity's record is read (the service gives ``KeptRecords.get``).
        self.read_record: Callable[[str], Awaitable[Handle | None]] = store.get
        # What an identity without a secret is checked against: as costly as a real one.
        self._no_secret = keeper.keep(os.urandom(16))

    # -- throttling ---------------------------------------------------------------------------
    #
    # Failures are counted per identity guessed from one client address, and per address for
    # requests that name no identity. A correct secret is refused only while its identity is
    # being guessed from the very address it comes from: nobody elsewhere (and nobody behind
    # the same reverse proxy, once [server] trusted_proxies names it) can lock an identity
    # out, and a flood of malformed headers from an address refuses only more of the same.

    @staticmethod
    def _keys(identity: Identity | None, client: str | None) -> list[str]:
        if identity is None:
            return [f"client {client}"] if client else []
        return [f"identity {identity.index}:{handle_key(identity.handle)} from {client or '-'}"]

    async def _check_throttle(
        self, identity: Identity | None, client: str | None, *, own: bool = False
    ) -> None:
        """``own``: the caller's attempt is among the pending ones, and is not counted."""
        keys = self._keys(identity, client)
        # The snapshot of the pending attempts is taken here, before the store's count is read.
        pending = {key: self._pending.get(key, 0) - own for key in keys}
        wait = await self.throttle.retry_after(keys, pending)
        if wait is not None:
            raise TooManyFailures(
                None,
                "Too many failed authentications"
                + (f" for {identity}" if identity is not None else "")
                + f"; try again in {max(1, round(wait))} s",
                retry_after=wait,
            )

    async def _fail(self, identity: Identity | None, client: str | None, message: str) -> NoReturn:
        keys = self._keys(identity, client)
        if identity is not None and client:
            keys.append(f"client {client}")  # an address that keeps failing is one to watch
        await self.throttle.failed(keys)
        raise AuthenticationFailed(None, message)

    async def _refuse(self, client: str | None, message: str) -> NoReturn:
        """Fail a request that names no identity: throttled first, so that a throttled
        client learns only that."""
        await self._check_throttle(None, client)
        await self._fail(None, client, message)

    @contextlib.asynccontextmanager
    async def _checking(self, identity: Identity, client: str | None) -> AsyncIterator[None]:
        """Around the slow check of a secret: the attempt counts as a failure of its key
        until it is decided, and at most ``_HASHES_AT_ONCE`` checks run at once for one
        identity and for one address, so no burst of guesses takes more CPU than that."""
        (key,) = self._keys(identity, client)
        async with self._hashing(f"identity {identity.key}"), self._hashing(f"from {client}"):
            # Counted as pending before the check's read of the store, not after it: two
            # checks running at once each see the other, so they cannot both pass on the
            # same last free attempt.
            self._pending[key] += 1
            try:
                await self._check_throttle(identity, client, own=True)  # others may have failed
                yield
            finally:
                self._pending[key] -= 1
                if not self._pending[key]:
                    del self._pending[key]

    # -- entry points ------------------------------------------------------------------------

    async def authenticate(self, header: str | None, *, client: str | None = None):
        """The identity an ``Authorization`` header proves, ``None`` without one (or for a
        session that has not proved one).

        Raises ``AuthenticationFailed`` for a malformed header, an unknown identity, a wrong
        secret or signature, or an unknown session (the message never says whether the
        identity exists), and ``TooManyFailures`` while the identity or client is throttled."""
        if header is None:
            return None
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() == "basic":
            return await self._basic(rest, client)
        if scheme.lower() == "handle":
            params = parse_handle_authorization(rest)
            if params is None:
                await self._refuse(client, "Malformed Authorization: Handle header")
            if params.session_id is None:
                await self._refuse(
                    client,
                    "Authorization: Handle needs a sessionId (open one with POST /api/sessions)",
                )
            session = await self.sessions.get(params.session_id)
            if session is None:
                await self._refuse(client, "Unknown or expired session")
            if params.authenticating:
                return await self.prove(session, params, client=client)
            return session.identity
        await self._refuse(
            client, f"Unsupported authorization scheme {scheme!r}: use Basic or Handle"
        )

    async def _basic(self, token: str, client: str | None) -> Identity:
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            await self._refuse(client, "Malformed Basic credentials")
        user, sep, secret = decoded.partition(b":")
        if not sep:
            await self._refuse(client, "Malformed Basic credentials")
        try:
            name = user.decode("utf-8")
        except UnicodeDecodeError:
            name = "\ufffd"  # refused below as no identity
        return await self.check_secret(name, secret, client=client)

    async def check_secret(self, user: str, secret: bytes, *, client: str | None) -> Identity:
        """The identity ``user`` (``index:handle``, percent-encoded or not) if ``secret`` is
        its secret key; raises as ``authenticate``. HTTP Basic comes through here, and so do
        credentials carried in a request body (the Onezone handle-proxy contract)."""
        try:
            identity = parse_identity(unquote(user, errors="strict"))
        except (UnicodeDecodeError, ValueError):
            await self._refuse(
                client, "The user name must be a percent-encoded identity index:handle"
            )
        # One look at the count: an authenticated request costs one store read.
        await self._check_throttle(identity, client)
        stored = await self.stored_secret(identity)
        async with self._checking(identity, client):
            if stored is not None and parse_hashed(stored) is not None:
                if await asyncio.to_thread(verify_hashed, secret, stored):
                    await self._rekeep(identity, stored, secret)
                    return identity
            # An identity without a secret costs what a wrong secret costs: the time of a
            # refusal does not tell which identities exist.
            elif self.keeper.matches(secret, stored or self._no_secret):
                return identity
            await self._fail(identity, client, f"Authentication failed for {identity}")

    async def check_proof(
        self,
        identity: Identity,
        kind: str,
        proves: Callable[[bytes], bool],
        *,
        client: str | None,
    ) -> Identity:
        """``identity`` if ``proves`` accepts its key: the value at its index must be of
        ``kind`` (``HS_SECKEY``: ``proves`` gets the secret; ``HS_PUBKEY``: the value's
        data). The native protocol's challenge-response comes through here, throttled as
        every other proof; raises as ``authenticate``."""
        await self._check_throttle(identity, client)
        record = await self.read_record(identity.handle)
        value = record.value_at(identity.index) if record else None
        material: bytes | None = None
        if value is not None and value.type.upper() == kind:
            material = value.data
            if kind == SECKEY_TYPE:
                # None for a secret an earlier version kept hashed: a native challenge needs
                # the secret itself, so it must be given once over HTTP first.
                material = self.keeper.reveal(material)
        async with self._checking(identity, client):
            # Without a key, a made-up one is checked: a refusal takes as long either way.
            if proves(material if material is not None else os.urandom(20)) and material:
                return identity
            await self._fail(identity, client, f"Authentication failed for {identity}")

    async def _rekeep(self, identity: Identity, legacy: bytes, secret: bytes) -> None:
        """A secret an earlier version stored hashed has just been given: keep it in today's
        form (unless the value changed meanwhile)."""
        kept = self.keeper.keep(secret)

        def change(before: Handle | None) -> Handle | None:
            value = before.value_at(identity.index) if before is not None else None
            if value is None or value.data != legacy:
                return before
            rekept = dataclasses.replace(value, data=kept)
            return Handle(before.handle, tuple(rekept if v is value else v for v in before.values))

        try:
            await self._store.update(identity.handle, change)
        finally:
            self.written(identity.handle)
        log.info("kept the secret of %s in the encrypted form", identity)

    async def prove(
        self, session: Session, params: HandleAuthorization, *, client: str | None
    ) -> Identity:
        """The identity a challenge-response in ``session`` proves (the caller decides what
        the session becomes: ``SessionStore.sign_in``)."""
        if params.version not in (None, "0"):
            await self._refuse(
                client, f"Unknown version {params.version!r} in Authorization: Handle"
            )
        missing = params.incomplete
        if missing:
            await self._refuse(client, f"Missing fields in authentication data: {missing}")
        try:
            identity = parse_identity(params.id or "")
        except ValueError as exc:
            await self._refuse(client, str(exc))
        await self._check_throttle(identity, client)
        kind = (params.type or "").upper()
        if kind == PUBKEY_TYPE:
            return await self._prove_public_key(session, params, identity, client)
        if kind != SECKEY_TYPE:
            await self._fail(
                identity, client, f"Unsupported type {params.type!r}: HS_SECKEY or HS_PUBKEY"
            )
        alg = params.alg or ""
        if not known_alg(alg):
            await self._fail(
                identity,
                client,
                f"Unsupported alg {alg!r}: this server verifies {', '.join(SIGNATURE_ALGS)}",
            )
        cnonce, signature = await self._cnonce_and_signature(params, identity, client)
        stored = await self.stored_secret(identity)
        async with self._checking(identity, client):
            expected = await self._expected(identity, alg, stored, session.nonce, cnonce)
            if expected is None or not hmac.compare_digest(expected, signature):
                await self._fail(identity, client, f"Authentication failed for {identity}")
        return identity

    async def _cnonce_and_signature(
        self, params: HandleAuthorization, identity: Identity, client: str | None
    ) -> tuple[bytes, bytes]:
        """The client's nonce and signature of a proof, decoded; a failure if malformed."""
        try:
            cnonce = b64decode(params.cnonce or "")
            signature = b64decode(params.signature or "")
        except ValueError:
            await self._fail(identity, client, "cnonce and signature must be base64")
        if not cnonce:
            await self._fail(identity, client, "cnonce must not be empty")
        return cnonce, signature

    async def _prove_public_key(
        self,
        session: Session,
        params: HandleAuthorization,
        identity: Identity,
        client: str | None,
    ) -> Identity:
        """``type="HS_PUBKEY"``: ``signature`` signs the server's nonce and the ``cnonce``
        with the private key of the identity's HS_PUBKEY, hashed with ``alg`` (SHA256,
        SHA1, ...)."""
        cnonce, signature = await self._cnonce_and_signature(params, identity, client)
        hash_name = (params.alg or "").encode("ascii", "replace")
        signed = session.nonce + cnonce

        def proves(key_data: bytes) -> bool:
            try:
                key = pubkeys.decode_public_key(key_data)
            except ValueError:
                return False
            return pubkeys.verify(key, hash_name, signature, signed)

        return await self.check_proof(identity, PUBKEY_TYPE, proves, client=client)

    async def _expected(
        self, identity: Identity, alg: str, stored: bytes | None, nonce: bytes, cnonce: bytes
    ) -> bytes | None:
        """The signature the holder of ``identity``'s secret sends, ``None`` if there is no
        secret to sign with (an unknown identity costs the same as a known one)."""
        legacy = parse_hashed(stored) if stored is not None else None
        secret = self.keeper.reveal(stored) if stored is not None else None
        if not same_alg(alg, KEY_DERIVATION_ALG):
            return expected_signature(alg, secret, nonce, cnonce) if secret is not None else None
        if legacy is not None:
            return derived_signature(legacy[2], nonce, cnonce)  # its digest is the key
        salt = self.sessions.made_up_salt(identity)
        key = await asyncio.to_thread(
            hashlib.pbkdf2_hmac, "sha256", secret or b"", salt, ITERATIONS
        )
        return derived_signature(key, nonce, cnonce) if secret is not None else None

    async def stored_secret(self, identity: Identity) -> bytes | None:
        record = await self.read_record(identity.handle)
        value = record.value_at(identity.index) if record else None
        if value is None or value.type.upper() != SECKEY_TYPE:
            return None
        return value.data
