-- Accounts, devices, sessions and the per-user data the client API needs first.
-- Kept table-for-table identical to sql/postgres/0001_accounts.sql; only the
-- dialect differs (INTEGER 0/1 for booleans, TEXT for JSON, a counter table
-- in place of sequences: the single writer connection serialises its use).

CREATE TABLE users (
    user_id       TEXT    NOT NULL PRIMARY KEY,
    localpart     TEXT    NOT NULL,
    password_hash TEXT,
    admin         INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    deactivated   INTEGER NOT NULL DEFAULT 0 CHECK (deactivated IN (0, 1)),
    created_ms    INTEGER NOT NULL,
    displayname   TEXT,
    avatar_url    TEXT
);

CREATE TABLE devices (
    user_id      TEXT    NOT NULL REFERENCES users (user_id),
    device_id    TEXT    NOT NULL,
    display_name TEXT,
    last_seen_ip TEXT,
    last_seen_ms INTEGER,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Token digests only, never tokens. `refresh_digest` is the refresh token
-- issued together with this access token; `predecessor_refresh_digest` the
-- refresh token this session was refreshed from, kept valid until the first
-- use of this access token (lost responses may be retried until then).
CREATE TABLE access_tokens (
    digest                     BLOB    NOT NULL PRIMARY KEY,
    user_id                    TEXT    NOT NULL,
    device_id                  TEXT    NOT NULL,
    expires_ms                 INTEGER,
    refresh_digest             BLOB,
    predecessor_refresh_digest BLOB,
    created_ms                 INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
CREATE INDEX access_tokens_refresh ON access_tokens (refresh_digest);
CREATE INDEX access_tokens_predecessor ON access_tokens (predecessor_refresh_digest);

CREATE TABLE refresh_tokens (
    digest     BLOB    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    device_id  TEXT    NOT NULL,
    expires_ms INTEGER,
    created_ms INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

-- Stand-ins for PostgreSQL sequences. Positions only ever grow, so a reader
-- holding a position never misses a later change, even after deletions.
CREATE TABLE counters (
    name     TEXT    NOT NULL PRIMARY KEY,
    position INTEGER NOT NULL
);
INSERT INTO counters (name, position) VALUES ('account_data_stream_id', 0), ('filter_id', 0);

-- room_id '' is global account data. stream_id is the account-data stream
-- position of the latest write, which /sync reads changes by.
CREATE TABLE account_data (
    user_id   TEXT    NOT NULL,
    room_id   TEXT    NOT NULL,
    data_type TEXT    NOT NULL,
    content   TEXT    NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);
CREATE INDEX account_data_stream ON account_data (stream_id);

CREATE TABLE filters (
    user_id    TEXT NOT NULL,
    filter_id  TEXT NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE registration_tokens (
    token        TEXT    NOT NULL PRIMARY KEY,
    uses_allowed INTEGER,
    completed    INTEGER NOT NULL DEFAULT 0,
    expiry_ms    INTEGER
);

CREATE TABLE uia_sessions (
    session_id TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT,
    purpose    TEXT    NOT NULL,
    completed  TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX uia_sessions_expiry ON uia_sessions (expires_ms);
