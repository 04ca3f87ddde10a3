//! Account registration.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#account-registration>

use axum::Json;
use axum::extract::State;
use myelin_core::config::RegistrationMode;
use myelin_core::ids::{user_id, validate_new_localpart};
use myelin_core::secrets::{hash_password, random_alphanumeric};
use myelin_core::time::now_ms;
use myelin_core::{ErrorKind, MatrixError};
use myelin_storage::{NewUser, StorageError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::ClientIp;
use crate::client::session::{self, device_id_or_new};
use crate::error::{ApiError, ApiResult};
use crate::extract::{MatrixJson, MatrixQuery};
use crate::state::AppState;
use crate::uia::{self, STAGE_DUMMY, STAGE_REGISTRATION_TOKEN, UiaRequest};

/// Longest password accepted (argon2 input is bounded, and no one types more).
pub const PASSWORD_LENGTH_MAX: usize = 512;
/// Length of generated localparts when the client chooses none.
const GENERATED_LOCALPART_LENGTH: usize = 12;
/// Attempts at a free generated localpart before giving up.
const GENERATED_LOCALPART_TRIES_MAX: usize = 5;

#[derive(Deserialize)]
pub struct RegisterQuery {
    #[serde(default = "user_kind")]
    kind: String,
}

fn user_kind() -> String {
    "user".to_owned()
}

#[derive(Deserialize)]
pub struct RegisterRequest {
    auth: Option<Value>,
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
}

fn flows(mode: RegistrationMode) -> Vec<Vec<&'static str>> {
    match mode {
        RegistrationMode::Open => vec![vec![STAGE_DUMMY]],
        RegistrationMode::Token => vec![vec![STAGE_REGISTRATION_TOKEN]],
        RegistrationMode::Closed => Vec::new(),
    }
}

fn registration_disabled() -> ApiError {
    MatrixError::forbidden("Registration is disabled on this server").into()
}

fn rate_limit(state: &AppState, ip: &str) -> ApiResult<()> {
    state
        .limits
        .registration
        .check(ip)
        .map_err(|retry_after_ms| {
            MatrixError::new(
                ErrorKind::LimitExceeded { retry_after_ms },
                "Too many registration requests",
            )
            .into()
        })
}

/// Lowercases and checks a requested localpart; `M_INVALID_USERNAME` if bad.
fn requested_localpart(state: &AppState, username: &str) -> ApiResult<String> {
    // Clients may send a full user id; take its localpart if it is ours.
    let raw = match username
        .strip_prefix('@')
        .and_then(|rest| rest.rsplit_once(':'))
    {
        Some((localpart, server)) if server == state.server_name() => localpart,
        Some(_) => {
            return Err(MatrixError::new(
                ErrorKind::InvalidUsername,
                "That user id is not on this server",
            )
            .into());
        }
        None => username,
    };
    let localpart = raw.to_lowercase();
    validate_new_localpart(&localpart, state.server_name())
        .map_err(|e| MatrixError::new(ErrorKind::InvalidUsername, e.to_string()))?;
    Ok(localpart)
}

async fn ensure_available(state: &AppState, localpart: &str) -> ApiResult<()> {
    if state
        .storage
        .user(&user_id(localpart, state.server_name()))
        .await?
        .is_some()
    {
        return Err(MatrixError::new(ErrorKind::UserInUse, "User ID already taken").into());
    }
    Ok(())
}

/// Rejects passwords that are too short or too long.
pub fn check_password_policy(state: &AppState, password: &str) -> ApiResult<()> {
    let min = usize::try_from(state.config.auth.password_length_min).unwrap_or(usize::MAX);
    if password.chars().count() < min {
        return Err(MatrixError::new(
            ErrorKind::WeakPassword,
            format!("The password must be at least {min} characters"),
        )
        .into());
    }
    if password.len() > PASSWORD_LENGTH_MAX {
        return Err(MatrixError::bad_json(format!(
            "The password is longer than {PASSWORD_LENGTH_MAX} bytes"
        ))
        .into());
    }
    Ok(())
}

/// Hashes a password off the async runtime.
pub async fn hash(state: &AppState, password: &str) -> ApiResult<String> {
    let cost = state.password_cost();
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_password(&password, cost))
        .await
        .map_err(MatrixError::internal)?
        .map_err(|e| MatrixError::internal(e).into())
}

