"""Rows of the SQL backends: how a ``HandleValue`` is laid out in ``handle_values`` (the same
columns in SQLite and PostgreSQL), the key range of a prefix, the schema scripts, and the
statements on the shared authentication state, which both backends run as they are."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .base import Change, Exported, ImportResult, Outcome, SessionRecord, Version
from .errors import ChangeFailed, ImportConflict
from .model import Handle, HandleValue, TTLType, ValueReference, handle_key, prefix_of
from .packed import pack_record, unpack_record

__all__ = [
    "PRUNE_HISTORY_SQL",
    "SEARCH_COLUMNS",
    "SEARCH_EXCLUDED",
    "SEARCH_MIN_RUN",
    "VALUE_COLUMNS",
    "VERSION_COLUMNS",
    "AuthSQL",
    "Fetch",
    "ImportPlan",
    "RecordDiff",
    "by_key",
    "changed_by_key",
    "diff_records",
    "export_bound",
    "exported_batches",
    "exported_entries",
    "latest_version",
    "migrations",
    "numbered",
    "operation_of",
    "plan_import",
    "prefix_bounds",
    "pruned_in_steps",
    "records_from_rows",
    "run_changes",
    "search_pattern_problem",
    "search_query",
    "search_rows",
    "session_from_row",
    "session_row",
    "value_from_row",
    "value_row",
    "version_from_row",
    "version_row",
    "version_rows",
]

VALUE_COLUMNS = "idx, type, data, ttl_type, ttl, timestamp, permissions, refs"


def migrations(backend: str) -> list[tuple[int, str]]:
    """The versioned schema scripts of ``backend``, ``schema/<backend>/NNN_name.sql``, in
    order."""
    folder = resources.files("storage") / "schema" / backend
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text("utf-8")))
    return sorted(found)


def latest_version(backend: str) -> int:
    """The schema version ``backend``'s migrations bring a database to."""
    return migrations(backend)[-1][0]


def value_from_row(row: Sequence[Any]) -> HandleValue:
    """A value from its ``VALUE_COLUMNS``, in that order."""
    idx, type_, data, ttl_type, ttl, timestamp, permissions, refs = row
    references = tuple(ValueReference(h, i) for h, i in json.loads(refs)) if refs else ()
    return HandleValue(
        index=idx,
        type=type_,
        data=bytes(data),
        ttl=ttl,
        ttl_type=TTLType(ttl_type),
        timestamp=timestamp,
        references=references,
        **HandleValue.flags_from_bits(permissions),
    )


def value_row(key: str, v: HandleValue) -> tuple:
    """The ``key`` and ``VALUE_COLUMNS`` of a value, in that order."""
    refs = json.dumps([[r.handle, r.index] for r in v.references]) if v.references else ""
    return (
        key,
        v.index,
        v.type,
        v.data,
        int(v.ttl_type),
        v.ttl,
        v.timestamp,
        v.permission_bits,
        refs,
    )


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """Keys of handles under ``prefix`` are exactly those in [``P/``, ``P0``), as ``0``
    follows ``/``."""
    p = handle_key(prefix)
    return p + "/", p + "0"


def records_from_rows(
    names: Iterable[Sequence[Any]], value_rows: Iterable[Sequence[Any]]
) -> dict[str, Handle]:
    """Records from ``(key, handle)`` rows and ``(key, *VALUE_COLUMNS)`` rows, by key."""
    values: dict[str, list[HandleValue]] = {}
    for row in value_rows:
        values.setdefault(row[0], []).append(value_from_row(tuple(row)[1:]))
    return {key: Handle(name, tuple(values.get(key, ()))) for key, name in names}


def by_key(records: Iterable[Handle | Exported]) -> dict[str, Exported]:
    """``records`` by ``handle_key``, each as an ``Exported`` (a plain record: no history
    carried); a handle given twice is a ``ValueError``."""
    keyed: dict[str, Exported] = {}
    for record in records:
        entry = Exported(record.handle, record) if isinstance(record, Handle) else record
        if entry.key in keyed:
            raise ValueError(f"handle {entry.handle} is given twice")
        if entry.record is not None and entry.record.key != entry.key:
            raise ValueError(f"the record of {entry.handle} is {entry.record.handle}'s")
        keyed[entry.key] = entry
    return keyed


# -- update_many: the changes run in memory, the difference written at once ------------------


