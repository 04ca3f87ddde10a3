//! Account management over real HTTP: password change, deactivation,
//! third-party ids, and how UIA sessions are bound.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD_PATH: &str = "/_matrix/client/v3/account/password";
const DEACTIVATE: &str = "/_matrix/client/v3/account/deactivate";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const PASSWORD: &str = "correct horse";
const NEW_PASSWORD: &str = "battery staple";

fn password_auth(user: &str, password: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    });
    if let Some(session) = session {
        auth["session"] = json!(session);
    }
    auth
}

/// A second device of the same account.
async fn second_session(server: &TestServer, user: &str, password: &str) -> String {
    let (status, body) = server.login(user, password).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn assert_challenge(result: &(StatusCode, Value), flows: Value) -> String {
    let (status, body) = result;
    assert_eq!(*status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["flows"], flows, "{body}");
    assert!(body["params"].is_object(), "{body}");
    assert_eq!(body["completed"], json!([]), "{body}");
    body["session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session in {body}"))
        .to_owned()
}

async fn whoami_status(server: &TestServer, token: &str) -> StatusCode {
    server.get(WHOAMI, Some(token)).await.0
}

async fn change_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let other = second_session(&server, "alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());

    let result = server
        .post(
            PASSWORD_PATH,
            token,
            json!({ "new_password": NEW_PASSWORD }),
        )
        .await;
    let session = assert_challenge(&result, json!([{ "stages": ["m.login.password"] }]));

    // A wrong password: the UIA body with the error, and nothing changed.
    let body = json!({ "new_password": NEW_PASSWORD, "auth": password_auth("alice", "wrong password", Some(&session)) });
    let (status, body) = server.post(PASSWORD_PATH, token, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], json!("M_FORBIDDEN"), "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body["session"], json!(session));
    assert_eq!(body["completed"], json!([]));
    assert_eq!(server.login("alice", PASSWORD).await.0, StatusCode::OK);

    let body = json!({ "new_password": NEW_PASSWORD, "auth": password_auth("alice", PASSWORD, Some(&session)) });
    let (status, body) = server.post(PASSWORD_PATH, token, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));

    assert_error(
        &server.login("alice", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(server.login("alice", NEW_PASSWORD).await.0, StatusCode::OK);
    // logout_devices defaults to true: the other device is gone, this one stays.
    assert_eq!(
        whoami_status(&server, &alice.access_token).await,
        StatusCode::OK
    );
    assert_error(
        &server.get(WHOAMI, Some(&other)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    server.stop().await;
}

async fn change_password_keeping_devices(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let other = second_session(&server, "alice", PASSWORD).await;
    let body = json!({
        "new_password": NEW_PASSWORD,
        "logout_devices": false,
        "auth": password_auth("@alice:localhost", PASSWORD, None),
    });
    let (status, body) = server
        .post(PASSWORD_PATH, Some(&alice.access_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        whoami_status(&server, &alice.access_token).await,
        StatusCode::OK
    );
    assert_eq!(whoami_status(&server, &other).await, StatusCode::OK);
    let (status, devices) = server
        .get("/_matrix/client/v3/devices", Some(&alice.access_token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(2),
        "{devices}"
    );
    assert_eq!(server.login("alice", NEW_PASSWORD).await.0, StatusCode::OK);
    server.stop().await;
}

async fn change_password_bad_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let result = server
        .post(PASSWORD_PATH, None, json!({ "new_password": NEW_PASSWORD }))
        .await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let body = json!({ "new_password": "short", "auth": password_auth("alice", PASSWORD, None) });
    assert_error(
        &server.post(PASSWORD_PATH, token, body).await,
        StatusCode::BAD_REQUEST,
        "M_WEAK_PASSWORD",
    );
    let body = json!({ "auth": password_auth("alice", PASSWORD, None) });
    assert_error(
        &server.post(PASSWORD_PATH, token, body).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let body = json!({ "new_password": 12345678, "auth": password_auth("alice", PASSWORD, None) });
    assert_error(
        &server.post(PASSWORD_PATH, token, body).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let body = json!({ "new_password": NEW_PASSWORD, "logout_devices": "yes" });
    assert_error(
        &server.post(PASSWORD_PATH, token, body).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    // The password stage without a password.
    let body = json!({ "new_password": NEW_PASSWORD, "auth": { "type": "m.login.password" } });
    let (status, body) = server.post(PASSWORD_PATH, token, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Nothing changed.
    assert_eq!(server.login("alice", PASSWORD).await.0, StatusCode::OK);
    server.stop().await;
}

async fn password_stage_names_the_caller(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    server.register("bob", "bobs password").await;
    // Bob's own credentials do not authorise a change to Alice's account.
    let body = json!({ "new_password": NEW_PASSWORD, "auth": password_auth("bob", "bobs password", None) });
    let (status, body) = server
        .post(PASSWORD_PATH, Some(&alice.access_token), body)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], json!("M_FORBIDDEN"), "{body}");
    assert_eq!(server.login("alice", PASSWORD).await.0, StatusCode::OK);
    assert_eq!(server.login("bob", "bobs password").await.0, StatusCode::OK);
    server.stop().await;
}

async fn deactivate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let other = second_session(&server, "alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());

    let result = server.post(DEACTIVATE, token, json!({})).await;
    let session = assert_challenge(&result, json!([{ "stages": ["m.login.password"] }]));
    let body = json!({ "auth": password_auth("alice", "wrong password", Some(&session)) });
    let (status, body) = server.post(DEACTIVATE, token, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], json!("M_FORBIDDEN"), "{body}");
    assert_eq!(
        whoami_status(&server, &alice.access_token).await,
        StatusCode::OK
    );

    let body = json!({ "auth": password_auth("alice", PASSWORD, Some(&session)) });
    let (status, body) = server.post(DEACTIVATE, token, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["id_server_unbind_result"].is_string(), "{body}");

    for t in [&alice.access_token, &other] {
        assert_error(
            &server.get(WHOAMI, Some(t)).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
    }
    assert_error(
        &server.login("alice", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_USER_DEACTIVATED",
    );
    let result = server
        .get("/_matrix/client/v3/profile/@alice:localhost", None)
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // The user id is never handed out again.
    let result = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    // And the directory no longer lists it.
    let bob = server.register("bob", PASSWORD).await;
    let (status, found) = server
        .post(
            "/_matrix/client/v3/user_directory/search",
            Some(&bob.access_token),
            json!({ "search_term": "alice" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["results"], json!([]), "{found}");
    server.stop().await;
}

async fn deactivate_bad_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    assert_error(
        &server.post(DEACTIVATE, None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let result = server
        .post(
            DEACTIVATE,
            Some(&alice.access_token),
            json!({ "auth": "password" }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .post(DEACTIVATE, Some(&alice.access_token), json!([]))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    assert_eq!(
        whoami_status(&server, &alice.access_token).await,
        StatusCode::OK
    );
    server.stop().await;
}

async fn threepids(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let (status, body) = server
        .get("/_matrix/client/v3/account/3pid", Some(&alice.access_token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "threepids": [] }));
    let result = server.get("/_matrix/client/v3/account/3pid", None).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    server.stop().await;
}

async fn uia_session_bound_to_endpoint(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let result = server
        .post(
            PASSWORD_PATH,
            token,
            json!({ "new_password": NEW_PASSWORD }),
        )
        .await;
    let session = assert_challenge(&result, json!([{ "stages": ["m.login.password"] }]));

    // The password-change session does not authorise a deactivation...
    let body = json!({ "auth": password_auth("alice", PASSWORD, Some(&session)) });
    let (status, body) = server.post(DEACTIVATE, token, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], json!("M_UNKNOWN"), "{body}");
    assert_eq!(
        whoami_status(&server, &alice.access_token).await,
        StatusCode::OK
    );
    // ...nor a device deletion...
    let body = json!({ "devices": [alice.device_id], "auth": password_auth("alice", PASSWORD, Some(&session)) });
    let (status, body) = server
        .post("/_matrix/client/v3/delete_devices", token, body)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        whoami_status(&server, &alice.access_token).await,
        StatusCode::OK
    );
    // ...nor a registration.
    let body = json!({ "username": "mallory", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } });
    let (status, body) = server.post("/_matrix/client/v3/register", None, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // It still works where it began.
    let body = json!({ "new_password": NEW_PASSWORD, "auth": password_auth("alice", PASSWORD, Some(&session)) });
    let (status, body) = server.post(PASSWORD_PATH, token, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // And, used up, not again.
    let body = json!({ "new_password": "third password", "auth": password_auth("alice", NEW_PASSWORD, Some(&session)) });
    let (status, body) = server.post(PASSWORD_PATH, token, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(server.login("alice", NEW_PASSWORD).await.0, StatusCode::OK);
    server.stop().await;
}

async fn uia_session_bound_to_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let bob = server.register("bob", "bobs password").await;
    let result = server
        .post(DEACTIVATE, Some(&alice.access_token), json!({}))
        .await;
    let session = assert_challenge(&result, json!([{ "stages": ["m.login.password"] }]));

    // Bob cannot continue Alice's session, even with his own password.
    let body = json!({ "auth": password_auth("bob", "bobs password", Some(&session)) });
    let (status, body) = server.post(DEACTIVATE, Some(&bob.access_token), body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], json!("M_UNKNOWN"), "{body}");
    assert_eq!(
        whoami_status(&server, &bob.access_token).await,
        StatusCode::OK
    );
    assert_eq!(
        whoami_status(&server, &alice.access_token).await,
        StatusCode::OK
    );

    // Nor use it elsewhere, with Alice's password.
    let body = json!({ "new_password": NEW_PASSWORD, "auth": password_auth("alice", PASSWORD, Some(&session)) });
    let (status, body) = server
        .post(PASSWORD_PATH, Some(&bob.access_token), body)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(server.login("bob", "bobs password").await.0, StatusCode::OK);

    // Alice still can.
    let body = json!({ "auth": password_auth("alice", PASSWORD, Some(&session)) });
    let (status, body) = server
        .post(DEACTIVATE, Some(&alice.access_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        whoami_status(&server, &bob.access_token).await,
        StatusCode::OK
    );
    server.stop().await;
}

async fn uia_session_expires(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.auth.uia_session_lifetime_ms = 1).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let result = server
        .post(
            PASSWORD_PATH,
            token,
            json!({ "new_password": NEW_PASSWORD }),
        )
        .await;
    let session = assert_challenge(&result, json!([{ "stages": ["m.login.password"] }]));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let body = json!({ "new_password": NEW_PASSWORD, "auth": password_auth("alice", PASSWORD, Some(&session)) });
    let result = server.post(PASSWORD_PATH, token, body).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    assert_eq!(server.login("alice", PASSWORD).await.0, StatusCode::OK);
    server.stop().await;
}

backend_tests!(
    change_password,
    change_password_keeping_devices,
    change_password_bad_input,
    password_stage_names_the_caller,
    deactivate,
    deactivate_bad_input,
    threepids,
    uia_session_bound_to_endpoint,
    uia_session_bound_to_user,
    uia_session_expires,
);
