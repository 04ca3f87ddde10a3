//! Reading rooms for clients: who may see which event (history visibility),
//! and events in the client format (redacted when redacted, with `unsigned`).
//! Shared by the room endpoints and `/sync`.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#history-visibility>

use myelin_core::time::now_ms;
use myelin_core::{MatrixError, MatrixResult};
use myelin_events::redaction::redact;
use myelin_events::{Pdu, RoomVersion};
use myelin_storage::{Storage, StoredEvent};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

/// Ignored users honoured at most (the rest of a longer list is not).
pub const IGNORED_USERS_MAX: usize = 10_000;

/// The device a response is for: `unsigned.transaction_id` is shown only to
/// the device that sent the event.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub user_id: &'a str,
    pub device_id: Option<&'a str>,
}

/// A user's membership in a room now, `None` if they never had one.
pub async fn current_membership(
    storage: &dyn Storage,
    room_nid: i64,
    user_id: &str,
) -> MatrixResult<Option<String>> {
    Ok(storage
        .current_state_event(room_nid, "m.room.member", user_id)
        .await
        .map_err(MatrixError::internal)?
        .and_then(|e| e.membership))
}

/// The greatest stream position of an event of the room `user_id` may see,
/// as far as their membership bounds it: `i64::MAX` when they are joined
/// now or the room's history is `world_readable` now (the room endpoints'
/// rule for reading up to now); otherwise the position of their latest
/// membership event (a user who left or was banned sees nothing after their
/// departure, one invited or knocking nothing after that either), and
/// `i64::MIN` for a user who never had a membership.
/// Bounds what bundled aggregations count; [`filter_visible`] still
/// decides which events are served.
pub async fn visible_upto(
    storage: &dyn Storage,
    room_nid: i64,
    user_id: &str,
) -> MatrixResult<i64> {
    let own = storage
        .current_state_event(room_nid, "m.room.member", user_id)
        .await
        .map_err(MatrixError::internal)?;
    if own.as_ref().and_then(|e| e.membership.as_deref()) == Some("join") {
        return Ok(i64::MAX);
    }
    let world_readable = storage
        .current_state_event(room_nid, "m.room.history_visibility", "")
        .await
        .map_err(MatrixError::internal)?
        .and_then(|e| history_visibility(&e.json))
        .is_some_and(|v| v == "world_readable");
    if world_readable {
        return Ok(i64::MAX);
    }
    Ok(own.map_or(i64::MIN, |e| e.stream_pos))
}

/// The events of `events` (all of one room) that `user_id` may see.
pub async fn filter_visible(
    storage: &dyn Storage,
    room_nid: i64,
    user_id: &str,
    events: Vec<StoredEvent>,
) -> MatrixResult<Vec<StoredEvent>> {
    // "shared" shows an event to users who joined at any point after it:
    // everyone joined now, and for a user who left (or was kicked or banned)
    // straight from being joined, every event before that departure.
    let own = storage
        .current_state_event(room_nid, "m.room.member", user_id)
        .await
        .map_err(MatrixError::internal)?;
    let currently_joined = own.as_ref().and_then(|e| e.membership.as_deref()) == Some("join");
    let left_joined_at = match &own {
        Some(departure) if matches!(departure.membership.as_deref(), Some("leave" | "ban")) => {
            storage
                .state_event_at(departure.state_before_nid, "m.room.member", user_id)
                .await
                .map_err(MatrixError::internal)?
                .filter(|before| before.membership.as_deref() == Some("join"))
                .map(|_| departure.stream_pos)
        }
        _ => None,
    };
    // Consecutive events mostly share the state before them: look each
    // snapshot up once.
    let mut at_snapshot: HashMap<i64, (String, Option<String>)> = HashMap::new();
    let ignored = ignored_users(storage, user_id).await?;
    let mut visible = Vec::with_capacity(events.len());
    for event in events {
        if is_ignored(&ignored, user_id, &event) {
            continue;
        }
        let snapshot = event.state_before_nid;
        if let std::collections::hash_map::Entry::Vacant(slot) = at_snapshot.entry(snapshot) {
            let visibility = storage
                .state_event_at(snapshot, "m.room.history_visibility", "")
                .await
                .map_err(MatrixError::internal)?
                .and_then(|e| history_visibility(&e.json))
                .unwrap_or_else(|| "shared".to_owned());
            let membership = storage
                .state_event_at(snapshot, "m.room.member", user_id)
                .await
                .map_err(MatrixError::internal)?
                .and_then(|e| e.membership);
            slot.insert((visibility, membership));
        }
        let (visibility, before) = &at_snapshot[&snapshot];
        let joined_later =
            currently_joined || left_joined_at.is_some_and(|pos| event.stream_pos < pos);
        // The spec: the user's own membership events, and history
        // visibility events, are visible if the state before *or after*
        // them allows it.
        let own_membership =
            event.kind == "m.room.member" && event.state_key.as_deref() == Some(user_id);
        let visibility_after = (event.kind == "m.room.history_visibility"
            && event.state_key.as_deref() == Some(""))
        .then(|| history_visibility(&event.json))
        .flatten();
        let allowed = may_see(visibility, before.as_deref(), joined_later)
            || (own_membership && may_see(visibility, event.membership.as_deref(), joined_later))
            || visibility_after
                .is_some_and(|after| may_see(&after, before.as_deref(), joined_later));
        if allowed {
            visible.push(event);
        }
    }
    Ok(visible)
}

