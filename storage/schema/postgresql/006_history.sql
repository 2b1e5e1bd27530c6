-- The history of every record: a version for each change that changed it (create, values
-- added / modified / removed, replace, delete, import), written in the change's own
-- transaction. `record` is the record after the change as an export line (storage/dump.py),
-- NULL when the change deleted the handle: the history of a deleted handle stays, and a
-- handle made again continues it. `by` is the identity that made the change ("index:handle"),
-- NULL for the server itself (imports, the configuration).
CREATE TABLE handle_versions (
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    by TEXT,
    operation TEXT NOT NULL,
    record BYTEA,
    PRIMARY KEY (key, version)
);
