//! `POST /_matrix/client/v3/rooms/{roomId}/upgrade`: replaces a room with a
//! new one of another room version.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#room-upgrades>

use axum::Json;
use axum::extract::State;
use myelin_core::{ErrorKind, MatrixError};
use myelin_events::RoomVersion;
use myelin_events::auth::PowerLevel;
use myelin_rooms::create::{INITIAL_STATE_MAX, InitialState};
use myelin_rooms::{CreateRoomRequest, Preset, RoomWriter, SendEvent};
use myelin_storage::RoomAlias;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::client::room::{PowerView, power_int, room, send, state_level};
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath};
use crate::state::AppState;

/// The state copied into the replacement room (the spec's recommended
/// list); power levels are handled on their own.
const TRANSFERRED_STATE: [&str; 8] = [
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];
/// Local aliases moved at most (the rest stay with the old room).
const ALIASES_MAX: usize = 100;

#[derive(Deserialize)]
pub struct UpgradeBody {
    new_version: String,
    additional_creators: Option<Vec<String>>,
}

/// The content of a current state event, if the room has one.
async fn state_content(
    state: &AppState,
    room_nid: i64,
    kind: &str,
) -> ApiResult<Option<Map<String, Value>>> {
    let Some(stored) = state
        .storage
        .current_state_event(room_nid, kind, "")
        .await?
    else {
        return Ok(None);
    };
    let mut pdu: Value = serde_json::from_str(&stored.json).map_err(MatrixError::internal)?;
    Ok(match pdu.get_mut("content").map(Value::take) {
        Some(Value::Object(content)) => Some(content),
        _ => Some(Map::new()),
    })
}

