//! Issuing sessions: a device, an access token and optionally a refresh token.
//! Shared by registration, login and refresh.

use myelin_core::MatrixError;
use myelin_core::ids::valid_device_id;
use myelin_core::secrets::{generate_token, random_alphanumeric, token_digest};
use myelin_core::time::now_ms;
use myelin_storage::NewSession;
use serde_json::{Map, Value, json};

use crate::error::ApiResult;
use crate::state::AppState;

pub const ACCESS_TOKEN_PREFIX: &str = "myl_at_";
pub const REFRESH_TOKEN_PREFIX: &str = "myl_rt_";
/// Length of generated device ids (Synapse uses 10 capitals too).
const DEVICE_ID_LENGTH: usize = 10;

/// The tokens of a new session, in the shape login and register answer with.
pub struct IssuedSession {
    pub device_id: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

impl IssuedSession {
    /// Adds `access_token`, `device_id`, `refresh_token`, `expires_in_ms` to a body.
    pub fn write_into(&self, body: &mut Map<String, Value>) {
        body.insert("access_token".into(), json!(self.access_token));
        body.insert("device_id".into(), json!(self.device_id));
        if let Some(refresh) = &self.refresh_token {
            body.insert("refresh_token".into(), json!(refresh));
        }
        if let Some(ms) = self.expires_in_ms {
            body.insert("expires_in_ms".into(), json!(ms));
        }
    }
}

/// A client-chosen device id, checked, or a fresh one.
pub fn device_id_or_new(requested: Option<String>) -> ApiResult<String> {
    match requested {
        Some(id) if valid_device_id(&id) => Ok(id),
        Some(_) => Err(MatrixError::invalid_param("Invalid device_id").into()),
        None => Ok(random_alphanumeric(DEVICE_ID_LENGTH)),
    }
}

/// Stores a session for `user_id` on `device_id` and returns its tokens.
pub async fn issue(
    state: &AppState,
    user_id: &str,
    device_id: String,
    display_name: Option<&str>,
    with_refresh: bool,
    ip: Option<&str>,
) -> ApiResult<IssuedSession> {
    let (new, issued) = new_session(state, user_id, device_id, with_refresh);
    state.storage.create_session(new, display_name, ip).await?;
    Ok(issued)
}

/// Builds a session's stored form and its tokens, without storing it.
pub fn new_session(
    state: &AppState,
    user_id: &str,
    device_id: String,
    with_refresh: bool,
) -> (NewSession, IssuedSession) {
    let now = now_ms();
    let access_token = generate_token(ACCESS_TOKEN_PREFIX);
    let refresh_token = with_refresh.then(|| generate_token(REFRESH_TOKEN_PREFIX));
    let auth = &state.config.auth;
    // Only refreshable access tokens expire: a client that cannot refresh
    // would otherwise be logged out.
    let expires_in_ms = with_refresh.then_some(auth.refreshable_access_token_lifetime_ms);
    let refresh_expires_ms = (with_refresh && auth.refresh_token_lifetime_ms > 0).then(|| {
        now.saturating_add(i64::try_from(auth.refresh_token_lifetime_ms).unwrap_or(i64::MAX))
    });
    let new = NewSession {
        user_id: user_id.to_owned(),
        device_id: device_id.clone(),
        access_digest: token_digest(&access_token).to_vec(),
        access_expires_ms: expires_in_ms
            .map(|ms| now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))),
        refresh_digest: refresh_token.as_deref().map(|t| token_digest(t).to_vec()),
        refresh_expires_ms,
        created_ms: now,
    };
    (
        new,
        IssuedSession {
            device_id,
            access_token,
            refresh_token,
            expires_in_ms,
        },
    )
}
