//! `GET /sync` over HTTP: initial and incremental syncs, limited timelines
//! and `prev_batch`, filters (inline and stored), the invite, knock and
//! leave sections, long-polling, ephemeral events (typing, receipts),
//! account data, room summaries, unread counts, history visibility and the
//! errors.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const V3: &str = "/_matrix/client/v3";

async fn sync_raw(
    server: &TestServer,
    token: &str,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let req = server
        .client
        .get(server.url(&format!("{V3}/sync")))
        .bearer_auth(token)
        .query(params);
    let (status, _, body) = server.send(req).await;
    (status, body)
}

async fn sync(server: &TestServer, token: &str, params: &[(&str, &str)]) -> Value {
    let (status, body) = sync_raw(server, token, params).await;
    assert_eq!(status, StatusCode::OK, "sync failed: {body}");
    assert!(
        body["next_batch"]
            .as_str()
            .is_some_and(|t| t.starts_with('s')),
        "{body}"
    );
    body
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

async fn create_room(server: &TestServer, token: &str, body: Value) -> String {
    let (status, resp) = server
        .post(&format!("{V3}/createRoom"), Some(token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom failed: {resp}");
    resp["room_id"].as_str().expect("room_id").to_owned()
}

async fn send_text(server: &TestServer, token: &str, room: &str, body: &str) -> String {
    send_content(
        server,
        token,
        room,
        json!({ "msgtype": "m.text", "body": body }),
    )
    .await
}

async fn send_content(server: &TestServer, token: &str, room: &str, content: Value) -> String {
    let txn = format!("t{}", rand::random::<u64>());
    let (status, resp) = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            Some(token),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "send failed: {resp}");
    resp["event_id"].as_str().expect("event_id").to_owned()
}

async fn join(server: &TestServer, token: &str, room: &str) {
    let (status, body) = server
        .post(&format!("{V3}/rooms/{room}/join"), Some(token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "join failed: {body}");
}

async fn post_ok(server: &TestServer, token: &str, path: &str, body: Value) -> Value {
    let (status, resp) = server.post(path, Some(token), body).await;
    assert_eq!(status, StatusCode::OK, "POST {path} failed: {resp}");
    resp
}

fn events<'a>(body: &'a Value, section: &str, room: &str, part: &str) -> &'a [Value] {
    body["rooms"][section][room][part]["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn timeline<'a>(body: &'a Value, room: &str) -> &'a [Value] {
    events(body, "join", room, "timeline")
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect()
}

fn bodies(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect()
}

fn has_state(events: &[Value], kind: &str, key: &str) -> bool {
    events
        .iter()
        .any(|e| e["type"] == kind && e["state_key"] == key)
}

async fn initial_sync_shows_created_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "name": "Lounge", "topic": "chat" }),
    )
    .await;
    let message = send_text(&server, &alice.access_token, &room, "hello").await;
    let body = sync(&server, &alice.access_token, &[]).await;
    for section in ["presence", "account_data", "to_device"] {
        assert!(body[section]["events"].is_array(), "{section}: {body}");
    }
    assert!(body["device_lists"]["changed"].is_array(), "{body}");
    let entry = &body["rooms"]["join"][&room];
    assert!(entry.is_object(), "the room is in rooms.join: {body}");
    let timeline = timeline(&body, &room);
    let state = events(&body, "join", &room, "state");
    assert_eq!(
        ids(timeline).last(),
        Some(&message),
        "the message ends the timeline"
    );
    assert!(
        timeline.iter().all(|e| e.get("room_id").is_none()),
        "sync events carry no room_id"
    );
    assert!(timeline.iter().all(|e| e["unsigned"]["age"].is_i64()));
    // Nothing in both sections; together they hold the room's state.
    let timeline_ids = ids(timeline);
    assert!(
        ids(state).iter().all(|id| !timeline_ids.contains(id)),
        "{body}"
    );
    let all: Vec<Value> = state.iter().chain(timeline).cloned().collect();
    for (kind, key) in [
        ("m.room.create", ""),
        ("m.room.member", alice.user_id.as_str()),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
    ] {
        assert!(has_state(&all, kind, key), "{kind} missing: {body}");
    }
    assert_eq!(entry["timeline"]["limited"], json!(false), "{body}");
    assert!(
        entry["timeline"]["prev_batch"]
            .as_str()
            .is_some_and(|t| t.starts_with('s'))
    );
    assert_eq!(entry["summary"]["m.joined_member_count"], 1);
    assert_eq!(entry["unread_notifications"]["notification_count"], 0);
    // The transaction id is shown to the sending device.
    let own = timeline
        .iter()
        .find(|e| e["event_id"] == message.as_str())
        .unwrap();
    assert!(own["unsigned"]["transaction_id"].is_string(), "{own}");
    server.stop().await;
}

