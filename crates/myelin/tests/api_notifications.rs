//! Notifications over HTTP: unread counts in `/sync` follow each user's own
//! push rules (evaluated when the event is written), ignored senders never
//! notify, redactions un-notify, and `GET /notifications` lists, pages and
//! filters what notified.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

backend_tests!(
    unread_counts_follow_the_users_push_rules,
    ignored_senders_and_redactions_do_not_notify,
    notifications_list_page_and_filter,
    notifications_refuse_bad_parameters,
);

async fn put_ok(server: &TestServer, token: &str, path: &str, body: Value) {
    let (status, resp) = server.put(path, Some(token), body).await;
    assert_eq!(status, StatusCode::OK, "PUT {path}: {resp}");
}

/// `(notification_count, highlight_count)` of `room` in an initial sync.
async fn unread(server: &TestServer, token: &str, room: &str) -> (i64, i64) {
    let (status, body) = server.get(&format!("{V3}/sync"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let counts = &body["rooms"]["join"][room]["unread_notifications"];
    (
        counts["notification_count"].as_i64().expect("count"),
        counts["highlight_count"].as_i64().expect("count"),
    )
}

async fn notifications(server: &TestServer, token: &str, query: &str) -> Value {
    let (status, body) = server
        .get(&format!("{V3}/notifications{query}"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn event_ids(body: &Value) -> Vec<String> {
    body["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| {
            n["event"]["event_id"]
                .as_str()
                .expect("event_id")
                .to_owned()
        })
        .collect()
}

async fn unread_counts_follow_the_users_push_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let room = server
        .room_with(&alice, json!({ "preset": "public_chat" }), &[&bob, &carol])
        .await;

    // The defaults: a message in a group room notifies, without highlight.
    server.say(&alice, &room, "hello").await;
    assert_eq!(unread(&server, &bob.access_token, &room).await, (1, 0));

    // Bob mutes the room with a room rule: later messages do not count.
    put_ok(
        &server,
        &bob.access_token,
        &format!("{V3}/pushrules/global/room/{room}"),
        json!({ "actions": [] }),
    )
    .await;
    server.say(&alice, &room, "muted").await;
    assert_eq!(unread(&server, &bob.access_token, &room).await, (1, 0));
    // Carol's rules are her own: she counts both.
    assert_eq!(unread(&server, &carol.access_token, &room).await, (2, 0));

    // A content rule of Bob's highlights a keyword, before the room rule.
    put_ok(
        &server,
        &bob.access_token,
        &format!("{V3}/pushrules/global/content/fruit"),
        json!({ "pattern": "pineapple",
                "actions": ["notify", { "set_tweak": "highlight" }] }),
    )
    .await;
    server.say(&alice, &room, "who wants pineapple").await;
    assert_eq!(unread(&server, &bob.access_token, &room).await, (2, 1));

    // Disabling the room rule brings the defaults back.
    put_ok(
        &server,
        &bob.access_token,
        &format!("{V3}/pushrules/global/room/{room}/enabled"),
        json!({ "enabled": false }),
    )
    .await;
    server.say(&alice, &room, "back").await;
    assert_eq!(unread(&server, &bob.access_token, &room).await, (3, 1));

    // The master rule silences everything.
    put_ok(
        &server,
        &carol.access_token,
        &format!("{V3}/pushrules/global/override/.m.rule.master/enabled"),
        json!({ "enabled": true }),
    )
    .await;
    server.say(&alice, &room, "quiet").await;
    // The four messages before it, and not it.
    assert_eq!(unread(&server, &carol.access_token, &room).await, (4, 0));
    server.stop().await;
}

async fn ignored_senders_and_redactions_do_not_notify(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let room = server
        .room_with(&alice, json!({ "preset": "public_chat" }), &[&bob, &carol])
        .await;

    put_ok(
        &server,
        &bob.access_token,
        &format!("{V3}/user/{}/account_data/m.ignored_user_list", bob.user_id),
        json!({ "ignored_users": { carol.user_id.clone(): {} } }),
    )
    .await;
    server.say(&carol, &room, "ignored").await;
    assert_eq!(unread(&server, &bob.access_token, &room).await, (0, 0));
    // Alice does not ignore Carol.
    assert_eq!(unread(&server, &alice.access_token, &room).await, (1, 0));

    // A redacted message stops counting.
    let mention = server
        .send_event(
            &alice,
            &room,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "bob!",
                "m.mentions": { "user_ids": [bob.user_id] } }),
        )
        .await;
    assert_eq!(unread(&server, &bob.access_token, &room).await, (1, 1));
    put_ok(
        &server,
        &alice.access_token,
        &format!("{V3}/rooms/{room}/redact/{mention}/r1"),
        json!({}),
    )
    .await;
    assert_eq!(unread(&server, &bob.access_token, &room).await, (0, 0));
    assert!(event_ids(&notifications(&server, &bob.access_token, "").await).is_empty());
    server.stop().await;
}

async fn notifications_list_page_and_filter(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = server
        .room_with(&alice, json!({ "preset": "public_chat" }), &[&bob])
        .await;

    let first = server.say(&alice, &room, "one").await;
    let mention = server
        .send_event(
            &alice,
            &room,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "bob, look",
                "m.mentions": { "user_ids": [bob.user_id] } }),
        )
        .await;
    let last = server.say(&alice, &room, "three").await;
    server.say(&bob, &room, "own messages never notify").await;

    let body = notifications(&server, &bob.access_token, "").await;
    assert_eq!(
        event_ids(&body),
        vec![last.clone(), mention.clone(), first.clone()]
    );
    assert!(body.get("next_token").is_none(), "{body}");
    let newest = &body["notifications"][0];
    assert_eq!(newest["room_id"], json!(room));
    assert_eq!(newest["read"], json!(false));
    assert!(newest["ts"].is_i64());
    assert_eq!(newest["event"]["content"]["body"], json!("three"));
    assert_eq!(newest["event"]["sender"], json!(alice.user_id));
    assert!(
        newest["actions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("notify"))),
        "{newest}"
    );
    let highlighted = &body["notifications"][1]["actions"];
    assert!(
        highlighted
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t["set_tweak"] == json!("highlight"))),
        "{highlighted}"
    );

    // Pages of one, newest first.
    let page = notifications(&server, &bob.access_token, "?limit=1").await;
    assert_eq!(event_ids(&page), vec![last.clone()]);
    let token = page["next_token"].as_str().expect("next_token");
    let page = notifications(
        &server,
        &bob.access_token,
        &format!("?limit=1&from={token}"),
    )
    .await;
    assert_eq!(event_ids(&page), vec![mention.clone()]);

    // Highlights only.
    let body = notifications(&server, &bob.access_token, "?only=highlight").await;
    assert_eq!(event_ids(&body), vec![mention.clone()]);

    // A read receipt marks what it covers read.
    let (status, resp) = server
        .post(
            &format!("{V3}/rooms/{room}/receipt/m.read/{mention}"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let body = notifications(&server, &bob.access_token, "").await;
    let read: Vec<bool> = body["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| n["read"].as_bool().expect("read"))
        .collect();
    assert_eq!(read, vec![false, true, true]);
    assert_eq!(unread(&server, &bob.access_token, &room).await, (1, 0));
    server.stop().await;
}

async fn notifications_refuse_bad_parameters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let result = server
        .get(
            &format!("{V3}/notifications?only=everything"),
            Some(&alice.access_token),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = server
        .get(
            &format!("{V3}/notifications?from=yesterday"),
            Some(&alice.access_token),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = server.get(&format!("{V3}/notifications"), None).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let body = notifications(&server, &alice.access_token, "").await;
    assert_eq!(body, json!({ "notifications": [] }));
    server.stop().await;
}
