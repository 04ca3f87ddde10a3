//! Login, whoami, token refresh and logout over real HTTP.

mod common;

use common::*;
use myelin_core::config::RateLimit;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const REFRESH: &str = "/_matrix/client/v3/refresh";
const LOGOUT: &str = "/_matrix/client/v3/logout";
const LOGOUT_ALL: &str = "/_matrix/client/v3/logout/all";
const PASSWORD: &str = "correct horse";

fn token(body: &Value, field: &str) -> String {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {body}"))
        .to_owned()
}

/// Logs in with `refresh_token: true`; returns the response body.
async fn login_refreshable(server: &TestServer, user: &str) -> Value {
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": PASSWORD,
        "refresh_token": true,
    });
    let (status, body) = server.post(LOGIN, None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn refresh(server: &TestServer, refresh_token: &str) -> (StatusCode, Value) {
    server
        .post(REFRESH, None, json!({ "refresh_token": refresh_token }))
        .await
}

async fn assert_token_dead(server: &TestServer, token: &str) {
    let result = server.get(WHOAMI, Some(token)).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(result.1["soft_logout"], json!(false), "{}", result.1);
}

async fn assert_token_alive(server: &TestServer, token: &str, user_id: &str) -> Value {
    let (status, body) = server.get(WHOAMI, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], json!(user_id));
    body
}

async fn login_flows(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server.get(LOGIN, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let flows = body["flows"].as_array().expect("flows");
    assert!(
        flows.iter().any(|f| f["type"] == json!("m.login.password")),
        "{body}"
    );
    server.stop().await;
}

async fn login_names(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let mut devices = vec![alice.device_id.clone()];
    for name in ["alice", "@alice:localhost", "ALICE", "@ALICE:localhost"] {
        let (status, body) = server.login(name, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "login as {name}: {body}");
        assert_eq!(body["user_id"], json!("@alice:localhost"));
        assert!(
            body["well_known"]["m.homeserver"]["base_url"].is_string(),
            "{body}"
        );
        assert!(body.get("refresh_token").is_none(), "{body}");
        let whoami =
            assert_token_alive(&server, &token(&body, "access_token"), "@alice:localhost").await;
        assert_eq!(whoami["device_id"], body["device_id"]);
        devices.push(token(&body, "device_id"));
    }
    // The deprecated top-level `user`.
    let body = json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD });
    let (status, body) = server.post(LOGIN, None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], json!("@alice:localhost"));
    devices.push(token(&body, "device_id"));

    // Each login is a device of its own.
    devices.sort();
    devices.dedup();
    assert_eq!(devices.len(), 6, "{devices:?}");
    let (status, listed) = server
        .get("/_matrix/client/v3/devices", Some(&alice.access_token))
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["devices"].as_array().map(Vec::len),
        Some(6),
        "{listed}"
    );
    server.stop().await;
}

async fn login_with_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", PASSWORD).await;
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
        "device_id": "LAPTOP",
        "initial_device_display_name": "Work laptop",
    });
    let (status, body) = server.post(LOGIN, None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], json!("LAPTOP"));
    let access = token(&body, "access_token");
    let (status, device) = server
        .get("/_matrix/client/v3/devices/LAPTOP", Some(&access))
        .await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!(device["display_name"], json!("Work laptop"));

    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
        "device_id": "",
    });
    assert_error(
        &server.post(LOGIN, None, body).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    server.stop().await;
}

