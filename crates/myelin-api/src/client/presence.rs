//! Presence: a user's online state and status message, held in memory.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#presence>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_rooms::PresenceState;
use myelin_rooms::presence::{STATUS_MSG_LENGTH_MAX, shared_users};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct PresenceBody {
    presence: String,
    status_msg: Option<String>,
}

/// `PUT /_matrix/client/v3/presence/{userId}/status`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3presenceuseridstatus>
pub async fn set_status(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(user_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<PresenceBody>,
) -> ApiResult<Json<Value>> {
    if user_id != me.user_id {
        return Err(MatrixError::forbidden("You may only set your own presence").into());
    }
    let presence = PresenceState::parse(&body.presence).ok_or_else(|| {
        MatrixError::invalid_param("presence must be online, offline or unavailable")
    })?;
    if body
        .status_msg
        .as_ref()
        .is_some_and(|m| m.len() > STATUS_MSG_LENGTH_MAX)
    {
        return Err(MatrixError::invalid_param("status_msg is too long").into());
    }
    if state
        .presence
        .set(&me.user_id, presence, Some(body.status_msg))
    {
        let audience = shared_users(state.storage.as_ref(), &me.user_id).await?;
        state
            .presence
            .wake(&me.user_id, audience.into_iter().collect());
    }
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/presence/{userId}/status`: yours, or that of a
/// user you share a room with (403 otherwise); an unknown user is 404.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3presenceuseridstatus>
pub async fn get_status(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(user_id): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    if user_id != me.user_id {
        let exists = state
            .storage
            .user(&user_id)
            .await?
            .is_some_and(|u| !u.deactivated);
        if !exists {
            return Err(MatrixError::not_found("No presence for this user").into());
        }
        if !shared_users(state.storage.as_ref(), &me.user_id)
            .await?
            .contains(&user_id)
        {
            return Err(MatrixError::forbidden("You are not allowed to see their presence").into());
        }
    }
    Ok(Json(state.presence.get(&user_id).content()))
}
