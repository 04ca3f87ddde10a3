//! Sending events: messages, state, redactions.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#sending-events-to-a-room>

use axum::Json;
use axum::extract::State;
use myelin_core::{ErrorKind, MatrixError};
use myelin_rooms::SendEvent;
use myelin_storage::TxnKey;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Auth, Identity};
use crate::client::room::{PowerView, room, send};
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath, OptionalMatrixJson};
use crate::state::AppState;

/// The `redact` level of power levels that name none (the spec's default).
const REDACT_DEFAULT: i64 = 50;
/// Longest event type and transaction id accepted.
const TYPE_LENGTH_MAX: usize = 255;
const TXN_ID_LENGTH_MAX: usize = 255;

fn check_type(kind: &str) -> ApiResult<()> {
    if kind.is_empty() || kind.len() > TYPE_LENGTH_MAX {
        return Err(MatrixError::invalid_param("Invalid event type").into());
    }
    Ok(())
}

fn txn(me: &Identity, txn_id: String) -> ApiResult<TxnKey> {
    if txn_id.is_empty() || txn_id.len() > TXN_ID_LENGTH_MAX {
        return Err(MatrixError::invalid_param("Invalid transaction id").into());
    }
    Ok(TxnKey {
        user_id: me.user_id.clone(),
        device_id: me.device_id.clone(),
        txn_id,
    })
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`. A
/// second reaction (`m.annotation`) with the same key by the same user is
/// refused by the room writer with 400 `M_DUPLICATE_ANNOTATION`.
pub async fn send_message(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, kind, txn_id)): MatrixPath<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    check_type(&kind)?;
    room(&state, &room_id).await?;
    let txn = txn(&me, txn_id)?;
    let event = SendEvent {
        sender: me.user_id.clone(),
        kind,
        state_key: None,
        content,
        redacts: None,
        txn: Some(txn),
    };
    let sent = send(&state, &room_id, event).await?;
    Ok(Json(json!({ "event_id": sent.event_id })))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn put_state(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, kind, state_key)): MatrixPath<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    put_state_event(state, me, room_id, kind, state_key, content).await
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}` (empty state key)
pub async fn put_state_empty_key(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, kind)): MatrixPath<(String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    put_state_event(state, me, room_id, kind, String::new(), content).await
}

async fn put_state_event(
    state: AppState,
    me: Identity,
    room_id: String,
    kind: String,
    state_key: String,
    content: Map<String, Value>,
) -> ApiResult<Json<Value>> {
    check_type(&kind)?;
    room(&state, &room_id).await?;
    if kind == "m.room.canonical_alias" {
        check_canonical_alias(&state, &room_id, &content).await?;
    }
    let event = SendEvent {
        sender: me.user_id,
        kind,
        state_key: Some(state_key),
        content,
        redacts: None,
        txn: None,
    };
    let sent = send(&state, &room_id, event).await?;
    Ok(Json(json!({ "event_id": sent.event_id })))
}

/// `m.room.canonical_alias` may only name aliases that point to this room.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#mroomcanonical_alias>
async fn check_canonical_alias(
    state: &AppState,
    room_id: &str,
    content: &Map<String, Value>,
) -> ApiResult<()> {
    let bad = |m: &str| MatrixError::new(ErrorKind::BadAlias, m.to_owned());
    let mut aliases = Vec::new();
    match content.get("alias") {
        None | Some(Value::Null) => {}
        Some(Value::String(a)) => aliases.push(a.clone()),
        Some(_) => return Err(MatrixError::bad_json("`alias` must be a string").into()),
    }
    match content.get("alt_aliases") {
        None => {}
        Some(Value::Array(list)) => {
            for a in list {
                let a = a
                    .as_str()
                    .ok_or_else(|| MatrixError::bad_json("`alt_aliases` must hold strings"))?;
                aliases.push(a.to_owned());
            }
        }
        Some(_) => return Err(MatrixError::bad_json("`alt_aliases` must be an array").into()),
    }
    for alias in aliases {
        if !alias.starts_with('#') || !alias.contains(':') {
            return Err(MatrixError::invalid_param(format!("{alias} is not a room alias")).into());
        }
        match state.storage.alias(&alias).await? {
            Some(record) if record.room_id == room_id => {}
            Some(_) => return Err(bad(&format!("{alias} points to another room")).into()),
            None => return Err(bad(&format!("{alias} does not exist")).into()),
        }
    }
    Ok(())
}

#[derive(Deserialize, Default)]
pub struct RedactBody {
    reason: Option<String>,
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
pub async fn redact(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, event_id, txn_id)): MatrixPath<(String, String, String)>,
    OptionalMatrixJson(body): OptionalMatrixJson<RedactBody>,
) -> ApiResult<Json<Value>> {
    let (record, version) = room(&state, &room_id).await?;
    if !event_id.starts_with('$') {
        return Err(MatrixError::invalid_param("Invalid event id").into());
    }
    let target = state
        .storage
        .event(&event_id)
        .await?
        .filter(|e| e.room_nid == record.room_nid)
        .ok_or_else(|| MatrixError::not_found("Unknown event"))?;
    // From v3 the rules accept any redaction and leave it to servers to
    // apply it only when allowed: refuse what would not apply.
    let may_redact_others = || async {
        let power = PowerView::load(&state, record.room_nid, &version).await?;
        ApiResult::Ok(power.reaches(&me.user_id, power.level("redact", REDACT_DEFAULT)))
    };
    if target.sender != me.user_id && !may_redact_others().await? {
        return Err(MatrixError::forbidden(
            "Your power level is too low to redact other users' events",
        )
        .into());
    }
    let mut content = Map::new();
    if let Some(reason) = body.unwrap_or_default().reason {
        content.insert("reason".into(), json!(reason));
    }
    // From v11 the redacted event's id also lives in the content.
    if version.rules.redaction.keep_room_redaction_redacts {
        content.insert("redacts".into(), json!(event_id));
    }
    let event = SendEvent {
        sender: me.user_id.clone(),
        kind: "m.room.redaction".to_owned(),
        state_key: None,
        content,
        redacts: Some(event_id),
        txn: Some(txn(&me, txn_id)?),
    };
    let sent = send(&state, &room_id, event).await?;
    Ok(Json(json!({ "event_id": sent.event_id })))
}
