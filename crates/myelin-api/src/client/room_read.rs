//! Reading rooms: one event, the state, `/messages` and `/context`.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#getting-events-for-a-room>
//!
//! Who reads what: a joined user, or anyone in a `world_readable` room,
//! reads the room up to now; a user who left (or was kicked or banned) reads
//! it up to and including their departure; anyone else gets 403
//! `M_FORBIDDEN`. Every event served passes
//! [`myelin_rooms::read::filter_visible`] (history visibility), so nobody
//! reads an event they may not see.
//!
//! # Pagination tokens
//!
//! `/messages` accepts two kinds of token for `from` and `to`:
//!
//! - **sync tokens** `s<events>_<receipts>_<account_data>_<typing>`
//!   ([`myelin_sync::SyncToken`], the `prev_batch`/`next_batch` of `/sync`):
//!   the events position means "just after this stream position", that is
//!   after the room's last event at or before it;
//! - **topological tokens** `t<depth>_<stream_pos>`, which this module hands
//!   out as `start`/`end` (and `/context` as `start`/`end`): the point just
//!   after the event at topological position `(depth, stream_pos)` (`t0_0`
//!   is before the room's first event). Paging backwards from a point
//!   returns the events at or before it, paging forwards those after it.
//!
//! `from` may be omitted (spec v1.3+): paging backwards then starts at the
//! end of the room, forwards at its start. `end` is omitted once there are
//! no more events the user may see in that direction. Reads never pass the
//! room writer's watermark, so a token never covers an event still being
//! written.

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_core::filter::{RoomEventFilter, parse_room_event_filter};
use myelin_events::RoomVersion;
use myelin_rooms::read::{ClientEvents, Viewer, filter_visible};
use myelin_storage::{Direction, RoomRecord, StoredEvent, TopoPos};
use myelin_sync::SyncToken;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

use crate::auth::{Auth, Identity};
use crate::client::room::room;
use crate::error::ApiResult;
use crate::extract::{MatrixPath, MatrixQuery};
use crate::state::AppState;

/// Events `/messages` returns when the client names no limit (the spec's default).
const MESSAGES_LIMIT_DEFAULT: u32 = 10;
/// Events one `/messages` returns at most, whatever the client asks.
pub const MESSAGES_LIMIT_MAX: u32 = 1000;
/// Events around the target `/context` returns by default (the spec's default).
const CONTEXT_LIMIT_DEFAULT: u32 = 10;
/// Events around the target one `/context` returns at most.
pub const CONTEXT_LIMIT_MAX: u32 = 1000;
/// Reads one `/messages` makes at most to fill its chunk when history
/// visibility or the filter drop events; past them the chunk is returned
/// short, with an `end` to continue from.
const PAGINATION_ROUNDS_MAX: usize = 4;

/// What a user may read of a room.
pub(crate) enum Access {
    /// Joined, or a `world_readable` room: everything up to now, the current state.
    Current,
    /// Left, kicked or banned: up to and including this departure event.
    UntilLeft(Box<StoredEvent>),
}

/// The user's access to a room, or 403 `M_FORBIDDEN`.
pub(crate) async fn access(state: &AppState, room_nid: i64, user_id: &str) -> ApiResult<Access> {
    let own = state
        .storage
        .current_state_event(room_nid, "m.room.member", user_id)
        .await?;
    let membership = own.as_ref().and_then(|e| e.membership.as_deref());
    // A world-readable room is open to anyone, including its former members.
    if membership == Some("join") || world_readable(state, room_nid).await? {
        return Ok(Access::Current);
    }
    match own {
        Some(event) if matches!(event.membership.as_deref(), Some("leave" | "ban")) => {
            Ok(Access::UntilLeft(Box::new(event)))
        }
        _ => Err(MatrixError::forbidden("You aren't a member of the room").into()),
    }
}

impl Access {
    /// The greatest stream position the user may read.
    pub(crate) fn upto(&self, state: &AppState) -> i64 {
        let watermark = state.rooms.events().watermark();
        match self {
            Self::Current => watermark,
            Self::UntilLeft(left) => watermark.min(left.stream_pos),
        }
    }
}

