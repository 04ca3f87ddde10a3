//! Bundled aggregations (`unsigned.m.relations`) follow what the viewer may
//! see: a user who left (or was banned) sees the edit, the thread summary and
//! the references as they were at their departure, and the relating events
//! of ignored users are neither counted nor shown. Also the rate limit on
//! reports (`rate_limits.reports`), over HTTP.

mod common;

use common::*;
use myelin_core::config::RateLimit;
use reqwest::StatusCode;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// A public room of `owner` that `others` joined.
async fn room_with(server: &TestServer, owner: &Session, others: &[&Session]) -> String {
    server
        .room_with(owner, json!({ "preset": "public_chat" }), others)
        .await
}

async fn send(server: &TestServer, s: &Session, room: &str, kind: &str, content: Value) -> String {
    server.send_event(s, room, kind, content).await
}

async fn say(server: &TestServer, s: &Session, room: &str, text: &str) -> String {
    server.say(s, room, text).await
}

async fn reply_in_thread(
    server: &TestServer,
    s: &Session,
    room: &str,
    root: &str,
    text: &str,
) -> String {
    send(
        server,
        s,
        room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": text,
            "m.relates_to": { "rel_type": "m.thread", "event_id": root },
        }),
    )
    .await
}

async fn reference(server: &TestServer, s: &Session, room: &str, target: &str) -> String {
    send(
        server,
        s,
        room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": "see above",
            "m.relates_to": { "rel_type": "m.reference", "event_id": target },
        }),
    )
    .await
}

async fn edit(server: &TestServer, s: &Session, room: &str, target: &str, text: &str) -> String {
    // Edits are ordered by origin_server_ts: keep them a millisecond apart.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    send(
        server,
        s,
        room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": format!("* {text}"),
            "m.new_content": { "msgtype": "m.text", "body": text },
            "m.relates_to": { "rel_type": "m.replace", "event_id": target },
        }),
    )
    .await
}

/// `/event/{eventId}` as `s` sees it (200 expected).
async fn event(server: &TestServer, s: &Session, room: &str, event_id: &str) -> Value {
    let (status, body) = server
        .get(
            &format!("{V3}/rooms/{room}/event/{event_id}"),
            Some(&s.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "GET event {event_id}: {body}");
    body
}

/// `event_id` as `s`'s backwards `/messages` from the end shows it.
async fn in_messages(server: &TestServer, s: &Session, room: &str, event_id: &str) -> Value {
    let req = server
        .client
        .get(server.url(&format!("{V3}/rooms/{room}/messages")))
        .bearer_auth(&s.access_token)
        .query(&[("dir", "b"), ("limit", "50")]);
    let (status, _, body) = server.send(req).await;
    assert_eq!(status, StatusCode::OK, "/messages: {body}");
    body["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk: {body}"))
        .iter()
        .find(|e| e["event_id"] == json!(event_id))
        .unwrap_or_else(|| panic!("{event_id} not in /messages: {body}"))
        .clone()
}

/// The bundle a view of `root` should carry.
struct Expected<'a> {
    body: &'a str,
    replace: Option<&'a str>,
    thread: Option<(i64, &'a str)>,
    references: &'a [&'a String],
}

#[track_caller]
fn assert_bundle(event: &Value, expected: &Expected<'_>) {
    assert_eq!(event["content"]["body"], json!(expected.body), "{event}");
    let relations = &event["unsigned"]["m.relations"];
    match expected.replace {
        Some(id) => assert_eq!(relations["m.replace"]["event_id"], json!(id), "{event}"),
        None => assert!(relations.get("m.replace").is_none(), "{event}"),
    }
    match expected.thread {
        Some((count, latest)) => {
            assert_eq!(relations["m.thread"]["count"], json!(count), "{event}");
            assert_eq!(
                relations["m.thread"]["latest_event"]["event_id"],
                json!(latest),
                "{event}"
            );
        }
        None => assert!(relations.get("m.thread").is_none(), "{event}"),
    }
    if expected.references.is_empty() {
        assert!(relations.get("m.reference").is_none(), "{event}");
    } else {
        let chunk: Vec<Value> = expected
            .references
            .iter()
            .map(|id| json!({ "event_id": id }))
            .collect();
        assert_eq!(relations["m.reference"]["chunk"], json!(chunk), "{event}");
    }
}

