-- Notifications (push rule outcomes per user and event) and pushers. Kept
-- table-for-table identical to sql/postgres/0006_push.sql.

-- One row per event and user whose matching push rule notifies or
-- highlights, written in the event's transaction by the room writer.
-- `thread_id` is the thread root for an event in a thread, NULL on the main
-- timeline; `actions` the matching rule's actions as JSON; `ts` the event's
-- origin_server_ts. A redaction deletes its target's rows; leaving a room
-- deletes the leaver's rows in it.
CREATE TABLE event_push_actions (
    user_id    TEXT    NOT NULL,
    room_nid   INTEGER NOT NULL,
    stream_pos INTEGER NOT NULL,
    event_id   TEXT    NOT NULL,
    thread_id  TEXT,
    notify     BOOLEAN NOT NULL,
    highlight  BOOLEAN NOT NULL,
    actions    TEXT    NOT NULL,
    ts         INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_nid, stream_pos)
);
-- /notifications and pushers: a user's notifications in stream order.
CREATE INDEX event_push_actions_user ON event_push_actions (user_id, stream_pos);
-- Redactions find the rows of the redacted event.
CREATE INDEX event_push_actions_event ON event_push_actions (room_nid, event_id);

-- POST /pushers/set. `last_stream_pos`: delivered up to there.
CREATE TABLE pushers (
    user_id             TEXT    NOT NULL,
    app_id              TEXT    NOT NULL,
    pushkey             TEXT    NOT NULL,
    device_id           TEXT,
    kind                TEXT    NOT NULL,
    app_display_name    TEXT    NOT NULL,
    device_display_name TEXT    NOT NULL,
    profile_tag         TEXT,
    lang                TEXT    NOT NULL,
    data                TEXT    NOT NULL,
    created_ms          INTEGER NOT NULL,
    last_stream_pos     INTEGER NOT NULL,
    failing_since_ms    INTEGER,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey);