def run_changes(
    initial: Mapping[str, Handle | None], keyed: Sequence[tuple[str, Change]], *, atomic: bool
) -> tuple[dict[str, Handle | None], set[str], list[Outcome | Exception]]:
    """Run ``keyed`` (key, change) in order on the records ``initial`` holds: the records
    after them, the keys deleted and made again (they take the new record's name), and each
    change's outcome, or its exception (``atomic``: ``ChangeFailed`` is raised instead)."""
    state = dict(initial)
    renamed: set[str] = set()
    outcomes: list[Outcome | Exception] = []
    for i, (key, change) in enumerate(keyed):
        before = state[key]
        try:
            after = change(before)
            if after is not None and handle_key(after.handle) != key:
                raise ValueError(f"a change of {key!r} returned a record for {after.handle!r}")
        except Exception as exc:  # the change's own: it changed nothing
            if atomic:
                raise ChangeFailed(i, exc) from None
            outcomes.append(exc)
            continue
        if before is None and after is not None and initial[key] is not None:
            renamed.add(key)
        state[key] = after
        outcomes.append((before, after))
    return state, renamed, outcomes


@dataclass(slots=True)
class RecordDiff:
    """What storing some records in place of others writes."""

    #: Keys whose record changed (the other processes and nodes are told of them).
    touched: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: (key, name) of new handles.
    created: list[tuple[str, str]] = field(default_factory=list)
    #: (name, key) of handles deleted and made again under another spelling.
    renamed: list[tuple[str, str]] = field(default_factory=list)
    #: (key, index) of stored values removed or rewritten.
    gone: list[tuple[str, int]] = field(default_factory=list)
    #: (key, value) of values to store.
    written: list[tuple[str, HandleValue]] = field(default_factory=list)
    #: Prefix key -> change in its count of handles.
    deltas: dict[str, int] = field(default_factory=dict)


def diff_records(
    initial: Mapping[str, Handle | None], final: Mapping[str, Handle | None], renamed: set[str]
) -> RecordDiff:
    """The writes that turn ``initial`` into ``final`` (records by key); values that did not
    change are not rewritten."""
    diff = RecordDiff()
    for key, old in initial.items():
        new = final[key]
        if old == new and key not in renamed:
            continue
        diff.touched.append(key)
        prefix = handle_key(prefix_of(key))
        if new is None:
            diff.deleted.append(key)
            diff.deltas[prefix] = diff.deltas.get(prefix, 0) - 1
            continue
        if old is None:
            diff.created.append((key, new.handle))
            diff.deltas[prefix] = diff.deltas.get(prefix, 0) + 1
            diff.written += [(key, v) for v in new.values]
            continue
        if key in renamed:
            diff.renamed.append((new.handle, key))
        stored = {v.index: v for v in old.values}
        diff.gone += [(key, i) for i in sorted(stored.keys() - new.indexes)]
        for value in new.values:
            if stored.get(value.index) != value:
                diff.written.append((key, value))
                if value.index in stored:
                    diff.gone.append((key, value.index))
    return diff


# -- history -----------------------------------------------------------------------------------

#: The columns of a version, after its key.
VERSION_COLUMNS = "version, at, by, operation, record"


def operation_of(before: Handle | None, after: Handle | None) -> str:
    """What a change did, for its version: ``create``, ``delete``, or, to an existing record,
    ``add`` / ``remove`` / ``modify`` when it only added, removed or changed values, else
    ``replace``."""
    if before is None:
        return "create"
    if after is None:
        return "delete"
    old = {v.index: v for v in before.values}
    new = {v.index: v for v in after.values}
    added = new.keys() - old.keys()
    removed = old.keys() - new.keys()
    modified = any(old[i] != new[i] for i in old.keys() & new.keys())
    if added and not removed and not modified:
        return "add"
    if removed and not added and not modified:
        return "remove"
    if modified and not added and not removed:
        return "modify"
    return "replace"


def changed_by_key(
    keyed: Sequence[tuple[str, Change]], outcomes: Sequence[Outcome | Exception]
) -> dict[str, list[Outcome]]:
    """The outcomes of ``update_many``'s changes that changed a record, by key, in order:
    what its history keeps."""
    changed: dict[str, list[Outcome]] = {}
    for (key, _), outcome in zip(keyed, outcomes, strict=True):
        if not isinstance(outcome, Exception) and outcome[0] != outcome[1]:
            changed.setdefault(key, []).append(outcome)
    return changed


