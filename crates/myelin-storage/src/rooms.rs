//! The room storage contract: events, state snapshots, memberships, stream
//! positions, transaction ids, aliases and receipts.
//!
//! Model (see DESIGN.md "Storage"):
//! - Rooms, events and `(type, state_key)` pairs are interned to 64-bit ids
//!   (`room_nid`, `event_nid`, `state_key_nid`); state is stored as sets of
//!   those numbers, never as JSON.
//! - A state *snapshot* is a delta over a base snapshot, with a bounded chain
//!   ([`STATE_CHAIN_LENGTH_MAX`]); past that a full snapshot is written. Every
//!   event records the snapshot before it and after it.
//! - Events carry a *stream position* (live sync order) and a *topological*
//!   position (`depth`, then stream position) for `/messages`. Positions are
//!   allocated before the write ([`RoomStore::next_stream_pos`]) so that the
//!   caller can track positions that are allocated but not yet committed and
//!   never let a reader skip one (the room writer's watermark).
//! - Every event row records the slot epoch it was written under (cluster
//!   fencing; 0 on a single node), and a status (normal, outlier, rejected,
//!   soft-failed) so federation needs no schema rewrite.
//! - A local event's state before it is the room's current state. An event
//!   from another server may fork the DAG: its caller gives its state before
//!   ([`StateBefore`]: the state after its one prev event, or a resolved
//!   state written as a delta over the state after its first prev event)
//!   and what the room's head becomes ([`NewHead`]: the forward
//!   extremities, and the resolution of their states as current state).
//!   A delta entry with `event_nid` 0 removes a key (resolution may drop one).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::StorageResult;

/// Events persisted in one transaction at most.
pub const PERSIST_BATCH_MAX: usize = 64;

/// Longest chain of delta snapshots before a full one is written.
pub const STATE_CHAIN_LENGTH_MAX: i64 = 16;

/// Entries a state read (a snapshot, the current state, the members of a
/// room) returns at most; the largest public rooms hold ~10^5 state events.
/// Beyond it the read fails rather than return part of the state: a state
/// missing a ban or a power level is wrong, not merely short.
pub(crate) const STATE_ENTRIES_MAX: i64 = 1_000_000;

/// Event ids looked up per statement by [`RoomStore::events`]: the result is
/// as long as the request at most, but each statement stays small.
pub(crate) const EVENTS_LOOKUP_BATCH: usize = 1_000;

/// `rows` of a state read made with `LIMIT STATE_ENTRIES_MAX + 1`, or an
/// error if the limit was passed.
pub(crate) fn bounded_state<T>(rows: Vec<T>, what: &str) -> StorageResult<Vec<T>> {
    if rows.len() as i64 > STATE_ENTRIES_MAX {
        return Err(crate::StorageError::Backend(format!(
            "{what} has more than {STATE_ENTRIES_MAX} entries; refusing to return part of it"
        )));
    }
    Ok(rows)
}

/// The error for a write naming a room that was never created.
pub(crate) fn unknown_room(room_nid: i64) -> crate::StorageError {
    crate::StorageError::Backend(format!("no room with nid {room_nid}"))
}

/// A room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub room_nid: i64,
    pub room_id: String,
    pub room_version: String,
    pub created_ms: i64,
}

/// Why an event is (or is not) part of the room's visible history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventStatus {
    /// Accepted: part of the timeline and of state.
    #[default]
    Normal,
    /// Known, but with no state computed (fetched for auth chains).
    Outlier,
    /// Failed authorization: stored, never served, never state.
    Rejected,
    /// Passed auth at its position but not against current state: stored,
    /// not sent to clients, not a forward extremity.
    SoftFailed,
}

impl EventStatus {
    pub fn as_i16(self) -> i16 {
        match self {
            Self::Normal => 0,
            Self::Outlier => 1,
            Self::Rejected => 2,
            Self::SoftFailed => 3,
        }
    }

