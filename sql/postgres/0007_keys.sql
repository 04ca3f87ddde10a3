-- End-to-end encryption keys: device identity keys, one-time keys, fallback
-- keys, and the device-list change log. Kept table-for-table identical to
-- sql/sqlite/0007_keys.sql.

-- One signed `device_keys` object per device, as uploaded. `stream_pos` is
-- the device_list_changes position of its last change.
CREATE TABLE device_keys (
    user_id    TEXT   NOT NULL,
    device_id  TEXT   NOT NULL,
    key_json   TEXT   NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys; a claim deletes its row.
CREATE TABLE one_time_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- At most one fallback key per device and algorithm; `used` once claimed.
CREATE TABLE fallback_keys (
    user_id   TEXT    NOT NULL,
    device_id TEXT    NOT NULL,
    algorithm TEXT    NOT NULL,
    key_id    TEXT    NOT NULL,
    key_json  TEXT    NOT NULL,
    used      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Device-list changes, for /keys/changes. `stream_pos`: this log's own
-- ascending position (a sequence); `events_pos`: the events-stream
-- watermark when the change was made (sync tokens carry no device-list
-- position yet).
CREATE TABLE device_list_changes (
    stream_pos BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    events_pos BIGINT NOT NULL
);
CREATE INDEX device_list_changes_events_pos ON device_list_changes (events_pos);
