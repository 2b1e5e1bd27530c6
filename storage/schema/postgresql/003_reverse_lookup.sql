-- Reverse lookup (/hrls/handles/): the text of every value that can be searched, kept by a
-- trigger in the same transaction as the value itself, with a trigram index (pg_trgm, shipped
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

CREATE FUNCTION value_text_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM value_text WHERE key = OLD.key AND idx = OLD.idx;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND upper(NEW.type) NOT IN (
        'HS_SECKEY', 'HS_PUBKEY', 'HS_ADMIN', 'HS_VLIST', 'HS_SITE', 'HS_SITE.PREFIX',
        'HS_SERV', 'HS_CERT', 'HS_SIGNATURE'
    ) THEN
        BEGIN
            INSERT INTO value_text (key, idx, type, public, text) VALUES (
                NEW.key, NEW.idx, upper(NEW.type), (NEW.permissions & 2) <> 0,
                convert_from(NEW.data, 'UTF8')
            );
        EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
            NULL;  -- not text: not searchable
        END;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER handle_values_search AFTER INSERT OR UPDATE OR DELETE ON handle_values
    FOR EACH ROW EXECUTE FUNCTION value_text_sync();

-- The values stored before this version: touching each row runs the trigger on it.
UPDATE handle_values SET type = type;