    pub fn from_i16(v: i16) -> Self {
        match v {
            1 => Self::Outlier,
            2 => Self::Rejected,
            3 => Self::SoftFailed,
            _ => Self::Normal,
        }
    }
}

/// The client transaction an event was sent in (idempotence of `PUT …/send/…/{txnId}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxnKey {
    pub user_id: String,
    pub device_id: String,
    pub txn_id: String,
}

/// A room state: `(type, state_key)` to event id (the shape of
/// `myelin_events::StateMap`).
pub type StateMap = HashMap<(String, String), String>;

/// Where the state before an event comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateBefore {
    /// The room's current state: a local event built on the room's head.
    #[default]
    Current,
    /// The state after another event of the room (an event with one prev
    /// event). `Backend` error if that event is unknown or has no state
    /// (an outlier).
    AfterEvent(String),
    /// A state the caller computed (the resolution of the states after the
    /// event's prev events), stored as a delta over the state after `base`
    /// (its first prev event; the same snapshot if nothing differs), keys
    /// missing from `state` removed. Every event of `state` must be an
    /// event of the room whose `(type, state_key)` is its key.
    Resolved { base: String, state: Arc<StateMap> },
}

impl StateBefore {
    /// Whether the caller gave the state (not the room's current state).
    pub fn is_given(&self) -> bool {
        !matches!(self, Self::Current)
    }
}

/// What the room's head becomes with an event whose state was given:
/// its forward extremities and current state are replaced, the current
/// state table and the memberships follow the change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewHead {
    /// Every forward extremity of the room after the event (events of the
    /// room; `Backend` error otherwise).
    pub extremities: Vec<String>,
    /// `None`: the room's current state becomes the state after the event.
    /// `Some`: a resolved state (after a merge: the resolution of the
    /// extremities' states), stored as a delta over the state after the
    /// event.
    pub resolved_state: Option<Arc<StateMap>>,
}

/// An event to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub room_nid: i64,
    pub event_id: String,
    /// The event `type`.
    pub kind: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub depth: i64,
    /// The PDU as canonical JSON, exactly as signed.
    pub json: String,
    /// The events it references; they stop being forward extremities.
    pub prev_events: Vec<String>,
    /// For `m.room.member`: `content.membership` (denormalized for queries).
    pub membership: Option<String>,
    /// For `m.room.redaction`: the event it redacts.
    pub redacts: Option<String>,
    pub txn: Option<TxnKey>,
    /// From [`RoomStore::next_stream_pos`].
    pub stream_pos: i64,
    /// The slot epoch (fencing token) it is written under; 0 on a single node.
    pub slot_epoch: i64,
    pub status: EventStatus,
    /// The members' push rule outcomes that notify or highlight (see
    /// [`crate::push`]), stored in the event's transaction.
    pub push_actions: Vec<crate::PushAction>,
    /// The state before the event. With a given state, a `Normal` or
    /// `SoftFailed` state event makes a snapshot after it (the state before
    /// plus itself: later events may cite it as a prev event); a `Rejected`
    /// one's state after is its state before.
    pub state_before: StateBefore,
    /// `Some`: the room's head after the event, applied whatever its status
    /// (the caller decides). `None`: a `Normal` event moves the room's
    /// current state and extremities itself (a local event on the head);
    /// a `Normal` event with a given state must say what the head becomes.
    pub new_head: Option<NewHead>,
}

/// What persisting produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistedEvent {
    pub event_nid: i64,
    pub stream_pos: i64,
    pub state_before_nid: i64,
    pub state_after_nid: i64,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub event_nid: i64,
    pub room_nid: i64,
    pub room_id: String,
    pub event_id: String,
    pub kind: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub stream_pos: i64,
    /// The PDU's canonical JSON, unredacted.
    pub json: String,
    pub membership: Option<String>,
    pub redacts: Option<String>,
    /// The redaction event that redacted it, if any (serve it redacted).
    pub redacted_by: Option<String>,
    pub state_before_nid: i64,
    pub state_after_nid: i64,
    pub status: EventStatus,
    /// The transaction it was sent in (for `unsigned.transaction_id`, shown
    /// only to the sending device).
    pub txn: Option<TxnKey>,
}

