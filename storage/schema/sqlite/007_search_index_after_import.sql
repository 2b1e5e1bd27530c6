-- Imports add their values' text to value_text without putting each row in the trigram index
-- as it comes (row by row, the index was most of an import's time); the rows are indexed
-- together afterwards, in chunks (SQLiteStore.index_pending: when the importing store closes,
-- and before any search). A row of value_text is in value_text_fts exactly when
-- search_index.pending_from is NULL or the row's id is below it.
CREATE TABLE search_index (pending_from INTEGER);
INSERT INTO search_index (pending_from) VALUES (NULL);

DROP TRIGGER value_text_added;
CREATE TRIGGER value_text_added AFTER INSERT ON value_text
WHEN new.id < COALESCE((SELECT pending_from FROM search_index), new.id + 1) BEGIN
    INSERT INTO value_text_fts (rowid, text) VALUES (new.id, new.text);
END;

DROP TRIGGER value_text_removed;
CREATE TRIGGER value_text_removed AFTER DELETE ON value_text
WHEN old.id < COALESCE((SELECT pending_from FROM search_index), old.id + 1) BEGIN
    INSERT INTO value_text_fts (value_text_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
