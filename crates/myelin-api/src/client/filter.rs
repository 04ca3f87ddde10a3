//! Stored filters.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#filtering>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_core::filter::parse_filter;
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath};
use crate::state::AppState;

/// `POST /_matrix/client/v3/user/{userId}/filter`
pub async fn create_filter(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(user_id): MatrixPath<String>,
    MatrixJson(definition): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    if me.user_id != user_id {
        return Err(MatrixError::forbidden("You may only create filters for yourself").into());
    }
    let definition = Value::Object(definition);
    parse_filter(definition.clone()).map_err(MatrixError::bad_json)?;
    let filter_id = state
        .storage
        .create_filter(&me.user_id, &definition)
        .await?;
    Ok(Json(json!({ "filter_id": filter_id })))
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub async fn get_filter(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((user_id, filter_id)): MatrixPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    if me.user_id != user_id {
        return Err(MatrixError::forbidden("You may only read your own filters").into());
    }
    let definition = state
        .storage
        .filter(&me.user_id, &filter_id)
        .await?
        .ok_or_else(|| MatrixError::not_found("No such filter"))?;
    Ok(Json(definition))
}
