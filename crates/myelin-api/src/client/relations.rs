//! Relations between events and threads: the children of an event, and the
//! threads of a room. Bundled aggregations (`unsigned.m.relations`) are
//! added wherever events are served, by `myelin_rooms::read::ClientEvents`.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#forming-relationships-between-events>
//!
//! Pagination tokens of `/relations` are the topological tokens of
//! `/messages` (`t<depth>_<stream_pos>`, see `room_read`), which also
//! accepts `/messages` and `/sync` tokens. Tokens of `/threads` are
//! `r<stream_pos>`: the position of the latest reply of the last thread
//! returned.

use axum::Json;
use axum::extract::State;
use myelin_core::{ErrorKind, MatrixError};
use myelin_rooms::read::filter_visible;
use myelin_storage::relations::RELATION_DEPTH_MAX;
use myelin_storage::{Direction, EventStatus, RelationsQuery, TopoPos};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

use crate::auth::Auth;
use crate::client::room::room;
use crate::client::room_read::{
    access, formatter, just_past, point_before, position, token_point, topo_token, visible_event,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{MatrixPath, MatrixQuery};
use crate::state::AppState;

/// Children `/relations` returns when the client names no limit.
const RELATIONS_LIMIT_DEFAULT: u32 = 5;
/// Children one `/relations` returns at most.
pub const RELATIONS_LIMIT_MAX: u32 = 100;
/// Threads `/threads` returns when the client names no limit.
const THREADS_LIMIT_DEFAULT: u32 = 5;
/// Threads one `/threads` returns at most.
pub const THREADS_LIMIT_MAX: u32 = 100;

#[derive(Deserialize)]
pub struct RelationsParams {
    from: Option<String>,
    to: Option<String>,
    limit: Option<u32>,
    dir: Option<String>,
    recurse: Option<bool>,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidrelationseventid>
pub async fn relations(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, event_id)): MatrixPath<(String, String)>,
    MatrixQuery(params): MatrixQuery<RelationsParams>,
) -> ApiResult<Json<Value>> {
    children(state, me, room_id, event_id, None, None, params).await
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidrelationseventidreltype>
pub async fn relations_by_type(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, event_id, rel_type)): MatrixPath<(String, String, String)>,
    MatrixQuery(params): MatrixQuery<RelationsParams>,
) -> ApiResult<Json<Value>> {
    children(state, me, room_id, event_id, Some(rel_type), None, params).await
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidrelationseventidreltypeeventtype>
pub async fn relations_by_type_and_event_type(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, event_id, rel_type, kind)): MatrixPath<(String, String, String, String)>,
    MatrixQuery(params): MatrixQuery<RelationsParams>,
) -> ApiResult<Json<Value>> {
    children(
        state,
        me,
        room_id,
        event_id,
        Some(rel_type),
        Some(kind),
        params,
    )
    .await
}

