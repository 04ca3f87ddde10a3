//! Room membership: join, invite, leave, forget, kick, ban, unban, knock, and
//! the member lists.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#room-membership>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_rooms::SendEvent;
use myelin_rooms::read::{ClientEvents, Viewer, current_membership};
use myelin_storage::StoredEvent;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::client::room::{local_user, member_content, resolve_room_id_or_alias, room, send};
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath, MatrixQuery, OptionalMatrixJson};
use crate::state::AppState;

/// Entries of a join rule's `allow` list looked at, at most.
const ALLOW_RULES_MAX: usize = 64;
/// Longest `reason` kept in a membership event.
const REASON_LENGTH_MAX: usize = 1024;

#[derive(Deserialize, Default)]
pub struct ReasonBody {
    reason: Option<String>,
}

#[derive(Deserialize)]
pub struct TargetBody {
    user_id: String,
    reason: Option<String>,
}

fn reason(reason: Option<String>) -> ApiResult<Option<String>> {
    if reason.as_ref().is_some_and(|r| r.len() > REASON_LENGTH_MAX) {
        return Err(MatrixError::bad_json(format!(
            "reason is longer than {REASON_LENGTH_MAX} bytes"
        ))
        .into());
    }
    Ok(reason)
}

/// Sends `membership` for `target` as `sender`.
async fn set_membership(
    state: &AppState,
    room_id: &str,
    sender: &str,
    target: &str,
    membership: &str,
    reason_text: Option<String>,
) -> ApiResult<String> {
    set_membership_with(
        state,
        room_id,
        sender,
        target,
        membership,
        reason_text,
        Map::new(),
    )
    .await
}

