//! `/sync` under concurrent writers: many users sending into one room and
//! into many rooms at once while every member long-polls `/sync` in a loop.
//! Each member's accumulated `/sync` timeline and a full backward
//! `/messages` pagination must both hold every event exactly once, in the
//! room's order — the proof that a sync token never lets a client skip an
//! event committed later with a smaller stream position.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const V3: &str = "/_matrix/client/v3";
/// Users sending into the shared room, and messages each sends.
const USERS: usize = 20;
const MESSAGES_PER_USER: usize = 5;
/// Rooms written at once, and messages into each.
const ROOMS: usize = 50;
const MESSAGES_PER_ROOM: usize = 2;
/// A timeline limit no burst here reaches, so no response is `limited`
/// and the accumulated timelines must be complete.
const TIMELINE_LIMIT: usize = 500;
/// How long the syncing members' requests wait for something new.
const LONG_POLL_MS: u64 = 2_000;
/// `/messages` pages read at most per room.
const PAGES_MAX: usize = 100;

async fn create_room(server: &TestServer, token: &str) -> String {
    let (status, resp) = server
        .post(
            &format!("{V3}/createRoom"),
            Some(token),
            json!({ "preset": "public_chat" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom failed: {resp}");
    resp["room_id"].as_str().expect("room_id").to_owned()
}

async fn join(server: &TestServer, token: &str, room: &str) {
    let (status, body) = server
        .post(&format!("{V3}/rooms/{room}/join"), Some(token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "join failed: {body}");
}

async fn send(client: reqwest::Client, base: String, token: String, room: String, txn: String) {
    let resp = client
        .put(format!("{base}{V3}/rooms/{room}/send/m.room.message/{txn}"))
        .bearer_auth(token)
        .json(&json!({ "msgtype": "m.text", "body": txn }))
        .send()
        .await
        .expect("the request is sent");
    let status = resp.status();
    assert_eq!(
        status,
        StatusCode::OK,
        "send failed: {}",
        resp.text().await.unwrap_or_default()
    );
}

/// Syncs in a loop — long-polling `wait_ms`, or polling at once when 0 —
/// until `stop` is set, then syncs once more; returns each joined room's
/// timeline event ids in the order received.
async fn syncer(
    client: reqwest::Client,
    base: String,
    token: String,
    wait_ms: u64,
    stop: Arc<AtomicBool>,
) -> HashMap<String, Vec<String>> {
    let filter = json!({ "room": { "timeline": { "limit": TIMELINE_LIMIT } } }).to_string();
    let mut timelines: HashMap<String, Vec<String>> = HashMap::new();
    let mut since: Option<String> = None;
    loop {
        // Read before the request: once set, every send has been answered,
        // so this last sync must bring everything that is left.
        let last = stop.load(Ordering::SeqCst);
        let timeout = if since.is_none() || last { 0 } else { wait_ms };
        let mut query = vec![("filter", filter.clone()), ("timeout", timeout.to_string())];
        if let Some(since) = &since {
            query.push(("since", since.clone()));
        }
        let resp = client
            .get(format!("{base}{V3}/sync"))
            .bearer_auth(&token)
            .query(&query)
            .send()
            .await
            .expect("sync sent");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("sync body");
        for (room, entry) in body["rooms"]["join"].as_object().expect("rooms.join") {
            assert_eq!(
                entry["timeline"]["limited"],
                json!(false),
                "{room}: {entry}"
            );
            let list = timelines.entry(room.clone()).or_default();
            for event in entry["timeline"]["events"]
                .as_array()
                .expect("timeline.events")
            {
                list.push(event["event_id"].as_str().expect("event_id").to_owned());
            }
        }
        since = Some(body["next_batch"].as_str().expect("next_batch").to_owned());
        if last {
            return timelines;
        }
    }
}

/// Every event of a room, oldest first, by paging `/messages` backwards.
async fn all_messages(server: &TestServer, token: &str, room: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..PAGES_MAX {
        let mut path = format!("{V3}/rooms/{room}/messages?dir=b&limit=100");
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let (status, page) = server.get(&path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let chunk = page["chunk"].as_array().expect("chunk");
        ids.extend(
            chunk
                .iter()
                .map(|e| e["event_id"].as_str().expect("event_id").to_owned()),
        );
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => {
                ids.reverse();
                return ids;
            }
        }
    }
    panic!("{room} has more than {PAGES_MAX} pages");
}

fn assert_exactly_once(who: &str, room: &str, seen: &[String], expected: &[String]) {
    let mut unique = seen.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        seen.len(),
        "{who} got an event twice in {room}"
    );
    assert_eq!(
        seen, expected,
        "{who}'s /sync timeline of {room} differs from the room's order"
    );
}

async fn concurrent_writers_skip_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(server.register(&format!("user{i}"), "password-sync").await);
    }
    let owner = users[0].clone();
    let helper = users[1].clone();
    let shared = create_room(&server, &owner.access_token).await;
    for user in &users[1..] {
        join(&server, &user.access_token, &shared).await;
    }
    let mut rooms = Vec::new();
    for _ in 0..ROOMS {
        let room = create_room(&server, &owner.access_token).await;
        join(&server, &helper.access_token, &room).await;
        rooms.push(room);
    }

    // Every member long-polls; the two in every room also poll without
    // waiting (a second device each), which reads the streams at many more
    // moments while writes are in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let spawn_syncer = |token: &str, wait_ms: u64| {
        tokio::spawn(syncer(
            server.client.clone(),
            server.base.clone(),
            token.to_owned(),
            wait_ms,
            stop.clone(),
        ))
    };
    let syncers: Vec<_> = users
        .iter()
        .map(|u| spawn_syncer(&u.access_token, LONG_POLL_MS))
        .collect();
    let pollers: Vec<_> = [&owner, &helper]
        .iter()
        .map(|u| spawn_syncer(&u.access_token, 0))
        .collect();

    // Everyone writes at once: USERS × MESSAGES_PER_USER into the shared
    // room, MESSAGES_PER_ROOM into each of the ROOMS rooms.
    let mut writers = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let (client, base, token, room) = (
            server.client.clone(),
            server.base.clone(),
            user.access_token.clone(),
            shared.clone(),
        );
        writers.push(tokio::spawn(async move {
            for m in 0..MESSAGES_PER_USER {
                send(
                    client.clone(),
                    base.clone(),
                    token.clone(),
                    room.clone(),
                    format!("u{i}m{m}"),
                )
                .await;
            }
        }));
    }
    for (r, room) in rooms.iter().enumerate() {
        let sender = if r % 2 == 0 { &owner } else { &helper };
        let (client, base, token, room) = (
            server.client.clone(),
            server.base.clone(),
            sender.access_token.clone(),
            room.clone(),
        );
        writers.push(tokio::spawn(async move {
            for m in 0..MESSAGES_PER_ROOM {
                send(
                    client.clone(),
                    base.clone(),
                    token.clone(),
                    room.clone(),
                    format!("r{r}m{m}"),
                )
                .await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("a writer");
    }
    stop.store(true, Ordering::SeqCst);
    let mut received = Vec::new();
    for syncer in syncers {
        received.push(syncer.await.expect("a syncer"));
    }
    let mut polled = Vec::new();
    for poller in pollers {
        polled.push(poller.await.expect("a poller"));
    }

    // The room's order, as /messages pages it.
    let shared_events = all_messages(&server, &owner.access_token, &shared).await;
    let messages = shared_events.len();
    assert!(
        messages >= USERS * MESSAGES_PER_USER,
        "{messages} events in the shared room"
    );
    for (user, timelines) in users.iter().zip(&received) {
        let seen = timelines
            .get(&shared)
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_exactly_once(&user.user_id, &shared, seen, &shared_events);
    }
    for (user, timelines) in [(&owner, &polled[0]), (&helper, &polled[1])] {
        let seen = timelines
            .get(&shared)
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_exactly_once(
            &format!("{} (polling)", user.user_id),
            &shared,
            seen,
            &shared_events,
        );
    }
    for room in &rooms {
        let expected = all_messages(&server, &owner.access_token, room).await;
        assert!(expected.len() >= MESSAGES_PER_ROOM);
        for (who, timelines) in [
            (owner.user_id.clone(), &received[0]),
            (helper.user_id.clone(), &received[1]),
            (format!("{} (polling)", owner.user_id), &polled[0]),
            (format!("{} (polling)", helper.user_id), &polled[1]),
        ] {
            let seen = timelines.get(room).map(Vec::as_slice).unwrap_or_default();
            assert_exactly_once(&who, room, seen, &expected);
        }
    }
    // The others are only in the shared room.
    for timelines in &received[2..] {
        assert_eq!(timelines.len(), 1);
    }
    server.stop().await;
}

backend_tests!(concurrent_writers_skip_nothing);
