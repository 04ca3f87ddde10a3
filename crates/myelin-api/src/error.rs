//! The one place where Matrix errors become HTTP responses.
//!
//! Architecture Invariant: only this module maps an `errcode` to a status code.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use myelin_core::{ErrorKind, MatrixError};
use myelin_storage::StorageError;
use serde_json::{Value, json};

/// What a handler fails with.
#[derive(Debug)]
pub enum ApiError {
    /// A Matrix error with the status its kind implies.
    Matrix(MatrixError),
    /// A Matrix error with a status the spec sets for one endpoint (for
    /// example 405 `M_BAD_JSON` for server-controlled account data).
    WithStatus(StatusCode, MatrixError),
    /// A user-interactive authentication step: 401 with `flows`, `params`,
    /// `session`, `completed` (and `errcode`/`error` when a stage failed).
    Uia(Value),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<MatrixError> for ApiError {
    fn from(e: MatrixError) -> Self {
        Self::Matrix(e)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Self::Matrix(MatrixError::internal(e))
    }
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix(MatrixError::new(kind, message))
    }
}

/// The status code of each kind, as the spec gives it.
pub fn status_of(kind: &ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Forbidden
        | ErrorKind::UserDeactivated
        | ErrorKind::GuestAccessForbidden
        | ErrorKind::WrongRoomKeysVersion { .. } => StatusCode::FORBIDDEN,
        ErrorKind::UnknownToken { .. } | ErrorKind::MissingToken | ErrorKind::Unauthorized => {
            StatusCode::UNAUTHORIZED
        }
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unrecognized {
            method_not_allowed: true,
        } => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Unrecognized {
            method_not_allowed: false,
        } => StatusCode::NOT_FOUND,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::NotYetUploaded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::CannotOverwriteMedia => StatusCode::CONFLICT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The JSON body of a Matrix error, with the extra fields its kind carries.
pub fn error_body(error: &MatrixError) -> Value {
    let message = match error.kind {
        // The detail of an internal error is for the log, not the client.
        ErrorKind::Internal => "Internal server error",
        _ => error.message.as_str(),
    };
    let mut body = json!({ "errcode": error.kind.errcode(), "error": message });
    match error.kind {
        ErrorKind::UnknownToken { soft_logout } => body["soft_logout"] = json!(soft_logout),
        ErrorKind::LimitExceeded { retry_after_ms } => {
            body["retry_after_ms"] = json!(retry_after_ms)
        }
        // Backup versions are strings on the wire.
        ErrorKind::WrongRoomKeysVersion { current_version } => {
            body["current_version"] = json!(current_version.to_string())
        }
        _ => {}
    }
    body
}

fn matrix_response(status: StatusCode, error: &MatrixError) -> Response {
    if matches!(error.kind, ErrorKind::Internal) {
        tracing::error!(error = %error.message, "internal error");
    }
    let mut response = (status, Json(error_body(error))).into_response();
    if let ErrorKind::LimitExceeded { retry_after_ms } = error.kind {
        let secs = retry_after_ms.div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Matrix(e) => matrix_response(status_of(&e.kind), &e),
            Self::WithStatus(status, e) => matrix_response(status, &e),
            Self::Uia(body) => (StatusCode::UNAUTHORIZED, Json(body)).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_stay_in_the_log() {
        let body = error_body(&MatrixError::internal("password=hunter2 in a query"));
        assert_eq!(
            body,
            json!({"errcode": "M_UNKNOWN", "error": "Internal server error"})
        );
    }

    #[test]
    fn extra_fields() {
        let body = error_body(&MatrixError::new(
            ErrorKind::UnknownToken { soft_logout: true },
            "expired",
        ));
        assert_eq!(body["soft_logout"], json!(true));
        let body = error_body(&MatrixError::new(
            ErrorKind::LimitExceeded {
                retry_after_ms: 1500,
            },
            "slow down",
        ));
        assert_eq!(body["retry_after_ms"], json!(1500));
        assert_eq!(
            status_of(&ErrorKind::Unrecognized {
                method_not_allowed: true
            }),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