def version_rows(
    key: str, first: int, outcomes: Iterable[Outcome], *, at: float, by: str | None
) -> list[tuple]:
    """The rows of the versions ``outcomes`` (changes that changed the record, in order) add
    to ``key``'s history, numbered from ``first``."""
    return [
        version_row(key, Version(first + n, at, by, operation_of(before, after), after))
        for n, (before, after) in enumerate(outcomes)
    ]


def version_row(key: str, version: Version) -> tuple:
    """``version`` of ``key``'s history as a row: key, then ``VERSION_COLUMNS``."""
    record = version.record
    return (
        key,
        version.number,
        version.at,
        version.by,
        version.operation,
        pack_record(record) if record is not None else None,
    )


#: Drops what ``HandleStore.prune_history`` drops, of the handles with keys in (?, ?]; then
#: ``keep_versions`` and ``before``, either ``NULL`` (no bound).
PRUNE_HISTORY_SQL = (
    "DELETE FROM handle_versions AS v WHERE v.key > ? AND v.key <= ?"
    " AND v.version < (SELECT max(w.version) FROM handle_versions w WHERE w.key = v.key)"
    " AND (v.version <= (SELECT max(w.version) FROM handle_versions w WHERE w.key = v.key) - ?"
    " OR v.at < ?)"
)
#: Handles a transaction of ``prune_history`` covers.
PRUNE_KEYS = 2000


async def pruned_in_steps(fetch: Fetch, prune: Callable[[str, str], Awaitable[int]]) -> int:
    """``HandleStore.prune_history``: ``prune`` (running ``PRUNE_HISTORY_SQL`` on the keys in
    (low, high], in a transaction of its own) over every ``PRUNE_KEYS`` handles with a
    history, which ``fetch`` reads; how many versions went."""
    removed, last = 0, ""
    while True:
        keys = await fetch(
            "SELECT DISTINCT key FROM handle_versions WHERE key > ? ORDER BY key LIMIT ?",
            (last, PRUNE_KEYS),
        )
        if not keys:
            return removed
        high = keys[-1][0]
        removed += await prune(last, high)
        last = high


def exported_entries(
    names: Sequence[Sequence[Any]],
    value_rows: Iterable[Sequence[Any]],
    version_keys: Sequence[str],
    versions: Iterable[Sequence[Any]],
) -> list[Exported]:
    """``iter_exported``'s entries from the ``(key, handle)`` rows of some records, their
    ``(key, *VALUE_COLUMNS)`` rows, the keys that have a history and its ``(key,
    *VERSION_COLUMNS)`` rows, all of one range of keys: in key order."""
    records = records_from_rows(names, value_rows)
    histories: dict[str, list[Version]] = {}
    for row in versions:
        histories.setdefault(row[0], []).append(version_from_row(tuple(row)[1:]))
    entries = []
    for key in sorted(records.keys() | set(version_keys)):
        record = records.get(key)
        history = histories.get(key, [])
        if record is not None:
            name = record.handle
        else:  # deleted: the name it had
            name = next((v.record.handle for v in reversed(history) if v.record), key)
        entries.append(Exported(name, record, tuple(history)))
    return entries


#: A read of a snapshot: the rows of ``sql`` (``?`` placeholders) with ``params``.
Fetch = Callable[[str, Sequence[Any]], Awaitable[Sequence[Sequence[Any]]]]


async def exported_batches(
    fetch: Fetch, *, after: str, batch: int
) -> AsyncIterator[list[Exported]]:
    """``HandleStore.iter_exported`` over a snapshot ``fetch`` reads: the handles and the
    histories walked side by side in key order, ``batch`` keys of each at a time."""
    last = after
    while True:
        names = await fetch(
            "SELECT key, handle FROM handles WHERE key > ? ORDER BY key LIMIT ?", (last, batch)
        )
        keyed = await fetch(
            "SELECT DISTINCT key FROM handle_versions WHERE key > ? ORDER BY key LIMIT ?",
            (last, batch),
        )
        version_keys = [r[0] for r in keyed]
        high = export_bound(batch, [r[0] for r in names], version_keys)
        if high is None:
            return
        values = await fetch(
            f"SELECT key, {VALUE_COLUMNS} FROM handle_values"
            " WHERE key > ? AND key <= ? ORDER BY key, idx",
            (last, high),
        )
        versions = await fetch(
            f"SELECT key, {VERSION_COLUMNS} FROM handle_versions"
            " WHERE key > ? AND key <= ? ORDER BY key, version",
            (last, high),
        )
        yield exported_entries(
            [tuple(r) for r in names if r[0] <= high],
            values,
            [k for k in version_keys if k <= high],
            versions,
        )
        last = high


