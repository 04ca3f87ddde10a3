//! `POST /_matrix/client/v3/search`: full-text search of room events.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#server-side-search>
//!
//! Searched: the rooms the user is joined to now (up to the writer's
//! watermark), and the rooms they left or were banned from (up to their
//! departure). Every result passes [`filter_visible`] (history visibility,
//! ignored users). The search term is cut into words of letters and digits
//! ([`search_words`]): no input reaches a backend's query syntax, so odd
//! terms find nothing rather than fail. Results are paged by offset:
//! `next_batch` is `o<offset>`.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_core::filter::{RoomEventFilter, parse_room_event_filter};
use myelin_events::RoomVersion;
use myelin_rooms::read::{ClientEvents, filter_visible};
use myelin_storage::search::{SEARCH_PAGE_MAX, SEARCH_ROOMS_MAX, search_words};
use myelin_storage::{Direction, SearchKey, SearchOrder, SearchQuery, StoredEvent};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Auth, Identity};
use crate::client::room_read::{formatter, position, topo_token};
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixQuery};
use crate::state::AppState;

/// Results per page when the filter names no limit (Synapse's default).
const SEARCH_LIMIT_DEFAULT: u32 = 10;
/// Context events on each side when the client names no limit (the spec's).
const CONTEXT_LIMIT_DEFAULT: u32 = 5;
/// Context events on each side at most.
pub const CONTEXT_LIMIT_MAX: u32 = 20;
/// Longest search term accepted, in bytes.
const SEARCH_TERM_LENGTH_MAX: usize = 1_000;
/// Greatest offset a `next_batch` may carry.
const SEARCH_OFFSET_MAX: u32 = 100_000;

#[derive(Deserialize)]
pub struct SearchRequest {
    search_categories: Categories,
}

#[derive(Deserialize)]
struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

#[derive(Deserialize)]
struct RoomEventsCriteria {
    search_term: String,
    keys: Option<Vec<String>>,
    filter: Option<Value>,
    order_by: Option<String>,
    event_context: Option<EventContext>,
    groupings: Option<Groupings>,
}

#[derive(Deserialize)]
struct EventContext {
    before_limit: Option<u32>,
    after_limit: Option<u32>,
    include_profile: Option<bool>,
}

#[derive(Deserialize)]
struct Groupings {
    group_by: Option<Vec<Group>>,
}

#[derive(Deserialize)]
struct Group {
    key: Option<String>,
}

#[derive(Deserialize)]
pub struct SearchParams {
    next_batch: Option<String>,
}