async fn incremental_sync_shows_only_new_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    let quiet = create_room(&server, &alice.access_token, json!({})).await;
    send_text(&server, &alice.access_token, &room, "before").await;
    let first = sync(&server, &alice.access_token, &[]).await;
    let since = next_batch(&first);
    let one = send_text(&server, &alice.access_token, &room, "one").await;
    let two = send_text(&server, &alice.access_token, &room, "two").await;
    let body = sync(&server, &alice.access_token, &[("since", &since)]).await;
    assert_eq!(ids(timeline(&body, &room)), vec![one, two]);
    assert_eq!(
        body["rooms"]["join"][&room]["timeline"]["limited"],
        json!(false)
    );
    assert!(events(&body, "join", &room, "state").is_empty(), "{body}");
    assert!(
        body["rooms"]["join"].get(&quiet).is_none(),
        "rooms with nothing new are left out: {body}"
    );
    // Nothing new: an empty answer, at once with timeout=0.
    let again = sync(
        &server,
        &alice.access_token,
        &[("since", &next_batch(&body)), ("timeout", "0")],
    )
    .await;
    assert_eq!(again["rooms"]["join"], json!({}), "{again}");
    assert_eq!(next_batch(&again), next_batch(&body));
    // A token from the future is "now".
    let future = sync(
        &server,
        &alice.access_token,
        &[("since", "s999999_999_999_999")],
    )
    .await;
    assert_eq!(future["rooms"]["join"], json!({}), "{future}");
    server.stop().await;
}

