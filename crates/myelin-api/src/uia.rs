//! User-interactive authentication (UIA).
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#user-interactive-authentication-api>
//!
//! A request to a protected endpoint either carries an `auth` dict that
//! completes a flow, or gets 401 with the flows, the session and the stages
//! completed so far. Sessions live in the database (any node of a cluster can
//! continue one), expire, and are bound to one purpose and one user.

use axum::http::StatusCode;
use myelin_core::secrets::{random_alphanumeric, verify_password};
use myelin_core::time::now_ms;
use myelin_core::{ErrorKind, MatrixError};
use myelin_storage::UiaSession;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub const STAGE_DUMMY: &str = "m.login.dummy";
pub const STAGE_PASSWORD: &str = "m.login.password";
pub const STAGE_REGISTRATION_TOKEN: &str = "m.login.registration_token";

/// Length of generated session ids.
const SESSION_ID_LENGTH: usize = 24;

/// What an endpoint protects, and for whom.
pub struct UiaRequest<'a> {
    /// Binds the session to one endpoint (`register`, `password`, …).
    pub purpose: &'a str,
    /// The authenticated user, `None` during registration.
    pub user_id: Option<&'a str>,
    /// Each flow is a list of stages; completing any flow suffices.
    pub flows: Vec<Vec<&'static str>>,
}

/// A completed flow.
#[derive(Debug)]
pub struct UiaCompleted {
    pub session_id: String,
    /// Data the stages left (the registration token used).
    pub data: Value,
}

