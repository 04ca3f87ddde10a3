//! Relations over HTTP: `/relations` (every filter, pagination both ways,
//! `to`, `recurse`), edits bundled (the latest valid one; another sender's
//! or a type-changing edit ignored), reactions (a duplicate refused, allowed
//! again once redacted), `/threads` (`include`, pagination, the `m.thread`
//! aggregation), bundled aggregations in `/sync`, `/messages`, `/context`
//! and `/event`, and `unread_thread_notifications` in `/sync`.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const V1: &str = "/_matrix/client/v1";
const V3: &str = "/_matrix/client/v3";

async fn get_q(
    server: &TestServer,
    s: &Session,
    path: &str,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let req = server
        .client
        .get(server.url(path))
        .bearer_auth(&s.access_token)
        .query(params);
    let (status, _, body) = server.send(req).await;
    (status, body)
}

async fn ok_q(server: &TestServer, s: &Session, path: &str, params: &[(&str, &str)]) -> Value {
    let (status, body) = get_q(server, s, path, params).await;
    assert_eq!(status, StatusCode::OK, "GET {path} {params:?}: {body}");
    body
}

/// A public room of `owner` that `others` joined.
async fn room_with(server: &TestServer, owner: &Session, others: &[&Session]) -> String {
    let (status, resp) = server
        .post(
            &format!("{V3}/createRoom"),
            Some(&owner.access_token),
            json!({ "preset": "public_chat" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let room = resp["room_id"].as_str().unwrap().to_owned();
    for s in others {
        let (status, body) = server
            .post(
                &format!("{V3}/rooms/{room}/join"),
                Some(&s.access_token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "join: {body}");
    }
    room
}

async fn send_raw(
    server: &TestServer,
    s: &Session,
    room: &str,
    kind: &str,
    txn: &str,
    content: Value,
) -> (StatusCode, Value) {
    server
        .put(
            &format!("{V3}/rooms/{room}/send/{kind}/{txn}"),
            Some(&s.access_token),
            content,
        )
        .await
}

async fn send(server: &TestServer, s: &Session, room: &str, kind: &str, content: Value) -> String {
    let txn = format!("t{}", rand::random::<u64>());
    let (status, body) = send_raw(server, s, room, kind, &txn, content).await;
    assert_eq!(status, StatusCode::OK, "send failed: {body}");
    body["event_id"].as_str().unwrap().to_owned()
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

fn reaction(target: &str, key: &str) -> Value {
    json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } })
}

async fn edit(
    server: &TestServer,
    s: &Session,
    room: &str,
    kind: &str,
    target: &str,
    text: &str,
) -> String {
    // Edits are ordered by origin_server_ts: keep them a millisecond apart.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    send(
        server,
        s,
        room,
        kind,
        json!({
            "msgtype": "m.text",
            "body": format!("* {text}"),
            "m.new_content": { "msgtype": "m.text", "body": text },
            "m.relates_to": { "rel_type": "m.replace", "event_id": target },
        }),
    )
    .await
}

/// Owned ids, to compare with [`chunk_ids`].
fn v(ids: &[&String]) -> Vec<String> {
    ids.iter().map(|s| (*s).clone()).collect()
}

fn chunk_ids(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk: {body}"))
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn relations_endpoint(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice-1").await;
    let bob = server.register("bob", "password-bob-1").await;
    let carol = server.register("carol", "password-carol-1").await;
    let room = room_with(&server, &alice, &[&bob]).await;
    let root = say(&server, &alice, &room, "root").await;
    let t1 = reply_in_thread(&server, &bob, &room, &root, "one").await;
    let t2 = reply_in_thread(&server, &alice, &room, &root, "two").await;
    let r1 = send(&server, &bob, &room, "m.reaction", reaction(&root, "👍")).await;
    let reference = send(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({ "body": "see", "m.relates_to": { "rel_type": "m.reference", "event_id": root } }),
    )
    .await;
    // Related to a reply, not to the root: only found by recursing.
    let r2 = send(&server, &alice, &room, "m.reaction", reaction(&t1, "x")).await;
    let base = format!("{V1}/rooms/{room}/relations/{root}");

    let all = ok_q(&server, &alice, &base, &[("limit", "50")]).await;
    assert_eq!(
        chunk_ids(&all),
        v(&[&reference, &r1, &t2, &t1]),
        "newest first"
    );
    assert!(all.get("next_batch").is_none(), "{all}");
    assert!(all.get("prev_batch").is_none(), "{all}");
    assert!(all.get("recursion_depth").is_none(), "{all}");
    assert_eq!(all["chunk"][0]["room_id"], json!(room));

    let threads = ok_q(&server, &alice, &format!("{base}/m.thread"), &[]).await;
    assert_eq!(chunk_ids(&threads), v(&[&t2, &t1]));
    let reactions = ok_q(
        &server,
        &alice,
        &format!("{base}/m.annotation/m.reaction"),
        &[],
    )
    .await;
    assert_eq!(chunk_ids(&reactions), v(&[&r1]));
    let none = ok_q(
        &server,
        &alice,
        &format!("{base}/m.annotation/m.room.message"),
        &[],
    )
    .await;
    assert!(chunk_ids(&none).is_empty());

    // Backwards, one at a time.
    let p1 = ok_q(
        &server,
        &alice,
        &format!("{base}/m.thread"),
        &[("limit", "1")],
    )
    .await;
    assert_eq!(chunk_ids(&p1), v(&[&t2]));
    let n1 = p1["next_batch"].as_str().expect("next_batch").to_owned();
    let p2 = ok_q(
        &server,
        &alice,
        &format!("{base}/m.thread"),
        &[("limit", "1"), ("from", &n1)],
    )
    .await;
    assert_eq!(chunk_ids(&p2), v(&[&t1]));
    assert_eq!(p2["prev_batch"], json!(n1));
    if let Some(n2) = p2["next_batch"].as_str() {
        let p3 = ok_q(
            &server,
            &alice,
            &format!("{base}/m.thread"),
            &[("limit", "1"), ("from", n2)],
        )
        .await;
        assert!(chunk_ids(&p3).is_empty(), "{p3}");
        assert!(p3.get("next_batch").is_none(), "{p3}");
    }
    // `to` stops before the point it names.
    let upto_n1 = ok_q(&server, &alice, &format!("{base}/m.thread"), &[("to", &n1)]).await;
    assert_eq!(chunk_ids(&upto_n1), v(&[&t2]));

    // Forwards.
    let f1 = ok_q(
        &server,
        &alice,
        &format!("{base}/m.thread"),
        &[("dir", "f"), ("limit", "1")],
    )
    .await;
    assert_eq!(chunk_ids(&f1), v(&[&t1]));
    let f2 = ok_q(
        &server,
        &alice,
        &format!("{base}/m.thread"),
        &[
            ("dir", "f"),
            ("limit", "1"),
            ("from", f1["next_batch"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(chunk_ids(&f2), v(&[&t2]));
    let f_all = ok_q(&server, &alice, &base, &[("dir", "f")]).await;
    assert_eq!(chunk_ids(&f_all), v(&[&t1, &t2, &r1, &reference]));

    // Recursion.
    let deep = ok_q(
        &server,
        &alice,
        &base,
        &[("recurse", "true"), ("limit", "50")],
    )
    .await;
    assert_eq!(chunk_ids(&deep), v(&[&r2, &reference, &r1, &t2, &t1]));
    assert_eq!(deep["recursion_depth"], json!(3));
    let flat = ok_q(&server, &alice, &base, &[("recurse", "false")]).await;
    assert_eq!(flat["recursion_depth"], json!(1));
    assert!(!chunk_ids(&flat).contains(&r2));
    let deep_reactions = ok_q(
        &server,
        &alice,
        &format!("{base}/m.annotation"),
        &[("recurse", "true")],
    )
    .await;
    assert_eq!(chunk_ids(&deep_reactions), v(&[&r2, &r1]));

    // Refusals.
    assert_error(
        &get_q(&server, &alice, &base, &[("dir", "x")]).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &get_q(&server, &alice, &base, &[("from", "nonsense")]).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &get_q(
            &server,
            &alice,
            &format!("{V1}/rooms/{room}/relations/$nope"),
            &[],
        )
        .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Carol is no member of the room.
    assert_error(
        &get_q(&server, &carol, &base, &[]).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    server.stop().await;
}

async fn edits_are_bundled(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice-1").await;
    let bob = server.register("bob", "password-bob-1").await;
    let room = room_with(&server, &alice, &[&bob]).await;
    let original = say(&server, &alice, &room, "hello").await;
    let _first = edit(
        &server,
        &alice,
        &room,
        "m.room.message",
        &original,
        "hello 1",
    )
    .await;
    let latest = edit(
        &server,
        &alice,
        &room,
        "m.room.message",
        &original,
        "hello 2",
    )
    .await;
    // Ignored: another sender, another type.
    edit(&server, &bob, &room, "m.room.message", &original, "bob's").await;
    edit(&server, &alice, &room, "m.custom", &original, "other type").await;

    let (status, event) = server
        .get(
            &format!("{V3}/rooms/{room}/event/{original}"),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    // The original keeps its content (spec v1.7+); the edit is bundled whole.
    assert_eq!(event["content"]["body"], json!("hello"));
    let replace = &event["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(replace["event_id"], json!(latest), "{event}");
    assert_eq!(replace["sender"], json!(alice.user_id));
    assert_eq!(
        replace["content"]["m.new_content"]["body"],
        json!("hello 2")
    );
    assert!(replace["origin_server_ts"].is_i64());

    // An edit of an edit does not count; an edit gets no m.replace itself.
    edit(
        &server,
        &alice,
        &room,
        "m.room.message",
        &latest,
        "edit of edit",
    )
    .await;
    let (_, edited) = server
        .get(
            &format!("{V3}/rooms/{room}/event/{latest}"),
            Some(&bob.access_token),
        )
        .await;
    assert!(edited["unsigned"].get("m.relations").is_none(), "{edited}");

    // Only Bob's edit on Bob's message: his is valid.
    let bobs = say(&server, &bob, &room, "bob here").await;
    let bob_edit = edit(&server, &bob, &room, "m.room.message", &bobs, "bob there").await;
    edit(&server, &alice, &room, "m.room.message", &bobs, "alice's").await;
    let (_, event) = server
        .get(
            &format!("{V3}/rooms/{room}/event/{bobs}"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(
        event["unsigned"]["m.relations"]["m.replace"]["event_id"],
        json!(bob_edit)
    );

    // A message with only invalid edits bundles nothing.
    let lonely = say(&server, &alice, &room, "lonely").await;
    edit(&server, &bob, &room, "m.room.message", &lonely, "not yours").await;
    let (_, event) = server
        .get(
            &format!("{V3}/rooms/{room}/event/{lonely}"),
            Some(&alice.access_token),
        )
        .await;
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");
    server.stop().await;
}

async fn reactions_once_per_key(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice-1").await;
    let bob = server.register("bob", "password-bob-1").await;
    let room = room_with(&server, &alice, &[&bob]).await;
    let target = say(&server, &alice, &room, "react to me").await;

    let (status, first) = send_raw(
        &server,
        &bob,
        &room,
        "m.reaction",
        "r1",
        reaction(&target, "👍"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // A retry of the same transaction is the same event, not a duplicate.
    let (status, again) = send_raw(
        &server,
        &bob,
        &room,
        "m.reaction",
        "r1",
        reaction(&target, "👍"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["event_id"], first["event_id"]);
    // A second one is refused.
    assert_error(
        &send_raw(
            &server,
            &bob,
            &room,
            "m.reaction",
            "r2",
            reaction(&target, "👍"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_DUPLICATE_ANNOTATION",
    );
    // Another key, another user: fine.
    send(&server, &bob, &room, "m.reaction", reaction(&target, "🎉")).await;
    send(
        &server,
        &alice,
        &room,
        "m.reaction",
        reaction(&target, "👍"),
    )
    .await;
    let reactions = ok_q(
        &server,
        &alice,
        &format!("{V1}/rooms/{room}/relations/{target}/m.annotation"),
        &[("limit", "10")],
    )
    .await;
    assert_eq!(chunk_ids(&reactions).len(), 3);

    // Once redacted, the reaction may be sent again.
    let first_id = first["event_id"].as_str().unwrap();
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/redact/{first_id}/x1"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send_raw(
        &server,
        &bob,
        &room,
        "m.reaction",
        "r3",
        reaction(&target, "👍"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Racing duplicates: the room's writer lets exactly one through.
    let racing = |txn: &'static str| {
        send_raw(
            &server,
            &alice,
            &room,
            "m.reaction",
            txn,
            reaction(&target, "🚀"),
        )
    };
    let results = tokio::join!(
        racing("race1"),
        racing("race2"),
        racing("race3"),
        racing("race4")
    );
    let results = [results.0, results.1, results.2, results.3];
    let accepted = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(accepted, 1, "{results:?}");
    for refused in results
        .iter()
        .filter(|(status, _)| *status != StatusCode::OK)
    {
        assert_error(refused, StatusCode::BAD_REQUEST, "M_DUPLICATE_ANNOTATION");
    }
    server.stop().await;
}

async fn threads_list(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice-1").await;
    let bob = server.register("bob", "password-bob-1").await;
    let room = room_with(&server, &alice, &[&bob]).await;
    let a = say(&server, &alice, &room, "thread A").await;
    let b = say(&server, &alice, &room, "thread B").await;
    let _ = say(&server, &alice, &room, "no thread").await;
    reply_in_thread(&server, &bob, &room, &a, "a1").await;
    reply_in_thread(&server, &alice, &room, &b, "b1").await;
    let a2 = reply_in_thread(&server, &bob, &room, &a, "a2").await;
    let path = format!("{V1}/rooms/{room}/threads");

    let all = ok_q(&server, &bob, &path, &[]).await;
    assert_eq!(chunk_ids(&all), v(&[&a, &b]), "by latest reply");
    assert!(all.get("next_batch").is_none(), "{all}");
    let thread = &all["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], json!(2), "{all}");
    assert_eq!(thread["latest_event"]["event_id"], json!(a2));
    assert_eq!(thread["current_user_participated"], json!(true));
    let thread_b = &all["chunk"][1]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread_b["count"], json!(1));
    assert_eq!(thread_b["current_user_participated"], json!(false));

    let mine = ok_q(&server, &bob, &path, &[("include", "participated")]).await;
    assert_eq!(chunk_ids(&mine), v(&[&a]));
    // Alice sent both roots.
    let hers = ok_q(&server, &alice, &path, &[("include", "participated")]).await;
    assert_eq!(chunk_ids(&hers), v(&[&a, &b]));
    assert_eq!(
        hers["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["current_user_participated"],
        json!(true)
    );

    let p1 = ok_q(&server, &bob, &path, &[("limit", "1")]).await;
    assert_eq!(chunk_ids(&p1), v(&[&a]));
    let next = p1["next_batch"].as_str().expect("next_batch");
    let p2 = ok_q(&server, &bob, &path, &[("limit", "1"), ("from", next)]).await;
    assert_eq!(chunk_ids(&p2), v(&[&b]));
    if let Some(next) = p2["next_batch"].as_str() {
        let p3 = ok_q(&server, &bob, &path, &[("limit", "1"), ("from", next)]).await;
        assert!(chunk_ids(&p3).is_empty());
    }

    assert_error(
        &get_q(&server, &bob, &path, &[("include", "some")]).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &get_q(&server, &bob, &path, &[("from", "zz")]).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    server.stop().await;
}

/// The aggregations of `root` as a read path served it.
fn assert_bundle(event: &Value, thread_latest: &str, reference: &str, replacement: &str) {
    let relations = &event["unsigned"]["m.relations"];
    assert_eq!(relations["m.thread"]["count"], json!(1), "{event}");
    assert_eq!(
        relations["m.thread"]["latest_event"]["event_id"],
        json!(thread_latest)
    );
    assert_eq!(
        relations["m.reference"]["chunk"],
        json!([{ "event_id": reference }])
    );
    assert_eq!(relations["m.replace"]["event_id"], json!(replacement));
}

async fn aggregations_on_every_read_path(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice-1").await;
    let bob = server.register("bob", "password-bob-1").await;
    let room = room_with(&server, &alice, &[&bob]).await;
    let root = say(&server, &alice, &room, "root").await;
    let reply = reply_in_thread(&server, &bob, &room, &root, "reply").await;
    let reference = send(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({ "body": "ref", "m.relates_to": { "rel_type": "m.reference", "event_id": root } }),
    )
    .await;
    let replacement = edit(&server, &alice, &room, "m.room.message", &root, "root!").await;

    let (_, event) = server
        .get(
            &format!("{V3}/rooms/{room}/event/{root}"),
            Some(&bob.access_token),
        )
        .await;
    assert_bundle(&event, &reply, &reference, &replacement);

    let messages = ok_q(
        &server,
        &bob,
        &format!("{V3}/rooms/{room}/messages"),
        &[("dir", "b"), ("limit", "20")],
    )
    .await;
    let in_messages = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == json!(root))
        .expect("root in /messages");
    assert_bundle(in_messages, &reply, &reference, &replacement);

    let context = ok_q(
        &server,
        &bob,
        &format!("{V3}/rooms/{room}/context/{root}"),
        &[("limit", "4")],
    )
    .await;
    assert_bundle(&context["event"], &reply, &reference, &replacement);

    let sync = ok_q(
        &server,
        &bob,
        &format!("{V3}/sync"),
        &[("filter", r#"{"room":{"timeline":{"limit":20}}}"#)],
    )
    .await;
    let timeline = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{sync}"));
    let in_sync = timeline
        .iter()
        .find(|e| e["event_id"] == json!(root))
        .expect("root in /sync");
    assert_bundle(in_sync, &reply, &reference, &replacement);
    server.stop().await;
}

async fn unread_thread_notifications(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice-1").await;
    let bob = server.register("bob", "password-bob-1").await;
    let room = room_with(&server, &alice, &[&bob]).await;
    let root = say(&server, &bob, &room, "root").await;
    reply_in_thread(&server, &bob, &room, &root, "one").await;
    let last = reply_in_thread(&server, &bob, &room, &root, "two").await;
    let threaded = r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#;
    let sync_path = format!("{V3}/sync");

    let plain = ok_q(&server, &alice, &sync_path, &[]).await;
    let entry = &plain["rooms"]["join"][&room];
    assert_eq!(
        entry["unread_notifications"]["notification_count"],
        json!(3)
    );
    assert!(
        entry.get("unread_thread_notifications").is_none(),
        "{entry}"
    );

    let split = ok_q(&server, &alice, &sync_path, &[("filter", threaded)]).await;
    let entry = &split["rooms"]["join"][&room];
    assert_eq!(
        entry["unread_notifications"]["notification_count"],
        json!(1),
        "{entry}"
    );
    assert_eq!(
        entry["unread_thread_notifications"][&root]["notification_count"],
        json!(2),
        "{entry}"
    );

    // Reading the thread clears its count, not the main timeline's.
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/receipt/m.read/{last}"),
            Some(&alice.access_token),
            json!({ "thread_id": root }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let split = ok_q(&server, &alice, &sync_path, &[("filter", threaded)]).await;
    let entry = &split["rooms"]["join"][&room];
    assert_eq!(
        entry["unread_notifications"]["notification_count"],
        json!(1)
    );
    assert!(
        entry["unread_thread_notifications"].get(&root).is_none(),
        "{entry}"
    );
    // Reading the main timeline clears the rest.
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/receipt/m.read/{root}"),
            Some(&alice.access_token),
            json!({ "thread_id": "main" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let split = ok_q(&server, &alice, &sync_path, &[("filter", threaded)]).await;
    let entry = &split["rooms"]["join"][&room];
    assert_eq!(
        entry["unread_notifications"]["notification_count"],
        json!(0)
    );
    server.stop().await;
}

backend_tests!(
    relations_endpoint,
    edits_are_bundled,
    reactions_once_per_key,
    threads_list,
    aggregations_on_every_read_path,
    unread_thread_notifications,
);
