//! Cross-signing: uploading a user's master, self-signing and user-signing
//! keys, and signatures made with them (or with a device) over keys.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#cross-signing>
//!
//! Signatures are verified before they are stored: the caller's
//! self-signing key over the caller's device keys, one of the caller's
//! devices (or another cross-signing key of theirs) over the caller's master
//! key, and the caller's user-signing key over another user's master key.
//! Each upload logs a device-list change of the user whose keys changed.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use myelin_core::{ErrorKind, MatrixError};
use myelin_storage::{CrossSigningUsage, KeySignature};
use ruma::serde::Base64;
use ruma::signatures::{
    SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::client::keys::finish_device_list_change;
use crate::error::{ApiError, ApiResult};
use crate::extract::MatrixJson;
use crate::state::AppState;
use crate::uia::{STAGE_PASSWORD, UiaRequest};

/// Keys one signatures upload may name in all.
const SIGNED_KEYS_MAX: usize = 1_000;

#[derive(Deserialize)]
pub struct DeviceSigningRequest {
    master_key: Option<Map<String, Value>>,
    self_signing_key: Option<Map<String, Value>>,
    user_signing_key: Option<Map<String, Value>>,
    auth: Option<Value>,
}

/// The fields of a cross-signing key the server checks; the object is
/// stored as given.
#[derive(Deserialize)]
struct CrossSigningKeyShape {
    user_id: String,
    usage: Vec<String>,
    keys: BTreeMap<String, String>,
}

/// The public key (unpadded base64) of a cross-signing key object, whose
/// one key id is `ed25519:<public key>`.
pub(crate) fn public_key_of(key: &Value) -> Option<&str> {
    let keys = key.get("keys")?.as_object()?;
    let (id, value) = keys.iter().next()?;
    let value = value.as_str()?;
    (keys.len() == 1 && id.strip_prefix("ed25519:") == Some(value)).then_some(value)
}

/// Checks the shape of a cross-signing key of `usage` uploaded by `user_id`;
/// the key's public key.
fn check_key_shape(
    field: &str,
    object: &Map<String, Value>,
    user_id: &str,
    usage: CrossSigningUsage,
) -> ApiResult<String> {
    let shape: CrossSigningKeyShape = serde_json::from_value(Value::Object(object.clone()))
        .map_err(|e| MatrixError::bad_json(format!("{field}: {e}")))?;
    let invalid = |what: String| -> ApiError {
        MatrixError::invalid_param(format!("{field}: {what}")).into()
    };
    if shape.user_id != user_id {
        return Err(invalid(format!("user_id must be {user_id}")));
    }
    if !shape.usage.iter().any(|u| u == usage.as_str()) {
        return Err(invalid(format!("usage must include `{}`", usage.as_str())));
    }
    if shape.keys.len() != 1 {
        return Err(invalid("keys must hold exactly one key".to_owned()));
    }
    let (id, public_key) = shape.keys.into_iter().next().unwrap_or_default();
    if id.strip_prefix("ed25519:") != Some(public_key.as_str()) || public_key.is_empty() {
        return Err(invalid(
            "the key id must be `ed25519:<the public key>`".to_owned(),
        ));
    }
    if Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(&public_key).is_err() {
        return Err(invalid("the public key is not base64".to_owned()));
    }
    Ok(public_key)
}

/// Verifies `signer_user_id`'s signature with `signer_key_id`
/// (`ed25519:<id>`, whose public key is `public_key`) in `object`'s
/// `signatures`; the signature on success, why not otherwise.
pub(crate) fn verify_signature(
    object: &Map<String, Value>,
    signer_user_id: &str,
    signer_key_id: &str,
    public_key: &str,
) -> Result<String, String> {
    let signature = object
        .get("signatures")
        .and_then(|s| s.get(signer_user_id))
        .and_then(|s| s.get(signer_key_id))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no signature by {signer_user_id}'s `{signer_key_id}`"))?;
    let public_key: Base64 =
        Base64::parse(public_key).map_err(|_| "the signing key is not base64".to_owned())?;
    let bytes: Base64 =
        Base64::parse(signature).map_err(|_| "the signature is not base64".to_owned())?;
    let canonical = ruma::canonical_json::try_from_json_map(object.clone())
        .map_err(|e| format!("not canonical JSON: {e}"))?;
    let signed = to_canonical_json_string_for_signing(&canonical).map_err(|e| e.to_string())?;
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        bytes.as_bytes(),
        signed.as_bytes(),
    )
    .map_err(|_| format!("the signature by `{signer_key_id}` does not verify"))?;
    Ok(signature.to_owned())
}

