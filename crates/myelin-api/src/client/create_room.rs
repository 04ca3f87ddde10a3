//! `POST /_matrix/client/v3/createRoom`
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3createroom>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_rooms::create::InitialState;
use myelin_rooms::{CreateRoomRequest, Preset, RoomWriter};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::MatrixJson;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct CreateRoomBody {
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<String>,
    #[serde(default)]
    invite_3pid: Vec<Value>,
    room_version: Option<String>,
    creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    initial_state: Vec<StateEventBody>,
    preset: Option<String>,
    #[serde(default)]
    is_direct: bool,
    power_level_content_override: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct StateEventBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Map<String, Value>,
}

/// `POST /_matrix/client/v3/createRoom`
pub async fn create_room(
    State(state): State<AppState>,
    crate::auth::Auth(me): Auth,
    MatrixJson(body): MatrixJson<CreateRoomBody>,
) -> ApiResult<Json<Value>> {
    let public = match body.visibility.as_deref() {
        None | Some("private") => false,
        Some("public") => true,
        Some(other) => {
            return Err(MatrixError::invalid_param(format!("Unknown visibility {other}")).into());
        }
    };
    let preset = match body.preset.as_deref() {
        None => None,
        Some(p) => Some(
            Preset::parse(p)
                .ok_or_else(|| MatrixError::invalid_param(format!("Unknown preset {p}")))?,
        ),
    };
    if !body.invite_3pid.is_empty() {
        return Err(
            MatrixError::forbidden("Third-party invites are not supported by this server").into(),
        );
    }
    let profile = state.storage.user(&me.user_id).await?;
    let request = CreateRoomRequest {
        public,
        room_alias_name: body.room_alias_name,
        name: body.name,
        topic: body.topic,
        invite: body.invite,
        room_version: body.room_version,
        creation_content: body.creation_content.unwrap_or_default(),
        initial_state: body
            .initial_state
            .into_iter()
            .map(|s| InitialState {
                kind: s.kind,
                state_key: s.state_key,
                content: s.content,
            })
            .collect(),
        preset,
        is_direct: body.is_direct,
        power_level_content_override: body.power_level_content_override,
        creator_displayname: profile.as_ref().and_then(|u| u.displayname.clone()),
        creator_avatar_url: profile.and_then(|u| u.avatar_url),
    };
    for invitee in &request.invite {
        crate::client::room::local_user(&state, invitee).await?;
    }
    let room_id = state.rooms.create_room(&me.user_id, request).await?;
    if public {
        // `visibility: public` publishes the room in the directory.
        let record =
            state.storage.room(&room_id).await?.ok_or_else(|| {
                MatrixError::internal(format!("created room {room_id} not found"))
            })?;
        state.storage.set_room_public(record.room_nid, true).await?;
    }
    tracing::info!(%room_id, creator = %me.user_id, "room created");
    Ok(Json(json!({ "room_id": room_id })))
}
