-- Short-lived state one request leaves for a later one that may reach another process or
-- node: a native-protocol challenge waiting for its answer, a native session. `data` is
-- opaque to the store; `expires` is in epoch seconds.
CREATE TABLE tickets (
    key     BLOB PRIMARY KEY,
    data    BLOB NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX tickets_expires ON tickets (expires);
