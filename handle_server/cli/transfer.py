"""``handle-server export`` and ``import``: a whole store to JSON Lines and back
(``storage.dump`` is the format).

Export streams one consistent snapshot in key order, a batch at a time, so memory stays flat
whatever the store's size; each record carries its history, and deleted handles their
tombstones, unless asked not to. Import reads a batch of lines, then stores it in one transaction;
a record already stored exactly so is recognised and skipped, so an import that was cut short
(or failed on a bad line, once that line is fixed) resumes by running it again.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from storage import Exported, HandleStore, ImportConflict, ImportResult
from storage.dump import DumpError, entry_from_line, entry_to_line, record_to_line

__all__ = ["ImportFailed", "ImportSummary", "export_store", "export_to_path", "import_file"]


class ImportFailed(Exception):
    """A line could not be imported; the batches before it are stored."""

    def __init__(self, message: str, summary: ImportSummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(slots=True)
class ImportSummary:
    lines: int = 0  # lines stored (or recognised as stored), counted from the top
    result: ImportResult = field(default_factory=ImportResult)


def _bar(**kwargs) -> tqdm:
    # disable=None: a bar on a terminal only, nothing in logs or pipes.
    return tqdm(file=sys.stderr, disable=None, dynamic_ncols=True, **kwargs)


async def export_store(
    store: HandleStore, out: BinaryIO, *, batch: int = 1000, history: bool = True
) -> int:
    """Write every record of ``store`` to ``out`` (with ``history``: with their histories,
    and the deleted handles' too); returns how many lines."""
    count = 0
    with _bar(unit=" handles", desc="export") as bar:
        if history:
            async for entries in store.iter_exported(batch=batch):
                out.write(b"".join(entry_to_line(e) for e in entries))
                count += len(entries)
                bar.update(len(entries))
        else:
            async for records in store.iter_records(batch=batch):
                out.write(b"".join(record_to_line(r) for r in records))
                count += len(records)
                bar.update(len(records))
    return count


async def export_to_path(
    store: HandleStore, path: Path, *, batch: int = 1000, history: bool = True
) -> int:
    """``export_store`` into ``path``, readable by its owner only (it holds the hashed
    secrets). The file appears complete or not at all: written aside, synced, then renamed."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            count = await export_store(store, out, batch=batch, history=history)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


async def import_file(
    store: HandleStore, path: Path, *, batch: int = 1000, replace: bool = False
) -> ImportSummary:
    """Store the records of the JSON Lines file at ``path``, ``batch`` lines per
    transaction. Raises ``ImportFailed`` naming the line it stopped at."""
    summary = ImportSummary()
    pending: list[Exported] = []
    pending_lines = 0  # lines (blank ones too) read since the last stored batch

    async def flush(last_line: int) -> None:
        nonlocal pending, pending_lines
        if pending:
            try:
                summary.result += await store.import_records(pending, replace=replace)
            except (ValueError, ImportConflict) as exc:  # a handle twice, or stored otherwise
                raise ImportFailed(
                    f"{path}: lines {summary.lines + 1}-{last_line}: {exc}", summary
                ) from None
        summary.lines += pending_lines
        pending, pending_lines = [], 0

    with (
        path.open("rb") as source,
        _bar(
            total=os.fstat(source.fileno()).st_size, unit="B", unit_scale=True, desc="import"
        ) as bar,
    ):
        number = 0
        for number, line in enumerate(source, start=1):
            bar.update(len(line))
            pending_lines += 1
            if not line.strip():
                continue
            try:
                pending.append(entry_from_line(line))
            except DumpError as exc:
                pending_lines -= 1  # this line is not stored
                await flush(number - 1)
                raise ImportFailed(f"{path}:{number}: {exc}", summary) from None
            if len(pending) >= batch:
                await flush(number)
        await flush(number)
    return summary
