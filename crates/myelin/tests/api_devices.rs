//! Device management over real HTTP.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DEVICES: &str = "/_matrix/client/v3/devices";
const DELETE_DEVICES: &str = "/_matrix/client/v3/delete_devices";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const PASSWORD: &str = "correct horse";

fn device_path(device_id: &str) -> String {
    format!("{DEVICES}/{device_id}")
}

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

/// Logs in on a chosen device id; returns its access token.
async fn login_device(
    server: &TestServer,
    user: &str,
    device_id: &str,
    name: Option<&str>,
) -> String {
    let mut body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": PASSWORD,
        "device_id": device_id,
    });
    if let Some(name) = name {
        body["initial_device_display_name"] = json!(name);
    }
    let (status, body) = server.post("/_matrix/client/v3/login", None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], json!(device_id));
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn device_ids(server: &TestServer, token: &str) -> Vec<String> {
    let (status, body) = server.get(DEVICES, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut ids: Vec<String> = body["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["device_id"].as_str().expect("device_id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn assert_challenge(result: &(StatusCode, Value)) -> String {
    let (status, body) = result;
    assert_eq!(*status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        body["flows"],
        json!([{ "stages": ["m.login.password"] }]),
        "{body}"
    );
    assert_eq!(body["completed"], json!([]), "{body}");
    assert!(body["params"].is_object(), "{body}");
    body["session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session in {body}"))
        .to_owned()
}

async fn list_and_get(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", PASSWORD).await;
    let phone = login_device(&server, "alice", "PHONE", Some("Alice's phone")).await;
    login_device(&server, "alice", "LAPTOP", None).await;

    let (status, body) = server.get(DEVICES, Some(&phone)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let devices = body["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 3, "{body}");
    for device in devices {
        assert!(device["device_id"].is_string(), "{device}");
        assert_eq!(device["last_seen_ip"], json!("127.0.0.1"), "{device}");
        assert!(
            device["last_seen_ts"].as_i64().is_some_and(|ts| ts > 0),
            "{device}"
        );
    }
    assert!(
        device_ids(&server, &phone)
            .await
            .contains(&"LAPTOP".to_owned())
    );

    let (status, device) = server.get(&device_path("PHONE"), Some(&phone)).await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!(device["device_id"], json!("PHONE"));
    assert_eq!(device["display_name"], json!("Alice's phone"));
    let (status, device) = server.get(&device_path("LAPTOP"), Some(&phone)).await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert!(
        device.get("display_name").is_none_or(Value::is_null),
        "{device}"
    );

    assert_error(
        &server.get(DEVICES, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server.get(&device_path("PHONE"), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    server.stop().await;
}

async fn rename(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("alice", PASSWORD).await;
    let token = login_device(&server, "alice", "LAPTOP", Some("Old name")).await;
    let token = Some(token.as_str());

    let (status, body) = server
        .put(
            &device_path("LAPTOP"),
            token,
            json!({ "display_name": "Work laptop" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let (_, device) = server.get(&device_path("LAPTOP"), token).await;
    assert_eq!(device["display_name"], json!("Work laptop"));

    // No display_name: unchanged.
    let (status, body) = server.put(&device_path("LAPTOP"), token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, device) = server.get(&device_path("LAPTOP"), token).await;
    assert_eq!(device["display_name"], json!("Work laptop"), "{device}");

    // Renaming does not log anyone out, and a login on the device keeps its name.
    login_device(&server, "alice", "LAPTOP", Some("Another name")).await;
    let (_, device) = server.get(&device_path("LAPTOP"), token).await;
    assert_eq!(device["display_name"], json!("Work laptop"), "{device}");
    server.stop().await;
}

async fn rename_bad_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    let path = device_path(&alice.device_id);
    assert_error(
        &server.put(&path, token, json!({ "display_name": 5 })).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server.put(&path, token, json!(["name"])).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let result = server
        .request_raw(Method::PUT, &path, token, b"{not json".to_vec())
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    let (status, body) = server
        .put(&path, token, json!({ "display_name": "x".repeat(1000) }))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an over-long name is refused: {body}"
    );
    assert_error(
        &server
            .put(&path, None, json!({ "display_name": "x" }))
            .await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    server.stop().await;
}

async fn unknown_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let token = Some(alice.access_token.as_str());
    assert_error(
        &server.get(&device_path("NOSUCHDEVICE"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let result = server
        .put(
            &device_path("NOSUCHDEVICE"),
            token,
            json!({ "display_name": "x" }),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let result = server
        .put(&device_path("NOSUCHDEVICE"), token, json!({}))
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Deleting what does not exist succeeds (the spec: "or had been removed previously").
    let body = json!({ "auth": password_auth("alice", PASSWORD, None) });
    let (status, body) = server
        .delete(&device_path("NOSUCHDEVICE"), token, Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        device_ids(&server, &alice.access_token).await,
        vec![alice.device_id.clone()]
    );
    server.stop().await;
}

async fn delete_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let laptop = login_device(&server, "alice", "LAPTOP", None).await;
    let token = Some(alice.access_token.as_str());

    // The first request, without a body: the UIA challenge.
    let session = assert_challenge(&server.delete(&device_path("LAPTOP"), token, None).await);
    // An empty object is the same.
    assert_challenge(
        &server
            .delete(&device_path("LAPTOP"), token, Some(json!({})))
            .await,
    );

    // A wrong password fails the stage and keeps the device.
    let body = json!({ "auth": password_auth("alice", "wrong password", Some(&session)) });
    let (status, body) = server
        .delete(&device_path("LAPTOP"), token, Some(body))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], json!("M_FORBIDDEN"), "{body}");
    assert_eq!(server.get(WHOAMI, Some(&laptop)).await.0, StatusCode::OK);

    let body = json!({ "auth": password_auth("alice", PASSWORD, Some(&session)) });
    let (status, body) = server
        .delete(&device_path("LAPTOP"), token, Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));

    assert_error(
        &server.get(WHOAMI, Some(&laptop)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.get(&device_path("LAPTOP"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_eq!(
        device_ids(&server, &alice.access_token).await,
        vec![alice.device_id.clone()]
    );
    // Malformed bodies.
    let result = server
        .request_raw(
            Method::DELETE,
            &device_path("X"),
            token,
            b"{not json".to_vec(),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    let result = server
        .delete(&device_path("X"), token, Some(json!({ "auth": 5 })))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    assert_error(
        &server.delete(&device_path("X"), None, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    server.stop().await;
}

async fn delete_own_current_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let body = json!({ "auth": password_auth("alice", PASSWORD, None) });
    let (status, body) = server
        .delete(
            &device_path(&alice.device_id),
            Some(&alice.access_token),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &server.get(WHOAMI, Some(&alice.access_token)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    server.stop().await;
}

async fn delete_devices_bulk(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    let one = login_device(&server, "alice", "ONE", None).await;
    let two = login_device(&server, "alice", "TWO", None).await;
    let three = login_device(&server, "alice", "THREE", None).await;
    let token = Some(alice.access_token.as_str());

    let request = json!({ "devices": ["ONE", "TWO", "NEVER_EXISTED"] });
    let session = assert_challenge(&server.post(DELETE_DEVICES, token, request.clone()).await);
    let mut body = request.clone();
    body["auth"] = password_auth("alice", "wrong password", Some(&session));
    let (status, response) = server.post(DELETE_DEVICES, token, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{response}");
    assert_eq!(response["errcode"], json!("M_FORBIDDEN"), "{response}");
    assert_eq!(server.get(WHOAMI, Some(&one)).await.0, StatusCode::OK);

    let mut body = request;
    body["auth"] = password_auth("alice", PASSWORD, Some(&session));
    let (status, response) = server.post(DELETE_DEVICES, token, body).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response, json!({}));
    for t in [&one, &two] {
        assert_error(
            &server.get(WHOAMI, Some(t)).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
    }
    assert_eq!(server.get(WHOAMI, Some(&three)).await.0, StatusCode::OK);
    assert_eq!(
        server.get(WHOAMI, Some(&alice.access_token)).await.0,
        StatusCode::OK
    );
    let mut expected = vec![alice.device_id.clone(), "THREE".to_owned()];
    expected.sort();
    assert_eq!(device_ids(&server, &alice.access_token).await, expected);

    // Bad input.
    let body = json!({ "auth": password_auth("alice", PASSWORD, None) });
    assert_error(
        &server.post(DELETE_DEVICES, token, body).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let body = json!({ "devices": "THREE", "auth": password_auth("alice", PASSWORD, None) });
    assert_error(
        &server.post(DELETE_DEVICES, token, body).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let body = json!({ "devices": [1, 2] });
    assert_error(
        &server.post(DELETE_DEVICES, token, body).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let result = server
        .post(DELETE_DEVICES, None, json!({ "devices": [] }))
        .await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    assert_eq!(server.get(WHOAMI, Some(&three)).await.0, StatusCode::OK);
    server.stop().await;
}

async fn other_users_devices(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", PASSWORD).await;
    server.register("bob", PASSWORD).await;
    let bob = login_device(&server, "bob", "BOBDEVICE", Some("Bob's phone")).await;
    let token = Some(alice.access_token.as_str());

    assert!(
        !device_ids(&server, &alice.access_token)
            .await
            .contains(&"BOBDEVICE".to_owned())
    );
    assert_error(
        &server.get(&device_path("BOBDEVICE"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let result = server
        .put(
            &device_path("BOBDEVICE"),
            token,
            json!({ "display_name": "pwned" }),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Alice's deletions never reach Bob's device.
    let body = json!({ "auth": password_auth("alice", PASSWORD, None) });
    let (status, body) = server
        .delete(&device_path("BOBDEVICE"), token, Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = json!({ "devices": ["BOBDEVICE"], "auth": password_auth("alice", PASSWORD, None) });
    let (status, body) = server.post(DELETE_DEVICES, token, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_eq!(server.get(WHOAMI, Some(&bob)).await.0, StatusCode::OK);
    let (status, device) = server.get(&device_path("BOBDEVICE"), Some(&bob)).await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!(device["display_name"], json!("Bob's phone"));
    server.stop().await;
}

backend_tests!(
    list_and_get,
    rename,
    rename_bad_input,
    unknown_device,
    delete_device,
    delete_own_current_device,
    delete_devices_bulk,
    other_users_devices,
);