/// One `(type, state_key) → event` entry of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StateEntry {
    pub kind: String,
    pub state_key: String,
    pub event_id: String,
}

/// A topological position: `(depth, stream_pos)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopoPos {
    pub depth: i64,
    pub stream_pos: i64,
}

/// Which way to page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards older events.
    Backward,
    /// Towards newer events.
    Forward,
}

/// A user's current membership in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMembership {
    pub room_nid: i64,
    pub room_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_pos: i64,
    pub forgotten: bool,
}

/// A member of a room as of its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMember {
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
}

/// A read receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub room_nid: i64,
    pub room_id: String,
    pub user_id: String,
    /// `m.read` or `m.read.private`.
    pub receipt_type: String,
    /// `None` for unthreaded receipts; `main` or a thread root's event id.
    pub thread_id: Option<String>,
    pub event_id: String,
    pub ts: i64,
    pub stream_pos: i64,
}

/// A room alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomAlias {
    pub alias: String,
    pub room_id: String,
    pub creator: String,
}

/// One account-data change, for `/sync`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountDataChange {
    /// `None`: global account data.
    pub room_id: Option<String>,
    pub data_type: String,
    pub content: serde_json::Value,
    pub stream_id: i64,
}

/// The streams whose positions sync tokens carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Events,
    Receipts,
    AccountData,
    /// To-device messages ([`crate::ToDeviceStore`]).
    ToDevice,
    /// Device-list changes ([`crate::KeyStore`]).
    DeviceLists,
}

#[async_trait]
pub trait RoomStore: Send + Sync {
    /// Registers a room. [`crate::StorageError::Conflict`] if the id exists.
    async fn create_room(
        &self,
        room_id: &str,
        room_version: &str,
        created_ms: i64,
    ) -> StorageResult<RoomRecord>;
    async fn room(&self, room_id: &str) -> StorageResult<Option<RoomRecord>>;

    /// A new position on `stream`, strictly greater than every position
    /// handed out before (by any process sharing the database). Not
    /// transactional: a position whose write fails leaves a gap.
    async fn next_stream_pos(&self, stream: Stream) -> StorageResult<i64>;
    /// The greatest position handed out on `stream` (0 if none).
    async fn max_stream_pos(&self, stream: Stream) -> StorageResult<i64>;

    /// Persists one event in ONE transaction: the event id locator and row;
    /// for a `Normal` event the state snapshots (before = the room's current
    /// snapshot, or [`NewEvent::state_before`] when given; a state event
    /// makes a new snapshot after it, a delta on that base, full once the
    /// chain reaches [`STATE_CHAIN_LENGTH_MAX`]), the room's current state,
    /// the membership of `state_key` for `m.room.member`, the forward
    /// extremities (minus `prev_events`, plus this event) — or, with
    /// [`NewEvent::new_head`], the head it names, with the current state
    /// and memberships changed to match — the transaction id, and the
    /// redaction mark on `redacts`'s target when it is in the same room.
    /// `Conflict` if the event id or the transaction exists.
    async fn persist_event(&self, event: NewEvent) -> StorageResult<PersistedEvent>;

    /// Persists several events of ONE room, in order, in ONE transaction
    /// (group commit: one durable commit for a burst of sends), each as
    /// [`RoomStore::persist_event`] would. All or nothing: on any error
    /// (`Conflict` included) none is written. At most
    /// [`PERSIST_BATCH_MAX`] events.
    async fn persist_events(&self, events: Vec<NewEvent>) -> StorageResult<Vec<PersistedEvent>>;