/// [`set_membership`] with extra content fields.
async fn set_membership_with(
    state: &AppState,
    room_id: &str,
    sender: &str,
    target: &str,
    membership: &str,
    reason_text: Option<String>,
    extra: Map<String, Value>,
) -> ApiResult<String> {
    let mut content = member_content(state, target, membership, reason(reason_text)?).await?;
    content.extend(extra);
    let event = SendEvent {
        sender: sender.to_owned(),
        kind: "m.room.member".to_owned(),
        state_key: Some(target.to_owned()),
        content,
        redacts: None,
        txn: None,
    };
    Ok(send(state, room_id, event).await?.event_id)
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`
pub async fn join_by_id_or_alias(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(id_or_alias): MatrixPath<String>,
    OptionalMatrixJson(body): OptionalMatrixJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let room_id = resolve_room_id_or_alias(&state, &id_or_alias).await?;
    join(
        &state,
        &me.user_id,
        &room_id,
        body.unwrap_or_default().reason,
    )
    .await
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
pub async fn join_room(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    OptionalMatrixJson(body): OptionalMatrixJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    join(
        &state,
        &me.user_id,
        &room_id,
        body.unwrap_or_default().reason,
    )
    .await
}

async fn join(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    reason: Option<String>,
) -> ApiResult<Json<Value>> {
    // A room this server does not know needs a join over federation (a later issue).
    let (record, version) = room(state, room_id).await?;
    let mut extra = Map::new();
    if let Some(authoriser) = restricted_join_authoriser(state, &record, &version, user_id).await? {
        extra.insert("join_authorised_via_users_server".into(), json!(authoriser));
    }
    set_membership_with(state, room_id, user_id, user_id, "join", reason, extra).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// For a join under a `restricted` or `knock_restricted` rule by a user who
/// is neither invited nor joined: a local member able to invite, who vouches
/// that the user is in one of the allowed rooms — or `None` (and the
/// authorization rules then refuse the join with their reason).
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#restricted-rooms>
async fn restricted_join_authoriser(
    state: &AppState,
    record: &myelin_storage::RoomRecord,
    version: &myelin_events::RoomVersion,
    user_id: &str,
) -> ApiResult<Option<String>> {
    use myelin_events::auth::{PowerLevel, user_power_level};
    if !version.rules.authorization.restricted_join_rule {
        return Ok(None);
    }
    let Some(rules) = state
        .storage
        .current_state_event(record.room_nid, "m.room.join_rules", "")
        .await?
    else {
        return Ok(None);
    };
    let rules = myelin_events::Pdu::from_json_str(version, &rules.json, &rules.event_id)
        .map_err(MatrixError::internal)?;
    let join_rule = rules
        .content
        .get("join_rule")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !matches!(join_rule, "restricted" | "knock_restricted") {
        return Ok(None);
    }
    if matches!(
        current_membership(state.storage.as_ref(), record.room_nid, user_id)
            .await?
            .as_deref(),
        Some("join" | "invite")
    ) {
        return Ok(None);
    }
    // Is the user in one of the allowed rooms?
    let mut allowed = false;
    for entry in rules
        .content
        .get("allow")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(ALLOW_RULES_MAX)
    {
        if entry.get("type").and_then(Value::as_str) != Some("m.room_membership") {
            continue;
        }
        let Some(other) = entry.get("room_id").and_then(Value::as_str) else {
            continue;
        };
        if let Some(other) = state.storage.room(other).await?
            && current_membership(state.storage.as_ref(), other.room_nid, user_id)
                .await?
                .as_deref()
                == Some("join")
        {
            allowed = true;
            break;
        }
    }
    if !allowed {
        return Ok(None);
    }
    // A joined local member whose power reaches the invite level.
    let mut view = std::collections::HashMap::new();
    let mut invite_level = 0;
    for stored in state.storage.current_state(record.room_nid).await? {
        let pdu = myelin_events::Pdu::from_json_str(version, &stored.json, &stored.event_id)
            .map_err(MatrixError::internal)?;
        if pdu.kind == "m.room.power_levels" {
            invite_level = pdu
                .content
                .get("invite")
                .and_then(Value::as_i64)
                .unwrap_or(0);
        }
        view.insert(
            (pdu.kind.clone(), pdu.state_key.clone().unwrap_or_default()),
            pdu,
        );
    }
    let suffix = format!(":{}", state.server_name());
    let mut candidates: Vec<String> = view
        .iter()
        .filter(|((kind, key), pdu)| {
            kind == "m.room.member"
                && key.ends_with(&suffix)
                && pdu.content.get("membership").and_then(Value::as_str) == Some("join")
        })
        .map(|((_, key), _)| key.clone())
        .collect();
    candidates.sort();
    Ok(candidates
        .into_iter()
        .find(|u| user_power_level(version, &view, u) >= PowerLevel::Int(invite_level)))
}

/// `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
pub async fn knock(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(id_or_alias): MatrixPath<String>,
    OptionalMatrixJson(body): OptionalMatrixJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let room_id = resolve_room_id_or_alias(&state, &id_or_alias).await?;
    room(&state, &room_id).await?;
    set_membership(
        &state,
        &room_id,
        &me.user_id,
        &me.user_id,
        "knock",
        body.unwrap_or_default().reason,
    )
    .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

#[derive(Deserialize)]
pub struct InviteBody {
    user_id: Option<String>,
    reason: Option<String>,
    id_server: Option<Value>,
    medium: Option<Value>,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
pub async fn invite(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<InviteBody>,
) -> ApiResult<Json<Value>> {
    if body.id_server.is_some() || body.medium.is_some() {
        return Err(
            MatrixError::forbidden("Third-party invites are not supported by this server").into(),
        );
    }
    let user_id = body
        .user_id
        .ok_or_else(|| MatrixError::missing_param("`user_id` is required"))?;
    room(&state, &room_id).await?;
    local_user(&state, &user_id).await?;
    set_membership(
        &state,
        &room_id,
        &me.user_id,
        &user_id,
        "invite",
        body.reason,
    )
    .await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
pub async fn leave(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    OptionalMatrixJson(body): OptionalMatrixJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    room(&state, &room_id).await?;
    set_membership(
        &state,
        &room_id,
        &me.user_id,
        &me.user_id,
        "leave",
        body.unwrap_or_default().reason,
    )
    .await?;
    Ok(Json(json!({})))
}

/// Sets another user's membership (kick, ban): the rules decide whether
/// the sender may.
async fn moderate(
    state: &AppState,
    sender: &str,
    room_id: &str,
    body: TargetBody,
    membership: &str,
) -> ApiResult<Json<Value>> {
    room(state, room_id).await?;
    set_membership(
        state,
        room_id,
        sender,
        &body.user_id,
        membership,
        body.reason,
    )
    .await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`
pub async fn kick(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> ApiResult<Json<Value>> {
    moderate(&state, &me.user_id, &room_id, body, "leave").await
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub async fn ban(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> ApiResult<Json<Value>> {
    moderate(&state, &me.user_id, &room_id, body, "ban").await
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`
pub async fn unban(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> ApiResult<Json<Value>> {
    let (record, _) = room(&state, &room_id).await?;
    if current_membership(state.storage.as_ref(), record.room_nid, &body.user_id)
        .await?
        .as_deref()
        != Some("ban")
    {
        return Err(MatrixError::forbidden("That user is not banned").into());
    }
    set_membership(
        &state,
        &room_id,
        &me.user_id,
        &body.user_id,
        "leave",
        body.reason,
    )
    .await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`
pub async fn forget(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let (record, _) = room(&state, &room_id).await?;
    match current_membership(state.storage.as_ref(), record.room_nid, &me.user_id)
        .await?
        .as_deref()
    {
        Some("join" | "invite" | "knock") => {
            return Err(MatrixError::unknown("Leave the room before forgetting it").into());
        }
        None => return Err(MatrixError::not_found("You were never in this room").into()),
        _ => {}
    }
    state
        .storage
        .forget_room(&me.user_id, record.room_nid)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/joined_rooms`
pub async fn joined_rooms(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<Value>> {
    let rooms: Vec<String> = state
        .storage
        .user_memberships(&me.user_id)
        .await?
        .into_iter()
        .filter(|m| m.membership == "join")
        .map(|m| m.room_id)
        .collect();
    Ok(Json(json!({ "joined_rooms": rooms })))
}

#[derive(Deserialize)]
pub struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

/// The member events a user may list: the current ones while they are in
/// the room, those as of their departure once they left.
async fn member_events(
    state: &AppState,
    room_nid: i64,
    user_id: &str,
    at: Option<i64>,
) -> ApiResult<Vec<StoredEvent>> {
    let own = state
        .storage
        .current_state_event(room_nid, "m.room.member", user_id)
        .await?;
    let Some(own) = own else {
        return Err(MatrixError::forbidden("You are not a member of this room").into());
    };
    let snapshot = match (own.membership.as_deref(), at) {
        (Some("join"), None) => state.storage.current_snapshot(room_nid).await?,
        (Some("join"), Some(pos)) => state_snapshot_at(state, room_nid, pos).await?,
        (Some("leave" | "ban"), _) => own.state_before_nid,
        _ => return Err(MatrixError::forbidden("You are not a member of this room").into()),
    };
    let entries = state.storage.state_at(snapshot).await?;
    let ids: Vec<String> = entries
        .into_iter()
        .filter(|e| e.kind == "m.room.member")
        .map(|e| e.event_id)
        .collect();
    let mut events = state.storage.events(&ids).await?;
    events.sort_by(|a, b| a.state_key.cmp(&b.state_key));
    Ok(events)
}

/// The snapshot after the last event at or before stream position `pos`.
pub async fn state_snapshot_at(state: &AppState, room_nid: i64, pos: i64) -> ApiResult<i64> {
    let last = state
        .storage
        .room_events_by_stream(room_nid, i64::MIN, pos, 1, true)
        .await?;
    Ok(last.first().map_or(0, |e| e.state_after_nid))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members`
pub async fn members(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<MembersQuery>,
) -> ApiResult<Json<Value>> {
    let (record, version) = room(&state, &room_id).await?;
    let at = match &query.at {
        Some(token) => Some(
            myelin_sync::SyncToken::parse(token)
                .map_err(MatrixError::invalid_param)?
                .events,
        ),
        None => None,
    };
    let events = member_events(&state, record.room_nid, &me.user_id, at).await?;
    let events: Vec<StoredEvent> = events
        .into_iter()
        .filter(|e| {
            query
                .membership
                .as_deref()
                .is_none_or(|m| e.membership.as_deref() == Some(m))
        })
        .filter(|e| {
            query
                .not_membership
                .as_deref()
                .is_none_or(|m| e.membership.as_deref() != Some(m))
        })
        .collect();
    let formatter = ClientEvents {
        storage: state.storage.as_ref(),
        version: &version,
        viewer: Viewer {
            user_id: &me.user_id,
            device_id: Some(&me.device_id),
        },
    };
    Ok(Json(
        json!({ "chunk": formatter.format_all(&events).await? }),
    ))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
pub async fn joined_members(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let (record, _) = room(&state, &room_id).await?;
    if current_membership(state.storage.as_ref(), record.room_nid, &me.user_id)
        .await?
        .as_deref()
        != Some("join")
    {
        return Err(MatrixError::forbidden("You are not joined to this room").into());
    }
    let current = state.storage.current_state(record.room_nid).await?;
    let mut joined = Map::new();
    for event in current
        .iter()
        .filter(|e| e.kind == "m.room.member" && e.membership.as_deref() == Some("join"))
    {
        let content = serde_json::from_str::<Value>(&event.json)
            .ok()
            .and_then(|v| v.get("content").cloned())
            .unwrap_or_default();
        let mut member = Map::new();
        if let Some(name) = content.get("displayname").filter(|v| v.is_string()) {
            member.insert("display_name".into(), name.clone());
        }
        if let Some(url) = content.get("avatar_url").filter(|v| v.is_string()) {
            member.insert("avatar_url".into(), url.clone());
        }
        if let Some(user) = &event.state_key {
            joined.insert(user.clone(), Value::Object(member));
        }
    }
    Ok(Json(json!({ "joined": joined })))
}
