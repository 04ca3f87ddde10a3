-- Dehydrated devices (MSC3814). Kept table-for-table equivalent to
-- sql/postgres/0011_dehydrated_devices.sql.

-- A user's one dehydrated device: a row of `devices` without a session,
-- whose keys others query and claim and whose inbox collects to-device
-- messages until a new device of the user rehydrates it and reads them.
-- `device_data` is the client's encrypted pickle (JSON), kept as given.
CREATE TABLE dehydrated_devices (
    user_id     TEXT    NOT NULL PRIMARY KEY,
    device_id   TEXT    NOT NULL,
    device_data TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL
);
