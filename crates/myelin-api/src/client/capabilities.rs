//! `GET /_matrix/client/v3/capabilities`
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3capabilities>

use axum::Json;
use serde_json::{Value, json};

use crate::auth::Auth;

/// `GET /_matrix/client/v3/capabilities`: only what this build does.
pub async fn get_capabilities(_auth: Auth) -> Json<Value> {
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false },
        }
    }))
}