def export_bound(batch: int, *key_lists: Sequence[str]) -> str | None:
    """The last key a step of ``iter_exported`` covers, given the next ``batch`` keys (at
    most) of each of its sources: the least last key of a full list (the sources agree up to
    it), else the greatest key read (``None``: nothing left)."""
    full = [keys[-1] for keys in key_lists if len(keys) >= batch]
    if full:
        return min(full)
    last = [keys[-1] for keys in key_lists if keys]
    return max(last) if last else None


def version_from_row(row: Sequence[Any]) -> Version:
    """A ``Version`` from ``VERSION_COLUMNS``."""
    number, at, by, operation, record = row
    return Version(
        int(number),
        float(at),
        by,
        operation,
        unpack_record(record) if record is not None else None,
    )


class ImportPlan:
    """What an import of some records does, given what is stored under their keys."""

    def __init__(self) -> None:
        self.created: list[Handle] = []
        self.replaced: list[Handle] = []
        self.deleted: list[str] = []  # keys of stored records an entry without record ends
        self.versions: list[tuple] = []  # rows of handle_versions to add
        self.result = ImportResult()

    @property
    def written(self) -> list[Handle]:
        return self.created + self.replaced

    @property
    def touched(self) -> list[str]:
        """Keys whose record changes."""
        return [r.key for r in self.written] + self.deleted

    def new_per_prefix(self) -> list[tuple[str, int]]:
        """(prefix key, handles created (deleted: negative) under it)."""
        counts: dict[str, int] = {}
        for key, delta in [(r.key, 1) for r in self.created] + [(k, -1) for k in self.deleted]:
            prefix = handle_key(prefix_of(key))
            counts[prefix] = counts.get(prefix, 0) + delta
        return sorted(counts.items())


def plan_import(
    entries: Mapping[str, Exported],
    stored: Mapping[str, Handle | None],
    histories: Mapping[str, Sequence[Version]],
    *,
    replace: bool,
    at: float,
) -> ImportPlan:
    """What importing ``entries`` (by key) does to the records ``stored`` and the histories
    ``histories`` (by key; all of each, oldest first) hold: see ``HandleStore.import_records``.
    ``at``: the time of the versions the import itself makes."""
    plan = ImportPlan()
    for key, entry in entries.items():
        old, new = stored.get(key), entry.record
        if old == new:
            plan.result.unchanged += 1
        elif old is None:
            plan.created.append(new)  # type: ignore[arg-type]  (new is not None here)
        elif not replace:
            raise ImportConflict(entry.handle)
        elif new is None:
            plan.deleted.append(key)
        else:
            plan.replaced.append(new)
        have = list(histories.get(key, ()))
        given = entry.history
        added: list[Version] = []
        if given is not None:
            if list(given[: len(have)]) == have:
                added = list(given[len(have) :])
            elif not replace:
                raise ImportConflict(f"{entry.handle} (its history differs from the stored one)")
        last = added[-1] if added else have[-1] if have else None
        if (last.record if last is not None else None) != new:
            number = (last.number if last is not None else 0) + 1
            made = Version(number, at, None, "import" if new is not None else "delete", new)
            added.append(made)
        plan.versions.extend(version_row(key, v) for v in added)
    plan.result.created = len(plan.created)
    plan.result.replaced = len(plan.replaced) + len(plan.deleted)
    plan.result.versions = len(plan.versions)
    return plan


# -- authentication state: sessions, failed authentications, shared secrets -------------------


