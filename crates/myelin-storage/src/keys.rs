//! End-to-end encryption keys: device identity keys, one-time keys, fallback
//! keys, and the log of device-list changes `/keys/changes` reads.
//!
//! Model: a device's signed `device_keys` object is kept as given (one row
//! per device). One-time keys are rows that a claim deletes, so each is
//! handed out once even under concurrent claims. A device has at most one
//! fallback key per algorithm; a claim that finds no one-time key returns it
//! and marks it used, but it stays available until the device uploads a new
//! one, which replaces it.
//!
//! Cross-signing keys are kept one per user and usage, as uploaded.
//! Signatures uploaded later (`/keys/signatures/upload`) are rows of their
//! own, keyed by the target key and the signing key, merged into the key
//! objects when they are served.
//!
//! Device-list changes are logged at positions of the device-list stream
//! ([`crate::Stream::DeviceLists`]), which the caller allocates (the
//! writer's tracker) and sync tokens carry.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use crate::StorageResult;

/// A one-time or fallback key: `<algorithm>:<key_id>` and its JSON (a signed
/// key object, or a bare key string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeKey {
    pub algorithm: String,
    pub key_id: String,
    pub key: Value,
}

/// A device's identity keys as `/keys/query` serves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKeys {
    pub device_id: String,
    /// The signed `device_keys` object as uploaded.
    pub keys: Value,
    /// The device's display name (`unsigned.device_display_name`).
    pub display_name: Option<String>,
}

/// What a cross-signing key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrossSigningUsage {
    Master,
    SelfSigning,
    UserSigning,
}

impl CrossSigningUsage {
    /// The spec's name of the usage (`master`, `self_signing`,
    /// `user_signing`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::SelfSigning => "self_signing",
            Self::UserSigning => "user_signing",
        }
    }
}

/// One signature by `signer_user_id`'s key `signer_key_id` (for example
/// `ed25519:<public key>`) over `target_user_id`'s key `target_key_id` (a
/// device id, or a cross-signing public key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeySignature {
    pub target_user_id: String,
    pub target_key_id: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The `device_keys` object the device uploaded, if any.
    async fn device_keys(&self, user_id: &str, device_id: &str) -> StorageResult<Option<Value>>;
    /// Stores the device's `device_keys` object, replacing an earlier one,
    /// and logs a device-list change of `user_id` at `stream_pos` — unless
    /// the object is unchanged, when nothing is written (`false`).
    async fn put_device_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &Value,
        stream_pos: i64,
    ) -> StorageResult<bool>;
    /// Logs a device-list change of `user_id` at `stream_pos` (a device
    /// deleted, say).
    async fn log_device_list_change(&self, user_id: &str, stream_pos: i64) -> StorageResult<()>;
    /// The identity keys of the user's existing devices: every device with
    /// keys when `device_ids` is empty, else those listed, by device id.
    async fn user_device_keys(
        &self,
        user_id: &str,
        device_ids: &[String],
    ) -> StorageResult<Vec<DeviceKeys>>;
    /// Adds one-time keys in one transaction. A key id already stored with
    /// the same JSON is left as it is; with different JSON the whole call
    /// fails with [`crate::StorageError::Conflict`] and stores nothing.
    async fn put_one_time_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[OneTimeKey],
    ) -> StorageResult<()>;
    /// Unclaimed one-time keys of the device, per algorithm (algorithms
    /// without keys are absent).
    async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StorageResult<BTreeMap<String, i64>>;
    /// Stores fallback keys, each replacing the device's fallback key of its
    /// algorithm (a new key starts unused).
    async fn put_fallback_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[OneTimeKey],
    ) -> StorageResult<()>;
    /// The algorithms of the device's fallback keys not yet claimed, sorted.
    async fn unused_fallback_key_types(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StorageResult<Vec<String>>;
    /// Claims a one-time key of `algorithm` (deleting it, so no other claim
    /// gets it); without one, the fallback key of the algorithm (marked used,
    /// still available); `None` if neither exists.
    async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> StorageResult<Option<OneTimeKey>>;
    /// Users with a device-list change at a position in `after < pos <=
    /// upto`, sorted, each once.
    async fn device_list_changes(&self, after: i64, upto: i64) -> StorageResult<Vec<String>>;
    /// The user's cross-signing key of `usage`, as uploaded.
    async fn cross_signing_key(
        &self,
        user_id: &str,
        usage: CrossSigningUsage,
    ) -> StorageResult<Option<Value>>;
    /// Stores cross-signing keys of the user (each replacing the key of its
    /// usage) and logs a device-list change of `user_id` at `stream_pos`,
    /// in one transaction.
    async fn put_cross_signing_keys(
        &self,
        user_id: &str,
        keys: &[(CrossSigningUsage, Value)],
        stream_pos: i64,
    ) -> StorageResult<()>;
    /// Stores signatures over keys of `target_user_id` (each replacing an
    /// earlier one by the same signing key over the same key) and logs a
    /// device-list change of `target_user_id` at `stream_pos`, in one
    /// transaction. Signatures over other users' keys are skipped.
    async fn put_key_signatures(
        &self,
        target_user_id: &str,
        signatures: &[KeySignature],
        stream_pos: i64,
    ) -> StorageResult<()>;
    /// The stored signatures over keys of `target_user_id`, sorted.
    async fn key_signatures(&self, target_user_id: &str) -> StorageResult<Vec<KeySignature>>;
}
