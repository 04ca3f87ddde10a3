//! Profiles: display names and avatars.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#profiles>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_core::ids::parse_user_id;
use myelin_storage::User;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath};
use crate::state::AppState;

/// Longest display name accepted.
pub const DISPLAYNAME_LENGTH_MAX: usize = 256;
/// Longest avatar URL accepted.
pub const AVATAR_URL_LENGTH_MAX: usize = 1024;

/// A local, active user, or `M_NOT_FOUND`. Remote profiles need federation
/// (a later issue) and are not found for now.
async fn profile_owner(state: &AppState, user_id: &str) -> ApiResult<User> {
    let not_found = || MatrixError::not_found("Profile not found");
    let id = parse_user_id(user_id).ok_or_else(|| MatrixError::invalid_param("Invalid user id"))?;
    if id.server_name().as_str() != state.server_name() {
        return Err(not_found().into());
    }
    let user = state
        .storage
        .user(user_id)
        .await?
        .filter(|u| !u.deactivated)
        .ok_or_else(not_found)?;
    Ok(user)
}

fn own_only(me: &str, user_id: &str) -> ApiResult<()> {
    if me != user_id {
        return Err(MatrixError::forbidden("You may only change your own profile").into());
    }
    Ok(())
}

/// `GET /_matrix/client/v3/profile/{userId}`
pub async fn get_profile(
    State(state): State<AppState>,
    MatrixPath(user_id): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let user = profile_owner(&state, &user_id).await?;
    let mut body = Map::new();
    if let Some(name) = user.displayname {
        body.insert("displayname".into(), json!(name));
    }
    if let Some(url) = user.avatar_url {
        body.insert("avatar_url".into(), json!(url));
    }
    Ok(Json(Value::Object(body)))
}

/// `GET /_matrix/client/v3/profile/{userId}/displayname`
pub async fn get_displayname(
    State(state): State<AppState>,
    MatrixPath(user_id): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let user = profile_owner(&state, &user_id).await?;
    Ok(Json(match user.displayname {
        Some(name) => json!({ "displayname": name }),
        None => json!({}),
    }))
}

/// `GET /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn get_avatar_url(
    State(state): State<AppState>,
    MatrixPath(user_id): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let user = profile_owner(&state, &user_id).await?;
    Ok(Json(match user.avatar_url {
        Some(url) => json!({ "avatar_url": url }),
        None => json!({}),
    }))
}

#[derive(Deserialize)]
pub struct SetDisplayname {
    displayname: Option<String>,
}

/// `PUT /_matrix/client/v3/profile/{userId}/displayname`
pub async fn set_displayname(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(user_id): MatrixPath<String>,
    MatrixJson(req): MatrixJson<SetDisplayname>,
) -> ApiResult<Json<Value>> {
    own_only(&me.user_id, &user_id)?;
    let name = req.displayname.filter(|n| !n.is_empty());
    if name
        .as_ref()
        .is_some_and(|n| n.len() > DISPLAYNAME_LENGTH_MAX)
    {
        return Err(MatrixError::bad_json(format!(
            "displayname is longer than {DISPLAYNAME_LENGTH_MAX} bytes"
        ))
        .into());
    }
    state
        .storage
        .set_displayname(&me.user_id, name.as_deref())
        .await?;
    propagate_to_rooms(&state, &me.user_id).await;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct SetAvatarUrl {
    avatar_url: Option<String>,
}

/// `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn set_avatar_url(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(user_id): MatrixPath<String>,
    MatrixJson(req): MatrixJson<SetAvatarUrl>,
) -> ApiResult<Json<Value>> {
    own_only(&me.user_id, &user_id)?;
    let url = req.avatar_url.filter(|u| !u.is_empty());
    if let Some(url) = &url {
        if url.len() > AVATAR_URL_LENGTH_MAX {
            return Err(MatrixError::bad_json(format!(
                "avatar_url is longer than {AVATAR_URL_LENGTH_MAX} bytes"
            ))
            .into());
        }
        if !is_mxc_uri(url) {
            return Err(MatrixError::invalid_param("avatar_url must be an mxc:// URI").into());
        }
    }
    state
        .storage
        .set_avatar_url(&me.user_id, url.as_deref())
        .await?;
    propagate_to_rooms(&state, &me.user_id).await;
    Ok(Json(json!({})))
}

/// Joined rooms whose member event a profile change updates, at most.
const PROPAGATE_ROOMS_MAX: usize = 1000;

/// Sends a fresh join event (with the new profile) into each joined room,
/// as clients show names and avatars from member events. A room that
/// refuses it (a power level forbidding it, say) is skipped: the profile
/// itself is already saved.
async fn propagate_to_rooms(state: &AppState, user_id: &str) {
    let memberships = match state.storage.user_memberships(user_id).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the rooms to update a profile in");
            return;
        }
    };
    for membership in memberships
        .into_iter()
        .filter(|m| m.membership == "join")
        .take(PROPAGATE_ROOMS_MAX)
    {
        let Ok(content) = crate::client::room::member_content(state, user_id, "join", None).await
        else {
            continue;
        };
        let event = myelin_rooms::SendEvent {
            sender: user_id.to_owned(),
            kind: "m.room.member".to_owned(),
            state_key: Some(user_id.to_owned()),
            content,
            redacts: None,
            txn: None,
        };
        if let Err(e) =
            myelin_rooms::RoomWriter::send(state.rooms.as_ref(), &membership.room_id, event).await
        {
            tracing::debug!(room_id = %membership.room_id, error = %e, "profile change not sent to a room");
        }
    }
}

/// `mxc://<server-name>/<media-id>`
fn is_mxc_uri(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("mxc://") else {
        return false;
    };
    let Some((server, media_id)) = rest.split_once('/') else {
        return false;
    };
    !server.is_empty()
        && !media_id.is_empty()
        && media_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    #[test]
    fn mxc_uris() {
        assert!(super::is_mxc_uri("mxc://example.org/abc_DEF-123"));
        assert!(!super::is_mxc_uri("https://example.org/a.png"));
        assert!(!super::is_mxc_uri("mxc://example.org/"));
        assert!(!super::is_mxc_uri("mxc://example.org/a/b"));
    }
}
