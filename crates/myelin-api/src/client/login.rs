//! Login and token refresh.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#login>

use axum::Json;
use axum::extract::State;
use myelin_core::ids::parse_user_id;
use myelin_core::secrets::{digests_equal, token_digest};
use myelin_core::time::now_ms;
use myelin_core::{ErrorKind, MatrixError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::ClientIp;
use crate::client::session::{self, device_id_or_new};
use crate::error::ApiResult;
use crate::extract::MatrixJson;
use crate::state::AppState;
use crate::uia::check_password;

/// `GET /_matrix/client/v3/login`
pub async fn get_login_flows() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Deserialize)]
pub struct LoginRequest {
    #[serde(rename = "type")]
    login_type: String,
    identifier: Option<Identifier>,
    /// Deprecated top-level user, still sent by old clients.
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    refresh_token: bool,
}

#[derive(Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    id_type: String,
    user: Option<String>,
}

/// The local user id a login names: a full user id on this server, or a
/// localpart. Localparts match case-insensitively (accounts are created
/// lowercase, so two never differ only by case).
pub fn resolve_local_user(state: &AppState, named: &str) -> Option<String> {
    if named.starts_with('@') {
        let id = parse_user_id(named)?;
        if id.server_name().as_str() != state.server_name() {
            return None;
        }
        Some(myelin_core::ids::user_id(
            &id.localpart().to_lowercase(),
            state.server_name(),
        ))
    } else {
        Some(myelin_core::ids::user_id(
            &named.to_lowercase(),
            state.server_name(),
        ))
    }
}

/// `POST /_matrix/client/v3/login`
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MatrixJson(req): MatrixJson<LoginRequest>,
) -> ApiResult<Json<Value>> {
    if req.login_type != "m.login.password" {
        return Err(
            MatrixError::unknown(format!("Unsupported login type {}", req.login_type)).into(),
        );
    }
    let named = match (&req.identifier, &req.user) {
        (Some(identifier), _) if identifier.id_type == "m.id.user" => identifier
            .user
            .clone()
            .ok_or_else(|| MatrixError::missing_param("`identifier.user` is required"))?,
        (Some(identifier), _) => {
            return Err(MatrixError::unknown(format!(
                "Unsupported identifier type {}",
                identifier.id_type
            ))
            .into());
        }
        (None, Some(user)) => user.clone(),
        (None, None) => return Err(MatrixError::missing_param("`identifier` is required").into()),
    };
    let password = req
        .password
        .ok_or_else(|| MatrixError::missing_param("`password` is required"))?;

    let user_id = resolve_local_user(&state, &named);
    // Keyed by the account, so its every spelling (localpart, full id, any
    // case) shares one limit.
    rate_limit(&state, &ip, user_id.as_deref().unwrap_or(&named))?;
    let forbidden = || MatrixError::forbidden("Invalid username or password");
    let user = match &user_id {
        Some(id) => state.storage.user(id).await?,
        None => None,
    };
    // Verify even when the user is unknown, so timing does not tell.
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let verified = check_password(&password, hash).await;
    let user = user.ok_or_else(forbidden)?;
    // Deactivation dropped the password hash, so no password verifies: say
    // why (`M_USER_DEACTIVATED`, as Synapse does) rather than `M_FORBIDDEN`.
    if user.deactivated {
        return Err(MatrixError::new(
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        )
        .into());
    }
    if !verified {
        return Err(forbidden().into());
    }

    let device_id = device_id_or_new(req.device_id)?;
    let issued = session::issue(
        &state,
        &user.user_id,
        device_id,
        req.initial_device_display_name.as_deref(),
        req.refresh_token,
        Some(&ip),
    )
    .await?;
    tracing::info!(user_id = %user.user_id, device_id = %issued.device_id, "login");
    let mut body = Map::new();
    body.insert("user_id".into(), json!(user.user_id));
    issued.write_into(&mut body);
    body.insert(
        "well_known".into(),
        json!({ "m.homeserver": { "base_url": state.config.public_baseurl() } }),
    );
    Ok(Json(Value::Object(body)))
}

fn rate_limit(state: &AppState, ip: &str, named: &str) -> ApiResult<()> {
    let limited = |retry_after_ms| {
        MatrixError::new(
            ErrorKind::LimitExceeded { retry_after_ms },
            "Too many login attempts; try again later",
        )
    };
    state.limits.login.check(ip).map_err(limited)?;
    state
        .limits
        .login_per_account
        .check(&named.to_lowercase())
        .map_err(limited)?;
    Ok(())
}

#[derive(Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// `POST /_matrix/client/v3/refresh`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3refresh>
pub async fn refresh(
    State(state): State<AppState>,
    MatrixJson(req): MatrixJson<RefreshRequest>,
) -> ApiResult<Json<Value>> {
    let unknown = || {
        MatrixError::new(
            ErrorKind::UnknownToken { soft_logout: false },
            "Unknown refresh token",
        )
    };
    let digest = token_digest(&req.refresh_token);
    let record = state
        .storage
        .refresh_token(&digest)
        .await?
        .filter(|r| digests_equal(&r.digest, &digest))
        .ok_or_else(unknown)?;
    if record.expires_ms.is_some_and(|e| e <= now_ms()) {
        return Err(unknown().into());
    }
    let (new, issued) =
        session::new_session(&state, &record.user_id, record.device_id.clone(), true);
    if !state.storage.refresh_session(&digest, new).await? {
        return Err(unknown().into());
    }
    let mut body = Map::new();
    issued.write_into(&mut body);
    body.remove("device_id");
    Ok(Json(Value::Object(body)))
}