class AuthSQL:
    """Statements on the tables of ``*_shared_auth_state.sql``, with ``?`` placeholders (the
    PostgreSQL store numbers them: ``numbered``)."""

    #: Where PostgreSQL adds ``FOR UPDATE SKIP LOCKED`` (SQLite has one writer at a time).
    SKIP_LOCKED = "/* skip locked */"

    GET_SESSION = (
        "SELECT key, identity_handle, identity_index, expires FROM auth_sessions"
        " WHERE key = ? AND expires > ?"
    )
    HAS_SESSION = "SELECT 1 FROM auth_sessions WHERE key = ?"
    DROP_EXPIRED_SESSIONS = (
        "DELETE FROM auth_sessions WHERE key IN"
        f" (SELECT key FROM auth_sessions WHERE expires <= ? {SKIP_LOCKED})"
    )
    COUNT_SESSIONS = "SELECT count(*) FROM auth_sessions"
    #: The sessions to drop to make room: closed ones first, then those that expire first.
    EVICT_SESSIONS = (
        "DELETE FROM auth_sessions WHERE key IN (SELECT key FROM auth_sessions"
        f" ORDER BY identity_handle IS NOT NULL, expires LIMIT ? {SKIP_LOCKED})"
    )
    #: Parameters: identity handle, identity index, now.
    COUNT_IDENTITY_SESSIONS = (
        "SELECT count(*) FROM auth_sessions"
        " WHERE identity_handle = ? AND identity_index = ? AND expires > ?"
    )
    #: The oldest open sessions of one identity (handle, index, now, how many).
    EVICT_IDENTITY_SESSIONS = (
        "DELETE FROM auth_sessions WHERE key IN (SELECT key FROM auth_sessions"
        " WHERE identity_handle = ? AND identity_index = ? AND expires > ?"
        f" ORDER BY expires LIMIT ? {SKIP_LOCKED})"
    )
    #: A closed session (``identity_handle`` NULL) is never opened again.
    PUT_SESSION = (
        "INSERT INTO auth_sessions (key, identity_handle, identity_index, expires)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
        " identity_handle = excluded.identity_handle, identity_index = excluded.identity_index,"
        " expires = excluded.expires WHERE auth_sessions.identity_handle IS NOT NULL"
    )
    RENEW_SESSION = (
        "UPDATE auth_sessions SET expires = ?"
        " WHERE key = ? AND identity_handle IS NOT NULL AND expires < ?"
    )
    #: Parameters: key, now, since, since.
    ADD_FAILURE = (
        "INSERT INTO auth_failures (key, first, count) VALUES (?, ?, 1)"
        " ON CONFLICT (key) DO UPDATE SET"
        " count = CASE WHEN auth_failures.first <= ? THEN 1 ELSE auth_failures.count + 1 END,"
        " first = CASE WHEN auth_failures.first <= ? THEN excluded.first"
        " ELSE auth_failures.first END"
    )
    DROP_OLD_FAILURES = (
        "DELETE FROM auth_failures WHERE key IN"
        f" (SELECT key FROM auth_failures WHERE first <= ? {SKIP_LOCKED})"
    )
    ADD_SECRET = "INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
    GET_SECRET = "SELECT value FROM server_secrets WHERE name = ?"
    GET_TICKET = "SELECT data FROM tickets WHERE key = ? AND expires > ?"
    TAKE_TICKET = "DELETE FROM tickets WHERE key = ? RETURNING data, expires"
    HAS_TICKET = "SELECT 1 FROM tickets WHERE key = ?"
    DROP_EXPIRED_TICKETS = (
        "DELETE FROM tickets WHERE key IN"
        f" (SELECT key FROM tickets WHERE expires <= ? {SKIP_LOCKED})"
    )
    COUNT_TICKETS = "SELECT count(*) FROM tickets"
    EVICT_TICKETS = (
        "DELETE FROM tickets WHERE key IN"
        f" (SELECT key FROM tickets ORDER BY expires LIMIT ? {SKIP_LOCKED})"
    )
    PUT_TICKET = (
        "INSERT INTO tickets (key, data, expires) VALUES (?, ?, ?) ON CONFLICT (key)"
        " DO UPDATE SET data = excluded.data, expires = excluded.expires"
    )

    @staticmethod
    def failures(count: int) -> str:
        """The failures of ``count`` keys (then ``since``) that are still counted."""
        marks = ", ".join("?" * count)
        return f"SELECT key, first, count FROM auth_failures WHERE key IN ({marks}) AND first > ?"


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1``, ``$2``, ... (the statements above hold no
    ``?`` in a literal)."""
    counter = iter(range(1, 1_000_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def session_row(session: SessionRecord) -> tuple:
    """The ``auth_sessions`` columns of ``session``, in ``PUT_SESSION``'s order."""
    identity = session.identity
    return (
        session.key,
        identity.handle if identity is not None else None,
        identity.index if identity is not None else None,
        float(session.expires),
    )


def session_from_row(row: Sequence[Any]) -> SessionRecord:
    """A session from ``GET_SESSION``'s columns."""
    key, handle, index, expires = row
    identity = ValueReference(handle, index) if handle is not None else None
    return SessionRecord(bytes(key), identity, float(expires))


