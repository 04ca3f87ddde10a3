//! The public room directory: which rooms are published, and listing them.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#listing-rooms>
//!
//! `publicRooms` reads at most [`DIRECTORY_SCAN_MAX`] published rooms,
//! summarises each from its current state, filters, orders by joined
//! members (largest first, then room id), and pages with offset tokens
//! `p<offset>`. Other servers' directories need federation: a `server`
//! other than this one is not found.

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Auth, MaybeAuth};
use crate::client::directory::may_set_canonical_alias;
use crate::client::room::room;
use crate::client::summary::RoomInfo;
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath, MatrixQuery};
use crate::state::AppState;

/// Published rooms one `publicRooms` request reads at most.
pub const DIRECTORY_SCAN_MAX: u32 = 1_000;
/// Rooms per page when the client names no limit.
const PUBLIC_ROOMS_LIMIT_DEFAULT: usize = 100;
/// Rooms per page at most.
pub const PUBLIC_ROOMS_LIMIT_MAX: usize = 500;
/// Longest `generic_search_term` accepted.
const SEARCH_TERM_LENGTH_MAX: usize = 1_000;
/// `room_types` entries accepted at most.
const ROOM_TYPES_MAX: usize = 100;

/// `GET /_matrix/client/v3/directory/list/room/{roomId}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3directorylistroomroomid>
pub async fn get_visibility(
    State(state): State<AppState>,
    MatrixPath(room_id): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let (record, _) = room(&state, &room_id).await?;
    let public = state.storage.room_is_public(record.room_nid).await?;
    Ok(Json(
        json!({ "visibility": if public { "public" } else { "private" } }),
    ))
}