/// Ignored senders (from `m.ignored_user_list` global account data)
/// vanish from every read of the timeline. Their state events stay: the
/// room's state must not have holes.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#ignoring-users>
fn is_ignored(ignored: &HashSet<String>, user_id: &str, event: &StoredEvent) -> bool {
    event.state_key.is_none() && event.sender != user_id && ignored.contains(&event.sender)
}

/// The users `user_id` ignores: the keys of `ignored_users` in their
/// `m.ignored_user_list` account data (bounded by [`IGNORED_USERS_MAX`]).
pub async fn ignored_users(storage: &dyn Storage, user_id: &str) -> MatrixResult<HashSet<String>> {
    let content = storage
        .account_data(user_id, None, "m.ignored_user_list")
        .await
        .map_err(MatrixError::internal)?;
    Ok(content
        .as_ref()
        .and_then(|c| c.get("ignored_users"))
        .and_then(Value::as_object)
        .map(|users| users.keys().take(IGNORED_USERS_MAX).cloned().collect())
        .unwrap_or_default())
}

/// Whether the invite `invite_event_id` was sent by a user `user_id`
/// ignores (such invites are not shown in `/sync`).
pub async fn invite_from_ignored(
    storage: &dyn Storage,
    user_id: &str,
    invite_event_id: &str,
) -> MatrixResult<bool> {
    let ignored = ignored_users(storage, user_id).await?;
    if ignored.is_empty() {
        return Ok(false);
    }
    let invite = storage
        .event(invite_event_id)
        .await
        .map_err(MatrixError::internal)?;
    Ok(invite.is_some_and(|e| ignored.contains(&e.sender)))
}

/// The spec's rule, given the visibility and the user's membership at the
/// event and whether the user joined at some point after it.
pub fn may_see(visibility: &str, membership_at_event: Option<&str>, joined_later: bool) -> bool {
    match (visibility, membership_at_event) {
        ("world_readable", _) => true,
        (_, Some("join")) => true,
        ("shared", _) => joined_later,
        ("invited", Some("invite")) => true,
        _ => false,
    }
}

fn history_visibility(json: &str) -> Option<String> {
    let value: Value = serde_json::from_str(json).ok()?;
    value
        .get("content")?
        .get("history_visibility")?
        .as_str()
        .map(str::to_owned)
}

/// Serves stored events to a client: redacted where redacted, with
/// `unsigned` (`age`, `transaction_id` for the sender's device,
/// `redacted_because`, `prev_content`/`replaces_state` for state events).
pub struct ClientEvents<'a> {
    pub storage: &'a dyn Storage,
    pub version: &'a RoomVersion,
    pub viewer: Viewer<'a>,
}

