//! Server-side key backups (`/room_keys`): versions of a user's backup and
//! the megolm sessions backed up in each.
//!
//! Model: a user's versions are numbered 1, 2, … (never reused, even after a
//! deletion); the current version is the newest one not deleted. A deleted
//! version keeps its row (flagged) so deleting it again succeeds, and loses
//! its sessions. Each version has an etag counter that moves whenever its
//! sessions change. Uploads go only to the current version, and keep an
//! existing session unless the new one is better ([`replaces`]); the check and
//! the write are one transaction.

use async_trait::async_trait;
use serde_json::Value;

use crate::StorageResult;

/// One version of a user's backup (never a deleted one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: Value,
    /// Moves whenever the version's sessions change.
    pub etag: i64,
    /// Sessions stored in the version.
    pub count: i64,
}

/// One backed-up megolm session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackedUpSession {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: Value,
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupUpload {
    /// Stored (the sessions that were better than those kept); the version's
    /// etag and count afterwards.
    Stored { etag: i64, count: i64 },
    /// The user has no current version.
    NoVersion,
    /// The version is not the current one, which is `current`.
    WrongVersion { current: i64 },
}

/// Which sessions of a version a read or a deletion covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupScope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

/// The spec's rule for an upload of a session the backup already holds:
/// the new one replaces the old only if it is better — verified beats
/// unverified, then the lower `first_message_index`, then the lower
/// `forwarded_count`.
pub fn replaces(existing: &BackedUpSession, new: &BackedUpSession) -> bool {
    if existing.is_verified != new.is_verified {
        return new.is_verified;
    }
    if existing.first_message_index != new.first_message_index {
        return new.first_message_index < existing.first_message_index;
    }
    new.forwarded_count < existing.forwarded_count
}

#[async_trait]
pub trait BackupStore: Send + Sync {
    /// Creates a version (numbered after every version the user ever had);
    /// returns its number.
    async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &Value,
    ) -> StorageResult<i64>;
    /// A version, or the current one for `None`; `None` if it does not
    /// exist or was deleted.
    async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> StorageResult<Option<BackupVersion>>;
    /// Replaces a version's `auth_data`; `false` if it does not exist or was
    /// deleted.
    async fn update_backup_auth_data(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &Value,
    ) -> StorageResult<bool>;
    /// Deletes a version and its sessions; `false` if it never existed
    /// (deleting a deleted version again is `true`).
    async fn delete_backup_version(&self, user_id: &str, version: i64) -> StorageResult<bool>;
    /// Stores sessions in `version` if it is the current version, keeping
    /// each existing session that `new` does not [`replaces`].
    async fn put_backup_sessions(
        &self,
        user_id: &str,
        version: i64,
        sessions: &[BackedUpSession],
    ) -> StorageResult<BackupUpload>;
    /// The sessions of a version in `scope`, ordered by room then session;
    /// `None` if the version does not exist or was deleted.
    async fn backup_sessions(
        &self,
        user_id: &str,
        version: i64,
        scope: BackupScope<'_>,
    ) -> StorageResult<Option<Vec<BackedUpSession>>>;
    /// Deletes the sessions of a version in `scope`; the version's etag and
    /// count afterwards, `None` if the version does not exist or was deleted.
    async fn delete_backup_sessions(
        &self,
        user_id: &str,
        version: i64,
        scope: BackupScope<'_>,
    ) -> StorageResult<Option<(i64, i64)>>;
}
