//! Room discovery over HTTP: directory visibility (and `createRoom`'s
//! `visibility`), `publicRooms` (filters, room types, pagination, other
//! servers), the space hierarchy, room summaries, and `timestamp_to_event`.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const V1: &str = "/_matrix/client/v1";
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

async fn put_state(
    server: &TestServer,
    s: &Session,
    room: &str,
    kind: &str,
    key: &str,
    content: Value,
) {
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/state/{kind}/{}", enc(key)),
            Some(&s.access_token),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "state {kind} failed: {body}");
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

fn room_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list of rooms")
        .iter()
        .map(|r| r["room_id"].as_str().expect("room_id").to_owned())
        .collect()
}

async fn directory_visibility(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let private = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let public = create_room(&server, &alice, json!({ "visibility": "public" })).await;
    let path = |room: &str| format!("{V3}/directory/list/room/{room}");

    // Reading needs no token.
    let (status, body) = server.get(&path(&private), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "visibility": "private" }));
    let (_, body) = server.get(&path(&public), None).await;
    assert_eq!(body, json!({ "visibility": "public" }));
    assert_error(
        &server.get(&path("!nowhere:localhost"), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Only members with the power to change the canonical alias publish.
    let publish = json!({ "visibility": "public" });
    assert_error(
        &server
            .put(&path(&private), Some(&bob.access_token), publish.clone())
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    join(&server, &bob, &private).await;
    assert_error(
        &server
            .put(&path(&private), Some(&bob.access_token), publish.clone())
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.put(&path(&private), None, publish.clone()).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .put(
                &path("!nowhere:localhost"),
                Some(&alice.access_token),
                publish.clone(),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(
                &path(&private),
                Some(&alice.access_token),
                json!({ "visibility": "secret" }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let (status, body) = server
        .put(&path(&private), Some(&alice.access_token), publish.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    assert_eq!(
        server.get(&path(&private), None).await.1["visibility"],
        "public"
    );
    // The spec's default is `public`; `private` unpublishes.
    let (status, _) = server
        .put(
            &path(&public),
            Some(&alice.access_token),
            json!({ "visibility": "private" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.get(&path(&public), None).await.1["visibility"],
        "private"
    );
    let (status, _) = server
        .put(&path(&public), Some(&alice.access_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.get(&path(&public), None).await.1["visibility"],
        "public"
    );
    server.stop().await;
}

async fn public_rooms(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let cheese = create_room(
        &server,
        &alice,
        json!({
            "visibility": "public",
            "preset": "public_chat",
            "name": "Cheese lovers",
            "topic": "Tasty tasty cheese",
            "room_alias_name": "cheese",
        }),
    )
    .await;
    let wine = create_room(
        &server,
        &alice,
        json!({
            "visibility": "public",
            "preset": "public_chat",
            "name": "Wine",
            "initial_state": [
                { "type": "m.room.history_visibility", "content": { "history_visibility": "world_readable" } },
                { "type": "m.room.guest_access", "content": { "guest_access": "can_join" } },
                { "type": "m.room.avatar", "content": { "url": "mxc://localhost/wine" } },
            ],
        }),
    )
    .await;
    let space = create_room(
        &server,
        &alice,
        json!({
            "visibility": "public",
            "preset": "public_chat",
            "name": "Food space",
            "creation_content": { "type": "m.space" },
        }),
    )
    .await;
    create_room(
        &server,
        &alice,
        json!({ "preset": "public_chat", "name": "Cheese secret" }),
    )
    .await;
    join(&server, &bob, &wine).await;

    // Unauthenticated GET; largest rooms first, then by room id.
    let (status, body) = server.get(&format!("{V3}/publicRooms"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = room_ids(&body["chunk"]);
    assert_eq!(listed.len(), 3, "{body}");
    assert_eq!(listed[0], wine);
    assert_eq!(body["total_room_count_estimate"], 3);
    assert!(body.get("next_batch").is_none(), "{body}");
    let chunk = |body: &Value, room: &str| -> Value {
        body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["room_id"] == room)
            .cloned()
            .unwrap_or_else(|| panic!("{room} not in {body}"))
    };
    assert_eq!(
        chunk(&body, &cheese),
        json!({
            "room_id": cheese,
            "name": "Cheese lovers",
            "topic": "Tasty tasty cheese",
            "canonical_alias": "#cheese:localhost",
            "num_joined_members": 1,
            "world_readable": false,
            "guest_can_join": false,
            "join_rule": "public",
        })
    );
    let w = chunk(&body, &wine);
    assert_eq!(w["num_joined_members"], 2);
    assert_eq!(w["world_readable"], true);
    assert_eq!(w["guest_can_join"], true);
    assert_eq!(w["avatar_url"], "mxc://localhost/wine");
    assert_eq!(chunk(&body, &space)["room_type"], "m.space");

    // Filters: a search term over name, topic and alias, and room types.
    let post = |body: Value| {
        let server = &server;
        let token = bob.access_token.clone();
        async move {
            server
                .post(&format!("{V3}/publicRooms"), Some(&token), body)
                .await
        }
    };
    let (status, body) = post(json!({ "filter": { "generic_search_term": "TASTY" } })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(room_ids(&body["chunk"]), [cheese.as_str()]);
    let (_, body) = post(json!({ "filter": { "generic_search_term": "#cheese:" } })).await;
    assert_eq!(room_ids(&body["chunk"]), [cheese.as_str()]);
    let (_, body) = post(json!({ "filter": { "generic_search_term": "nothing like it" } })).await;
    assert_eq!(room_ids(&body["chunk"]), Vec::<String>::new());
    let (_, body) = post(json!({ "filter": { "room_types": ["m.space"] } })).await;
    assert_eq!(room_ids(&body["chunk"]), [space.as_str()]);
    let (_, body) = post(json!({ "filter": { "room_types": [null] } })).await;
    let mut plain = room_ids(&body["chunk"]);
    plain.sort();
    let mut expected = vec![cheese.clone(), wine.clone()];
    expected.sort();
    assert_eq!(plain, expected);
    let (_, body) = post(json!({ "third_party_instance_id": "irc" })).await;
    assert_eq!(room_ids(&body["chunk"]), Vec::<String>::new());

    // Pagination: `since` follows `next_batch` and `prev_batch` goes back.
    let (_, first) = post(json!({ "limit": 2 })).await;
    assert_eq!(room_ids(&first["chunk"]).len(), 2);
    assert!(first.get("prev_batch").is_none(), "{first}");
    let next = first["next_batch"].as_str().expect("next_batch").to_owned();
    let (_, second) = post(json!({ "limit": 2, "since": next })).await;
    assert_eq!(room_ids(&second["chunk"]).len(), 1);
    assert!(second.get("next_batch").is_none(), "{second}");
    let prev = second["prev_batch"]
        .as_str()
        .expect("prev_batch")
        .to_owned();
    let (_, again) = server
        .get(&format!("{V3}/publicRooms?limit=2&since={prev}"), None)
        .await;
    assert_eq!(room_ids(&again["chunk"]), room_ids(&first["chunk"]));
    let mut all = room_ids(&first["chunk"]);
    all.extend(room_ids(&second["chunk"]));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3);

    // Refusals.
    assert_error(
        &post(json!({ "since": "garbage" })).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .get(&format!("{V3}/publicRooms?server=elsewhere.example"), None)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .post(
                &format!("{V3}/publicRooms?server=bad%20server!"),
                Some(&bob.access_token),
                json!({}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let (status, _) = server
        .get(&format!("{V3}/publicRooms?server=localhost"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &server
            .post(&format!("{V3}/publicRooms"), None, json!({}))
            .await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    server.stop().await;
}

async fn add_child(server: &TestServer, s: &Session, space: &str, child: &str, content: Value) {
    put_state(server, s, space, "m.space.child", child, content).await;
}

async fn space_hierarchy(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let space_body = |name: &str| json!({ "preset": "public_chat", "name": name, "creation_content": { "type": "m.space" } });
    let space = create_room(&server, &alice, space_body("Space")).await;
    let a = create_room(
        &server,
        &alice,
        json!({ "preset": "public_chat", "name": "A" }),
    )
    .await;
    let b = create_room(
        &server,
        &alice,
        json!({ "preset": "private_chat", "name": "B" }),
    )
    .await;
    let sub = create_room(&server, &alice, space_body("Sub")).await;
    let d = create_room(
        &server,
        &alice,
        json!({ "preset": "public_chat", "name": "D" }),
    )
    .await;
    let gone = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let via = json!(["localhost"]);
    add_child(
        &server,
        &alice,
        &space,
        &a,
        json!({ "via": via, "order": "a" }),
    )
    .await;
    add_child(
        &server,
        &alice,
        &space,
        &sub,
        json!({ "via": via, "order": "b", "suggested": true }),
    )
    .await;
    add_child(
        &server,
        &alice,
        &space,
        &b,
        json!({ "via": via, "order": "c" }),
    )
    .await;
    // No `via`: not a child.
    add_child(&server, &alice, &space, &gone, json!({})).await;
    add_child(
        &server,
        &alice,
        &sub,
        &d,
        json!({ "via": via, "suggested": true }),
    )
    .await;
    // A loop back to the top is walked once.
    add_child(&server, &alice, &sub, &space, json!({ "via": via })).await;
    // A child this server does not know is left out.
    add_child(
        &server,
        &alice,
        &sub,
        "!elsewhere:remote.example",
        json!({ "via": ["remote.example"] }),
    )
    .await;

    let get = |query: String| {
        let server = &server;
        let token = bob.access_token.clone();
        let space = space.clone();
        async move {
            server
                .get(
                    &format!("{V1}/rooms/{space}/hierarchy{query}"),
                    Some(&token),
                )
                .await
        }
    };
    // Bob sees the public rooms only (B is invite-only), depth first.
    let (status, body) = get(String::new()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        room_ids(&body["rooms"]),
        [space.clone(), a.clone(), sub.clone(), d.clone()]
    );
    assert!(body.get("next_batch").is_none(), "{body}");
    let top = &body["rooms"][0];
    assert_eq!(top["name"], "Space");
    assert_eq!(top["room_type"], "m.space");
    assert_eq!(top["join_rule"], "public");
    assert_eq!(top["num_joined_members"], 1);
    let children = top["children_state"].as_array().expect("children_state");
    let keys: Vec<&str> = children
        .iter()
        .map(|c| c["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [a.as_str(), sub.as_str(), b.as_str()]);
    assert_eq!(children[0]["type"], "m.space.child");
    assert_eq!(children[0]["sender"], alice.user_id);
    assert_eq!(children[0]["content"]["order"], "a");
    assert!(children[0]["origin_server_ts"].is_i64());
    assert_eq!(body["rooms"][1]["children_state"], json!([]));

    // Alice, joined to B, sees it.
    let (_, body) = server
        .get(
            &format!("{V1}/rooms/{space}/hierarchy"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(
        room_ids(&body["rooms"]),
        [space.clone(), a.clone(), sub.clone(), d.clone(), b.clone()]
    );

    // suggested_only, max_depth.
    let (_, body) = get("?suggested_only=true".into()).await;
    assert_eq!(
        room_ids(&body["rooms"]),
        [space.clone(), sub.clone(), d.clone()]
    );
    let (_, body) = get("?max_depth=1".into()).await;
    assert_eq!(
        room_ids(&body["rooms"]),
        [space.clone(), a.clone(), sub.clone()]
    );
    let (_, body) = get("?max_depth=0".into()).await;
    assert_eq!(room_ids(&body["rooms"]), [space.as_str()]);

    // Pagination.
    let (_, first) = get("?limit=2&max_depth=5".into()).await;
    assert_eq!(room_ids(&first["rooms"]), [space.clone(), a.clone()]);
    let next = first["next_batch"].as_str().expect("next_batch").to_owned();
    let (status, second) = get(format!("?limit=2&max_depth=5&from={next}")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(room_ids(&second["rooms"]), [sub.clone(), d.clone()]);
    assert!(second.get("next_batch").is_none(), "{second}");

    // Refusals.
    assert_error(
        &get(format!("?limit=2&max_depth=4&from={next}")).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &get("?from=nonsense".into()).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &get("?limit=0".into()).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &get("?max_depth=-1".into()).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .get(
                &format!("{V1}/rooms/{b}/hierarchy"),
                Some(&bob.access_token),
            )
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .get(
                &format!("{V1}/rooms/!nowhere:localhost/hierarchy"),
                Some(&bob.access_token),
            )
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    server.stop().await;
}

async fn room_summary(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let public = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "name": "Cheese",
            "topic": "Tasty",
            "room_alias_name": "cheese",
            "room_version": "11",
            "initial_state": [
                { "type": "m.room.encryption", "content": { "algorithm": "m.megolm.v1.aes-sha2" } },
            ],
        }),
    )
    .await;
    let private = create_room(
        &server,
        &alice,
        json!({ "preset": "private_chat", "name": "Secret", "creation_content": { "type": "m.space" } }),
    )
    .await;
    let summary = |room: String, token: Option<String>| {
        let server = &server;
        async move {
            server
                .get(
                    &format!("{V1}/room_summary/{}", enc(&room)),
                    token.as_deref(),
                )
                .await
        }
    };
    let bob_token = Some(bob.access_token.clone());
    let (status, body) = summary(public.clone(), bob_token.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], public);
    assert_eq!(body["name"], "Cheese");
    assert_eq!(body["topic"], "Tasty");
    assert_eq!(body["canonical_alias"], "#cheese:localhost");
    assert_eq!(body["num_joined_members"], 1);
    assert_eq!(body["join_rule"], "public");
    assert_eq!(body["world_readable"], false);
    assert_eq!(body["guest_can_join"], false);
    assert_eq!(body["room_version"], "11");
    assert_eq!(body["encryption"], "m.megolm.v1.aes-sha2");
    assert!(body.get("membership").is_none(), "{body}");
    assert!(body.get("room_type").is_none(), "{body}");
    // By alias, unauthenticated, and on MSC3266's unstable path.
    let (_, by_alias) = summary("#cheese:localhost".into(), None).await;
    assert_eq!(by_alias["room_id"], public);
    assert!(by_alias.get("membership").is_none());
    let (status, unstable) = server
        .get(
            &format!(
                "/_matrix/client/unstable/im.nheko.summary/summary/{}",
                enc(&public)
            ),
            bob_token.as_deref(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{unstable}");
    assert_eq!(unstable["room_id"], public);
    let (_, mine) = summary(public.clone(), Some(alice.access_token.clone())).await;
    assert_eq!(mine["membership"], "join");

    // A private room: members and invitees only.
    assert_error(
        &summary(private.clone(), bob_token.clone()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &summary(private.clone(), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{private}/invite"),
            Some(&alice.access_token),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = summary(private.clone(), bob_token.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["membership"], "invite");
    assert_eq!(body["room_type"], "m.space");
    assert_eq!(body["join_rule"], "invite");

    assert_error(
        &summary("!nowhere:localhost".into(), bob_token.clone()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &summary("#nowhere:localhost".into(), bob_token.clone()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &summary("nonsense".into(), bob_token).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    server.stop().await;
}

/// `origin_server_ts` of an event, as the client API serves it.
async fn ts_of(server: &TestServer, s: &Session, room: &str, event_id: &str) -> i64 {
    let (status, body) = server
        .get(
            &format!("{V3}/rooms/{room}/event/{}", enc(event_id)),
            Some(&s.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["origin_server_ts"].as_i64().expect("origin_server_ts")
}

async fn timestamp_to_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
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
    tokio::time::sleep(Duration::from_millis(5)).await;
    let m1 = say(&server, &alice, &room, "one").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let m2 = say(&server, &alice, &room, "two").await;
    let (t1, t2) = (
        ts_of(&server, &alice, &room, &m1).await,
        ts_of(&server, &alice, &room, &m2).await,
    );
    let find = |token: String, ts: i64, dir: &'static str| {
        let server = &server;
        let room = room.clone();
        async move {
            server
                .get(
                    &format!("{V1}/rooms/{room}/timestamp_to_event?ts={ts}&dir={dir}"),
                    Some(&token),
                )
                .await
        }
    };
    let a = alice.access_token.clone();
    let (status, body) = find(a.clone(), t1, "f").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "event_id": m1, "origin_server_ts": t1 }));
    let (_, body) = find(a.clone(), t2 - 1, "b").await;
    assert_eq!(body["event_id"], m1);
    let (_, body) = find(a.clone(), t1 + 1, "f").await;
    assert_eq!(body["event_id"], m2);
    let (_, body) = find(a.clone(), i64::MAX, "b").await;
    assert_eq!(body["event_id"], m2);
    assert_error(
        &find(a.clone(), t2 + 1, "f").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &find(a.clone(), 0, "b").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Bob joined after both: with `joined` history he sees neither (only
    // the room's first events, sent before `joined` was set).
    assert_error(
        &find(bob.access_token.clone(), t2, "b").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    join(&server, &bob, &room).await;
    let (status, body) = find(bob.access_token.clone(), t2, "b").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["event_id"] != m1 && body["event_id"] != m2, "{body}");
    assert!(body["origin_server_ts"].as_i64() < Some(t1), "{body}");
    let (_, body) = find(bob.access_token.clone(), t2, "f").await;
    assert_eq!(
        body["event_id"].as_str().map(|e| e != m2),
        Some(true),
        "{body}"
    );

    // Refusals.
    assert_error(
        &find(a.clone(), t1, "x").await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .get(
                &format!("{V1}/rooms/{room}/timestamp_to_event?dir=f"),
                Some(&a),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    assert_error(
        &server
            .get(
                &format!("{V1}/rooms/!nowhere:localhost/timestamp_to_event?ts=1&dir=f"),
                Some(&a),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    server.stop().await;
}

backend_tests!(
    directory_visibility,
    public_rooms,
    space_hierarchy,
    room_summary,
    timestamp_to_event,
);
