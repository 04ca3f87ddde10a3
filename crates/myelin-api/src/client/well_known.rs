//! Server discovery.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /.well-known/matrix/client`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#getwell-knownmatrixclient>
pub async fn client(State(state): State<AppState>) -> Json<Value> {
    let base_url = state
        .config
        .well_known
        .client
        .clone()
        .unwrap_or_else(|| state.config.public_baseurl());
    Json(json!({ "m.homeserver": { "base_url": base_url } }))
}

/// `GET /.well-known/matrix/server`
/// Spec: <https://spec.matrix.org/v1.19/server-server-api/#getwell-knownmatrixserver>
pub async fn server(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "m.server": state.config.well_known_server() }))
}
