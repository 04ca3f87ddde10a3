//! Presence over HTTP: setting and reading it, who may, and who hears of
//! it through `/sync`.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const V3: &str = "/_matrix/client/v3";

fn status_url(user_id: &str) -> String {
    format!("{V3}/presence/{user_id}/status")
}

/// alice's public room, which bob joined; carol shares no room with them.
async fn setup(server: &TestServer) -> (Session, Session, Session) {
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let (status, body) = server
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.access_token),
            json!({ "preset": "public_chat" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/join"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (alice, bob, carol)
}

/// The `m.presence` events of a sync response sent by `sender`.
fn presence_of<'a>(body: &'a Value, sender: &str) -> Vec<&'a Value> {
    body["presence"]["events"]
        .as_array()
        .expect("presence.events")
        .iter()
        .filter(|e| e["sender"] == sender)
        .collect()
}

async fn sync(server: &TestServer, s: &Session, query: &str) -> Value {
    let (status, body) = server
        .get(&format!("{V3}/sync?{query}"), Some(&s.access_token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn set_and_get(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, carol) = setup(&server).await;
    let a = Some(alice.access_token.as_str());

    // Never set: offline.
    let (status, body) = server.get(&status_url(&alice.user_id), a).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["presence"], "offline");

    let (status, body) = server
        .put(
            &status_url(&alice.user_id),
            a,
            json!({ "presence": "unavailable", "status_msg": "lunch" }),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = server.get(&status_url(&alice.user_id), a).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["presence"], "unavailable");
    assert_eq!(body["status_msg"], "lunch");
    assert_eq!(body["currently_active"], false);
    assert!(body["last_active_ago"].as_i64().unwrap() >= 0);

    // A room-mate sees it; a stranger may not; an unknown user is 404.
    let (status, body) = server
        .get(&status_url(&alice.user_id), Some(&bob.access_token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["presence"], "unavailable");
    let stranger = server
        .get(&status_url(&alice.user_id), Some(&carol.access_token))
        .await;
    assert_error(&stranger, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let unknown = server.get(&status_url("@nobody:localhost"), a).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Errors of PUT.
    let other = server
        .put(
            &status_url(&bob.user_id),
            a,
            json!({ "presence": "online" }),
        )
        .await;
    assert_error(&other, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let invalid = server
        .put(
            &status_url(&alice.user_id),
            a,
            json!({ "presence": "busy" }),
        )
        .await;
    assert_error(&invalid, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let missing = server
        .put(&status_url(&alice.user_id), a, json!({ "status_msg": "x" }))
        .await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let bad_sync = server.get(&format!("{V3}/sync?set_presence=busy"), a).await;
    assert_error(&bad_sync, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    server.stop().await;
}

async fn sync_carries_presence(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, carol) = setup(&server).await;

    let bob_first = sync(&server, &bob, "").await;
    let bob_since = bob_first["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(
        bob_since.split('_').count(),
        7,
        "the token has presence, to-device and device lists"
    );
    let carol_first = sync(&server, &carol, "").await;
    let carol_since = carol_first["next_batch"].as_str().unwrap().to_owned();

    // bob long-polls; alice's change wakes him.
    let started = Instant::now();
    let query = format!("since={bob_since}&timeout=10000");
    let poll = sync(&server, &bob, &query);
    let change = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = server
            .put(
                &status_url(&alice.user_id),
                Some(&alice.access_token),
                json!({ "presence": "online", "status_msg": "here" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    };
    let (body, ()) = tokio::join!(poll, change);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the long-poll woke"
    );
    let events = presence_of(&body, &alice.user_id);
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "m.presence");
    assert_eq!(events[0]["content"]["presence"], "online");
    assert_eq!(events[0]["content"]["status_msg"], "here");
    assert_eq!(events[0]["content"]["currently_active"], true);
    assert!(events[0]["content"]["last_active_ago"].is_i64());
    let bob_since = body["next_batch"].as_str().unwrap().to_owned();

    // The stranger hears nothing of alice.
    let body = sync(&server, &carol, &format!("since={carol_since}&timeout=500")).await;
    assert!(presence_of(&body, &alice.user_id).is_empty(), "{body}");

    // The filter's presence section applies.
    let filter = r#"{"presence":{"not_senders":["@alice:localhost"]}}"#;
    let body = sync(&server, &bob, &format!("filter={}", urlencode(filter))).await;
    assert!(presence_of(&body, &alice.user_id).is_empty(), "{body}");

    // set_presence=unavailable through alice's own /sync reaches bob.
    sync(&server, &alice, "set_presence=unavailable").await;
    let body = sync(&server, &bob, &format!("since={bob_since}&timeout=5000")).await;
    let events = presence_of(&body, &alice.user_id);
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["content"]["presence"], "unavailable");
    assert_eq!(events[0]["content"]["status_msg"], "here", "kept");

    // An old four-field token still works.
    let body = sync(&server, &bob, "since=s0_0_0_0").await;
    assert_eq!(presence_of(&body, &alice.user_id).len(), 1, "{body}");

    server.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

backend_tests!(set_and_get, sync_carries_presence);
