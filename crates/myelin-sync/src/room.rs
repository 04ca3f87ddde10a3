//! The pieces of one room's entry: timeline, state, ephemeral events,
//! summary and unread counts.

use myelin_core::{MatrixError, MatrixResult};
use myelin_rooms::push::ReadMarks;
use myelin_rooms::read::filter_visible;
use myelin_storage::{Receipt, Storage, StorageResult, StoredEvent};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::filter::SyncFilter;

/// Events read per query while filling a timeline (a filter or history
/// visibility may drop some, so the timeline may take several reads).
pub const TIMELINE_BATCH_MAX: usize = 200;
/// Events looked at per room to fill one timeline, at most. Past it the
/// timeline is returned as it is, `limited`, and the client paginates.
pub const TIMELINE_SCAN_MAX: usize = 2_000;
/// Notifying events counted per room, at most: "999+" is all a client
/// shows anyway.
pub const UNREAD_SCAN_MAX: u32 = 1_000;
/// Heroes in a room summary.
pub const HEROES_MAX: usize = 5;

pub(crate) fn db<T>(result: StorageResult<T>) -> MatrixResult<T> {
    result.map_err(MatrixError::internal)
}

/// The state snapshot after the last event of a room at or before stream
/// position `pos` (0: no event yet, the empty state).
pub(crate) async fn snapshot_at(
    storage: &dyn Storage,
    room_nid: i64,
    pos: i64,
) -> MatrixResult<i64> {
    let last = db(storage
        .room_events_by_stream(room_nid, i64::MIN, pos, 1, true)
        .await)?;
    Ok(last.first().map_or(0, |e| e.state_after_nid))
}

/// A user's membership event in a room as of stream position `pos`.
pub(crate) async fn membership_at(
    storage: &dyn Storage,
    room_nid: i64,
    user_id: &str,
    pos: i64,
) -> MatrixResult<Option<StoredEvent>> {
    let snapshot = snapshot_at(storage, room_nid, pos).await?;
    if snapshot == 0 {
        return Ok(None);
    }
    db(storage
        .state_event_at(snapshot, "m.room.member", user_id)
        .await)
}

/// Keeps the events (all of one room, in order) the user may see: history
/// visibility, plus the user's own membership events, which they always see
/// (so a leaving user gets their leave event, which the visibility rule
/// alone — membership "leave" at the event — would hide).
async fn visible(
    storage: &dyn Storage,
    room_nid: i64,
    user_id: &str,
    events: Vec<StoredEvent>,
) -> MatrixResult<Vec<StoredEvent>> {
    let seen = filter_visible(storage, room_nid, user_id, events.clone()).await?;
    let mut seen = seen.into_iter().map(|e| e.event_id).peekable();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let own = event.kind == "m.room.member" && event.state_key.as_deref() == Some(user_id);
        if seen.peek() == Some(&event.event_id) {
            seen.next();
            out.push(event);
        } else if own {
            out.push(event);
        }
    }
    Ok(out)
}

/// Every `Normal` event of a room with `after < stream_pos <=` the
/// response's bound, newest first, read once for the whole response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recent<'a> {
    pub events: &'a [StoredEvent],
}

/// A room's timeline in a response.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// Oldest first.
    pub events: Vec<StoredEvent>,
    /// More events passed the filter between `after` and the first one.
    pub limited: bool,
}

/// The newest events of a room with `after < stream_pos <= upto` that the
/// user may see and the filter keeps, at most the filter's limit. `known`:
/// every `Normal` event of the room in that range, newest first, when the
/// caller has read them already (nothing is read again).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn timeline(
    storage: &dyn Storage,
    filter: &SyncFilter,
    user_id: &str,
    room_nid: i64,
    room_id: &str,
    after: Option<i64>,
    upto: i64,
    known: Option<&[StoredEvent]>,
) -> MatrixResult<Timeline> {
    if !filter.timeline_room(room_id) {
        return Ok(Timeline::default());
    }
    let limit = filter.timeline_limit();
    let floor = after.unwrap_or(i64::MIN);
    let batch = (limit + 1).min(TIMELINE_BATCH_MAX);
    let mut newest_first: Vec<StoredEvent> = Vec::new();
    let mut cursor = upto;
    let mut scanned = 0;
    let mut limited = false;
    'scan: while cursor > floor {
        let rows = match known {
            // What the query would return: the newest `batch` up to the cursor.
            Some(all) => all
                .iter()
                .filter(|e| e.stream_pos <= cursor)
                .take(batch)
                .cloned()
                .collect(),
            None => db(storage
                .room_events_by_stream(room_nid, floor, cursor, batch as u32, true)
                .await)?,
        };
        let Some(oldest) = rows.last() else { break };
        cursor = oldest.stream_pos - 1;
        let read = rows.len();
        scanned += read;
        for event in visible(storage, room_nid, user_id, rows).await? {
            if !filter.timeline_event(&event.kind, &event.sender, &event.json) {
                continue;
            }
            if newest_first.len() == limit {
                limited = true;
                break 'scan;
            }
            newest_first.push(event);
        }
        if read < batch {
            break;
        }
        if scanned >= TIMELINE_SCAN_MAX {
            limited = true;
            break;
        }
    }
    newest_first.reverse();
    Ok(Timeline {
        events: newest_first,
        limited,
    })
}