async fn limited_timeline_and_prev_batch(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(send_text(&server, &alice.access_token, &room, &format!("m{i}")).await);
    }
    let filter = json!({ "room": { "timeline": { "limit": 3 } } }).to_string();
    let body = sync(&server, &alice.access_token, &[("filter", &filter)]).await;
    let entry = &body["rooms"]["join"][&room];
    assert_eq!(ids(timeline(&body, &room)), sent[3..].to_vec());
    assert_eq!(entry["timeline"]["limited"], json!(true));
    // The gap's state is in the state section.
    assert!(has_state(
        events(&body, "join", &room, "state"),
        "m.room.create",
        ""
    ));
    // prev_batch pages back from just before the timeline.
    let prev = entry["timeline"]["prev_batch"].as_str().unwrap();
    let (status, page) = server
        .get(
            &format!("{V3}/rooms/{room}/messages?dir=b&limit=3&from={prev}"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut older = ids(page["chunk"].as_array().unwrap());
    older.reverse();
    assert_eq!(older, sent[..3].to_vec(), "{page}");
    // Incremental: more new events than the limit is limited too.
    let since = next_batch(&body);
    for i in 6..10 {
        sent.push(send_text(&server, &alice.access_token, &room, &format!("m{i}")).await);
    }
    let body = sync(
        &server,
        &alice.access_token,
        &[("filter", &filter), ("since", &since)],
    )
    .await;
    assert_eq!(ids(timeline(&body, &room)), sent[7..].to_vec());
    assert_eq!(
        body["rooms"]["join"][&room]["timeline"]["limited"],
        json!(true)
    );
    server.stop().await;
}

async fn filters_inline_and_stored(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    // Named, so the summary has no heroes (whose members lazy loading adds).
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat", "name": "Filters" }),
    )
    .await;
    let other = create_room(&server, &alice.access_token, json!({})).await;
    join(&server, &bob.access_token, &room).await;
    join(&server, &carol.access_token, &room).await;
    send_text(&server, &carol.access_token, &room, "from carol").await;
    send_text(&server, &alice.access_token, &room, "from alice").await;
    send_text(&server, &bob.access_token, &room, "from bob").await;

    // types (with a wildcard) and not_types.
    let filter = json!({ "room": { "timeline": { "types": ["m.room.mess*"] } } }).to_string();
    let body = sync(&server, &alice.access_token, &[("filter", &filter)]).await;
    assert_eq!(types(timeline(&body, &room)), vec!["m.room.message"; 3]);
    let filter =
        json!({ "room": { "timeline": { "not_types": ["m.room.message"], "limit": 50 } } })
            .to_string();
    let body = sync(&server, &alice.access_token, &[("filter", &filter)]).await;
    assert!(
        !types(timeline(&body, &room)).contains(&"m.room.message"),
        "{body}"
    );
    // not_senders.
    let filter = json!({ "room": { "timeline": { "not_senders": [bob.user_id], "limit": 50 } } })
        .to_string();
    let body = sync(&server, &alice.access_token, &[("filter", &filter)]).await;
    let timeline_events = timeline(&body, &room);
    assert!(
        timeline_events
            .iter()
            .all(|e| e["sender"] != bob.user_id.as_str()),
        "{body}"
    );
    assert!(bodies(timeline_events).contains(&"from carol"));
    // rooms / not_rooms.
    let filter = json!({ "room": { "not_rooms": [other] } }).to_string();
    let body = sync(&server, &alice.access_token, &[("filter", &filter)]).await;
    assert!(
        body["rooms"]["join"].get(&other).is_none() && body["rooms"]["join"].get(&room).is_some()
    );

    // A stored filter with a timeline limit.
    let stored = post_ok(
        &server,
        &alice.access_token,
        &format!("{V3}/user/{}/filter", alice.user_id),
        json!({ "room": { "timeline": { "limit": 2 } } }),
    )
    .await;
    let filter_id = stored["filter_id"].as_str().unwrap();
    let body = sync(&server, &alice.access_token, &[("filter", filter_id)]).await;
    assert_eq!(
        bodies(timeline(&body, &room)),
        vec!["from alice", "from bob"]
    );
    assert_eq!(
        body["rooms"]["join"][&room]["timeline"]["limited"],
        json!(true)
    );

    // Lazy-loaded members: the timeline's senders and the user, not carol.
    let filter =
        json!({ "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } })
            .to_string();
    let body = sync(&server, &alice.access_token, &[("filter", &filter)]).await;
    let state = events(&body, "join", &room, "state");
    assert!(has_state(state, "m.room.member", &bob.user_id), "{body}");
    assert!(has_state(state, "m.room.member", &alice.user_id), "{body}");
    assert!(!has_state(state, "m.room.member", &carol.user_id), "{body}");
    assert!(
        has_state(state, "m.room.create", ""),
        "other state stays: {body}"
    );
    // Without lazy loading every member is there.
    let filter = json!({ "room": { "timeline": { "limit": 1 } } }).to_string();
    let body = sync(&server, &alice.access_token, &[("filter", &filter)]).await;
    assert!(has_state(
        events(&body, "join", &room, "state"),
        "m.room.member",
        &carol.user_id
    ));

    // Unknown filter ids and bad inline filters are refused.
    let result = sync_raw(&server, &alice.access_token, &[("filter", "nope")]).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = sync_raw(&server, &alice.access_token, &[("filter", "{not json")]).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = sync_raw(
        &server,
        &alice.access_token,
        &[("filter", r#"{"room":{"timeline":{"limit":"ten"}}}"#)],
    )
    .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    server.stop().await;
}

async fn invite_section_has_stripped_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "name": "Secret club", "topic": "shh" }),
    )
    .await;
    send_text(&server, &alice.access_token, &room, "members only").await;
    let before = sync(&server, &bob.access_token, &[]).await;
    assert_eq!(before["rooms"]["invite"], json!({}));
    post_ok(
        &server,
        &alice.access_token,
        &format!("{V3}/rooms/{room}/invite"),
        json!({ "user_id": bob.user_id }),
    )
    .await;
    let body = sync(
        &server,
        &bob.access_token,
        &[("since", &next_batch(&before))],
    )
    .await;
    let invite = &body["rooms"]["invite"][&room];
    let stripped = invite["invite_state"]["events"]
        .as_array()
        .expect("invite_state.events");
    for kind in [
        "m.room.create",
        "m.room.join_rules",
        "m.room.name",
        "m.room.topic",
    ] {
        assert!(has_state(stripped, kind, ""), "{kind} missing: {body}");
    }
    let name = stripped
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .unwrap();
    assert_eq!(name["content"]["name"], "Secret club");
    assert_eq!(name["sender"], alice.user_id.as_str());
    let own = stripped
        .iter()
        .find(|e| e["type"] == "m.room.member")
        .expect("the invite event");
    assert_eq!(own["state_key"], bob.user_id.as_str());
    assert_eq!(own["content"]["membership"], "invite");
    assert!(
        invite.get("timeline").is_none(),
        "invited users see no timeline"
    );
    assert!(body["rooms"]["join"].get(&room).is_none());
    assert!(
        !body.to_string().contains("members only"),
        "nothing of the room's history leaks"
    );
    // An initial sync shows the invite too.
    let initial = sync(&server, &bob.access_token, &[]).await;
    assert!(initial["rooms"]["invite"][&room].is_object(), "{initial}");
    // Joining moves the room to rooms.join, with its full state.
    let since = next_batch(&body);
    join(&server, &bob.access_token, &room).await;
    let body = sync(&server, &bob.access_token, &[("since", &since)]).await;
    assert!(body["rooms"]["invite"].get(&room).is_none(), "{body}");
    let state = events(&body, "join", &room, "state");
    assert!(
        has_state(state, "m.room.create", "") && has_state(state, "m.room.name", ""),
        "{body}"
    );
    assert!(
        has_state(timeline(&body, &room), "m.room.member", &bob.user_id),
        "{body}"
    );
    server.stop().await;
}