/// `POST /_matrix/client/v3/register`
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MatrixQuery(query): MatrixQuery<RegisterQuery>,
    MatrixJson(req): MatrixJson<RegisterRequest>,
) -> ApiResult<Json<Value>> {
    match query.kind.as_str() {
        "user" => {}
        "guest" => {
            return Err(MatrixError::new(
                ErrorKind::GuestAccessForbidden,
                "Guest access is not enabled",
            )
            .into());
        }
        other => return Err(MatrixError::invalid_param(format!("Unknown kind {other}")).into()),
    }
    rate_limit(&state, &ip)?;
    let mode = state.config.registration;
    if mode == RegistrationMode::Closed {
        return Err(registration_disabled());
    }
    // Username and password problems are reported before authentication, so
    // a client learns them on its first request.
    let localpart = match &req.username {
        Some(username) => {
            let localpart = requested_localpart(&state, username)?;
            state
                .limits
                .registration_per_username
                .check(&localpart)
                .map_err(|retry_after_ms| {
                    MatrixError::new(
                        ErrorKind::LimitExceeded { retry_after_ms },
                        "Too many registration requests",
                    )
                })?;
            ensure_available(&state, &localpart).await?;
            Some(localpart)
        }
        None => None,
    };
    if let Some(password) = &req.password {
        check_password_policy(&state, password)?;
    }
    // Checked before the account exists, so a bad one leaves nothing behind.
    let device_id = device_id_or_new(req.device_id)?;

    let uia = UiaRequest {
        purpose: "register",
        user_id: None,
        flows: flows(mode),
    };
    let completed = uia.check(&state, req.auth.as_ref()).await?;

    let password = req
        .password
        .ok_or_else(|| MatrixError::missing_param("`password` is required"))?;
    if let Some(token) = completed
        .data
        .get("registration_token")
        .and_then(Value::as_str)
        && !state
            .storage
            .use_registration_token(token, now_ms())
            .await?
    {
        return Err(MatrixError::forbidden("The registration token is no longer valid").into());
    }
    let password_hash = hash(&state, &password).await?;
    let user_id = create_account(&state, localpart, password_hash).await?;
    state
        .storage
        .delete_uia_session(&completed.session_id)
        .await?;
    tracing::info!(%user_id, "registered");

    let mut body = Map::new();
    body.insert("user_id".into(), json!(user_id));
    if !req.inhibit_login {
        let issued = session::issue(
            &state,
            &user_id,
            device_id,
            req.initial_device_display_name.as_deref(),
            req.refresh_token,
            Some(&ip),
        )
        .await?;
        issued.write_into(&mut body);
    }
    Ok(Json(Value::Object(body)))
}

/// Creates the account under the requested localpart, or a generated one.
async fn create_account(
    state: &AppState,
    localpart: Option<String>,
    password_hash: String,
) -> ApiResult<String> {
    let explicit = localpart.is_some();
    for _ in 0..GENERATED_LOCALPART_TRIES_MAX {
        let localpart = localpart
            .clone()
            .unwrap_or_else(|| random_alphanumeric(GENERATED_LOCALPART_LENGTH).to_lowercase());
        let user_id = user_id(&localpart, state.server_name());
        let new = NewUser {
            user_id: user_id.clone(),
            localpart: localpart.clone(),
            password_hash: Some(password_hash.clone()),
            admin: false,
            created_ms: now_ms(),
            displayname: Some(localpart),
        };
        match state.storage.create_user(new).await {
            Ok(()) => return Ok(user_id),
            Err(StorageError::Conflict(_)) if explicit => {
                return Err(MatrixError::new(ErrorKind::UserInUse, "User ID already taken").into());
            }
            Err(StorageError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(MatrixError::internal("no free generated localpart").into())
}

#[derive(Deserialize)]
pub struct AvailableQuery {
    username: String,
}

/// `GET /_matrix/client/v3/register/available`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3registeravailable>
pub async fn available(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MatrixQuery(query): MatrixQuery<AvailableQuery>,
) -> ApiResult<Json<Value>> {
    rate_limit(&state, &ip)?;
    if state.config.registration == RegistrationMode::Closed {
        return Err(registration_disabled());
    }
    let localpart = requested_localpart(&state, &query.username)?;
    ensure_available(&state, &localpart).await?;
    Ok(Json(json!({ "available": true })))
}

#[derive(Deserialize)]
pub struct ValidityQuery {
    token: String,
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1registermloginregistration_tokenvalidity>
pub async fn registration_token_validity(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MatrixQuery(query): MatrixQuery<ValidityQuery>,
) -> ApiResult<Json<Value>> {
    rate_limit(&state, &ip)?;
    if state.config.registration != RegistrationMode::Token {
        return Err(registration_disabled());
    }
    let valid = uia::registration_token_usable(&state, &query.token, now_ms()).await?;
    Ok(Json(json!({ "valid": valid })))
}
