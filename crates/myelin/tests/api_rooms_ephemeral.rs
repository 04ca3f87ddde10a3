//! Typing notifications, receipts and read markers over HTTP: what they
//! store, whom they wake, and the errors of each.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const V3: &str = "/_matrix/client/v3";

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~' | b'!' | b'@' | b'$' | b':')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn create_room(server: &TestServer, token: &str, body: Value) -> String {
    let (status, resp) = server
        .post(&format!("{V3}/createRoom"), Some(token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom failed: {resp}");
    resp["room_id"].as_str().expect("room_id").to_owned()
}

async fn say(server: &TestServer, s: &Session, room: &str, text: &str) -> String {
    let txn: u64 = rand::random();
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/t{txn}"),
            Some(&s.access_token),
            json!({ "msgtype": "m.text", "body": text }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "send failed: {body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn join(server: &TestServer, s: &Session, room: &str) {
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/join"),
            Some(&s.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "join failed: {body}");
}

/// A public room of alice's that bob joined.
async fn setup(server: &TestServer) -> (Session, Session, Session, String) {
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let room = create_room(
        server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    join(server, &bob, &room).await;
    (alice, bob, carol, room)
}

/// Waits (briefly) for a notifier wake-up.
async fn woken(rx: &mut tokio::sync::watch::Receiver<u64>) -> bool {
    tokio::time::timeout(Duration::from_secs(2), rx.changed())
        .await
        .is_ok_and(|r| r.is_ok())
}

fn typing_url(room: &str, user_id: &str) -> String {
    format!("{V3}/rooms/{room}/typing/{}", enc(user_id))
}

async fn typing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, carol, room) = setup(&server).await;
    let a = Some(alice.access_token.as_str());

    let mut bob_rx = server.rooms().notifier().subscribe(&bob.user_id);
    let carol_rx = server.rooms().notifier().subscribe(&carol.user_id);
    let (status, body) = server
        .put(
            &typing_url(&room, &alice.user_id),
            a,
            json!({ "typing": true, "timeout": 30000 }),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert!(woken(&mut bob_rx).await, "the room's members hear of it");
    assert!(!carol_rx.has_changed().unwrap(), "outsiders do not");

    // Repeating it changes nothing; stopping wakes the room again.
    let (status, _) = server
        .put(
            &typing_url(&room, &alice.user_id),
            a,
            json!({ "typing": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "timeout is optional");
    let (status, body) = server
        .put(
            &typing_url(&room, &alice.user_id),
            a,
            json!({ "typing": false }),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert!(woken(&mut bob_rx).await);

    // Errors.
    let other_user = server
        .put(
            &typing_url(&room, &bob.user_id),
            a,
            json!({ "typing": true, "timeout": 1000 }),
        )
        .await;
    assert_error(&other_user, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let not_joined = server
        .put(
            &typing_url(&room, &carol.user_id),
            Some(&carol.access_token),
            json!({ "typing": true, "timeout": 1000 }),
        )
        .await;
    assert_error(&not_joined, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let unknown_room = server
        .put(
            &typing_url("!nope:localhost", &alice.user_id),
            a,
            json!({ "typing": true }),
        )
        .await;
    assert_error(&unknown_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let no_typing = server
        .put(
            &typing_url(&room, &alice.user_id),
            a,
            json!({ "timeout": 1000 }),
        )
        .await;
    assert_error(&no_typing, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let bad_timeout = server
        .put(
            &typing_url(&room, &alice.user_id),
            a,
            json!({ "typing": true, "timeout": -5 }),
        )
        .await;
    assert_error(&bad_timeout, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let no_token = server
        .put(
            &typing_url(&room, &alice.user_id),
            None,
            json!({ "typing": true }),
        )
        .await;
    assert_error(&no_token, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    server.stop().await;
}

fn receipt_url(room: &str, receipt_type: &str, event_id: &str) -> String {
    format!("{V3}/rooms/{room}/receipt/{receipt_type}/{}", enc(event_id))
}

/// The receipts stored for a room, as `(user, type, thread, event)`.
async fn stored_receipts(
    server: &TestServer,
    room: &str,
) -> Vec<(String, String, Option<String>, String)> {
    let record = server
        .storage()
        .room(room)
        .await
        .unwrap()
        .expect("the room exists");
    let mut receipts: Vec<_> = server
        .storage()
        .room_receipts(record.room_nid)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.user_id, r.receipt_type, r.thread_id, r.event_id))
        .collect();
    receipts.sort();
    receipts
}

async fn fully_read(server: &TestServer, s: &Session, room: &str) -> (StatusCode, Value) {
    server
        .get(
            &format!(
                "{V3}/user/{}/rooms/{room}/account_data/m.fully_read",
                enc(&s.user_id)
            ),
            Some(&s.access_token),
        )
        .await
}

async fn receipts(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, carol, room) = setup(&server).await;
    let first = say(&server, &alice, &room, "one").await;
    let second = say(&server, &alice, &room, "two").await;
    let b = Some(bob.access_token.as_str());

    // A public receipt wakes the room; a private one only its owner.
    let mut alice_rx = server.rooms().notifier().subscribe(&alice.user_id);
    let (status, body) = server
        .post(&receipt_url(&room, "m.read", &first), b, json!({}))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert!(woken(&mut alice_rx).await, "alice hears of bob's receipt");
    let alice_rx = server.rooms().notifier().subscribe(&alice.user_id);
    let mut bob_rx = server.rooms().notifier().subscribe(&bob.user_id);
    let (status, _) = server
        .post(&receipt_url(&room, "m.read.private", &second), b, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(woken(&mut bob_rx).await);
    assert!(
        !alice_rx.has_changed().unwrap(),
        "a private receipt is bob's alone"
    );
    // Threaded receipts, and a body-less request.
    let (status, _) = server
        .post(
            &receipt_url(&room, "m.read", &second),
            b,
            json!({ "thread_id": "main" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .request(
            reqwest::Method::POST,
            &receipt_url(&room, "m.read", &second),
            b,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "no body: {body}");

    assert_eq!(
        stored_receipts(&server, &room).await,
        vec![
            (bob.user_id.clone(), "m.read".into(), None, second.clone()),
            (
                bob.user_id.clone(),
                "m.read".into(),
                Some("main".into()),
                second.clone()
            ),
            (
                bob.user_id.clone(),
                "m.read.private".into(),
                None,
                second.clone()
            ),
        ],
        "one receipt per type and thread, the latest"
    );

    // m.fully_read through this endpoint moves the read marker.
    let (status, _) = server
        .post(&receipt_url(&room, "m.fully_read", &first), b, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fully_read(&server, &bob, &room).await,
        (StatusCode::OK, json!({ "event_id": first }))
    );
    assert_eq!(
        stored_receipts(&server, &room).await.len(),
        3,
        "a marker is not a receipt"
    );

    // Errors.
    let bad_type = server
        .post(&receipt_url(&room, "m.bogus", &first), b, json!({}))
        .await;
    assert_error(&bad_type, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    for thread_id in [json!(5), json!(""), json!("not-an-event")] {
        let bad_thread = server
            .post(
                &receipt_url(&room, "m.read", &first),
                b,
                json!({ "thread_id": thread_id }),
            )
            .await;
        assert_error(&bad_thread, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    let marker_thread = server
        .post(
            &receipt_url(&room, "m.fully_read", &first),
            b,
            json!({ "thread_id": "main" }),
        )
        .await;
    assert_error(&marker_thread, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let unknown_event = server
        .post(&receipt_url(&room, "m.read", "$nope"), b, json!({}))
        .await;
    assert_error(&unknown_event, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let other_room = create_room(&server, &alice.access_token, json!({})).await;
    let elsewhere = say(&server, &alice, &other_room, "elsewhere").await;
    let wrong_room = server
        .post(&receipt_url(&room, "m.read", &elsewhere), b, json!({}))
        .await;
    assert_error(&wrong_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let not_joined = server
        .post(
            &receipt_url(&room, "m.read", &first),
            Some(&carol.access_token),
            json!({}),
        )
        .await;
    assert_error(&not_joined, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let unknown_room = server
        .post(
            &receipt_url("!nope:localhost", "m.read", &first),
            b,
            json!({}),
        )
        .await;
    assert_error(&unknown_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    server.stop().await;
}

async fn receipt_for_invisible_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({
            "preset": "public_chat",
            "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }],
        }),
    )
    .await;
    let before = say(&server, &alice, &room, "before bob").await;
    join(&server, &bob, &room).await;
    let hidden = server
        .post(
            &receipt_url(&room, "m.read", &before),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_error(&hidden, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let after = say(&server, &alice, &room, "after bob").await;
    let (status, _) = server
        .post(
            &receipt_url(&room, "m.read", &after),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

async fn read_markers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, carol, room) = setup(&server).await;
    let first = say(&server, &alice, &room, "one").await;
    let second = say(&server, &alice, &room, "two").await;
    let url = format!("{V3}/rooms/{room}/read_markers");
    let b = Some(bob.access_token.as_str());

    let mut bob_rx = server.rooms().notifier().subscribe(&bob.user_id);
    let (status, body) = server
        .post(
            &url,
            b,
            json!({ "m.fully_read": first, "m.read": second, "m.read.private": first }),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert!(woken(&mut bob_rx).await);
    assert_eq!(
        fully_read(&server, &bob, &room).await,
        (StatusCode::OK, json!({ "event_id": first }))
    );
    assert_eq!(
        stored_receipts(&server, &room).await,
        vec![
            (bob.user_id.clone(), "m.read".into(), None, second.clone()),
            (
                bob.user_id.clone(),
                "m.read.private".into(),
                None,
                first.clone()
            ),
        ]
    );
    // Each field is optional.
    let (status, _) = server
        .post(&url, b, json!({ "m.fully_read": second }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fully_read(&server, &bob, &room).await.1,
        json!({ "event_id": second })
    );
    let (status, _) = server.post(&url, b, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // The server keeps m.fully_read to itself.
    let direct = server
        .put(
            &format!(
                "{V3}/user/{}/rooms/{room}/account_data/m.fully_read",
                enc(&bob.user_id)
            ),
            b,
            json!({ "event_id": first }),
        )
        .await;
    assert_eq!(direct.0, StatusCode::METHOD_NOT_ALLOWED);

    // An unknown event fails the whole request: nothing is written.
    let unknown = server
        .post(&url, b, json!({ "m.fully_read": first, "m.read": "$nope" }))
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_eq!(
        fully_read(&server, &bob, &room).await.1,
        json!({ "event_id": second })
    );
    let not_joined = server
        .post(&url, Some(&carol.access_token), json!({ "m.read": first }))
        .await;
    assert_error(&not_joined, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let bad_json = server.post(&url, b, json!({ "m.read": 5 })).await;
    assert_error(&bad_json, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    server.stop().await;
}

backend_tests!(typing, receipts, receipt_for_invisible_event, read_markers);
