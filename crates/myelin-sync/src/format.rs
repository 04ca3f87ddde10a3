//! Events as `/sync` serves them.
//!
//! Timeline events go through `myelin_rooms::read::ClientEvents` (with
//! `prev_content`, `transaction_id`, …). State-section events take a lighter
//! path: a room's full state can hold thousands of events, and looking up
//! each one's previous state (`prev_content`) would cost one query per event;
//! clients read `prev_content` from timeline events only.

use myelin_core::{MatrixError, MatrixResult};
use myelin_events::redaction::redact;
use myelin_events::{Pdu, RoomVersion};
use myelin_rooms::read::ClientEvents;
use myelin_storage::StoredEvent;
use serde_json::{Map, Value, json};

/// The event in the `/sync` shape: the client format without `room_id`
/// (`ClientEventWithoutRoomID`), the room being the key it is listed under.
fn without_room_id(mut event: Map<String, Value>) -> Value {
    event.remove("room_id");
    Value::Object(event)
}

/// Timeline events, in order, with their bundled aggregations.
pub(crate) async fn timeline_events(
    formatter: &ClientEvents<'_>,
    events: &[StoredEvent],
) -> MatrixResult<Vec<Value>> {
    Ok(formatter
        .format_many(events)
        .await?
        .into_iter()
        .map(without_room_id)
        .collect())
}

/// State-section events: redacted where redacted, `unsigned.age`, no
/// `prev_content` ([`ClientEvents::format_light`]).
pub(crate) async fn state_events(
    formatter: &ClientEvents<'_>,
    events: &[StoredEvent],
) -> MatrixResult<Vec<Value>> {
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        out.push(without_room_id(formatter.format_light(event).await?));
    }
    Ok(out)
}

/// A stripped state event (`type`, `state_key`, `content`, `sender`), as
/// invited and knocking users see the room. `content` is the redacted one
/// when the event was redacted.
pub(crate) fn stripped(version: &RoomVersion, event: &StoredEvent) -> MatrixResult<Value> {
    let pdu =
        Pdu::from_json_str(version, &event.json, &event.event_id).map_err(MatrixError::internal)?;
    let pdu = if event.redacted_by.is_some() {
        redact(version, &pdu).map_err(MatrixError::internal)?
    } else {
        pdu
    };
    Ok(json!({
        "type": pdu.kind,
        "state_key": pdu.state_key.unwrap_or_default(),
        "content": pdu.content,
        "sender": pdu.sender,
    }))
}
