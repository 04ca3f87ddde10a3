//! `GET /notifications`: the events the user was (or would have been)
//! notified about, newest first — the push rule outcomes the room writer
//! stored with each event (`myelin_rooms::push`).
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3notifications>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use myelin_rooms::push::ReadMarks;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::auth::Auth;
use crate::client::room::room;
use crate::client::room_read::formatter;
use crate::error::ApiResult;
use crate::extract::MatrixQuery;
use crate::state::AppState;

/// Notifications per page when the client gives no `limit`.
const NOTIFICATIONS_DEFAULT_LIMIT: u32 = 20;
/// Notifications per page at most.
const NOTIFICATIONS_LIMIT_MAX: u32 = 100;

#[derive(Deserialize)]
pub struct NotificationsQuery {
    from: Option<String>,
    limit: Option<u32>,
    only: Option<String>,
}

/// `GET /_matrix/client/v3/notifications`
pub async fn get_notifications(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixQuery(query): MatrixQuery<NotificationsQuery>,
) -> ApiResult<Json<Value>> {
    let before =
        match query.from.as_deref() {
            None | Some("") => None,
            Some(token) => Some(token.parse::<i64>().map_err(|_| {
                MatrixError::invalid_param("`from` is not a token this server gave")
            })?),
        };
    let limit = query
        .limit
        .unwrap_or(NOTIFICATIONS_DEFAULT_LIMIT)
        .clamp(1, NOTIFICATIONS_LIMIT_MAX);
    let highlight_only = match query.only.as_deref() {
        None | Some("") => false,
        Some("highlight") => true,
        Some(_) => {
            return Err(MatrixError::invalid_param("`only` may only be `highlight`").into());
        }
    };
    let upto = state.rooms.events().watermark();
    let page = state
        .storage
        .notifications(&me.user_id, before, upto, limit, highlight_only)
        .await?;
    let ids: Vec<String> = page.iter().map(|n| n.event_id.clone()).collect();
    let events: HashMap<String, _> = state
        .storage
        .events(&ids)
        .await?
        .into_iter()
        .map(|e| (e.event_id.clone(), e))
        .collect();
    let mut marks: HashMap<i64, ReadMarks> = HashMap::new();
    let mut versions = HashMap::new();
    let mut notifications = Vec::with_capacity(page.len());
    for notification in &page {
        let Some(event) = events.get(&notification.event_id) else {
            continue;
        };
        let room_marks = match marks.entry(notification.room_nid) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(
                ReadMarks::load(
                    state.storage.as_ref(),
                    notification.room_nid,
                    &me.user_id,
                    i64::MIN,
                )
                .await?,
            ),
        };
        let read =
            room_marks.read_upto(notification.thread_id.as_deref()) >= notification.stream_pos;
        if !versions.contains_key(&notification.room_id) {
            let (_, version) = room(&state, &notification.room_id).await?;
            versions.insert(notification.room_id.clone(), version);
        }
        let format = formatter(&state, &versions[&notification.room_id], &me);
        let mut formatted = format.format(event).await?;
        formatted.insert("room_id".into(), json!(notification.room_id));
        notifications.push(json!({
            "actions": notification.actions,
            "event": Value::Object(formatted),
            "read": read,
            "room_id": notification.room_id,
            "ts": notification.ts,
        }));
    }
    let mut body = json!({ "notifications": notifications });
    if page.len() == limit as usize
        && let Some(last) = page.last()
    {
        body["next_token"] = json!(last.stream_pos.to_string());
    }
    Ok(Json(body))
}