async fn knock_section(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "room_version": "10", "name": "Knock here",
                "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] }),
    )
    .await;
    post_ok(
        &server,
        &bob.access_token,
        &format!("{V3}/knock/{room}"),
        json!({}),
    )
    .await;
    let body = sync(&server, &bob.access_token, &[]).await;
    let stripped = body["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .expect("knock_state");
    assert!(has_state(stripped, "m.room.name", ""), "{body}");
    assert!(has_state(stripped, "m.room.member", &bob.user_id), "{body}");
    server.stop().await;
}

async fn leave_section_and_include_leave(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    join(&server, &bob.access_token, &room).await;
    send_text(&server, &alice.access_token, &room, "while bob is here").await;
    let before = sync(&server, &bob.access_token, &[]).await;
    send_text(&server, &alice.access_token, &room, "last words").await;
    post_ok(
        &server,
        &bob.access_token,
        &format!("{V3}/rooms/{room}/leave"),
        json!({}),
    )
    .await;
    send_text(&server, &alice.access_token, &room, "after bob left").await;

    // Incremental: the room moves to rooms.leave, its timeline ends with the leave.
    let body = sync(
        &server,
        &bob.access_token,
        &[("since", &next_batch(&before))],
    )
    .await;
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");
    let left = events(&body, "leave", &room, "timeline");
    assert_eq!(bodies(left), vec!["last words"], "{body}");
    let last = left.last().expect("the leave event");
    assert_eq!(last["type"], "m.room.member");
    assert_eq!(last["content"]["membership"], "leave");
    assert!(
        !body.to_string().contains("after bob left"),
        "no event after leaving: {body}"
    );
    // And afterwards nothing more comes from that room.
    let after = sync(&server, &bob.access_token, &[("since", &next_batch(&body))]).await;
    assert!(
        after["rooms"]["leave"].get(&room).is_none() && after["rooms"]["join"].get(&room).is_none()
    );
    assert!(!after.to_string().contains("after bob left"), "{after}");

    // Initial sync: left rooms only with include_leave.
    let body = sync(&server, &bob.access_token, &[]).await;
    assert!(body["rooms"]["leave"].get(&room).is_none(), "{body}");
    let filter = json!({ "room": { "include_leave": true } }).to_string();
    let body = sync(&server, &bob.access_token, &[("filter", &filter)]).await;
    let left = events(&body, "leave", &room, "timeline");
    assert_eq!(
        left.last().unwrap()["content"]["membership"],
        "leave",
        "{body}"
    );
    assert!(!body.to_string().contains("after bob left"), "{body}");
    let all: Vec<Value> = events(&body, "leave", &room, "state")
        .iter()
        .chain(left)
        .cloned()
        .collect();
    assert!(has_state(&all, "m.room.create", ""), "{body}");
    // Forgotten rooms never appear.
    post_ok(
        &server,
        &bob.access_token,
        &format!("{V3}/rooms/{room}/forget"),
        json!({}),
    )
    .await;
    let body = sync(&server, &bob.access_token, &[("filter", &filter)]).await;
    assert!(body["rooms"]["leave"].get(&room).is_none(), "{body}");
    server.stop().await;
}