/// What the state section of a room holds.
pub(crate) enum StateMode {
    /// Everything at the start of the timeline (initial sync, a newly
    /// joined room, `full_state`).
    Full,
    /// What changed between the `since` position and the start of the timeline.
    Since(i64),
}

/// The state section: per [`StateMode`], minus events in the timeline,
/// through the state filter; with lazy-loaded members, only the members of
/// the timeline's senders (and of `extra_members`: the user on a full sync,
/// the heroes) — except member changes in the gap of an incremental sync,
/// which the spec wants sent whatever lazy loading says.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn state(
    storage: &dyn Storage,
    filter: &SyncFilter,
    room_nid: i64,
    room_id: &str,
    timeline: &Timeline,
    upto: i64,
    mode: StateMode,
    extra_members: &[String],
) -> MatrixResult<Vec<StoredEvent>> {
    if !filter.state_room(room_id) {
        return Ok(Vec::new());
    }
    let start = match timeline.events.first() {
        Some(first) => first.state_before_nid,
        None => snapshot_at(storage, room_nid, upto).await?,
    };
    let lazy = filter.lazy_load_members();
    let mut wanted_members: HashSet<&str> =
        timeline.events.iter().map(|e| e.sender.as_str()).collect();
    wanted_members.extend(extra_members.iter().map(String::as_str));
    let in_timeline: HashSet<&str> = timeline
        .events
        .iter()
        .map(|e| e.event_id.as_str())
        .collect();

    let mut ids: Vec<String> = Vec::new();
    match mode {
        StateMode::Full => {
            if start != 0 {
                for entry in db(storage.state_at(start).await)? {
                    if lazy
                        && entry.kind == "m.room.member"
                        && !wanted_members.contains(entry.state_key.as_str())
                    {
                        continue;
                    }
                    ids.push(entry.event_id);
                }
            }
        }
        StateMode::Since(since) => {
            let before = snapshot_at(storage, room_nid, since).await?;
            let mut delta_keys: HashSet<(String, String)> = HashSet::new();
            if before != start && start != 0 {
                let old: HashMap<(String, String), String> = if before == 0 {
                    HashMap::new()
                } else {
                    db(storage.state_at(before).await)?
                        .into_iter()
                        .map(|e| ((e.kind, e.state_key), e.event_id))
                        .collect()
                };
                for entry in db(storage.state_at(start).await)? {
                    let key = (entry.kind, entry.state_key);
                    if old.get(&key) != Some(&entry.event_id) {
                        ids.push(entry.event_id);
                        delta_keys.insert(key);
                    }
                }
            }
            if lazy && start != 0 {
                // The senders' members, even when the client has them.
                let mut senders: Vec<&str> = wanted_members.iter().copied().collect();
                senders.sort_unstable();
                for sender in senders {
                    if delta_keys.contains(&("m.room.member".to_owned(), sender.to_owned())) {
                        continue;
                    }
                    if let Some(member) =
                        db(storage.state_event_at(start, "m.room.member", sender).await)?
                    {
                        ids.push(member.event_id);
                    }
                }
            }
        }
    }
    ids.retain(|id| !in_timeline.contains(id.as_str()));
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut events = db(storage.events(&ids).await)?;
    events.retain(|e| filter.state_event(&e.kind, &e.sender, &e.json));
    events.sort_by_key(|e| e.stream_pos);
    Ok(events)
}

/// `m.typing` for a room: on a fresh sync when someone types, else when
/// the room's typing list changed in `(since, upto]`.
pub(crate) fn typing_event(
    users: Vec<String>,
    changed_at: i64,
    since: Option<i64>,
    upto: i64,
) -> Option<Value> {
    // A change past `upto` is the next response's (its token covers it).
    if changed_at > upto {
        return None;
    }
    let include = match since {
        None => !users.is_empty(),
        Some(since) => changed_at > since,
    };
    include.then(|| json!({ "type": "m.typing", "content": { "user_ids": users } }))
}

/// `m.receipt` in the spec's shape
/// `{event_id: {receipt_type: {user_id: {ts, thread_id?}}}}`; private
/// receipts only to their owner.
pub(crate) fn receipt_event(user_id: &str, receipts: &[&Receipt]) -> Option<Value> {
    let mut content: Map<String, Value> = Map::new();
    for r in receipts {
        if r.receipt_type == "m.read.private" && r.user_id != user_id {
            continue;
        }
        let mut data = Map::new();
        data.insert("ts".into(), json!(r.ts));
        if let Some(thread) = &r.thread_id {
            data.insert("thread_id".into(), json!(thread));
        }
        let by_type = content
            .entry(r.event_id.clone())
            .or_insert_with(|| json!({}));
        let by_user = by_type
            .as_object_mut()
            .expect("built as an object")
            .entry(r.receipt_type.clone())
            .or_insert_with(|| json!({}));
        by_user
            .as_object_mut()
            .expect("built as an object")
            .insert(r.user_id.clone(), Value::Object(data));
    }
    (!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content }))
}

