//! The space hierarchy: a depth-first walk of `m.space.child` state events
//! over the rooms this server knows (other servers' rooms need federation
//! and are left out).
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidhierarchy>
//!
//! A room is listed, and walked into, only if the user may see it (the
//! room summary rule: joined or invited, a `public`/`knock` join rule,
//! `world_readable` history, or a member of a room a `restricted` rule
//! allows). Pages are offsets into the walk, which is recomputed per
//! request: `from` tokens are `h<offset>_<max_depth>_<suggested_only>`, so a
//! page that changes `max_depth` or `suggested_only` is refused.

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_storage::StoredEvent;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashSet;

use crate::auth::Auth;
use crate::client::summary::RoomInfo;
use crate::error::ApiResult;
use crate::extract::{MatrixPath, MatrixQuery};
use crate::state::AppState;

/// Rooms per page when the client names no limit.
const HIERARCHY_LIMIT_DEFAULT: usize = 50;
/// Rooms per page at most.
pub const HIERARCHY_LIMIT_MAX: usize = 100;
/// Deepest level walked (also the default `max_depth`).
pub const HIERARCHY_DEPTH_MAX: u64 = 50;
/// Rooms one walk visits at most, across all pages.
pub const HIERARCHY_ROOMS_MAX: usize = 1_000;
/// `m.space.child` events of one space considered at most.
const SPACE_CHILDREN_MAX: usize = 1_000;
/// Longest valid `order` of an `m.space.child` event (the spec's rule).
const CHILD_ORDER_LENGTH_MAX: usize = 50;

#[derive(Deserialize)]
pub struct HierarchyQuery {
    suggested_only: Option<bool>,
    limit: Option<i64>,
    max_depth: Option<i64>,
    from: Option<String>,
}

/// One valid `m.space.child` event of a space.
struct Child {
    room_id: String,
    order: Option<String>,
    suggested: bool,
    origin_server_ts: i64,
    stripped: Value,
}

fn child(event: &StoredEvent) -> Option<Child> {
    let pdu: Value = serde_json::from_str(&event.json).ok()?;
    let content = pdu.get("content")?.as_object()?;
    // A child without a non-empty `via` is no child (a removed one).
    if content
        .get("via")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return None;
    }
    let order = content
        .get("order")
        .and_then(Value::as_str)
        .filter(|o| {
            o.len() <= CHILD_ORDER_LENGTH_MAX && o.bytes().all(|b| (0x20..=0x7e).contains(&b))
        })
        .map(str::to_owned);
    let room_id = event.state_key.clone()?;
    Some(Child {
        stripped: json!({
            "type": event.kind,
            "state_key": room_id,
            "content": content,
            "sender": event.sender,
            "origin_server_ts": event.origin_server_ts,
        }),
        room_id,
        order,
        suggested: content.get("suggested").and_then(Value::as_bool) == Some(true),
        origin_server_ts: event.origin_server_ts,
    })
}

/// The valid children of a space, in the spec's order: by `order` (those
/// with one first), then `origin_server_ts`, then room id.
async fn children(state: &AppState, room_nid: i64) -> ApiResult<Vec<Child>> {
    let mut children: Vec<Child> = state
        .storage
        .current_state(room_nid)
        .await?
        .iter()
        .filter(|e| e.kind == "m.space.child")
        .take(SPACE_CHILDREN_MAX)
        .filter_map(child)
        .collect();
    children.sort_by(|a, b| {
        let order = match (&a.order, &b.order) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        order
            .then(a.origin_server_ts.cmp(&b.origin_server_ts))
            .then_with(|| a.room_id.cmp(&b.room_id))
    });
    Ok(children)
}

fn parse_from(token: &str) -> Option<(usize, u64, bool)> {
    let mut parts = token.strip_prefix('h')?.split('_');
    let offset = parts.next()?.parse().ok()?;
    let depth = parts.next()?.parse().ok()?;
    let suggested = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    parts.next().is_none().then_some((offset, depth, suggested))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidhierarchy>
pub async fn hierarchy(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<HierarchyQuery>,
) -> ApiResult<Json<Value>> {
    let limit = match query.limit {
        None => HIERARCHY_LIMIT_DEFAULT,
        Some(n) if n > 0 => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(HIERARCHY_LIMIT_MAX),
        Some(_) => {
            return Err(MatrixError::invalid_param("`limit` must be greater than zero").into());
        }
    };
    let max_depth = match query.max_depth {
        None => HIERARCHY_DEPTH_MAX,
        Some(n) if n >= 0 => u64::try_from(n).unwrap_or(0).min(HIERARCHY_DEPTH_MAX),
        Some(_) => {
            return Err(MatrixError::invalid_param("`max_depth` must not be negative").into());
        }
    };
    let suggested_only = query.suggested_only.unwrap_or(false);
    let offset = match &query.from {
        None => 0,
        Some(token) => {
            let (offset, depth, suggested) = parse_from(token).ok_or_else(|| {
                MatrixError::invalid_param(format!("Unknown pagination token `{token}`"))
            })?;
            if depth != max_depth || suggested != suggested_only {
                return Err(MatrixError::invalid_param(
                    "suggested_only and max_depth cannot change on paginated requests",
                )
                .into());
            }
            offset
        }
    };
    let forbidden = || MatrixError::forbidden("You are not allowed to view this room");
    let root = state.storage.room(&room_id).await?.ok_or_else(forbidden)?;
    let root = RoomInfo::load(&state, root).await?;
    if !root.visible_to(&state, Some(&me.user_id)).await? {
        return Err(forbidden().into());
    }

    let wanted = offset.saturating_add(limit);
    let mut rooms: Vec<Value> = Vec::new();
    let mut more = false;
    let mut seen: HashSet<String> = HashSet::new();
    // Depth-first: a stack of (room, depth), the next room on top.
    let mut stack: Vec<(Option<RoomInfo>, String, u64)> = vec![(Some(root), room_id, 0)];
    while let Some((info, id, depth)) = stack.pop() {
        if seen.len() >= HIERARCHY_ROOMS_MAX {
            break;
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        let info = match info {
            Some(info) => info,
            None => {
                let Some(record) = state.storage.room(&id).await? else {
                    continue;
                };
                let info = RoomInfo::load(&state, record).await?;
                if !info.visible_to(&state, Some(&me.user_id)).await? {
                    continue;
                }
                info
            }
        };
        if rooms.len() >= wanted {
            more = true;
            break;
        }
        let kids = if info.room_type.as_deref() == Some("m.space") {
            children(&state, info.record.room_nid).await?
        } else {
            Vec::new()
        };
        let mut entry: Map<String, Value> = info.chunk();
        entry.insert(
            "children_state".into(),
            Value::Array(kids.iter().map(|c| c.stripped.clone()).collect()),
        );
        rooms.push(Value::Object(entry));
        if depth < max_depth {
            for kid in kids.into_iter().rev() {
                if !suggested_only || kid.suggested {
                    stack.push((None, kid.room_id, depth + 1));
                }
            }
        }
    }
    let page: Vec<Value> = rooms.into_iter().skip(offset).collect();
    let mut body = Map::new();
    body.insert("rooms".into(), Value::Array(page));
    if more {
        body.insert(
            "next_batch".into(),
            json!(format!(
                "h{wanted}_{max_depth}_{}",
                u8::from(suggested_only)
            )),
        );
    }
    Ok(Json(Value::Object(body)))
}