async fn long_poll_returns_after_a_message(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    join(&server, &bob.access_token, &room).await;
    let since = next_batch(&sync(&server, &bob.access_token, &[]).await);
    let sender = {
        let (client, url, token) = (
            server.client.clone(),
            server.url(&format!("{V3}/rooms/{room}/send/m.room.message/late")),
            alice.access_token.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let resp = client
                .put(url)
                .bearer_auth(token)
                .json(&json!({ "msgtype": "m.text", "body": "wake up" }))
                .send()
                .await;
            assert_eq!(resp.expect("sent").status(), StatusCode::OK);
        })
    };
    let body = sync(
        &server,
        &bob.access_token,
        &[("since", &since), ("timeout", "10000")],
    )
    .await;
    sender.await.unwrap();
    assert_eq!(bodies(timeline(&body, &room)), vec!["wake up"], "{body}");
    server.stop().await;
}

async fn long_poll_wakes_on_account_data(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let since = next_batch(&sync(&server, &alice.access_token, &[]).await);
    let writer = {
        let (client, url, token) = (
            server.client.clone(),
            server.url(&format!(
                "{V3}/user/{}/account_data/org.example.late",
                alice.user_id
            )),
            alice.access_token.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let resp = client
                .put(url)
                .bearer_auth(token)
                .json(&json!({ "v": 1 }))
                .send()
                .await;
            assert_eq!(resp.expect("sent").status(), StatusCode::OK);
        })
    };
    let body = sync(
        &server,
        &alice.access_token,
        &[("since", &since), ("timeout", "10000")],
    )
    .await;
    writer.await.unwrap();
    let global = body["account_data"]["events"].as_array().unwrap();
    assert!(
        global.iter().any(|e| e["type"] == "org.example.late"),
        "{body}"
    );
    server.stop().await;
}

