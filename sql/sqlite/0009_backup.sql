-- Server-side key backups (/room_keys). Kept table-for-table equivalent to
-- sql/postgres/0009_backup.sql.

-- Versions of a user's backup, numbered per user from 1 and never reused: a
-- deleted version keeps its row with `deleted` set. `etag` moves whenever
-- the version's sessions change.
CREATE TABLE backup_versions (
    user_id   TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    algorithm TEXT    NOT NULL,
    auth_data TEXT    NOT NULL,
    etag      INTEGER NOT NULL DEFAULT 0,
    deleted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

-- The megolm sessions backed up in each version.
CREATE TABLE backup_sessions (
    user_id             TEXT    NOT NULL,
    version             INTEGER NOT NULL,
    room_id             TEXT    NOT NULL,
    session_id          TEXT    NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count     INTEGER NOT NULL,
    is_verified         INTEGER NOT NULL,
    session_data        TEXT    NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
