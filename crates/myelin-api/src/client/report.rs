//! Reporting rooms and events to the server's administrators (stored in
//! the `reports` table).
//!
//! Both endpoints share one rate limit per user (`rate_limits.reports`):
//! every well-formed report takes a token, whether it is stored or refused
//! (404), so neither spam nor probing for events runs unbounded.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#reporting-content>

use axum::Json;
use axum::extract::State;
use myelin_core::time::now_ms;
use myelin_core::{ErrorKind, MatrixError};
use myelin_rooms::read::{current_membership, filter_visible};
use myelin_storage::{EventStatus, NewReport};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath};
use crate::state::AppState;

/// Longest `reason` kept, in bytes.
pub const REPORT_REASON_LENGTH_MAX: usize = 4_096;
/// The spec's range of `score`: -100 (most offensive) to 0.
const SCORE_MIN: i64 = -100;
const SCORE_MAX: i64 = 0;

#[derive(Deserialize)]
pub struct EventReportBody {
    reason: Option<String>,
    score: Option<i64>,
}

#[derive(Deserialize)]
pub struct RoomReportBody {
    reason: Option<String>,
}

/// Takes one of the user's report tokens, or 429 `M_LIMIT_EXCEEDED`.
fn rate_limit(state: &AppState, user_id: &str) -> ApiResult<()> {
    state
        .limits
        .reports
        .check(user_id)
        .map_err(|retry_after_ms| {
            MatrixError::new(
                ErrorKind::LimitExceeded { retry_after_ms },
                "Too many reports; try again later",
            )
            .into()
        })
}

fn check_reason(reason: Option<&str>) -> ApiResult<()> {
    if reason.is_some_and(|r| r.len() > REPORT_REASON_LENGTH_MAX) {
        return Err(MatrixError::invalid_param(format!(
            "`reason` is longer than {REPORT_REASON_LENGTH_MAX} bytes"
        ))
        .into());
    }
    Ok(())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`: by a joined
/// member, of an event they may see; anything else is 404 `M_NOT_FOUND`,
/// so a report never reveals an event.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreporteventid>
pub async fn report_event(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, event_id)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<EventReportBody>,
) -> ApiResult<Json<Value>> {
    check_reason(body.reason.as_deref())?;
    if body
        .score
        .is_some_and(|s| !(SCORE_MIN..=SCORE_MAX).contains(&s))
    {
        return Err(MatrixError::invalid_param(format!(
            "`score` must be between {SCORE_MIN} and {SCORE_MAX}"
        ))
        .into());
    }
    rate_limit(&state, &me.user_id)?;
    let not_found =
        || MatrixError::not_found("The event was not found or you are not joined to the room");
    let record = state.storage.room(&room_id).await?.ok_or_else(not_found)?;
    if current_membership(state.storage.as_ref(), record.room_nid, &me.user_id)
        .await?
        .as_deref()
        != Some("join")
    {
        return Err(not_found().into());
    }
    let event = state
        .storage
        .event(&event_id)
        .await?
        .filter(|e| e.room_nid == record.room_nid && e.status == EventStatus::Normal)
        .filter(|e| e.stream_pos <= state.rooms.events().watermark())
        .ok_or_else(not_found)?;
    let visible = filter_visible(
        state.storage.as_ref(),
        record.room_nid,
        &me.user_id,
        vec![event],
    )
    .await?;
    if visible.is_empty() {
        return Err(not_found().into());
    }
    let report = NewReport {
        room_id: record.room_id,
        event_id: Some(event_id),
        reporter: me.user_id,
        reason: body.reason,
        score: body.score,
        received_ms: now_ms(),
    };
    let report_id = state.storage.create_report(&report).await?;
    tracing::info!(report_id, room_id = %report.room_id, "event reported");
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report`: the reporter need not
/// be joined.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreport>
pub async fn report_room(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<RoomReportBody>,
) -> ApiResult<Json<Value>> {
    check_reason(body.reason.as_deref())?;
    rate_limit(&state, &me.user_id)?;
    let record = state
        .storage
        .room(&room_id)
        .await?
        .ok_or_else(|| MatrixError::not_found("The room was not found"))?;
    let report = NewReport {
        room_id: record.room_id,
        event_id: None,
        reporter: me.user_id,
        reason: body.reason,
        score: None,
        received_ms: now_ms(),
    };
    let report_id = state.storage.create_report(&report).await?;
    tracing::info!(report_id, room_id = %report.room_id, "room reported");
    Ok(Json(json!({})))
}