    /// The event id a transaction produced in a room. Transactions are
    /// scoped to the room (and the user's device): clients reuse ids across
    /// rooms, and the spec makes them unique per request path.
    async fn txn_event(
        &self,
        room_nid: i64,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
    ) -> StorageResult<Option<String>>;

    async fn event(&self, event_id: &str) -> StorageResult<Option<StoredEvent>>;
    /// The events of `event_ids` that exist, in no particular order.
    async fn events(&self, event_ids: &[String]) -> StorageResult<Vec<StoredEvent>>;

    /// Forward extremities: `(event_id, depth)`.
    async fn forward_extremities(&self, room_nid: i64) -> StorageResult<Vec<(String, i64)>>;
    /// The current state snapshot id of the room (0 before its first event).
    async fn current_snapshot(&self, room_nid: i64) -> StorageResult<i64>;
    /// The events of the room's current state.
    async fn current_state(&self, room_nid: i64) -> StorageResult<Vec<StoredEvent>>;
    async fn current_state_event(
        &self,
        room_nid: i64,
        kind: &str,
        state_key: &str,
    ) -> StorageResult<Option<StoredEvent>>;
    /// Every entry of a snapshot (walking its delta chain).
    async fn state_at(&self, snapshot_nid: i64) -> StorageResult<Vec<StateEntry>>;
    /// One entry of a snapshot, resolved to its event.
    async fn state_event_at(
        &self,
        snapshot_nid: i64,
        kind: &str,
        state_key: &str,
    ) -> StorageResult<Option<StoredEvent>>;

