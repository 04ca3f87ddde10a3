-- The room directory, content reports, and an index to find events by
-- timestamp. Kept table-for-table identical to sql/sqlite/0004_directory.sql.

-- One row per room whose directory visibility was set; no row: private.
CREATE TABLE room_directory (
    room_nid   BIGINT NOT NULL PRIMARY KEY REFERENCES rooms (room_nid),
    visibility TEXT   NOT NULL CHECK (visibility IN ('public', 'private'))
);

-- Reports of rooms (event_id NULL) and of events, for administrators.
CREATE TABLE reports (
    report_id   BIGINT NOT NULL GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id     TEXT   NOT NULL,
    event_id    TEXT,
    reporter    TEXT   NOT NULL,
    reason      TEXT,
    score       BIGINT,
    received_ms BIGINT NOT NULL
);

-- GET /rooms/{roomId}/timestamp_to_event (on every partition of `events`).
CREATE INDEX events_room_ts ON events (room_nid, origin_server_ts, stream_pos);
