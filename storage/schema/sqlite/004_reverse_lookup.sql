-- Reverse lookup (/hrls/handles/): the text of every value that can be searched, written by
-- the store in the same transaction as the value itself (storage.rows.search_row), with a
-- trigram full-text index so that a pattern like *example.org* is found from the index, not by
-- reading every value. Binary and secret types, and data that is not UTF-8 text, are not
-- searchable. `type` is upper-cased; `public` is the value's public read.
CREATE TABLE value_text (
    id     INTEGER PRIMARY KEY,
    key    TEXT    NOT NULL,
    idx    INTEGER NOT NULL,
    type   TEXT    NOT NULL,
    public INTEGER NOT NULL,
    text   TEXT    NOT NULL,
    UNIQUE (key, idx)
);

CREATE VIRTUAL TABLE value_text_fts USING fts5(
    text, content = 'value_text', content_rowid = 'id', tokenize = 'trigram'
);

CREATE TRIGGER value_text_added AFTER INSERT ON value_text BEGIN
    INSERT INTO value_text_fts (rowid, text) VALUES (new.id, new.text);
END;

CREATE TRIGGER value_text_removed AFTER DELETE ON value_text BEGIN
    INSERT INTO value_text_fts (value_text_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

-- The values stored before this version. handle_server_text(data) is a function handle-server
-- registers on its connections: the data as text, or NULL if it is not UTF-8 (or holds NUL).
INSERT INTO value_text (key, idx, type, public, text)
    SELECT key, idx, upper(type), (permissions & 2) != 0, t
    FROM (SELECT key, idx, type, permissions, handle_server_text(data) AS t FROM handle_values)
    WHERE t IS NOT NULL AND upper(type) NOT IN ('HS_SECKEY', 'HS_PUBKEY', 'HS_ADMIN', 'HS_VLIST', 'HS_SITE',
                              'HS_SITE.PREFIX', 'HS_SERV', 'HS_CERT', 'HS_SIGNATURE');
