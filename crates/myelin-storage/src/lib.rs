//! Storage: narrow traits per consumer, and two backends that implement them.
//!
//! - [`sqlite`]: the embedded default (rusqlite, WAL, one writer connection and a
//!   pool of readers).
//! - [`postgres`]: the cluster backend (tokio-postgres + deadpool-postgres).
//!
//! Both pass the one contract suite in `tests/contract.rs`.
//!
//! Architecture Invariant: SQL lives only in the backend modules, and each
//! dialect only in its own module; callers see the traits of this file.
//! Architecture Invariant: the storage layer stores what it is given — it hashes
//! nothing and decides no policy (the API layer digests tokens, hashes
//! passwords and checks expiry).

pub mod backup;
pub mod directory;
pub mod keys;
pub mod media;
mod migrate;
pub mod postgres;
pub mod push;
pub mod relations;
pub mod rooms;
pub mod search;
pub mod sqlite;
pub mod to_device;

use async_trait::async_trait;
use std::sync::Arc;

pub use backup::{BackedUpSession, BackupScope, BackupStore, BackupUpload, BackupVersion};
pub use directory::{DirectoryStore, NewReport, Report};
pub use keys::{CrossSigningUsage, DeviceKeys, KeySignature, KeyStore, OneTimeKey};
pub use media::{MediaContent, MediaRecord, MediaStore, MediaThumbnail};
pub use migrate::{Migration, MigrationReport};
pub use push::{Notification, PushAction, PushStore, Pusher, UnreadAction};
pub use relations::{
    RelationAggregations, RelationRef, RelationStore, RelationsQuery, ThreadRoot, ThreadSummary,
};
pub use rooms::{
    AccountDataChange, Direction, EventStatus, NewEvent, NewHead, PersistedEvent, Receipt,
    RoomAlias, RoomMember, RoomRecord, RoomStore, StateBefore, StateEntry, StoredEvent, Stream,
    TopoPos, TxnKey, UserMembership,
};
pub use search::{SearchHit, SearchKey, SearchOrder, SearchPage, SearchQuery, SearchStore};
pub use to_device::{ToDeviceMessage, ToDeviceRecipient, ToDeviceStore};

/// Every failure of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A unique key already exists (a taken user id, device id, …).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database schema is newer than this build of Myelin.
    #[error(
        "the database schema is at version {found}, newer than this server's {supported}; upgrade Myelin"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// The database cannot be reached or opened.
    #[error("cannot open the database: {0}")]
    Connect(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Backend(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A local account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `@localpart:server`, lowercase localpart.
    pub user_id: String,
    pub localpart: String,
    /// argon2id PHC string; `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    pub admin: bool,
    pub deactivated: bool,
    pub created_ms: i64,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// What registration stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub user_id: String,
    pub localpart: String,
    pub password_hash: Option<String>,
    pub admin: bool,
    pub created_ms: i64,
    /// Registration sets the display name to the localpart, as Synapse does.
    pub displayname: Option<String>,
}

/// A device of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ms: Option<i64>,
    pub created_ms: i64,
}

/// A user's dehydrated device (MSC3814): a device without a session whose
/// to-device messages a later device of the user reads, and the client's
/// encrypted `device_data` to rehydrate it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DehydratedDevice {
    pub user_id: String,
    pub device_id: String,
    pub device_data: serde_json::Value,
    pub created_ms: i64,
}

/// A session's token pair as stored: digests only, never the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub user_id: String,
    pub device_id: String,
    pub access_digest: Vec<u8>,
    /// `None` for an access token that never expires.
    pub access_expires_ms: Option<i64>,
    /// Present when the client asked for a refresh token.
    pub refresh_digest: Option<Vec<u8>>,
    pub refresh_expires_ms: Option<i64>,
    pub created_ms: i64,
}

/// What an access token resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub user_id: String,
    pub device_id: String,
    pub expires_ms: Option<i64>,
    /// The digest it was looked up by (for the caller's constant-time check).
    pub digest: Vec<u8>,
    /// Set while the refresh token this session was refreshed from is still
    /// valid: the first use of the new access token retires it.
    pub has_predecessor: bool,
}

/// What a refresh token resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub user_id: String,
    pub device_id: String,
    pub expires_ms: Option<i64>,
    pub digest: Vec<u8>,
}

/// A registration token (`m.login.registration_token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    pub token: String,
    /// `None`: unlimited uses.
    pub uses_allowed: Option<i64>,
    /// Registrations completed with it.
    pub completed: i64,
    /// `None`: never expires.
    pub expiry_ms: Option<i64>,
}

