-- Reverse lookup (/hrls/handles/): the text of every value that can be searched, written by the
-- store in the same transaction as the value itself (storage.rows.search_row), with a trigram
-- index (pg_trgm, shipped
-- with PostgreSQL; creating it needs the CREATE privilege on the database) so that a pattern
-- like *example.org* is found from the index. Binary and secret types, and data that is not
-- UTF-8 text, are not searchable. `type` is upper-cased; `public` is the value's public read.
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;

CREATE TABLE value_text (
    key    TEXT COLLATE "C" NOT NULL,
    idx    INTEGER NOT NULL,
    type   TEXT    NOT NULL,
    public BOOLEAN NOT NULL,
    text   TEXT    NOT NULL,
    PRIMARY KEY (key, idx)
);
CREATE INDEX value_text_trigrams ON value_text USING gin (text public.gin_trgm_ops);

-- The values stored before this version (those that are UTF-8 text).
DO $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN SELECT key, idx, type, data, permissions FROM handle_values
             WHERE upper(type) NOT IN ('HS_SECKEY', 'HS_PUBKEY', 'HS_ADMIN', 'HS_VLIST',
                                       'HS_SITE', 'HS_SITE.PREFIX', 'HS_SERV', 'HS_CERT',
                                       'HS_SIGNATURE')
    LOOP
        BEGIN
            INSERT INTO value_text (key, idx, type, public, text) VALUES (
                r.key, r.idx, upper(r.type), (r.permissions & 2) <> 0,
                convert_from(r.data, 'UTF8')
            );
        EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
            NULL;  -- not text: not searchable
        END;
    END LOOP;
END
$$;