impl UiaRequest<'_> {
    /// Runs one step of UIA for the request's `auth` dict.
    pub async fn check(&self, state: &AppState, auth: Option<&Value>) -> ApiResult<UiaCompleted> {
        let now = now_ms();
        let Some(auth) = auth.filter(|a| !a.is_null()) else {
            let session = self.new_session(state, now).await?;
            return Err(self.challenge(&session, None));
        };
        let auth = auth
            .as_object()
            .ok_or_else(|| MatrixError::bad_json("`auth` must be an object"))?;

        let mut session = match auth.get("session") {
            Some(Value::String(id)) => state
                .storage
                .uia_session(id, now)
                .await?
                .filter(|s| s.purpose == self.purpose && s.user_id.as_deref() == self.user_id)
                .ok_or_else(|| {
                    MatrixError::unknown(
                        "Unknown or expired user-interactive authentication session",
                    )
                })?,
            Some(_) => return Err(MatrixError::bad_json("`auth.session` must be a string").into()),
            None => self.new_session(state, now).await?,
        };

        let Some(stage) = auth.get("type") else {
            // Only the session: the request goes through if a flow is already
            // complete (the spec's retry after an out-of-band stage or a failed
            // request), else the client learns where it stands.
            if self.flow_done(&session) {
                return Ok(UiaCompleted {
                    session_id: session.session_id,
                    data: session.data,
                });
            }
            return Err(self.challenge(&session, None));
        };
        let stage = stage
            .as_str()
            .ok_or_else(|| MatrixError::bad_json("`auth.type` must be a string"))?;
        if !self.flows.iter().flatten().any(|s| *s == stage) {
            // 400, not the 404 of `M_UNRECOGNIZED` by default: the endpoint
            // exists, and clients read 404 `M_UNRECOGNIZED` as "unsupported endpoint".
            return Err(ApiError::WithStatus(
                StatusCode::BAD_REQUEST,
                MatrixError::new(
                    ErrorKind::Unrecognized {
                        method_not_allowed: false,
                    },
                    format!("Authentication stage {stage} is not offered here"),
                ),
            ));
        }

        let mut data = session.data.clone();
        match self.run_stage(state, stage, auth, &mut data, now).await {
            Ok(()) => {}
            Err(StageError::Failed(error)) => return Err(self.challenge(&session, Some(&error))),
            Err(StageError::Api(e)) => return Err(e),
        }
        state
            .storage
            .complete_uia_stage(&session.session_id, stage, &data)
            .await?;
        if !session.completed.iter().any(|s| s == stage) {
            session.completed.push(stage.to_owned());
        }
        session.data = data;

        if self.flow_done(&session) {
            Ok(UiaCompleted {
                session_id: session.session_id,
                data: session.data,
            })
        } else {
            Err(self.challenge(&session, None))
        }
    }

    /// Whether the session's completed stages make up a whole flow.
    fn flow_done(&self, session: &UiaSession) -> bool {
        self.flows.iter().any(|flow| {
            flow.iter()
                .all(|s| session.completed.iter().any(|c| c == s))
        })
    }

    async fn new_session(&self, state: &AppState, now: i64) -> ApiResult<UiaSession> {
        let session = UiaSession {
            session_id: random_alphanumeric(SESSION_ID_LENGTH),
            user_id: self.user_id.map(str::to_owned),
            purpose: self.purpose.to_owned(),
            completed: Vec::new(),
            data: json!({}),
            expires_ms: now
                + i64::try_from(state.config.auth.uia_session_lifetime_ms).unwrap_or(i64::MAX / 2),
        };
        state.storage.create_uia_session(session.clone()).await?;
        Ok(session)
    }

    /// The 401 body: where the client stands, and why the last stage failed.
    fn challenge(&self, session: &UiaSession, error: Option<&MatrixError>) -> ApiError {
        let flows: Vec<Value> = self
            .flows
            .iter()
            .map(|stages| json!({ "stages": stages }))
            .collect();
        let mut body = json!({
            "flows": flows,
            "params": {},
            "session": session.session_id,
            "completed": session.completed,
        });
        if let Some(error) = error {
            body["errcode"] = json!(error.kind.errcode());
            body["error"] = json!(error.message);
        }
        ApiError::Uia(body)
    }

    async fn run_stage(
        &self,
        state: &AppState,
        stage: &str,
        auth: &serde_json::Map<String, Value>,
        data: &mut Value,
        now: i64,
    ) -> Result<(), StageError> {
        match stage {
            STAGE_DUMMY => Ok(()),
            STAGE_PASSWORD => self.password_stage(state, auth).await,
            STAGE_REGISTRATION_TOKEN => {
                let token = auth.get("token").and_then(Value::as_str).ok_or_else(|| {
                    StageError::Api(MatrixError::missing_param("`auth.token` is required").into())
                })?;
                if !registration_token_usable(state, token, now).await? {
                    return Err(StageError::Failed(MatrixError::new(
                        ErrorKind::Unauthorized,
                        "Invalid registration token",
                    )));
                }
                data["registration_token"] = json!(token);
                Ok(())
            }
            other => Err(StageError::Api(
                MatrixError::unknown(format!("Unsupported stage {other}")).into(),
            )),
        }
    }

    async fn password_stage(
        &self,
        state: &AppState,
        auth: &serde_json::Map<String, Value>,
    ) -> Result<(), StageError> {
        let Some(user_id) = self.user_id else {
            return Err(StageError::Api(
                MatrixError::unknown("Password authentication needs a user").into(),
            ));
        };
        let password = auth
            .get("password")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                StageError::Api(MatrixError::missing_param("`auth.password` is required").into())
            })?;
        // The identifier, if given, must name the authenticated user.
        let named = auth
            .get("identifier")
            .and_then(|i| i.get("user"))
            .or_else(|| auth.get("user"))
            .and_then(Value::as_str);
        if let Some(named) = named {
            let same = crate::client::login::resolve_local_user(state, named)
                .is_some_and(|u| u == user_id);
            if !same {
                return Err(StageError::Failed(MatrixError::forbidden(
                    "Invalid username or password",
                )));
            }
        }
        let user = state
            .storage
            .user(user_id)
            .await
            .map_err(|e| StageError::Api(e.into()))?;
        let hash = user.and_then(|u| u.password_hash);
        if !check_password(password, hash).await {
            return Err(StageError::Failed(MatrixError::forbidden(
                "Invalid username or password",
            )));
        }
        Ok(())
    }
}

enum StageError {
    /// The stage failed: answer with the UIA body and this error in it.
    Failed(MatrixError),
    /// The request is malformed, or the server failed.
    Api(ApiError),
}

impl From<ApiError> for StageError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

/// Whether a registration token exists, has not expired and has uses left.
pub async fn registration_token_usable(state: &AppState, token: &str, now: i64) -> ApiResult<bool> {
    let record = state.storage.registration_token(token).await?;
    Ok(record.is_some_and(|t| {
        t.expiry_ms.is_none_or(|e| e > now)
            && t.uses_allowed.is_none_or(|allowed| t.completed < allowed)
    }))
}

/// A fixed PHC string to verify against when there is no user, so that a
/// wrong username costs as long as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$eZ1gHBi0WZ4fk1cDXmVfE0Hwc2ALhbQjHD9gwz/8+4o";

/// Verifies a password off the async runtime (argon2 takes tens of ms).
pub async fn check_password(password: &str, hash: Option<String>) -> bool {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || match hash {
        Some(hash) => verify_password(&password, &hash),
        None => {
            let _ = verify_password(&password, DUMMY_HASH);
            false
        }
    })
    .await
    .unwrap_or(false)
}