async fn timeout_zero_returns_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    create_room(&server, &alice.access_token, json!({})).await;
    let since = next_batch(&sync(&server, &alice.access_token, &[]).await);
    let body = sync(
        &server,
        &alice.access_token,
        &[("since", &since), ("timeout", "0")],
    )
    .await;
    assert_eq!(body["rooms"]["join"], json!({}), "{body}");
    // No timeout parameter means 0 too; full_state answers at once with everything.
    let body = sync(&server, &alice.access_token, &[("since", &since)]).await;
    assert_eq!(body["rooms"]["join"], json!({}), "{body}");
    let body = sync(
        &server,
        &alice.access_token,
        &[
            ("since", &since),
            ("full_state", "true"),
            ("timeout", "60000"),
        ],
    )
    .await;
    let room = body["rooms"]["join"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .cloned()
        .expect("full_state lists the room");
    assert!(
        has_state(events(&body, "join", &room, "state"), "m.room.create", ""),
        "{body}"
    );
    server.stop().await;
}

async fn typing_and_receipts_in_ephemeral(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    join(&server, &bob.access_token, &room).await;
    let message = send_text(&server, &bob.access_token, &room, "read me").await;
    let since = next_batch(&sync(&server, &bob.access_token, &[]).await);

    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/typing/{}", alice.user_id),
            Some(&alice.access_token),
            json!({ "typing": true, "timeout": 30000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = sync(
        &server,
        &bob.access_token,
        &[("since", &since), ("timeout", "5000")],
    )
    .await;
    let ephemeral = events(&body, "join", &room, "ephemeral");
    let typing = ephemeral
        .iter()
        .find(|e| e["type"] == "m.typing")
        .expect("m.typing");
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));
    let since = next_batch(&body);

    post_ok(
        &server,
        &alice.access_token,
        &format!("{V3}/rooms/{room}/receipt/m.read/{message}"),
        json!({}),
    )
    .await;
    let body = sync(
        &server,
        &bob.access_token,
        &[("since", &since), ("timeout", "5000")],
    )
    .await;
    let ephemeral = events(&body, "join", &room, "ephemeral");
    assert!(
        ephemeral.iter().all(|e| e["type"] != "m.typing"),
        "typing did not change: {body}"
    );
    let receipt = ephemeral
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("m.receipt");
    assert!(
        receipt["content"][&message]["m.read"][&alice.user_id]["ts"].is_i64(),
        "{body}"
    );
    let since = next_batch(&body);

    // A private receipt reaches only its owner.
    let alice_since = next_batch(&sync(&server, &alice.access_token, &[]).await);
    post_ok(
        &server,
        &alice.access_token,
        &format!("{V3}/rooms/{room}/receipt/m.read.private/{message}"),
        json!({}),
    )
    .await;
    let body = sync(&server, &bob.access_token, &[("since", &since)]).await;
    assert!(!body.to_string().contains("m.read.private"), "{body}");
    let body = sync(&server, &alice.access_token, &[("since", &alice_since)]).await;
    let ephemeral = events(&body, "join", &room, "ephemeral");
    let receipt = ephemeral
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("own private receipt");
    assert!(
        receipt["content"][&message]["m.read.private"][&alice.user_id].is_object(),
        "{body}"
    );

    // An initial sync shows current typing and receipts.
    let body = sync(&server, &bob.access_token, &[]).await;
    let ephemeral = events(&body, "join", &room, "ephemeral");
    assert!(ephemeral.iter().any(|e| e["type"] == "m.typing"), "{body}");
    assert!(ephemeral.iter().any(|e| e["type"] == "m.receipt"), "{body}");
    // The ephemeral filter can drop them.
    let filter = json!({ "room": { "ephemeral": { "not_types": ["m.typing"] } } }).to_string();
    let body = sync(&server, &bob.access_token, &[("filter", &filter)]).await;
    assert!(
        events(&body, "join", &room, "ephemeral")
            .iter()
            .all(|e| e["type"] != "m.typing")
    );
    server.stop().await;
}

