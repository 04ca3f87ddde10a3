//! Room upgrades over HTTP: `POST /rooms/{roomId}/upgrade`.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// Percent-encodes a path segment (aliases hold `#`).
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
            &format!("{V3}/join/{}", enc(room)),
            Some(&s.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "join failed: {body}");
}

async fn get_state(server: &TestServer, s: &Session, room: &str, kind: &str) -> Value {
    let (status, body) = server
        .get(
            &format!("{V3}/rooms/{}/state/{kind}", enc(room)),
            Some(&s.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "state {kind} of {room}: {body}");
    body
}

async fn say(server: &TestServer, s: &Session, room: &str) -> (StatusCode, Value) {
    let txn: u64 = rand::random();
    server
        .put(
            &format!("{V3}/rooms/{}/send/m.room.message/t{txn}", enc(room)),
            Some(&s.access_token),
            json!({ "msgtype": "m.text", "body": "hello" }),
        )
        .await
}

async fn upgrade(
    server: &TestServer,
    s: &Session,
    room: &str,
    version: &str,
) -> (StatusCode, Value) {
    server
        .post(
            &format!("{V3}/rooms/{}/upgrade", enc(room)),
            Some(&s.access_token),
            json!({ "new_version": version }),
        )
        .await
}

/// A public room of `version` with a name, topic, world-readable history and
/// an alias; bob is a member with the default level.
async fn upgrade_from(backend: Backend, from: &str, to: &str) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let alias_name = format!("upg{from}to{to}");
    let old = create_room(
        &server,
        &alice,
        json!({
            "room_version": from,
            "preset": "public_chat",
            "room_alias_name": alias_name,
            "name": "The room",
            "topic": "What it is about",
            "initial_state": [{
                "type": "m.room.history_visibility",
                "content": { "history_visibility": "world_readable" },
            }],
        }),
    )
    .await;
    join(&server, &bob, &old).await;
    let (status, _) = say(&server, &bob, &old).await;
    assert_eq!(status, StatusCode::OK);
    let alias = format!("#{alias_name}:{}", alice.user_id.split_once(':').unwrap().1);

    let (status, body) = upgrade(&server, &alice, &old, to).await;
    assert_eq!(status, StatusCode::OK, "upgrade failed: {body}");
    let new = body["replacement_room"]
        .as_str()
        .expect("replacement_room")
        .to_owned();
    assert_ne!(new, old);

    // The old room points to the new one.
    let tombstone = get_state(&server, &alice, &old, "m.room.tombstone").await;
    assert_eq!(tombstone["replacement_room"], json!(new));
    assert!(tombstone["body"].is_string());

    // The new room names its predecessor and has the requested version.
    let create = get_state(&server, &alice, &new, "m.room.create").await;
    assert_eq!(create["room_version"], json!(to));
    assert_eq!(create["predecessor"]["room_id"], json!(old));
    if to == "12" {
        assert!(create["predecessor"].get("event_id").is_none(), "{create}");
    } else {
        assert!(create["predecessor"]["event_id"].is_string(), "{create}");
    }

    // State carried over.
    assert_eq!(
        get_state(&server, &alice, &new, "m.room.name").await["name"],
        json!("The room")
    );
    assert_eq!(
        get_state(&server, &alice, &new, "m.room.topic").await["topic"],
        json!("What it is about")
    );
    assert_eq!(
        get_state(&server, &alice, &new, "m.room.join_rules").await["join_rule"],
        json!("public")
    );
    assert_eq!(
        get_state(&server, &alice, &new, "m.room.history_visibility").await["history_visibility"],
        json!("world_readable")
    );
    let pl = get_state(&server, &alice, &new, "m.room.power_levels").await;
    if to == "12" {
        // Creators are privileged by the rules, never listed.
        assert!(pl["users"].get(&alice.user_id).is_none(), "{pl}");
    } else {
        assert!(pl["users"][&alice.user_id].as_i64().unwrap() >= 100, "{pl}");
    }

    // The alias moved and the canonical alias follows it.
    let (status, body) = server
        .get(&format!("{V3}/directory/room/{}", enc(&alias)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], json!(new));
    assert_eq!(
        get_state(&server, &alice, &new, "m.room.canonical_alias").await["alias"],
        json!(alias)
    );

    // The old room is restricted: bob can no longer speak there.
    let old_pl = get_state(&server, &alice, &old, "m.room.power_levels").await;
    assert_eq!(old_pl["events_default"], json!(50));
    assert_eq!(old_pl["invite"], json!(50));
    assert_error(
        &say(&server, &bob, &old).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Bob follows the tombstone and speaks in the new room.
    join(&server, &bob, &new).await;
    let (status, body) = say(&server, &bob, &new).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

async fn upgrade_v10_to_v12(backend: Backend) {
    upgrade_from(backend, "10", "12").await;
}

async fn upgrade_v12_to_v12(backend: Backend) {
    upgrade_from(backend, "12", "12").await;
}

async fn upgrade_v12_to_v11(backend: Backend) {
    upgrade_from(backend, "12", "11").await;
}

async fn upgrade_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;

    // Bob is a member without the power to send m.room.tombstone.
    assert_error(
        &upgrade(&server, &bob, &room, "12").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // Carol is not a member.
    assert_error(
        &upgrade(&server, &carol, &room, "12").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // An unknown version.
    assert_error(
        &upgrade(&server, &alice, &room, "999").await,
        StatusCode::BAD_REQUEST,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    // An unknown room.
    assert_error(
        &upgrade(&server, &alice, "!nowhere:localhost", "12").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // No new_version.
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{}/upgrade", enc(&room)),
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Nothing happened to the room.
    let (status, _) = server
        .get(
            &format!("{V3}/rooms/{}/state/m.room.tombstone", enc(&room)),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

backend_tests!(
    upgrade_v10_to_v12,
    upgrade_v12_to_v12,
    upgrade_v12_to_v11,
    upgrade_refused,
);
