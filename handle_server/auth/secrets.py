"""HS_SECKEY secrets at rest: kept encrypted with a server key that lives outside the store.

The stored form is ASCII ``aes256gcm$<key id>$<base64 of nonce || ciphertext || tag>``: the
secret under AES-256-GCM with the key in ``[auth] key_file`` (32 random bytes, made by
``handle-server keygen`` or at the first start), the associated data naming the type. So:

- the store, an export or a backup alone authenticates no one: without the key file a stored
  form is noise, and it cannot be used as a MAC key either (a salted hash could: the sessions
  scheme signed with it);
- the server knows each secret, so it verifies the proofs reference clients compute from the
  secret itself (``sessions.expected_signatures``);
- only the server makes stored forms: whatever a client writes as an HS_SECKEY's data is a
  secret to be kept, never a stored form taken as it is.

Stores written before this kept secrets as ``pbkdf2-sha256$<iterations>$<salt>$<hash>``
(``LEGACY``): such a secret still verifies a Basic password (slowly), and the server keeps it in
the new form at its first successful use. All nodes on one store need the same key file; the
key id in each stored form tells which key kept it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "ITERATIONS",
    "KEEP_MARKERS",
    "REDACTED",
    "KeyFileError",
    "SecretKeeper",
    "parse_hashed",
    "verify_hashed",
]

_SCHEME = b"aes256gcm"
_AAD = b"handle-server HS_SECKEY"
_NONCE = 12
_KEY_FILE_HEADER = "handle-server secret key v1"

#: PBKDF2-HMAC-SHA256 iterations: of the legacy stored form, and of the session scheme's key
#: derivation (OWASP's 2023 figure).
ITERATIONS = 600_000
_LEGACY = b"pbkdf2-sha256"

#: What a read shows instead of an HS_SECKEY value's data. Written back unchanged (a client that
#: reads a record and writes it again), it keeps the stored secret; so does the text earlier
#: versions showed.
REDACTED = b"(secret key, kept encrypted; not shown)"
KEEP_MARKERS = frozenset({REDACTED, b"(secret key, stored hashed; not shown)"})


def write_private_file(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path``, readable by its owner only; never over an
    existing file (``FileExistsError``). The file appears whole or not at all: it is written
    beside and linked into place, so workers starting together never read half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, written = tempfile.mkstemp(dir=path.parent, prefix=".key-", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(written, path)
    finally:
        os.unlink(written)


class KeyFileError(Exception):
    """The key file is missing, unreadable or not one ``handle-server keygen`` makes."""


class SecretKeeper:
    """Encrypts and decrypts HS_SECKEY secrets with one server key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a server key is 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = hmac.new(key, b"key id", hashlib.sha256).hexdigest()[:8].encode()

    # -- the key file ------------------------------------------------------------------------

    @staticmethod
    def make_key_file(path: str | Path) -> None:
        """Write a new random key to ``path`` (readable by its owner only); never over an
        existing file (``FileExistsError``). The file appears whole or not at all: it is
        written beside and linked into place, so workers starting together never read half
        of one."""
        text = f"{_KEY_FILE_HEADER}\n{base64.b64encode(os.urandom(32)).decode()}\n"
        write_private_file(path, text.encode())

    @classmethod
    def from_key_file(cls, path: str | Path) -> SecretKeeper:
        try:
            lines = Path(path).read_text().split()
        except FileNotFoundError:
            raise KeyFileError(
                f"{path}: no such key file (make one: handle-server keygen)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{path}: cannot read the key file: {exc}") from None
        if len(lines) != 5 or " ".join(lines[:4]) != _KEY_FILE_HEADER:
            raise KeyFileError(f"{path}: not a handle-server key file")
        try:
            key = base64.b64decode(lines[4], validate=True)
        except binascii.Error:
            key = b""
        if len(key) != 32:
            raise KeyFileError(f"{path}: the key is not 32 bytes of base64")
        return cls(key)

    @classmethod
    def load_or_make(cls, path: str | Path) -> tuple[SecretKeeper, bool]:
        """The keeper of the key at ``path``, making the file first if there is none; and
        whether it was made now."""
        made = False
        if not Path(path).exists():
            try:
                cls.make_key_file(path)
                made = True
            except FileExistsError:  # another worker made it meanwhile
                pass
        return cls.from_key_file(path), made

    # -- secrets -----------------------------------------------------------------------------

    def keep(self, secret: bytes) -> bytes:
        """The stored form of ``secret``."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, secret, _AAD)
        return b"$".join([_SCHEME, self.key_id, base64.b64encode(nonce + sealed)])

    @staticmethod
    def kept_with(stored: bytes) -> bytes | None:
        """The id of the key that kept ``stored``, ``None`` if it is not a kept secret."""
        parts = stored.split(b"$")
        return parts[1] if len(parts) == 3 and parts[0] == _SCHEME else None

    def reveal(self, stored: bytes) -> bytes | None:
        """The secret ``stored`` keeps, or ``None`` if this key did not keep it (another key,
        a legacy hash, anything altered)."""
        parts = stored.split(b"$")
        if len(parts) != 3 or parts[0] != _SCHEME or parts[1] != self.key_id:
            return None
        try:
            raw = base64.b64decode(parts[2], validate=True)
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _AAD)
        except (binascii.Error, ValueError, InvalidTag):
            return None

    def matches(self, secret: bytes, stored: bytes) -> bool:
        """Whether ``secret`` is the one ``stored`` keeps (constant-time compare)."""
        kept = self.reveal(stored)
        return kept is not None and hmac.compare_digest(kept, secret)


# -- the legacy stored form --------------------------------------------------------------------


def parse_hashed(stored: bytes) -> tuple[int, bytes, bytes] | None:
    """``(iterations, salt, digest)`` of a legacy stored hash, or ``None``. Only the forms
    this server made are taken: at most ``ITERATIONS`` iterations (a planted hash of ten
    million would cost seconds per guess)."""
    parts = stored.split(b"$")
    if len(parts) != 4 or parts[0] != _LEGACY or not parts[1].isdigit():
        return None
    iterations = int(parts[1])
    if not 1 <= iterations <= ITERATIONS:
        return None
    try:
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return None
    if not salt or len(digest) != 32:
        return None
    return iterations, salt, digest


def verify_hashed(secret: bytes, stored: bytes) -> bool:
    """Constant-time check of ``secret`` against a legacy stored hash. Slow by design: run
    it off the event loop."""
    parsed = parse_hashed(stored)
    if parsed is None:
        return False
    iterations, salt, digest = parsed
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", secret, salt, iterations), digest)
