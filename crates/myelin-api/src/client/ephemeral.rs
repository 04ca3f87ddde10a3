//! Ephemeral room data: typing notifications, receipts and read markers.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#typing-notifications>,
//! <https://spec.matrix.org/v1.19/client-server-api/#receipts>,
//! <https://spec.matrix.org/v1.19/client-server-api/#fully-read-markers>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_core::time::now_ms;
use myelin_rooms::read::{current_membership, filter_visible};
use myelin_storage::{EventStatus, Receipt, RoomRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

use crate::auth::{Auth, Identity};
use crate::client::room::room;
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath, OptionalMatrixJson};
use crate::state::AppState;

/// How long a user types when the client names no `timeout`.
const TYPING_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Longest `thread_id` accepted (event ids are at most 255 bytes).
const THREAD_ID_LENGTH_MAX: usize = 255;

const READ: &str = "m.read";
const READ_PRIVATE: &str = "m.read.private";
const FULLY_READ: &str = "m.fully_read";

/// 403 `M_FORBIDDEN` unless the user is joined to the room.
async fn check_joined(state: &AppState, record: &RoomRecord, user_id: &str) -> ApiResult<()> {
    if current_membership(state.storage.as_ref(), record.room_nid, user_id)
        .await?
        .as_deref()
        != Some("join")
    {
        return Err(MatrixError::forbidden("You are not joined to this room").into());
    }
    Ok(())
}

/// The room's joined members: who hears of its ephemeral changes.
async fn joined_members(state: &AppState, room_nid: i64) -> ApiResult<Vec<String>> {
    Ok(state
        .storage
        .room_members(room_nid)
        .await?
        .into_iter()
        .filter(|m| m.membership == "join")
        .map(|m| m.user_id)
        .collect())
}

#[derive(Deserialize)]
pub struct TypingBody {
    typing: bool,
    /// Milliseconds.
    timeout: Option<u64>,
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidtypinguserid>
pub async fn typing(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, user_id)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<TypingBody>,
) -> ApiResult<Json<Value>> {
    if user_id != me.user_id {
        return Err(MatrixError::forbidden("You may only set your own typing state").into());
    }
    let (record, _) = room(&state, &room_id).await?;
    check_joined(&state, &record, &me.user_id).await?;
    let timeout = body.typing.then(|| {
        body.timeout
            .map_or(TYPING_TIMEOUT_DEFAULT, Duration::from_millis)
    });
    let audience = joined_members(&state, record.room_nid).await?;
    state
        .typing
        .set(&record.room_id, &me.user_id, timeout, audience);
    Ok(Json(json!({})))
}

/// The event a receipt or marker points at: an accepted event of the room
/// the user may see, or 404 `M_NOT_FOUND`.
async fn check_event(
    state: &AppState,
    record: &RoomRecord,
    user_id: &str,
    event_id: &str,
) -> ApiResult<()> {
    let not_found = || MatrixError::not_found("Event not found");
    let event = state
        .storage
        .event(event_id)
        .await?
        .filter(|e| e.room_nid == record.room_nid && e.status == EventStatus::Normal)
        .ok_or_else(not_found)?;
    if filter_visible(
        state.storage.as_ref(),
        record.room_nid,
        user_id,
        vec![event],
    )
    .await?
    .is_empty()
    {
        return Err(not_found().into());
    }
    Ok(())
}

