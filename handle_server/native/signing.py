"""The server's key pair and the signatures on its answers (public keys and signatures in the
Handle System's encodings: ``auth/pubkeys.py``).

The server's own key pair lives in ``[native] key_file`` as PKCS #8 PEM (RSA or DSA): it signs
the answers to ``certify`` requests, and its public half goes into this site's HS_SITE.
"""

from __future__ import annotations

import struct
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa

from ..auth.pubkeys import (
    PrivateKey,
    PublicKey,
    decode_public_key,
    encode_public_key,
    sign,
    verify,
)
from ..auth.secrets import write_private_file
from .codec import Message, MessageError, Reader

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
    "signed_by",
    "signed_credential",
    "verify",
]

#: What the reference's signed answers carry as their credential type.
SIGNED = b"HS_SIGNED"


class KeyFileError(Exception):
    """``[native] key_file`` is unreadable or holds no RSA or DSA private key."""


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


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


def signed_by(message: Message, public_key: bytes) -> bool:
    """Whether ``message`` (an answer, as received) carries an HS_SIGNED credential: a
    signature of its header and body made with the private half of ``public_key`` (a
    server's key as its HS_SITE holds it, in the Handle System's encoding)."""
    try:
        reader = Reader(message.credential)
        reader.take(4)  # version, reserved, flags
        reader.string()  # the signer: none, for a server's own signature
        reader.int4()
        if reader.string() != SIGNED:
            return False
        reader.int4()  # the length of what follows
        hash_name, signature = reader.string(), reader.string()
        key = decode_public_key(public_key)
    except (MessageError, ValueError):
        return False
    return verify(key, hash_name, signature, message.signed_part)


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
