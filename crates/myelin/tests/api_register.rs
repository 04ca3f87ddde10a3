//! Registration over real HTTP: the UIA flows, usernames, passwords,
//! registration tokens and rate limits.

mod common;

use common::*;
use myelin_core::config::{RateLimit, RegistrationMode};
use myelin_core::time::now_ms;
use myelin_storage::RegistrationToken;
use reqwest::StatusCode;
use serde_json::{Value, json};

const REGISTER: &str = "/_matrix/client/v3/register";
const AVAILABLE: &str = "/_matrix/client/v3/register/available";
const VALIDITY: &str = "/_matrix/client/v1/register/m.login.registration_token/validity";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const PASSWORD: &str = "correct horse";

/// The first request of a flow: answers 401 and returns the UIA body.
async fn start_uia(server: &TestServer, body: Value) -> Value {
    let (status, body) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    body
}

fn session_of(uia: &Value) -> String {
    uia["session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session in {uia}"))
        .to_owned()
}

async fn add_token(
    server: &TestServer,
    token: &str,
    uses_allowed: Option<i64>,
    expiry_ms: Option<i64>,
) {
    let token = RegistrationToken {
        token: token.to_owned(),
        uses_allowed,
        completed: 0,
        expiry_ms,
    };
    server
        .storage()
        .create_registration_token(token)
        .await
        .expect("the token is stored");
}

fn token_mode(config: &mut myelin_core::Config) {
    config.registration = RegistrationMode::Token;
}

/// Registers in token mode in two steps; returns the final response.
async fn register_with_token(
    server: &TestServer,
    username: &str,
    token: &str,
) -> (StatusCode, Value) {
    let uia = start_uia(
        server,
        json!({ "username": username, "password": PASSWORD }),
    )
    .await;
    let auth = json!({ "type": "m.login.registration_token", "token": token, "session": session_of(&uia) });
    server
        .post(
            REGISTER,
            None,
            json!({ "username": username, "password": PASSWORD, "auth": auth }),
        )
        .await
}

