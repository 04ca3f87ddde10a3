//! Rooms over HTTP: createRoom (versions, presets, aliases, initial state,
//! invites), membership (join, invite, leave, kick, ban, unban, knock,
//! restricted joins, forget), sending (messages, state, redactions,
//! transaction ids) and the errors of each.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// Percent-encodes a path segment (v3 event ids may contain `/` and `+`).
fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'!'
            | b'$'
            | b':'
            | b'@' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn create_room(server: &TestServer, token: &str, body: Value) -> String {
    let (status, resp) = server
        .post(&format!("{V3}/createRoom"), Some(token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom failed: {resp}");
    resp["room_id"].as_str().expect("room_id").to_owned()
}

async fn send_text(
    server: &TestServer,
    token: &str,
    room: &str,
    txn: &str,
    body: &str,
) -> (StatusCode, Value) {
    server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            Some(token),
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await
}

async fn state_content(
    server: &TestServer,
    token: &str,
    room: &str,
    kind: &str,
    key: &str,
) -> (StatusCode, Value) {
    server
        .get(
            &format!("{V3}/rooms/{room}/state/{kind}/{key}"),
            Some(token),
        )
        .await
}

async fn joined_rooms(server: &TestServer, token: &str) -> Vec<String> {
    let (status, body) = server.get(&format!("{V3}/joined_rooms"), Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    body["joined_rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

async fn create_room_defaults(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    // Room version 12 by default: the id is the create event's hash, with no server name.
    assert!(room.starts_with('!') && !room.contains(':'), "{room}");
    assert_eq!(
        joined_rooms(&server, &alice.access_token).await,
        vec![room.clone()]
    );
    let (status, create) =
        state_content(&server, &alice.access_token, &room, "m.room.create", "").await;
    assert_eq!(status, StatusCode::OK, "{create}");
    assert_eq!(create["room_version"], "12");
    let (_, rules) =
        state_content(&server, &alice.access_token, &room, "m.room.join_rules", "").await;
    assert_eq!(rules["join_rule"], "invite", "private_chat by default");
    let (_, member) = state_content(
        &server,
        &alice.access_token,
        &room,
        "m.room.member",
        &alice.user_id,
    )
    .await;
    assert_eq!(member["membership"], "join");
    assert_eq!(member["displayname"], "alice");
    let (status, body) = server
        .get(
            &format!("{V3}/rooms/{room}/joined_members"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["joined"][&alice.user_id]["display_name"], "alice");
    server.stop().await;
}

async fn create_room_every_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    for version in 1..=12 {
        let room = create_room(
            &server,
            &alice.access_token,
            json!({ "room_version": version.to_string(), "preset": "public_chat", "name": format!("v{version}") }),
        )
        .await;
        if version < 12 {
            assert!(room.ends_with(":localhost"), "v{version}: {room}");
        }
        // A second user joins, speaks, and the creator redacts it.
        let (status, body) = server
            .post(
                &format!("{V3}/rooms/{room}/join"),
                Some(&bob.access_token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "v{version} join: {body}");
        let (status, body) = send_text(&server, &bob.access_token, &room, "t1", "hello").await;
        assert_eq!(status, StatusCode::OK, "v{version} send: {body}");
        let event_id = body["event_id"].as_str().unwrap().to_owned();
        assert!(event_id.starts_with('$'));
        if version <= 2 {
            assert!(
                event_id.ends_with(":localhost"),
                "v{version} event ids are $local:server"
            );
        }
        let (status, body) = server
            .put(
                &format!("{V3}/rooms/{room}/redact/{}/r1", enc(&event_id)),
                Some(&alice.access_token),
                json!({"reason": "test"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "v{version} redact: {body}");
        let (_, name) = state_content(&server, &alice.access_token, &room, "m.room.name", "").await;
        assert_eq!(name["name"], format!("v{version}"));
    }
    for bad in ["13", "foo", ""] {
        let result = server
            .post(
                &format!("{V3}/createRoom"),
                Some(&alice.access_token),
                json!({ "room_version": bad }),
            )
            .await;
        assert_error(
            &result,
            StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
        );
    }
    server.stop().await;
}

async fn presets_and_joins(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let public = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    let private = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "private_chat" }),
    )
    .await;
    let (status, body) = server
        .post(
            &format!("{V3}/join/{public}"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], public.as_str());
    let result = server
        .post(
            &format!("{V3}/rooms/{private}/join"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // An invite opens the private room.
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{private}/invite"),
            Some(&alice.access_token),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{private}/join"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut rooms = joined_rooms(&server, &bob.access_token).await;
    rooms.sort();
    let mut expected = vec![public.clone(), private.clone()];
    expected.sort();
    assert_eq!(rooms, expected);
    // Unknown rooms and malformed ids.
    let result = server
        .post(
            &format!("{V3}/rooms/!nope:localhost/join"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let result = server
        .post(
            &format!("{V3}/join/%23nope:localhost"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    server.stop().await;
}

async fn aliases_at_creation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "room_alias_name": "lobby", "visibility": "public" }),
    )
    .await;
    let (_, canonical) = state_content(
        &server,
        &alice.access_token,
        &room,
        "m.room.canonical_alias",
        "",
    )
    .await;
    assert_eq!(canonical["alias"], "#lobby:localhost");
    let result = server
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.access_token),
            json!({ "room_alias_name": "lobby" }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_ROOM_IN_USE");
    let result = server
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.access_token),
            json!({ "room_alias_name": "a:b" }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // visibility public → public_chat: joinable through the alias.
    let (status, body) = server
        .post(
            &format!("{V3}/join/%23lobby:localhost"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    let result = server
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.access_token),
            json!({ "visibility": "secret" }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    server.stop().await;
}

async fn initial_state_name_topic_and_overrides(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({
            "name": "The room",
            "topic": "Things",
            "preset": "public_chat",
            "creation_content": { "type": "m.space" },
            "initial_state": [
                { "type": "m.room.history_visibility", "content": { "history_visibility": "joined" } },
                { "type": "m.room.name", "content": { "name": "overridden by name" } },
                { "type": "org.example.custom", "state_key": "k", "content": { "x": 1 } },
            ],
            "power_level_content_override": { "events_default": 10 },
        }),
    )
    .await;
    let token = &alice.access_token;
    assert_eq!(
        state_content(&server, token, &room, "m.room.name", "")
            .await
            .1["name"],
        "The room"
    );
    let topic = state_content(&server, token, &room, "m.room.topic", "")
        .await
        .1;
    assert_eq!(topic["topic"], "Things");
    assert_eq!(topic["m.topic"]["m.text"][0]["body"], "Things");
    assert_eq!(
        state_content(&server, token, &room, "m.room.history_visibility", "")
            .await
            .1["history_visibility"],
        "joined"
    );
    assert_eq!(
        state_content(&server, token, &room, "org.example.custom", "k")
            .await
            .1["x"],
        1
    );
    assert_eq!(
        state_content(&server, token, &room, "m.room.create", "")
            .await
            .1["type"],
        "m.space"
    );
    assert_eq!(
        state_content(&server, token, &room, "m.room.power_levels", "")
            .await
            .1["events_default"],
        10
    );
    // events_default 10: a newcomer at level 0 may not speak.
    server
        .post(
            &format!("{V3}/join/{room}"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    let result = send_text(&server, &bob.access_token, &room, "t1", "hi").await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server
        .post(
            &format!("{V3}/createRoom"),
            Some(token),
            json!({ "initial_state": [{ "type": "m.room.create", "content": {} }] }),
        )
        .await;
    assert_eq!(result.0, StatusCode::BAD_REQUEST, "{}", result.1);
    let result = server
        .post(
            &format!("{V3}/createRoom"),
            Some(token),
            json!({ "invite_3pid": [{ "medium": "email", "address": "a@b.c" }] }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.stop().await;
}

async fn invites_at_creation_and_direct_chats(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "invite": [bob.user_id], "is_direct": true, "preset": "trusted_private_chat" }),
    )
    .await;
    let (_, member) = state_content(
        &server,
        &alice.access_token,
        &room,
        "m.room.member",
        &bob.user_id,
    )
    .await;
    assert_eq!(member["membership"], "invite");
    assert_eq!(member["is_direct"], true);
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/join"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // v12 trusted_private_chat: the invitee is a creator too, with unlimited power.
    let (_, create) = state_content(&server, &alice.access_token, &room, "m.room.create", "").await;
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.name/"),
            Some(&bob.access_token),
            json!({ "name": "ours" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = server
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.access_token),
            json!({ "invite": ["@nobody:localhost"] }),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let result = server
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.access_token),
            json!({ "invite": ["@x:elsewhere.example"] }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.stop().await;
}

async fn sending_and_transaction_ids(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    let (status, first) = send_text(&server, &alice.access_token, &room, "txn-1", "hello").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (_, again) = send_text(&server, &alice.access_token, &room, "txn-1", "hello").await;
    assert_eq!(
        first["event_id"], again["event_id"],
        "the same transaction is the same event"
    );
    // Another device may reuse the transaction id.
    let (_, login) = server.login("alice", "password-alice").await;
    let other = login["access_token"].as_str().unwrap();
    let (_, third) = send_text(&server, other, &room, "txn-1", "hello").await;
    assert_ne!(first["event_id"], third["event_id"]);
    // Idempotence survives a restart.
    server.restart().await;
    let (_, after) = send_text(&server, &alice.access_token, &room, "txn-1", "hello").await;
    assert_eq!(first["event_id"], after["event_id"]);
    let (status, _) = send_text(
        &server,
        &alice.access_token,
        &room,
        "txn-2",
        "after restart",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

async fn sending_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    // Not in the room.
    let result = send_text(&server, &bob.access_token, &room, "t", "hi").await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Unknown room.
    let result = send_text(
        &server,
        &alice.access_token,
        "!unknown:localhost",
        "t",
        "hi",
    )
    .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Over the PDU size limit.
    let big = "x".repeat(70_000);
    let result = send_text(&server, &alice.access_token, &room, "big", &big).await;
    assert_error(&result, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    // Floats are not canonical JSON.
    let result = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/f"),
            Some(&alice.access_token),
            json!({ "body": "x", "n": 1.5 }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/n"),
            Some(&alice.access_token),
            json!({ "n": 9_007_199_254_740_992_i64 }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .request_raw(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/send/m.room.message/j"),
            Some(&alice.access_token),
            b"{nope".to_vec(),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    server.stop().await;
}

async fn state_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    server
        .post(
            &format!("{V3}/join/{room}"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    // A state key naming another user belongs to that user, even for the creator.
    let result = server
        .put(
            &format!("{V3}/rooms/{room}/state/org.example.status/{}", bob.user_id),
            Some(&alice.access_token),
            json!({ "s": 1 }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server
        .put(
            &format!(
                "{V3}/rooms/{room}/state/org.example.status/{}",
                alice.user_id
            ),
            Some(&alice.access_token),
            json!({ "s": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "own @-state key");
    // Power levels: a level-0 user may not rename the room; the reason says why.
    let result = server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.name"),
            Some(&bob.access_token),
            json!({ "name": "mine" }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert!(
        result.1["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("power"),
        "{}",
        result.1
    );
    let (status, _) = server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.name"),
            Some(&alice.access_token),
            json!({ "name": "hers" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Canonical aliases must exist and point here.
    let result = server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.canonical_alias"),
            Some(&alice.access_token),
            json!({ "alias": "#missing:localhost" }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    server.stop().await;
}

async fn leave_kick_ban_unban_forget(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    let url = |action: &str| format!("{V3}/rooms/{room}/{action}");
    server
        .post(&url("join"), Some(&bob.access_token), json!({}))
        .await;
    // A member may not kick the creator.
    let result = server
        .post(
            &url("kick"),
            Some(&bob.access_token),
            json!({ "user_id": alice.user_id }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server
        .post(
            &url("kick"),
            Some(&alice.access_token),
            json!({ "user_id": bob.user_id, "reason": "bye" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(joined_rooms(&server, &bob.access_token).await.is_empty());
    let (_, member) = state_content(
        &server,
        &alice.access_token,
        &room,
        "m.room.member",
        &bob.user_id,
    )
    .await;
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["reason"], "bye");
    // Rejoin, then a ban keeps bob out until unbanned.
    server
        .post(&url("join"), Some(&bob.access_token), json!({}))
        .await;
    let (status, _) = server
        .post(
            &url("ban"),
            Some(&alice.access_token),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let result = server
        .post(&url("join"), Some(&bob.access_token), json!({}))
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server
        .post(
            &url("unban"),
            Some(&alice.access_token),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let result = server
        .post(
            &url("unban"),
            Some(&alice.access_token),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server
        .post(&url("join"), Some(&bob.access_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // Forget only after leaving.
    let result = server
        .post(&url("forget"), Some(&bob.access_token), json!({}))
        .await;
    assert_eq!(result.0, StatusCode::BAD_REQUEST, "{}", result.1);
    let (status, _) = server
        .post(&url("leave"), Some(&bob.access_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .post(&url("forget"), Some(&bob.access_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // Members listing, filtered.
    let (status, body) = server
        .get(
            &format!("{V3}/rooms/{room}/members?membership=join"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let members: Vec<&str> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec![alice.user_id.as_str()]);
    let (_, body) = server
        .get(
            &format!("{V3}/rooms/{room}/members?not_membership=join"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(body["chunk"].as_array().unwrap().len(), 1);
    // A stranger may not list members.
    let carol = server.register("carol", "password-carol").await;
    let result = server
        .get(
            &format!("{V3}/rooms/{room}/members"),
            Some(&carol.access_token),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server
        .get(
            &format!("{V3}/rooms/{room}/joined_members"),
            Some(&carol.access_token),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.stop().await;
}

async fn redactions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    server
        .post(
            &format!("{V3}/join/{room}"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    let (_, a) = send_text(&server, &alice.access_token, &room, "a", "from alice").await;
    let (_, b) = send_text(&server, &bob.access_token, &room, "b", "from bob").await;
    let a = enc(a["event_id"].as_str().unwrap());
    let b = enc(b["event_id"].as_str().unwrap());
    // Bob may redact his own event, not Alice's.
    let result = server
        .put(
            &format!("{V3}/rooms/{room}/redact/{a}/r1"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server
        .put(
            &format!("{V3}/rooms/{room}/redact/{b}/r2"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/redact/{a}/r3"),
            Some(&alice.access_token),
            json!({ "reason": "oops" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Served redacted.
    let (status, event) = server
        .get(
            &format!("{V3}/rooms/{room}/event/{a}"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"], json!({}));
    assert_eq!(
        event["unsigned"]["redacted_because"]["content"]["reason"],
        "oops"
    );
    let result = server
        .put(
            &format!("{V3}/rooms/{room}/redact/$nope/r4"),
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    server.stop().await;
}

async fn knocking(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "room_version": "10", "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] }),
    )
    .await;
    let (status, body) = server
        .post(
            &format!("{V3}/knock/{room}"),
            Some(&bob.access_token),
            json!({ "reason": "let me in" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, member) = state_content(
        &server,
        &alice.access_token,
        &room,
        "m.room.member",
        &bob.user_id,
    )
    .await;
    assert_eq!(member["membership"], "knock");
    server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            Some(&alice.access_token),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/join"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Knocking where the rule is not knock is refused.
    let other = create_room(
        &server,
        &alice.access_token,
        json!({ "room_version": "10" }),
    )
    .await;
    let result = server
        .post(
            &format!("{V3}/knock/{other}"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Third-party invites are refused with a clear error.
    let result = server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            Some(&alice.access_token),
            json!({ "id_server": "x", "medium": "email", "address": "a@b.c" }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.stop().await;
}

async fn restricted_joins(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let space = create_room(
        &server,
        &alice.access_token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    let room = create_room(
        &server,
        &alice.access_token,
        json!({ "initial_state": [{ "type": "m.room.join_rules", "content": {
            "join_rule": "restricted",
            "allow": [{ "type": "m.room_membership", "room_id": space }],
        } }] }),
    )
    .await;
    server
        .post(
            &format!("{V3}/join/{space}"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    let (status, body) = server
        .post(
            &format!("{V3}/join/{room}"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a member of the allowed room joins: {body}"
    );
    let (_, member) = state_content(
        &server,
        &alice.access_token,
        &room,
        "m.room.member",
        &bob.user_id,
    )
    .await;
    assert_eq!(
        member["join_authorised_via_users_server"],
        alice.user_id.as_str()
    );
    let result = server
        .post(
            &format!("{V3}/join/{room}"),
            Some(&carol.access_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.stop().await;
}

async fn profile_changes_reach_rooms(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let room = create_room(&server, &alice.access_token, json!({})).await;
    let (status, _) = server
        .put(
            &format!("{V3}/profile/{}/displayname", alice.user_id),
            Some(&alice.access_token),
            json!({ "displayname": "Alice A." }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, member) = state_content(
        &server,
        &alice.access_token,
        &room,
        "m.room.member",
        &alice.user_id,
    )
    .await;
    assert_eq!(member["displayname"], "Alice A.");
    server.stop().await;
}

/// Identical v12 create events in one millisecond would name the same room:
/// a burst of identical createRoom calls still gives distinct rooms.
async fn identical_rooms_in_a_burst(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let client = server.client.clone();
        let url = format!("{}{V3}/createRoom", server.base);
        let token = alice.access_token.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()["room_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "every room has its own id");
    server.stop().await;
}

backend_tests!(
    identical_rooms_in_a_burst,
    create_room_defaults,
    create_room_every_version,
    presets_and_joins,
    aliases_at_creation,
    initial_state_name_topic_and_overrides,
    invites_at_creation_and_direct_chats,
    sending_and_transaction_ids,
    sending_errors,
    state_rules,
    leave_kick_ban_unban_forget,
    redactions,
    knocking,
    restricted_joins,
    profile_changes_reach_rooms,
);
