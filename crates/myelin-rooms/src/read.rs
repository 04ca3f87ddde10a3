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
use std::collections::HashMap;

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
    let mut visible = Vec::with_capacity(events.len());
    for event in events {
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
    pub async fn format(&self, event: &StoredEvent) -> MatrixResult<Map<String, Value>> {
        let pdu = Pdu::from_json_str(self.version, &event.json, &event.event_id)
            .map_err(MatrixError::internal)?;
        let mut unsigned = Map::new();
        unsigned.insert(
            "age".into(),
            json!(now_ms().saturating_sub(pdu.origin_server_ts).max(0)),
        );
        let mut client = match &event.redacted_by {
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

    /// [`ClientEvents::format`] for each event, in order.
    pub async fn format_all(&self, events: &[StoredEvent]) -> MatrixResult<Vec<Value>> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            out.push(Value::Object(self.format(event).await?));
        }
        Ok(out)
    }
}
