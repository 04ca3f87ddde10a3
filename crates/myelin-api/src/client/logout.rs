//! Logging out.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3logout>

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::client::keys::log_device_list_change;
use crate::client::pushers::{delete_device_pushers, delete_user_pushers};
use crate::error::ApiResult;
use crate::state::AppState;

/// `POST /_matrix/client/v3/logout`: the token dies, and with it its device
/// and the pushers it set.
pub async fn logout(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<Value>> {
    delete_device_pushers(&state, &me.user_id, &me.device_id).await?;
    state
        .storage
        .delete_device(&me.user_id, &me.device_id)
        .await?;
    log_device_list_change(&state, &me.user_id).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/logout/all`: every token, device and pusher of
/// the user.
pub async fn logout_all(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<Value>> {
    delete_user_pushers(&state, &me.user_id, None).await?;
    state
        .storage
        .delete_devices_except(&me.user_id, None)
        .await?;
    log_device_list_change(&state, &me.user_id).await?;
    Ok(Json(json!({})))
}
