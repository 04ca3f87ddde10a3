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

/// What a power-level question needs of a room: its create event (v12
/// creators outrank everyone) and its power levels, as of now.
pub struct PowerView {
    version: RoomVersion,
    events: std::collections::HashMap<(String, String), myelin_events::Pdu>,
}

impl PowerView {
    pub async fn load(state: &AppState, room_nid: i64, version: &RoomVersion) -> ApiResult<Self> {
        let mut events = std::collections::HashMap::new();
        for kind in ["m.room.create", "m.room.power_levels"] {
            if let Some(stored) = state
                .storage
                .current_state_event(room_nid, kind, "")
                .await?
            {
                let pdu =
                    myelin_events::Pdu::from_json_str(version, &stored.json, &stored.event_id)
                        .map_err(MatrixError::internal)?;
                events.insert((kind.to_owned(), String::new()), pdu);
            }
        }
        Ok(Self {
            version: version.clone(),
            events,
        })
    }

    fn power_levels(&self) -> Option<&Value> {
        self.events
            .get(&("m.room.power_levels".to_owned(), String::new()))
            .map(|p| &p.content)
    }

    /// The user's power level.
    pub fn user_level(&self, user_id: &str) -> myelin_events::auth::PowerLevel {
        myelin_events::auth::user_power_level(&self.version, &self.events, user_id)
    }

    /// A top-level level of the power levels (`redact`, `invite`, …), or
    /// `default` when absent.
    pub fn level(&self, key: &str, default: i64) -> i64 {
        self.power_levels()
            .and_then(|pl| pl.get(key))
            .and_then(power_int)
            .unwrap_or(default)
    }

    /// The level needed to send a state event of `kind`: its entry in
    /// `events`, else `state_default` — which is 50, or 0 in a room with no
    /// power levels at all, as the spec says.
    pub fn state_level(&self, kind: &str) -> i64 {
        state_level(self.power_levels().and_then(Value::as_object), kind)
    }

    /// Whether the user reaches `required`.
    pub fn reaches(&self, user_id: &str, required: i64) -> bool {
        self.user_level(user_id) >= myelin_events::auth::PowerLevel::Int(required)
    }
}

/// The level a power-levels content asks for a state event of `kind`
/// (see [`PowerView::state_level`]; `None`: the room has no power levels).
pub fn state_level(power_levels: Option<&Map<String, Value>>, kind: &str) -> i64 {
    let Some(pl) = power_levels else { return 0 };
    pl.get("events")
        .and_then(|e| e.get(kind))
        .and_then(power_int)
        .or_else(|| pl.get("state_default").and_then(power_int))
        .unwrap_or(50)
}

/// A power level as JSON: an integer, or (before room v10) a string of one.
pub fn power_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}
