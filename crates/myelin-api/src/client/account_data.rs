//! Client config: per-user and per-room account data.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#client-config>

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use myelin_core::MatrixError;
use myelin_rooms::push::{IGNORED_USERS_TYPE, PUSH_RULES_TYPE};
use serde_json::{Map, Value, json};

use crate::auth::{Auth, Identity};
use crate::error::{ApiError, ApiResult};
use crate::extract::{MatrixJson, MatrixPath};
use crate::state::AppState;

/// Longest account data type accepted.
const DATA_TYPE_LENGTH_MAX: usize = 255;
/// Room ids are at most 255 bytes.
const ROOM_ID_LENGTH_MAX: usize = 255;

fn check_owner(me: &Identity, user_id: &str) -> ApiResult<()> {
    if me.user_id != user_id {
        return Err(MatrixError::forbidden("You may only access your own account data").into());
    }
    Ok(())
}

fn check_type(data_type: &str) -> ApiResult<()> {
    if data_type.is_empty() || data_type.len() > DATA_TYPE_LENGTH_MAX {
        return Err(MatrixError::invalid_param("Invalid account data type").into());
    }
    Ok(())
}

fn check_room(room_id: &str) -> ApiResult<()> {
    // From room version 12 a room id has no server part: only the sigil is checked.
    if !room_id.starts_with('!') || room_id.len() > ROOM_ID_LENGTH_MAX || room_id.len() < 2 {
        return Err(MatrixError::invalid_param("Invalid room id").into());
    }
    Ok(())
}

/// Types the server manages itself; clients get 405 `M_BAD_JSON` for them.
fn server_controlled(data_type: &str, room: bool) -> ApiResult<()> {
    let controlled = if room {
        data_type == "m.fully_read"
    } else {
        data_type == PUSH_RULES_TYPE
    };
    if controlled {
        return Err(ApiError::WithStatus(
            StatusCode::METHOD_NOT_ALLOWED,
            MatrixError::bad_json(format!(
                "{data_type} is controlled by the server and cannot be set directly"
            )),
        ));
    }
    Ok(())
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn get_global(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((user_id, data_type)): MatrixPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    check_owner(&me, &user_id)?;
    let content = state
        .storage
        .account_data(&me.user_id, None, &data_type)
        .await?
        .ok_or_else(|| MatrixError::not_found("Account data not found"))?;
    Ok(Json(content))
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn put_global(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((user_id, data_type)): MatrixPath<(String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    check_owner(&me, &user_id)?;
    check_type(&data_type)?;
    server_controlled(&data_type, false)?;
    write(
        &state,
        &me.user_id,
        None,
        &data_type,
        &Value::Object(content),
    )
    .await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn get_room(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((user_id, room_id, data_type)): MatrixPath<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    check_owner(&me, &user_id)?;
    check_room(&room_id)?;
    let content = state
        .storage
        .account_data(&me.user_id, Some(&room_id), &data_type)
        .await?
        .ok_or_else(|| MatrixError::not_found("Account data not found"))?;
    Ok(Json(content))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn put_room(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((user_id, room_id, data_type)): MatrixPath<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    check_owner(&me, &user_id)?;
    check_room(&room_id)?;
    check_type(&data_type)?;
    server_controlled(&data_type, true)?;
    write(
        &state,
        &me.user_id,
        Some(&room_id),
        &data_type,
        &Value::Object(content),
    )
    .await?;
    Ok(Json(json!({})))
}

/// Stores account data at a position of the account-data stream, then
/// wakes the user's long-polling `/sync` requests once `/sync` may read it.
pub async fn write(
    state: &AppState,
    user_id: &str,
    room_id: Option<&str>,
    data_type: &str,
    content: &Value,
) -> ApiResult<()> {
    let tracker = state.rooms.account_data();
    let pos = tracker.allocate();
    let result = state
        .storage
        .put_account_data(user_id, room_id, data_type, content, pos)
        .await;
    let wake = if result.is_ok() {
        vec![user_id.to_owned()]
    } else {
        Vec::new()
    };
    let woken = tracker.finish(pos, wake);
    if room_id.is_none() && matches!(data_type, PUSH_RULES_TYPE | IGNORED_USERS_TYPE) {
        // The writer evaluates push rules with these; its copy is stale now.
        state.rooms.push_rules().invalidate(user_id);
    }
    state
        .rooms
        .notifier()
        .notify(woken.iter().map(String::as_str));
    Ok(result?)
}
