//! The sync engine against a real (SQLite) store and room writer, with a
//! write held in flight by hand: a response never covers a position above
//! the writer's watermark, so an event committed later at a smaller
//! position than one already written cannot be skipped. (The HTTP-level
//! concurrency test is `crates/myelin/tests/api_sync_concurrency.rs`; this
//! one makes the out-of-order commit happen every time.)

use myelin_core::config::DatabaseUrl;
use myelin_core::filter::Filter;
use myelin_core::signing_key::SigningKey;
use myelin_rooms::{CreateRoomRequest, LocalRoomWriter, RoomWriter, SendEvent, Typing};
use myelin_storage::{DynStorage, OpenOptions};
use myelin_sync::{SyncRequest, SyncSources, SyncToken, sync};
use serde_json::{Value, json};
use std::time::Duration;

const ALICE: &str = "@alice:localhost";

fn request(since: Option<&Value>, timeout: Duration) -> SyncRequest {
    SyncRequest {
        user_id: ALICE.to_owned(),
        device_id: "DEVICE".to_owned(),
        since: since.map(token),
        filter: Filter::default(),
        full_state: false,
        timeout,
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

async fn setup(dir: &tempfile::TempDir) -> (DynStorage, LocalRoomWriter) {
    let url = DatabaseUrl::Sqlite(dir.path().join("myelin.db"));
    let (storage, _) = myelin_storage::open(&url, &OpenOptions::default())
        .await
        .expect("the store opens");
    let writer = LocalRoomWriter::new(
        storage.clone(),
        "localhost".to_owned(),
        SigningKey::generate(),
    )
    .await
    .expect("the writer starts");
    (storage, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_never_passes_a_write_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, writer) = setup(&dir).await;
    let typing = Typing::new(writer.notifier().clone());
    let presence = myelin_rooms::Presence::new(writer.notifier().clone());
    let room = writer
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
    let first = sync(&src, &request(None, Duration::ZERO)).await.unwrap();

    // A write (to any room) holds position `held`; a later one commits first.
    let held = writer.events().allocate();
    let sent = writer
        .send(&room, message("committed first"))
        .await
        .unwrap();
    assert!(sent.stream_pos > held);

    // The committed event is not served yet, and the token stays below the
    // write in flight.
    let second = sync(&src, &request(Some(&first), Duration::ZERO))
        .await
        .unwrap();
    assert!(timeline_ids(&second, &room).is_empty(), "{second}");
    assert_eq!(token(&second).events, held - 1, "{second}");

    // A request waiting now is woken once the held write finishes.
    let waiting = {
        let since = second.clone();
        let (storage, events, receipts, account_data, to_device, device_lists, notifier) = (
            storage.clone(),
            writer.events().clone(),
            writer.receipts().clone(),
            writer.account_data().clone(),
            writer.to_device().clone(),
            writer.device_lists().clone(),
            writer.notifier().clone(),
        );
        let typing = typing.clone();
        let presence = presence.clone();
        tokio::spawn(async move {
            let src = SyncSources {
                storage: storage.as_ref(),
                events: &events,
                receipts: &receipts,
                account_data: &account_data,
                to_device: &to_device,
                device_lists: &device_lists,
                notifier: &notifier,
                typing: &typing,
                presence: &presence,
            };
            sync(&src, &request(Some(&since), Duration::from_secs(30)))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let woken = writer.events().finish(held, Vec::new());
    assert_eq!(
        woken,
        vec![ALICE.to_owned()],
        "the deferred wake-up of the committed event"
    );
    writer.notifier().notify(woken.iter().map(String::as_str));
    let third = waiting.await.unwrap();
    assert_eq!(
        timeline_ids(&third, &room),
        vec![sent.event_id.clone()],
        "{third}"
    );
    assert_eq!(token(&third).events, sent.stream_pos);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_past_the_bound_is_read_as_of_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, writer) = setup(&dir).await;
    let typing = Typing::new(writer.notifier().clone());
    let presence = myelin_rooms::Presence::new(writer.notifier().clone());
    let room = writer
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
    let first = sync(&src, &request(None, Duration::ZERO)).await.unwrap();
    assert!(first["rooms"]["join"][&room].is_object());

    // Alice leaves while an earlier position is in flight: her membership
    // row says "leave", but at the response's bound she is still joined.
    let held = writer.events().allocate();
    let Value::Object(leave) = json!({ "membership": "leave" }) else {
        unreachable!()
    };
    let leave = SendEvent {
        sender: ALICE.to_owned(),
        kind: "m.room.member".to_owned(),
        state_key: Some(ALICE.to_owned()),
        content: leave,
        redacts: None,
        txn: None,
    };
    writer.send(&room, leave).await.unwrap();
    let initial = sync(&src, &request(None, Duration::ZERO)).await.unwrap();
    assert!(
        initial["rooms"]["join"][&room].is_object(),
        "still joined at the bound: {initial}"
    );
    assert_eq!(initial["rooms"]["leave"], json!({}));
    let woken = writer.events().finish(held, Vec::new());
    writer.notifier().notify(woken.iter().map(String::as_str));
    let later = sync(&src, &request(Some(&initial), Duration::ZERO))
        .await
        .unwrap();
    assert!(later["rooms"]["leave"][&room].is_object(), "{later}");
    assert_eq!(later["rooms"]["join"], json!({}));
}
