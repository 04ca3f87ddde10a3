//! The room directory (which rooms are published), content reports, and
//! finding events by timestamp.
//!
//! Model: `room_directory` holds one row per room whose visibility was ever
//! set (`public` or `private`); a room without a row is private. `reports`
//! keeps every report as given, for the server's administrators.

use async_trait::async_trait;

use crate::{Direction, RoomRecord, StorageResult, StoredEvent};

/// Rooms [`DirectoryStore::public_rooms`] returns at most.
pub const PUBLIC_ROOMS_MAX: u32 = 10_000;

/// A report of a room (`event_id` `None`) or of one of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReport {
    pub room_id: String,
    pub event_id: Option<String>,
    /// The user who reported it.
    pub reporter: String,
    pub reason: Option<String>,
    /// -100 (most offensive) to 0; event reports only.
    pub score: Option<i64>,
    pub received_ms: i64,
}

/// A stored report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Ascending in the order reports were stored.
    pub report_id: i64,
    pub report: NewReport,
}

#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Publishes (`public`) or unpublishes a room in the directory.
    async fn set_room_public(&self, room_nid: i64, public: bool) -> StorageResult<()>;
    /// Whether the room is published (`false` for a room never set).
    async fn room_is_public(&self, room_nid: i64) -> StorageResult<bool>;
    /// The published rooms, by `room_nid`, at most `limit` (capped at
    /// [`PUBLIC_ROOMS_MAX`]).
    async fn public_rooms(&self, limit: u32) -> StorageResult<Vec<RoomRecord>>;

    /// Stores a report; returns its id.
    async fn create_report(&self, report: &NewReport) -> StorageResult<i64>;
    /// Reports with `report_id > after`, oldest first, at most `limit`.
    async fn reports(&self, after: i64, limit: u32) -> StorageResult<Vec<Report>>;

    /// `Normal` events of a room with `stream_pos <= upto` nearest to `ts`:
    /// `Forward`, those with `origin_server_ts >= ts`, oldest first;
    /// `Backward`, those with `origin_server_ts <= ts`, newest first (ties
    /// by stream position in the same direction). At most `limit`.
    async fn room_events_by_ts(
        &self,
        room_nid: i64,
        ts: i64,
        dir: Direction,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>>;
}
