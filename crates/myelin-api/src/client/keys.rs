//! End-to-end encryption keys: uploading, querying and claiming device keys,
//! one-time keys and fallback keys, and device-list changes.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#end-to-end-encryption>
//!
//! Only local users are served: keys of users on other servers are reported
//! under `failures` (federation is a later issue).
//!
//! `/keys/query` also serves cross-signing keys (`client/cross_signing.rs`)
//! and merges the stored signatures into the keys it serves: signatures by
//! the key's own user, and by the caller.
//!
//! Device-list changes (new or changed device keys, a deleted device) are
//! logged at positions of the device-list stream, which sync tokens carry:
//! `/sync`'s `device_lists` and `/keys/changes` read them.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_storage::{CrossSigningUsage, KeySignature, OneTimeKey, StorageError};
use myelin_sync::SyncToken;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::client::cross_signing::verify_signature;
use crate::error::{ApiError, ApiResult};
use crate::extract::{MatrixJson, MatrixQuery};
use crate::state::AppState;

/// The algorithm whose one-time key count is always reported, even at 0
/// (clients generate keys when it is missing or low).
const SIGNED_CURVE25519: &str = "signed_curve25519";
/// Keys one upload may carry (one-time and fallback together).
const UPLOAD_KEYS_MAX: usize = 1_000;
/// Users one query or claim may name.
const USERS_MAX: usize = 1_000;
/// Devices one claim may name in all.
const CLAIM_DEVICES_MAX: usize = 1_000;

#[derive(Deserialize)]
pub struct UploadRequest {
    device_keys: Option<Map<String, Value>>,
    #[serde(default)]
    one_time_keys: Map<String, Value>,
    #[serde(default)]
    fallback_keys: Map<String, Value>,
}

