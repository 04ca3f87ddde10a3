//! Notifications and pushers.
//!
//! Model: the room writer evaluates every member's push rules when it
//! creates an event, and the outcome for each user whose matching rule
//! notifies or highlights is an `event_push_actions` row written in the
//! event's own transaction (so counts never lag behind `/sync`). Unread
//! counts are those rows after the user's read receipt; `/notifications`
//! lists them; each pusher delivers them in stream order, remembering the
//! last position it delivered (`pushers.last_stream_pos`), so delivery
//! resumes after a restart without losing or repeating any.
//!
//! A redaction deletes its target's rows, and leaving a room deletes the
//! leaver's rows in it: neither counts any more.

use async_trait::async_trait;
use serde_json::Value;

use crate::StorageResult;

/// Rows a notification query returns at most.
pub const NOTIFICATIONS_PAGE_MAX: u32 = 1_000;

/// The outcome of a user's push rules for one event, given with the event
/// ([`crate::NewEvent::push_actions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAction {
    pub user_id: String,
    /// The thread root's event id for an event in a thread (`m.thread`);
    /// `None` on the main timeline.
    pub thread_id: Option<String>,
    /// The actions include `notify` (counted in `notification_count`).
    pub notify: bool,
    /// The `highlight` tweak is set (counted in `highlight_count`).
    pub highlight: bool,
    /// The matching rule's actions, as given (`/notifications` shows them
    /// and a pusher passes their tweaks on).
    pub actions: Value,
}

/// A stored notification: a push action with its event's place.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub room_nid: i64,
    pub room_id: String,
    pub event_id: String,
    /// The event's stream position (its order, and `/notifications` tokens).
    pub stream_pos: i64,
    pub thread_id: Option<String>,
    pub notify: bool,
    pub highlight: bool,
    pub actions: Value,
    /// The event's `origin_server_ts`.
    pub ts: i64,
}

/// One notifying event counted for unread counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadAction {
    pub stream_pos: i64,
    pub thread_id: Option<String>,
    pub highlight: bool,
}

/// A pusher (`POST /pushers/set`), unique per user, `app_id` and `pushkey`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pusher {
    pub user_id: String,
    /// The device whose session set it: deleting the device deletes it.
    pub device_id: Option<String>,
    pub app_id: String,
    pub pushkey: String,
    /// `http` (or `email`, stored but not delivered).
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The pusher's `data` object (`url`, `format`, …).
    pub data: Value,
    pub created_ms: i64,
    /// Notifications up to this event stream position are delivered (or
    /// were older than the pusher).
    pub last_stream_pos: i64,
    /// When delivery started failing without a success since, if it has.
    pub failing_since_ms: Option<i64>,
}

#[async_trait]
pub trait PushStore: Send + Sync {
    /// A user's notifying actions in a room with `after < stream_pos <=
    /// upto`, oldest first, at most `limit` (capped at
    /// [`NOTIFICATIONS_PAGE_MAX`]).
    async fn unread_actions(
        &self,
        user_id: &str,
        room_nid: i64,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<UnreadAction>>;
    /// A user's notifications with `stream_pos < before` (any when `None`)
    /// and `<= upto`, newest first, at most `limit` (capped); only
    /// highlights with `highlight_only`.
    async fn notifications(
        &self,
        user_id: &str,
        before: Option<i64>,
        upto: i64,
        limit: u32,
        highlight_only: bool,
    ) -> StorageResult<Vec<Notification>>;
    /// A user's notifications that notify, with `after < stream_pos <=
    /// upto`, oldest first, at most `limit` (capped): what a pusher sends.
    async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<Notification>>;
    /// The user's notifying actions after their read receipt (`m.read` or
    /// `m.read.private`, unthreaded or on the main timeline) in each room,
    /// summed over rooms: the badge a pusher sends as `counts.unread`.
    async fn unread_notification_total(&self, user_id: &str) -> StorageResult<u64>;

    /// Creates the pusher, or replaces the one with the same user, `app_id`
    /// and `pushkey` (keeping its `created_ms`, `last_stream_pos` and
    /// `failing_since_ms`).
    async fn put_pusher(&self, pusher: &Pusher) -> StorageResult<()>;
    /// `false` if there was none.
    async fn delete_pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> StorageResult<bool>;
    /// Deletes the pushers with this `app_id` and `pushkey` of every user but
    /// `except_user` (`append: false`); returns the users whose were deleted.
    async fn delete_pushers_of_key(
        &self,
        app_id: &str,
        pushkey: &str,
        except_user: &str,
    ) -> StorageResult<Vec<String>>;
    /// Deletes the pushers set by a device; returns their `(app_id, pushkey)`.
    async fn delete_device_pushers(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StorageResult<Vec<(String, String)>>;
    /// A user's pushers, by `app_id` and `pushkey`.
    async fn pushers(&self, user_id: &str) -> StorageResult<Vec<Pusher>>;
    /// Every pusher (for starting delivery).
    async fn all_pushers(&self) -> StorageResult<Vec<Pusher>>;
    /// Records a pusher's delivery progress; `false` if the pusher is gone.
    async fn set_pusher_progress(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
        last_stream_pos: i64,
        failing_since_ms: Option<i64>,
    ) -> StorageResult<bool>;
}
