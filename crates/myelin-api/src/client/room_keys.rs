//! Server-side key backups: `/room_keys/version…` (a user's backup versions)
//! and `/room_keys/keys…` (the megolm sessions backed up in one). The server
//! never sees a key: `auth_data` and `session_data` are stored as given; it
//! only applies the spec's rule for which of two copies of a session to keep
//! (`myelin_storage::backup::replaces`).
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#server-side-key-backups>

use axum::Json;
use axum::extract::State;
use myelin_core::{ErrorKind, MatrixError};
use myelin_storage::{BackedUpSession, BackupScope, BackupUpload, BackupVersion};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{MatrixJson, MatrixPath, MatrixQuery};
use crate::state::AppState;

/// Longest `algorithm`, in bytes.
pub const ALGORITHM_LENGTH_MAX: usize = 255;
/// Largest `auth_data`, serialized, in bytes.
pub const AUTH_DATA_SIZE_MAX: usize = 65_536;
/// Largest `session_data` of one session, serialized, in bytes.
pub const SESSION_DATA_SIZE_MAX: usize = 65_536;
/// Longest room id and session id, in bytes.
pub const ROOM_ID_LENGTH_MAX: usize = 255;
pub const SESSION_ID_LENGTH_MAX: usize = 255;
/// Sessions one upload may carry at most.
pub const BACKUP_SESSIONS_PER_REQUEST_MAX: usize = 10_000;

/// 403 `M_WRONG_ROOM_KEYS_VERSION`, naming the current version.
fn wrong_version(current_version: i64) -> ApiError {
    MatrixError::new(
        ErrorKind::WrongRoomKeysVersion { current_version },
        "Wrong backup version.",
    )
    .into()
}

fn unknown_version() -> ApiError {
    MatrixError::not_found("Unknown backup version").into()
}

/// A version string as this server hands them out: a positive decimal
/// number without leading zeros. Anything else names no version.
fn parse_version(s: &str) -> Option<i64> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn check_algorithm(algorithm: &str) -> ApiResult<()> {
    if algorithm.is_empty() || algorithm.len() > ALGORITHM_LENGTH_MAX {
        return Err(MatrixError::invalid_param(format!(
            "`algorithm` must be 1 to {ALGORITHM_LENGTH_MAX} bytes"
        ))
        .into());
    }
    Ok(())
}

fn check_auth_data(auth_data: &Map<String, Value>) -> ApiResult<Value> {
    let value = Value::Object(auth_data.clone());
    if value.to_string().len() > AUTH_DATA_SIZE_MAX {
        return Err(MatrixError::invalid_param(format!(
            "`auth_data` may be at most {AUTH_DATA_SIZE_MAX} bytes"
        ))
        .into());
    }
    Ok(value)
}

fn check_room_id(room_id: &str) -> ApiResult<()> {
    if !room_id.starts_with('!') || room_id.len() < 2 || room_id.len() > ROOM_ID_LENGTH_MAX {
        return Err(MatrixError::invalid_param(format!("`{room_id}` is not a room id")).into());
    }
    Ok(())
}

fn check_session_id(session_id: &str) -> ApiResult<()> {
    if session_id.is_empty() || session_id.len() > SESSION_ID_LENGTH_MAX {
        return Err(MatrixError::invalid_param(format!(
            "A session id must be 1 to {SESSION_ID_LENGTH_MAX} bytes"
        ))
        .into());
    }
    Ok(())
}

fn version_json(v: &BackupVersion) -> Value {
    json!({
        "algorithm": v.algorithm,
        "auth_data": v.auth_data,
        "count": v.count,
        "etag": v.etag.to_string(),
        "version": v.version.to_string(),
    })
}

// ------------------------------------------------------------------ versions

#[derive(Deserialize)]
pub struct CreateVersionBody {
    algorithm: String,
    auth_data: Map<String, Value>,
}

/// `POST /_matrix/client/v3/room_keys/version`: a new version, which becomes
/// the current one.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3room_keysversion>
pub async fn create_version(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixJson(body): MatrixJson<CreateVersionBody>,
) -> ApiResult<Json<Value>> {
    check_algorithm(&body.algorithm)?;
    let auth_data = check_auth_data(&body.auth_data)?;
    let version = state
        .storage
        .create_backup_version(&me.user_id, &body.algorithm, &auth_data)
        .await?;
    Ok(Json(json!({ "version": version.to_string() })))
}

/// `GET /_matrix/client/v3/room_keys/version`: the current (newest not
/// deleted) version.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keysversion>
pub async fn get_current_version(
    State(state): State<AppState>,
    Auth(me): Auth,
) -> ApiResult<Json<Value>> {
    let version = state
        .storage
        .backup_version(&me.user_id, None)
        .await?
        .ok_or_else(|| MatrixError::not_found("No current backup version"))?;
    Ok(Json(version_json(&version)))
}

