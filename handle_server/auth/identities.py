"""Identities: an identity is ``index:handle``, a reference to the HS_SECKEY value that proves
it (or an HS_PUBKEY, over the native protocol); HS_ADMIN values and HS_VLIST groups name
identities the same way."""

from __future__ import annotations

import re

from storage import ValueReference, handle_key

__all__ = ["PUBKEY_TYPE", "SECKEY_TYPE", "VLIST_TYPE", "Identity", "matches", "parse_identity"]

SECKEY_TYPE = "HS_SECKEY"
PUBKEY_TYPE = "HS_PUBKEY"
VLIST_TYPE = "HS_VLIST"
_CONTROL = re.compile("[\x00-\x1f\x7f]")
#: An identity is a reference to the value (an HS_SECKEY) that proves it: ``index:handle``.
Identity = ValueReference


def parse_identity(text: str) -> Identity:
    """``300:0.NA/TEST`` -> Identity. Raises ``ValueError``."""
    index, sep, handle = text.partition(":")
    if not sep or not index.isdigit() or not handle or "/" not in handle:
        raise ValueError(f"{text!r} is not an identity index:handle")
    if _CONTROL.search(handle):
        raise ValueError("An identity's handle holds no control characters")
    value = int(index)
    if not 1 <= value <= 2**31 - 1:
        raise ValueError(f"{text!r} has an index out of range")
    return Identity(handle, value)


def matches(reference: ValueReference, identity: Identity) -> bool:
    """Whether an admin or group entry names ``identity`` (index 0: any index)."""
    return (reference.index in (0, identity.index)) and handle_key(reference.handle) == handle_key(
        identity.handle
    )
