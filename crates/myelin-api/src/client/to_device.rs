//! Send-to-device messaging: `PUT /sendToDevice/{eventType}/{txnId}`.
//! Messages wait in each recipient device's inbox (`ToDeviceStore`) until
//! `/sync` has delivered them and the device has synced past them.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#send-to-device-messaging>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_core::ids::parse_user_id;
use myelin_storage::ToDeviceRecipient;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath};
use crate::state::AppState;

/// Longest event type and transaction id, in bytes.
const TYPE_LENGTH_MAX: usize = 255;
const TXN_ID_LENGTH_MAX: usize = 255;
/// Recipient devices of one request at most (after expanding `*`).
pub const TO_DEVICE_RECIPIENTS_MAX: usize = 10_000;

#[derive(Deserialize)]
pub struct SendToDeviceBody {
    messages: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
}

/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`: idempotent per
/// device and transaction id. `*` addresses every device of a user. Devices
/// and users that do not exist are skipped; users of other servers need
/// federation, which is not built, and are skipped too.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid>
pub async fn send_to_device(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((kind, txn_id)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<SendToDeviceBody>,
) -> ApiResult<Json<Value>> {
    if kind.is_empty() || kind.len() > TYPE_LENGTH_MAX {
        return Err(MatrixError::invalid_param("Invalid event type").into());
    }
    if txn_id.is_empty() || txn_id.len() > TXN_ID_LENGTH_MAX {
        return Err(MatrixError::invalid_param("Invalid transaction id").into());
    }
    let mut recipients: Vec<ToDeviceRecipient> = Vec::new();
    let mut users: BTreeSet<String> = BTreeSet::new();
    for (user_id, devices) in body.messages {
        let parsed = parse_user_id(&user_id)
            .ok_or_else(|| MatrixError::invalid_param(format!("`{user_id}` is not a user id")))?;
        if parsed.server_name().as_str() != state.server_name() {
            tracing::debug!(%user_id, "to-device message for another server skipped");
            continue;
        }
        let known: Vec<String> = state
            .storage
            .devices(&user_id)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        // `*` and a named device may both be given: one message per device,
        // the named one winning.
        let mut per_device: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        if let Some(all) = devices.get("*") {
            for device_id in &known {
                per_device.insert(device_id.clone(), all.clone());
            }
        }
        for (device_id, content) in devices {
            if device_id != "*" && known.contains(&device_id) {
                per_device.insert(device_id, content);
            }
        }
        if !per_device.is_empty() {
            users.insert(user_id.clone());
        }
        for (device_id, content) in per_device {
            recipients.push((user_id.clone(), device_id, Value::Object(content)));
            if recipients.len() > TO_DEVICE_RECIPIENTS_MAX {
                return Err(MatrixError::invalid_param(format!(
                    "A request may address at most {TO_DEVICE_RECIPIENTS_MAX} devices"
                ))
                .into());
            }
        }
    }
    let tracker = state.rooms.to_device();
    let pos = tracker.allocate();
    let result = state
        .storage
        .put_to_device(&me.user_id, &me.device_id, &txn_id, &kind, &recipients, pos)
        .await;
    let wake = match result {
        Ok(true) => users.into_iter().collect(),
        _ => Vec::new(),
    };
    let woken = tracker.finish(pos, wake);
    state
        .rooms
        .notifier()
        .notify(woken.iter().map(String::as_str));
    result?;
    Ok(Json(json!({})))
}
