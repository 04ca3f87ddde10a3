//! The HTTP layer: the router, authentication, rate limits and the
//! Client-Server API handlers.
//!
//! Architecture Invariant: handlers are thin — extract, check policy, call
//! storage or a service, map the result. Matrix errors become HTTP responses in
//! [`error`] only.

pub mod auth;
pub mod client;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod ratelimit;
pub mod state;
pub mod uia;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use myelin_core::{ErrorKind, MatrixError};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};

pub use error::{ApiError, ApiResult};
pub use state::AppState;

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let body_limit =
        usize::try_from(state.config.limits.max_request_body_bytes).unwrap_or(usize::MAX);
    let metrics_enabled = state.config.metrics.enabled;
    let mut app = Router::new()
        .route("/health", get(health))
        .merge(client::routes());
    if metrics_enabled {
        // Install the recorder before the first request is counted.
        metrics::handle();
        app = app.route("/metrics", get(metrics::render));
    }
    app.fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors())
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// The CORS headers the spec asks of every client endpoint, so browser
/// clients on other origins work.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#web-browser-clients>
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
}

/// `GET /health`
async fn health() -> &'static str {
    "OK"
}

async fn unrecognized() -> ApiError {
    MatrixError::new(
        ErrorKind::Unrecognized {
            method_not_allowed: false,
        },
        "Unrecognized request",
    )
    .into()
}

async fn method_not_allowed() -> ApiError {
    MatrixError::new(
        ErrorKind::Unrecognized {
            method_not_allowed: true,
        },
        "Method not allowed for this endpoint",
    )
    .into()
}

/// A panic answers 500 `M_UNKNOWN`; the payload goes to the log only.
fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::from(MatrixError::internal(format!("handler panicked: {detail}"))).into_response()
}
