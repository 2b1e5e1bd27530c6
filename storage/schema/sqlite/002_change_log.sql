-- Every committed change, by handle key, so that the other processes serving this file
-- (`serve --workers N`, or several servers on one machine) forget what they have cached. A
-- writer bumps the counter in the `<file>-changes` file after it commits; a process that sees
-- the counter move reads the rows it has not seen. Rows older than the last 10,000 are pruned.
CREATE TABLE handle_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL
);