#[derive(Deserialize)]
pub struct VisibilityBody {
    visibility: Option<String>,
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}`: by a joined
/// member with the power to send `m.room.canonical_alias` (Synapse's rule).
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3directorylistroomroomid>
pub async fn set_visibility(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<VisibilityBody>,
) -> ApiResult<Json<Value>> {
    // The spec's default is `public`.
    let public = match body.visibility.as_deref() {
        None | Some("public") => true,
        Some("private") => false,
        Some(other) => {
            return Err(MatrixError::invalid_param(format!(
                "`visibility` must be `public` or `private`, not `{other}`"
            ))
            .into());
        }
    };
    let (record, _) = room(&state, &room_id).await?;
    if !may_set_canonical_alias(&state, &record.room_id, &me.user_id).await? {
        return Err(MatrixError::forbidden(
            "You need the power to change the room's canonical alias to publish it",
        )
        .into());
    }
    state
        .storage
        .set_room_public(record.room_nid, public)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
pub struct ServerQuery {
    server: Option<String>,
}

#[derive(Deserialize)]
pub struct PublicRoomsQuery {
    limit: Option<u64>,
    since: Option<String>,
    server: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsBody {
    limit: Option<u64>,
    since: Option<String>,
    filter: Option<PublicRoomsFilter>,
    #[serde(default)]
    include_all_networks: bool,
    third_party_instance_id: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsFilter {
    generic_search_term: Option<String>,
    /// `None` entries stand for rooms without a type.
    room_types: Option<Vec<Option<String>>>,
}

/// `GET /_matrix/client/v3/publicRooms`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3publicrooms>
pub async fn get_public_rooms(
    State(state): State<AppState>,
    MaybeAuth(_me): MaybeAuth,
    MatrixQuery(query): MatrixQuery<PublicRoomsQuery>,
) -> ApiResult<Json<Value>> {
    check_server(&state, query.server.as_deref())?;
    let body = PublicRoomsBody {
        limit: query.limit,
        since: query.since,
        ..PublicRoomsBody::default()
    };
    public_rooms(&state, body).await
}

/// `POST /_matrix/client/v3/publicRooms`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3publicrooms>
pub async fn post_public_rooms(
    State(state): State<AppState>,
    Auth(_me): Auth,
    MatrixQuery(query): MatrixQuery<ServerQuery>,
    MatrixJson(body): MatrixJson<PublicRoomsBody>,
) -> ApiResult<Json<Value>> {
    check_server(&state, query.server.as_deref())?;
    public_rooms(&state, body).await
}

/// This server's directory only: an invalid server name is 400
/// `M_INVALID_PARAM`, another server 404 `M_NOT_FOUND` (until federation).
fn check_server(state: &AppState, server: Option<&str>) -> ApiResult<()> {
    let Some(server) = server else {
        return Ok(());
    };
    if myelin_core::ids::parse_server_name(server).is_none() {
        return Err(MatrixError::invalid_param(format!("Invalid server name `{server}`")).into());
    }
    if server != state.server_name() {
        return Err(MatrixError::not_found(format!(
            "The public rooms of {server} need federation, which this server does not do yet"
        ))
        .into());
    }
    Ok(())
}

fn parse_since(since: Option<&str>) -> ApiResult<usize> {
    let Some(token) = since else {
        return Ok(0);
    };
    token
        .strip_prefix('p')
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| {
            MatrixError::invalid_param(format!("Invalid pagination token `{token}`")).into()
        })
}

fn matches_term(info: &RoomInfo, term: &str) -> bool {
    [&info.name, &info.topic, &info.canonical_alias]
        .into_iter()
        .flatten()
        .any(|text| text.to_lowercase().contains(term))
}

async fn public_rooms(state: &AppState, body: PublicRoomsBody) -> ApiResult<Json<Value>> {
    let limit = match body.limit {
        None | Some(0) => PUBLIC_ROOMS_LIMIT_DEFAULT,
        Some(n) => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(PUBLIC_ROOMS_LIMIT_MAX),
    };
    let offset = parse_since(body.since.as_deref())?;
    let filter = body.filter.unwrap_or_default();
    let term = filter
        .generic_search_term
        .as_deref()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty());
    if term
        .as_ref()
        .is_some_and(|t| t.len() > SEARCH_TERM_LENGTH_MAX)
    {
        return Err(MatrixError::invalid_param("`generic_search_term` is too long").into());
    }
    if filter
        .room_types
        .as_ref()
        .is_some_and(|t| t.len() > ROOM_TYPES_MAX)
    {
        return Err(MatrixError::invalid_param("Too many `room_types`").into());
    }
    // Third-party networks come from application services, which this
    // server does not have: none of their rooms exist.
    let mut rooms = Vec::new();
    if body.third_party_instance_id.is_none() || body.include_all_networks {
        for record in state.storage.public_rooms(DIRECTORY_SCAN_MAX).await? {
            let info = RoomInfo::load(state, record).await?;
            if term.as_deref().is_some_and(|t| !matches_term(&info, t)) {
                continue;
            }
            if let Some(types) = &filter.room_types
                && !types.contains(&info.room_type)
            {
                continue;
            }
            rooms.push(info);
        }
    }
    rooms.sort_by(|a, b| {
        b.num_joined_members
            .cmp(&a.num_joined_members)
            .then_with(|| a.record.room_id.cmp(&b.record.room_id))
    });
    let total = rooms.len();
    let chunk: Vec<Value> = rooms
        .iter()
        .skip(offset)
        .take(limit)
        .map(|info| Value::Object(info.chunk()))
        .collect();
    let mut response = Map::new();
    response.insert("chunk".into(), Value::Array(chunk));
    response.insert("total_room_count_estimate".into(), json!(total));
    if offset.saturating_add(limit) < total {
        response.insert("next_batch".into(), json!(format!("p{}", offset + limit)));
    }
    if offset > 0 {
        response.insert(
            "prev_batch".into(),
            json!(format!("p{}", offset.saturating_sub(limit))),
        );
    }
    Ok(Json(Value::Object(response)))
}