fn invalid_signature(message: impl Into<String>) -> ApiError {
    MatrixError::new(ErrorKind::InvalidSignature, message).into()
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`
pub async fn upload_device_signing(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixJson(req): MatrixJson<DeviceSigningRequest>,
) -> ApiResult<Json<Value>> {
    let user_id = me.user_id.as_str();
    let stored_master = state
        .storage
        .cross_signing_key(user_id, CrossSigningUsage::Master)
        .await?;

    let mut keys = Vec::new();
    let master_public = match &req.master_key {
        Some(master) => {
            let public_key =
                check_key_shape("master_key", master, user_id, CrossSigningUsage::Master)?;
            keys.push((CrossSigningUsage::Master, Value::Object(master.clone())));
            Some(public_key)
        }
        None => stored_master
            .as_ref()
            .and_then(public_key_of)
            .map(str::to_owned),
    };
    for (field, usage, key) in [
        (
            "self_signing_key",
            CrossSigningUsage::SelfSigning,
            &req.self_signing_key,
        ),
        (
            "user_signing_key",
            CrossSigningUsage::UserSigning,
            &req.user_signing_key,
        ),
    ] {
        let Some(key) = key else { continue };
        check_key_shape(field, key, user_id, usage)?;
        let master_public = master_public.as_deref().ok_or_else(|| {
            MatrixError::missing_param(format!(
                "{field} must be signed by a master key, and there is none"
            ))
        })?;
        verify_signature(
            key,
            user_id,
            &format!("ed25519:{master_public}"),
            master_public,
        )
        .map_err(|why| invalid_signature(format!("{field}: {why}")))?;
        keys.push((usage, Value::Object(key.clone())));
    }
    if keys.is_empty() {
        return Ok(Json(json!({})));
    }
    // A public key that is one of the user's device ids would make key ids
    // ambiguous.
    for (_, key) in &keys {
        if let Some(public_key) = public_key_of(key)
            && state.storage.device(user_id, public_key).await?.is_some()
        {
            return Err(MatrixError::forbidden("Key ID in use").into());
        }
    }

    // The first master key needs no authentication (the spec allows it,
    // clients set up cross-signing right after login); nor do keys that are
    // all already stored as given (a retry).
    let mut unchanged = true;
    for (usage, key) in &keys {
        if state
            .storage
            .cross_signing_key(user_id, *usage)
            .await?
            .as_ref()
            != Some(key)
        {
            unchanged = false;
        }
    }
    let completed = if stored_master.is_some() && !unchanged {
        let uia = UiaRequest {
            purpose: "device_signing",
            user_id: Some(user_id),
            flows: vec![vec![STAGE_PASSWORD]],
        };
        Some(uia.check(&state, req.auth.as_ref()).await?)
    } else {
        None
    };

    if !unchanged {
        let pos = state.rooms.device_lists().allocate();
        let result = state
            .storage
            .put_cross_signing_keys(user_id, &keys, pos)
            .await;
        finish_device_list_change(&state, user_id, pos, result.is_ok()).await;
        result?;
    }
    if let Some(completed) = completed {
        state
            .storage
            .delete_uia_session(&completed.session_id)
            .await?;
    }
    Ok(Json(json!({})))
}

/// The object a signature is over, without `signatures` and `unsigned`.
fn unsigned_content(object: &Map<String, Value>) -> Map<String, Value> {
    let mut object = object.clone();
    object.remove("signatures");
    object.remove("unsigned");
    object
}

/// One key of a signatures upload: the verified signatures over it, or the
/// error to report.
async fn check_signed_key(
    state: &AppState,
    me: &str,
    target_user_id: &str,
    key_id: &str,
    object: &Value,
) -> ApiResult<Result<Vec<KeySignature>, MatrixError>> {
    let not_found = || MatrixError::not_found(format!("No key {key_id} of {target_user_id}"));
    let Some(object) = object.as_object() else {
        return Ok(Err(MatrixError::bad_json(
            "The signed key must be an object",
        )));
    };
    let storage = &state.storage;
    let target_master = storage
        .cross_signing_key(target_user_id, CrossSigningUsage::Master)
        .await?;
    let is_master = target_master
        .as_ref()
        .and_then(public_key_of)
        .is_some_and(|k| k == key_id);

    // The stored key, and the signers (user, key id, public key) allowed
    // to sign it.
    let (stored, signers): (Value, Vec<(String, String)>) = if target_user_id == me {
        if is_master {
            // Any of the caller's devices.
            let mut signers = Vec::new();
            for device in storage.user_device_keys(me, &[]).await? {
                let key_id = format!("ed25519:{}", device.device_id);
                if let Some(public) = device.keys["keys"][&key_id].as_str() {
                    signers.push((key_id, public.to_owned()));
                }
            }
            (target_master.unwrap_or_default(), signers)
        } else {
            let Some(device) = storage.device_keys(me, key_id).await? else {
                return Ok(Err(not_found()));
            };
            let self_signing = storage
                .cross_signing_key(me, CrossSigningUsage::SelfSigning)
                .await?;
            let Some(public) = self_signing.as_ref().and_then(public_key_of) else {
                return Ok(Err(MatrixError::new(
                    ErrorKind::InvalidSignature,
                    "There is no self-signing key to sign devices with",
                )));
            };
            (
                device,
                vec![(format!("ed25519:{public}"), public.to_owned())],
            )
        }
    } else {
        if !is_master {
            return Ok(Err(not_found()));
        }
        let user_signing = storage
            .cross_signing_key(me, CrossSigningUsage::UserSigning)
            .await?;
        let Some(public) = user_signing.as_ref().and_then(public_key_of) else {
            return Ok(Err(MatrixError::new(
                ErrorKind::InvalidSignature,
                "There is no user-signing key to sign other users' keys with",
            )));
        };
        (
            target_master.unwrap_or_default(),
            vec![(format!("ed25519:{public}"), public.to_owned())],
        )
    };
    let Some(stored) = stored.as_object() else {
        return Ok(Err(not_found()));
    };
    if unsigned_content(stored) != unsigned_content(object) {
        return Ok(Err(MatrixError::new(
            ErrorKind::InvalidSignature,
            "The signed object does not match the stored key",
        )));
    }
    let offered: Vec<&String> = object
        .get("signatures")
        .and_then(|s| s.get(me))
        .and_then(Value::as_object)
        .map(|s| s.keys().collect())
        .unwrap_or_default();
    let mut valid = Vec::new();
    for (signer_key_id, public) in &signers {
        if !offered.contains(&signer_key_id) {
            continue;
        }
        match verify_signature(object, me, signer_key_id, public) {
            Ok(signature) => valid.push(KeySignature {
                target_user_id: target_user_id.to_owned(),
                target_key_id: key_id.to_owned(),
                signer_user_id: me.to_owned(),
                signer_key_id: signer_key_id.clone(),
                signature,
            }),
            Err(why) => return Ok(Err(MatrixError::new(ErrorKind::InvalidSignature, why))),
        }
    }
    if valid.is_empty() {
        return Ok(Err(MatrixError::new(
            ErrorKind::InvalidSignature,
            "No signature by a key allowed to sign this key",
        )));
    }
    Ok(Ok(valid))
}

/// `POST /_matrix/client/v3/keys/signatures/upload`
pub async fn upload_signatures(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixJson(req): MatrixJson<BTreeMap<String, BTreeMap<String, Value>>>,
) -> ApiResult<Json<Value>> {
    let total: usize = req.values().map(BTreeMap::len).sum();
    if total > SIGNED_KEYS_MAX {
        return Err(MatrixError::invalid_param(format!(
            "At most {SIGNED_KEYS_MAX} keys can be signed at once"
        ))
        .into());
    }
    let mut failures = Map::new();
    for (target_user_id, keys) in req {
        let mut valid = Vec::new();
        let mut user_failures = Map::new();
        for (key_id, object) in keys {
            match check_signed_key(&state, &me.user_id, &target_user_id, &key_id, &object).await? {
                Ok(signatures) => valid.extend(signatures),
                Err(error) => {
                    user_failures.insert(
                        key_id,
                        json!({ "errcode": error.kind.errcode(), "error": error.message }),
                    );
                }
            }
        }
        if !user_failures.is_empty() {
            failures.insert(target_user_id.clone(), Value::Object(user_failures));
        }
        if !valid.is_empty() {
            let pos = state.rooms.device_lists().allocate();
            let result = state
                .storage
                .put_key_signatures(&target_user_id, &valid, pos)
                .await;
            finish_device_list_change(&state, &target_user_id, pos, result.is_ok()).await;
            result?;
        }
    }
    Ok(Json(json!({ "failures": failures })))
}