/// `GET /_matrix/client/v3/room_keys/version/{version}`.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keysversionversion>
pub async fn get_version(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(version): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let version = parse_version(&version).ok_or_else(unknown_version)?;
    let version = state
        .storage
        .backup_version(&me.user_id, Some(version))
        .await?
        .ok_or_else(unknown_version)?;
    Ok(Json(version_json(&version)))
}

#[derive(Deserialize)]
pub struct UpdateVersionBody {
    algorithm: String,
    auth_data: Map<String, Value>,
    #[serde(default)]
    version: Option<String>,
}

/// `PUT /_matrix/client/v3/room_keys/version/{version}`: replaces
/// `auth_data`; the algorithm cannot change.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keysversionversion>
pub async fn update_version(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(path_version): MatrixPath<String>,
    MatrixJson(body): MatrixJson<UpdateVersionBody>,
) -> ApiResult<Json<Value>> {
    if body.version.as_ref().is_some_and(|v| *v != path_version) {
        return Err(MatrixError::invalid_param(
            "The `version` in the body does not match the version in the path",
        )
        .into());
    }
    let version = parse_version(&path_version).ok_or_else(unknown_version)?;
    let existing = state
        .storage
        .backup_version(&me.user_id, Some(version))
        .await?
        .ok_or_else(unknown_version)?;
    if body.algorithm != existing.algorithm {
        return Err(MatrixError::invalid_param("Algorithm does not match").into());
    }
    let auth_data = check_auth_data(&body.auth_data)?;
    if !state
        .storage
        .update_backup_auth_data(&me.user_id, version, &auth_data)
        .await?
    {
        return Err(unknown_version());
    }
    Ok(Json(json!({})))
}

/// `DELETE /_matrix/client/v3/room_keys/version/{version}`: the version and
/// its keys. Deleting a deleted version again succeeds.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keysversionversion>
pub async fn delete_version(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(version): MatrixPath<String>,
) -> ApiResult<Json<Value>> {
    let version = parse_version(&version).ok_or_else(unknown_version)?;
    if !state
        .storage
        .delete_backup_version(&me.user_id, version)
        .await?
    {
        return Err(unknown_version());
    }
    Ok(Json(json!({})))
}

// ---------------------------------------------------------------------- keys

#[derive(Deserialize)]
pub struct VersionQuery {
    version: String,
}

/// `KeyBackupData`.
#[derive(Deserialize)]
pub struct KeyBackupData {
    first_message_index: u32,
    forwarded_count: u32,
    is_verified: bool,
    session_data: Map<String, Value>,
}

/// `RoomKeyBackup`.
#[derive(Deserialize)]
pub struct RoomKeyBackup {
    sessions: BTreeMap<String, KeyBackupData>,
}

#[derive(Deserialize)]
pub struct AllKeysBody {
    rooms: BTreeMap<String, RoomKeyBackup>,
}

fn session_json(s: &BackedUpSession) -> Value {
    json!({
        "first_message_index": s.first_message_index,
        "forwarded_count": s.forwarded_count,
        "is_verified": s.is_verified,
        "session_data": s.session_data,
    })
}

fn sessions_json<'a>(sessions: impl Iterator<Item = &'a BackedUpSession>) -> Value {
    let map: Map<String, Value> = sessions
        .map(|s| (s.session_id.clone(), session_json(s)))
        .collect();
    json!({ "sessions": map })
}

/// Checks and collects the sessions of an upload.
fn collect(
    out: &mut Vec<BackedUpSession>,
    room_id: &str,
    session_id: &str,
    data: KeyBackupData,
) -> ApiResult<()> {
    check_room_id(room_id)?;
    check_session_id(session_id)?;
    if out.len() >= BACKUP_SESSIONS_PER_REQUEST_MAX {
        return Err(MatrixError::invalid_param(format!(
            "An upload may carry at most {BACKUP_SESSIONS_PER_REQUEST_MAX} sessions"
        ))
        .into());
    }
    let session_data = Value::Object(data.session_data);
    if session_data.to_string().len() > SESSION_DATA_SIZE_MAX {
        return Err(MatrixError::invalid_param(format!(
            "`session_data` may be at most {SESSION_DATA_SIZE_MAX} bytes"
        ))
        .into());
    }
    out.push(BackedUpSession {
        room_id: room_id.to_owned(),
        session_id: session_id.to_owned(),
        first_message_index: i64::from(data.first_message_index),
        forwarded_count: i64::from(data.forwarded_count),
        is_verified: data.is_verified,
        session_data,
    });
    Ok(())
}