impl ClientEvents<'_> {
    /// One event, with its bundled aggregations.
    pub async fn format(&self, event: &StoredEvent) -> MatrixResult<Map<String, Value>> {
        let mut formatted = self.format_many(std::slice::from_ref(event)).await?;
        formatted
            .pop()
            .ok_or_else(|| MatrixError::internal("formatting one event gave none"))
    }

    /// [`ClientEvents::format`] for each event, in order: their bundled
    /// aggregations are read together (a constant number of queries per
    /// call, not per event).
    pub async fn format_many(
        &self,
        events: &[StoredEvent],
    ) -> MatrixResult<Vec<Map<String, Value>>> {
        let mut bundles = self.bundled_aggregations(events).await?;
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let mut client = self.format_plain(event).await?;
            if let Some(bundle) = bundles.remove(&event.event_id)
                && let Some(Value::Object(unsigned)) = client.get_mut("unsigned")
            {
                unsigned.insert("m.relations".into(), Value::Object(bundle));
            }
            out.push(client);
        }
        Ok(out)
    }

    /// `unsigned.m.relations` of each event of `events` that has any:
    /// `m.replace` (the latest valid edit, whole), `m.thread` (`count`,
    /// `latest_event`, `current_user_participated`) and `m.reference`
    /// (`chunk` of event ids). Redacted and state events get none.
    ///
    /// Only relating events the viewer may see count: none after the
    /// viewer's departure from the room ([`visible_upto`]), and none sent by
    /// a user the viewer ignores. A viewer who left sees the thread count,
    /// the latest reply and the edit as they were when they left.
    /// Spec: <https://spec.matrix.org/v1.19/client-server-api/#aggregations-of-child-events>
    pub async fn bundled_aggregations(
        &self,
        events: &[StoredEvent],
    ) -> MatrixResult<HashMap<String, Map<String, Value>>> {
        let mut by_room: HashMap<i64, Vec<&StoredEvent>> = HashMap::new();
        for event in events {
            if event.redacted_by.is_none() && event.state_key.is_none() {
                by_room.entry(event.room_nid).or_default().push(event);
            }
        }
        let mut bundles: HashMap<String, Map<String, Value>> = HashMap::new();
        if by_room.is_empty() {
            return Ok(bundles);
        }
        // The viewer's own events are never hidden from them.
        let mut ignored: Vec<String> = ignored_users(self.storage, self.viewer.user_id)
            .await?
            .into_iter()
            .filter(|u| u != self.viewer.user_id)
            .collect();
        ignored.sort_unstable();
        for (room_nid, parents) in by_room {
            let ids: Vec<String> = parents.iter().map(|e| e.event_id.clone()).collect();
            let upto = visible_upto(self.storage, room_nid, self.viewer.user_id).await?;
            let aggregations = self
                .storage
                .relation_aggregations(room_nid, &ids, self.viewer.user_id, upto, &ignored)
                .await
                .map_err(MatrixError::internal)?;
            let parents: HashMap<&str, &StoredEvent> = parents
                .into_iter()
                .map(|e| (e.event_id.as_str(), e))
                .collect();
            // An edit counts only from the original's sender, with its type,
            // on an original that is not an edit itself.
            let mut edits: HashMap<&str, &str> = HashMap::new();
            for r in &aggregations.replacements {
                if let Some(parent) = parents.get(r.relates_to_id.as_str())
                    && parent.sender == r.sender
                    && parent.kind == r.kind
                    && rel_type(&parent.json).as_deref() != Some("m.replace")
                {
                    edits.insert(parent.event_id.as_str(), r.event_id.as_str());
                }
            }
            let mut wanted: Vec<String> = edits.values().map(|id| (*id).to_owned()).collect();
            wanted.extend(
                aggregations
                    .threads
                    .iter()
                    .map(|t| t.latest_event_id.clone()),
            );
            let related: HashMap<String, StoredEvent> = if wanted.is_empty() {
                HashMap::new()
            } else {
                self.storage
                    .events(&wanted)
                    .await
                    .map_err(MatrixError::internal)?
                    .into_iter()
                    .map(|e| (e.event_id.clone(), e))
                    .collect()
            };
            for (parent_id, edit_id) in edits {
                let Some(edit) = related.get(edit_id) else {
                    continue;
                };
                if !has_new_content(&edit.json) {
                    continue;
                }
                let formatted = self.format_plain(edit).await?;
                bundles
                    .entry(parent_id.to_owned())
                    .or_default()
                    .insert("m.replace".into(), Value::Object(formatted));
            }
            for thread in &aggregations.threads {
                let (Some(parent), Some(latest)) = (
                    parents.get(thread.root_id.as_str()),
                    related.get(&thread.latest_event_id),
                ) else {
                    continue;
                };
                let formatted = self.format_plain(latest).await?;
                bundles.entry(thread.root_id.clone()).or_default().insert(
                    "m.thread".into(),
                    json!({
                        "latest_event": formatted,
                        "count": thread.count,
                        "current_user_participated":
                            thread.participated || parent.sender == self.viewer.user_id,
                    }),
                );
            }
            let mut references: HashMap<&str, Vec<Value>> = HashMap::new();
            for r in &aggregations.references {
                references
                    .entry(r.relates_to_id.as_str())
                    .or_default()
                    .push(json!({ "event_id": r.event_id }));
            }
            for (parent_id, chunk) in references {
                bundles
                    .entry(parent_id.to_owned())
                    .or_default()
                    .insert("m.reference".into(), json!({ "chunk": chunk }));
            }
        }
        Ok(bundles)
    }

    /// One event in the client format with only `unsigned.age` (and
    /// `redacted_because`): redacted where redacted, but no previous state
    /// and no transaction id. For the state sections of `/sync`, where
    /// looking up each event's previous state would cost a query per event.
    pub async fn format_light(&self, event: &StoredEvent) -> MatrixResult<Map<String, Value>> {
        let (mut client, unsigned) = self.base(event).await?;
        client.insert("unsigned".into(), Value::Object(unsigned));
        Ok(client)
    }

    /// The client format and `unsigned` of an event, redacted where it was.
    async fn base(
        &self,
        event: &StoredEvent,
    ) -> MatrixResult<(Map<String, Value>, Map<String, Value>)> {
        let pdu = Pdu::from_json_str(self.version, &event.json, &event.event_id)
            .map_err(MatrixError::internal)?;
        let mut unsigned = Map::new();
        unsigned.insert(
            "age".into(),
            json!(now_ms().saturating_sub(pdu.origin_server_ts).max(0)),
        );
        let client = match &event.redacted_by {
            Some(redaction_id) => {
                let redacted = redact(self.version, &pdu).map_err(MatrixError::internal)?;
                if let Some(redaction) = self
                    .storage
                    .event(redaction_id)
                    .await
                    .map_err(MatrixError::internal)?
                {
                    let because =
                        Pdu::from_json_str(self.version, &redaction.json, &redaction.event_id)
                            .map_err(MatrixError::internal)?;
                    unsigned.insert(
                        "redacted_because".into(),
                        Value::Object(because.client_event()),
                    );
                }
                redacted.client_event()
            }
            None => pdu.client_event(),
        };
        Ok((client, unsigned))
    }

    /// One event without bundled aggregations.
    async fn format_plain(&self, event: &StoredEvent) -> MatrixResult<Map<String, Value>> {
        let (mut client, mut unsigned) = self.base(event).await?;
        if let (Some(txn), Some(device)) = (&event.txn, self.viewer.device_id)
            && txn.user_id == self.viewer.user_id
            && txn.device_id == device
        {
            unsigned.insert("transaction_id".into(), json!(txn.txn_id));
        }
        if let Some(state_key) = &event.state_key {
            let previous = self
                .storage
                .state_event_at(event.state_before_nid, &event.kind, state_key)
                .await
                .map_err(MatrixError::internal)?;
            if let Some(previous) = previous.filter(|p| p.event_id != event.event_id) {
                let prev = Pdu::from_json_str(self.version, &previous.json, &previous.event_id)
                    .map_err(MatrixError::internal)?;
                let prev = if previous.redacted_by.is_some() {
                    redact(self.version, &prev).map_err(MatrixError::internal)?
                } else {
                    prev
                };
                unsigned.insert("prev_content".into(), prev.content.clone());
                unsigned.insert("replaces_state".into(), json!(previous.event_id));
                unsigned.insert("prev_sender".into(), json!(previous.sender));
            }
        }
        client.insert("unsigned".into(), Value::Object(unsigned));
        Ok(client)
    }

    /// [`ClientEvents::format_many`], as JSON values.
    pub async fn format_all(&self, events: &[StoredEvent]) -> MatrixResult<Vec<Value>> {
        Ok(self
            .format_many(events)
            .await?
            .into_iter()
            .map(Value::Object)
            .collect())
    }
}

/// `content.m.relates_to.rel_type` of an event's JSON.
pub fn rel_type(json: &str) -> Option<String> {
    let value: Value = serde_json::from_str(json).ok()?;
    value
        .pointer("/content/m.relates_to/rel_type")?
        .as_str()
        .map(str::to_owned)
}

/// Whether an edit carries `content.m.new_content` (an object).
fn has_new_content(json: &str) -> bool {
    serde_json::from_str::<Value>(json).ok().is_some_and(|v| {
        v.pointer("/content/m.new_content")
            .is_some_and(Value::is_object)
    })
}
