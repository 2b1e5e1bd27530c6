"""Handle storage: the contract (``HandleStore``), the records, the errors and the backends.

This package never imports ``handle_server`` or ``aiohttp``."""

from __future__ import annotations

from .base import (
    OPERATIONS,
    Change,
    ChangeListener,
    Exported,
    HandleStore,
    ImportResult,
    Outcome,
    SessionRecord,
    Version,
)
from .errors import (
    ChangeFailed,
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    ImportConflict,
    InvalidData,
    SchemaMismatch,
    SearchTimeout,
    StoreUnavailable,
    ValueAlreadyExists,
    ValuesNotFound,
)
from .model import (
    DEFAULT_TTL,
    PREFIX_HANDLE_AUTHORITY,
    Handle,
    HandleValue,
    TTLType,
    ValueReference,
    handle_key,
    prefix_of,
)

__all__ = [
    "DEFAULT_TTL",
    "OPERATIONS",
    "PREFIX_HANDLE_AUTHORITY",
    "Change",
    "ChangeFailed",
    "ChangeListener",
    "Exported",
    "Handle",
    "HandleAlreadyExists",
    "HandleError",
    "HandleNotFound",
    "HandleStore",
    "HandleValue",
    "ImportConflict",
    "ImportResult",
    "InvalidData",
    "Outcome",
    "SchemaMismatch",
    "SearchTimeout",
    "SessionRecord",
    "StoreUnavailable",
    "TTLType",
    "ValueAlreadyExists",
    "ValueReference",
    "ValuesNotFound",
    "Version",
    "handle_key",
    "open_store",
    "prefix_of",
    "schema_version",
]


async def open_store(
    backend: str, *, path: str = "", dsn: str = "", migrate: bool = False
) -> HandleStore:
    """Open the configured backend: ``sqlite`` (the file at ``path``) or ``postgresql`` (the
    database at ``dsn``). An empty database is given the schema; an older schema is brought
    up to date only with ``migrate`` (else ``SchemaMismatch``), a newer one is refused."""
    if backend == "sqlite":
        from .sqlite import SQLiteStore

        return await SQLiteStore.open(path, migrate=migrate)
    if backend == "postgresql":
        from .postgres import PostgresStore

        return await PostgresStore.open(dsn, migrate=migrate)
    raise ValueError(f"unknown storage backend {backend!r}")


def schema_version(backend: str) -> int:
    """The schema version this code brings ``backend`` to."""
    from .rows import latest_version

    return latest_version(backend)
