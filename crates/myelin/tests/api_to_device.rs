//! Send-to-device messaging over HTTP: delivery in `/sync` exactly once,
//! acknowledged by syncing with the next token, idempotent transactions,
//! `*` for every device, paging, long-poll wake-ups, deletion with the
//! device, and nothing lost or repeated across restarts.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const V3: &str = "/_matrix/client/v3";

backend_tests!(
    delivered_once_and_acknowledged_by_the_next_token,
    transactions_are_idempotent_and_star_means_every_device,
    more_than_one_response_holds_is_paged,
    long_polls_wake_for_a_message,
    deleting_a_device_drops_its_inbox,
    nothing_lost_or_repeated_across_restarts,
    bad_requests_are_refused,
);

async fn send(server: &TestServer, s: &Session, txn: &str, messages: Value) {
    let (status, body) = server
        .put(
            &format!("{V3}/sendToDevice/m.test/{txn}"),
            Some(&s.access_token),
            json!({ "messages": messages }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
}

/// A sync of `s` (`since` a token or none); returns the response.
async fn sync(server: &TestServer, s: &Session, since: Option<&str>, timeout_ms: u64) -> Value {
    let mut path = format!("{V3}/sync?timeout={timeout_ms}");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    let (status, body) = server.get(&path, Some(&s.access_token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn to_device(body: &Value) -> Vec<Value> {
    body["to_device"]["events"]
        .as_array()
        .expect("to_device.events")
        .clone()
}

fn next(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

async fn second_device(server: &TestServer, user: &str, password: &str) -> Session {
    let (status, body) = server.login(user, password).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Session {
        user_id: body["user_id"].as_str().expect("user_id").to_owned(),
        access_token: body["access_token"].as_str().expect("token").to_owned(),
        device_id: body["device_id"].as_str().expect("device").to_owned(),
        password: password.to_owned(),
    }
}

async fn delivered_once_and_acknowledged_by_the_next_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let first = sync(&server, &bob, None, 0).await;
    assert!(to_device(&first).is_empty());
    let t0 = next(&first);

    send(
        &server,
        &alice,
        "t1",
        json!({ bob.user_id.clone(): { bob.device_id.clone(): { "secret": 1 } } }),
    )
    .await;
    let got = sync(&server, &bob, Some(&t0), 0).await;
    assert_eq!(
        to_device(&got),
        vec![json!({ "sender": alice.user_id, "type": "m.test", "content": { "secret": 1 } })]
    );
    // The response was lost: the same token gets the message again.
    let again = sync(&server, &bob, Some(&t0), 0).await;
    assert_eq!(to_device(&again).len(), 1, "{again}");
    // Syncing with the next token acknowledges it: never again.
    let t1 = next(&again);
    let after = sync(&server, &bob, Some(&t1), 0).await;
    assert!(to_device(&after).is_empty(), "{after}");
    let stored = server
        .storage()
        .to_device_messages(&bob.user_id, &bob.device_id, i64::MIN, i64::MAX, 10)
        .await
        .expect("inbox");
    assert!(stored.is_empty(), "acknowledged messages are deleted");
    // Alice's own devices got nothing.
    assert!(to_device(&sync(&server, &alice, None, 0).await).is_empty());
    server.stop().await;
}

async fn transactions_are_idempotent_and_star_means_every_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let phone = second_device(&server, "bob", "password-bob").await;
    let messages = json!({ bob.user_id.clone(): { "*": { "n": 1 } } });
    send(&server, &alice, "same", messages.clone()).await;
    send(&server, &alice, "same", messages).await;
    for device in [&bob, &phone] {
        let body = sync(&server, device, None, 0).await;
        assert_eq!(to_device(&body).len(), 1, "{body}");
    }
    // A named device besides `*` gets its own content, once.
    send(
        &server,
        &alice,
        "mixed",
        json!({ bob.user_id.clone(): { "*": { "n": 2 }, phone.device_id.clone(): { "n": 3 },
                                       "NOSUCHDEVICE": { "n": 4 } },
                "@nobody:localhost": { "*": { "n": 5 } } }),
    )
    .await;
    let body = sync(&server, &phone, None, 0).await;
    let contents: Vec<Value> = to_device(&body)
        .iter()
        .map(|e| e["content"].clone())
        .collect();
    assert_eq!(contents, vec![json!({ "n": 1 }), json!({ "n": 3 })]);
    server.stop().await;
}

async fn more_than_one_response_holds_is_paged(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let total = 130;
    for i in 0..total {
        send(
            &server,
            &alice,
            &format!("t{i}"),
            json!({ bob.user_id.clone(): { bob.device_id.clone(): { "i": i } } }),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    for _ in 0..5 {
        let body = sync(&server, &bob, since.as_deref(), 0).await;
        let events = to_device(&body);
        assert!(events.len() <= 100, "one response carries at most 100");
        seen.extend(
            events
                .iter()
                .map(|e| e["content"]["i"].as_i64().expect("i")),
        );
        since = Some(next(&body));
    }
    assert_eq!(
        seen,
        (0..total).collect::<Vec<i64>>(),
        "in order, each once"
    );
    server.stop().await;
}

async fn long_polls_wake_for_a_message(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let token = next(&sync(&server, &bob, None, 0).await);
    let poll = sync(&server, &bob, Some(&token), 20_000);
    let message = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(
            &server,
            &alice,
            "wake",
            json!({ bob.user_id.clone(): { bob.device_id.clone(): { "hi": true } } }),
        )
        .await;
    };
    let (body, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(poll, message)
    })
    .await
    .expect("the long-poll returns when the message arrives");
    assert_eq!(to_device(&body).len(), 1, "{body}");
    server.stop().await;
}

async fn deleting_a_device_drops_its_inbox(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let phone = second_device(&server, "bob", "password-bob").await;
    send(
        &server,
        &alice,
        "t",
        json!({ bob.user_id.clone(): { phone.device_id.clone(): { "x": 1 } } }),
    )
    .await;
    let (status, body) = server
        .post(
            &format!("{V3}/logout"),
            Some(&phone.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let left = server
        .storage()
        .to_device_messages(&bob.user_id, &phone.device_id, i64::MIN, i64::MAX, 10)
        .await
        .expect("inbox");
    assert!(left.is_empty(), "{left:?}");
    server.stop().await;
}

async fn nothing_lost_or_repeated_across_restarts(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let t0 = next(&sync(&server, &bob, None, 0).await);
    send(
        &server,
        &alice,
        "before",
        json!({ bob.user_id.clone(): { bob.device_id.clone(): { "n": 1 } } }),
    )
    .await;
    server.restart().await;
    // Kept across the restart.
    let body = sync(&server, &bob, Some(&t0), 0).await;
    assert_eq!(to_device(&body).len(), 1, "{body}");
    let t1 = next(&body);
    // Acknowledged, then a restart: not delivered again, and a message sent
    // now gets a position past the token the client holds.
    let body = sync(&server, &bob, Some(&t1), 0).await;
    assert!(to_device(&body).is_empty(), "{body}");
    let t2 = next(&body);
    server.restart().await;
    assert!(to_device(&sync(&server, &bob, Some(&t2), 0).await).is_empty());
    send(
        &server,
        &alice,
        "after",
        json!({ bob.user_id.clone(): { bob.device_id.clone(): { "n": 2 } } }),
    )
    .await;
    let body = sync(&server, &bob, Some(&t2), 0).await;
    let contents: Vec<Value> = to_device(&body)
        .iter()
        .map(|e| e["content"].clone())
        .collect();
    assert_eq!(contents, vec![json!({ "n": 2 })], "{body}");
    server.stop().await;
}

async fn bad_requests_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let path = format!("{V3}/sendToDevice/m.test/t1");
    let result = server
        .put(&path, Some(&alice.access_token), json!({ "nope": {} }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .put(
            &path,
            Some(&alice.access_token),
            json!({ "messages": { "bob": { "*": {} } } }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = server
        .put(
            &path,
            Some(&alice.access_token),
            json!({ "messages": { "@bob:localhost": { "D": "not an object" } } }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server.put(&path, None, json!({ "messages": {} })).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    server.stop().await;
}