/// `POST /_matrix/client/v3/search`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3search>
pub async fn search(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixQuery(params): MatrixQuery<SearchParams>,
    MatrixJson(req): MatrixJson<SearchRequest>,
) -> ApiResult<Json<Value>> {
    let Some(criteria) = req.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    if criteria.search_term.len() > SEARCH_TERM_LENGTH_MAX {
        return Err(MatrixError::bad_json(format!(
            "search_term is longer than {SEARCH_TERM_LENGTH_MAX} bytes"
        ))
        .into());
    }
    let offset = match params.next_batch.as_deref() {
        None => 0,
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n <= SEARCH_OFFSET_MAX)
            .ok_or_else(|| MatrixError::invalid_param("Invalid next_batch"))?,
    };
    let mut keys = match &criteria.keys {
        None => vec![SearchKey::Body, SearchKey::Name, SearchKey::Topic],
        Some(keys) => keys
            .iter()
            .map(|k| {
                SearchKey::parse(k)
                    .ok_or_else(|| MatrixError::bad_json(format!("unknown search key `{k}`")))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    keys.dedup();
    let filter = match criteria.filter.clone() {
        None | Some(Value::Null) => RoomEventFilter::default(),
        Some(value) => parse_room_event_filter(value).map_err(MatrixError::bad_json)?,
    };
    // Only the types a key searches can match: `types` narrows the keys.
    keys.retain(|k| filter.base.matches_type(k.event_type()));
    let order = match criteria.order_by.as_deref() {
        None | Some("rank") => SearchOrder::Rank,
        Some("recent") => SearchOrder::Recent,
        Some(other) => {
            return Err(MatrixError::bad_json(format!(
                "order_by must be rank or recent, not {other}"
            ))
            .into());
        }
    };
    let limit = filter
        .base
        .limit
        .map_or(SEARCH_LIMIT_DEFAULT, |l| {
            u32::try_from(l).unwrap_or(u32::MAX)
        })
        .clamp(1, SEARCH_PAGE_MAX);
    let words = search_words(&criteria.search_term);

    let watermark = state.rooms.events().watermark();
    let mut rooms = Vec::new();
    for m in state.storage.user_memberships(&me.user_id).await? {
        if !filter.allows_room(&m.room_id) {
            continue;
        }
        match m.membership.as_str() {
            "join" => rooms.push((m.room_nid, watermark)),
            "leave" | "ban" => rooms.push((m.room_nid, watermark.min(m.stream_pos))),
            _ => {}
        }
    }
    rooms.truncate(SEARCH_ROOMS_MAX);
    let query = SearchQuery {
        words: words.clone(),
        rooms,
        keys,
        senders: filter.base.senders.clone(),
        not_senders: filter.base.not_senders.clone().unwrap_or_default(),
        order,
        offset,
        limit,
    };
    let page = state.storage.search_events(&query).await?;
    let fetched = u32::try_from(page.hits.len()).unwrap_or(u32::MAX);
    let next_offset = offset.saturating_add(fetched);
    let more = i64::from(next_offset) < page.count && fetched > 0;

    // History visibility, room by room; the order of the page is kept.
    let mut per_room: BTreeMap<i64, Vec<StoredEvent>> = BTreeMap::new();
    for hit in &page.hits {
        per_room
            .entry(hit.event.room_nid)
            .or_default()
            .push(hit.event.clone());
    }
    let mut visible: HashSet<String> = HashSet::new();
    for (room_nid, events) in per_room {
        let shown = filter_visible(state.storage.as_ref(), room_nid, &me.user_id, events).await?;
        visible.extend(shown.into_iter().map(|e| e.event_id));
    }

    let mut versions: HashMap<String, RoomVersion> = HashMap::new();
    let mut results = Vec::new();
    let mut by_room: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_sender: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for hit in page
        .hits
        .iter()
        .filter(|h| visible.contains(&h.event.event_id))
    {
        let event = &hit.event;
        let version = match versions.get(&event.room_id) {
            Some(v) => v.clone(),
            None => {
                let record = state.storage.room(&event.room_id).await?.ok_or_else(|| {
                    MatrixError::internal(format!("room {} vanished", event.room_id))
                })?;
                let v = RoomVersion::parse(&record.room_version).ok_or_else(|| {
                    MatrixError::internal(format!("unknown room version {}", record.room_version))
                })?;
                versions.insert(event.room_id.clone(), v.clone());
                v
            }
        };
        let format = formatter(&state, &version, &me);
        let mut result = json!({
            "rank": hit.rank,
            "result": Value::Object(format.format(event).await?),
        });
        if let Some(context) = &criteria.event_context {
            let upto = query
                .rooms
                .iter()
                .find(|(nid, _)| *nid == event.room_nid)
                .map_or(watermark, |(_, upto)| *upto);
            result["context"] = event_context(&state, &me, &format, event, upto, context).await?;
        }
        results.push(result);
        by_room
            .entry(event.room_id.clone())
            .or_default()
            .push(event.event_id.clone());
        by_sender
            .entry(event.sender.clone())
            .or_default()
            .push(event.event_id.clone());
    }

    let mut body = Map::new();
    body.insert("count".into(), json!(page.count));
    body.insert("highlights".into(), json!(words));
    body.insert("results".into(), Value::Array(results));
    let group_keys: Vec<&str> = criteria
        .groupings
        .as_ref()
        .and_then(|g| g.group_by.as_ref())
        .map(|g| g.iter().filter_map(|g| g.key.as_deref()).collect())
        .unwrap_or_default();
    if !group_keys.is_empty() {
        let mut groups = Map::new();
        for key in group_keys {
            let source = match key {
                "room_id" => &by_room,
                "sender" => &by_sender,
                other => {
                    return Err(MatrixError::bad_json(format!(
                        "groupings can group by room_id or sender, not {other}"
                    ))
                    .into());
                }
            };
            let group: Map<String, Value> = source
                .iter()
                .enumerate()
                .map(|(order, (id, ids))| (id.clone(), json!({ "order": order, "results": ids })))
                .collect();
            groups.insert(key.to_owned(), Value::Object(group));
        }
        body.insert("groups".into(), Value::Object(groups));
    }
    if more {
        body.insert("next_batch".into(), json!(format!("o{next_offset}")));
    }
    Ok(Json(
        json!({ "search_categories": { "room_events": body } }),
    ))
}

/// The events around a result the user may see, and (if asked) the
/// senders' profiles as of the result.
async fn event_context(
    state: &AppState,
    me: &Identity,
    format: &ClientEvents<'_>,
    event: &StoredEvent,
    upto: i64,
    context: &EventContext,
) -> ApiResult<Value> {
    let before_limit = context
        .before_limit
        .unwrap_or(CONTEXT_LIMIT_DEFAULT)
        .min(CONTEXT_LIMIT_MAX);
    let after_limit = context
        .after_limit
        .unwrap_or(CONTEXT_LIMIT_DEFAULT)
        .min(CONTEXT_LIMIT_MAX);
    let at = position(event);
    let read = |dir: Direction, limit: u32| async move {
        if limit == 0 {
            return Ok::<_, crate::error::ApiError>(Vec::new());
        }
        let events = state
            .storage
            .room_events_topological(event.room_nid, at, dir, None, upto, limit)
            .await?;
        Ok(filter_visible(state.storage.as_ref(), event.room_nid, &me.user_id, events).await?)
    };
    let before = read(Direction::Backward, before_limit).await?;
    let after = read(Direction::Forward, after_limit).await?;
    let start = before.last().map_or(at, position);
    let end = after.last().map_or(at, position);
    let mut out = json!({
        "start": topo_token(start),
        "end": topo_token(end),
        "events_before": format.format_all(&before).await?,
        "events_after": format.format_all(&after).await?,
    });
    if context.include_profile == Some(true) {
        let mut profiles = Map::new();
        let senders: HashSet<&str> = std::iter::once(event)
            .chain(&before)
            .chain(&after)
            .map(|e| e.sender.as_str())
            .collect();
        for sender in senders {
            let member = state
                .storage
                .state_event_at(event.state_after_nid, "m.room.member", sender)
                .await?;
            let content = member
                .and_then(|m| serde_json::from_str::<Value>(&m.json).ok())
                .and_then(|v| v.get("content").cloned())
                .unwrap_or(Value::Null);
            let mut profile = Map::new();
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = content.get(field).filter(|v| v.is_string()) {
                    profile.insert(field.to_owned(), value.clone());
                }
            }
            profiles.insert(sender.to_owned(), Value::Object(profile));
        }
        out["profile_info"] = Value::Object(profiles);
    }
    Ok(out)
}
