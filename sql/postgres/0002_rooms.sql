-- Rooms, events, state snapshots, memberships, transaction ids, aliases and
-- receipts. Kept table-for-table identical to sql/sqlite/0002_rooms.sql; only
-- the dialect differs (sequences, BOOLEAN, SMALLINT, a partitioned `events`).
--
-- Numeric ids (`*_nid`) intern what repeats: state is stored as sets of
-- (state_key_nid, event_nid) pairs, never as JSON. Every id comes from a
-- sequence, so several writers (cluster nodes) may allocate at once; sequences
-- start at 1, which leaves 0 free to mean "none" (snapshot 0 is the empty
-- state).

CREATE SEQUENCE room_nid AS BIGINT;
CREATE SEQUENCE event_nid AS BIGINT;
CREATE SEQUENCE state_key_nid AS BIGINT;
CREATE SEQUENCE snapshot_nid AS BIGINT;
-- Stream positions. Backfilled events will get negative positions from
-- elsewhere, so no query may assume positions are positive.
CREATE SEQUENCE events_stream_pos AS BIGINT;
CREATE SEQUENCE receipts_stream_pos AS BIGINT;

-- Never parse anything out of room_id: room version 12 ids name no server.
CREATE TABLE rooms (
    room_nid             BIGINT NOT NULL PRIMARY KEY,
    room_id              TEXT   NOT NULL UNIQUE,
    room_version         TEXT   NOT NULL,
    created_ms           BIGINT NOT NULL,
    current_snapshot_nid BIGINT NOT NULL DEFAULT 0
);

-- event id -> where its row is, so a lookup by event id never needs to know
-- the room (and so the partition) first. Its primary key is also what makes
-- event ids unique: `events` is partitioned and cannot enforce that itself.
CREATE TABLE event_locator (
    event_id  TEXT   NOT NULL PRIMARY KEY,
    room_nid  BIGINT NOT NULL,
    event_nid BIGINT NOT NULL UNIQUE
);

-- Partitioned by HASH (room_nid) with a FIXED modulus: the number of
-- partitions is a storage choice, independent of the number of shard owners,
-- so adding an owner moves no row. The primary key includes the partition key,
-- as PostgreSQL requires.
--
-- status: 0 normal, 1 outlier, 2 rejected, 3 soft-failed (EventStatus).
-- state_before_nid / state_after_nid: snapshots (0 for outliers).
-- slot_epoch: the fencing token of the shard owner that wrote the row.
-- txn_*: the client transaction it was sent in, NULL for other events.
CREATE TABLE events (
    room_nid         BIGINT   NOT NULL,
    event_nid        BIGINT   NOT NULL,
    event_id         TEXT     NOT NULL,
    kind             TEXT     NOT NULL,
    state_key        TEXT,
    state_key_nid    BIGINT,
    sender           TEXT     NOT NULL,
    origin_server_ts BIGINT   NOT NULL,
    depth            BIGINT   NOT NULL,
    stream_pos       BIGINT   NOT NULL,
    json             TEXT     NOT NULL,
    membership       TEXT,
    redacts          TEXT,
    redacted_by      TEXT,
    state_before_nid BIGINT   NOT NULL,
    state_after_nid  BIGINT   NOT NULL,
    status           SMALLINT NOT NULL,
    slot_epoch       BIGINT   NOT NULL,
    txn_user_id      TEXT,
    txn_device_id    TEXT,
    txn_id           TEXT,
    PRIMARY KEY (room_nid, event_nid)
) PARTITION BY HASH (room_nid);

