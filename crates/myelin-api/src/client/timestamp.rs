//! Jump to date: the event nearest a timestamp.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_rooms::read::filter_visible;
use myelin_storage::Direction;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::client::room::room;
use crate::client::room_read::access;
use crate::error::ApiResult;
use crate::extract::{MatrixPath, MatrixQuery};
use crate::state::AppState;

/// Events nearest the timestamp examined at most: if history visibility
/// (or ignoring) hides all of them, no event is found.
pub const TIMESTAMP_CANDIDATES_MAX: u32 = 100;

#[derive(Deserialize)]
pub struct TimestampQuery {
    ts: i64,
    dir: String,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`: for those
/// who may read the room (as `/messages`), among the events they may see.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event>
pub async fn timestamp_to_event(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<TimestampQuery>,
) -> ApiResult<Json<Value>> {
    let dir = match query.dir.as_str() {
        "f" => Direction::Forward,
        "b" => Direction::Backward,
        _ => return Err(MatrixError::invalid_param("`dir` must be `f` or `b`").into()),
    };
    let (record, _) = room(&state, &room_id).await?;
    let access = access(&state, record.room_nid, &me.user_id).await?;
    let candidates = state
        .storage
        .room_events_by_ts(
            record.room_nid,
            query.ts,
            dir,
            access.upto(&state),
            TIMESTAMP_CANDIDATES_MAX,
        )
        .await?;
    let visible = filter_visible(
        state.storage.as_ref(),
        record.room_nid,
        &me.user_id,
        candidates,
    )
    .await?;
    let event = visible.first().ok_or_else(|| {
        let way = match dir {
            Direction::Forward => "forward",
            Direction::Backward => "backward",
        };
        MatrixError::not_found(format!(
            "Unable to find event from {} in {way} direction",
            query.ts
        ))
    })?;
    Ok(Json(json!({
        "event_id": event.event_id,
        "origin_server_ts": event.origin_server_ts,
    })))
}
