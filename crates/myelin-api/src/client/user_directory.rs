//! `POST /_matrix/client/v3/user_directory/search`
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3user_directorysearch>

use axum::Json;
use axum::extract::State;
use myelin_core::MatrixError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::MatrixJson;
use crate::state::AppState;

/// Results when the client names no limit (the spec's default).
const LIMIT_DEFAULT: u32 = 10;
/// Results per request at most, whatever the client asks.
const LIMIT_MAX: u32 = 100;
/// Longest search term accepted.
const SEARCH_TERM_LENGTH_MAX: usize = 256;

#[derive(Deserialize)]
pub struct SearchRequest {
    search_term: String,
    limit: Option<u32>,
}

/// Searches local users by user id and display name. Every local user is
/// searchable: with no rooms yet there is no "shares a room" to narrow by.
pub async fn search(
    State(state): State<AppState>,
    _auth: Auth,
    MatrixJson(req): MatrixJson<SearchRequest>,
) -> ApiResult<Json<Value>> {
    if req.search_term.len() > SEARCH_TERM_LENGTH_MAX {
        return Err(MatrixError::bad_json(format!(
            "search_term is longer than {SEARCH_TERM_LENGTH_MAX} bytes"
        ))
        .into());
    }
    let limit = req.limit.unwrap_or(LIMIT_DEFAULT).clamp(1, LIMIT_MAX);
    let term = req.search_term.trim();
    let mut users = state.storage.search_users(term, limit + 1).await?;
    let limited = users.len() > limit as usize;
    users.truncate(limit as usize);
    let results: Vec<Value> = users
        .into_iter()
        .map(|u| {
            let mut v = json!({ "user_id": u.user_id });
            if let Some(name) = u.displayname {
                v["display_name"] = json!(name);
            }
            if let Some(url) = u.avatar_url {
                v["avatar_url"] = json!(url);
            }
            v
        })
        .collect();
    Ok(Json(json!({ "results": results, "limited": limited })))
}