async fn children(
    state: AppState,
    me: crate::auth::Identity,
    room_id: String,
    event_id: String,
    rel_type: Option<String>,
    kind: Option<String>,
    params: RelationsParams,
) -> ApiResult<Json<Value>> {
    let dir = match params.dir.as_deref() {
        None | Some("b") => Direction::Backward,
        Some("f") => Direction::Forward,
        Some(_) => return Err(MatrixError::invalid_param("`dir` must be `b` or `f`").into()),
    };
    let limit = params
        .limit
        .unwrap_or(RELATIONS_LIMIT_DEFAULT)
        .clamp(1, RELATIONS_LIMIT_MAX);
    let (record, version) = room(&state, &room_id).await?;
    // The spec answers 404 for a parent the user may not see, in a room
    // they cannot read as well.
    let access = match access(&state, record.room_nid, &me.user_id).await {
        Err(ApiError::Matrix(e)) if e.kind == ErrorKind::Forbidden => {
            return Err(MatrixError::not_found("Event not found").into());
        }
        other => other?,
    };
    visible_event(&state, &record, &access, &me.user_id, &event_id).await?;
    let from = match &params.from {
        Some(token) => {
            let point = token_point(&state, record.room_nid, token).await?;
            match dir {
                Direction::Backward => just_past(point),
                Direction::Forward => point,
            }
        }
        None => match dir {
            Direction::Backward => TopoPos {
                depth: i64::MAX,
                stream_pos: i64::MAX,
            },
            Direction::Forward => TopoPos {
                depth: i64::MIN,
                stream_pos: i64::MIN,
            },
        },
    };
    let to = match &params.to {
        Some(token) => {
            let point = token_point(&state, record.room_nid, token).await?;
            Some(match dir {
                Direction::Backward => point,
                Direction::Forward => just_past(point),
            })
        }
        None => None,
    };
    let depth = if params.recurse == Some(true) {
        RELATION_DEPTH_MAX
    } else {
        1
    };
    let query = RelationsQuery {
        room_nid: record.room_nid,
        parent_id: event_id,
        rel_type,
        kind,
        depth,
        from,
        dir,
        to,
        upto: access.upto(&state),
        limit,
    };
    let fetched = state.storage.relations_page(&query).await?;
    let next = (fetched.len() == limit as usize)
        .then(|| fetched.last())
        .flatten()
        .map(|last| match dir {
            Direction::Backward => point_before(last),
            Direction::Forward => position(last),
        });
    let visible = filter_visible(
        state.storage.as_ref(),
        record.room_nid,
        &me.user_id,
        fetched,
    )
    .await?;
    let mut body = Map::new();
    body.insert(
        "chunk".into(),
        Value::Array(
            formatter(&state, &version, &me)
                .format_all(&visible)
                .await?,
        ),
    );
    if let Some(next) = next {
        body.insert("next_batch".into(), json!(topo_token(next)));
    }
    if let Some(from) = params.from {
        body.insert("prev_batch".into(), json!(from));
    }
    if params.recurse.is_some() {
        body.insert("recursion_depth".into(), json!(depth));
    }
    Ok(Json(Value::Object(body)))
}

#[derive(Deserialize)]
pub struct ThreadsParams {
    include: Option<String>,
    limit: Option<u32>,
    from: Option<String>,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidthreads>
pub async fn threads(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(params): MatrixQuery<ThreadsParams>,
) -> ApiResult<Json<Value>> {
    let participated = match params.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(_) => {
            return Err(
                MatrixError::invalid_param("`include` must be `all` or `participated`").into(),
            );
        }
    };
    let before = match params.from.as_deref() {
        None => None,
        Some(token) => Some(
            token
                .strip_prefix('r')
                .and_then(|p| p.parse::<i64>().ok())
                .ok_or_else(|| {
                    MatrixError::invalid_param(format!("Invalid pagination token `{token}`"))
                })?,
        ),
    };
    let limit = params
        .limit
        .unwrap_or(THREADS_LIMIT_DEFAULT)
        .clamp(1, THREADS_LIMIT_MAX);
    let (record, version) = room(&state, &room_id).await?;
    let access = access(&state, record.room_nid, &me.user_id).await?;
    let participant = participated.then_some(me.user_id.as_str());
    let roots = state
        .storage
        .thread_roots(
            record.room_nid,
            participant,
            before,
            access.upto(&state),
            limit,
        )
        .await?;
    let ids: Vec<String> = roots.iter().map(|r| r.root_id.clone()).collect();
    let mut found: HashMap<String, _> = state
        .storage
        .events(&ids)
        .await?
        .into_iter()
        .filter(|e| e.room_nid == record.room_nid && e.status == EventStatus::Normal)
        .map(|e| (e.event_id.clone(), e))
        .collect();
    let ordered: Vec<_> = ids.iter().filter_map(|id| found.remove(id)).collect();
    let visible = filter_visible(
        state.storage.as_ref(),
        record.room_nid,
        &me.user_id,
        ordered,
    )
    .await?;
    let mut body = Map::new();
    body.insert(
        "chunk".into(),
        Value::Array(
            formatter(&state, &version, &me)
                .format_all(&visible)
                .await?,
        ),
    );
    if roots.len() == limit as usize
        && let Some(last) = roots.last()
    {
        body.insert(
            "next_batch".into(),
            json!(format!("r{}", last.latest_stream_pos)),
        );
    }
    Ok(Json(Value::Object(body)))
}