    /// `Normal` events of a room with `after < stream_pos <= upto`, at most
    /// `limit`: the newest ones when `newest_first`, else the oldest; always
    /// returned in the order asked.
    async fn room_events_by_stream(
        &self,
        room_nid: i64,
        after: i64,
        upto: i64,
        limit: u32,
        newest_first: bool,
    ) -> StorageResult<Vec<StoredEvent>>;
    /// `Normal` events of any of `room_nids` with `after < stream_pos <=
    /// upto`, newest first, at most `limit`: what changed in a user's rooms
    /// since a sync token, in one read.
    async fn rooms_events_by_stream(
        &self,
        room_nids: &[i64],
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>>;
    /// `Normal` events of a room in topological order from `from`
    /// (exclusive) towards `dir`, stopping at `to` (exclusive) if given, at
    /// most `limit`, only those with `stream_pos <= upto`.
    async fn room_events_topological(
        &self,
        room_nid: i64,
        from: TopoPos,
        dir: Direction,
        to: Option<TopoPos>,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>>;

    /// The user's current membership in every room they ever had one in.
    async fn user_memberships(&self, user_id: &str) -> StorageResult<Vec<UserMembership>>;
    /// The current members (any membership) of a room.
    async fn room_members(&self, room_nid: i64) -> StorageResult<Vec<RoomMember>>;
    /// Marks a room forgotten by a user (`POST /rooms/{id}/forget`); a new
    /// membership event clears the mark.
    async fn forget_room(&self, user_id: &str, room_nid: i64) -> StorageResult<()>;

    /// [`crate::StorageError::Conflict`] if the alias exists.
    async fn create_alias(&self, alias: &RoomAlias) -> StorageResult<()>;
    async fn alias(&self, alias: &str) -> StorageResult<Option<RoomAlias>>;
    /// `false` if it did not exist.
    async fn delete_alias(&self, alias: &str) -> StorageResult<bool>;
    async fn room_aliases(&self, room_id: &str) -> StorageResult<Vec<String>>;

    /// Stores (replacing the user's previous receipt of that type and thread
    /// in that room) a receipt at `receipt.stream_pos` (from
    /// [`RoomStore::next_stream_pos`] with [`Stream::Receipts`]).
    async fn put_receipt(&self, receipt: &Receipt) -> StorageResult<()>;
    /// Receipts in these rooms with `after < stream_pos <= upto`.
    async fn receipts_between(
        &self,
        room_nids: &[i64],
        after: i64,
        upto: i64,
    ) -> StorageResult<Vec<Receipt>>;
    /// The current receipts of a room (for an initial sync).
    async fn room_receipts(&self, room_nid: i64) -> StorageResult<Vec<Receipt>>;
    /// A user's current receipts in a room: where they read up to.
    async fn user_receipts(&self, room_nid: i64, user_id: &str) -> StorageResult<Vec<Receipt>>;

    /// Account data of a user with `after < stream_id <= upto`.
    async fn account_data_between(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> StorageResult<Vec<AccountDataChange>>;
}

/// Checks what an event says of its state: a `Normal` event with a given
/// state before must name the room's new head.
pub(crate) fn check_state_of(event: &NewEvent) -> StorageResult<()> {
    if event.status == EventStatus::Normal
        && event.state_before.is_given()
        && event.new_head.is_none()
    {
        return Err(crate::StorageError::Backend(format!(
            "event {} has a given state before it but no new room head",
            event.event_id
        )));
    }
    Ok(())
}

/// The error for a state or head naming an event the room does not have.
pub(crate) fn unknown_state_event(event_id: &str, why: &str) -> crate::StorageError {
    crate::StorageError::Backend(format!("state event {event_id}: {why}"))
}

/// The entries of a snapshot to write for `state` over `base` (`(state_key_nid,
/// event_nid)` pairs, sorted): `None` if they are equal; the changed pairs
/// and removals (`event_nid` 0) for a delta, or every pair of `state` for a
/// full snapshot (`true`) when there is no base, its chain is at its limit,
/// or the change is larger than half the state.
pub(crate) fn snapshot_entries(
    base: Option<(&HashMap<i64, i64>, i64)>,
    state: &HashMap<i64, i64>,
) -> Option<(Vec<(i64, i64)>, bool)> {
    let full = || {
        let mut all: Vec<(i64, i64)> = state.iter().map(|(k, e)| (*k, *e)).collect();
        all.sort_unstable();
        all
    };
    let Some((base, chain_length)) = base else {
        return Some((full(), true));
    };
    let mut delta: Vec<(i64, i64)> = state
        .iter()
        .filter(|(k, e)| base.get(k) != Some(e))
        .map(|(k, e)| (*k, *e))
        .chain(
            base.keys()
                .filter(|k| !state.contains_key(k))
                .map(|k| (*k, 0)),
        )
        .collect();
    if delta.is_empty() {
        return None;
    }
    if chain_length >= STATE_CHAIN_LENGTH_MAX || delta.len() > state.len() / 2 + 1 {
        return Some((full(), true));
    }
    delta.sort_unstable();
    Some((delta, false))
}

/// The changes from the current state `old` to `new` (`state_key_nid →
/// event_nid`): `(state_key_nid, Some(event_nid))` set, `None` removed.
pub(crate) fn state_changes(
    old: &HashMap<i64, i64>,
    new: &HashMap<i64, i64>,
) -> Vec<(i64, Option<i64>)> {
    let mut changes: Vec<(i64, Option<i64>)> = new
        .iter()
        .filter(|(k, e)| old.get(k) != Some(e))
        .map(|(k, e)| (*k, Some(*e)))
        .chain(
            old.keys()
                .filter(|k| !new.contains_key(k))
                .map(|k| (*k, None)),
        )
        .collect();
    changes.sort_unstable();
    changes
}

/// Checks a [`RoomStore::persist_events`] batch: bounded, one room.
pub(crate) fn check_batch(events: &[NewEvent]) -> StorageResult<()> {
    if events.len() > PERSIST_BATCH_MAX {
        return Err(crate::StorageError::Backend(format!(
            "a batch of {} events is over the limit of {PERSIST_BATCH_MAX}",
            events.len()
        )));
    }
    if events.windows(2).any(|w| w[0].room_nid != w[1].room_nid) {
        return Err(crate::StorageError::Backend(
            "a batch spans several rooms".to_owned(),
        ));
    }
    Ok(())
}
