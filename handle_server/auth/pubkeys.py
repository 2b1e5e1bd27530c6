"""Public keys and signatures as the Handle System encodes them: an HS_PUBKEY value, a site's
key in its HS_SITE, a signature over a challenge.

A public key is a byte string naming its kind, two reserved bytes, then its numbers as byte
strings, big-endian two's complement as Java writes them: ``DSA_PUB_KEY`` q, p, g, y;
``RSA_PUB_KEY`` e, n. A signature names its hash (``SHA1``, as the reference signs; ``MD5`` and
``SHA256`` are read too) beside the bytes of a ``SHA1withDSA`` (DER) or ``SHA1withRSA``
(PKCS #1 v1.5) signature.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa

__all__ = [
    "PrivateKey",
    "PublicKey",
    "decode_public_key",
    "encode_public_key",
    "sign",
    "verify",
]

PublicKey = rsa.RSAPublicKey | dsa.DSAPublicKey
PrivateKey = rsa.RSAPrivateKey | dsa.DSAPrivateKey

_DSA = b"DSA_PUB_KEY"
_RSA = b"RSA_PUB_KEY"
#: Hash names a signature may carry, and the hash each means.
_HASHES: dict[bytes, type[hashes.HashAlgorithm]] = {
    b"SHA1": hashes.SHA1,
    b"SHA-1": hashes.SHA1,
    b"MD5": hashes.MD5,
    b"SHA256": hashes.SHA256,
    b"SHA-256": hashes.SHA256,
}


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _java_int(n: int) -> bytes:
    """``BigInteger.toByteArray()`` of a non-negative ``n``: the fewest bytes with a sign bit."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big")


def encode_public_key(key: PublicKey) -> bytes:
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        parts = (numbers.e, numbers.n)
        kind = _RSA
    elif isinstance(key, dsa.DSAPublicKey):
        numbers = key.public_numbers()
        p = numbers.parameter_numbers
        parts = (p.q, p.p, p.g, numbers.y)
        kind = _DSA
    else:  # pragma: no cover - the types above are all this module makes or reads
        raise TypeError(f"not an RSA or DSA public key: {key!r}")
    return _string(kind) + b"\x00\x00" + b"".join(_string(_java_int(n)) for n in parts)


def decode_public_key(data: bytes) -> PublicKey:
    """The key of an HS_PUBKEY value; ``ValueError`` if it is not one this server reads."""
    at = 0

    def take(n: int) -> bytes:
        nonlocal at
        if n < 0 or at + n > len(data):
            raise ValueError("not a public key: a length runs past its end")
        at += n
        return data[at - n : at]

    def string() -> bytes:
        return take(int.from_bytes(take(4), "big"))

    kind = string()
    take(2)
    numbers = [int.from_bytes(string(), "big") for _ in range(4 if kind == _DSA else 2)]
    if kind == _RSA:
        e, n = numbers
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kind == _DSA:
        q, p, g, y = numbers
        return dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
    raise ValueError(f"unknown public key kind {kind[:40]!r}")


def _padding_and_hash(
    key: PublicKey | PrivateKey, hash_name: bytes
) -> tuple[padding.AsymmetricPadding | None, hashes.HashAlgorithm]:
    algorithm = _HASHES.get(hash_name.upper())
    if algorithm is None:
        raise ValueError(f"unknown hash {hash_name[:20]!r}")
    is_rsa = isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey)
    return (padding.PKCS1v15() if is_rsa else None), algorithm()


def verify(key: PublicKey, hash_name: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` (made with the hash ``hash_name``) signs ``data`` under ``key``."""
    try:
        pad, algorithm = _padding_and_hash(key, hash_name)
        if pad is not None:
            key.verify(signature, data, pad, algorithm)  # type: ignore[call-arg]
        else:
            key.verify(signature, data, algorithm)  # type: ignore[call-arg]
    except (InvalidSignature, ValueError):
        return False
    return True


def sign(key: PrivateKey, data: bytes) -> tuple[bytes, bytes]:
    """The hash name and signature of ``data``, SHA-1 as the reference signs (its clients
    verify ``SHA1with<key algorithm>``)."""
    pad, algorithm = _padding_and_hash(key, b"SHA1")
    if pad is not None:
        return b"SHA1", key.sign(data, pad, algorithm)  # type: ignore[call-arg]
    return b"SHA1", key.sign(data, algorithm)  # type: ignore[call-arg]