async fn dummy_flow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let uia = start_uia(&server, json!({ "username": "bob", "password": PASSWORD })).await;
    assert!(uia["session"].is_string(), "{uia}");
    assert_eq!(
        uia["flows"],
        json!([{ "stages": ["m.login.dummy"] }]),
        "{uia}"
    );
    assert!(uia["params"].is_object(), "{uia}");
    assert_eq!(uia["completed"], json!([]), "{uia}");

    let body = json!({
        "username": "bob",
        "password": PASSWORD,
        "auth": { "type": "m.login.dummy", "session": session_of(&uia) },
    });
    let (status, body) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], json!("@bob:localhost"));
    let token = body["access_token"].as_str().expect("access_token");
    let device_id = body["device_id"].as_str().expect("device_id");
    assert!(body.get("refresh_token").is_none(), "{body}");

    let (status, whoami) = server.get(WHOAMI, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{whoami}");
    assert_eq!(whoami["user_id"], json!("@bob:localhost"));
    assert_eq!(whoami["device_id"], json!(device_id));
    // The account logs in with the password it registered.
    let (status, body) = server.login("bob", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

async fn dummy_stage_without_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    // A client may complete the dummy stage on its first request.
    let session = server.register("carol", PASSWORD).await;
    assert_eq!(session.user_id, "@carol:localhost");
    server.stop().await;
}

async fn username_lowercased(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("Alice", PASSWORD).await;
    assert_eq!(alice.user_id, "@alice:localhost");
    let (status, body) = server.get(WHOAMI, Some(&alice.access_token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], json!("@alice:localhost"));
    // The same name in another case is taken.
    for name in ["alice", "ALICE", "@alice:localhost"] {
        let result = server
            .post(
                REGISTER,
                None,
                json!({ "username": name, "password": PASSWORD }),
            )
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    }
    // A full user id of this server names its localpart.
    let dave = server.register("@Dave:localhost", PASSWORD).await;
    assert_eq!(dave.user_id, "@dave:localhost");
    server.stop().await;
}

async fn taken_username_before_uia(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", PASSWORD).await;
    // No auth: the taken name is reported before any UIA.
    let result = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    // With auth too.
    let body =
        json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    let result = server.post(REGISTER, None, body).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    server.stop().await;
}

async fn invalid_usernames(backend: Backend) {
    let server = TestServer::start(backend).await;
    let long = "a".repeat(250);
    for name in [
        "bad name",
        "a:b",
        "",
        "ali@ce",
        "élise",
        "tab\tname",
        "@bob:elsewhere.example",
        long.as_str(),
    ] {
        let result = server
            .post(
                REGISTER,
                None,
                json!({ "username": name, "password": PASSWORD }),
            )
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
        let body =
            json!({ "username": name, "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
        let result = server.post(REGISTER, None, body).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    }
    // A username of the wrong type is malformed JSON.
    let result = server
        .post(
            REGISTER,
            None,
            json!({ "username": 7, "password": PASSWORD }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    server.stop().await;
}

async fn generated_username(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({ "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    let (status, body) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user_id = body["user_id"].as_str().expect("user_id");
    let localpart = user_id
        .strip_prefix('@')
        .and_then(|r| r.strip_suffix(":localhost"))
        .expect("a local user id");
    assert!(!localpart.is_empty());
    assert!(
        localpart
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{user_id}"
    );
    server.stop().await;
}

async fn username_available(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", PASSWORD).await;
    let (status, body) = server
        .get(&format!("{AVAILABLE}?username=newbie"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "available": true }));

    for name in ["alice", "ALICE", "%40alice%3Alocalhost"] {
        let result = server
            .get(&format!("{AVAILABLE}?username={name}"), None)
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    }
    for name in ["bad%20name", "a%3Ab", ""] {
        let result = server
            .get(&format!("{AVAILABLE}?username={name}"), None)
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    }
    let result = server.get(AVAILABLE, None).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    server.stop().await;
}

async fn inhibit_login(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({
        "username": "quiet",
        "password": PASSWORD,
        "inhibit_login": true,
        "auth": { "type": "m.login.dummy" },
    });
    let (status, body) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "user_id": "@quiet:localhost" }));

    // The account exists and has no device yet.
    let (status, login) = server.login("quiet", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let token = login["access_token"].as_str().expect("access_token");
    let (status, devices) = server.get("/_matrix/client/v3/devices", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{devices}");
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(1),
        "{devices}"
    );
    server.stop().await;
}

async fn device_id_and_display_name(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({
        "username": "alice",
        "password": PASSWORD,
        "device_id": "MYDEVICE",
        "initial_device_display_name": "Alice's phone",
        "auth": { "type": "m.login.dummy" },
    });
    let (status, body) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], json!("MYDEVICE"));
    let token = body["access_token"].as_str().expect("access_token");

    let (status, devices) = server.get("/_matrix/client/v3/devices", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{devices}");
    let devices = devices["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["device_id"], json!("MYDEVICE"));
    assert_eq!(devices[0]["display_name"], json!("Alice's phone"));
    server.stop().await;
}

async fn invalid_device_id_creates_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({ "username": "alice", "password": PASSWORD, "device_id": "", "auth": { "type": "m.login.dummy" } });
    let result = server.post(REGISTER, None, body).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // The failed request left no account behind.
    let (status, body) = server
        .get(&format!("{AVAILABLE}?username=alice"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.register("alice", PASSWORD).await;
    server.stop().await;
}

async fn guest_forbidden(backend: Backend) {
    let server = TestServer::start(backend).await;
    let result = server
        .post(&format!("{REGISTER}?kind=guest"), None, json!({}))
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
    let body =
        json!({ "username": "visitor", "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    let result = server
        .post(&format!("{REGISTER}?kind=guest"), None, body)
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
    let result = server
        .post(&format!("{REGISTER}?kind=robot"), None, json!({}))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // kind=user is the default, spelled out.
    let body =
        json!({ "username": "member", "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    let (status, body) = server
        .post(&format!("{REGISTER}?kind=user"), None, body)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

async fn registration_closed(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.registration = RegistrationMode::Closed
    })
    .await;
    let result = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let body =
        json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    assert_error(
        &server.post(REGISTER, None, body).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let result = server
        .get(&format!("{AVAILABLE}?username=alice"), None)
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.stop().await;
}

async fn password_missing_after_uia(backend: Backend) {
    let server = TestServer::start(backend).await;
    let uia = start_uia(&server, json!({ "username": "alice" })).await;
    let body = json!({ "username": "alice", "auth": { "type": "m.login.dummy", "session": session_of(&uia) } });
    let result = server.post(REGISTER, None, body).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    // Nothing was created.
    let (status, body) = server
        .get(&format!("{AVAILABLE}?username=alice"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

async fn session_only_retry_completes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let uia = start_uia(&server, json!({ "username": "alice" })).await;
    let session = session_of(&uia);
    let body =
        json!({ "username": "alice", "auth": { "type": "m.login.dummy", "session": session } });
    let result = server.post(REGISTER, None, body).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    // The flow is complete: a retry naming only the session goes through.
    let body = json!({ "username": "alice", "password": PASSWORD, "auth": { "session": session } });
    let (status, body) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], json!("@alice:localhost"));
    server.stop().await;
}

async fn session_only_before_completion_challenges(backend: Backend) {
    let server = TestServer::start(backend).await;
    let uia = start_uia(
        &server,
        json!({ "username": "alice", "password": PASSWORD }),
    )
    .await;
    let session = session_of(&uia);
    let body = json!({ "username": "alice", "password": PASSWORD, "auth": { "session": session } });
    let (status, body) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["session"], json!(session));
    assert_eq!(body["completed"], json!([]));
    server.stop().await;
}

async fn weak_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    let result = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": "short" }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_WEAK_PASSWORD");
    let body = json!({ "username": "alice", "password": "", "auth": { "type": "m.login.dummy" } });
    assert_error(
        &server.post(REGISTER, None, body).await,
        StatusCode::BAD_REQUEST,
        "M_WEAK_PASSWORD",
    );
    let body = json!({ "username": "alice", "password": "x".repeat(600), "auth": { "type": "m.login.dummy" } });
    let (status, body) = server.post(REGISTER, None, body).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an over-long password is refused: {body}"
    );
    let result = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": 12345678 }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    server.stop().await;
}

async fn malformed_auth(backend: Backend) {
    let server = TestServer::start(backend).await;
    let base = json!({ "username": "alice", "password": PASSWORD });
    let with_auth = |auth: Value| {
        let mut body = base.clone();
        body["auth"] = auth;
        body
    };
    let result = server
        .post(REGISTER, None, with_auth(json!("m.login.dummy")))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .post(REGISTER, None, with_auth(json!({ "type": 5 })))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .post(
            REGISTER,
            None,
            with_auth(json!({ "type": "m.login.dummy", "session": 5 })),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    // An unknown session is refused, not silently replaced.
    let result = server
        .post(
            REGISTER,
            None,
            with_auth(json!({ "type": "m.login.dummy", "session": "nope" })),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    // A stage this endpoint does not offer.
    let (status, body) = server
        .post(
            REGISTER,
            None,
            with_auth(json!({ "type": "m.login.password" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errcode"].is_string(), "{body}");
    let (status, body) = server
        .post(
            REGISTER,
            None,
            with_auth(json!({ "type": "org.example.nope" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // None of it created the account.
    let (status, body) = server
        .get(&format!("{AVAILABLE}?username=alice"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

async fn completed_session_not_reusable(backend: Backend) {
    let server = TestServer::start(backend).await;
    let uia = start_uia(
        &server,
        json!({ "username": "first", "password": PASSWORD }),
    )
    .await;
    let session = session_of(&uia);
    let body = json!({ "username": "first", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } });
    let (status, body) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The session died with its registration.
    for auth in [
        json!({ "session": session }),
        json!({ "type": "m.login.dummy", "session": session }),
    ] {
        let body = json!({ "username": "second", "password": PASSWORD, "auth": auth });
        let (status, body) = server.post(REGISTER, None, body).await;
        assert_ne!(status, StatusCode::OK, "{body}");
    }
    server.stop().await;
}

async fn token_flow(backend: Backend) {
    let server = TestServer::start_with(backend, token_mode).await;
    add_token(&server, "goodtoken", Some(1), None).await;

    let uia = start_uia(
        &server,
        json!({ "username": "alice", "password": PASSWORD }),
    )
    .await;
    assert_eq!(
        uia["flows"],
        json!([{ "stages": ["m.login.registration_token"] }]),
        "{uia}"
    );
    let session = session_of(&uia);

    // A wrong token: the UIA body again, with the error.
    let auth =
        json!({ "type": "m.login.registration_token", "token": "badtoken", "session": session });
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": PASSWORD, "auth": auth }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], json!("M_UNAUTHORIZED"), "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body["session"], json!(session));
    assert_eq!(body["completed"], json!([]));
    assert_eq!(
        body["flows"],
        json!([{ "stages": ["m.login.registration_token"] }])
    );

    // The dummy stage is not offered in token mode.
    let auth = json!({ "type": "m.login.dummy", "session": session });
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": PASSWORD, "auth": auth }),
        )
        .await;
    assert_ne!(status, StatusCode::OK, "{body}");

    // A token stage without a token.
    let auth = json!({ "type": "m.login.registration_token", "session": session });
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": PASSWORD, "auth": auth }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The right token.
    let auth =
        json!({ "type": "m.login.registration_token", "token": "goodtoken", "session": session });
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": PASSWORD, "auth": auth }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], json!("@alice:localhost"));

    // One use allowed: it is spent.
    let (status, body) = register_with_token(&server, "bob", "goodtoken").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], json!("M_UNAUTHORIZED"), "{body}");
    let (status, body) = server
        .get(&format!("{VALIDITY}?token=goodtoken"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "valid": false }));
    server.stop().await;
}

async fn token_unlimited_uses(backend: Backend) {
    let server = TestServer::start_with(backend, token_mode).await;
    add_token(&server, "many", None, None).await;
    for name in ["one", "two", "three"] {
        let (status, body) = register_with_token(&server, name, "many").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let stored = server
        .storage()
        .registration_token("many")
        .await
        .unwrap()
        .expect("the token exists");
    assert_eq!(stored.completed, 3);
    server.stop().await;
}

async fn token_expired(backend: Backend) {
    let server = TestServer::start_with(backend, token_mode).await;
    add_token(&server, "stale", None, Some(now_ms() - 1000)).await;
    let (status, body) = register_with_token(&server, "alice", "stale").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], json!("M_UNAUTHORIZED"), "{body}");
    let (status, body) = server.get(&format!("{VALIDITY}?token=stale"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "valid": false }));
    server.stop().await;
}

async fn token_validity(backend: Backend) {
    let server = TestServer::start_with(backend, token_mode).await;
    add_token(&server, "fresh", Some(5), Some(now_ms() + 3_600_000)).await;
    let (status, body) = server.get(&format!("{VALIDITY}?token=fresh"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "valid": true }));
    let (status, body) = server.get(&format!("{VALIDITY}?token=unknown"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "valid": false }));
    let result = server.get(VALIDITY, None).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    // Checking does not spend a use.
    let stored = server
        .storage()
        .registration_token("fresh")
        .await
        .unwrap()
        .expect("the token exists");
    assert_eq!(stored.completed, 0);
    server.stop().await;
}

async fn token_validity_needs_token_mode(backend: Backend) {
    let server = TestServer::start(backend).await;
    add_token(&server, "fresh", None, None).await;
    let result = server.get(&format!("{VALIDITY}?token=fresh"), None).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.stop().await;

    let server = TestServer::start_with(backend, |config| {
        config.registration = RegistrationMode::Closed
    })
    .await;
    let result = server.get(&format!("{VALIDITY}?token=fresh"), None).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.stop().await;
}

async fn refresh_token_on_registration(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({
        "username": "alice",
        "password": PASSWORD,
        "refresh_token": true,
        "auth": { "type": "m.login.dummy" },
    });
    let (status, body) = server.post(REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh = body["refresh_token"].as_str().expect("refresh_token");
    assert!(
        body["expires_in_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{body}"
    );
    let access = body["access_token"].as_str().expect("access_token");
    assert_eq!(server.get(WHOAMI, Some(access)).await.0, StatusCode::OK);

    let (status, body) = server
        .post(
            "/_matrix/client/v3/refresh",
            None,
            json!({ "refresh_token": refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string(), "{body}");
    server.stop().await;
}

async fn registration_rate_limited(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.rate_limits.registration = RateLimit {
            per_second: 0.001,
            burst: 2,
        };
    })
    .await;
    for name in ["one", "two"] {
        let (status, body) = server
            .post(
                REGISTER,
                None,
                json!({ "username": name, "password": PASSWORD }),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let req = server
        .client
        .post(server.url(REGISTER))
        .json(&json!({ "username": "three", "password": PASSWORD }));
    let (status, headers, body) = server.send(req).await;
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
    // The username check shares the limit.
    let result = server
        .get(&format!("{AVAILABLE}?username=four"), None)
        .await;
    assert_error(&result, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    server.stop().await;
}

backend_tests!(
    dummy_flow,
    dummy_stage_without_session,
    username_lowercased,
    taken_username_before_uia,
    invalid_usernames,
    generated_username,
    username_available,
    inhibit_login,
    device_id_and_display_name,
    invalid_device_id_creates_nothing,
    guest_forbidden,
    registration_closed,
    password_missing_after_uia,
    session_only_retry_completes,
    session_only_before_completion_challenges,
    weak_password,
    malformed_auth,
    completed_session_not_reusable,
    token_flow,
    token_unlimited_uses,
    token_expired,
    token_validity,
    token_validity_needs_token_mode,
    refresh_token_on_registration,
    registration_rate_limited,
);
