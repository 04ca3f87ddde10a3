//! What the room handlers share: resolving rooms and aliases, and sending
//! through the room writer.

use myelin_core::{ErrorKind, MatrixError};
use myelin_events::RoomVersion;
use myelin_rooms::{RoomWriter, SendEvent, SentEvent};
use myelin_storage::RoomRecord;
use serde_json::{Map, Value};

use crate::error::ApiResult;
use crate::state::AppState;

/// A room known to this server, or 404 `M_NOT_FOUND`.
pub async fn room(state: &AppState, room_id: &str) -> ApiResult<(RoomRecord, RoomVersion)> {
    if !room_id.starts_with('!') {
        return Err(MatrixError::invalid_param("Invalid room id").into());
    }
    let record = state
        .storage
        .room(room_id)
        .await?
        .ok_or_else(|| MatrixError::not_found("Unknown room"))?;
    let version = RoomVersion::parse(&record.room_version).ok_or_else(|| {
        MatrixError::internal(format!(
            "unsupported stored room version {}",
            record.room_version
        ))
    })?;
    Ok((record, version))
}

/// The room id an id or alias names. Aliases of other servers need
/// federation (a later issue) and are not found.
pub async fn resolve_room_id_or_alias(state: &AppState, id_or_alias: &str) -> ApiResult<String> {
    if id_or_alias.starts_with('!') {
        return Ok(id_or_alias.to_owned());
    }
    if !id_or_alias.starts_with('#') || !id_or_alias.contains(':') {
        return Err(MatrixError::invalid_param("Expected a room id or a room alias").into());
    }
    let alias = state
        .storage
        .alias(id_or_alias)
        .await?
        .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    Ok(alias.room_id)
}

/// Sends an event through the room's writer.
pub async fn send(state: &AppState, room_id: &str, event: SendEvent) -> ApiResult<SentEvent> {
    Ok(state.rooms.send(room_id, event).await?)
}

/// A user's membership event content: the membership, their profile (as
/// clients show it), and the reason if given.
pub async fn member_content(
    state: &AppState,
    user_id: &str,
    membership: &str,
    reason: Option<String>,
) -> ApiResult<Map<String, Value>> {
    let mut content = Map::new();
    content.insert("membership".into(), Value::String(membership.to_owned()));
    if matches!(membership, "join" | "invite" | "knock")
        && let Some(user) = state.storage.user(user_id).await?
    {
        if let Some(name) = user.displayname {
            content.insert("displayname".into(), Value::String(name));
        }
        if let Some(url) = user.avatar_url {
            content.insert("avatar_url".into(), Value::String(url));
        }
    }
    if let Some(reason) = reason {
        content.insert("reason".into(), Value::String(reason));
    }
    Ok(content)
}

/// A local user who exists, for invites and the like.
pub async fn local_user(state: &AppState, user_id: &str) -> ApiResult<()> {
    let id = myelin_core::ids::parse_user_id(user_id)
        .ok_or_else(|| MatrixError::invalid_param("Invalid user id"))?;
    if id.server_name().as_str() != state.server_name() {
        return Err(MatrixError::forbidden(
            "Users of other servers need federation, which this server does not do yet",
        )
        .into());
    }
    if state
        .storage
        .user(user_id)
        .await?
        .filter(|u| !u.deactivated)
        .is_none()
    {
        return Err(MatrixError::new(ErrorKind::NotFound, "Unknown user").into());
    }
    Ok(())
}
