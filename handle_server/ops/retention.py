"""What ``[history]`` keeps: the bounds as ``HandleStore.prune_history`` takes them, and the
server's pruning, every ``prune_every`` seconds while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from storage import HandleStore, StoreUnavailable

from ..config import HistoryConfig

__all__ = ["prune", "pruning"]

log = logging.getLogger("handle_server")
_DAY = 86_400


async def prune(
    store: HandleStore,
    *,
    keep_versions: int,
    keep_days: int,
    clock: Callable[[], float] = time.time,
) -> int:
    """Drop the versions ``keep_versions`` and ``keep_days`` (0: no bound) no longer keep;
    how many went."""
    return await store.prune_history(
        keep_versions=keep_versions or None,
        before=clock() - keep_days * _DAY if keep_days else None,
    )


@contextlib.asynccontextmanager
async def pruning(
    store: HandleStore, config: HistoryConfig, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[None]:
    """A context that prunes the history every ``config.prune_every`` seconds while the
    server runs, when ``config`` bounds it. Every process of a server prunes (the same
    versions: harmless); a failure is logged and tried again next time."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(config.prune_every)
            try:
                removed = await prune(
                    store,
                    keep_versions=config.keep_versions,
                    keep_days=config.keep_days,
                    clock=clock,
                )
            except StoreUnavailable as exc:
                log.warning("could not prune the history: %s", exc.message)
                continue
            if removed:
                log.info("pruned %d versions from the history ([history])", removed)

    task = asyncio.create_task(loop()) if config.bounded else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
