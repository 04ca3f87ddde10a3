//! Room summaries: what a room looks like from outside, computed from its
//! current state. Shared by the room summary endpoint, the public room
//! directory and the space hierarchy.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1room_summaryroomidoralias>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_rooms::read::current_membership;
use myelin_storage::RoomRecord;
use serde_json::{Map, Value, json};

use crate::auth::MaybeAuth;
use crate::client::room::resolve_room_id_or_alias;
use crate::error::ApiResult;
use crate::extract::MatrixPath;
use crate::state::AppState;

/// Rooms of a `restricted` join rule's `allow` list checked at most.
const ALLOW_ROOMS_MAX: usize = 50;

/// A room as its current state describes it.
pub(crate) struct RoomInfo {
    pub record: RoomRecord,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub avatar_url: Option<String>,
    pub canonical_alias: Option<String>,
    pub join_rule: Option<String>,
    pub world_readable: bool,
    pub guest_can_join: bool,
    pub room_type: Option<String>,
    pub encryption: Option<String>,
    pub num_joined_members: usize,
    /// Rooms whose members may join a `restricted` room.
    allow_rooms: Vec<String>,
}

/// The `content` of the room's current state event `(kind, "")`.
async fn state_content(
    state: &AppState,
    room_nid: i64,
    kind: &str,
) -> ApiResult<Map<String, Value>> {
    let event = state
        .storage
        .current_state_event(room_nid, kind, "")
        .await?;
    Ok(event
        .and_then(|e| serde_json::from_str::<Value>(&e.json).ok())
        .and_then(|mut v| match v.get_mut("content").map(Value::take) {
            Some(Value::Object(content)) => Some(content),
            _ => None,
        })
        .unwrap_or_default())
}

fn string(content: &Map<String, Value>, key: &str) -> Option<String> {
    content.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl RoomInfo {
    /// Reads the room's current state.
    pub(crate) async fn load(state: &AppState, record: RoomRecord) -> ApiResult<Self> {
        let nid = record.room_nid;
        let create = state_content(state, nid, "m.room.create").await?;
        let join_rules = state_content(state, nid, "m.room.join_rules").await?;
        let history = state_content(state, nid, "m.room.history_visibility").await?;
        let guest = state_content(state, nid, "m.room.guest_access").await?;
        let topic = state_content(state, nid, "m.room.topic").await?;
        let members = state.storage.room_members(nid).await?;
        let allow_rooms = join_rules
            .get("allow")
            .and_then(Value::as_array)
            .map(|allow| {
                allow
                    .iter()
                    .filter(|a| a.get("type").and_then(Value::as_str) == Some("m.room_membership"))
                    .filter_map(|a| a.get("room_id").and_then(Value::as_str))
                    .take(ALLOW_ROOMS_MAX)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            name: string(&state_content(state, nid, "m.room.name").await?, "name"),
            topic: string(&topic, "topic"),
            avatar_url: string(&state_content(state, nid, "m.room.avatar").await?, "url"),
            canonical_alias: string(
                &state_content(state, nid, "m.room.canonical_alias").await?,
                "alias",
            ),
            join_rule: string(&join_rules, "join_rule"),
            world_readable: string(&history, "history_visibility").as_deref()
                == Some("world_readable"),
            guest_can_join: string(&guest, "guest_access").as_deref() == Some("can_join"),
            room_type: string(&create, "type"),
            encryption: string(
                &state_content(state, nid, "m.room.encryption").await?,
                "algorithm",
            ),
            num_joined_members: members.iter().filter(|m| m.membership == "join").count(),
            allow_rooms,
            record,
        })
    }

    /// The fields of a public rooms chunk (`PublicRoomsChunk`); absent
    /// optional fields are left out.
    pub(crate) fn chunk(&self) -> Map<String, Value> {
        let mut chunk = Map::new();
        chunk.insert("room_id".into(), json!(self.record.room_id));
        chunk.insert("num_joined_members".into(), json!(self.num_joined_members));
        chunk.insert("world_readable".into(), json!(self.world_readable));
        chunk.insert("guest_can_join".into(), json!(self.guest_can_join));
        for (key, value) in [
            ("name", &self.name),
            ("topic", &self.topic),
            ("avatar_url", &self.avatar_url),
            ("canonical_alias", &self.canonical_alias),
            ("join_rule", &self.join_rule),
            ("room_type", &self.room_type),
        ] {
            if let Some(value) = value {
                chunk.insert(key.into(), json!(value));
            }
        }
        chunk
    }

    /// Whether anyone may preview the room: a `public`, `knock` or
    /// `knock_restricted` join rule, or `world_readable` history.
    pub(crate) fn open_to_preview(&self) -> bool {
        self.world_readable
            || matches!(
                self.join_rule.as_deref(),
                Some("public" | "knock" | "knock_restricted")
            )
    }

    /// Whether `user_id` may see this room's summary: open to preview, or
    /// joined or invited (or knocking), or a member of a room the
    /// `restricted` join rule allows.
    pub(crate) async fn visible_to(
        &self,
        state: &AppState,
        user_id: Option<&str>,
    ) -> ApiResult<bool> {
        if self.open_to_preview() {
            return Ok(true);
        }
        let Some(user_id) = user_id else {
            return Ok(false);
        };
        let membership =
            current_membership(state.storage.as_ref(), self.record.room_nid, user_id).await?;
        if matches!(membership.as_deref(), Some("join" | "invite" | "knock")) {
            return Ok(true);
        }
        if matches!(
            self.join_rule.as_deref(),
            Some("restricted" | "knock_restricted")
        ) {
            for room_id in &self.allow_rooms {
                if let Some(allowed) = state.storage.room(room_id).await?
                    && current_membership(state.storage.as_ref(), allowed.room_nid, user_id)
                        .await?
                        .as_deref()
                        == Some("join")
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}` (and MSC3266's
/// unstable `/_matrix/client/unstable/im.nheko.summary/summary/{roomIdOrAlias}`).
/// Unauthenticated requests see rooms open to preview only; a room the user
/// may not see is not found, as an unknown one.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1room_summaryroomidoralias>
pub async fn room_summary(
    State(state): State<AppState>,
    MaybeAuth(me): MaybeAuth,
    MatrixPath(room_id_or_alias): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let not_found = || MatrixError::not_found("Room not found or not accessible");
    let room_id = resolve_room_id_or_alias(&state, &room_id_or_alias).await?;
    let record = state.storage.room(&room_id).await?.ok_or_else(not_found)?;
    let info = RoomInfo::load(&state, record).await?;
    let user_id = me.as_ref().map(|me| me.user_id.as_str());
    if !info.visible_to(&state, user_id).await? {
        return Err(not_found().into());
    }
    let mut body = info.chunk();
    body.insert("room_version".into(), json!(info.record.room_version));
    // MSC3266's unstable names, which some clients still read.
    body.insert(
        "im.nheko.summary.version".into(),
        json!(info.record.room_version),
    );
    if let Some(algorithm) = &info.encryption {
        body.insert("encryption".into(), json!(algorithm));
        body.insert("im.nheko.summary.encryption".into(), json!(algorithm));
    }
    if let Some(user_id) = user_id
        && let Some(membership) =
            current_membership(state.storage.as_ref(), info.record.room_nid, user_id).await?
    {
        body.insert("membership".into(), json!(membership));
    }
    Ok(Json(Value::Object(body)))
}