/// Whether the room's current `m.room.history_visibility` is `world_readable`.
pub async fn world_readable(state: &AppState, room_nid: i64) -> ApiResult<bool> {
    let event = state
        .storage
        .current_state_event(room_nid, "m.room.history_visibility", "")
        .await?;
    Ok(event.is_some_and(|e| {
        serde_json::from_str::<Value>(&e.json)
            .ok()
            .is_some_and(|v| {
                v.pointer("/content/history_visibility")
                    .and_then(Value::as_str)
                    == Some("world_readable")
            })
    }))
}

pub(crate) fn formatter<'a>(
    state: &'a AppState,
    version: &'a RoomVersion,
    me: &'a Identity,
) -> ClientEvents<'a> {
    ClientEvents {
        storage: state.storage.as_ref(),
        version,
        viewer: Viewer {
            user_id: &me.user_id,
            device_id: Some(&me.device_id),
        },
    }
}

/// A `Normal` event of the room the user may see, or 404 `M_NOT_FOUND`.
pub(crate) async fn visible_event(
    state: &AppState,
    record: &RoomRecord,
    access: &Access,
    user_id: &str,
    event_id: &str,
) -> ApiResult<StoredEvent> {
    let not_found = || MatrixError::not_found("Event not found");
    let event = state
        .storage
        .event(event_id)
        .await?
        .filter(|e| {
            e.room_nid == record.room_nid && e.status == myelin_storage::EventStatus::Normal
        })
        .filter(|e| e.stream_pos <= access.upto(state))
        .ok_or_else(not_found)?;
    let mut visible = filter_visible(
        state.storage.as_ref(),
        record.room_nid,
        user_id,
        vec![event],
    )
    .await?;
    Ok(visible.pop().ok_or_else(not_found)?)
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomideventeventid>
pub async fn get_event(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, event_id)): MatrixPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (record, version) = room(&state, &room_id).await?;
    let access = access(&state, record.room_nid, &me.user_id).await?;
    let event = visible_event(&state, &record, &access, &me.user_id, &event_id).await?;
    Ok(Json(Value::Object(
        formatter(&state, &version, &me).format(&event).await?,
    )))
}

