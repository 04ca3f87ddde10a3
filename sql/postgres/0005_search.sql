-- Full-text search of room events (POST /search). Kept table-for-table
-- equivalent to sql/sqlite/0005_search.sql.

-- One row per searchable event: the words of `key` (`content.body`,
-- `content.name` or `content.topic`) as to_tsvector('simple', text).
-- Filled with the event, in its transaction; a redaction deletes its
-- target's row.
CREATE TABLE event_search (
    room_nid  BIGINT   NOT NULL,
    event_nid BIGINT   NOT NULL,
    key       TEXT     NOT NULL,
    vector    tsvector NOT NULL,
    PRIMARY KEY (room_nid, event_nid)
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
