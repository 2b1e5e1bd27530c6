"""What an identity may do: authorization, as the reference server decides it
(``HandleServer.adminHasPermission`` and ``isAdminInGroup``). An identity holds permissions on a
record if one HS_ADMIN value of that record grants all of them and names the identity, or names
a group (an HS_VLIST value) that holds the identity, directly or through nested groups. A
reference with index 0 matches any index of its handle. The configured ``[[admins]]`` of a
prefix hold every permission on every handle under it and on its prefix handle, as the
reference's ``server_admins`` with ``server_admin_full_access``."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

from storage import PREFIX_HANDLE_AUTHORITY, Handle, HandleStore, ValueReference, handle_key

from ..config import Config
from ..encoding import AdminPermission, decode_admin, decode_vlist
from .identities import VLIST_TYPE, Identity, matches
from .permissions import is_admin_value

__all__ = ["Authorizer", "describe"]

log = logging.getLogger(__name__)


class Authorizer:
    """Decides whether an identity holds HS_ADMIN permissions on a record."""

    def __init__(self, store: HandleStore, config: Config, *, max_lookups: int = 256) -> None:
        self._store = store
        self._max_lookups = max_lookups
        #: Where a group's record is read (the service gives ``KeptRecords.get``).
        self.read_record: Callable[[str], Awaitable[Handle | None]] = store.get
        self._admins: dict[str, set[tuple[int, str]]] = {}
        for admin in config.admins:
            self._admins.setdefault(handle_key(admin.prefix), set()).add(
                (admin.index, handle_key(admin.handle))
            )

    @staticmethod
    def administered_prefix(handle: str) -> str:
        """The prefix whose admins administer ``handle``: ``TEST`` for ``TEST/x`` and for the
        prefix handle ``0.NA/TEST``."""
        authority, _, rest = handle.partition("/")
        if handle_key(authority) == PREFIX_HANDLE_AUTHORITY:
            return handle_key(rest)
        return handle_key(authority)

    def is_config_admin(self, identity: Identity | None, handle: str) -> bool:
        if identity is None:
            return False
        return identity.key in self._admins.get(self.administered_prefix(handle), set())

    async def holds(
        self,
        identity: Identity | None,
        handle: str,
        needed: AdminPermission,
        authority: Handle | None,
    ) -> bool:
        """Whether ``identity`` holds every permission in ``needed`` through the HS_ADMIN
        values of ``authority`` (the record itself, or the prefix handle for creating and
        listing), or as a configured admin of ``handle``'s prefix."""
        if identity is None:
            return False
        if self.is_config_admin(identity, handle):
            return True
        if not needed:
            return True
        groups: deque[ValueReference] = deque()
        for value in authority.values if authority is not None else ():
            if not is_admin_value(value):
                continue
            try:
                admin = decode_admin(value.data)
            except ValueError:
                log.warning("undecodable HS_ADMIN at %d:%s", value.index, authority.handle)
                continue
            if admin.permissions & needed != needed:
                continue
            reference = ValueReference(admin.handle, admin.index)
            if matches(reference, identity):
                return True
            groups.append(reference)
        return await self._in_groups(identity, groups)

    async def _in_groups(self, identity: Identity, queue: deque[ValueReference]) -> bool:
        """Breadth-first through HS_VLIST groups; each group is looked at once, so cycles
        end, and at most ``max_lookups`` groups are read for one decision."""
        seen: set[tuple[int, str]] = set()
        records: dict[str, Handle | None] = {}
        lookups = 0
        while queue:
            reference = queue.popleft()
            if reference.key in seen:
                continue
            seen.add(reference.key)
            if reference.index == 0:
                continue
            lookups += 1
            if lookups > self._max_lookups:
                log.warning(
                    "gave up on the admin groups of %s after %d lookups", identity, lookups - 1
                )
                return False
            name = handle_key(reference.handle)
            if name not in records:
                records[name] = await self.read_record(reference.handle)
            record = records[name]
            value = record.value_at(reference.index) if record is not None else None
            if value is None or value.type.upper() != VLIST_TYPE:
                continue
            try:
                members = decode_vlist(value.data)
            except ValueError:
                log.warning("undecodable HS_VLIST at %s", reference)
                continue
            for member in members:
                if matches(member, identity):
                    return True
                if member.key not in seen:
                    queue.append(member)
        return False


def describe(needed: AdminPermission) -> str:
    return ", ".join(p.name or "" for p in AdminPermission if p & needed)