async fn account_data_in_sync(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    let global = |t: &str| format!("{V3}/user/{}/account_data/{t}", alice.user_id);
    let per_room = |t: &str| format!("{V3}/user/{}/rooms/{room}/account_data/{t}", alice.user_id);
    server
        .put(
            &global("org.example.a"),
            Some(&alice.access_token),
            json!({ "a": 1 }),
        )
        .await;
    server
        .put(
            &per_room("m.tag"),
            Some(&alice.access_token),
            json!({ "tags": { "u.work": {} } }),
        )
        .await;
    let body = sync(&server, &alice.access_token, &[]).await;
    let global_events = body["account_data"]["events"].as_array().unwrap();
    assert!(
        global_events
            .iter()
            .any(|e| e["type"] == "org.example.a" && e["content"]["a"] == 1),
        "{body}"
    );
    let room_events = events(&body, "join", &room, "account_data");
    assert!(room_events.iter().any(|e| e["type"] == "m.tag"), "{body}");
    // Incremental: only what changed, and the room appears for its account data alone.
    let since = next_batch(&body);
    server
        .put(
            &global("org.example.b"),
            Some(&alice.access_token),
            json!({ "b": 2 }),
        )
        .await;
    server
        .put(
            &per_room("org.example.r"),
            Some(&alice.access_token),
            json!({ "r": 3 }),
        )
        .await;
    let body = sync(&server, &alice.access_token, &[("since", &since)]).await;
    assert_eq!(
        types(body["account_data"]["events"].as_array().unwrap()),
        vec!["org.example.b"]
    );
    assert_eq!(
        types(events(&body, "join", &room, "account_data")),
        vec!["org.example.r"]
    );
    assert!(timeline(&body, &room).is_empty());
    // A filter on account data types.
    let filter = json!({ "account_data": { "not_types": ["org.example.a"] } }).to_string();
    let body = sync(&server, &alice.access_token, &[("filter", &filter)]).await;
    assert!(!types(body["account_data"]["events"].as_array().unwrap()).contains(&"org.example.a"));
    server.stop().await;
}

async fn summary_counts_and_heroes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let dave = server.register("dave", "password-dave").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    join(&server, &carol.access_token, &room).await;
    join(&server, &bob.access_token, &room).await;
    post_ok(
        &server,
        &alice.access_token,
        &format!("{V3}/rooms/{room}/invite"),
        json!({ "user_id": dave.user_id }),
    )
    .await;
    let body = sync(&server, &alice.access_token, &[]).await;
    let summary = &body["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.joined_member_count"], 3, "{body}");
    assert_eq!(summary["m.invited_member_count"], 1, "{body}");
    assert_eq!(
        summary["m.heroes"],
        json!([bob.user_id, carol.user_id, dave.user_id]),
        "sorted, without alice"
    );
    // A named room needs no heroes.
    let named = create_room(&server, &alice.access_token, json!({ "name": "Named" })).await;
    let body = sync(&server, &alice.access_token, &[]).await;
    assert!(
        body["rooms"]["join"][&named]["summary"]
            .get("m.heroes")
            .is_none(),
        "{body}"
    );
    assert_eq!(
        body["rooms"]["join"][&named]["summary"]["m.joined_member_count"],
        1
    );
    server.stop().await;
}