CREATE TABLE events_p00 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 0);
CREATE TABLE events_p01 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 1);
CREATE TABLE events_p02 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 2);
CREATE TABLE events_p03 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 3);
CREATE TABLE events_p04 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 4);
CREATE TABLE events_p05 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 5);
CREATE TABLE events_p06 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 6);
CREATE TABLE events_p07 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 7);
CREATE TABLE events_p08 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 8);
CREATE TABLE events_p09 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 9);
CREATE TABLE events_p10 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 10);
CREATE TABLE events_p11 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 11);
CREATE TABLE events_p12 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 12);
CREATE TABLE events_p13 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 13);
CREATE TABLE events_p14 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 14);
CREATE TABLE events_p15 PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER 15);

-- Live timeline (sync), topological paging (/messages), and "everything since"
-- across rooms.
CREATE INDEX events_room_stream ON events (room_nid, stream_pos);
CREATE INDEX events_room_topological ON events (room_nid, depth, stream_pos);
CREATE INDEX events_stream ON events (stream_pos);

-- (type, state_key) pairs, interned.
CREATE TABLE state_keys (
    state_key_nid BIGINT NOT NULL PRIMARY KEY,
    kind          TEXT   NOT NULL,
    state_key     TEXT   NOT NULL,
    UNIQUE (kind, state_key)
);

-- A snapshot is either full (base_nid NULL: its entries are the whole state)
-- or a delta over base_nid (its entries are only the pairs that differ; the
-- nearest entry along the chain wins). chain_length counts the snapshots from
-- this one down to its full base, itself included (a full snapshot has 1); it
-- never exceeds STATE_CHAIN_LENGTH_MAX, so a lookup reads a bounded chain and
-- storage grows by the change, not by a copy of the state per event.
CREATE TABLE state_snapshots (
    snapshot_nid BIGINT NOT NULL PRIMARY KEY,
    room_nid     BIGINT NOT NULL,
    base_nid     BIGINT,
    chain_length BIGINT NOT NULL
);

-- event_nid 0 would remove the pair from the state (state resolution may drop
-- a key); persisting an event never writes one.
CREATE TABLE state_snapshot_entries (
    snapshot_nid  BIGINT NOT NULL,
    state_key_nid BIGINT NOT NULL,
    event_nid     BIGINT NOT NULL,
    PRIMARY KEY (snapshot_nid, state_key_nid)
);

-- The room's current state, materialised for fast reads (the same set as
-- rooms.current_snapshot_nid resolves to).
CREATE TABLE current_state (
    room_nid      BIGINT NOT NULL,
    state_key_nid BIGINT NOT NULL,
    event_nid     BIGINT NOT NULL,
    PRIMARY KEY (room_nid, state_key_nid)
);

-- Each user's current membership per room (any user, local or remote).
-- forgotten: POST /forget; a new membership event clears it.
CREATE TABLE memberships (
    room_nid   BIGINT  NOT NULL,
    user_id    TEXT    NOT NULL,
    membership TEXT    NOT NULL,
    event_nid  BIGINT  NOT NULL,
    event_id   TEXT    NOT NULL,
    stream_pos BIGINT  NOT NULL,
    forgotten  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_nid, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- The events of a room that no other event references yet (the next event's
-- prev_events).
CREATE TABLE forward_extremities (
    room_nid  BIGINT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (room_nid, event_nid)
);

-- Client transaction ids, in the database so that a retry after a restart or
-- a failover still returns the same event.
-- Scoped to the room as well: clients reuse transaction ids across rooms
-- (the spec makes them unique per request path and access token).
CREATE TABLE txn_ids (
    room_nid  BIGINT NOT NULL,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, room_nid, txn_id)
);

CREATE TABLE room_aliases (
    alias   TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- One row per (room, user, type, thread); thread_id '' is an unthreaded
-- receipt. stream_pos is the position of the latest write.
CREATE TABLE receipts (
    room_nid     BIGINT NOT NULL,
    user_id      TEXT   NOT NULL,
    receipt_type TEXT   NOT NULL,
    thread_id    TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    ts           BIGINT NOT NULL,
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (room_nid, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_room_stream ON receipts (room_nid, stream_pos);
CREATE INDEX receipts_stream ON receipts (stream_pos);