async fn bundles_stop_at_departure(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice-1").await;
    let bob = server.register("bob", "password-bob-1").await;
    let carol = server.register("carol", "password-carol-1").await;
    let room = room_with(&server, &alice, &[&bob, &carol]).await;
    let root = say(&server, &alice, &room, "root").await;
    let first_edit = edit(&server, &alice, &room, &root, "root, edited once").await;
    let first_reply = reply_in_thread(&server, &carol, &room, &root, "first reply").await;
    let first_ref = reference(&server, &alice, &room, &root).await;

    // Bob leaves; Carol is banned a little later.
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/leave"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "leave: {body}");
    let second_reply = reply_in_thread(&server, &alice, &room, &root, "second reply").await;
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/ban"),
            Some(&alice.access_token),
            json!({ "user_id": carol.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "ban: {body}");
    let second_edit = edit(&server, &alice, &room, &root, "root, edited twice").await;
    let third_reply = reply_in_thread(&server, &alice, &room, &root, "third reply").await;
    let second_ref = reference(&server, &alice, &room, &root).await;

    // Bob: everything as it was when he left.
    let as_bob = Expected {
        body: "root",
        replace: Some(&first_edit),
        thread: Some((1, &first_reply)),
        references: &[&first_ref],
    };
    assert_bundle(&event(&server, &bob, &room, &root).await, &as_bob);
    assert_bundle(&in_messages(&server, &bob, &room, &root).await, &as_bob);
    // Carol: as it was at her ban (one more reply, no second edit).
    let as_carol = Expected {
        body: "root",
        replace: Some(&first_edit),
        thread: Some((2, &second_reply)),
        references: &[&first_ref],
    };
    assert_bundle(&event(&server, &carol, &room, &root).await, &as_carol);
    assert_bundle(&in_messages(&server, &carol, &room, &root).await, &as_carol);
    // Alice, still joined: everything.
    let everything = Expected {
        body: "root",
        replace: Some(&second_edit),
        thread: Some((3, &third_reply)),
        references: &[&first_ref, &second_ref],
    };
    assert_bundle(&event(&server, &alice, &room, &root).await, &everything);
    assert_bundle(
        &in_messages(&server, &alice, &room, &root).await,
        &everything,
    );

    // Back in the room, Bob sees the room as it is now.
    server.join_room(&bob, &room).await;
    assert_bundle(&event(&server, &bob, &room, &root).await, &everything);
    server.stop().await;
}

async fn ignored_senders_not_bundled(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice-1").await;
    let bob = server.register("bob", "password-bob-1").await;
    let mallory = server.register("mallory", "password-mallory-1").await;
    let room = room_with(&server, &alice, &[&bob, &mallory]).await;
    let root = say(&server, &alice, &room, "root").await;
    let alice_reply = reply_in_thread(&server, &alice, &room, &root, "from alice").await;
    let alice_ref = reference(&server, &alice, &room, &root).await;
    let mallory_reply = reply_in_thread(&server, &mallory, &room, &root, "from mallory").await;
    let mallory_ref = reference(&server, &mallory, &room, &root).await;
    // A thread only Mallory replied to.
    let lonely = say(&server, &alice, &room, "lonely").await;
    reply_in_thread(&server, &mallory, &room, &lonely, "only mallory").await;
    // Mallory edits her own message.
    let mallorys = say(&server, &mallory, &room, "mallory's").await;
    let mallory_edit = edit(&server, &mallory, &room, &mallorys, "mallory's, edited").await;
    // Bob replied too: he participated whoever else did.
    let bobs_root = say(&server, &alice, &room, "bob's thread").await;
    let bob_reply = reply_in_thread(&server, &bob, &room, &bobs_root, "from bob").await;
    reply_in_thread(&server, &mallory, &room, &bobs_root, "mallory again").await;

    let (status, body) = server
        .put(
            &format!("{V3}/user/{}/account_data/m.ignored_user_list", bob.user_id),
            Some(&bob.access_token),
            json!({ "ignored_users": { mallory.user_id.clone(): {} } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let as_bob = Expected {
        body: "root",
        replace: None,
        thread: Some((1, &alice_reply)),
        references: &[&alice_ref],
    };
    assert_bundle(&event(&server, &bob, &room, &root).await, &as_bob);
    assert_bundle(&in_messages(&server, &bob, &room, &root).await, &as_bob);
    let lonely_as_bob = Expected {
        body: "lonely",
        replace: None,
        thread: None,
        references: &[],
    };
    assert_bundle(&event(&server, &bob, &room, &lonely).await, &lonely_as_bob);
    assert_bundle(
        &in_messages(&server, &bob, &room, &lonely).await,
        &lonely_as_bob,
    );
    let bobs_thread = event(&server, &bob, &room, &bobs_root).await;
    let thread = &bobs_thread["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], json!(1), "{bobs_thread}");
    assert_eq!(thread["latest_event"]["event_id"], json!(bob_reply));
    assert_eq!(thread["current_user_participated"], json!(true));

    // Alice ignores nobody: she sees Mallory's relations.
    assert_bundle(
        &event(&server, &alice, &room, &root).await,
        &Expected {
            body: "root",
            replace: None,
            thread: Some((2, &mallory_reply)),
            references: &[&alice_ref, &mallory_ref],
        },
    );
    assert_bundle(
        &event(&server, &alice, &room, &mallorys).await,
        &Expected {
            body: "mallory's",
            replace: Some(&mallory_edit),
            thread: None,
            references: &[],
        },
    );

    // (Edits by an ignored sender are of her own, hidden, messages: the
    // storage contract suite checks that they are left out.)

    // Un-ignored, Mallory's relations count again for Bob.
    let (status, _) = server
        .put(
            &format!("{V3}/user/{}/account_data/m.ignored_user_list", bob.user_id),
            Some(&bob.access_token),
            json!({ "ignored_users": {} }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let root_event = event(&server, &bob, &room, &root).await;
    assert_eq!(
        root_event["unsigned"]["m.relations"]["m.thread"]["count"],
        json!(2),
        "{root_event}"
    );
    server.stop().await;
}

async fn reports_rate_limited(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.rate_limits.reports = RateLimit {
            per_second: 0.01,
            burst: 2,
        };
    })
    .await;
    let alice = server.register("alice", "password-alice-1").await;
    let bob = server.register("bob", "password-bob-1").await;
    let room = room_with(&server, &alice, &[&bob]).await;
    let offensive = say(&server, &alice, &room, "offensive").await;
    let report_event = format!("{V3}/rooms/{room}/report/{offensive}");
    let report_room = format!("{V3}/rooms/{room}/report");

    let (status, body) = server
        .post(&report_event, Some(&bob.access_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .post(
            &report_room,
            Some(&bob.access_token),
            json!({ "reason": "spam" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Both endpoints share Bob's bucket.
    for path in [&report_event, &report_room] {
        let (status, headers, body) = server
            .send(
                server
                    .client
                    .post(server.url(path))
                    .bearer_auth(&bob.access_token)
                    .json(&json!({ "reason": "again" })),
            )
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
        assert!(headers.get("retry-after").is_some(), "{headers:?}");
    }
    // A report refused as not found took a token too.
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/report/$unknown"),
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Per user: Alice still has one.
    let (status, body) = server
        .post(&report_event, Some(&alice.access_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &server
            .post(&report_event, Some(&alice.access_token), json!({}))
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
    // Malformed reports are refused before they cost a token.
    let (status, _) = server
        .post(
            &report_event,
            Some(&bob.access_token),
            json!({ "score": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let stored = server.storage().reports(0, 100).await.expect("reports");
    assert_eq!(stored.len(), 3);
    server.stop().await;
}

backend_tests!(
    bundles_stop_at_departure,
    ignored_senders_not_bundled,
    reports_rate_limited
);