/// Stores an upload in `version`, which must be the current version.
async fn upload(
    state: &AppState,
    user_id: &str,
    version: &str,
    sessions: Vec<BackedUpSession>,
) -> ApiResult<Json<Value>> {
    let Some(version) = parse_version(version) else {
        // Names no version: the current one is the right one, if any.
        return match state.storage.backup_version(user_id, None).await? {
            Some(current) => Err(wrong_version(current.version)),
            None => Err(unknown_version()),
        };
    };
    match state
        .storage
        .put_backup_sessions(user_id, version, &sessions)
        .await?
    {
        BackupUpload::Stored { etag, count } => {
            Ok(Json(json!({ "etag": etag.to_string(), "count": count })))
        }
        BackupUpload::NoVersion => Err(unknown_version()),
        BackupUpload::WrongVersion { current } => Err(wrong_version(current)),
    }
}

/// The sessions of `scope` in `version`; 404 if the version is unknown.
async fn read(
    state: &AppState,
    user_id: &str,
    version: &str,
    scope: BackupScope<'_>,
) -> ApiResult<Vec<BackedUpSession>> {
    let version = parse_version(version).ok_or_else(unknown_version)?;
    state
        .storage
        .backup_sessions(user_id, version, scope)
        .await?
        .ok_or_else(unknown_version)
}

/// Deletes the sessions of `scope` in `version`; `{etag, count}`.
async fn delete(
    state: &AppState,
    user_id: &str,
    version: &str,
    scope: BackupScope<'_>,
) -> ApiResult<Json<Value>> {
    let version = parse_version(version).ok_or_else(unknown_version)?;
    let (etag, count) = state
        .storage
        .delete_backup_sessions(user_id, version, scope)
        .await?
        .ok_or_else(unknown_version)?;
    Ok(Json(json!({ "etag": etag.to_string(), "count": count })))
}

/// `PUT /_matrix/client/v3/room_keys/keys`.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeys>
pub async fn put_keys(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<AllKeysBody>,
) -> ApiResult<Json<Value>> {
    let mut sessions = Vec::new();
    for (room_id, room) in body.rooms {
        for (session_id, data) in room.sessions {
            collect(&mut sessions, &room_id, &session_id, data)?;
        }
    }
    upload(&state, &me.user_id, &query.version, sessions).await
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}`.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeysroomid>
pub async fn put_room_keys(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<RoomKeyBackup>,
) -> ApiResult<Json<Value>> {
    check_room_id(&room_id)?;
    let mut sessions = Vec::new();
    for (session_id, data) in body.sessions {
        collect(&mut sessions, &room_id, &session_id, data)?;
    }
    upload(&state, &me.user_id, &query.version, sessions).await
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeysroomidsessionid>
pub async fn put_session_key(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, session_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<KeyBackupData>,
) -> ApiResult<Json<Value>> {
    let mut sessions = Vec::new();
    collect(&mut sessions, &room_id, &session_id, body)?;
    upload(&state, &me.user_id, &query.version, sessions).await
}

/// `GET /_matrix/client/v3/room_keys/keys`: `{"rooms": {}}` when empty.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeys>
pub async fn get_keys(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let sessions = read(&state, &me.user_id, &query.version, BackupScope::All).await?;
    let mut rooms: BTreeMap<&str, Vec<&BackedUpSession>> = BTreeMap::new();
    for s in &sessions {
        rooms.entry(s.room_id.as_str()).or_default().push(s);
    }
    let rooms: Map<String, Value> = rooms
        .into_iter()
        .map(|(room_id, sessions)| (room_id.to_owned(), sessions_json(sessions.into_iter())))
        .collect();
    Ok(Json(json!({ "rooms": rooms })))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}`: `{"sessions": {}}` when
/// empty.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeysroomid>
pub async fn get_room_keys(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    check_room_id(&room_id)?;
    let sessions = read(
        &state,
        &me.user_id,
        &query.version,
        BackupScope::Room(&room_id),
    )
    .await?;
    Ok(Json(sessions_json(sessions.iter())))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`: 404 when
/// the backup holds no such session.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeysroomidsessionid>
pub async fn get_session_key(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, session_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    check_room_id(&room_id)?;
    check_session_id(&session_id)?;
    let sessions = read(
        &state,
        &me.user_id,
        &query.version,
        BackupScope::Session(&room_id, &session_id),
    )
    .await?;
    let session = sessions
        .first()
        .ok_or_else(|| MatrixError::not_found("Key not found."))?;
    Ok(Json(session_json(session)))
}

/// `DELETE /_matrix/client/v3/room_keys/keys`.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keyskeys>
pub async fn delete_keys(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    delete(&state, &me.user_id, &query.version, BackupScope::All).await
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keyskeysroomid>
pub async fn delete_room_keys(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    check_room_id(&room_id)?;
    delete(
        &state,
        &me.user_id,
        &query.version,
        BackupScope::Room(&room_id),
    )
    .await
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keyskeysroomidsessionid>
pub async fn delete_session_key(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((room_id, session_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    check_room_id(&room_id)?;
    check_session_id(&session_id)?;
    delete(
        &state,
        &me.user_id,
        &query.version,
        BackupScope::Session(&room_id, &session_id),
    )
    .await
}
