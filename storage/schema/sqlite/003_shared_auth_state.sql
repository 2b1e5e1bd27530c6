-- Authentication state every process and node serving this store shares.
--
-- Sessions that proved an identity, and sessions that were closed (identity NULL), by the
-- SHA-256 of their id: the id itself, a bearer credential, is never stored. A session that
-- has only been opened needs no row (its id carries what it needs, signed). `expires` is in
-- epoch seconds.
CREATE TABLE auth_sessions (
    key             BLOB PRIMARY KEY,
    identity_handle TEXT,
    identity_index  INTEGER,
    expires         REAL NOT NULL
);
CREATE INDEX auth_sessions_expires ON auth_sessions (expires);

-- Failed authentications within the throttle window, by key ("identity 300:TEST/ADMIN",
-- "client 192.0.2.1"): when the first one happened and how many there were since.
CREATE TABLE auth_failures (
    key   TEXT PRIMARY KEY,
    first REAL NOT NULL,
    count INTEGER NOT NULL
);
CREATE INDEX auth_failures_first ON auth_failures (first);

-- Random secrets made once and shared by every process and node (the key that signs session
-- ids, for one).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
