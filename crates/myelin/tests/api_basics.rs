//! The API's common ground over real HTTP: discovery, versions, capabilities,
//! health, metrics, CORS, routing errors, body parsing and access tokens.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const LOGIN: &str = "/_matrix/client/v3/login";

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

/// A comma-separated header value, lowercased and split.
fn header_list(headers: &reqwest::header::HeaderMap, name: &str) -> Vec<String> {
    header(headers, name)
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

fn assert_json_content_type(headers: &reqwest::header::HeaderMap) {
    let content_type = header(headers, "content-type");
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
}

async fn well_known_defaults(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let base_url = body["m.homeserver"]["base_url"]
        .as_str()
        .expect("m.homeserver.base_url is a string");
    assert!(base_url.starts_with("http://"), "{base_url}");

    let (status, body) = server.get("/.well-known/matrix/server", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "m.server": "localhost:443" }));
    server.stop().await;
}

async fn well_known_configured(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.public_baseurl = Some("https://matrix.example.test".to_owned());
        config.well_known.server = Some("matrix.example.test:8448".to_owned());
    })
    .await;
    let (status, headers, body) = server
        .send(server.client.get(server.url("/.well-known/matrix/client")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_json_content_type(&headers);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        "*",
        "well-known needs CORS"
    );
    assert_eq!(
        body["m.homeserver"]["base_url"],
        json!("https://matrix.example.test/")
    );

    let (status, body) = server.get("/.well-known/matrix/server", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["m.server"], json!("matrix.example.test:8448"));
    server.stop().await;
}

