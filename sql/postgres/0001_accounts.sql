-- Accounts, devices, sessions and the per-user data the client API needs first.
-- Kept table-for-table identical to sql/sqlite/0001_accounts.sql; only the
-- dialect differs (BOOLEAN, BYTEA, sequences for ids and positions).
-- JSON is stored as TEXT, not JSONB: JSONB rejects the escape \u0000 that a
-- client may legally send, and would reorder what it is given.

CREATE TABLE users (
    user_id       TEXT    NOT NULL PRIMARY KEY,
    localpart     TEXT    NOT NULL,
    password_hash TEXT,
    admin         BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms    BIGINT  NOT NULL,
    displayname   TEXT,
    avatar_url    TEXT
);

CREATE TABLE devices (
    user_id      TEXT   NOT NULL REFERENCES users (user_id),
    device_id    TEXT   NOT NULL,
    display_name TEXT,
    last_seen_ip TEXT,
    last_seen_ms BIGINT,
    created_ms   BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Token digests only, never tokens. `refresh_digest` is the refresh token
-- issued together with this access token; `predecessor_refresh_digest` the
-- refresh token this session was refreshed from, kept valid until the first
-- use of this access token (lost responses may be retried until then).
CREATE TABLE access_tokens (
    digest                     BYTEA  NOT NULL PRIMARY KEY,
    user_id                    TEXT   NOT NULL,
    device_id                  TEXT   NOT NULL,
    expires_ms                 BIGINT,
    refresh_digest             BYTEA,
    predecessor_refresh_digest BYTEA,
    created_ms                 BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
CREATE INDEX access_tokens_refresh ON access_tokens (refresh_digest);
CREATE INDEX access_tokens_predecessor ON access_tokens (predecessor_refresh_digest);

CREATE TABLE refresh_tokens (
    digest     BYTEA  NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    device_id  TEXT   NOT NULL,
    expires_ms BIGINT,
    created_ms BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

-- Positions only ever grow, so a reader holding a position never misses a
-- later change. Sequences are not transactional: positions may have gaps,
-- and several writers (cluster nodes) may draw from them at once.
CREATE SEQUENCE account_data_stream_id AS BIGINT;
CREATE SEQUENCE filter_id AS BIGINT;

-- room_id '' is global account data. stream_id is the account-data stream
-- position of the latest write, which /sync reads changes by.
CREATE TABLE account_data (
    user_id   TEXT   NOT NULL,
    room_id   TEXT   NOT NULL,
    data_type TEXT   NOT NULL,
    content   TEXT   NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);
CREATE INDEX account_data_stream ON account_data (stream_id);

CREATE TABLE filters (
    user_id    TEXT  NOT NULL,
    filter_id  TEXT  NOT NULL,
    definition TEXT  NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE registration_tokens (
    token        TEXT   NOT NULL PRIMARY KEY,
    uses_allowed BIGINT,
    completed    BIGINT NOT NULL DEFAULT 0,
    expiry_ms    BIGINT
);

CREATE TABLE uia_sessions (
    session_id TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT,
    purpose    TEXT   NOT NULL,
    completed  TEXT   NOT NULL,
    data       TEXT   NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX uia_sessions_expiry ON uia_sessions (expires_ms);
