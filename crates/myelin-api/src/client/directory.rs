//! Room aliases: the alias → room id mappings of this server, and the local
//! aliases of a room.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#room-aliases>

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use myelin_core::{ErrorKind, MatrixError};
use myelin_rooms::read::current_membership;
use myelin_storage::{RoomAlias, StorageError};
use ruma::{OwnedRoomAliasId, RoomAliasId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::client::room::{PowerView, room};
use crate::client::room_read::world_readable;
use crate::error::{ApiError, ApiResult};
use crate::extract::{MatrixJson, MatrixPath};
use crate::state::AppState;

/// Aliases `GET /rooms/{roomId}/aliases` lists at most.
const ROOM_ALIASES_MAX: usize = 1000;

/// A room alias of valid grammar (`#localpart:server`, at most 255 bytes),
/// or 400 `M_INVALID_PARAM`.
fn parse_alias(alias: &str) -> ApiResult<OwnedRoomAliasId> {
    RoomAliasId::parse(alias)
        .map_err(|_| MatrixError::invalid_param(format!("Room alias {alias} is invalid")).into())
}

/// An alias this server manages; others are not found (resolving them
/// needs federation).
fn local_alias(state: &AppState, alias: &str) -> ApiResult<OwnedRoomAliasId> {
    let parsed = parse_alias(alias)?;
    if parsed.server_name().as_str() != state.server_name() {
        return Err(MatrixError::not_found(format!("Room alias {alias} not found")).into());
    }
    Ok(parsed)
}

#[derive(Deserialize)]
pub struct SetAliasBody {
    room_id: String,
}

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3directoryroomroomalias>
pub async fn set_alias(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(alias): MatrixPath<String>,
    MatrixJson(body): MatrixJson<SetAliasBody>,
) -> ApiResult<Json<Value>> {
    let parsed = parse_alias(&alias)?;
    if parsed.server_name().as_str() != state.server_name() {
        return Err(MatrixError::invalid_param("Room aliases must be on this server").into());
    }
    let (record, _) = room(&state, &body.room_id).await?;
    if current_membership(state.storage.as_ref(), record.room_nid, &me.user_id)
        .await?
        .as_deref()
        != Some("join")
    {
        return Err(
            MatrixError::forbidden("You must be joined to the room to give it an alias").into(),
        );
    }
    let mapping = RoomAlias {
        alias: alias.clone(),
        room_id: record.room_id,
        creator: me.user_id,
    };
    match state.storage.create_alias(&mapping).await {
        Ok(()) => Ok(Json(json!({}))),
        Err(StorageError::Conflict(_)) => Err(ApiError::WithStatus(
            StatusCode::CONFLICT,
            MatrixError::new(
                ErrorKind::Unknown,
                format!("Room alias {alias} already exists"),
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3directoryroomroomalias>
pub async fn get_alias(
    State(state): State<AppState>,
    MatrixPath(alias): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    local_alias(&state, &alias)?;
    let mapping = state
        .storage
        .alias(&alias)
        .await?
        .ok_or_else(|| MatrixError::not_found(format!("Room alias {alias} not found")))?;
    Ok(Json(
        json!({ "room_id": mapping.room_id, "servers": [state.server_name()] }),
    ))
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`: by the alias's
/// creator, or by a member with the power to send `m.room.canonical_alias`.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3directoryroomroomalias>
pub async fn delete_alias(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(alias): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    local_alias(&state, &alias)?;
    let mapping = state
        .storage
        .alias(&alias)
        .await?
        .ok_or_else(|| MatrixError::not_found(format!("Room alias {alias} not found")))?;
    if mapping.creator != me.user_id
        && !may_set_canonical_alias(&state, &mapping.room_id, &me.user_id).await?
    {
        return Err(MatrixError::forbidden("You may not remove this alias").into());
    }
    if !state.storage.delete_alias(&alias).await? {
        return Err(MatrixError::not_found(format!("Room alias {alias} not found")).into());
    }
    Ok(Json(json!({})))
}

/// Whether `user_id` is joined to the room and reaches the power level
/// needed to send `m.room.canonical_alias` there.
pub(crate) async fn may_set_canonical_alias(
    state: &AppState,
    room_id: &str,
    user_id: &str,
) -> ApiResult<bool> {
    let Some(record) = state.storage.room(room_id).await? else {
        return Ok(false);
    };
    let Some(version) = myelin_events::RoomVersion::parse(&record.room_version) else {
        return Ok(false);
    };
    if current_membership(state.storage.as_ref(), record.room_nid, user_id)
        .await?
        .as_deref()
        != Some("join")
    {
        return Ok(false);
    }
    let power = PowerView::load(state, record.room_nid, &version).await?;
    Ok(power.reaches(user_id, power.state_level("m.room.canonical_alias")))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/aliases`: for the room's members,
/// or anyone when it is `world_readable`.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidaliases>
pub async fn room_aliases(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let (record, _) = room(&state, &room_id).await?;
    let joined = current_membership(state.storage.as_ref(), record.room_nid, &me.user_id)
        .await?
        .as_deref()
        == Some("join");
    if !joined && !world_readable(&state, record.room_nid).await? {
        return Err(MatrixError::forbidden("You are not a member of the room").into());
    }
    let mut aliases = state.storage.room_aliases(&record.room_id).await?;
    aliases.sort();
    aliases.truncate(ROOM_ALIASES_MAX);
    Ok(Json(json!({ "aliases": aliases })))
}