async fn versions_include_v1_19(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, headers, body) = server
        .send(server.client.get(server.url("/_matrix/client/versions")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_json_content_type(&headers);
    let versions = body["versions"].as_array().expect("versions is an array");
    assert!(versions.contains(&json!("v1.19")), "{body}");
    assert!(versions.iter().all(Value::is_string), "{body}");
    assert!(body["unstable_features"].is_object(), "{body}");
    server.stop().await;
}

async fn capabilities_need_auth(backend: Backend) {
    let server = TestServer::start(backend).await;
    let path = "/_matrix/client/v3/capabilities";
    assert_error(
        &server.get(path, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );

    let alice = server.register("alice", "correct horse").await;
    let (status, body) = server.get(path, Some(&alice.access_token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["capabilities"]["m.change_password"]["enabled"],
        json!(true),
        "{body}"
    );
    server.stop().await;
}

async fn health_is_ok(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server.get("/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!("OK"));
    server.stop().await;
}

async fn metrics_count_requests(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "correct horse").await;
    let (status, _) = server
        .get("/_matrix/client/v3/profile/@alice:localhost", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.get(WHOAMI, Some(&alice.access_token)).await;
    assert_eq!(status, StatusCode::OK);
    server
        .get("/_matrix/client/v3/no/such/endpoint", None)
        .await;

    let (status, headers, body) = server.send(server.client.get(server.url("/metrics"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        header(&headers, "content-type").starts_with("text/plain"),
        "{headers:?}"
    );
    let text = body.as_str().expect("metrics are text");
    assert!(text.contains("myelin_http_requests_total"), "{text}");
    assert!(text.contains("myelin_db_pool_connections"), "{text}");
    assert!(
        text.contains("myelin_http_request_duration_seconds"),
        "{text}"
    );
    // Requests are labelled by route template, never by the raw path.
    assert!(
        text.contains(r#"endpoint="/_matrix/client/v3/profile/{user_id}""#),
        "{text}"
    );
    assert!(
        !text.contains("@alice:localhost"),
        "a raw path leaked into a label: {text}"
    );
    assert!(
        !text.contains("/no/such/endpoint"),
        "an unmatched path leaked into a label: {text}"
    );
    server.stop().await;
}

async fn metrics_can_be_disabled(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.metrics.enabled = false).await;
    assert_error(
        &server.get("/metrics", None).await,
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
    );
    server.stop().await;
}

async fn cors_on_success_and_error(backend: Backend) {
    let server = TestServer::start(backend).await;
    let origin = "https://app.example.test";

    // A normal GET, with and without an Origin.
    let (status, headers, _) = server
        .send(
            server
                .client
                .get(server.url("/_matrix/client/versions"))
                .header("origin", origin),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), "*");
    let (_, headers, _) = server
        .send(server.client.get(server.url("/_matrix/client/versions")))
        .await;
    assert_eq!(header(&headers, "access-control-allow-origin"), "*");

    // Errors: a missing token, an unknown endpoint.
    let (status, headers, body) = server
        .send(
            server
                .client
                .get(server.url(WHOAMI))
                .header("origin", origin),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(header(&headers, "access-control-allow-origin"), "*");
    let (status, headers, _) = server
        .send(
            server
                .client
                .get(server.url("/_matrix/client/v3/nothing"))
                .header("origin", origin),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(header(&headers, "access-control-allow-origin"), "*");
    server.stop().await;
}

async fn options_preflight(backend: Backend) {
    let server = TestServer::start(backend).await;
    for path in [LOGIN, WHOAMI, "/_matrix/client/v3/devices/SOMEDEVICE"] {
        let req = server
            .client
            .request(Method::OPTIONS, server.url(path))
            .header("origin", "https://app.example.test")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            );
        let (status, headers, body) = server.send(req).await;
        // No endpoint logic runs for OPTIONS: no 401 even where a token is needed.
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(header(&headers, "access-control-allow-origin"), "*");
        let methods = header_list(&headers, "access-control-allow-methods");
        for m in ["get", "post", "put", "delete", "options"] {
            assert!(
                methods.contains(&m.to_owned()),
                "{path}: allow-methods {methods:?}"
            );
        }
        let allowed = header_list(&headers, "access-control-allow-headers");
        for h in ["x-requested-with", "content-type", "authorization"] {
            assert!(
                allowed.contains(&h.to_owned()),
                "{path}: allow-headers {allowed:?}"
            );
        }
    }
    server.stop().await;
}

async fn unknown_endpoint(backend: Backend) {
    let server = TestServer::start(backend).await;
    for path in [
        "/_matrix/client/v3/no_such_endpoint",
        "/",
        "/_matrix/client/v3/login/extra",
    ] {
        let (status, headers, body) = server.send(server.client.get(server.url(path))).await;
        assert_error(&(status, body), StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
        assert_json_content_type(&headers);
    }
    let result = server
        .post("/_matrix/client/v3/nope", None, json!({}))
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    server.stop().await;
}

async fn wrong_method(backend: Backend) {
    let server = TestServer::start(backend).await;
    let result = server.delete(LOGIN, None, None).await;
    assert_error(&result, StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED");
    let result = server
        .put("/_matrix/client/versions", None, json!({}))
        .await;
    assert_error(&result, StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED");
    let result = server.get("/_matrix/client/v3/register", None).await;
    assert_error(&result, StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED");
    server.stop().await;
}

async fn malformed_json(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "correct horse").await;
    for body in [
        &b"{not json"[..],
        b"",
        b"{\"type\": \"m.login.password\",",
        b"\xff\xfe",
    ] {
        let result = server
            .request_raw(Method::POST, LOGIN, None, body.to_vec())
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    }
    // Authenticated endpoints too.
    let path = "/_matrix/client/v3/profile/@alice:localhost/displayname";
    let result = server
        .request_raw(
            Method::PUT,
            path,
            Some(&alice.access_token),
            b"{not json".to_vec(),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    server.stop().await;
}

async fn json_without_content_type(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", "correct horse").await;
    let body = json!({ "type": "m.login.password", "user": "alice", "password": "correct horse" })
        .to_string();
    // Clients should send application/json, but the spec does not require it.
    let req = server.client.post(server.url(LOGIN)).body(body.clone());
    let (status, _, response) = server.send(req).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let req = server
        .client
        .post(server.url(LOGIN))
        .header("content-type", "text/plain")
        .body(body);
    let (status, _, response) = server.send(req).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    server.stop().await;
}

async fn wrong_json_shape(backend: Backend) {
    let server = TestServer::start(backend).await;
    let cases = [
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": 5 }),
        json!([]),
        json!(["m.login.password"]),
        json!("m.login.password"),
        json!(42),
        json!(null),
        json!({ "identifier": { "type": "m.id.user", "user": "alice" }, "password": "x" }),
        json!({ "type": 1, "password": "x", "user": "alice" }),
    ];
    for body in cases {
        let result = server.post(LOGIN, None, body.clone()).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    server.stop().await;
}

async fn body_too_large(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.limits.max_request_body_bytes = 2048
    })
    .await;
    let padding = "x".repeat(10 * 1024);
    let body = json!({ "type": "m.login.password", "user": "alice", "password": padding });
    let result = server.post(LOGIN, None, body).await;
    assert_error(&result, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    let result = server
        .request_raw(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            vec![b' '; 10 * 1024],
        )
        .await;
    assert_error(&result, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");

    // Bodies under the limit still work.
    server.register("alice", "correct horse").await;
    let (status, body) = server.login("alice", "correct horse").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

async fn missing_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert_error(
        &server.get(WHOAMI, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let result = server.get("/_matrix/client/v3/devices", None).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    // An Authorization header of another scheme carries no token.
    let req = server
        .client
        .get(server.url(WHOAMI))
        .header("authorization", "Basic YWxpY2U6cGFzcw==");
    let (status, _, body) = server.send(req).await;
    assert_error(&(status, body), StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    server.stop().await;
}

async fn unknown_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "correct horse").await;
    let forged = format!("{}x", alice.access_token);
    for token in [
        "nope",
        "myl_at_0000000000000000000000000000",
        forged.as_str(),
    ] {
        let result = server.get(WHOAMI, Some(token)).await;
        assert_error(&result, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        assert_eq!(result.1["soft_logout"], json!(false), "{}", result.1);
    }
    server.stop().await;
}

async fn access_token_query_parameter(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "correct horse").await;
    let (status, body) = server
        .get(
            &format!("{WHOAMI}?access_token={}", alice.access_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], json!(alice.user_id));
    assert_eq!(body["device_id"], json!(alice.device_id));

    let result = server
        .get(&format!("{WHOAMI}?access_token=nope"), None)
        .await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    server.stop().await;
}

backend_tests!(
    well_known_defaults,
    well_known_configured,
    versions_include_v1_19,
    capabilities_need_auth,
    health_is_ok,
    metrics_count_requests,
    metrics_can_be_disabled,
    cors_on_success_and_error,
    options_preflight,
    unknown_endpoint,
    wrong_method,
    malformed_json,
    json_without_content_type,
    wrong_json_shape,
    body_too_large,
    missing_token,
    unknown_token,
    access_token_query_parameter,
);
