"""Group commit: updates that arrive while a transaction commits share the next one, so many
writes cost one fsync. Each unit (one update, or the changes of one ``update_many``) runs in a
savepoint of its own, so one that raises is rolled back alone; each is answered only after the
COMMIT that holds it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..base import Change, Outcome
from ..errors import ChangeFailed, StoreUnavailable

__all__ = ["GROUP_MAX", "GroupCommit", "run_group"]

#: Changes one group-commit transaction takes at most (a unit larger than this goes alone).
GROUP_MAX = 256

#: A unit of the group: changes ``(key, change)``, whether they stand or fall together, and
#: the identity that makes them (for the history).
Unit = tuple[list[tuple[str, Change]], bool, str | None]
#: Runs a group of units in one transaction and commits it: for each unit, its changes'
#: outcomes (an exception in place of a change rolled back alone) and the change-log numbers
#: of what changed; or the exception that rolled the unit back whole (``ChangeFailed``: one
#: of its changes, atomic; ``StoreUnavailable``: the store). Raises if the transaction as a
#: whole failed (nothing of the group is stored then).
Result = tuple[list[Outcome | Exception], list[int]] | Exception
#: One change (by an identity): ``((before, after), seq)``; ``seq`` its change-log number,
#: if it changed.
RunOne = Callable[[sqlite3.Connection, str, Change, str | None], tuple[Outcome, int | None]]
#: Many changes in order, as ``update_many`` says: their outcomes and change-log numbers.
RunMany = Callable[
    [sqlite3.Connection, list[tuple[str, Change]], bool, str | None],
    tuple[list[Outcome | Exception], list[int]],
]
RunGroup = Callable[[list[Unit]], Awaitable[list[Result]]]


@dataclass(slots=True)
class _Queued:
    changes: list[tuple[str, Change]]
    atomic: bool
    by: str | None
    result: asyncio.Future[list[Outcome | Exception]]


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
    """Queues units of changes and commits them in groups with ``run_group`` (the store's:
    the whole group in one transaction); ``committed`` hears of every group stored, with the
    change-log numbers and the changes' keys and outcomes, before they are answered."""

    def __init__(
        self,
        run_group: RunGroup,
        committed: Callable[[list[int], list[tuple[str, Outcome]]], None],
    ) -> None:
        self._run_group = run_group
        self._committed = committed
        self._queued: list[_Queued] = []
        self._committer: asyncio.Task[None] | None = None

    async def submit(
        self, changes: list[tuple[str, Change]], *, atomic: bool, by: str | None = None
    ) -> list[Outcome | Exception]:
        """The changes' outcomes once committed; ``ChangeFailed`` if ``atomic`` and one of
        them raised (nothing of them is stored then)."""
        result = asyncio.get_running_loop().create_future()
        self._queued.append(_Queued(changes, atomic, by, result))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_queued())
        # Shielded: a cancelled caller does not cancel the transaction the others share.
        return await asyncio.shield(result)

    def _take(self) -> list[_Queued]:
        """The next group: queued units up to ``GROUP_MAX`` changes (at least one unit)."""
        taken, size = 0, 0
        for queued in self._queued:
            if taken and size + len(queued.changes) > GROUP_MAX:
                break
            taken += 1
            size += len(queued.changes)
        batch, self._queued = self._queued[:taken], self._queued[taken:]
        return batch

    async def _commit_queued(self) -> None:
        """Take queued units into one transaction, commit, answer them; again while more came
        meanwhile."""
        while self._queued:
            batch = self._take()
            try:
                results = await self._run_group([(q.changes, q.atomic, q.by) for q in batch])
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
            answers: list[tuple[_Queued, list[Outcome | Exception]]] = []
            stored: list[tuple[str, Outcome]] = []
            seqs: list[int] = []
            for queued, result in zip(batch, results, strict=True):
                if isinstance(result, Exception):  # rolled back whole
                    _settle(queued.result, error=result)
                    continue
                outcomes, unit_seqs = result
                seqs.extend(unit_seqs)
                for (key, _), outcome in zip(queued.changes, outcomes, strict=True):
                    if not isinstance(outcome, Exception):
                        stored.append((key, outcome))
                answers.append((queued, outcomes))
            self._committed(seqs, stored)
            for queued, outcomes in answers:
                _settle(queued.result, value=outcomes)


def _translated(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error):
        return StoreUnavailable(f"SQLite write failed: {exc}")
    return exc


def run_group(
    db: sqlite3.Connection, batch: list[Unit], run_one: RunOne, run_many: RunMany
) -> list[Result]:
    """The group as one transaction on ``db`` (plain ``sqlite3``, in the thread that owns it):
    each unit in a savepoint, rolled back alone if it fails; then COMMIT. A unit of one
    change runs it with ``run_one``, a larger one all of them with ``run_many``. Raises
    (after a ROLLBACK) if the transaction as a whole fails."""
    db.execute("BEGIN IMMEDIATE")
    try:
        results: list[Result] = []
        for changes, atomic, by in batch:
            db.execute("SAVEPOINT unit")
            try:
                if len(changes) == 1:
                    (key, change), seq = changes[0], None
                    try:
                        outcome, seq = run_one(db, key, change, by)
                    except sqlite3.Error:
                        raise
                    except Exception as exc:
                        if atomic:
                            raise ChangeFailed(0, exc) from None
                        outcome = exc  # nothing written: nothing to roll back
                    result: Result = ([outcome], [seq] if seq is not None else [])
                else:
                    result = run_many(db, changes, atomic, by)
            except Exception as exc:
                db.execute("ROLLBACK TO unit")
                db.execute("RELEASE unit")
                results.append(exc if isinstance(exc, ChangeFailed) else _translated(exc))
                continue
            db.execute("RELEASE unit")
            results.append(result)
        db.execute("COMMIT")
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the failure already ended the transaction
        raise
    return results
