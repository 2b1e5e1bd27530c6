"""Errors of the Handle domain, raised by the service and the stores. Each carries the handle
(and where it matters the indexes) it is about, so an error body can name them."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ChangeFailed",
    "HandleAlreadyExists",
    "HandleError",
    "HandleNotFound",
    "ImportConflict",
    "InvalidData",
    "SchemaMismatch",
    "SearchTimeout",
    "StoreUnavailable",
    "ValueAlreadyExists",
    "ValuesNotFound",
]


class HandleError(Exception):
    """Root of every error about a handle. ``message`` is meant for a person."""

    def __init__(self, handle: str | None, message: str) -> None:
        super().__init__(message)
        self.handle = handle
        self.message = message


class HandleNotFound(HandleError):
    def __init__(self, handle: str, message: str | None = None) -> None:
        super().__init__(handle, message or f"Handle {handle} not found")


class HandleAlreadyExists(HandleError):
    def __init__(self, handle: str) -> None:
        super().__init__(handle, f"Handle {handle} already exists")


class ValueAlreadyExists(HandleError):
    def __init__(self, handle: str, indexes: Iterable[int], message: str | None = None) -> None:
        self.indexes = tuple(sorted(indexes))
        listed = ", ".join(map(str, self.indexes))
        super().__init__(handle, message or f"Handle {handle} already has values at index {listed}")


class ValuesNotFound(HandleError):
    def __init__(self, handle: str, indexes: Iterable[int]) -> None:
        self.indexes = tuple(sorted(indexes))
        listed = ", ".join(map(str, self.indexes))
        super().__init__(handle, f"Handle {handle} has no values at index {listed}")


class ImportConflict(HandleError):
    """An imported record is stored already, with other content."""

    def __init__(self, handle: str) -> None:
        super().__init__(handle, f"Handle {handle} is stored already, with other values")


class InvalidData(HandleError):
    """The store cannot hold or compare what it was given (text with a NUL, a number out of
    its range): the caller's mistake, not the store's failure."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class StoreUnavailable(HandleError):
    """The store cannot be reached or answered with an I/O failure; the request may be retried."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class SearchTimeout(HandleError):
    """A reverse lookup ran longer than it was given; it was stopped, nothing else is
    affected."""

    def __init__(self, timeout: float) -> None:
        super().__init__(
            None,
            f"The search took longer than {timeout:g} s and was stopped: make its patterns "
            "longer or fewer",
        )


class ChangeFailed(Exception):
    """An atomic ``update_many`` stored nothing: its change at ``index`` raised ``error``
    (``StoreUnavailable`` when the store failed)."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"change {index} failed: {error}")
        self.index = index
        self.error = error


class SchemaMismatch(Exception):
    """The database holds a schema this version of the server does not know."""
