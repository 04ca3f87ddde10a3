-- Full-text search of room events (POST /search). Kept table-for-table
-- equivalent to sql/postgres/0005_search.sql.

-- One row per searchable event (rowid = event_nid): the text of `key`
-- (`content.body`, `content.name` or `content.topic`). Filled with the
-- event, in its transaction; a redaction deletes its target's row.
CREATE VIRTUAL TABLE event_search USING fts5(
    content,
    key UNINDEXED,
    room_nid UNINDEXED,
    tokenize = 'unicode61'
);
