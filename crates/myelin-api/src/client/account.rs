//! The account: whoami, password change, deactivation, third-party ids.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#account-management>

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::client::keys::log_device_list_change;
use crate::client::pushers::delete_user_pushers;
use crate::client::register::{check_password_policy, hash};
use crate::error::ApiResult;
use crate::extract::MatrixJson;
use crate::state::AppState;
use crate::uia::{STAGE_PASSWORD, UiaRequest};

/// `GET /_matrix/client/v3/account/whoami`
pub async fn whoami(Auth(me): Auth) -> Json<Value> {
    Json(json!({ "user_id": me.user_id, "device_id": me.device_id, "is_guest": false }))
}

#[derive(Deserialize)]
pub struct PasswordRequest {
    auth: Option<Value>,
    new_password: String,
    #[serde(default = "default_true")]
    logout_devices: bool,
}

fn default_true() -> bool {
    true
}

/// `POST /_matrix/client/v3/account/password`
pub async fn change_password(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixJson(req): MatrixJson<PasswordRequest>,
) -> ApiResult<Json<Value>> {
    check_password_policy(&state, &req.new_password)?;
    let uia = UiaRequest {
        purpose: "password",
        user_id: Some(&me.user_id),
        flows: vec![vec![STAGE_PASSWORD]],
    };
    let completed = uia.check(&state, req.auth.as_ref()).await?;
    let password_hash = hash(&state, &req.new_password).await?;
    state
        .storage
        .set_password_hash(&me.user_id, &password_hash)
        .await?;
    if req.logout_devices {
        delete_user_pushers(&state, &me.user_id, Some(&me.device_id)).await?;
        state
            .storage
            .delete_devices_except(&me.user_id, Some(&me.device_id))
            .await?;
        log_device_list_change(&state, &me.user_id).await?;
    }
    state
        .storage
        .delete_uia_session(&completed.session_id)
        .await?;
    tracing::info!(user_id = %me.user_id, "password changed");
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeactivateRequest {
    auth: Option<Value>,
}

/// `POST /_matrix/client/v3/account/deactivate`: the account can no longer
/// log in, and every token and pusher of it dies.
pub async fn deactivate(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixJson(req): MatrixJson<DeactivateRequest>,
) -> ApiResult<Json<Value>> {
    let uia = UiaRequest {
        purpose: "deactivate",
        user_id: Some(&me.user_id),
        flows: vec![vec![STAGE_PASSWORD]],
    };
    let completed = uia.check(&state, req.auth.as_ref()).await?;
    delete_user_pushers(&state, &me.user_id, None).await?;
    state.storage.deactivate_user(&me.user_id).await?;
    log_device_list_change(&state, &me.user_id).await?;
    state
        .storage
        .delete_uia_session(&completed.session_id)
        .await?;
    tracing::info!(user_id = %me.user_id, "account deactivated");
    // No identity server is ever bound, so none was unbound.
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}

/// `GET /_matrix/client/v3/account/3pid`: Myelin binds no third-party ids.
pub async fn threepids(_auth: Auth) -> Json<Value> {
    Json(json!({ "threepids": [] }))
}
