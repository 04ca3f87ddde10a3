//! `GET /_matrix/client/versions`
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientversions>

use axum::Json;
use serde_json::{Value, json};

/// The spec versions whose Client-Server API this build implements. Clients
/// pick endpoints by these; `docs/architecture.md` lists which modules of the
/// spec are built so far.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
    "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
];

/// `GET /_matrix/client/versions`
pub async fn get_versions() -> Json<Value> {
    Json(json!({
        "versions": SUPPORTED_VERSIONS,
        "unstable_features": { "org.matrix.msc3814": true },
    }))
}
