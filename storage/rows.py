"""Rows of the SQL backends: how a ``HandleValue`` is laid out in ``handle_values`` (the same
columns in SQLite and PostgreSQL), the key range of a prefix, and the schema scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from .model import HandleValue, TTLType, ValueReference, handle_key

__all__ = ["VALUE_COLUMNS", "migrations", "prefix_bounds", "value_from_row", "value_row"]

VALUE_COLUMNS = "idx, type, data, ttl_type, ttl, timestamp, permissions, refs"


def migrations(backend: str) -> list[tuple[int, str]]:
    """The versioned schema scripts of ``backend``, ``schema/<backend>/NNN_name.sql``, in
    order."""
    folder = resources.files("storage") / "schema" / backend
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text("utf-8")))
    return sorted(found)


def value_from_row(row: Sequence[Any]) -> HandleValue:
    """A value from its ``VALUE_COLUMNS``, in that order."""
    idx, type_, data, ttl_type, ttl, timestamp, permissions, refs = row
    references = tuple(ValueReference(h, i) for h, i in json.loads(refs)) if refs else ()
    return HandleValue(
        index=idx,
        type=type_,
        data=bytes(data),
        ttl=ttl,
        ttl_type=TTLType(ttl_type),
        timestamp=timestamp,
        references=references,
        **HandleValue.flags_from_bits(permissions),
    )


def value_row(key: str, v: HandleValue) -> tuple:
    """The ``key`` and ``VALUE_COLUMNS`` of a value, in that order."""
    refs = json.dumps([[r.handle, r.index] for r in v.references]) if v.references else ""
    return (
        key,
        v.index,
        v.type,
        v.data,
        int(v.ttl_type),
        v.ttl,
        v.timestamp,
        v.permission_bits,
        refs,
    )


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """Keys of handles under ``prefix`` are exactly those in [``P/``, ``P0``), as ``0``
    follows ``/``."""
    p = handle_key(prefix)
    return p + "/", p + "0"