/// A user-interactive authentication session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiaSession {
    pub session_id: String,
    /// The user it authenticates, `None` during registration.
    pub user_id: Option<String>,
    /// What the session authorizes (`register`, `password`, `deactivate`,
    /// `delete_devices`), so a session cannot be replayed on another endpoint.
    pub purpose: String,
    /// Stages completed so far.
    pub completed: Vec<String>,
    /// Stage data kept for the final request (the registration token used).
    pub data: serde_json::Value,
    pub expires_ms: i64,
}

/// One `user_directory/search` hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// Accounts and profiles.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates an account; [`StorageError::Conflict`] if the user id exists.
    async fn create_user(&self, user: NewUser) -> StorageResult<()>;
    /// The account with this exact (lowercase-localpart) user id.
    async fn user(&self, user_id: &str) -> StorageResult<Option<User>>;
    async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> StorageResult<()>;
    /// Marks the account deactivated, drops its password, profile, devices
    /// and every token, in one transaction.
    async fn deactivate_user(&self, user_id: &str) -> StorageResult<()>;
    async fn set_displayname(&self, user_id: &str, displayname: Option<&str>) -> StorageResult<()>;
    async fn set_avatar_url(&self, user_id: &str, avatar_url: Option<&str>) -> StorageResult<()>;
    /// Active accounts whose user id or display name contains `term`
    /// (case-insensitively), at most `limit`, ordered by user id.
    async fn search_users(&self, term: &str, limit: u32) -> StorageResult<Vec<DirectoryUser>>;
    /// Number of accounts (for metrics and the first-user check).
    async fn count_users(&self) -> StorageResult<i64>;
}

/// Devices and their sessions (access and refresh tokens).
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Creates the device if it does not exist (keeping an existing device's
    /// display name), then stores the session.
    async fn create_session(
        &self,
        session: NewSession,
        display_name: Option<&str>,
        ip: Option<&str>,
    ) -> StorageResult<()>;
    /// The session of an access-token digest, expired or not.
    async fn access_token(&self, digest: &[u8]) -> StorageResult<Option<AccessToken>>;
    /// Retires the refresh token a session was refreshed from (called on the
    /// first use of the new access token).
    async fn retire_predecessor(&self, access_digest: &[u8]) -> StorageResult<()>;
    /// The session of a refresh-token digest.
    async fn refresh_token(&self, digest: &[u8]) -> StorageResult<Option<RefreshToken>>;
    /// Replaces the session of `old_refresh_digest` by `new` in one
    /// transaction: the old access token dies at once, the old refresh token
    /// stays valid until `new` is first used (the spec's rule for lost
    /// responses), and any session an earlier refresh from the same old
    /// token produced is dropped. `false` if the old token is unknown.
    async fn refresh_session(
        &self,
        old_refresh_digest: &[u8],
        new: NewSession,
    ) -> StorageResult<bool>;
    /// Deletes one device and all its tokens. `false` if it did not exist.
    async fn delete_device(&self, user_id: &str, device_id: &str) -> StorageResult<bool>;
    /// Deletes every device of the user (and their tokens) but `keep`.
    async fn delete_devices_except(&self, user_id: &str, keep: Option<&str>) -> StorageResult<()>;
    async fn device(&self, user_id: &str, device_id: &str) -> StorageResult<Option<Device>>;
    async fn devices(&self, user_id: &str) -> StorageResult<Vec<Device>>;
    /// `false` if the device does not exist.
    async fn set_device_display_name(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> StorageResult<bool>;
    async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        ip: Option<&str>,
        seen_ms: i64,
    ) -> StorageResult<()>;
    /// The user's dehydrated device (MSC3814), if any.
    async fn dehydrated_device(&self, user_id: &str) -> StorageResult<Option<DehydratedDevice>>;
    /// Makes a new device, without a session, the user's dehydrated device,
    /// in one transaction: the previous dehydrated device is deleted first,
    /// with all it holds (keys, inbox). [`StorageError::Conflict`] if the
    /// user has another device with this id. Returns the replaced device's
    /// id.
    async fn put_dehydrated_device(
        &self,
        device: DehydratedDevice,
        display_name: Option<&str>,
    ) -> StorageResult<Option<String>>;
    /// Deletes the user's dehydrated device with all it holds; its id, or
    /// `None` if the user had none.
    async fn delete_dehydrated_device(&self, user_id: &str) -> StorageResult<Option<String>>;
}