async fn unread_counts_reset_by_receipt(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    join(&server, &bob.access_token, &room).await;
    send_text(&server, &alice.access_token, &room, "one").await;
    send_content(
        &server,
        &alice.access_token,
        &room,
        json!({ "msgtype": "m.text", "body": "hey bob", "m.mentions": { "user_ids": [bob.user_id] } }),
    )
    .await;
    let last = send_text(&server, &alice.access_token, &room, "three").await;
    send_text(&server, &bob.access_token, &room, "bob's own").await;
    let body = sync(&server, &bob.access_token, &[]).await;
    let unread = &body["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(
        unread["notification_count"], 3,
        "own messages do not count: {body}"
    );
    assert_eq!(unread["highlight_count"], 1, "{body}");
    // The sender has nothing unread.
    let body = sync(&server, &alice.access_token, &[]).await;
    assert_eq!(
        body["rooms"]["join"][&room]["unread_notifications"]["notification_count"],
        1
    );

    let since = next_batch(&sync(&server, &bob.access_token, &[]).await);
    post_ok(
        &server,
        &bob.access_token,
        &format!("{V3}/rooms/{room}/receipt/m.read/{last}"),
        json!({}),
    )
    .await;
    let body = sync(&server, &bob.access_token, &[("since", &since)]).await;
    let unread = &body["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(unread["notification_count"], 0, "{body}");
    assert_eq!(unread["highlight_count"], 0, "{body}");
    server.stop().await;
}

async fn malformed_requests(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    for since in [
        "garbage",
        "s1_2",
        "s-1_0_0_0",
        "s1_2_3_4_5_6_7_8",
        "sx_0_0_0",
    ] {
        let result = sync_raw(&server, &alice.access_token, &[("since", since)]).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    let result = sync_raw(&server, &alice.access_token, &[("set_presence", "busy")]).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = sync_raw(&server, &alice.access_token, &[("timeout", "-5")]).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    for presence in ["online", "offline", "unavailable"] {
        let body = sync(&server, &alice.access_token, &[("set_presence", presence)]).await;
        // Only the user's own presence (they share no room with anyone).
        for event in body["presence"]["events"].as_array().unwrap() {
            assert_eq!(event["sender"], alice.user_id, "{body}");
        }
    }
    let result = server.get(&format!("{V3}/sync"), None).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    server.stop().await;
}

async fn history_visibility_joined_hides_earlier_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.history_visibility"),
            Some(&alice.access_token),
            json!({ "history_visibility": "joined" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    send_text(&server, &alice.access_token, &room, "before bob").await;
    join(&server, &bob.access_token, &room).await;
    send_text(&server, &alice.access_token, &room, "after bob").await;
    let body = sync(&server, &bob.access_token, &[]).await;
    let timeline_events = timeline(&body, &room);
    assert_eq!(bodies(timeline_events), vec!["after bob"], "{body}");
    assert!(
        has_state(timeline_events, "m.room.member", &bob.user_id),
        "{body}"
    );
    assert!(!body.to_string().contains("before bob"), "{body}");
    // The room's state still reaches bob (in the state section or, from
    // before the visibility change, in the timeline).
    let all: Vec<Value> = events(&body, "join", &room, "state")
        .iter()
        .chain(timeline_events)
        .cloned()
        .collect();
    assert!(has_state(&all, "m.room.create", ""), "{body}");
    server.stop().await;
}

async fn profile_change_is_not_a_new_join(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    let old = send_text(&server, &alice.access_token, &room, "old").await;
    let since = next_batch(&sync(&server, &alice.access_token, &[]).await);
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.member/{}", alice.user_id),
            Some(&alice.access_token),
            json!({ "membership": "join", "displayname": "Al" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = sync(&server, &alice.access_token, &[("since", &since)]).await;
    let timeline_events = timeline(&body, &room);
    assert_eq!(
        types(timeline_events),
        vec!["m.room.member"],
        "only the profile change: {body}"
    );
    assert!(!ids(timeline_events).contains(&old));
    assert!(
        events(&body, "join", &room, "state").is_empty(),
        "no full state for a profile change: {body}"
    );
    server.stop().await;
}

backend_tests!(
    initial_sync_shows_created_room,
    incremental_sync_shows_only_new_events,
    limited_timeline_and_prev_batch,
    filters_inline_and_stored,
    invite_section_has_stripped_state,
    knock_section,
    leave_section_and_include_leave,
    long_poll_returns_after_a_message,
    long_poll_wakes_on_account_data,
    timeout_zero_returns_at_once,
    typing_and_receipts_in_ephemeral,
    account_data_in_sync,
    summary_counts_and_heroes,
    unread_counts_reset_by_receipt,
    malformed_requests,
    history_visibility_joined_hides_earlier_events,
    profile_change_is_not_a_new_join,
);
