"""HS_SECKEY secrets at rest: stored as a salted PBKDF2-HMAC-SHA256 hash, never in plain.

The stored form is ASCII ``pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>``. The reference
server keeps HS_SECKEY data in plain (or as an unsalted SHA-1); this server hashes every secret
written to it, so a stolen database or a read of the value reveals no secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["REDACTED", "hash_secret", "is_hashed", "parse_hashed", "verify_secret"]

_SCHEME = b"pbkdf2-sha256"
ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
_MAX_ITERATIONS = 10_000_000

#: What a read shows instead of an HS_SECKEY value's data. Written back unchanged (a client that
#: reads a record and writes it again), it keeps the stored hash.
REDACTED = b"(secret key, stored hashed; not shown)"


def hash_secret(secret: bytes, *, iterations: int = ITERATIONS) -> bytes:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
    return b"$".join(
        [_SCHEME, str(iterations).encode(), base64.b64encode(salt), base64.b64encode(digest)]
    )


def parse_hashed(stored: bytes) -> tuple[int, bytes, bytes] | None:
    """``(iterations, salt, digest)`` of a stored hash, or ``None`` if ``stored`` is not one."""
    parts = stored.split(b"$")
    if len(parts) != 4 or parts[0] != _SCHEME or not parts[1].isdigit():
        return None
    iterations = int(parts[1])
    if not 1 <= iterations <= _MAX_ITERATIONS:
        return None
    try:
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return None
    if not salt or len(digest) != 32:
        return None
    return iterations, salt, digest


def is_hashed(data: bytes) -> bool:
    """Whether ``data`` is already in the stored form (a value read back and written again)."""
    return parse_hashed(data) is not None


def verify_secret(secret: bytes, stored: bytes) -> bool:
    """Constant-time check of ``secret`` against a stored hash. Anything that is not in the
    stored form never verifies. Slow by design: run it off the event loop."""
    parsed = parse_hashed(stored)
    if parsed is None:
        return False
    iterations, salt, digest = parsed
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", secret, salt, iterations), digest)
