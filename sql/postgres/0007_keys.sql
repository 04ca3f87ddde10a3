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

-- Device-list changes: one row per user whose devices or keys changed, at
-- the change's position in the device-list stream (allocated by the
-- writer's tracker; sync tokens carry it). Never deleted, so the greatest
-- position survives restarts.
CREATE TABLE device_list_changes (
    stream_pos BIGINT  NOT NULL,
    user_id    TEXT    NOT NULL,
    PRIMARY KEY (stream_pos, user_id)
);
CREATE SEQUENCE device_list_stream_pos AS BIGINT;
