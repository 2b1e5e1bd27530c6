-- The open sessions of one identity, found without a scan: [auth] max_sessions_per_identity
-- counts them each time the identity proves a new one.
CREATE INDEX auth_sessions_identity ON auth_sessions (identity_handle, identity_index, expires);