/// The state events the user may read: the current state, or the state
/// right after their departure.
async fn readable_state(
    state: &AppState,
    room_nid: i64,
    access: &Access,
) -> ApiResult<Vec<StoredEvent>> {
    let mut events = match access {
        Access::Current => state.storage.current_state(room_nid).await?,
        Access::UntilLeft(left) => {
            let ids: Vec<String> = state
                .storage
                .state_at(left.state_after_nid)
                .await?
                .into_iter()
                .map(|e| e.event_id)
                .collect();
            state.storage.events(&ids).await?
        }
    };
    events.sort_by(|a, b| (&a.kind, &a.state_key).cmp(&(&b.kind, &b.state_key)));
    Ok(events)
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidstate>
pub async fn get_state(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let (record, version) = room(&state, &room_id).await?;
    let access = access(&state, record.room_nid, &me.user_id).await?;
    let events = readable_state(&state, record.room_nid, &access).await?;
    Ok(Json(Value::Array(
        formatter(&state, &version, &me).format_all(&events).await?,
    )))
}

#[derive(Deserialize, Default)]
pub struct StateEventQuery {
    format: Option<String>,
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidstateeventtypestatekey>
pub async fn get_state_event(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, kind, state_key)): MatrixPath<(String, String, String)>,
    MatrixQuery(query): MatrixQuery<StateEventQuery>,
) -> ApiResult<Json<Value>> {
    state_event(state, me, room_id, kind, state_key, query).await
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}` (and with a
/// trailing slash): the empty state key.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidstateeventtypestatekey>
pub async fn get_state_event_empty_key(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, kind)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<StateEventQuery>,
) -> ApiResult<Json<Value>> {
    state_event(state, me, room_id, kind, String::new(), query).await
}

async fn state_event(
    state: AppState,
    me: Identity,
    room_id: String,
    kind: String,
    state_key: String,
    query: StateEventQuery,
) -> ApiResult<Json<Value>> {
    let whole_event = match query.format.as_deref() {
        None | Some("content") => false,
        Some("event") => true,
        Some(_) => {
            return Err(MatrixError::invalid_param("`format` must be `content` or `event`").into());
        }
    };
    let (record, version) = room(&state, &room_id).await?;
    let access = access(&state, record.room_nid, &me.user_id).await?;
    let event = match &access {
        Access::Current => {
            state
                .storage
                .current_state_event(record.room_nid, &kind, &state_key)
                .await?
        }
        Access::UntilLeft(left) => {
            state
                .storage
                .state_event_at(left.state_after_nid, &kind, &state_key)
                .await?
        }
    };
    let event = event
        .ok_or_else(|| MatrixError::not_found("The room has no state with this type and key"))?;
    let mut client = formatter(&state, &version, &me).format(&event).await?;
    if whole_event {
        return Ok(Json(Value::Object(client)));
    }
    Ok(Json(client.remove("content").unwrap_or_else(|| json!({}))))
}

/// Where pagination starts or stops: the point just after the event at
/// this topological position (`(0, 0)`: before every event).
type Point = TopoPos;

const ROOM_START: Point = TopoPos {
    depth: 0,
    stream_pos: 0,
};

/// The event position one past `p` in topological order (the exclusive
/// bound that includes `p`).
pub(crate) fn just_past(p: Point) -> TopoPos {
    TopoPos {
        depth: p.depth,
        stream_pos: p.stream_pos.saturating_add(1),
    }
}

/// The point just before `event` (paging backwards continues from it).
pub(crate) fn point_before(event: &StoredEvent) -> Point {
    TopoPos {
        depth: event.depth,
        stream_pos: event.stream_pos.saturating_sub(1),
    }
}

pub(crate) fn position(event: &StoredEvent) -> Point {
    TopoPos {
        depth: event.depth,
        stream_pos: event.stream_pos,
    }
}

pub(crate) fn topo_token(p: Point) -> String {
    format!("t{}_{}", p.depth, p.stream_pos)
}

fn parse_topo_token(token: &str) -> Option<Point> {
    let (depth, stream_pos) = token.strip_prefix('t')?.split_once('_')?;
    let depth = depth.parse::<i64>().ok().filter(|d| *d >= 0)?;
    let stream_pos = stream_pos.parse::<i64>().ok().filter(|s| *s >= 0)?;
    Some(TopoPos { depth, stream_pos })
}

/// The point a `from`/`to` token names.
pub(crate) async fn token_point(state: &AppState, room_nid: i64, token: &str) -> ApiResult<Point> {
    if let Some(point) = parse_topo_token(token) {
        return Ok(point);
    }
    let sync = SyncToken::parse(token)
        .map_err(|_| MatrixError::invalid_param(format!("Invalid pagination token `{token}`")))?;
    stream_point(state, room_nid, sync.events).await
}

/// The point just after the room's last event at or before stream position `pos`.
pub(crate) async fn stream_point(state: &AppState, room_nid: i64, pos: i64) -> ApiResult<Point> {
    let last = state
        .storage
        .room_events_by_stream(room_nid, i64::MIN, pos, 1, true)
        .await?;
    Ok(last.first().map_or(ROOM_START, position))
}

/// The room event filter of a `filter` query parameter.
fn parse_filter(filter: Option<&str>) -> ApiResult<RoomEventFilter> {
    let Some(text) = filter else {
        return Ok(RoomEventFilter::default());
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| MatrixError::invalid_param(format!("`filter` is not JSON: {e}")))?;
    Ok(parse_room_event_filter(value).map_err(MatrixError::invalid_param)?)
}

/// Whether an event passes a `RoomEventFilter`.
fn filter_matches(filter: &RoomEventFilter, room_id: &str, event: &StoredEvent) -> bool {
    filter.allows_room(room_id)
        && filter.matches_event(
            &event.kind,
            &event.sender,
            filter.contains_url.is_some() && myelin_core::filter::event_has_url(&event.json),
        )
}

/// One page of events from a point towards `dir`.
struct Page {
    /// Visible events that pass the filter, in the order of `dir`.
    events: Vec<StoredEvent>,
    /// Where the next page starts; `None` when no event is left.
    next: Option<Point>,
}

/// What a user's pagination reads: the room, the viewer, how far they may
/// read and the filter.
struct Reader<'a> {
    state: &'a AppState,
    record: &'a RoomRecord,
    user_id: &'a str,
    upto: i64,
    filter: &'a RoomEventFilter,
}

impl Reader<'_> {
    /// Reads up to `limit` events the user may see from `from` towards
    /// `dir`, stopping before `to`, reading again (at most
    /// [`PAGINATION_ROUNDS_MAX`] times) while visibility or the filter drop
    /// events.
    async fn page(
        &self,
        from: Point,
        dir: Direction,
        to: Option<Point>,
        limit: u32,
    ) -> ApiResult<Page> {
        let mut events = Vec::new();
        let mut cursor = from;
        for _ in 0..PAGINATION_ROUNDS_MAX {
            let want = limit.saturating_sub(u32::try_from(events.len()).unwrap_or(u32::MAX));
            if want == 0 {
                break;
            }
            let (start, stop) = match dir {
                Direction::Forward => (cursor, to.map(just_past)),
                Direction::Backward => (just_past(cursor), to),
            };
            let fetched = self
                .state
                .storage
                .room_events_topological(self.record.room_nid, start, dir, stop, self.upto, want)
                .await?;
            let exhausted = fetched.len() < want as usize;
            if let Some(last) = fetched.last() {
                cursor = match dir {
                    Direction::Forward => position(last),
                    Direction::Backward => point_before(last),
                };
            }
            let visible = filter_visible(
                self.state.storage.as_ref(),
                self.record.room_nid,
                self.user_id,
                fetched,
            )
            .await?;
            events.extend(
                visible
                    .into_iter()
                    .filter(|e| filter_matches(self.filter, &self.record.room_id, e)),
            );
            if exhausted {
                return Ok(Page { events, next: None });
            }
        }
        Ok(Page {
            events,
            next: Some(cursor),
        })
    }
}

/// The current membership events of the senders of `events`, as of the
/// state `snapshot` (lazy-loading members).
async fn sender_members(
    state: &AppState,
    snapshot: i64,
    events: &[StoredEvent],
) -> ApiResult<Vec<StoredEvent>> {
    let senders: BTreeSet<&str> = events.iter().map(|e| e.sender.as_str()).collect();
    let mut members = Vec::with_capacity(senders.len());
    for sender in senders {
        if let Some(member) = state
            .storage
            .state_event_at(snapshot, "m.room.member", sender)
            .await?
        {
            members.push(member);
        }
    }
    Ok(members)
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: String,
    limit: Option<u32>,
    filter: Option<String>,
}

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmessages>
pub async fn messages(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    let dir = match query.dir.as_str() {
        "b" => Direction::Backward,
        "f" => Direction::Forward,
        _ => return Err(MatrixError::invalid_param("`dir` must be `b` or `f`").into()),
    };
    let filter = parse_filter(query.filter.as_deref())?;
    let limit = query
        .limit
        .or(filter
            .base
            .limit
            .map(|l| u32::try_from(l).unwrap_or(u32::MAX)))
        .unwrap_or(MESSAGES_LIMIT_DEFAULT)
        .min(MESSAGES_LIMIT_MAX);
    let (record, version) = room(&state, &room_id).await?;
    let access = access(&state, record.room_nid, &me.user_id).await?;
    let upto = access.upto(&state);
    let from = match (&query.from, dir) {
        (Some(token), _) => token_point(&state, record.room_nid, token).await?,
        (None, Direction::Backward) => stream_point(&state, record.room_nid, upto).await?,
        (None, Direction::Forward) => ROOM_START,
    };
    let to = match &query.to {
        Some(token) => Some(token_point(&state, record.room_nid, token).await?),
        None => None,
    };
    let reader = Reader {
        state: &state,
        record: &record,
        user_id: &me.user_id,
        upto,
        filter: &filter,
    };
    let page = reader.page(from, dir, to, limit).await?;
    let format = formatter(&state, &version, &me);
    let mut body = Map::new();
    body.insert(
        "chunk".into(),
        Value::Array(format.format_all(&page.events).await?),
    );
    body.insert(
        "start".into(),
        json!(query.from.unwrap_or_else(|| topo_token(from))),
    );
    if let Some(next) = page.next {
        body.insert("end".into(), json!(topo_token(next)));
    }
    if filter.lazy_load_members == Some(true)
        && let Some(last) = page.events.last()
    {
        let members = sender_members(&state, last.state_after_nid, &page.events).await?;
        body.insert(
            "state".into(),
            Value::Array(format.format_all(&members).await?),
        );
    }
    Ok(Json(Value::Object(body)))
}

#[derive(Deserialize)]
pub struct ContextQuery {
    limit: Option<u32>,
    filter: Option<String>,
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidcontexteventid>
pub async fn context(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, event_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<ContextQuery>,
) -> ApiResult<Json<Value>> {
    let filter = parse_filter(query.filter.as_deref())?;
    let limit = query
        .limit
        .unwrap_or(CONTEXT_LIMIT_DEFAULT)
        .min(CONTEXT_LIMIT_MAX);
    let (before_limit, after_limit) = (limit / 2, limit - limit / 2);
    let (record, version) = room(&state, &room_id).await?;
    let access = access(&state, record.room_nid, &me.user_id).await?;
    let upto = access.upto(&state);
    let event = visible_event(&state, &record, &access, &me.user_id, &event_id).await?;
    let at = position(&event);
    let reader = Reader {
        state: &state,
        record: &record,
        user_id: &me.user_id,
        upto,
        filter: &filter,
    };
    let before = reader
        .page(
            point_before(&event),
            Direction::Backward,
            None,
            before_limit,
        )
        .await?;
    let after = reader
        .page(at, Direction::Forward, None, after_limit)
        .await?;
    let last = after.events.last().unwrap_or(&event);
    let mut room_state = state.storage.state_at(last.state_after_nid).await?;
    if filter.lazy_load_members == Some(true) {
        let senders: BTreeSet<&str> = std::iter::once(&event)
            .chain(&before.events)
            .chain(&after.events)
            .map(|e| e.sender.as_str())
            .collect();
        room_state.retain(|e| e.kind != "m.room.member" || senders.contains(e.state_key.as_str()));
    }
    let ids: Vec<String> = room_state.into_iter().map(|e| e.event_id).collect();
    let mut state_events = state.storage.events(&ids).await?;
    state_events.retain(|e| filter_matches(&filter, &record.room_id, e));
    state_events.sort_by(|a, b| (&a.kind, &a.state_key).cmp(&(&b.kind, &b.state_key)));
    let format = formatter(&state, &version, &me);
    let mut body = Map::new();
    body.insert(
        "start".into(),
        json!(topo_token(before.next.unwrap_or(ROOM_START))),
    );
    body.insert(
        "end".into(),
        json!(topo_token(after.next.unwrap_or_else(|| position(last)))),
    );
    body.insert(
        "events_before".into(),
        Value::Array(format.format_all(&before.events).await?),
    );
    body.insert("event".into(), Value::Object(format.format(&event).await?));
    body.insert(
        "events_after".into(),
        Value::Array(format.format_all(&after.events).await?),
    );
    body.insert(
        "state".into(),
        Value::Array(format.format_all(&state_events).await?),
    );
    Ok(Json(Value::Object(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topological_tokens() {
        let p = TopoPos {
            depth: 12,
            stream_pos: 40,
        };
        assert_eq!(parse_topo_token(&topo_token(p)), Some(p));
        for bad in ["", "t", "t1", "t1_", "t_1", "t-1_2", "s1_2_3_4", "t1_2_3"] {
            assert_eq!(parse_topo_token(bad), None, "{bad}");
        }
    }
}
