-- Cross-signing: each user's master, self-signing and user-signing keys,
-- and the signatures uploaded with /keys/signatures/upload. Kept
-- table-for-table identical to sql/sqlite/0010_cross_signing.sql.

-- One key per user and usage (`master`, `self_signing`, `user_signing`),
-- the key object as uploaded; a new upload replaces it.
CREATE TABLE cross_signing_keys (
    user_id  TEXT NOT NULL,
    usage    TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, usage)
);

-- A signature by a signer's key (`ed25519:<device id>` or
-- `ed25519:<cross-signing public key>`) over a target user's key (a device
-- id, or a cross-signing public key).
CREATE TABLE key_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id  TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
