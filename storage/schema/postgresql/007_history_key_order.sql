-- handle_versions.key compares as every other key column does: byte order (COLLATE "C"), so
-- that an export can walk the handles and the histories side by side in one order, whatever
-- the database's own collation.
ALTER TABLE handle_versions ALTER COLUMN key TYPE TEXT COLLATE "C";
