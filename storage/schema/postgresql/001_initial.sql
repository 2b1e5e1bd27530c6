-- Handle records. `key` is the handle with ASCII letters upper-cased (lookups are
-- case-insensitive); `handle` keeps the spelling it was created with. Keys compare in code-point
-- order (COLLATE "C"), as SQLite's do: a prefix's handles are the keys in ['P/', 'P0').
CREATE TABLE handles (
    key    TEXT COLLATE "C" PRIMARY KEY,
    handle TEXT NOT NULL
);

CREATE TABLE handle_values (
    key         TEXT COLLATE "C" NOT NULL REFERENCES handles (key) ON DELETE CASCADE,
    idx         INTEGER  NOT NULL,
    type        TEXT     NOT NULL,
    data        BYTEA    NOT NULL,
    ttl_type    SMALLINT NOT NULL,
    ttl         BIGINT   NOT NULL,
    timestamp   BIGINT   NOT NULL,
    permissions SMALLINT NOT NULL,           -- 8 admin read, 4 admin write, 2 public read, 1 public write
    refs        TEXT     NOT NULL DEFAULT '', -- JSON [[handle, index], ...], '' when there are none
    PRIMARY KEY (key, idx)
);

-- Kept in the same transaction as every create and delete, so that counting a prefix of a
-- million handles is one lookup.
CREATE TABLE prefix_counts (
    prefix TEXT COLLATE "C" PRIMARY KEY,
    count  BIGINT NOT NULL
);
