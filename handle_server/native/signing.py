"""Public keys and signatures as the reference encodes them.

A public key (an HS_PUBKEY value, a site's key in its HS_SITE) is a byte string naming its
kind, two reserved bytes, then its numbers as byte strings, big-endian two's complement as
Java writes them: ``DSA_PUB_KEY`` q, p, g, y; ``RSA_PUB_KEY`` e, n. A signature names its hash
(``SHA1``, as the reference signs; ``MD5`` and ``SHA256`` are read too) beside the bytes of a
``SHA1withDSA`` (DER) or ``SHA1withRSA`` (PKCS #1 v1.5) signature.

The server's own key pair lives in ``[native] key_file`` as PKCS #8 PEM (RSA or DSA): it signs
the answers to ``certify`` requests, and its public half goes into this site's HS_SITE.
"""

from __future__ import annotations

import struct
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa

from ..auth.secrets import write_private_file
from .codec import MessageError, Reader

__all__ = [
    "KeyFileError",
    "PrivateKey",
    "PublicKey",
    "decode_public_key",
    "encode_public_key",
    "load_or_make_key",
    "make_key_file",
    "read_key_file",
    "sign",
    "signed_credential",
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
#: What the reference's signed answers carry as their credential type.
SIGNED = b"HS_SIGNED"


class KeyFileError(Exception):
    """``[native] key_file`` is unreadable or holds no RSA or DSA private key."""


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
    reader = Reader(data)
    try:
        kind = reader.string()
        reader.take(2)
        numbers = [int.from_bytes(reader.string(), "big") for _ in range(4 if kind == _DSA else 2)]
    except MessageError as exc:
        raise ValueError(f"not a public key: {exc}") from None
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


def signed_credential(key: PrivateKey, data: bytes) -> bytes:
    """The credential section of a signed message whose header and body are ``data``:
    version, reserved, flags, signer (none), ``HS_SIGNED``, then the hash name and
    signature."""
    hash_name, signature = sign(key, data)
    section = _string(hash_name) + _string(signature)
    return (
        b"\x00\x00\x00\x00"
        + _string(b"")
        + struct.pack(">I", 0)
        + _string(SIGNED)
        + struct.pack(">I", len(section))
        + section
    )


# -- the key file ---------------------------------------------------------------------------------


def make_key_file(path: str | Path) -> None:
    """Write a new RSA-2048 private key to ``path`` (readable by its owner only), never over
    an existing file (``FileExistsError``); the file appears whole or not at all."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_file(path, pem)


def read_key_file(path: str | Path) -> PrivateKey:
    try:
        pem = Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: no such key file (make one: handle-server keygen --native)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey | dsa.DSAPrivateKey):
        raise KeyFileError(f"{path}: the key is neither RSA nor DSA (the Handle System's kinds)")
    return key


def load_or_make_key(path: str | Path) -> tuple[PrivateKey, bool]:
    """The key pair in ``path``, making the file first if there is none; and whether it was
    made now."""
    made = False
    if not Path(path).exists():
        try:
            make_key_file(path)
            made = True
        except FileExistsError:  # another worker made it meanwhile
            pass
    return read_key_file(path), made
