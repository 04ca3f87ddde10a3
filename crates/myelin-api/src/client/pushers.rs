//! Pushers: where a user's notifications are pushed (`/pushers`). Delivery
//! itself is `myelin_push`; these handlers store pushers and start or stop
//! their delivery tasks.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#push-notifications>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_core::time::now_ms;
use myelin_storage::Pusher;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::MatrixJson;
use crate::state::AppState;

/// Longest `app_id`, in characters (the spec's limit).
pub const APP_ID_LENGTH_MAX: usize = 64;
/// Longest `pushkey`, in bytes (the spec's limit).
pub const PUSHKEY_LENGTH_MAX: usize = 512;
/// Longest `app_display_name`, `device_display_name` and `profile_tag`, in bytes.
pub const DISPLAY_NAME_LENGTH_MAX: usize = 256;
/// Longest `lang`, in bytes (language tags are short).
pub const LANG_LENGTH_MAX: usize = 64;
/// Largest `data` object, serialized: it is sent with every notification.
pub const DATA_BYTES_MAX: usize = 8 * 1024;

const KIND_HTTP: &str = "http";
const KIND_EMAIL: &str = "email";

fn pusher_json(p: &Pusher) -> Value {
    let mut v = json!({
        "pushkey": p.pushkey,
        "kind": p.kind,
        "app_id": p.app_id,
        "app_display_name": p.app_display_name,
        "device_display_name": p.device_display_name,
        "lang": p.lang,
        "data": p.data,
    });
    if let Some(tag) = &p.profile_tag {
        v["profile_tag"] = json!(tag);
    }
    v
}

