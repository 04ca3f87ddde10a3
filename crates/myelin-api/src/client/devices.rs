//! Device management.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#device-management>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_storage::Device;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::client::keys::log_device_list_change;
use crate::client::pushers::delete_device_pushers;
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath, OptionalMatrixJson};
use crate::state::AppState;
use crate::uia::{STAGE_PASSWORD, UiaRequest};

/// Devices deleted by one `delete_devices` request at most.
const DELETE_DEVICES_MAX: usize = 1000;
/// Longest device display name.
pub(crate) const DISPLAY_NAME_LENGTH_MAX: usize = 256;

fn device_json(d: &Device) -> Value {
    let mut v = json!({ "device_id": d.device_id });
    if let Some(name) = &d.display_name {
        v["display_name"] = json!(name);
    }
    if let Some(ip) = &d.last_seen_ip {
        v["last_seen_ip"] = json!(ip);
    }
    if let Some(ts) = d.last_seen_ms {
        v["last_seen_ts"] = json!(ts);
    }
    v
}

/// `GET /_matrix/client/v3/devices`
pub async fn list_devices(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<Value>> {
    let devices = state.storage.devices(&me.user_id).await?;
    Ok(Json(
        json!({ "devices": devices.iter().map(device_json).collect::<Vec<_>>() }),
    ))
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get_device(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(device_id): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let device = state
        .storage
        .device(&me.user_id, &device_id)
        .await?
        .ok_or_else(|| MatrixError::not_found("No such device"))?;
    Ok(Json(device_json(&device)))
}

#[derive(Deserialize)]
pub struct UpdateDevice {
    display_name: Option<String>,
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn update_device(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(device_id): MatrixPath<String>,
    MatrixJson(req): MatrixJson<UpdateDevice>,
) -> ApiResult<Json<Value>> {
    if req
        .display_name
        .as_ref()
        .is_some_and(|n| n.len() > DISPLAY_NAME_LENGTH_MAX)
    {
        return Err(MatrixError::bad_json(format!(
            "display_name is longer than {DISPLAY_NAME_LENGTH_MAX} bytes"
        ))
        .into());
    }
    // No display_name leaves the name unchanged (the spec); the device must
    // still exist.
    let found = match req.display_name.as_deref() {
        Some(name) => {
            state
                .storage
                .set_device_display_name(&me.user_id, &device_id, Some(name))
                .await?
        }
        None => state
            .storage
            .device(&me.user_id, &device_id)
            .await?
            .is_some(),
    };
    if !found {
        return Err(MatrixError::not_found("No such device").into());
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteDevice {
    auth: Option<Value>,
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}`
pub async fn delete_device(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(device_id): MatrixPath<String>,
    OptionalMatrixJson(req): OptionalMatrixJson<DeleteDevice>,
) -> ApiResult<Json<Value>> {
    // The body is optional here: the first request of UIA often has none.
    let auth = req.and_then(|r| r.auth);
    authorize_deletion(&state, &me.user_id, auth.as_ref()).await?;
    delete_device_pushers(&state, &me.user_id, &device_id).await?;
    state.storage.delete_device(&me.user_id, &device_id).await?;
    log_device_list_change(&state, &me.user_id).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteDevices {
    auth: Option<Value>,
    devices: Vec<String>,
}

/// `POST /_matrix/client/v3/delete_devices`
pub async fn delete_devices(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixJson(req): MatrixJson<DeleteDevices>,
) -> ApiResult<Json<Value>> {
    if req.devices.len() > DELETE_DEVICES_MAX {
        return Err(MatrixError::bad_json(format!(
            "At most {DELETE_DEVICES_MAX} devices per request"
        ))
        .into());
    }
    authorize_deletion(&state, &me.user_id, req.auth.as_ref()).await?;
    for device_id in &req.devices {
        delete_device_pushers(&state, &me.user_id, device_id).await?;
        state.storage.delete_device(&me.user_id, device_id).await?;
    }
    log_device_list_change(&state, &me.user_id).await?;
    Ok(Json(json!({})))
}

async fn authorize_deletion(
    state: &AppState,
    user_id: &str,
    auth: Option<&Value>,
) -> ApiResult<()> {
    let uia = UiaRequest {
        purpose: "delete_devices",
        user_id: Some(user_id),
        flows: vec![vec![STAGE_PASSWORD]],
    };
    let completed = uia.check(state, auth).await?;
    state
        .storage
        .delete_uia_session(&completed.session_id)
        .await?;
    Ok(())
}
