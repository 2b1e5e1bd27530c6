"""Which HS_ADMIN permissions a write needs, decided as the reference server decides them.

Pure functions of the record as stored and the values a request brings; ``service.py`` asks
them what a change needs and ``auth.Authorizer`` whether the caller holds it. A ``Needs`` is a
conjunction: every bit of ``permissions`` must be granted by one HS_ADMIN value (as the
reference's ``adminHasPermission``), and the values in ``read_only`` (admin write off) may not
be changed by anyone.

The reference's rules (``HandleServer.doAddValue``, ``doCreateHandle``, ``doRemoveValue``):
- a new value needs ADD_VALUE, a new HS_ADMIN value ADD_ADMIN;
- a changed value needs MODIFY_VALUE (none if the stored value has public write), a changed
  HS_ADMIN MODIFY_ADMIN; turning an HS_ADMIN into another type needs REMOVE_ADMIN and
  MODIFY_VALUE, the reverse MODIFY_VALUE and ADD_ADMIN;
- a removed value needs REMOVE_VALUE, a removed HS_ADMIN REMOVE_ADMIN;
- a value sent again unchanged (all but its timestamp) needs nothing and keeps its timestamp.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from storage import Handle, HandleValue

from ..encoding import AdminPermission

__all__ = [
    "ADMIN_TYPE",
    "NONE",
    "Needs",
    "is_admin_value",
    "merge_added",
    "needs_to_remove",
    "needs_to_replace",
]

ADMIN_TYPE = "HS_ADMIN"
P = AdminPermission
NONE = P(0)


def is_admin_value(value: HandleValue) -> bool:
    return value.type.upper() == ADMIN_TYPE


@dataclass(frozen=True, slots=True)
class Needs:
    permissions: AdminPermission = NONE
    #: indexes of stored values with admin write off that the change would alter
    read_only: tuple[int, ...] = ()

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.permissions | other.permissions, self.read_only + other.read_only)


def _added(value: HandleValue) -> Needs:
    return Needs(P.ADD_ADMIN if is_admin_value(value) else P.ADD_VALUE)


def _removed(value: HandleValue) -> Needs:
    return Needs(P.REMOVE_ADMIN if is_admin_value(value) else P.REMOVE_VALUE)


def _changed(old: HandleValue, new: HandleValue) -> Needs:
    was, becomes = is_admin_value(old), is_admin_value(new)
    if was and becomes:
        perms = P.MODIFY_ADMIN
    elif was:
        perms = P.REMOVE_ADMIN | P.MODIFY_VALUE
    elif becomes:
        perms = P.MODIFY_VALUE | P.ADD_ADMIN
    else:
        perms = NONE if old.public_write else P.MODIFY_VALUE
    return Needs(perms, () if old.admin_write else (old.index,))


def _compare(stored: Handle, new: Iterable[HandleValue]) -> tuple[Needs, list[HandleValue]]:
    """What writing ``new`` over ``stored`` needs (additions and changes only), and the values
    to store for them (unchanged ones keep their stored timestamp)."""
    needs = Needs()
    result = []
    for value in new:
        old = stored.value_at(value.index)
        if old is None:
            needs |= _added(value)
            result.append(value)
        elif old.same_content(value):
            result.append(old)
        else:
            needs |= _changed(old, value)
            result.append(value)
    return needs, result


def merge_added(stored: Handle, new: Sequence[HandleValue]) -> tuple[Handle, Needs]:
    """``PUT ?index=``: ``new`` added to (or replacing values of) ``stored``."""
    needs, written = _compare(stored, new)
    merged = {v.index: v for v in stored.values}
    merged.update((v.index, v) for v in written)
    return Handle(stored.handle, tuple(merged.values())), needs


def needs_to_replace(stored: Handle, new: Sequence[HandleValue]) -> tuple[Handle, Needs]:
    """``PUT`` over an existing handle: its record becomes exactly ``new``."""
    needs, written = _compare(stored, new)
    kept = {v.index for v in new}
    for old in stored.values:
        if old.index not in kept:
            needs |= _removed(old)
    return Handle(stored.handle, tuple(written)), needs


def needs_to_remove(stored: Handle, indexes: Collection[int]) -> Needs:
    needs = Needs()
    for value in stored.values:
        if value.index in indexes:
            needs |= _removed(value)
    return needs
