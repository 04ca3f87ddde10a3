-- To-device messages (PUT /sendToDevice), kept until the recipient device
-- acknowledges them by syncing with a later token. Kept table-for-table
-- equivalent to sql/sqlite/0008_to_device.sql.

-- One row per recipient device and message, at the sending request's
-- to-device stream position.
CREATE TABLE to_device_inbox (
    user_id    TEXT   NOT NULL,
    device_id  TEXT   NOT NULL,
    stream_pos BIGINT NOT NULL,
    sender     TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    content    TEXT   NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_pos)
);

-- Transaction ids already used, per sending device: a retry stores nothing.
CREATE TABLE to_device_txns (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- Positions for next_stream_pos, and the greatest position ever written
-- (delivered messages are deleted, and a restarted server must never hand
-- out a position a client already holds in a token).
CREATE SEQUENCE to_device_stream_pos AS BIGINT;
CREATE TABLE to_device_position (position BIGINT NOT NULL);
INSERT INTO to_device_position (position) VALUES (0);
