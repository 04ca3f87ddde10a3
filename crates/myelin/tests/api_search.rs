//! `POST /search` over HTTP: words found, room filter and ordering,
//! pagination, event context and groupings, nothing from rooms the user is
//! not in or from after they left, and odd search terms never a 500.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

async fn create_room(server: &TestServer, s: &Session, body: Value) -> String {
    let (status, resp) = server
        .post(&format!("{V3}/createRoom"), Some(&s.access_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["room_id"].as_str().unwrap().to_owned()
}

async fn say(server: &TestServer, s: &Session, room: &str, body: &str) -> String {
    let txn = format!("t{}", rand_suffix(body));
    let (status, resp) = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            Some(&s.access_token),
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["event_id"].as_str().unwrap().to_owned()
}

fn rand_suffix(body: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}{}", N.fetch_add(1, Ordering::Relaxed), body.len())
}

async fn search_raw(
    server: &TestServer,
    s: &Session,
    criteria: Value,
    next_batch: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = server
        .client
        .post(server.url(&format!("{V3}/search")))
        .bearer_auth(&s.access_token)
        .json(&json!({ "search_categories": { "room_events": criteria } }));
    if let Some(token) = next_batch {
        req = req.query(&[("next_batch", token)]);
    }
    let (status, _, body) = server.send(req).await;
    (status, body)
}

async fn search(server: &TestServer, s: &Session, criteria: Value) -> Value {
    let (status, body) = search_raw(server, s, criteria.clone(), None).await;
    assert_eq!(status, StatusCode::OK, "{criteria}: {body}");
    body["search_categories"]["room_events"].clone()
}

fn result_ids(events: &Value) -> Vec<String> {
    events["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["event_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn join(server: &TestServer, s: &Session, room: &str) {
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/join"),
            Some(&s.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "join: {body}");
}

async fn finds_words_with_filters_and_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let a = create_room(&server, &alice, json!({ "name": "Banana republic" })).await;
    let b = create_room(&server, &alice, json!({})).await;
    let first = say(&server, &alice, &a, "I like bananas and Banana bread").await;
    let second = say(&server, &alice, &b, "banana split").await;
    say(&server, &alice, &a, "nothing to see").await;

    let found = search(&server, &alice, json!({ "search_term": "BANANA" })).await;
    let mut ids = result_ids(&found);
    ids.sort();
    let mut want = [first.clone(), second.clone()];
    want.sort();
    // The room name event matches too ("Banana republic").
    assert_eq!(found["count"], json!(3), "{found}");
    assert!(want.iter().all(|w| ids.contains(w)), "{found}");
    assert!(
        found["highlights"]
            .as_array()
            .unwrap()
            .contains(&json!("banana"))
    );
    for r in found["results"].as_array().unwrap() {
        assert!(r["rank"].is_number(), "{r}");
    }

    // Only content.body, recent first.
    let recent = search(
        &server,
        &alice,
        json!({ "search_term": "banana", "keys": ["content.body"], "order_by": "recent" }),
    )
    .await;
    assert_eq!(result_ids(&recent), [second.clone(), first.clone()]);
    // Room filter.
    let in_a = search(
        &server,
        &alice,
        json!({ "search_term": "banana", "keys": ["content.body"], "filter": { "rooms": [a] } }),
    )
    .await;
    assert_eq!(result_ids(&in_a), std::slice::from_ref(&first));
    // A types filter that excludes messages leaves the room name.
    let names = search(
        &server,
        &alice,
        json!({ "search_term": "banana", "filter": { "types": ["m.room.name"] } }),
    )
    .await;
    assert_eq!(names["results"].as_array().unwrap().len(), 1, "{names}");
    assert_eq!(names["results"][0]["result"]["type"], json!("m.room.name"));

    // Context and groupings.
    let with_context = search(
        &server,
        &alice,
        json!({
            "search_term": "bread",
            "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
            "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
        }),
    )
    .await;
    let r = &with_context["results"][0];
    assert_eq!(r["result"]["event_id"], json!(first));
    assert_eq!(
        r["context"]["events_before"].as_array().unwrap().len(),
        1,
        "{r}"
    );
    assert_eq!(
        r["context"]["events_after"].as_array().unwrap().len(),
        1,
        "{r}"
    );
    assert!(
        r["context"]["profile_info"][&alice.user_id].is_object(),
        "{r}"
    );
    assert_eq!(
        with_context["groups"]["room_id"][&a]["results"],
        json!([first])
    );
    assert_eq!(
        with_context["groups"]["sender"][&alice.user_id]["results"],
        json!([first])
    );
    server.stop().await;
}

async fn paginates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(say(&server, &alice, &room, &format!("cherry number {i}")).await);
    }
    let criteria =
        json!({ "search_term": "cherry", "order_by": "recent", "filter": { "limit": 2 } });
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..5 {
        let (status, body) = search_raw(&server, &alice, criteria.clone(), token.as_deref()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let events = &body["search_categories"]["room_events"];
        assert_eq!(events["count"], json!(5));
        seen.extend(result_ids(events));
        token = events["next_batch"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    sent.reverse();
    assert_eq!(seen, sent);
    let bad = search_raw(&server, &alice, criteria, Some("garbage")).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    server.stop().await;
}

async fn only_rooms_and_times_the_user_may_see(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let bob = server.register("bob", "pw-bob-1").await;
    let private = create_room(&server, &alice, json!({})).await;
    say(&server, &alice, &private, "durian secret").await;
    let public = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &public).await;
    let before = say(&server, &alice, &public, "durian before leaving").await;
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{public}/leave"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    say(&server, &alice, &public, "durian after leaving").await;

    let found = search(&server, &bob, json!({ "search_term": "durian" })).await;
    assert_eq!(result_ids(&found), [before], "{found}");
    // A room filter naming a room Bob is not in gives nothing.
    let none = search(
        &server,
        &bob,
        json!({ "search_term": "durian", "filter": { "rooms": [private] } }),
    )
    .await;
    assert!(result_ids(&none).is_empty(), "{none}");
    server.stop().await;
}

async fn odd_terms_never_fail(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let room = create_room(&server, &alice, json!({})).await;
    say(&server, &alice, &room, "elder \"quoted\" text").await;
    for term in [
        "",
        " ",
        "\"",
        "\"\"",
        "*",
        "elder*",
        "NEAR(elder text)",
        "elder OR",
        "AND",
        "-elder",
        "^",
        "(",
        "'; DROP TABLE events; --",
        "\u{0}",
        "élder",
        "quoted\"",
    ] {
        let (status, body) =
            search_raw(&server, &alice, json!({ "search_term": term }), None).await;
        assert_eq!(status, StatusCode::OK, "{term:?}: {body}");
    }
    let quoted = search(&server, &alice, json!({ "search_term": "\"quoted\"" })).await;
    assert_eq!(quoted["results"].as_array().unwrap().len(), 1, "{quoted}");
    // Wrong shapes are 400 M_BAD_JSON.
    for criteria in [
        json!({}),
        json!({ "search_term": 5 }),
        json!({ "search_term": "x", "keys": ["content.nope"] }),
        json!({ "search_term": "x", "order_by": "sideways" }),
        json!({ "search_term": "x", "filter": { "limit": "ten" } }),
    ] {
        let result = search_raw(&server, &alice, criteria, None).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    // No category: nothing.
    let (status, body) = server
        .post(
            &format!("{V3}/search"),
            Some(&alice.access_token),
            json!({ "search_categories": {} }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

backend_tests!(
    finds_words_with_filters_and_order,
    paginates,
    only_rooms_and_times_the_user_may_see,
    odd_terms_never_fail,
);
