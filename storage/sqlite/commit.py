"""Group commit: updates that arrive while a transaction commits share the next one, so many
writes cost one fsync. Each runs in a savepoint of its own, so one that raises is rolled back
alone; each is answered only after the COMMIT that holds it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiosqlite

from ..base import Change
from ..errors import StoreUnavailable
from ..model import Handle

__all__ = ["GROUP_MAX", "GroupCommit"]

#: Updates one group-commit transaction takes at most.
GROUP_MAX = 256

Outcome = tuple[Handle | None, Handle | None]
#: Runs one update in a transaction: ``(before, after)`` and its change-log ``seq`` (or None).
Run = Callable[[aiosqlite.Connection, str, Change], Awaitable[tuple[Outcome, int | None]]]


@dataclass(slots=True)
class _Queued:
    key: str
    change: Change
    result: asyncio.Future[Outcome]


def _settle(
    future: asyncio.Future, *, value: object = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class GroupCommit:
    """Queues updates and commits them in groups on ``transaction`` (the store's write
    transaction), running each with ``run``; ``committed`` hears of every group stored, with
    the change-log numbers and the updates' keys and outcomes, before they are answered."""

    def __init__(
        self,
        transaction: Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]],
        run: Run,
        committed: Callable[[list[int], list[tuple[str, Outcome]]], None],
    ) -> None:
        self._transaction = transaction
        self._run = run
        self._committed = committed
        self._queued: list[_Queued] = []
        self._committer: asyncio.Task[None] | None = None

    async def submit(self, key: str, change: Change) -> Outcome:
        result = asyncio.get_running_loop().create_future()
        self._queued.append(_Queued(key, change, result))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_queued())
        # Shielded: a cancelled caller does not cancel the transaction the others share.
        return await asyncio.shield(result)

    async def _commit_queued(self) -> None:
        """Take every queued update into one transaction, commit, answer them; again while
        more came meanwhile."""
        while self._queued:
            batch, self._queued = self._queued[:GROUP_MAX], self._queued[GROUP_MAX:]
            done: list[tuple[_Queued, Outcome]] = []
            seqs: list[int] = []
            try:
                async with self._transaction() as db:
                    for queued in batch:
                        outcome = await self._one(db, queued)
                        if outcome is not None:
                            result, seq = outcome
                            done.append((queued, result))
                            if seq is not None:
                                seqs.append(seq)
            except BaseException as exc:  # nothing of the batch is stored
                failure = exc if isinstance(exc, Exception) else StoreUnavailable(repr(exc))
                for queued in batch:  # (those that failed alone keep their own exception)
                    _settle(queued.result, error=failure)
                if not isinstance(exc, Exception):
                    for queued in self._queued:
                        _settle(queued.result, error=failure)
                    self._queued = []
                    raise
                continue
            self._committed(seqs, [(queued.key, result) for queued, result in done])
            for queued, result in done:
                _settle(queued.result, value=result)

    async def _one(
        self, db: aiosqlite.Connection, queued: _Queued
    ) -> tuple[Outcome, int | None] | None:
        """One update in its savepoint: ``((before, after), seq)``, or ``None`` when it
        failed (its future then holds the exception and nothing of it remains)."""
        await db.execute("SAVEPOINT one_update")
        try:
            outcome = await self._run(db, queued.key, queued.change)
        except Exception as exc:
            await db.execute("ROLLBACK TO one_update")
            await db.execute("RELEASE one_update")
            if isinstance(exc, sqlite3.Error):
                exc = StoreUnavailable(f"SQLite write failed: {exc}")
            _settle(queued.result, error=exc)
            return None
        await db.execute("RELEASE one_update")
        return outcome
