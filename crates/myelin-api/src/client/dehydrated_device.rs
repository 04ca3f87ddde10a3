//! Dehydrated devices (MSC3814, as matrix-rust-sdk uses them): a device the
//! client stores on the server, encrypted, so that megolm keys sent while the
//! user has no device logged in are not lost. Others see it as one of the
//! user's devices (keys, one-time keys, to-device messages); a later device
//! of the user decrypts `device_data` and reads its to-device messages.
//! Proposal: <https://github.com/matrix-org/matrix-spec-proposals/pull/3814>
//!
//! The device is a row of `devices` without a session, so it is also listed
//! by `GET /devices` (clients recognise it by `dehydrated: true` in its
//! device keys). Each user has at most one: a new one replaces the old,
//! whose keys and messages go with it.

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_core::ids::valid_device_id;
use myelin_core::time::now_ms;
use myelin_storage::{DehydratedDevice, StorageError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::client::devices::DISPLAY_NAME_LENGTH_MAX;
use crate::client::keys::{self, UploadRequest};
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath, OptionalMatrixJson};
use crate::state::AppState;

/// To-device messages one `events` call returns at most.
const EVENTS_PER_BATCH: u32 = 100;

#[derive(Deserialize)]
pub struct PutRequest {
    device_id: String,
    device_data: Map<String, Value>,
    initial_device_display_name: Option<String>,
    #[serde(flatten)]
    keys: UploadRequest,
}

/// `PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`:
/// creates the user's dehydrated device with its keys, replacing any earlier
/// one.
pub async fn put_dehydrated_device(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixJson(req): MatrixJson<PutRequest>,
) -> ApiResult<Json<Value>> {
    if !valid_device_id(&req.device_id) {
        return Err(MatrixError::invalid_param("Invalid device_id").into());
    }
    if !req
        .device_data
        .get("algorithm")
        .is_some_and(Value::is_string)
    {
        return Err(MatrixError::bad_json("device_data.algorithm must be a string").into());
    }
    if req
        .initial_device_display_name
        .as_ref()
        .is_some_and(|name| name.len() > DISPLAY_NAME_LENGTH_MAX)
    {
        return Err(MatrixError::invalid_param(format!(
            "initial_device_display_name is longer than {DISPLAY_NAME_LENGTH_MAX} bytes"
        ))
        .into());
    }
    // A dehydrated device without identity keys could never be sent a key.
    if !req.keys.has_device_keys() {
        return Err(MatrixError::missing_param("device_keys is required").into());
    }
    // Everything is checked before anything is replaced.
    let keys = req.keys.check(&me.user_id, &req.device_id)?;
    let device = DehydratedDevice {
        user_id: me.user_id.clone(),
        device_id: req.device_id.clone(),
        device_data: Value::Object(req.device_data),
        created_ms: now_ms(),
    };
    match state
        .storage
        .put_dehydrated_device(device, req.initial_device_display_name.as_deref())
        .await
    {
        Ok(_) => {}
        Err(StorageError::Conflict(_)) => {
            return Err(MatrixError::invalid_param(format!(
                "You already have a device with the id {}",
                req.device_id
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    }
    // The replaced device (if any) is gone and the new one has keys: one
    // change of the user's device list, logged with the keys.
    keys::store_keys(&state, &me.user_id, &req.device_id, keys).await?;
    Ok(Json(json!({ "device_id": req.device_id })))
}

/// `GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
pub async fn get_dehydrated_device(
    State(state): State<AppState>,
    Auth(me): Auth,
) -> ApiResult<Json<Value>> {
    let device = dehydrated_device(&state, &me.user_id).await?;
    Ok(Json(json!({
        "device_id": device.device_id,
        "device_data": device.device_data,
    })))
}

/// `DELETE /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
pub async fn delete_dehydrated_device(
    State(state): State<AppState>,
    Auth(me): Auth,
) -> ApiResult<Json<Value>> {
    let Some(device_id) = state.storage.delete_dehydrated_device(&me.user_id).await? else {
        return Err(no_dehydrated_device().into());
    };
    keys::log_device_list_change(&state, &me.user_id).await?;
    Ok(Json(json!({ "device_id": device_id })))
}

#[derive(Deserialize, Default)]
pub struct EventsRequest {
    next_batch: Option<String>,
}

/// `POST /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events`:
/// the dehydrated device's to-device messages, in batches. Unlike `/sync`,
/// reading a batch deletes nothing, so a rehydration that is cut off can
/// start again; the messages go with the device when it is replaced or
/// deleted. The last batch is empty, with a `next_batch` all the same.
pub async fn dehydrated_device_events(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(device_id): MatrixPath<String>,
    OptionalMatrixJson(req): OptionalMatrixJson<EventsRequest>,
) -> ApiResult<Json<Value>> {
    let req = req.unwrap_or_default();
    let device = dehydrated_device(&state, &me.user_id).await?;
    if device.device_id != device_id {
        return Err(
            MatrixError::forbidden(format!("{device_id} is not your dehydrated device")).into(),
        );
    }
    let after = match req.next_batch.as_deref() {
        None => i64::MIN,
        Some(token) => token
            .parse::<i64>()
            .map_err(|_| MatrixError::invalid_param("Invalid next_batch token"))?,
    };
    let upto = state.rooms.to_device().watermark();
    let messages = state
        .storage
        .to_device_messages(&me.user_id, &device_id, after, upto, EVENTS_PER_BATCH)
        .await?;
    let next_batch = messages.last().map_or(after.max(0), |m| m.stream_pos);
    let events: Vec<Value> = messages
        .into_iter()
        .map(|m| json!({ "sender": m.sender, "type": m.kind, "content": m.content }))
        .collect();
    Ok(Json(json!({
        "events": events,
        "next_batch": next_batch.to_string(),
    })))
}

async fn dehydrated_device(state: &AppState, user_id: &str) -> ApiResult<DehydratedDevice> {
    state
        .storage
        .dehydrated_device(user_id)
        .await?
        .ok_or_else(|| no_dehydrated_device().into())
}

fn no_dehydrated_device() -> MatrixError {
    MatrixError::not_found("No dehydrated device available")
}