async fn login_failures(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", PASSWORD).await;
    assert_error(
        &server.login("alice", "wrong password").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.login("nobody", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.login("@alice:elsewhere.example", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.login("@not a user id", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.login("", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    for login_type in ["m.login.token", "m.login.sso", "org.example.custom"] {
        let body = json!({ "type": login_type, "identifier": { "type": "m.id.user", "user": "alice" }, "password": PASSWORD });
        assert_error(
            &server.post(LOGIN, None, body).await,
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
        );
    }
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "alice@example.org" },
        "password": PASSWORD,
    });
    assert_error(
        &server.post(LOGIN, None, body).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
    // Missing pieces.
    let body = json!({ "type": "m.login.password", "password": PASSWORD });
    assert_error(
        &server.post(LOGIN, None, body).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" } });
    assert_error(
        &server.post(LOGIN, None, body).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user" }, "password": PASSWORD });
    assert_error(
        &server.post(LOGIN, None, body).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    server.stop().await;
}

async fn deactivated_account(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": PASSWORD });
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&alice.access_token),
            json!({ "auth": auth }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &server.login("alice", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_USER_DEACTIVATED",
    );
    assert_error(
        &server.login("@alice:localhost", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_USER_DEACTIVATED",
    );
    server.stop().await;
}

async fn whoami(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let (status, body) = server.get(WHOAMI, Some(&alice.access_token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], json!("@alice:localhost"));
    assert_eq!(body["device_id"], json!(alice.device_id));
    assert_eq!(body["is_guest"], json!(false));
    assert_error(
        &server.get(WHOAMI, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    server.stop().await;
}

async fn full_cycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let registered = server.register("alice", PASSWORD).await;
    let login = login_refreshable(&server, "alice").await;
    let access = token(&login, "access_token");
    let device_id = token(&login, "device_id");
    assert_ne!(device_id, registered.device_id);
    assert!(
        login["expires_in_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{login}"
    );
    let whoami = assert_token_alive(&server, &access, "@alice:localhost").await;
    assert_eq!(whoami["device_id"], json!(device_id));

    let (status, refreshed) = refresh(&server, &token(&login, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert!(
        refreshed["expires_in_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{refreshed}"
    );
    let new_access = token(&refreshed, "access_token");
    let whoami = assert_token_alive(&server, &new_access, "@alice:localhost").await;
    assert_eq!(
        whoami["device_id"],
        json!(device_id),
        "a refreshed session keeps its device"
    );

    let (status, body) = server.post(LOGOUT, Some(&new_access), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    assert_token_dead(&server, &new_access).await;
    let result = refresh(&server, &token(&refreshed, "refresh_token")).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    // The registration session is untouched.
    assert_token_alive(&server, &registered.access_token, "@alice:localhost").await;
    server.stop().await;
}

async fn refresh_rotation(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", PASSWORD).await;
    let login = login_refreshable(&server, "alice").await;
    let (at1, rt1) = (
        token(&login, "access_token"),
        token(&login, "refresh_token"),
    );
    let device_id = token(&login, "device_id");

    let (status, second) = refresh(&server, &rt1).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let (at2, rt2) = (
        token(&second, "access_token"),
        token(&second, "refresh_token"),
    );
    assert_ne!(at2, at1);
    assert_ne!(rt2, rt1);
    // The old access token dies at once.
    assert_token_dead(&server, &at1).await;

    // The response was "lost": the old refresh token still works while the
    // new access token is unused, and supersedes the lost session.
    let (status, third) = refresh(&server, &rt1).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    let (at3, rt3) = (
        token(&third, "access_token"),
        token(&third, "refresh_token"),
    );
    assert_token_dead(&server, &at2).await;
    assert_error(
        &refresh(&server, &rt2).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );

    // Using the new access token retires the old refresh token.
    let whoami = assert_token_alive(&server, &at3, "@alice:localhost").await;
    assert_eq!(whoami["device_id"], json!(device_id));
    assert_error(
        &refresh(&server, &rt1).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_token_alive(&server, &at3, "@alice:localhost").await;

    // The current refresh token goes on working.
    let (status, fourth) = refresh(&server, &rt3).await;
    assert_eq!(status, StatusCode::OK, "{fourth}");
    assert_token_dead(&server, &at3).await;
    let whoami =
        assert_token_alive(&server, &token(&fourth, "access_token"), "@alice:localhost").await;
    assert_eq!(whoami["device_id"], json!(device_id));
    assert_error(
        &refresh(&server, &rt3).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    server.stop().await;
}

async fn expired_access_token(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.auth.refreshable_access_token_lifetime_ms = 1
    })
    .await;
    let plain = server.register("alice", PASSWORD).await;
    let login = login_refreshable(&server, "alice").await;
    assert_eq!(login["expires_in_ms"], json!(1), "{login}");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let result = server
        .get(WHOAMI, Some(&token(&login, "access_token")))
        .await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(result.1["soft_logout"], json!(true), "{}", result.1);

    let (status, refreshed) = refresh(&server, &token(&login, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert!(
        refreshed["access_token"].is_string() && refreshed["refresh_token"].is_string(),
        "{refreshed}"
    );
    // Tokens issued without a refresh token never expire.
    assert_token_alive(&server, &plain.access_token, "@alice:localhost").await;
    server.stop().await;
}

async fn expired_refresh_token(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.auth.refresh_token_lifetime_ms = 1).await;
    server.register("alice", PASSWORD).await;
    let login = login_refreshable(&server, "alice").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let result = refresh(&server, &token(&login, "refresh_token")).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    server.stop().await;
}

async fn bad_refresh_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    assert_error(
        &refresh(&server, "nope").await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &refresh(&server, "").await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    // An access token is not a refresh token.
    assert_error(
        &refresh(&server, &alice.access_token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.post(REFRESH, None, json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let result = server
        .post(REFRESH, None, json!({ "refresh_token": 5 }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    server.stop().await;
}

async fn logout(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let (status, second) = server.login("alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let (second_token, second_device) =
        (token(&second, "access_token"), token(&second, "device_id"));

    let (status, body) = server.post(LOGOUT, Some(&second_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_token_dead(&server, &second_token).await;
    let result = server.post(LOGOUT, Some(&second_token), json!({})).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");

    // The device went with it; the other session lives on.
    let (status, devices) = server
        .get("/_matrix/client/v3/devices", Some(&alice.access_token))
        .await;
    assert_eq!(status, StatusCode::OK, "{devices}");
    let ids: Vec<&Value> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| &d["device_id"])
        .collect();
    assert_eq!(ids, vec![&json!(alice.device_id)], "{devices}");
    let path = format!("/_matrix/client/v3/devices/{second_device}");
    assert_error(
        &server.get(&path, Some(&alice.access_token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.post(LOGOUT, None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    server.stop().await;
}

async fn logout_all(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let mut tokens = vec![alice.access_token.clone()];
    for _ in 0..2 {
        let (status, body) = server.login("alice", PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokens.push(token(&body, "access_token"));
    }
    let refreshable = login_refreshable(&server, "alice").await;
    tokens.push(token(&refreshable, "access_token"));

    let (status, body) = server.post(LOGOUT_ALL, Some(&tokens[1]), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for t in &tokens {
        assert_token_dead(&server, t).await;
    }
    let result = refresh(&server, &token(&refreshable, "refresh_token")).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    // Other users are untouched; the account can log in again.
    assert_token_alive(&server, &bob.access_token, "@bob:localhost").await;
    let (status, body) = server.login("alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, devices) = server
        .get(
            "/_matrix/client/v3/devices",
            Some(&token(&body, "access_token")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(1),
        "{devices}"
    );
    server.stop().await;
}

/// Sends a login and checks it was rate limited, with the headers.
async fn assert_login_limited(server: &TestServer, user: &str) {
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": PASSWORD,
    });
    let (status, headers, body) = server
        .send(server.client.post(server.url(LOGIN)).json(&body))
        .await;
    assert_error(
        &(status, body.clone()),
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{body}"
    );
    let retry_after: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds");
    assert!(retry_after >= 1);
}

async fn login_rate_limit_per_ip(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.rate_limits.login = RateLimit {
            per_second: 0.001,
            burst: 2,
        };
    })
    .await;
    server.register("alice", PASSWORD).await;
    assert_eq!(server.login("alice", PASSWORD).await.0, StatusCode::OK);
    assert_error(
        &server.login("bob", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // Whatever account the third attempt names, the address is spent.
    assert_login_limited(&server, "carol").await;
    assert_login_limited(&server, "alice").await;
    server.stop().await;
}

async fn login_rate_limit_per_account(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.rate_limits.login_per_account = RateLimit {
            per_second: 0.001,
            burst: 2,
        };
    })
    .await;
    server.register("alice", PASSWORD).await;
    server.register("bob", PASSWORD).await;
    assert_error(
        &server.login("alice", "wrong password").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.login("@alice:localhost", "guess two").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // Every spelling of the account shares its limit, even with the right password.
    assert_login_limited(&server, "ALICE").await;
    assert_login_limited(&server, "@Alice:localhost").await;
    assert_login_limited(&server, "alice").await;
    // Other accounts are not limited by it.
    let (status, body) = server.login("bob", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

backend_tests!(
    login_flows,
    login_names,
    login_with_device,
    login_failures,
    deactivated_account,
    whoami,
    full_cycle,
    refresh_rotation,
    expired_access_token,
    expired_refresh_token,
    bad_refresh_tokens,
    logout,
    logout_all,
    login_rate_limit_per_ip,
    login_rate_limit_per_account,
);
