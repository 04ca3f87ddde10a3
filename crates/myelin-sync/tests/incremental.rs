//! Incremental syncs of a user in several rooms: a room with no new event
//! is left out, and a range longer than [`RECENT_EVENTS_MAX`] (each room
//! reading its own events) answers as a short one does (the joined rooms'
//! events read at once).

use myelin_core::config::DatabaseUrl;
use myelin_core::filter::Filter;
use myelin_core::signing_key::SigningKey;
use myelin_rooms::{CreateRoomRequest, LocalRoomWriter, RoomWriter, SendEvent, Typing};
use myelin_storage::{DynStorage, OpenOptions};
use myelin_sync::{
    RECENT_EVENTS_MAX, SyncRequest, SyncSources, SyncToken, TIMELINE_LIMIT_DEFAULT, sync,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const ALICE: &str = "@alice:localhost";

fn request(since: Option<&Value>) -> SyncRequest {
    SyncRequest {
        user_id: ALICE.to_owned(),
        device_id: "DEVICE".to_owned(),
        since: since.map(token),
        filter: Filter::default(),
        full_state: false,
        timeout: Duration::ZERO,
    }
}

fn token(body: &Value) -> SyncToken {
    SyncToken::parse(body["next_batch"].as_str().expect("next_batch")).expect("a valid token")
}

fn message(body: &str) -> SendEvent {
    let Value::Object(content) = json!({ "msgtype": "m.text", "body": body }) else {
        unreachable!()
    };
    SendEvent {
        sender: ALICE.to_owned(),
        kind: "m.room.message".to_owned(),
        state_key: None,
        content,
        redacts: None,
        txn: None,
    }
}

fn timeline_ids(body: &Value, room: &str) -> Vec<String> {
    body["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The ids of the room's newest `limit` events, oldest first.
async fn newest(storage: &DynStorage, room: &str, limit: usize) -> Vec<String> {
    let record = storage.room(room).await.unwrap().expect("the room");
    let mut events = storage
        .room_events_by_stream(record.room_nid, i64::MIN, i64::MAX, limit as u32, true)
        .await
        .unwrap();
    events.reverse();
    events.into_iter().map(|e| e.event_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_rooms_with_new_events_whatever_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::Sqlite(dir.path().join("myelin.db"));
    let (storage, _) = myelin_storage::open(&url, &OpenOptions::default())
        .await
        .expect("the store opens");
    let writer = Arc::new(
        LocalRoomWriter::new(
            storage.clone(),
            "localhost".to_owned(),
            SigningKey::generate(),
        )
        .await
        .expect("the writer starts"),
    );
    let typing = Typing::new(writer.notifier().clone());
    let presence = myelin_rooms::Presence::new(writer.notifier().clone());
    let quiet = writer
        .create_room(ALICE, CreateRoomRequest::default())
        .await
        .unwrap();
    let busy = writer
        .create_room(ALICE, CreateRoomRequest::default())
        .await
        .unwrap();
    let src = SyncSources {
        storage: storage.as_ref(),
        events: writer.events(),
        receipts: writer.receipts(),
        account_data: writer.account_data(),
        to_device: writer.to_device(),
        device_lists: writer.device_lists(),
        notifier: writer.notifier(),
        typing: &typing,
        presence: &presence,
    };
    let initial = sync(&src, &request(None)).await.unwrap();

    // A short range: the room that got an event, and only it.
    let one = writer.send(&busy, message("one")).await.unwrap();
    let short = sync(&src, &request(Some(&initial))).await.unwrap();
    assert_eq!(
        timeline_ids(&short, &busy),
        vec![one.event_id.clone()],
        "{short}"
    );
    assert_eq!(short["rooms"]["join"][&busy]["timeline"]["limited"], false);
    assert!(short["rooms"]["join"].get(&quiet).is_none(), "{short}");

    // Nothing since: an empty answer with the same token.
    let nothing = sync(&src, &request(Some(&short))).await.unwrap();
    assert_eq!(nothing["rooms"]["join"], json!({}), "{nothing}");
    assert_eq!(token(&nothing), token(&short));

    // A range longer than the one read at once: each room reads its own.
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..RECENT_EVENTS_MAX + 5 {
        let writer = Arc::clone(&writer);
        let busy = busy.clone();
        sends.spawn(async move { writer.send(&busy, message(&format!("m{n}"))).await });
    }
    while let Some(sent) = sends.join_next().await {
        sent.unwrap().unwrap();
    }
    let last = writer.send(&quiet, message("last")).await.unwrap();
    let long = sync(&src, &request(Some(&short))).await.unwrap();
    assert!(
        token(&long).events - token(&short).events > RECENT_EVENTS_MAX,
        "{long}"
    );
    assert_eq!(
        timeline_ids(&long, &quiet),
        vec![last.event_id.clone()],
        "{long}"
    );
    assert_eq!(long["rooms"]["join"][&quiet]["timeline"]["limited"], false);
    assert_eq!(
        timeline_ids(&long, &busy),
        newest(&storage, &busy, TIMELINE_LIMIT_DEFAULT).await,
        "{long}"
    );
    assert_eq!(long["rooms"]["join"][&busy]["timeline"]["limited"], true);

    // And a short range again: only the room that changed.
    let again = writer.send(&busy, message("again")).await.unwrap();
    let short = sync(&src, &request(Some(&long))).await.unwrap();
    assert_eq!(timeline_ids(&short, &busy), [again.event_id], "{short}");
    assert!(short["rooms"]["join"].get(&quiet).is_none(), "{short}");
}
