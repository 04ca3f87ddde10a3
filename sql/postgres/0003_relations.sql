-- Relations between events (`content.m.relates_to`): edits (`m.replace`),
-- reactions (`m.annotation`), threads (`m.thread`), references
-- (`m.reference`) and any other `rel_type`. Kept table-for-table identical
-- to sql/sqlite/0003_relations.sql.
--
-- One row per relating event (an event relates to at most one parent),
-- written in the same transaction as the event; deleted when the event is
-- redacted (redaction strips `m.relates_to`). `annotation_key` is the
-- `key` of an `m.annotation`, NULL otherwise; `is_state` marks state events
-- (which never count as edits). `origin_server_ts`, `stream_pos` and `depth`
-- copy the event's: the latest edit is the latest by `origin_server_ts`, and
-- pages run in topological order without reading `events`.
CREATE TABLE event_relations (
    room_nid       BIGINT  NOT NULL,
    event_nid      BIGINT  NOT NULL,
    event_id       TEXT    NOT NULL,
    relates_to_id  TEXT    NOT NULL,
    rel_type       TEXT    NOT NULL,
    annotation_key TEXT,
    sender         TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    is_state       BOOLEAN NOT NULL,
    origin_server_ts BIGINT  NOT NULL,
    stream_pos     BIGINT  NOT NULL,
    depth          BIGINT  NOT NULL,
    PRIMARY KEY (room_nid, event_nid)
);
-- The children of a parent, by type, in topological order (the relations
-- endpoint, bundled aggregations).
CREATE INDEX event_relations_parent
    ON event_relations (relates_to_id, rel_type, depth, stream_pos);
-- Redactions find the row of the redacted event.
CREATE INDEX event_relations_event ON event_relations (event_id);
-- One reaction per user, key and target.
CREATE INDEX event_relations_annotation
    ON event_relations (relates_to_id, sender, annotation_key)
    WHERE rel_type = 'm.annotation';
-- The threads of a room, by latest reply.
CREATE INDEX event_relations_threads
    ON event_relations (room_nid, rel_type, stream_pos);
