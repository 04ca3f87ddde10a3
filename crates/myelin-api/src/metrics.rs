//! Prometheus metrics: requests by endpoint and status, latency histograms,
//! database pool use. Rendered on `GET /metrics`.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

use crate::state::AppState;

/// Latency buckets in seconds, from a cache hit to a slow long-poll.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide recorder (a process has one, however many servers a test
/// starts in it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("duration_seconds".to_owned()),
                LATENCY_BUCKETS_S,
            )
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (only in odd embeddings);
        // then this handle renders nothing, which is harmless.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Counts and times every request, labelled by its route template (never the
/// raw path, whose ids would make the label set unbounded).
pub async fn track(request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    let elapsed = start.elapsed().as_secs_f64();
    let status = response.status().as_u16().to_string();
    metrics::counter!("myelin_http_requests_total", "method" => method.clone(), "endpoint" => endpoint.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("myelin_http_request_duration_seconds", "method" => method, "endpoint" => endpoint)
        .record(elapsed);
    response
}

/// `GET /metrics`
pub async fn render(State(state): State<AppState>) -> Response {
    let pool = state.storage.pool_stats();
    let backend = state.storage.backend_name();
    metrics::gauge!("myelin_db_pool_connections", "backend" => backend, "state" => "open")
        .set(pool.size as f64);
    metrics::gauge!("myelin_db_pool_connections", "backend" => backend, "state" => "in_use")
        .set(pool.in_use as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response()
}