# -- reverse lookup ----------------------------------------------------------------------------

#: Types whose values are never searchable: secrets and the binary Handle System records (the
#: migrations that index what was stored before them list the same).
SEARCH_EXCLUDED = frozenset(
    {
        "HS_SECKEY",
        "HS_PUBKEY",
        "HS_ADMIN",
        "HS_VLIST",
        "HS_SITE",
        "HS_SITE.PREFIX",
        "HS_SERV",
        "HS_CERT",
        "HS_SIGNATURE",
    }
)
SEARCH_COLUMNS = "key, idx, type, public, text"


def search_rows(key: str, values: Iterable[HandleValue]) -> list[tuple]:
    """The ``value_text`` rows (``SEARCH_COLUMNS``) of the searchable ones of ``values``: not
    of an excluded type, and UTF-8 text without NUL (which PostgreSQL cannot hold as text)."""
    rows = []
    for v in values:
        kind = v.type.upper()
        if kind in SEARCH_EXCLUDED:
            continue
        try:
            text = v.data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            rows.append((key, v.index, kind, v.public_read, text))
    return rows


def search_query(
    conditions: Sequence[tuple[str, str]],
    *,
    prefix: str | None,
    readable: Iterable[str],
    offset: int,
    limit: int,
    dialect: str,
) -> tuple[str, list[Any]]:
    """The statement (``?`` placeholders) and parameters of ``HandleStore.search`` on the
    ``value_text`` table of ``*_reverse_lookup.sql``. The conditions whose pattern the trigram
    index can find (``search_pattern_problem``) pick the candidates: SQLite matches them with
    GLOB through its trigram full-text table, PostgreSQL with LIKE through its trigram index.
    The others (``URL=*``: any URL) are checked on each candidate's values only."""
    conditions = list(dict.fromkeys((t.upper(), p) for t, p in conditions))
    if not conditions:
        raise ValueError("a search needs at least one type=pattern")
    indexed = [c for c in conditions if search_pattern_problem(c[1]) is None]
    if not indexed:
        raise ValueError(search_pattern_problem(conditions[0][1]))
    visible, visible_params = ["v.public"], []
    for p in readable:
        visible.append("(v.key >= ? AND v.key < ?)")
        visible_params += prefix_bounds(p)
    shown = f"({' OR '.join(visible)})"

    def matched(pattern: str) -> str:
        if dialect == "sqlite":
            return pattern.replace("[", "[[]").replace("?", "[?]")
        return re.sub(r"([\\%_])", r"\\\1", pattern).replace("*", "%")

    compare = "GLOB" if dialect == "sqlite" else "LIKE"
    picks, params = [], []
    for type_, pattern in indexed:
        if dialect == "sqlite":
            picks.append(
                "SELECT v.key FROM value_text_fts f JOIN value_text v ON v.id = f.rowid"
                f" WHERE f.text GLOB ? AND v.text GLOB ? AND v.type = ? AND {shown}"
            )
            glob = matched(pattern)
            params += [glob, glob, type_.upper(), *visible_params]
        else:
            picks.append(
                f"SELECT v.key FROM value_text v WHERE v.text LIKE ? AND v.type = ? AND {shown}"
            )
            params += [matched(pattern), type_.upper(), *visible_params]
    sql = f"SELECT h.handle FROM handles h WHERE h.key IN ({' INTERSECT '.join(picks)})"
    for type_, pattern in conditions:
        if (type_, pattern) in indexed:
            continue
        sql += (
            " AND EXISTS (SELECT 1 FROM value_text v WHERE v.key = h.key AND v.type = ?"
            f" AND v.text {compare} ? AND {shown})"
        )
        params += [type_.upper(), matched(pattern), *visible_params]
    if prefix is not None:
        sql += " AND h.key >= ? AND h.key < ?"
        params += prefix_bounds(prefix)
    sql += " ORDER BY h.key LIMIT ? OFFSET ?"
    return sql, [*params, limit, offset]


#: Characters in a row, other than ``*``, that a search pattern needs (the trigram index
#: finds nothing shorter).
SEARCH_MIN_RUN = 3


def search_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be searched from the index, or ``None``."""
    if max((len(run) for run in pattern.split("*")), default=0) < SEARCH_MIN_RUN:
        return f"the pattern {pattern!r} needs {SEARCH_MIN_RUN} characters in a row other than *"
    return None
