//! Extractors that fail with Matrix errors instead of axum's plain-text ones.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use myelin_core::{ErrorKind, MatrixError};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body: malformed JSON is `M_NOT_JSON`, JSON of the wrong shape is
/// `M_BAD_JSON` (naming the field), an over-long body `M_TOO_LARGE`.
pub struct MatrixJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for MatrixJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(MatrixJson)
    }
}

/// Parses a request body the way [`MatrixJson`] does.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| MatrixError::new(ErrorKind::NotJson, format!("Content not JSON: {e}")))?;
    if !value.is_object() {
        return Err(MatrixError::bad_json("The request body must be a JSON object").into());
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." {
            format!("Invalid request body: {inner}")
        } else {
            format!("Invalid request body at `{path}`: {inner}")
        };
        MatrixError::bad_json(message).into()
    })
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        MatrixError::new(ErrorKind::TooLarge, "The request body is too large").into()
    } else {
        MatrixError::new(
            ErrorKind::Unknown,
            format!("Cannot read the request body: {}", rejection.body_text()),
        )
        .into()
    }
}

/// Query parameters: a missing one is `M_MISSING_PARAM`, a bad one `M_INVALID_PARAM`.
pub struct MatrixQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for MatrixQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| MatrixQuery(q))
            .map_err(|e: QueryRejection| {
                let text = e.body_text();
                let kind = if text.contains("missing field") {
                    ErrorKind::MissingParam
                } else {
                    ErrorKind::InvalidParam
                };
                MatrixError::new(kind, text).into()
            })
    }
}

/// Path parameters: undecodable ones are `M_INVALID_PARAM`.
pub struct MatrixPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for MatrixPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| MatrixPath(p))
            .map_err(|e: PathRejection| MatrixError::invalid_param(e.body_text()).into())
    }
}

/// A JSON body that may be absent: an empty body is `None`.
pub struct OptionalMatrixJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalMatrixJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalMatrixJson(None));
        }
        parse_json(&bytes).map(|v| OptionalMatrixJson(Some(v)))
    }
}
