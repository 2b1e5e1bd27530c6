"""Opening the configured store for a command, and what a command says when it cannot."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import storage
from storage import HandleStore, SchemaMismatch, StoreUnavailable

from ..config import Config

__all__ = ["store_failure", "where", "with_store"]


def with_store(
    config: Config, work: Callable[[HandleStore], Awaitable[int]], *, migrate: bool
) -> int:
    """Open the configured store, run ``work`` on it, close it; store failures become a
    message and an exit code."""

    async def run() -> int:
        store = await storage.open_store(
            config.storage.backend,
            path=config.storage.path,
            dsn=config.storage.dsn,
            migrate=migrate,
        )
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (SchemaMismatch, StoreUnavailable) as exc:
        return store_failure(exc)


def store_failure(exc: SchemaMismatch | StoreUnavailable) -> int:
    """The message and exit code of a store that cannot be used: 2 for a schema this server
    will not run on (the operator must act), 1 for one it cannot reach."""
    if isinstance(exc, StoreUnavailable):
        print(f"handle-server: {exc.message}", file=sys.stderr)
        return 1
    print(f"handle-server: {exc}", file=sys.stderr)
    return 2


def where(config: Config) -> str:
    if config.storage.backend == "sqlite":
        return config.storage.path
    return "the PostgreSQL database"
