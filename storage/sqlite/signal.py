"""The change signal of one SQLite file: how the processes serving it learn, without a system
call, that another one committed."""

from __future__ import annotations

import fcntl
import mmap
import os
import struct

__all__ = ["ChangeSignal"]

_SIGNAL = struct.Struct("<q")


class ChangeSignal:
    """A counter shared by every process that serves one SQLite file: the highest
    ``handle_changes.seq`` committed, kept in ``<file>-changes`` (8 bytes, memory-mapped). A
    writer raises it after each commit; a reader compares it with what it last saw, which costs
    no system call. It only says *that* something changed: what changed is read from the
    database."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(self._fd).st_size < _SIGNAL.size:
                os.ftruncate(self._fd, _SIGNAL.size)
            self._map = mmap.mmap(self._fd, _SIGNAL.size)
        except BaseException:
            os.close(self._fd)
            raise

    def value(self) -> int:
        return _SIGNAL.unpack_from(self._map)[0]

    def raise_to(self, seq: int, *, reset: bool = False) -> None:
        """Set the counter to ``seq`` if that is higher (any ``seq`` with ``reset``)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if reset or seq > self.value():
                _SIGNAL.pack_into(self._map, 0, seq)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
