"""Handle storage: the contract (``HandleStore``), the records, the errors and the backends.

This package never imports ``handle_server`` or ``aiohttp``."""

from __future__ import annotations

from .base import Change, ChangeListener, HandleStore
from .errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    SchemaMismatch,
    StoreUnavailable,
    ValueAlreadyExists,
    ValuesNotFound,
)
from .model import DEFAULT_TTL, Handle, HandleValue, TTLType, ValueReference, handle_key, prefix_of

__all__ = [
    "DEFAULT_TTL",
    "Change",
    "ChangeListener",
    "Handle",
    "HandleAlreadyExists",
    "HandleError",
    "HandleNotFound",
    "HandleStore",
    "HandleValue",
    "SchemaMismatch",
    "StoreUnavailable",
    "TTLType",
    "ValueAlreadyExists",
    "ValueReference",
    "ValuesNotFound",
    "handle_key",
    "open_store",
    "prefix_of",
]


async def open_store(backend: str, *, path: str = "", dsn: str = "") -> HandleStore:
    """Open the configured backend: ``sqlite`` (the file at ``path``) or ``postgresql`` (the
    database at ``dsn``), migrating its schema."""
    if backend == "sqlite":
        from .sqlite import SQLiteStore

        return await SQLiteStore.open(path)
    if backend == "postgresql":
        from .postgres import PostgresStore

        return await PostgresStore.open(dsn)
    raise ValueError(f"unknown storage backend {backend!r}")