/// `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
pub async fn upgrade(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<UpgradeBody>,
) -> ApiResult<Json<Value>> {
    let new_version = RoomVersion::parse(&body.new_version).ok_or_else(|| {
        MatrixError::new(
            ErrorKind::UnsupportedRoomVersion,
            format!("Room version {} is not supported", body.new_version),
        )
    })?;
    let (record, old_version) = room(&state, &room_id).await?;
    let room_nid = record.room_nid;

    // 1. The user is joined and may send m.room.tombstone.
    let joined = state
        .storage
        .current_state_event(room_nid, "m.room.member", &me.user_id)
        .await?
        .and_then(|m| serde_json::from_str::<Value>(&m.json).ok())
        .is_some_and(|m| m["content"]["membership"] == "join");
    if !joined {
        return Err(MatrixError::forbidden("You are not joined to this room").into());
    }
    let power = PowerView::load(&state, room_nid, &old_version).await?;
    let old_pl = state_content(&state, room_nid, "m.room.power_levels").await?;
    let tombstone_level = power.state_level("m.room.tombstone");
    let my_level = power.user_level(&me.user_id);
    if my_level < PowerLevel::Int(tombstone_level) {
        return Err(MatrixError::forbidden("You cannot upgrade this room").into());
    }

    // 2. The replacement room's create event.
    let rules = &new_version.rules.authorization;
    let old_create = state_content(&state, room_nid, "m.room.create")
        .await?
        .ok_or_else(|| MatrixError::internal(format!("room {room_id} has no create event")))?;
    let mut predecessor = json!({ "room_id": room_id });
    if !rules.room_create_event_id_as_room_id {
        // Before v12 the predecessor names the old room's last event.
        let last = state
            .storage
            .forward_extremities(room_nid)
            .await?
            .into_iter()
            .max_by_key(|(_, depth)| *depth)
            .map(|(id, _)| id)
            .ok_or_else(|| MatrixError::internal(format!("room {room_id} has no extremity")))?;
        predecessor["event_id"] = json!(last);
    }
    let mut creation_content = Map::new();
    creation_content.insert("predecessor".into(), predecessor);
    if let Some(kind) = old_create.get("type") {
        creation_content.insert("type".into(), kind.clone());
    }
    let mut creators = vec![me.user_id.clone()];
    if rules.additional_room_creators
        && let Some(additional) = body.additional_creators
    {
        for user in &additional {
            if myelin_core::ids::parse_user_id(user).is_none() {
                return Err(MatrixError::invalid_param(format!("{user} is not a user id")).into());
            }
        }
        creators.extend(additional.iter().cloned());
        creation_content.insert("additional_creators".into(), json!(additional));
    }

    // 3. The state carried over.
    let mut initial_state = Vec::new();
    let mut public = false;
    for kind in TRANSFERRED_STATE {
        if let Some(content) = state_content(&state, room_nid, kind).await? {
            if kind == "m.room.join_rules" {
                public = content.get("join_rule") == Some(&json!("public"));
            }
            initial_state.push(InitialState {
                kind: kind.to_owned(),
                state_key: String::new(),
                content,
            });
        }
    }
    let mut final_pl = old_pl.clone().unwrap_or_default();
    let mut users = match final_pl.remove("users") {
        Some(Value::Object(users)) => users,
        _ => Map::new(),
    };
    let mut raise_to = None;
    if rules.explicitly_privilege_room_creators {
        // Creators outrank everyone and may not be listed.
        for creator in &creators {
            users.remove(creator);
        }
    } else {
        let current = match my_level {
            // A creator of the old room keeps the highest ordinary level.
            PowerLevel::Infinite => 100,
            PowerLevel::Int(level) => level,
        };
        let level = current.max(tombstone_level);
        users.insert(me.user_id.clone(), json!(level));
        // The events sent while creating the room may need more, for a while.
        let needed = initial_state
            .iter()
            .map(|s| state_level(Some(&final_pl), &s.kind))
            .chain(
                ["m.room.power_levels", "m.room.canonical_alias"]
                    .map(|kind| state_level(Some(&final_pl), kind)),
            )
            .max()
            .unwrap_or(0);
        if needed > level {
            raise_to = Some(needed);
        }
    }
    final_pl.insert("users".into(), Value::Object(users));
    let mut initial_pl = final_pl.clone();
    if let Some(level) = raise_to {
        initial_pl["users"][&me.user_id] = json!(level);
    }
    initial_state.push(InitialState {
        kind: "m.room.power_levels".into(),
        state_key: String::new(),
        content: initial_pl,
    });
    initial_state.truncate(INITIAL_STATE_MAX);

    let profile = state.storage.user(&me.user_id).await?;
    let request = CreateRoomRequest {
        public,
        room_version: Some(new_version.id.to_owned()),
        creation_content,
        initial_state,
        preset: Some(if public {
            Preset::PublicChat
        } else {
            Preset::PrivateChat
        }),
        creator_displayname: profile.as_ref().and_then(|u| u.displayname.clone()),
        creator_avatar_url: profile.and_then(|u| u.avatar_url),
        ..CreateRoomRequest::default()
    };
    let new_room = state.rooms.create_room(&me.user_id, request).await?;
    let state_event = |kind: &str, content: Map<String, Value>| SendEvent {
        sender: me.user_id.clone(),
        kind: kind.to_owned(),
        state_key: Some(String::new()),
        content,
        redacts: None,
        txn: None,
    };
    if raise_to.is_some() {
        send(
            &state,
            &new_room,
            state_event("m.room.power_levels", final_pl),
        )
        .await?;
    }

    // 4. Local aliases move, and the canonical alias follows them.
    let mut aliases = state.storage.room_aliases(&room_id).await?;
    aliases.truncate(ALIASES_MAX);
    for alias in &aliases {
        let Some(old) = state.storage.alias(alias).await? else {
            continue;
        };
        state.storage.delete_alias(alias).await?;
        state
            .storage
            .create_alias(&RoomAlias {
                alias: alias.clone(),
                room_id: new_room.clone(),
                creator: old.creator,
            })
            .await?;
    }
    if let Some(canonical) = state_content(&state, room_nid, "m.room.canonical_alias").await? {
        let moved = |a: &Value| a.as_str().is_some_and(|a| aliases.iter().any(|m| m == a));
        let mut content = Map::new();
        if let Some(alias) = canonical.get("alias").filter(|a| moved(a)) {
            content.insert("alias".into(), alias.clone());
        }
        if let Some(Value::Array(alt)) = canonical.get("alt_aliases") {
            let alt: Vec<Value> = alt.iter().filter(|a| moved(a)).cloned().collect();
            if !alt.is_empty() {
                content.insert("alt_aliases".into(), Value::Array(alt));
            }
        }
        if !content.is_empty() {
            send(
                &state,
                &new_room,
                state_event("m.room.canonical_alias", content),
            )
            .await?;
            // The old room no longer holds those aliases.
            if let Err(e) = send(
                &state,
                &room_id,
                state_event("m.room.canonical_alias", Map::new()),
            )
            .await
            {
                tracing::warn!(%room_id, error = ?e, "could not clear the old canonical alias");
            }
        }
    }

    // 5. The tombstone.
    let mut tombstone = Map::new();
    tombstone.insert("body".into(), json!("This room has been replaced"));
    tombstone.insert("replacement_room".into(), json!(new_room));
    send(&state, &room_id, state_event("m.room.tombstone", tombstone)).await?;

    // 6. The old room falls silent, if the user may change its power levels.
    if let Some(mut pl) = old_pl {
        let users_default = pl.get("users_default").and_then(power_int).unwrap_or(0);
        let restricted = 50.max(users_default.saturating_add(1));
        let level = |pl: &Map<String, Value>, key: &str, default: i64| {
            pl.get(key).and_then(power_int).unwrap_or(default)
        };
        if level(&pl, "events_default", 0) < restricted || level(&pl, "invite", 0) < restricted {
            pl.insert("events_default".into(), json!(restricted));
            pl.insert("invite".into(), json!(restricted));
            if let Err(e) = send(&state, &room_id, state_event("m.room.power_levels", pl)).await {
                tracing::warn!(%room_id, error = ?e, "could not restrict the old room's power levels");
            }
        }
    }
    tracing::info!(%room_id, %new_room, user = %me.user_id, "room upgraded");
    Ok(Json(json!({ "replacement_room": new_room })))
}