/// Per-user and per-room account data.
#[async_trait]
pub trait AccountDataStore: Send + Sync {
    /// `room_id` `None` is global account data. Replaces any earlier value.
    /// `stream_id` is its account-data stream position, allocated by the
    /// caller (see `RoomStore::next_stream_pos` and the writer's tracker).
    async fn put_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        data_type: &str,
        content: &serde_json::Value,
        stream_id: i64,
    ) -> StorageResult<()>;
    async fn account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        data_type: &str,
    ) -> StorageResult<Option<serde_json::Value>>;
}

/// Stored filters.
#[async_trait]
pub trait FilterStore: Send + Sync {
    /// Stores a definition and returns its id (unique per user).
    async fn create_filter(
        &self,
        user_id: &str,
        definition: &serde_json::Value,
    ) -> StorageResult<String>;
    async fn filter(
        &self,
        user_id: &str,
        filter_id: &str,
    ) -> StorageResult<Option<serde_json::Value>>;
}

/// Registration tokens.
#[async_trait]
pub trait RegistrationTokenStore: Send + Sync {
    /// [`StorageError::Conflict`] if the token exists.
    async fn create_registration_token(&self, token: RegistrationToken) -> StorageResult<()>;
    async fn registration_token(&self, token: &str) -> StorageResult<Option<RegistrationToken>>;
    async fn registration_tokens(&self) -> StorageResult<Vec<RegistrationToken>>;
    /// Counts one completed registration, only while the token is still
    /// usable at `now_ms`; `false` if it was not.
    async fn use_registration_token(&self, token: &str, now_ms: i64) -> StorageResult<bool>;
    async fn delete_registration_token(&self, token: &str) -> StorageResult<bool>;
}

/// User-interactive authentication sessions.
#[async_trait]
pub trait UiaStore: Send + Sync {
    async fn create_uia_session(&self, session: UiaSession) -> StorageResult<()>;
    /// The session, if it exists and has not expired at `now_ms`.
    async fn uia_session(&self, session_id: &str, now_ms: i64)
    -> StorageResult<Option<UiaSession>>;
    /// Records a completed stage (idempotent) and replaces the stage data.
    async fn complete_uia_stage(
        &self,
        session_id: &str,
        stage: &str,
        data: &serde_json::Value,
    ) -> StorageResult<()>;
    async fn delete_uia_session(&self, session_id: &str) -> StorageResult<()>;
    /// Deletes sessions expired at `now_ms`; returns how many.
    async fn purge_expired_uia_sessions(&self, now_ms: i64) -> StorageResult<u64>;
}

/// Connection-pool figures for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u64,
    pub in_use: u64,
}

/// Everything a server needs from its database.
#[async_trait]
pub trait Storage:
    UserStore
    + DeviceStore
    + AccountDataStore
    + FilterStore
    + RegistrationTokenStore
    + UiaStore
    + RoomStore
    + RelationStore
    + DirectoryStore
    + SearchStore
    + PushStore
    + KeyStore
    + ToDeviceStore
    + BackupStore
    + MediaStore
{
    /// `sqlite` or `postgres`.
    fn backend_name(&self) -> &'static str;
    fn pool_stats(&self) -> PoolStats;
    /// Closes connections (after the last request finished).
    async fn close(&self);
}

/// A handle to the storage shared by the whole server.
pub type DynStorage = Arc<dyn Storage>;

/// Opens the database at `url` (`sqlite:PATH` or `postgres://…`), applies
/// pending migrations, and refuses a schema newer than this build.
pub async fn open(
    url: &myelin_core::config::DatabaseUrl,
    options: &OpenOptions,
) -> StorageResult<(DynStorage, MigrationReport)> {
    match url {
        myelin_core::config::DatabaseUrl::Sqlite(path) => {
            let (store, report) = sqlite::SqliteStorage::open(path, options).await?;
            Ok((Arc::new(store), report))
        }
        myelin_core::config::DatabaseUrl::Postgres(url) => {
            let (store, report) = postgres::PostgresStorage::open(url, options).await?;
            Ok((Arc::new(store), report))
        }
    }
}

/// How to open a database.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// PostgreSQL pool size.
    pub pool_size: u32,
    /// SQLite reader connections.
    pub sqlite_readers: u32,
    /// Apply pending migrations (`false`: only check the schema version and
    /// fail if migrations are pending).
    pub migrate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            sqlite_readers: 4,
            migrate: true,
        }
    }
}
