-- Handle records. `key` is the handle with ASCII letters upper-cased (lookups are
-- case-insensitive); `handle` keeps the spelling it was created with.
CREATE TABLE handles (
    key    TEXT PRIMARY KEY,
    handle TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE handle_values (
    key         TEXT    NOT NULL REFERENCES handles (key) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    ttl_type    INTEGER NOT NULL,
    ttl         INTEGER NOT NULL,
    timestamp   INTEGER NOT NULL,
    permissions INTEGER NOT NULL,           -- 8 admin read, 4 admin write, 2 public read, 1 public write
    refs        TEXT    NOT NULL DEFAULT '', -- JSON [[handle, index], ...], '' when there are none
    PRIMARY KEY (key, idx)
) WITHOUT ROWID;

-- Kept in the same transaction as every create and delete, so that counting a prefix of a
-- million handles is one lookup.
CREATE TABLE prefix_counts (
    prefix TEXT PRIMARY KEY,
    count  INTEGER NOT NULL
) WITHOUT ROWID;
