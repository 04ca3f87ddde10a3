//! The relation storage contract: which events relate to which
//! (`content.m.relates_to`), for the relations endpoint, bundled
//! aggregations, reactions and threads.
//!
//! A relation is recorded when its event is persisted (in the same
//! transaction, [`relation_of`] reading the event's JSON), for `Normal`
//! events only, and forgotten when the event is redacted. Storage records
//! relations as they are; which edit is valid, who may react twice and the
//! like are decided by the callers.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#forming-relationships-between-events>

use async_trait::async_trait;

use crate::{Direction, NewEvent, StorageResult, StoredEvent, TopoPos};

/// Levels [`RelationStore::relations_page`] follows at most when asked to
/// recurse (the spec recommends at least 3).
pub const RELATION_DEPTH_MAX: u32 = 3;

/// Rows one aggregation read returns at most (per kind of aggregation).
pub const AGGREGATION_ROWS_MAX: i64 = 10_000;

/// The parent ids one aggregation read takes at most per statement.
pub(crate) const AGGREGATION_IDS_BATCH: usize = 1_000;

/// What an event's `content.m.relates_to` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub relates_to_id: String,
    pub rel_type: String,
    /// `key` of an `m.annotation`.
    pub annotation_key: Option<String>,
}

/// The relation of an event about to be persisted, if it has a well-formed
/// one (`rel_type` and `event_id` strings).
pub fn relation_of(event: &NewEvent) -> Option<Relation> {
    let value: serde_json::Value = serde_json::from_str(&event.json).ok()?;
    let relates_to = value.get("content")?.get("m.relates_to")?;
    let rel_type = relates_to.get("rel_type")?.as_str()?;
    let relates_to_id = relates_to.get("event_id")?.as_str()?;
    let annotation_key = (rel_type == "m.annotation")
        .then(|| relates_to.get("key").and_then(|k| k.as_str()))
        .flatten()
        .map(str::to_owned);
    Some(Relation {
        relates_to_id: relates_to_id.to_owned(),
        rel_type: rel_type.to_owned(),
        annotation_key,
    })
}

/// A relating event, in short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationRef {
    pub relates_to_id: String,
    pub event_id: String,
    pub sender: String,
    pub kind: String,
}

/// A thread, as its root's `m.thread` aggregation shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSummary {
    pub root_id: String,
    /// Replies (events with an `m.thread` relation to the root).
    pub count: i64,
    /// The latest reply, topologically.
    pub latest_event_id: String,
    /// Whether the user asked about sent a reply.
    pub participated: bool,
}

/// The aggregations of a set of parents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelationAggregations {
    /// Per parent, the latest non-state `m.replace` of each `(sender, type)`
    /// (the caller keeps the one whose sender and type match the parent's).
    pub replacements: Vec<RelationRef>,
    pub threads: Vec<ThreadSummary>,
    /// `m.reference`s, per parent in topological order.
    pub references: Vec<RelationRef>,
}

/// A thread of a room, for `GET /threads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRoot {
    pub root_id: String,
    /// The stream position of its latest reply (threads are listed by it).
    pub latest_stream_pos: i64,
}

/// Filters of [`RelationStore::relations_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationsQuery {
    pub room_nid: i64,
    pub parent_id: String,
    pub rel_type: Option<String>,
    /// The event `type` of the children.
    pub kind: Option<String>,
    /// Levels of relations followed: 1 for direct children only, at most
    /// [`RELATION_DEPTH_MAX`].
    pub depth: u32,
    /// Start (exclusive), as `RoomStore::room_events_topological`.
    pub from: TopoPos,
    pub dir: Direction,
    /// Stop (exclusive).
    pub to: Option<TopoPos>,
    /// Only children with `stream_pos <= upto`.
    pub upto: i64,
    pub limit: u32,
}

#[async_trait]
pub trait RelationStore: Send + Sync {
    /// `Normal` children of a parent (and, with `depth > 1`, their children
    /// in turn) in topological order from `from` towards `dir`.
    async fn relations_page(&self, query: &RelationsQuery) -> StorageResult<Vec<StoredEvent>>;

    /// The aggregations of the parents `event_ids` of one room, counting
    /// children with `stream_pos <= upto` (the caller's visibility bound:
    /// `i64::MAX` for a joined viewer, the position of their departure for
    /// one who left) not sent by any of `excluded_senders` (a viewer's
    /// ignored users: neither counted nor picked as a thread's latest reply,
    /// an edit or a reference); `user_id` is the one
    /// [`ThreadSummary::participated`] is about.
    async fn relation_aggregations(
        &self,
        room_nid: i64,
        event_ids: &[String],
        user_id: &str,
        upto: i64,
        excluded_senders: &[String],
    ) -> StorageResult<RelationAggregations>;

    /// Whether `sender` has an (unredacted) `m.annotation` with `key` on the event.
    async fn annotation_exists(
        &self,
        room_nid: i64,
        relates_to_id: &str,
        sender: &str,
        key: &str,
    ) -> StorageResult<bool>;

    /// Threads of a room by latest reply, newest first, those whose latest
    /// reply is before `before` (a stream position) if given, at most
    /// `limit`. With `participant`, only threads that user started or
    /// replied to.
    async fn thread_roots(
        &self,
        room_nid: i64,
        participant: Option<&str>,
        before: Option<i64>,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<ThreadRoot>>;
}