/// Stores a receipt and wakes who sees it: the room's members for a public
/// one, only the user for a private one.
async fn put_receipt(
    state: &AppState,
    record: &RoomRecord,
    user_id: &str,
    receipt_type: &str,
    thread_id: Option<String>,
    event_id: &str,
) -> ApiResult<()> {
    let tracker = state.rooms.receipts();
    let stream_pos = tracker.allocate();
    let receipt = Receipt {
        room_nid: record.room_nid,
        room_id: record.room_id.clone(),
        user_id: user_id.to_owned(),
        receipt_type: receipt_type.to_owned(),
        thread_id,
        event_id: event_id.to_owned(),
        ts: now_ms(),
        stream_pos,
    };
    if let Err(e) = state.storage.put_receipt(&receipt).await {
        tracker.finish(stream_pos, Vec::new());
        return Err(e.into());
    }
    let wake = if receipt_type == READ {
        joined_members(state, record.room_nid)
            .await
            .unwrap_or_default()
    } else {
        vec![user_id.to_owned()]
    };
    // `/sync` reads receipts up to the tracker's watermark: wake the
    // audience only once this one is below it.
    let woken = tracker.finish(stream_pos, wake);
    state
        .rooms
        .notifier()
        .notify(woken.iter().map(String::as_str));
    Ok(())
}

/// Moves the user's fully-read marker (room account data `m.fully_read`).
async fn put_fully_read(
    state: &AppState,
    me: &Identity,
    record: &RoomRecord,
    event_id: &str,
) -> ApiResult<()> {
    let content = json!({ "event_id": event_id });
    crate::client::account_data::write(
        state,
        &me.user_id,
        Some(&record.room_id),
        FULLY_READ,
        &content,
    )
    .await
}

#[derive(Deserialize, Default)]
pub struct ReceiptBody {
    /// Checked by hand: a wrong type is `M_INVALID_PARAM`, as the spec says.
    thread_id: Option<Value>,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid>
pub async fn receipt(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, receipt_type, event_id)): MatrixPath<(String, String, String)>,
    OptionalMatrixJson(body): OptionalMatrixJson<ReceiptBody>,
) -> ApiResult<Json<Value>> {
    if ![READ, READ_PRIVATE, FULLY_READ].contains(&receipt_type.as_str()) {
        return Err(
            MatrixError::invalid_param(format!("Unknown receipt type {receipt_type}")).into(),
        );
    }
    let thread_id = match body.unwrap_or_default().thread_id {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.is_empty() || t.len() > THREAD_ID_LENGTH_MAX => {
            return Err(MatrixError::invalid_param("thread_id must be a non-empty string").into());
        }
        Some(Value::String(t)) if t != "main" && !t.starts_with('$') => {
            return Err(MatrixError::invalid_param(
                "thread_id must be `main` or a thread root's event id",
            )
            .into());
        }
        Some(Value::String(t)) => Some(t),
        Some(_) => {
            return Err(MatrixError::invalid_param("thread_id must be a non-empty string").into());
        }
    };
    if receipt_type == FULLY_READ && thread_id.is_some() {
        return Err(MatrixError::invalid_param("m.fully_read markers have no thread_id").into());
    }
    let (record, _) = room(&state, &room_id).await?;
    check_joined(&state, &record, &me.user_id).await?;
    check_event(&state, &record, &me.user_id, &event_id).await?;
    if receipt_type == FULLY_READ {
        put_fully_read(&state, &me, &record, &event_id).await?;
    } else {
        put_receipt(
            &state,
            &record,
            &me.user_id,
            &receipt_type,
            thread_id,
            &event_id,
        )
        .await?;
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct ReadMarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidread_markers>
pub async fn read_markers(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<ReadMarkersBody>,
) -> ApiResult<Json<Value>> {
    let (record, _) = room(&state, &room_id).await?;
    check_joined(&state, &record, &me.user_id).await?;
    // Every event is checked before anything is written.
    for event_id in [&body.fully_read, &body.read, &body.read_private]
        .into_iter()
        .flatten()
    {
        check_event(&state, &record, &me.user_id, event_id).await?;
    }
    if let Some(event_id) = &body.fully_read {
        put_fully_read(&state, &me, &record, event_id).await?;
    }
    if let Some(event_id) = &body.read {
        put_receipt(&state, &record, &me.user_id, READ, None, event_id).await?;
    }
    if let Some(event_id) = &body.read_private {
        put_receipt(&state, &record, &me.user_id, READ_PRIVATE, None, event_id).await?;
    }
    Ok(Json(json!({})))
}
