//! Reading rooms over HTTP: one event (redacted ones too), the state,
//! `/messages` (both directions, tokens, limits, filters, lazy-loaded
//! members), `/context`, history visibility on every read path, and room
//! aliases (the directory, a room's aliases, canonical alias validation).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;

const V3: &str = "/_matrix/client/v3";

/// Percent-encodes a path segment (event ids of old room versions hold `/`
/// and `+`, aliases `#`).
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

/// A public room whose history visibility is `visibility`.
async fn public_room(server: &TestServer, token: &str, visibility: &str) -> String {
    create_room(
        server,
        token,
        json!({
            "preset": "public_chat",
            "initial_state": [{
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": { "history_visibility": visibility },
            }],
        }),
    )
    .await
}

async fn send(server: &TestServer, s: &Session, room: &str, kind: &str, content: Value) -> String {
    let txn = format!("t{}", rand_txn());
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/send/{kind}/{txn}"),
            Some(&s.access_token),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "send failed: {body}");
    body["event_id"].as_str().unwrap().to_owned()
}

fn rand_txn() -> u64 {
    rand::random()
}

async fn say(server: &TestServer, s: &Session, room: &str, text: &str) -> String {
    send(
        server,
        s,
        room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": text }),
    )
    .await
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

async fn leave(server: &TestServer, s: &Session, room: &str) {
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/leave"),
            Some(&s.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "leave failed: {body}");
}

async fn invite(server: &TestServer, s: &Session, room: &str, user_id: &str) {
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            Some(&s.access_token),
            json!({ "user_id": user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "invite failed: {body}");
}

async fn put_state(
    server: &TestServer,
    s: &Session,
    room: &str,
    kind: &str,
    key: &str,
    content: Value,
) -> (StatusCode, Value) {
    server
        .put(
            &format!("{V3}/rooms/{room}/state/{kind}/{}", enc(key)),
            Some(&s.access_token),
            content,
        )
        .await
}

async fn get_event(
    server: &TestServer,
    s: &Session,
    room: &str,
    event_id: &str,
) -> (StatusCode, Value) {
    server
        .get(
            &format!("{V3}/rooms/{room}/event/{}", enc(event_id)),
            Some(&s.access_token),
        )
        .await
}

/// `/messages` with a raw query string; asserts 200.
async fn messages(server: &TestServer, s: &Session, room: &str, query: &str) -> Value {
    let (status, body) = messages_raw(server, s, room, query).await;
    assert_eq!(status, StatusCode::OK, "/messages?{query}: {body}");
    assert!(
        body["chunk"].is_array() && body["start"].is_string(),
        "{body}"
    );
    body
}

async fn messages_raw(
    server: &TestServer,
    s: &Session,
    room: &str,
    query: &str,
) -> (StatusCode, Value) {
    server
        .get(
            &format!("{V3}/rooms/{room}/messages?{query}"),
            Some(&s.access_token),
        )
        .await
}

/// Pages through the room until `end` is gone; returns every event.
async fn paginate_all(
    server: &TestServer,
    s: &Session,
    room: &str,
    dir: &str,
    limit: u32,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..200 {
        let mut query = format!("dir={dir}&limit={limit}");
        if let Some(from) = &from {
            query.push_str(&format!("&from={}", enc(from)));
        }
        let page = messages(server, s, room, &query).await;
        if let Some(from) = &from {
            assert_eq!(
                page["start"].as_str(),
                Some(from.as_str()),
                "start echoes from"
            );
        }
        let chunk = page["chunk"].as_array().unwrap();
        assert!(chunk.len() <= limit as usize);
        events.extend(chunk.iter().cloned());
        match page.get("end").and_then(Value::as_str) {
            Some(end) => from = Some(end.to_owned()),
            None => return events,
        }
    }
    panic!("pagination never ended");
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The `body` of each `m.room.message` in `events`.
fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn chunk(page: &Value) -> Vec<Value> {
    page["chunk"].as_array().unwrap().clone()
}

async fn event_fetch(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    let event_id = say(&server, &alice, &room, "hello").await;

    let (status, event) = get_event(&server, &alice, &room, &event_id).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["event_id"], json!(event_id));
    assert_eq!(event["room_id"], json!(room));
    assert_eq!(event["sender"], json!(alice.user_id));
    assert_eq!(event["type"], "m.room.message");
    assert_eq!(event["content"]["body"], "hello");
    assert!(event["origin_server_ts"].is_i64());
    assert!(
        event["unsigned"]["transaction_id"].is_string(),
        "the sending device sees its txn id: {event}"
    );
    assert!(
        event.get("signatures").is_none() && event.get("hashes").is_none(),
        "a client event: {event}"
    );

    // Unknown events, rooms and ids.
    let unknown = get_event(&server, &alice, &room, "$doesnotexist").await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let unknown_room = get_event(&server, &alice, "!nowhere:localhost", &event_id).await;
    assert_error(&unknown_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let bad_room = get_event(&server, &alice, "nowhere", &event_id).await;
    assert_error(&bad_room, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // An event of another room is not found through this one.
    let other = create_room(&server, &alice.access_token, json!({})).await;
    let wrong_room = get_event(&server, &alice, &other, &event_id).await;
    assert_error(&wrong_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Someone who was never in the room.
    let outsider = get_event(&server, &bob, &room, &event_id).await;
    assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let no_token = server
        .get(&format!("{V3}/rooms/{room}/event/{}", enc(&event_id)), None)
        .await;
    assert_error(&no_token, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    server.stop().await;
}

async fn redacted_event_is_served_redacted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    let event_id = say(&server, &alice, &room, "oops").await;
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/redact/{}/r1", enc(&event_id)),
            Some(&alice.access_token),
            json!({ "reason": "typo" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let redaction_id = body["event_id"].as_str().unwrap().to_owned();

    let (status, event) = get_event(&server, &alice, &room, &event_id).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"], json!({}), "content stripped: {event}");
    let because = &event["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], json!(redaction_id), "{event}");
    assert_eq!(because["type"], "m.room.redaction");
    assert_eq!(because["content"]["reason"], "typo");
    // The same in /messages.
    let page = messages(&server, &alice, &room, "dir=b&limit=2").await;
    let served = chunk(&page)
        .into_iter()
        .find(|e| e["event_id"] == json!(event_id))
        .expect("in /messages");
    assert_eq!(served["content"], json!({}));
    assert_eq!(
        served["unsigned"]["redacted_because"]["event_id"],
        json!(redaction_id)
    );
    server.stop().await;
}

async fn state_reads(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat", "name": "First name" }),
    )
    .await;
    let t = Some(alice.access_token.as_str());

    let (status, all) = server.get(&format!("{V3}/rooms/{room}/state"), t).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let all = all.as_array().expect("an array of events").clone();
    let kinds: HashSet<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for kind in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.name",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    assert!(all.iter().all(|e| e["state_key"].is_string()
        && e["event_id"].is_string()
        && e["room_id"] == json!(room)));

    // The three spellings of the empty state key.
    for path in ["state/m.room.name", "state/m.room.name/"] {
        let (status, content) = server.get(&format!("{V3}/rooms/{room}/{path}"), t).await;
        assert_eq!(status, StatusCode::OK, "{path}: {content}");
        assert_eq!(content, json!({ "name": "First name" }), "{path}");
    }
    let (status, content) = server
        .get(
            &format!("{V3}/rooms/{room}/state/m.room.name/?format=content"),
            t,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content, json!({ "name": "First name" }));
    let (status, event) = server
        .get(
            &format!("{V3}/rooms/{room}/state/m.room.name?format=event"),
            t,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["type"], "m.room.name");
    assert_eq!(event["state_key"], "");
    assert_eq!(event["content"]["name"], "First name");
    assert!(event["event_id"].is_string());
    let bad_format = server
        .get(
            &format!("{V3}/rooms/{room}/state/m.room.name?format=xml"),
            t,
        )
        .await;
    assert_error(&bad_format, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let (status, member) = server
        .get(
            &format!(
                "{V3}/rooms/{room}/state/m.room.member/{}",
                enc(&alice.user_id)
            ),
            t,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["membership"], "join");

    let missing = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.topic"), t)
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let missing_key = server
        .get(
            &format!(
                "{V3}/rooms/{room}/state/m.room.member/{}",
                enc("@nobody:localhost")
            ),
            t,
        )
        .await;
    assert_error(&missing_key, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Outsiders get nothing.
    let b = Some(bob.access_token.as_str());
    assert_error(
        &server.get(&format!("{V3}/rooms/{room}/state"), b).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .get(&format!("{V3}/rooms/{room}/state/m.room.name"), b)
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .get(&format!("{V3}/rooms/!unknown:localhost/state"), b)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Bob joins, leaves; what changes afterwards stays hidden from him.
    join(&server, &bob, &room).await;
    let (_, content) = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.name"), b)
        .await;
    assert_eq!(content["name"], "First name");
    leave(&server, &bob, &room).await;
    let (status, _) = put_state(
        &server,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({ "name": "Second name" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, content) = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.name"), b)
        .await;
    assert_eq!(status, StatusCode::OK, "{content}");
    assert_eq!(content["name"], "First name", "the state when bob left");
    let (status, all) = server.get(&format!("{V3}/rooms/{room}/state"), b).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let all = all.as_array().unwrap();
    let names: Vec<&Value> = all.iter().filter(|e| e["type"] == "m.room.name").collect();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0]["content"]["name"], "First name");
    let own = all
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == json!(bob.user_id))
        .unwrap();
    assert_eq!(
        own["content"]["membership"], "leave",
        "bob sees his own departure"
    );
    let (_, content) = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.name"), t)
        .await;
    assert_eq!(
        content["name"], "Second name",
        "alice sees the current state"
    );
    server.stop().await;
}

async fn messages_paginate_both_ways(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(say(&server, &alice, &room, &format!("m{i}")).await);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();

    let backward = paginate_all(&server, &alice, &room, "b", 7).await;
    let backward_ids = ids(&backward);
    assert_eq!(
        backward_ids.iter().collect::<HashSet<_>>().len(),
        backward_ids.len(),
        "every event once"
    );
    let mut reversed = bodies(&backward);
    reversed.reverse();
    assert_eq!(reversed, expected, "newest first");
    assert_eq!(
        backward.last().unwrap()["type"],
        "m.room.create",
        "the create event comes last"
    );
    assert_eq!(backward[0]["event_id"], json!(sent[24]));

    let forward = paginate_all(&server, &alice, &room, "f", 7).await;
    assert_eq!(bodies(&forward), expected, "oldest first");
    assert_eq!(forward[0]["type"], "m.room.create");
    let mut forward_ids = ids(&forward);
    forward_ids.reverse();
    assert_eq!(
        forward_ids, backward_ids,
        "both directions see the same events"
    );

    // One page at a time: the last page has no `end`, earlier ones do.
    let page = messages(&server, &alice, &room, "dir=b&limit=5").await;
    assert_eq!(
        bodies(&chunk(&page)),
        vec!["m24", "m23", "m22", "m21", "m20"]
    );
    let end = page["end"].as_str().expect("more to come").to_owned();
    // Turning round at `end` returns the same events, oldest first.
    let back = messages(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit=5&from={}", enc(&end)),
    )
    .await;
    assert_eq!(
        bodies(&chunk(&back)),
        vec!["m20", "m21", "m22", "m23", "m24"]
    );
    let tail = messages(&server, &alice, &room, "dir=b&limit=1000").await;
    assert!(tail.get("end").is_none(), "everything read: no end");
    assert_eq!(chunk(&tail).len(), backward.len());

    // The default limit is 10; a huge one is capped, not refused.
    assert_eq!(
        chunk(&messages(&server, &alice, &room, "dir=b").await).len(),
        10
    );
    assert_eq!(
        chunk(&messages(&server, &alice, &room, "dir=b&limit=100000").await).len(),
        backward.len()
    );
    server.stop().await;
}

async fn messages_tokens_and_bounds(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(say(&server, &alice, &room, &format!("m{i}")).await);
    }
    // `to`: page backwards from the end down to a point reached going forwards.
    let all_forward = paginate_all(&server, &alice, &room, "f", 100).await;
    let before_messages = all_forward.len() - 10;
    let first = messages(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit={}", before_messages + 3),
    )
    .await;
    assert_eq!(bodies(&chunk(&first)), vec!["m0", "m1", "m2"]);
    let point = first["end"].as_str().unwrap().to_owned();
    let down_to = messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=100&to={}", enc(&point)),
    )
    .await;
    assert_eq!(
        bodies(&chunk(&down_to)),
        vec!["m9", "m8", "m7", "m6", "m5", "m4", "m3"]
    );
    assert_eq!(
        chunk(&down_to).len(),
        7,
        "only the messages after the point"
    );
    let up_to = messages(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit=100&from={}&to={}", enc(&point), enc(&point)),
    )
    .await;
    assert!(chunk(&up_to).is_empty());

    // Sync tokens: the events position means "just after this stream position".
    let pos = server
        .storage()
        .event(&sent[5])
        .await
        .unwrap()
        .expect("stored")
        .stream_pos;
    let sync = format!("s{pos}_0_0_0");
    let back = messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=2&from={sync}"),
    )
    .await;
    assert_eq!(back["start"], json!(sync));
    assert_eq!(bodies(&chunk(&back)), vec!["m5", "m4"]);
    let fwd = messages(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit=2&from={sync}"),
    )
    .await;
    assert_eq!(bodies(&chunk(&fwd)), vec!["m6", "m7"]);
    let fwd_to = messages(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit=100&from={sync}&to=s{}_0_0_0", pos + 2),
    )
    .await;
    assert_eq!(bodies(&chunk(&fwd_to)), vec!["m6", "m7"]);

    // Bad requests.
    let missing_dir = messages_raw(&server, &alice, &room, "limit=3").await;
    assert_error(&missing_dir, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    for (query, errcode) in [
        ("dir=x", "M_INVALID_PARAM"),
        ("dir=b&limit=-1", "M_INVALID_PARAM"),
        ("dir=b&limit=ten", "M_INVALID_PARAM"),
        ("dir=b&from=garbage", "M_INVALID_PARAM"),
        ("dir=b&to=t1", "M_INVALID_PARAM"),
        ("dir=b&filter=notjson", "M_INVALID_PARAM"),
        ("dir=b&filter=%5B%5D", "M_INVALID_PARAM"),
        (
            "dir=b&filter=%7B%22senders%22%3A%5B%22nobody%22%5D%7D",
            "M_INVALID_PARAM",
        ),
    ] {
        let result = messages_raw(&server, &alice, &room, query).await;
        assert_error(&result, StatusCode::BAD_REQUEST, errcode);
    }
    let bob = server.register("bob", "password-bob").await;
    assert_error(
        &messages_raw(&server, &bob, &room, "dir=b").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &messages_raw(&server, &bob, "!unknown:localhost", "dir=b").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    server.stop().await;
}

fn filter_query(filter: Value) -> String {
    format!("dir=f&limit=100&filter={}", enc(&filter.to_string()))
}

async fn messages_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    say(&server, &alice, &room, "from alice").await;
    say(&server, &bob, &room, "from bob").await;
    send(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({ "msgtype": "m.image", "body": "picture", "url": "mxc://localhost/abc" }),
    )
    .await;
    send(
        &server,
        &alice,
        &room,
        "org.example.custom",
        json!({ "body": "custom" }),
    )
    .await;

    let q = filter_query;
    let page = messages(
        &server,
        &alice,
        &room,
        &q(json!({ "types": ["m.room.message"] })),
    )
    .await;
    assert_eq!(
        bodies(&chunk(&page)),
        vec!["from alice", "from bob", "picture"]
    );
    assert!(chunk(&page).iter().all(|e| e["type"] == "m.room.message"));
    let page = messages(
        &server,
        &alice,
        &room,
        &q(json!({ "types": ["m.room.*"], "not_types": ["m.room.member"] })),
    )
    .await;
    let kinds: HashSet<String> = chunk(&page)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kinds.contains("m.room.message") && kinds.contains("m.room.create"),
        "{kinds:?}"
    );
    assert!(
        !kinds.contains("m.room.member") && !kinds.contains("org.example.custom"),
        "{kinds:?}"
    );
    let page = messages(
        &server,
        &alice,
        &room,
        &q(json!({ "senders": [bob.user_id], "types": ["m.room.message"] })),
    )
    .await;
    assert_eq!(bodies(&chunk(&page)), vec!["from bob", "picture"]);
    let page = messages(
        &server,
        &alice,
        &room,
        &q(json!({ "not_senders": [bob.user_id], "types": ["m.room.message"] })),
    )
    .await;
    assert_eq!(bodies(&chunk(&page)), vec!["from alice"]);
    let page = messages(&server, &alice, &room, &q(json!({ "contains_url": true }))).await;
    assert_eq!(bodies(&chunk(&page)), vec!["picture"]);
    assert_eq!(chunk(&page).len(), 1);
    let page = messages(
        &server,
        &alice,
        &room,
        &q(json!({ "contains_url": false, "types": ["m.room.message"] })),
    )
    .await;
    assert_eq!(bodies(&chunk(&page)), vec!["from alice", "from bob"]);
    let page = messages(&server, &alice, &room, &q(json!({ "not_rooms": [room] }))).await;
    assert!(chunk(&page).is_empty());
    // A filter limit applies when the query names none.
    let page = messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&filter={}", enc(r#"{"limit":2}"#)),
    )
    .await;
    assert_eq!(chunk(&page).len(), 2);

    // Without lazy loading there is no `state`; with it, the members of the chunk's senders.
    let page = messages(&server, &alice, &room, "dir=b&limit=2").await;
    assert!(page.get("state").is_none(), "{page}");
    let page = messages(
        &server,
        &alice,
        &room,
        &format!(
            "dir=b&limit=3&filter={}",
            enc(r#"{"lazy_load_members":true}"#)
        ),
    )
    .await;
    let senders: HashSet<String> = chunk(&page)
        .iter()
        .map(|e| e["sender"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        senders,
        HashSet::from([alice.user_id.clone(), bob.user_id.clone()])
    );
    let state = page["state"].as_array().expect("lazy-loaded members");
    let members: HashSet<String> = state
        .iter()
        .inspect(|e| assert_eq!(e["type"], "m.room.member"))
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(members, senders, "carol sent nothing in the chunk");
    server.stop().await;
}

/// One history visibility setting (not `world_readable`): what a user who
/// was invited and joined sees of the messages sent before the invite,
/// between invite and join, after the join, and after they left.
async fn visibility_case(server: &TestServer, visibility: &str, seen_by_joiner: &[&str]) {
    let alice = server
        .register(&format!("alice_{visibility}"), "password-alice")
        .await;
    let bob = server
        .register(&format!("bob_{visibility}"), "password-bob")
        .await;
    let carol = server
        .register(&format!("carol_{visibility}"), "password-carol")
        .await;
    let room = public_room(server, &alice.access_token, visibility).await;
    let before_invite = say(server, &alice, &room, "before invite").await;
    invite(server, &alice, &room, &bob.user_id).await;
    say(server, &alice, &room, "after invite").await;
    join(server, &bob, &room).await;
    say(server, &alice, &room, "after join").await;

    let seen = bodies(&paginate_all(server, &bob, &room, "f", 3).await);
    assert_eq!(seen, seen_by_joiner, "{visibility}: what bob sees");
    let seen_back = bodies(&paginate_all(server, &bob, &room, "b", 2).await);
    assert_eq!(
        seen_back.iter().rev().cloned().collect::<Vec<_>>(),
        seen_by_joiner,
        "{visibility}: backwards"
    );
    let fetched = get_event(server, &bob, &room, &before_invite).await;
    if seen_by_joiner.contains(&"before invite") {
        assert_eq!(fetched.0, StatusCode::OK, "{visibility}: {}", fetched.1);
    } else {
        assert_error(&fetched, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
    let context = server
        .get(
            &format!("{V3}/rooms/{room}/context/{}", enc(&before_invite)),
            Some(&bob.access_token),
        )
        .await;
    if seen_by_joiner.contains(&"before invite") {
        assert_eq!(context.0, StatusCode::OK, "{visibility}: {}", context.1);
    } else {
        assert_error(&context, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }

    // Someone who was never in the room reads nothing.
    let outsider = messages_raw(server, &carol, &room, "dir=b&limit=100").await;
    assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let outsider = get_event(server, &carol, &room, &before_invite).await;
    assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // After leaving, bob reads up to his departure and nothing after it.
    leave(server, &bob, &room).await;
    let after_leave = say(server, &alice, &room, "after leave").await;
    let seen = paginate_all(server, &bob, &room, "f", 4).await;
    assert_eq!(bodies(&seen), seen_by_joiner, "{visibility}: after leaving");
    let last = seen.last().unwrap();
    assert_eq!(
        (&last["type"], &last["state_key"]),
        (&json!("m.room.member"), &json!(bob.user_id))
    );
    assert_eq!(
        last["content"]["membership"], "leave",
        "his own leave is the last event he sees"
    );
    let seen = paginate_all(server, &bob, &room, "b", 4).await;
    assert_eq!(
        seen.len(),
        paginate_all(server, &bob, &room, "f", 100).await.len()
    );
    assert!(!bodies(&seen).contains(&"after leave".to_owned()));
    assert_error(
        &get_event(server, &bob, &room, &after_leave).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

async fn history_visibility(backend: Backend) {
    let server = TestServer::start(backend).await;
    visibility_case(&server, "joined", &["after join"]).await;
    visibility_case(&server, "invited", &["after invite", "after join"]).await;
    visibility_case(
        &server,
        "shared",
        &["before invite", "after invite", "after join"],
    )
    .await;
    server.stop().await;
}

async fn history_visibility_world_readable(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let room = public_room(&server, &alice.access_token, "world_readable").await;
    let before = say(&server, &alice, &room, "before invite").await;
    invite(&server, &alice, &room, &bob.user_id).await;
    say(&server, &alice, &room, "after invite").await;
    join(&server, &bob, &room).await;
    say(&server, &alice, &room, "after join").await;
    let seen = bodies(&paginate_all(&server, &bob, &room, "f", 3).await);
    assert_eq!(seen, vec!["before invite", "after invite", "after join"]);
    // Anyone reads a world-readable room: events, state, context.
    let page = messages(&server, &carol, &room, "dir=b&limit=100").await;
    assert_eq!(
        bodies(&chunk(&page)),
        vec!["after join", "after invite", "before invite"]
    );
    assert_eq!(
        get_event(&server, &carol, &room, &before).await.0,
        StatusCode::OK
    );
    let (status, _) = server
        .get(
            &format!("{V3}/rooms/{room}/state"),
            Some(&carol.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .get(
            &format!("{V3}/rooms/{room}/context/{}", enc(&before)),
            Some(&carol.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A former member reads on, like anyone.
    leave(&server, &bob, &room).await;
    say(&server, &alice, &room, "after leave").await;
    let seen = bodies(&paginate_all(&server, &bob, &room, "f", 100).await);
    assert_eq!(
        seen,
        vec!["before invite", "after invite", "after join", "after leave"]
    );
    server.stop().await;
}

async fn context_around_an_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat", "name": "Ctx" }),
    )
    .await;
    join(&server, &bob, &room).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        sent.push(say(&server, who, &room, &format!("m{i}")).await);
    }
    let t = Some(alice.access_token.as_str());
    let url =
        |event: &str, query: &str| format!("{V3}/rooms/{room}/context/{}?{query}", enc(event));

    let (status, ctx) = server.get(&url(&sent[5], "limit=4"), t).await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], json!(sent[5]));
    assert_eq!(
        bodies(ctx["events_before"].as_array().unwrap()),
        vec!["m4", "m3"],
        "reverse-chronological"
    );
    assert_eq!(
        bodies(ctx["events_after"].as_array().unwrap()),
        vec!["m6", "m7"],
        "chronological"
    );
    let state = ctx["state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Ctx")
    );
    // The tokens continue on either side.
    let start = ctx["start"].as_str().unwrap();
    let end = ctx["end"].as_str().unwrap();
    let older = messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=2&from={}", enc(start)),
    )
    .await;
    assert_eq!(bodies(&chunk(&older)), vec!["m2", "m1"]);
    let newer = messages(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit=5&from={}", enc(end)),
    )
    .await;
    assert_eq!(bodies(&chunk(&newer)), vec!["m8", "m9"]);

    // Default limit (10: five each side), limit 0, a filter, lazy-loaded members.
    let (_, ctx) = server.get(&url(&sent[5], ""), t).await;
    assert_eq!(ctx["events_before"].as_array().unwrap().len(), 5);
    assert_eq!(
        bodies(ctx["events_after"].as_array().unwrap()),
        vec!["m6", "m7", "m8", "m9"]
    );
    let (status, ctx) = server.get(&url(&sent[5], "limit=0"), t).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        ctx["events_before"].as_array().unwrap().is_empty()
            && ctx["events_after"].as_array().unwrap().is_empty()
    );
    assert_eq!(ctx["event"]["event_id"], json!(sent[5]));
    let filter = enc(&json!({ "senders": [alice.user_id], "lazy_load_members": true }).to_string());
    let (status, ctx) = server
        .get(&url(&sent[5], &format!("limit=4&filter={filter}")), t)
        .await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    assert_eq!(
        bodies(ctx["events_before"].as_array().unwrap()),
        vec!["m4", "m2"]
    );
    assert_eq!(
        bodies(ctx["events_after"].as_array().unwrap()),
        vec!["m6", "m8"]
    );
    assert_eq!(
        ctx["event"]["sender"],
        json!(bob.user_id),
        "the filter does not apply to the event itself"
    );
    let members: Vec<&Value> = ctx["state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .collect();
    assert!(
        members
            .iter()
            .all(|e| e["state_key"] == json!(alice.user_id)),
        "{members:?}"
    );

    // Errors.
    assert_error(
        &server.get(&url("$unknown", ""), t).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let carol = server.register("carol", "password-carol").await;
    assert_error(
        &server
            .get(&url(&sent[5], ""), Some(&carol.access_token))
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(&url(&sent[5], "limit=x"), t).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    server.stop().await;
}

fn directory(alias: &str) -> String {
    format!("{V3}/directory/room/{}", enc(alias))
}

async fn aliases(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat", "room_alias_name": "main" }),
    )
    .await;
    let other = create_room(&server, &alice.access_token, json!({})).await;
    join(&server, &bob, &room).await;
    let (a, b) = (
        Some(alice.access_token.as_str()),
        Some(bob.access_token.as_str()),
    );

    // Create, read.
    let (status, body) = server
        .put(
            &directory("#second:localhost"),
            a,
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = server.get(&directory("#second:localhost"), None).await;
    assert_eq!(status, StatusCode::OK, "no token needed: {body}");
    assert_eq!(body, json!({ "room_id": room, "servers": ["localhost"] }));
    let (status, body) = server.get(&directory("#main:localhost"), a).await;
    assert_eq!(
        (status, &body["room_id"]),
        (StatusCode::OK, &json!(room)),
        "the createRoom alias"
    );

    // Errors of PUT.
    let taken = server
        .put(
            &directory("#second:localhost"),
            a,
            json!({ "room_id": other }),
        )
        .await;
    assert_error(&taken, StatusCode::CONFLICT, "M_UNKNOWN");
    let remote = server
        .put(
            &directory("#x:elsewhere.example"),
            a,
            json!({ "room_id": room }),
        )
        .await;
    assert_error(&remote, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let invalid = server
        .put(&directory("nohash"), a, json!({ "room_id": room }))
        .await;
    assert_error(&invalid, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let unknown_room = server
        .put(
            &directory("#third:localhost"),
            a,
            json!({ "room_id": "!nope:localhost" }),
        )
        .await;
    assert_error(&unknown_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let not_member = server
        .put(
            &directory("#third:localhost"),
            Some(&carol.access_token),
            json!({ "room_id": room }),
        )
        .await;
    assert_error(&not_member, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let no_body = server
        .put(&directory("#third:localhost"), a, json!({}))
        .await;
    assert_error(&no_body, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let no_token = server
        .put(
            &directory("#third:localhost"),
            None,
            json!({ "room_id": room }),
        )
        .await;
    assert_error(&no_token, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");

    // Errors of GET.
    assert_error(
        &server.get(&directory("#missing:localhost"), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.get(&directory("#x:elsewhere.example"), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.get(&directory("missing"), None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    // The room's local aliases: members only (the room is not world-readable).
    let (status, body) = server.get(&format!("{V3}/rooms/{room}/aliases"), b).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "aliases": ["#main:localhost", "#second:localhost"] })
    );
    let outsider = server
        .get(
            &format!("{V3}/rooms/{room}/aliases"),
            Some(&carol.access_token),
        )
        .await;
    assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) = server.get(&format!("{V3}/rooms/{other}/aliases"), a).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "aliases": [] })));
    assert_error(
        &server
            .get(&format!("{V3}/rooms/!nope:localhost/aliases"), a)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (status, _) = put_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        "",
        json!({ "history_visibility": "world_readable" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .get(
            &format!("{V3}/rooms/{room}/aliases"),
            Some(&carol.access_token),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a world-readable room's aliases are public"
    );

    // DELETE: the creator, or who may send m.room.canonical_alias.
    let (status, _) = server
        .put(&directory("#bobs:localhost"), b, json!({ "room_id": room }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let by_bob = server
        .delete(&directory("#second:localhost"), b, None)
        .await;
    assert_error(&by_bob, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server
        .delete(&directory("#second:localhost"), a, None)
        .await;
    assert_eq!(status, StatusCode::OK, "alice created it");
    let (status, _) = server.delete(&directory("#bobs:localhost"), a, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "alice has the power to change the canonical alias"
    );
    assert_error(
        &server.get(&directory("#second:localhost"), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .delete(&directory("#second:localhost"), a, None)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (status, _) = server
        .put(&directory("#bobs:localhost"), b, json!({ "room_id": room }))
        .await;
    assert_eq!(status, StatusCode::OK, "a deleted alias can be taken again");
    let (status, _) = server.delete(&directory("#bobs:localhost"), b, None).await;
    assert_eq!(status, StatusCode::OK, "bob created it");
    let (_, body) = server.get(&format!("{V3}/rooms/{room}/aliases"), a).await;
    assert_eq!(body, json!({ "aliases": ["#main:localhost"] }));
    server.stop().await;
}

async fn canonical_alias_validation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "room_alias_name": "here" }),
    )
    .await;
    create_room(
        &server,
        &alice.access_token,
        json!({ "room_alias_name": "there" }),
    )
    .await;
    let (a, kind) = (&alice, "m.room.canonical_alias");

    let missing = put_state(
        &server,
        a,
        &room,
        kind,
        "",
        json!({ "alias": "#nowhere:localhost" }),
    )
    .await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    let elsewhere = put_state(
        &server,
        a,
        &room,
        kind,
        "",
        json!({ "alias": "#there:localhost" }),
    )
    .await;
    assert_error(&elsewhere, StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    let alt = put_state(
        &server,
        a,
        &room,
        kind,
        "",
        json!({ "alias": "#here:localhost", "alt_aliases": ["#there:localhost"] }),
    )
    .await;
    assert_error(&alt, StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    let malformed = put_state(
        &server,
        a,
        &room,
        kind,
        "",
        json!({ "alias": "not-an-alias" }),
    )
    .await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let (status, _) = server
        .put(
            &directory("#alt:localhost"),
            Some(&alice.access_token),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = put_state(
        &server,
        a,
        &room,
        kind,
        "",
        json!({ "alias": "#here:localhost", "alt_aliases": ["#alt:localhost"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, content) = server
        .get(
            &format!("{V3}/rooms/{room}/state/{kind}"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(
        content,
        json!({ "alias": "#here:localhost", "alt_aliases": ["#alt:localhost"] })
    );
    server.stop().await;
}

backend_tests!(
    event_fetch,
    redacted_event_is_served_redacted,
    state_reads,
    messages_paginate_both_ways,
    messages_tokens_and_bounds,
    messages_filters,
    history_visibility,
    history_visibility_world_readable,
    context_around_an_event,
    aliases,
    canonical_alias_validation,
);
