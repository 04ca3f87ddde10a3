//! Room tagging, stored as the room account data `m.tag`
//! (`{"tags": {name: {"order": …}}}`), so `/sync` delivers it with the
//! room's account data.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#room-tagging>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use serde_json::{Map, Value, json};

use crate::auth::{Auth, Identity};
use crate::client::account_data::write;
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath};
use crate::state::AppState;

/// Longest tag name accepted, in bytes.
pub const TAG_LENGTH_MAX: usize = 255;
/// Tags one room may carry at most.
pub const TAGS_PER_ROOM_MAX: usize = 100;
/// Room ids are at most 255 bytes.
const ROOM_ID_LENGTH_MAX: usize = 255;
const TAG_TYPE: &str = "m.tag";

fn check_request(me: &Identity, user_id: &str, room_id: &str) -> ApiResult<()> {
    if me.user_id != user_id {
        return Err(MatrixError::forbidden("You may only access your own tags").into());
    }
    if !room_id.starts_with('!') || room_id.len() < 2 || room_id.len() > ROOM_ID_LENGTH_MAX {
        return Err(MatrixError::invalid_param("Invalid room id").into());
    }
    Ok(())
}

/// The room's tags as stored (an empty map if none).
async fn tags(state: &AppState, user_id: &str, room_id: &str) -> ApiResult<Map<String, Value>> {
    let content = state
        .storage
        .account_data(user_id, Some(room_id), TAG_TYPE)
        .await?;
    Ok(
        match content.and_then(|mut c| c.get_mut("tags").map(Value::take)) {
            Some(Value::Object(tags)) => tags,
            _ => Map::new(),
        },
    )
}

async fn store(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    tags: Map<String, Value>,
) -> ApiResult<()> {
    write(
        state,
        user_id,
        Some(room_id),
        TAG_TYPE,
        &json!({ "tags": tags }),
    )
    .await
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridroomsroomidtags>
pub async fn get_tags(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((user_id, room_id)): MatrixPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    check_request(&me, &user_id, &room_id)?;
    let tags = tags(&state, &me.user_id, &room_id).await?;
    Ok(Json(json!({ "tags": tags })))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`: the
/// body is the tag's content; `order`, if given, is a number from 0 to 1.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3useruseridroomsroomidtagstag>
pub async fn put_tag(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((user_id, room_id, tag)): MatrixPath<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    check_request(&me, &user_id, &room_id)?;
    if tag.is_empty() || tag.len() > TAG_LENGTH_MAX {
        return Err(MatrixError::invalid_param(format!(
            "A tag is 1 to {TAG_LENGTH_MAX} bytes long"
        ))
        .into());
    }
    match content.get("order") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_f64().is_some_and(|o| (0.0..=1.0).contains(&o)) => {}
        Some(Value::Number(_)) => {
            return Err(MatrixError::invalid_param("`order` must be between 0 and 1").into());
        }
        Some(_) => return Err(MatrixError::bad_json("`order` must be a number").into()),
    }
    let mut tags = tags(&state, &me.user_id, &room_id).await?;
    if !tags.contains_key(&tag) && tags.len() >= TAGS_PER_ROOM_MAX {
        return Err(MatrixError::invalid_param(format!(
            "A room carries at most {TAGS_PER_ROOM_MAX} tags"
        ))
        .into());
    }
    tags.insert(tag, Value::Object(content));
    store(&state, &me.user_id, &room_id, tags).await?;
    Ok(Json(json!({})))
}

/// `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`:
/// removing a tag the room does not carry succeeds too.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3useruseridroomsroomidtagstag>
pub async fn delete_tag(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((user_id, room_id, tag)): MatrixPath<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    check_request(&me, &user_id, &room_id)?;
    let mut tags = tags(&state, &me.user_id, &room_id).await?;
    if tags.remove(&tag).is_some() {
        store(&state, &me.user_id, &room_id, tags).await?;
    }
    Ok(Json(json!({})))
}
