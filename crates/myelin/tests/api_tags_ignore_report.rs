//! Room tags (and their delivery in `/sync`), ignoring users (their events
//! vanish from `/sync`, `/messages` and `/context`, their invites from
//! `/sync`), and reporting events and rooms, over HTTP.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

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

async fn create_room(server: &TestServer, s: &Session, body: Value) -> String {
    let (status, resp) = server
        .post(&format!("{V3}/createRoom"), Some(&s.access_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom failed: {resp}");
    resp["room_id"].as_str().expect("room_id").to_owned()
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

async fn sync(server: &TestServer, s: &Session) -> Value {
    let (status, body) = server
        .get(&format!("{V3}/sync?timeout=0"), Some(&s.access_token))
        .await;
    assert_eq!(status, StatusCode::OK, "sync failed: {body}");
    body
}

/// The bodies of the `m.room.message` events of a list of client events.
fn texts(events: &Value) -> Vec<String> {
    events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

async fn tags(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    let token = Some(alice.access_token.as_str());
    let base = format!("{V3}/user/{}/rooms/{room}/tags", alice.user_id);

    let (status, body) = server.get(&base, token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "tags": {} }));
    let (status, body) = server
        .put(
            &format!("{base}/m.favourite"),
            token,
            json!({ "order": 0.25 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let (status, _) = server
        .put(&format!("{base}/u.work"), token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(&format!("{base}/u.edge"), token, json!({ "order": 1 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = server.get(&base, token).await;
    assert_eq!(
        body,
        json!({ "tags": { "m.favourite": { "order": 0.25 }, "u.work": {}, "u.edge": { "order": 1 } } })
    );

    // Stored as the room's `m.tag` account data, delivered by /sync.
    let (_, stored) = server
        .get(
            &format!(
                "{V3}/user/{}/rooms/{room}/account_data/m.tag",
                alice.user_id
            ),
            token,
        )
        .await;
    assert_eq!(stored, body);
    let synced = sync(&server, &alice).await;
    let account_data = &synced["rooms"]["join"][&room]["account_data"]["events"];
    let tag_event = account_data
        .as_array()
        .expect("room account data")
        .iter()
        .find(|e| e["type"] == "m.tag")
        .unwrap_or_else(|| panic!("no m.tag in {synced}"));
    assert_eq!(tag_event["content"], body);
    let since = synced["next_batch"].as_str().unwrap().to_owned();

    // Deleting one, and one that is not there.
    let (status, _) = server.delete(&format!("{base}/u.work"), token, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.delete(&format!("{base}/u.never"), token, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = server.get(&base, token).await;
    assert_eq!(
        body,
        json!({ "tags": { "m.favourite": { "order": 0.25 }, "u.edge": { "order": 1 } } })
    );
    let (_, later) = server
        .get(&format!("{V3}/sync?timeout=0&since={since}"), token)
        .await;
    let changed = &later["rooms"]["join"][&room]["account_data"]["events"][0];
    assert_eq!(changed["type"], "m.tag", "{later}");
    assert_eq!(changed["content"], body);

    // Refusals.
    assert_error(
        &server
            .put(&format!("{base}/u.x"), token, json!({ "order": 2 }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .put(&format!("{base}/u.x"), token, json!({ "order": -0.5 }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .put(&format!("{base}/u.x"), token, json!({ "order": "first" }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .put(&format!("{base}/{}", "t".repeat(256)), token, json!({}))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server.get(&base, Some(&bob.access_token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .put(&format!("{base}/u.x"), Some(&bob.access_token), json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .get(
                &format!("{V3}/user/{}/rooms/nonsense/tags", alice.user_id),
                token,
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    server.stop().await;
}

async fn ignoring_users(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    say(&server, &carol, &room, "carol 1").await;
    let from_bob = say(&server, &bob, &room, "bob 1").await;
    let carol_2 = say(&server, &carol, &room, "carol 2").await;
    say(&server, &bob, &room, "bob 2").await;

    let (status, _) = server
        .put(
            &format!(
                "{V3}/user/{}/account_data/m.ignored_user_list",
                alice.user_id
            ),
            Some(&alice.access_token),
            json!({ "ignored_users": { bob.user_id.clone(): {} } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // /messages
    let (status, body) = server
        .get(
            &format!("{V3}/rooms/{room}/messages?dir=b&limit=50"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(texts(&body["chunk"]), ["carol 2", "carol 1"]);
    // Bob's state (his membership) stays.
    assert!(
        body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id),
        "{body}"
    );
    // Others still see Bob.
    let (_, carols) = server
        .get(
            &format!("{V3}/rooms/{room}/messages?dir=b&limit=50"),
            Some(&carol.access_token),
        )
        .await;
    assert_eq!(
        texts(&carols["chunk"]),
        ["bob 2", "carol 2", "bob 1", "carol 1"]
    );

    // /sync
    let synced = sync(&server, &alice).await;
    let timeline = &synced["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(texts(timeline), ["carol 1", "carol 2"], "{synced}");
    let since = synced["next_batch"].as_str().unwrap().to_owned();
    say(&server, &bob, &room, "bob 3").await;
    say(&server, &carol, &room, "carol 3").await;
    let (_, later) = server
        .get(
            &format!("{V3}/sync?timeout=0&since={since}"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(
        texts(&later["rooms"]["join"][&room]["timeline"]["events"]),
        ["carol 3"],
        "{later}"
    );

    // /context
    let (status, body) = server
        .get(
            &format!("{V3}/rooms/{room}/context/{}?limit=10", enc(&carol_2)),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(texts(&body["events_before"]), ["carol 1"]);
    assert_eq!(texts(&body["events_after"]), ["carol 3"]);
    assert_error(
        &server
            .get(
                &format!("{V3}/rooms/{room}/context/{}", enc(&from_bob)),
                Some(&alice.access_token),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Invites: Bob's vanish, Carol's arrive.
    let since = later["next_batch"].as_str().unwrap().to_owned();
    let bobs = create_room(&server, &bob, json!({ "invite": [alice.user_id] })).await;
    let carols = create_room(&server, &carol, json!({ "invite": [alice.user_id] })).await;
    let (_, invites) = server
        .get(
            &format!("{V3}/sync?timeout=0&since={since}"),
            Some(&alice.access_token),
        )
        .await;
    let invited = invites["rooms"]["invite"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(invited.contains_key(&carols), "{invites}");
    assert!(!invited.contains_key(&bobs), "{invites}");
    let initial = sync(&server, &alice).await;
    let invited = initial["rooms"]["invite"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        invited.contains_key(&carols) && !invited.contains_key(&bobs),
        "{initial}"
    );

    // Unignoring brings Bob back.
    let (status, _) = server
        .put(
            &format!(
                "{V3}/user/{}/account_data/m.ignored_user_list",
                alice.user_id
            ),
            Some(&alice.access_token),
            json!({ "ignored_users": {} }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = server
        .get(
            &format!("{V3}/rooms/{room}/messages?dir=b&limit=50"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(
        texts(&body["chunk"]),
        ["carol 3", "bob 3", "bob 2", "carol 2", "bob 1", "carol 1"]
    );
    server.stop().await;
}

async fn reports(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "initial_state": [{
                "type": "m.room.history_visibility",
                "content": { "history_visibility": "joined" },
            }],
        }),
    )
    .await;
    let before_bob = say(&server, &alice, &room, "before bob").await;
    join(&server, &bob, &room).await;
    let offensive = say(&server, &alice, &room, "offensive").await;
    let other = create_room(&server, &bob, json!({})).await;
    let elsewhere = say(&server, &bob, &other, "elsewhere").await;
    let report = |room: &str, event: &str| format!("{V3}/rooms/{room}/report/{}", enc(event));

    let (status, body) = server
        .post(
            &report(&room, &offensive),
            Some(&bob.access_token),
            json!({ "reason": "this makes me sad", "score": -100 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    // Both fields are optional.
    let (status, _) = server
        .post(
            &report(&room, &offensive),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A room report needs no membership.
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/report"),
            Some(&carol.access_token),
            json!({ "reason": "spam room" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let stored = server.storage().reports(0, 100).await.expect("reports");
    assert_eq!(stored.len(), 3);
    let first = &stored[0].report;
    assert_eq!(first.room_id, room);
    assert_eq!(first.event_id.as_deref(), Some(offensive.as_str()));
    assert_eq!(first.reporter, bob.user_id);
    assert_eq!(first.reason.as_deref(), Some("this makes me sad"));
    assert_eq!(first.score, Some(-100));
    assert_eq!(stored[1].report.reason, None);
    assert_eq!(stored[2].report.event_id, None);
    assert_eq!(stored[2].report.reporter, carol.user_id);
    assert_eq!(stored[2].report.reason.as_deref(), Some("spam room"));

    // Refusals: all 404 but the bad score.
    let body = json!({ "reason": "x" });
    for (path, who) in [
        // History Bob may not see.
        (report(&room, &before_bob), &bob),
        // Not joined.
        (report(&room, &offensive), &carol),
        // An event of another room.
        (report(&room, &elsewhere), &bob),
        (report(&room, "$unknown"), &bob),
        (report("!nowhere:localhost", &offensive), &bob),
        (format!("{V3}/rooms/!nowhere:localhost/report"), &bob),
    ] {
        assert_error(
            &server
                .post(&path, Some(&who.access_token), body.clone())
                .await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
    assert_error(
        &server
            .post(
                &report(&room, &offensive),
                Some(&bob.access_token),
                json!({ "score": 5 }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .post(
                &report(&room, &offensive),
                Some(&bob.access_token),
                json!({ "score": "bad" }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .post(&report(&room, &offensive), None, json!({}))
            .await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_eq!(
        server
            .storage()
            .reports(0, 100)
            .await
            .expect("reports")
            .len(),
        3
    );
    server.stop().await;
}

backend_tests!(tags, ignoring_users, reports);