/// `GET /_matrix/client/v3/pushers`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushers>
pub async fn get_pushers(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<Value>> {
    let pushers = state.storage.pushers(&me.user_id).await?;
    Ok(Json(
        json!({ "pushers": pushers.iter().map(pusher_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
pub struct SetPusher {
    pushkey: Option<String>,
    /// Absent (`None`) or `null` (`Some(None)`): `null` deletes the pusher.
    #[serde(default, deserialize_with = "present")]
    kind: Option<Option<String>>,
    app_id: Option<String>,
    app_display_name: Option<String>,
    device_display_name: Option<String>,
    profile_tag: Option<String>,
    lang: Option<String>,
    data: Option<Map<String, Value>>,
    #[serde(default)]
    append: bool,
}

/// Tells a present `null` from an absent key.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn missing(names: &[&str]) -> MatrixError {
    MatrixError::missing_param(format!("Missing parameters: {}", names.join(", ")))
}

fn too_long(field: &str, limit: usize, unit: &str) -> MatrixError {
    MatrixError::invalid_param(format!("{field} is longer than {limit} {unit}"))
}

/// `POST /_matrix/client/v3/pushers/set`: creates or replaces the user's
/// pusher with this `app_id` and `pushkey`, or deletes it (`kind: null`).
/// A new pusher delivers only events after it was set.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3pushersset>
pub async fn set_pusher(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixJson(req): MatrixJson<SetPusher>,
) -> ApiResult<Json<Value>> {
    let (Some(pushkey), Some(kind), Some(app_id)) = (&req.pushkey, &req.kind, &req.app_id) else {
        let absent: Vec<&str> = [
            ("kind", req.kind.is_none()),
            ("app_id", req.app_id.is_none()),
            ("pushkey", req.pushkey.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        return Err(missing(&absent).into());
    };
    if app_id.is_empty() || pushkey.is_empty() {
        return Err(MatrixError::invalid_param("app_id and pushkey must not be empty").into());
    }
    if app_id.chars().count() > APP_ID_LENGTH_MAX {
        return Err(too_long("app_id", APP_ID_LENGTH_MAX, "characters").into());
    }
    if pushkey.len() > PUSHKEY_LENGTH_MAX {
        return Err(too_long("pushkey", PUSHKEY_LENGTH_MAX, "bytes").into());
    }
    let Some(kind) = kind else {
        // `kind: null` deletes; there being none to delete is no error.
        state
            .storage
            .delete_pusher(&me.user_id, app_id, pushkey)
            .await?;
        state.pushers.stop(&me.user_id, app_id, pushkey);
        return Ok(Json(json!({})));
    };
    if kind != KIND_HTTP && kind != KIND_EMAIL {
        return Err(MatrixError::invalid_param(format!(
            "Unsupported pusher kind `{kind}`: use `http` or `email`"
        ))
        .into());
    }
    let (Some(app_display_name), Some(device_display_name), Some(lang), Some(data)) = (
        &req.app_display_name,
        &req.device_display_name,
        &req.lang,
        &req.data,
    ) else {
        let absent: Vec<&str> = [
            ("app_display_name", req.app_display_name.is_none()),
            ("device_display_name", req.device_display_name.is_none()),
            ("lang", req.lang.is_none()),
            ("data", req.data.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        return Err(missing(&absent).into());
    };
    for (field, value) in [
        ("app_display_name", Some(app_display_name)),
        ("device_display_name", Some(device_display_name)),
        ("profile_tag", req.profile_tag.as_ref()),
    ] {
        if value.is_some_and(|v| v.len() > DISPLAY_NAME_LENGTH_MAX) {
            return Err(too_long(field, DISPLAY_NAME_LENGTH_MAX, "bytes").into());
        }
    }
    if lang.len() > LANG_LENGTH_MAX {
        return Err(too_long("lang", LANG_LENGTH_MAX, "bytes").into());
    }
    let data = Value::Object(data.clone());
    if data.to_string().len() > DATA_BYTES_MAX {
        return Err(too_long("data", DATA_BYTES_MAX, "bytes").into());
    }
    if kind == KIND_HTTP {
        match data.get("url") {
            None => return Err(missing(&["data.url"]).into()),
            Some(Value::String(url)) => myelin_push::gateway::check_pusher_url(url)
                .map_err(|e| MatrixError::invalid_param(format!("data.url {e}")))?,
            Some(_) => return Err(MatrixError::invalid_param("data.url must be a string").into()),
        }
    }
    if data.get("format").is_some_and(|f| !f.is_string()) {
        return Err(MatrixError::invalid_param("data.format must be a string").into());
    }

    let pusher = Pusher {
        user_id: me.user_id.clone(),
        device_id: Some(me.device_id.clone()),
        app_id: app_id.clone(),
        pushkey: pushkey.clone(),
        kind: kind.clone(),
        app_display_name: app_display_name.clone(),
        device_display_name: device_display_name.clone(),
        profile_tag: req.profile_tag.clone(),
        lang: lang.clone(),
        data,
        created_ms: now_ms(),
        // Only events after this request are pushed (kept if it exists).
        last_stream_pos: state.rooms.events().watermark(),
        failing_since_ms: None,
    };
    if !req.append {
        let others = state
            .storage
            .delete_pushers_of_key(app_id, pushkey, &me.user_id)
            .await?;
        for user_id in others {
            state.pushers.stop(&user_id, app_id, pushkey);
        }
    }
    state.storage.put_pusher(&pusher).await?;
    state.pushers.start(&pusher);
    Ok(Json(json!({})))
}

/// Deletes the pushers a device set and stops their delivery (the device is
/// being deleted or logged out).
pub async fn delete_device_pushers(
    state: &AppState,
    user_id: &str,
    device_id: &str,
) -> ApiResult<()> {
    let deleted = state
        .storage
        .delete_device_pushers(user_id, device_id)
        .await?;
    for (app_id, pushkey) in deleted {
        state.pushers.stop(user_id, &app_id, &pushkey);
    }
    Ok(())
}

/// Deletes the user's pushers: those set by any device but `keep`
/// (`/logout/all`, a password change that logs out other devices), and with
/// `keep` `None` also those no device owns (deactivation).
pub async fn delete_user_pushers(
    state: &AppState,
    user_id: &str,
    keep: Option<&str>,
) -> ApiResult<()> {
    for pusher in state.storage.pushers(user_id).await? {
        let kept = match (keep, pusher.device_id.as_deref()) {
            (None, _) => false,
            (Some(keep), Some(device)) => device == keep,
            (Some(_), None) => true,
        };
        if kept {
            continue;
        }
        state
            .storage
            .delete_pusher(user_id, &pusher.app_id, &pusher.pushkey)
            .await?;
        state.pushers.stop(user_id, &pusher.app_id, &pusher.pushkey);
    }
    Ok(())
}