/// The fields of `device_keys` the server checks; the object is stored as
/// given. `algorithms` and `signatures` are read for their shape only (the
/// signature itself is verified on the object).
#[derive(Deserialize)]
#[allow(dead_code)]
struct DeviceKeysShape {
    user_id: String,
    device_id: String,
    algorithms: Vec<String>,
    keys: BTreeMap<String, String>,
    signatures: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /_matrix/client/v3/keys/upload`
pub async fn upload(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixJson(req): MatrixJson<UploadRequest>,
) -> ApiResult<Json<Value>> {
    let keys = req.check(&me.user_id, &me.device_id)?;
    store_keys(&state, &me.user_id, &me.device_id, keys).await?;
    let counts = one_time_key_counts(&state, &me.user_id, &me.device_id).await?;
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

/// Keys of one device, checked and ready to store.
pub struct CheckedKeys {
    device_keys: Option<Value>,
    one_time_keys: Vec<OneTimeKey>,
    fallback_keys: Vec<OneTimeKey>,
}

impl UploadRequest {
    /// Checks the keys are well formed and `device_keys`, if given, is
    /// `user_id`'s `device_id`'s and signed by it.
    pub fn check(self, user_id: &str, device_id: &str) -> ApiResult<CheckedKeys> {
        if self.one_time_keys.len() + self.fallback_keys.len() > UPLOAD_KEYS_MAX {
            return Err(MatrixError::invalid_param(format!(
                "At most {UPLOAD_KEYS_MAX} keys can be uploaded at once"
            ))
            .into());
        }
        let one_time_keys = parse_keys("one_time_keys", self.one_time_keys)?;
        let fallback_keys = parse_keys("fallback_keys", self.fallback_keys)?;
        let device_keys = match self.device_keys {
            Some(mut device_keys) => {
                // `unsigned` is the server's to fill in.
                device_keys.remove("unsigned");
                check_device_keys(&device_keys, user_id, device_id)?;
                Some(Value::Object(device_keys))
            }
            None => None,
        };
        Ok(CheckedKeys {
            device_keys,
            one_time_keys,
            fallback_keys,
        })
    }

    /// Whether the request carries the device's identity keys.
    pub fn has_device_keys(&self) -> bool {
        self.device_keys.is_some()
    }
}

/// Stores a device's keys: identity keys (which may not change once
/// uploaded; a change is logged on the device-list stream), one-time keys
/// and fallback keys.
pub async fn store_keys(
    state: &AppState,
    user_id: &str,
    device_id: &str,
    keys: CheckedKeys,
) -> ApiResult<()> {
    if let Some(device_keys) = keys.device_keys {
        if let Some(old) = state.storage.device_keys(user_id, device_id).await?
            && old.get("keys") != device_keys.get("keys")
        {
            return Err(MatrixError::invalid_param(
                "The device's identity keys cannot change once uploaded",
            )
            .into());
        }
        let tracker = state.rooms.device_lists();
        let pos = tracker.allocate();
        let result = state
            .storage
            .put_device_keys(user_id, device_id, &device_keys, pos)
            .await;
        finish_device_list_change(state, user_id, pos, matches!(result, Ok(true))).await;
        result?;
    }
    if !keys.one_time_keys.is_empty() {
        match state
            .storage
            .put_one_time_keys(user_id, device_id, &keys.one_time_keys)
            .await
        {
            Ok(()) => {}
            Err(StorageError::Conflict(detail)) => {
                return Err(MatrixError::invalid_param(format!(
                    "A one-time key with this id was already uploaded with other content ({detail})"
                ))
                .into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !keys.fallback_keys.is_empty() {
        state
            .storage
            .put_fallback_keys(user_id, device_id, &keys.fallback_keys)
            .await?;
    }
    Ok(())
}

/// The device's unclaimed one-time keys per algorithm, `signed_curve25519`
/// always included (also `/sync`'s `device_one_time_keys_count`).
pub async fn one_time_key_counts(
    state: &AppState,
    user_id: &str,
    device_id: &str,
) -> ApiResult<BTreeMap<String, i64>> {
    let mut counts = state
        .storage
        .one_time_key_counts(user_id, device_id)
        .await?;
    counts.entry(SIGNED_CURVE25519.to_owned()).or_insert(0);
    Ok(counts)
}

/// `<algorithm>:<key_id>` → key object (or bare key string).
fn parse_keys(field: &str, keys: Map<String, Value>) -> ApiResult<Vec<OneTimeKey>> {
    keys.into_iter()
        .map(|(id, key)| {
            let Some((algorithm, key_id)) = id
                .split_once(':')
                .filter(|(a, k)| !a.is_empty() && !k.is_empty())
            else {
                return Err(MatrixError::invalid_param(format!(
                    "{field}: `{id}` is not of the form <algorithm>:<key_id>"
                ))
                .into());
            };
            if !(key.is_object() || key.is_string()) {
                return Err(MatrixError::bad_json(format!(
                    "{field}.{id} must be a key object or a string"
                ))
                .into());
            }
            Ok(OneTimeKey {
                algorithm: algorithm.to_owned(),
                key_id: key_id.to_owned(),
                key,
            })
        })
        .collect()
}

/// Checks `device_keys` is the caller's device's and carries a valid
/// signature by the device's own `ed25519:<device_id>` key.
fn check_device_keys(
    object: &Map<String, Value>,
    user_id: &str,
    device_id: &str,
) -> Result<(), ApiError> {
    let shape: DeviceKeysShape = serde_json::from_value(Value::Object(object.clone()))
        .map_err(|e| MatrixError::bad_json(format!("device_keys: {e}")))?;
    if shape.user_id != user_id || shape.device_id != device_id {
        return Err(MatrixError::invalid_param(format!(
            "device_keys must be for {user_id}'s device {device_id}"
        ))
        .into());
    }
    let key_id = format!("ed25519:{device_id}");
    let public_key = shape.keys.get(&key_id).ok_or_else(|| {
        MatrixError::invalid_param(format!("device_keys.keys has no `{key_id}` key"))
    })?;
    verify_signature(object, user_id, &key_id, public_key)
        .map_err(|why| MatrixError::invalid_param(format!("device_keys: {why}")))?;
    Ok(())
}

#[derive(Deserialize)]
pub struct QueryRequest {
    device_keys: BTreeMap<String, Vec<String>>,
}

/// The server name of a user id, `None` if it is not one.
fn server_of(user_id: &str) -> Option<&str> {
    myelin_core::ids::parse_user_id(user_id)?;
    user_id.split_once(':').map(|(_, server)| server)
}

/// Reports a remote server under `failures`.
fn remote_failure(failures: &mut Map<String, Value>, server: &str) {
    failures.insert(
        server.to_owned(),
        json!({ "errcode": "M_UNRECOGNIZED", "error": "Federation is not supported yet" }),
    );
}

/// `POST /_matrix/client/v3/keys/query`
pub async fn query(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixJson(req): MatrixJson<QueryRequest>,
) -> ApiResult<Json<Value>> {
    if req.device_keys.len() > USERS_MAX {
        return Err(MatrixError::invalid_param(format!(
            "At most {USERS_MAX} users can be queried at once"
        ))
        .into());
    }
    let mut device_keys = Map::new();
    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    let mut user_signing_keys = Map::new();
    let mut failures = Map::new();
    for (user_id, devices) in req.device_keys {
        let Some(server) = server_of(&user_id) else {
            continue;
        };
        if server != state.server_name() {
            remote_failure(&mut failures, server);
            continue;
        }
        // Signatures the caller may see: the user's own, and the caller's.
        let signatures: Vec<KeySignature> = state
            .storage
            .key_signatures(&user_id)
            .await?
            .into_iter()
            .filter(|s| s.signer_user_id == user_id || s.signer_user_id == me.user_id)
            .collect();
        let mut user_keys = Map::new();
        for keys in state.storage.user_device_keys(&user_id, &devices).await? {
            let mut object = keys.keys;
            merge_signatures(&mut object, &keys.device_id, &signatures);
            if let Some(name) = keys.display_name {
                object["unsigned"] = json!({ "device_display_name": name });
            }
            user_keys.insert(keys.device_id, object);
        }
        device_keys.insert(user_id.clone(), Value::Object(user_keys));
        let storage = &state.storage;
        if let Some(mut master) = storage
            .cross_signing_key(&user_id, CrossSigningUsage::Master)
            .await?
        {
            if let Some(public_key) = crate::client::cross_signing::public_key_of(&master) {
                let public_key = public_key.to_owned();
                merge_signatures(&mut master, &public_key, &signatures);
            }
            master_keys.insert(user_id.clone(), master);
        }
        if let Some(key) = storage
            .cross_signing_key(&user_id, CrossSigningUsage::SelfSigning)
            .await?
        {
            self_signing_keys.insert(user_id.clone(), key);
        }
        if user_id == me.user_id
            && let Some(key) = storage
                .cross_signing_key(&user_id, CrossSigningUsage::UserSigning)
                .await?
        {
            user_signing_keys.insert(user_id.clone(), key);
        }
    }
    Ok(Json(json!({
        "device_keys": device_keys,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
        "user_signing_keys": user_signing_keys,
        "failures": failures,
    })))
}

/// Adds the stored signatures over key `key_id` to `object`'s `signatures`.
fn merge_signatures(object: &mut Value, key_id: &str, signatures: &[KeySignature]) {
    for s in signatures.iter().filter(|s| s.target_key_id == key_id) {
        let Some(map) = object.as_object_mut() else {
            return;
        };
        let all = map
            .entry("signatures")
            .or_insert_with(|| Value::Object(Map::new()));
        if !all.is_object() {
            *all = Value::Object(Map::new());
        }
        let by_user = all
            .as_object_mut()
            .map(|all| {
                all.entry(s.signer_user_id.clone())
                    .or_insert_with(|| Value::Object(Map::new()))
            })
            .filter(|v| v.is_object());
        if let Some(Value::Object(by_user)) = by_user {
            by_user.insert(s.signer_key_id.clone(), Value::String(s.signature.clone()));
        }
    }
}

#[derive(Deserialize)]
pub struct ClaimRequest {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /_matrix/client/v3/keys/claim`
pub async fn claim(
    State(state): State<AppState>,
    Auth(_me): Auth,
    MatrixJson(req): MatrixJson<ClaimRequest>,
) -> ApiResult<Json<Value>> {
    let devices: usize = req.one_time_keys.values().map(BTreeMap::len).sum();
    if req.one_time_keys.len() > USERS_MAX || devices > CLAIM_DEVICES_MAX {
        return Err(MatrixError::invalid_param(format!(
            "At most {CLAIM_DEVICES_MAX} devices can be claimed for at once"
        ))
        .into());
    }
    let mut one_time_keys = Map::new();
    let mut failures = Map::new();
    for (user_id, devices) in req.one_time_keys {
        let Some(server) = server_of(&user_id) else {
            continue;
        };
        if server != state.server_name() {
            remote_failure(&mut failures, server);
            continue;
        }
        let mut user_keys = Map::new();
        for (device_id, algorithm) in devices {
            if let Some(key) = state
                .storage
                .claim_key(&user_id, &device_id, &algorithm)
                .await?
            {
                user_keys.insert(
                    device_id,
                    json!({ format!("{}:{}", key.algorithm, key.key_id): key.key }),
                );
            }
        }
        if !user_keys.is_empty() {
            one_time_keys.insert(user_id, Value::Object(user_keys));
        }
    }
    Ok(Json(
        json!({ "one_time_keys": one_time_keys, "failures": failures }),
    ))
}

#[derive(Deserialize)]
pub struct ChangesQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /_matrix/client/v3/keys/changes`
pub async fn changes(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixQuery(query): MatrixQuery<ChangesQuery>,
) -> ApiResult<Json<Value>> {
    let token = |name: &str, value: Option<String>| -> Result<SyncToken, MatrixError> {
        let value = value.ok_or_else(|| MatrixError::missing_param(format!("Missing `{name}`")))?;
        SyncToken::parse(&value).map_err(MatrixError::invalid_param)
    };
    let from = token("from", query.from)?;
    let to = token("to", query.to)?;
    let changed: Vec<String> = if from.device_lists < to.device_lists {
        let shared =
            myelin_rooms::presence::shared_users(state.storage.as_ref(), &me.user_id).await?;
        state
            .storage
            .device_list_changes(from.device_lists, to.device_lists)
            .await?
            .into_iter()
            .filter(|user| shared.contains(user))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(json!({ "changed": changed, "left": [] })))
}

/// Logs a change of `user_id`'s device list (a device deleted) and wakes the
/// `/sync` of everyone sharing a room with them.
pub async fn log_device_list_change(state: &AppState, user_id: &str) -> ApiResult<()> {
    let pos = state.rooms.device_lists().allocate();
    let result = state.storage.log_device_list_change(user_id, pos).await;
    finish_device_list_change(state, user_id, pos, result.is_ok()).await;
    Ok(result?)
}

/// Finishes device-list position `pos`: readable now, and, when something
/// changed, waking the users who share a room with `user_id`.
pub(crate) async fn finish_device_list_change(
    state: &AppState,
    user_id: &str,
    pos: i64,
    changed: bool,
) {
    let wake = if changed {
        match myelin_rooms::presence::shared_users(state.storage.as_ref(), user_id).await {
            Ok(users) => users.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot find whom a device-list change concerns");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let woken = state.rooms.device_lists().finish(pos, wake);
    state
        .rooms
        .notifier()
        .notify(woken.iter().map(String::as_str));
}