/// `summary` (`m.heroes`, `m.joined_member_count`, `m.invited_member_count`)
/// from the room's current members, and the heroes (for lazy loading).
pub(crate) async fn summary(
    storage: &dyn Storage,
    room_nid: i64,
    user_id: &str,
) -> MatrixResult<(Value, Vec<String>)> {
    let mut members = db(storage.room_members(room_nid).await)?;
    members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    let joined = members.iter().filter(|m| m.membership == "join").count();
    let invited = members.iter().filter(|m| m.membership == "invite").count();
    let mut summary = json!({ "m.joined_member_count": joined, "m.invited_member_count": invited });
    let named = state_string(storage, room_nid, "m.room.name", "name").await?
        || state_string(storage, room_nid, "m.room.canonical_alias", "alias").await?;
    let mut heroes = Vec::new();
    if !named {
        let others = |wanted: &[&str]| -> Vec<String> {
            members
                .iter()
                .filter(|m| m.user_id != user_id && wanted.contains(&m.membership.as_str()))
                .take(HEROES_MAX)
                .map(|m| m.user_id.clone())
                .collect()
        };
        heroes = others(&["join", "invite"]);
        if heroes.is_empty() {
            heroes = others(&["leave", "ban"]);
        }
        summary["m.heroes"] = json!(heroes);
    }
    Ok((summary, heroes))
}

/// Whether the room's current `kind` state event has a non-empty string `field`.
async fn state_string(
    storage: &dyn Storage,
    room_nid: i64,
    kind: &str,
    field: &str,
) -> MatrixResult<bool> {
    let Some(event) = db(storage.current_state_event(room_nid, kind, "").await)? else {
        return Ok(false);
    };
    if event.redacted_by.is_some() {
        return Ok(false);
    }
    let value: Value = serde_json::from_str(&event.json).map_err(MatrixError::internal)?;
    Ok(value
        .get("content")
        .and_then(|c| c.get(field))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty()))
}

/// `unread_notifications`: the events after the user's latest read receipt
/// (`m.read` or `m.read.private`, unthreaded or on the main timeline) — or
/// after their latest membership event (their join, or a later profile
/// change) when they have none — whose push rule outcome for the user
/// notifies (`notification_count`) and highlights (`highlight_count`). The
/// room writer evaluated the user's own push rules when it created each
/// event (`myelin_rooms::push`); this only counts the stored outcomes.
///
/// With `threaded` (the filter's `unread_thread_notifications`), events in
/// a thread are counted apart, per thread root, after the user's receipt in
/// that thread (or their unthreaded one), and the main counts hold only the
/// main timeline: the second value is `unread_thread_notifications`.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#receiving-notifications>
pub(crate) async fn unread_counts(
    storage: &dyn Storage,
    room_nid: i64,
    user_id: &str,
    joined_at: i64,
    upto: i64,
    threaded: bool,
) -> MatrixResult<(Value, Option<Value>)> {
    let marks = ReadMarks::load(storage, room_nid, user_id, joined_at).await?;
    let unthreaded = marks.unthreaded;
    let main_after = marks.read_upto(None);
    // Without threads every event counts against the main position.
    let after = if threaded { unthreaded } else { main_after };
    let mut counts = Counts::default();
    let mut thread_counts: BTreeMap<String, Counts> = BTreeMap::new();
    if after < upto {
        let actions = db(storage
            .unread_actions(user_id, room_nid, after, upto, UNREAD_SCAN_MAX)
            .await)?;
        for action in actions {
            match action.thread_id.filter(|_| threaded) {
                Some(root) if action.stream_pos > marks.read_upto(Some(&root)) => {
                    thread_counts.entry(root).or_default().add(action.highlight);
                }
                Some(_) => {}
                None if action.stream_pos > main_after => counts.add(action.highlight),
                None => {}
            }
        }
    }
    let threads = threaded.then(|| {
        Value::Object(
            thread_counts
                .into_iter()
                .map(|(root, c)| (root, c.json()))
                .collect(),
        )
    });
    Ok((counts.json(), threads))
}

/// Notification and highlight counts.
#[derive(Default)]
struct Counts {
    notifications: u64,
    highlights: u64,
}

impl Counts {
    fn add(&mut self, highlight: bool) {
        self.notifications += 1;
        if highlight {
            self.highlights += 1;
        }
    }

    fn json(&self) -> Value {
        json!({ "notification_count": self.notifications, "highlight_count": self.highlights })
    }
}
