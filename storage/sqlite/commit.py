"""Group commit: updates that arrive while a transaction commits share the next one, so many
writes cost one fsync. Each runs in a savepoint of its own, so one that raises is rolled back
alone; each is answered only after the COMMIT that holds it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..base import Change
from ..errors import StoreUnavailable
from ..model import Handle

__all__ = ["GROUP_MAX", "GroupCommit", "run_group"]

#: Updates one group-commit transaction takes at most.
GROUP_MAX = 256

Outcome = tuple[Handle | None, Handle | None]
#: Runs a group of updates ``(key, change)`` in one transaction and commits it: for each, its
#: ``(outcome, seq)`` (``seq``: its change-log number, or None when nothing changed) or the
#: exception that rolled back that update alone. Raises if the transaction as a whole failed
#: (nothing of the group is stored then).
Result = tuple[Outcome, int | None] | Exception
RunGroup = Callable[[list[tuple[str, Change]]], Awaitable[list[Result]]]


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
    """Queues updates and commits them in groups with ``run_group`` (the store's: the whole
    group in one transaction); ``committed`` hears of every group stored, with the change-log
    numbers and the updates' keys and outcomes, before they are answered."""

    def __init__(
        self,
        run_group: RunGroup,
        committed: Callable[[list[int], list[tuple[str, Outcome]]], None],
    ) -> None:
        self._run_group = run_group
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
            try:
                outcomes = await self._run_group([(q.key, q.change) for q in batch])
            except BaseException as exc:  # nothing of the batch is stored
                failure = exc if isinstance(exc, Exception) else StoreUnavailable(repr(exc))
                for queued in batch:
                    _settle(queued.result, error=failure)
                if not isinstance(exc, Exception):
                    for queued in self._queued:
                        _settle(queued.result, error=failure)
                    self._queued = []
                    raise
                continue
            done: list[tuple[_Queued, Outcome]] = []
            seqs: list[int] = []
            for queued, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):  # rolled back alone
                    _settle(queued.result, error=outcome)
                    continue
                result, seq = outcome
                done.append((queued, result))
                if seq is not None:
                    seqs.append(seq)
            self._committed(seqs, [(queued.key, result) for queued, result in done])
            for queued, result in done:
                _settle(queued.result, value=result)


def run_group(
    db: sqlite3.Connection,
    batch: list[tuple[str, Change]],
    run: Callable[[sqlite3.Connection, str, Change], tuple[Outcome, int | None]],
) -> list[Result]:
    """The group as one transaction on ``db`` (plain ``sqlite3``, in the thread that owns it):
    each update in a savepoint of its own, so one that raises is rolled back alone; then
    COMMIT. Raises (after a ROLLBACK) if the transaction as a whole fails."""
    db.execute("BEGIN IMMEDIATE")
    try:
        outcomes: list[Result] = []
        for key, change in batch:
            db.execute("SAVEPOINT one_update")
            try:
                outcome = run(db, key, change)
            except Exception as exc:
                db.execute("ROLLBACK TO one_update")
                db.execute("RELEASE one_update")
                if isinstance(exc, sqlite3.Error):
                    exc = StoreUnavailable(f"SQLite write failed: {exc}")
                outcomes.append(exc)
                continue
            db.execute("RELEASE one_update")
            outcomes.append(outcome)
        db.execute("COMMIT")
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the failure already ended the transaction
        raise
    return outcomes
