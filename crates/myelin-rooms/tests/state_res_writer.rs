//! The room writer accepting PDUs from another server that fork the room's
//! DAG and merge forks: state before each event, rejected and soft-failed
//! events, forward extremities, the current state as state resolution gives
//! it, local sends on the merged head, a restart, bad input — on real
//! storage, SQLite and PostgreSQL (at `MYELIN_TEST_POSTGRES_URL`, default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`; the PostgreSQL
//! tests fail, never skip, when it is unreachable).

use std::collections::HashMap;
use std::sync::Arc;

use myelin_core::ErrorKind;
use myelin_core::config::DatabaseUrl;
use myelin_core::signing_key::SigningKey;
use myelin_events::{Pdu, PduTemplate, RoomVersion, StateMap, build_pdu};
use myelin_rooms::{AcceptedPdu, CreateRoomRequest, LocalRoomWriter, RoomWriter, SendEvent};
use myelin_storage::{DynStorage, EventStatus, OpenOptions, StoredEvent};
use serde_json::{Map, Value, json};

const ADMIN: &str = "@admin:localhost";
const BOB: &str = "@bob:remote.test";
const CAROL: &str = "@carol:remote.test";
const EVE: &str = "@eve:remote.test";
const REMOTE: &str = "remote.test";

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database of `backend`; dropped with it.
struct TestDb {
    url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

fn postgres_admin_url() -> String {
    std::env::var("MYELIN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn pg_admin() -> tokio_postgres::Client {
    let admin = postgres_admin_url();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required and not reachable at {admin}: {e}"));
    tokio::spawn(conn);
    client
}

impl TestDb {
    async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                Self {
                    url: DatabaseUrl::Sqlite(dir.path().join("myelin.db")),
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let name = format!("myelin_test_{:016x}", rand::random::<u64>());
                pg_admin()
                    .await
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("CREATE DATABASE");
                let admin = postgres_admin_url();
                let (base, _) = admin.rsplit_once('/').expect("a database path");
                Self {
                    url: DatabaseUrl::Postgres(format!("{base}/{name}")),
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    async fn open(&self) -> DynStorage {
        myelin_storage::open(&self.url, &OpenOptions::default())
            .await
            .expect("the store opens")
            .0
    }

    async fn drop_database(self) {
        if let Some(name) = &self.pg_name {
            let _ = pg_admin()
                .await
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

async fn writer(storage: &DynStorage) -> LocalRoomWriter {
    LocalRoomWriter::new(
        storage.clone(),
        "localhost".to_owned(),
        SigningKey::generate(),
    )
    .await
    .expect("the writer starts")
}

fn object(value: Value) -> Map<String, Value> {
    let Value::Object(map) = value else {
        panic!("not an object")
    };
    map
}

fn local(kind: &str, state_key: Option<&str>, content: Value) -> SendEvent {
    SendEvent {
        sender: ADMIN.to_owned(),
        kind: kind.to_owned(),
        state_key: state_key.map(str::to_owned),
        content: object(content),
        redacts: None,
        txn: None,
    }
}

/// The room as the tests see it: storage, writer, a remote server's key.
struct Room {
    storage: DynStorage,
    writer: LocalRoomWriter,
    id: String,
    nid: i64,
    version: RoomVersion,
    remote_key: SigningKey,
}

impl Room {
    async fn create(storage: &DynStorage, version: &str) -> Self {
        let writer = writer(storage).await;
        let request = CreateRoomRequest {
            public: true,
            room_version: Some(version.to_owned()),
            ..CreateRoomRequest::default()
        };
        let id = writer
            .create_room(ADMIN, request)
            .await
            .expect("createRoom");
        let record = storage.room(&id).await.expect("room").expect("stored");
        Self {
            storage: storage.clone(),
            writer,
            nid: record.room_nid,
            version: RoomVersion::parse(version).expect("supported"),
            id,
            remote_key: SigningKey::generate(),
        }
    }

    async fn event(&self, id: &str) -> StoredEvent {
        self.storage
            .event(id)
            .await
            .expect("event")
            .unwrap_or_else(|| panic!("{id} is stored"))
    }

    async fn state_at(&self, snapshot: i64) -> StateMap {
        self.storage
            .state_at(snapshot)
            .await
            .expect("state_at")
            .into_iter()
            .map(|e| ((e.kind, e.state_key), e.event_id))
            .collect()
    }

    async fn state_after(&self, id: &str) -> StateMap {
        let event = self.event(id).await;
        self.state_at(event.state_after_nid).await
    }

    async fn state_before(&self, id: &str) -> StateMap {
        let event = self.event(id).await;
        self.state_at(event.state_before_nid).await
    }

    async fn current_state(&self) -> StateMap {
        self.storage
            .current_state(self.nid)
            .await
            .expect("current_state")
            .into_iter()
            .map(|e| ((e.kind, e.state_key.expect("state")), e.event_id))
            .collect()
    }

    async fn extremities(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .storage
            .forward_extremities(self.nid)
            .await
            .expect("extremities")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids
    }

    async fn timeline(&self) -> Vec<String> {
        self.storage
            .room_events_by_stream(self.nid, i64::MIN, i64::MAX, 1000, false)
            .await
            .expect("timeline")
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    }

    /// The event of `(kind, state_key)` in the room's current state.
    async fn current(&self, kind: &str, state_key: &str) -> String {
        self.current_state()
            .await
            .remove(&(kind.to_owned(), state_key.to_owned()))
            .unwrap_or_else(|| panic!("({kind}, {state_key}) in the current state"))
    }

    async fn send(&self, event: SendEvent) -> String {
        self.writer
            .send(&self.id, event)
            .await
            .expect("send")
            .event_id
    }

    /// The create event's id when it is an auth event (before v12).
    fn create_auth(&self, create: &str) -> Vec<String> {
        if self
            .version
            .rules
            .event_format
            .allow_room_create_in_auth_events
        {
            vec![create.to_owned()]
        } else {
            Vec::new()
        }
    }

    /// A PDU of `sender` from the remote server.
    async fn remote(
        &self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[&str],
        auth: &[&str],
    ) -> Pdu {
        let mut depth = 0;
        for p in prev {
            if let Some(e) = self.storage.event(p).await.expect("event") {
                depth = depth.max(e.depth);
            }
        }
        let template = PduTemplate {
            room_id: Some(self.id.clone()),
            sender: sender.to_owned(),
            kind: kind.to_owned(),
            state_key: state_key.map(str::to_owned),
            content: object(content),
            redacts: None,
            prev_events: prev.iter().map(|p| (*p).to_owned()).collect(),
            auth_events: auth.iter().map(|a| (*a).to_owned()).collect(),
            depth: depth + 1,
            origin_server_ts: 1_700_000_000_000,
        };
        build_pdu(&self.version, template, REMOTE, &self.remote_key).expect("build_pdu")
    }

    /// What `myelin_events::resolve` makes of the states after `ids`, with
    /// every accepted event of the room available.
    async fn resolve(&self, ids: &[&str]) -> StateMap {
        let mut sets = Vec::new();
        for id in ids {
            sets.push(self.state_after(id).await);
        }
        let all = self
            .storage
            .room_events_by_stream(self.nid, i64::MIN, i64::MAX, 1000, false)
            .await
            .expect("events");
        let mut pdus: HashMap<String, Arc<Pdu>> = HashMap::new();
        for e in all {
            let pdu = Pdu::from_json_str(&self.version, &e.json, &e.event_id).expect("parse");
            pdus.insert(e.event_id.clone(), Arc::new(pdu));
        }
        myelin_events::resolve(&self.version, &sets, |id| pdus.get(id).cloned()).expect("resolve")
    }

    async fn accept(&self, pdus: Vec<Pdu>) -> Vec<(String, Result<AcceptedPdu, ErrorKind>)> {
        self.writer
            .accept_pdus(&self.id, pdus)
            .await
            .into_iter()
            .map(|(id, r)| (id, r.map_err(|e| e.kind)))
            .collect()
    }
}

fn key(kind: &str, state_key: &str) -> (String, String) {
    (kind.to_owned(), state_key.to_owned())
}

fn status(outcome: &(String, Result<AcceptedPdu, ErrorKind>)) -> EventStatus {
    match &outcome.1 {
        Ok(accepted) => accepted.status,
        Err(e) => panic!("{} was refused: {e:?}", outcome.0),
    }
}

/// The whole story on one backend and room version.
async fn forks_merge_through_state_resolution(backend: Backend, version: &str) {
    let db = TestDb::new(backend).await;
    let storage = db.open().await;
    let room = Room::create(&storage, version).await;
    let create = room.current("m.room.create", "").await;
    let power = room.current("m.room.power_levels", "").await;
    let join_rules = room.current("m.room.join_rules", "").await;
    let [fork_point] = <[String; 1]>::try_from(room.extremities().await).expect("one head");

    // Locally: a topic, then a power level change, after the fork point.
    let topic = room
        .send(local("m.room.topic", Some(""), json!({ "topic": "local" })))
        .await;
    let mut levels = room
        .storage
        .event(&power)
        .await
        .expect("event")
        .map(|e| serde_json::from_str::<Value>(&e.json).expect("json")["content"].clone())
        .expect("power levels");
    levels["state_default"] = json!(60);
    let power2 = room
        .send(local("m.room.power_levels", Some(""), levels))
        .await;

    // Remotely, forked from before both: Bob joins and speaks.
    let mut auth = room.create_auth(&create);
    auth.extend([power.clone(), join_rules.clone()]);
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let join = room
        .remote(
            BOB,
            "m.room.member",
            Some(BOB),
            json!({ "membership": "join" }),
            &[&fork_point],
            &auth,
        )
        .await;
    let join_id = join.event_id.clone();
    // Not stored yet, so build the message's depth by hand.
    let mut say_auth = room.create_auth(&create);
    say_auth.extend([power.clone(), join_id.clone()]);
    let say_auth: Vec<&str> = say_auth.iter().map(String::as_str).collect();
    let mut hello = room
        .remote(
            BOB,
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": "hello" }),
            &[&join_id],
            &say_auth,
        )
        .await;
    if hello.depth <= join.depth {
        hello = {
            let template = PduTemplate {
                room_id: Some(room.id.clone()),
                sender: BOB.to_owned(),
                kind: "m.room.message".to_owned(),
                state_key: None,
                content: object(json!({ "msgtype": "m.text", "body": "hello" })),
                redacts: None,
                prev_events: vec![join_id.clone()],
                auth_events: say_auth.iter().map(|a| (*a).to_owned()).collect(),
                depth: join.depth + 1,
                origin_server_ts: 1_700_000_000_001,
            };
            build_pdu(&room.version, template, REMOTE, &room.remote_key).expect("build")
        };
    }
    let hello_id = hello.event_id.clone();
    // Given out of order: the writer sorts by prev_events.
    let outcomes = room.accept(vec![hello, join]).await;
    assert_eq!(outcomes[0].0, hello_id);
    assert_eq!(status(&outcomes[0]), EventStatus::Normal, "{outcomes:?}");
    assert_eq!(status(&outcomes[1]), EventStatus::Normal);
    let join_pos = outcomes[1].1.as_ref().unwrap().stream_pos;
    let hello_pos = outcomes[0].1.as_ref().unwrap().stream_pos;
    assert!(join_pos < hello_pos, "the join was written first");

    // The fork's state before is the state after its prev event.
    assert_eq!(
        room.state_before(&join_id).await,
        room.state_after(&fork_point).await
    );
    assert_eq!(
        room.state_after(&join_id)
            .await
            .get(&key("m.room.member", BOB)),
        Some(&join_id)
    );
    let mut heads = vec![power2.clone(), hello_id.clone()];
    heads.sort();
    assert_eq!(room.extremities().await, heads);
    let expected = room.resolve(&[&power2, &hello_id]).await;
    assert_eq!(room.current_state().await, expected);
    assert_eq!(expected.get(&key("m.room.topic", "")), Some(&topic));
    assert_eq!(expected.get(&key("m.room.power_levels", "")), Some(&power2));
    assert_eq!(expected.get(&key("m.room.member", BOB)), Some(&join_id));
    let members = storage.room_members(room.nid).await.expect("members");
    assert!(
        members
            .iter()
            .any(|m| m.user_id == BOB && m.membership == "join")
    );

    // A local send builds on the merged head: it cites both extremities.
    let local1 = room
        .send(local(
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": "hi bob" }),
        ))
        .await;
    let local1_event = room.event(&local1).await;
    let pdu = Pdu::from_json_str(&room.version, &local1_event.json, &local1).expect("parse");
    let mut prev = pdu.prev_events.clone();
    prev.sort();
    assert_eq!(prev, heads);
    assert_eq!(room.state_before(&local1).await, expected);
    assert_eq!(room.extremities().await, [local1.as_str()]);

    // A remote merge of the two branches: its state before is the resolution.
    let mut merge_auth = room.create_auth(&create);
    merge_auth.extend([power2.clone(), join_id.clone()]);
    let merge_auth: Vec<&str> = merge_auth.iter().map(String::as_str).collect();
    let merge = room
        .remote(
            BOB,
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": "merged" }),
            &[&hello_id, &power2],
            &merge_auth,
        )
        .await;
    let merge_id = merge.event_id.clone();
    let outcomes = room.accept(vec![merge]).await;
    assert_eq!(status(&outcomes[0]), EventStatus::Normal);
    assert_eq!(
        room.state_before(&merge_id).await,
        room.resolve(&[&hello_id, &power2]).await
    );
    let mut heads = vec![local1.clone(), merge_id.clone()];
    heads.sort();
    assert_eq!(room.extremities().await, heads);
    assert_eq!(
        room.current_state().await,
        room.resolve(&[&local1, &merge_id]).await
    );
    let local2 = room
        .send(local(
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": "again" }),
        ))
        .await;
    let pdu =
        Pdu::from_json_str(&room.version, &room.event(&local2).await.json, &local2).expect("parse");
    let mut prev = pdu.prev_events.clone();
    prev.sort();
    assert_eq!(prev, heads);
    assert_eq!(room.extremities().await, [local2.as_str()]);

    // Rejected: a message from a user who never joined. Stored, not
    // served, not state, not an extremity.
    let state = room.current_state().await;
    let mut eve_auth = room.create_auth(&create);
    eve_auth.push(power2.clone());
    let eve_auth: Vec<&str> = eve_auth.iter().map(String::as_str).collect();
    let eve = room
        .remote(
            EVE,
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": "spam" }),
            &[&local2],
            &eve_auth,
        )
        .await;
    let eve_id = eve.event_id.clone();
    let outcomes = room.accept(vec![eve]).await;
    assert_eq!(status(&outcomes[0]), EventStatus::Rejected);
    assert!(outcomes[0].1.as_ref().unwrap().reason.is_some());
    assert_eq!(room.event(&eve_id).await.status, EventStatus::Rejected);
    assert_eq!(room.current_state().await, state);
    assert_eq!(room.extremities().await, [local2.as_str()]);
    assert!(!room.timeline().await.contains(&eve_id));

    // Soft-failed: Bob is banned now, but speaks on his old branch, where
    // he was joined. Stored, not served, not an extremity, no state change.
    let ban = room
        .send(local(
            "m.room.member",
            Some(BOB),
            json!({ "membership": "ban" }),
        ))
        .await;
    let state = room.current_state().await;
    let late = room
        .remote(
            BOB,
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": "too late" }),
            &[&hello_id],
            &say_auth,
        )
        .await;
    let late_id = late.event_id.clone();
    let outcomes = room.accept(vec![late]).await;
    assert_eq!(
        status(&outcomes[0]),
        EventStatus::SoftFailed,
        "{outcomes:?}"
    );
    assert_eq!(room.event(&late_id).await.status, EventStatus::SoftFailed);
    assert_eq!(room.current_state().await, state);
    assert_eq!(room.extremities().await, [ban.as_str()]);
    assert!(!room.timeline().await.contains(&late_id));

    // Rejected by the state before it: Bob's auth events (his join) allow
    // him, but the event follows his ban.
    let after_ban = room
        .remote(
            BOB,
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": "banned" }),
            &[&ban],
            &say_auth,
        )
        .await;
    let outcomes = room.accept(vec![after_ban]).await;
    assert_eq!(status(&outcomes[0]), EventStatus::Rejected, "{outcomes:?}");
    let reason = outcomes[0].1.as_ref().unwrap().reason.clone().unwrap();
    assert!(reason.contains("state before"), "{reason}");
    assert_eq!(room.current_state().await, state);
    assert_eq!(room.extremities().await, [ban.as_str()]);

    // Bad input among good: another room's PDU and one with unknown prev
    // events are refused; Carol's join in the same batch is accepted.
    let mut carol_auth = room.create_auth(&create);
    carol_auth.extend([power2.clone(), join_rules.clone()]);
    let carol_auth: Vec<&str> = carol_auth.iter().map(String::as_str).collect();
    let carol = room
        .remote(
            CAROL,
            "m.room.member",
            Some(CAROL),
            json!({ "membership": "join" }),
            &[&ban],
            &carol_auth,
        )
        .await;
    let carol_id = carol.event_id.clone();
    let orphan = room
        .remote(
            CAROL,
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": "orphan" }),
            &["$unknown-prev-event"],
            &carol_auth,
        )
        .await;
    let mut elsewhere = room
        .remote(
            CAROL,
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": "elsewhere" }),
            &[&ban],
            &carol_auth,
        )
        .await;
    elsewhere.room_id = "!another-room:remote.test".to_owned();
    let (orphan_id, elsewhere_id) = (orphan.event_id.clone(), elsewhere.event_id.clone());
    let outcomes = room.accept(vec![orphan, elsewhere, carol]).await;
    assert_eq!(outcomes[0].0, orphan_id);
    assert_eq!(outcomes[0].1.as_ref().err(), Some(&ErrorKind::NotFound));
    assert_eq!(outcomes[1].0, elsewhere_id);
    assert_eq!(outcomes[1].1.as_ref().err(), Some(&ErrorKind::InvalidParam));
    assert_eq!(status(&outcomes[2]), EventStatus::Normal);
    assert!(storage.event(&orphan_id).await.expect("event").is_none());
    assert!(storage.event(&elsewhere_id).await.expect("event").is_none());
    assert_eq!(room.extremities().await, [carol_id.as_str()]);
    assert_eq!(room.current("m.room.member", CAROL).await, carol_id);
    // The same PDU again is answered from storage.
    let again = room
        .remote(
            CAROL,
            "m.room.member",
            Some(CAROL),
            json!({ "membership": "join" }),
            &[&ban],
            &carol_auth,
        )
        .await;
    let outcomes = room.accept(vec![again]).await;
    assert_eq!(status(&outcomes[0]), EventStatus::Normal);

    // Resolutions ran on the writer's pool and were counted.
    let top = room.writer.state_resolver().top_rooms(10);
    let cost = top.iter().find(|c| c.room_id == room.id).expect("the room");
    assert!(cost.resolutions >= 4, "{cost:?}");

    // A restart sees the same head, and sends on it.
    let state = room.current_state().await;
    let heads = room.extremities().await;
    let Room {
        writer: old,
        id,
        nid,
        version,
        remote_key,
        ..
    } = room;
    drop(old);
    let restarted = Room {
        storage: storage.clone(),
        writer: writer(&storage).await,
        id,
        nid,
        version,
        remote_key,
    };
    assert_eq!(restarted.current_state().await, state);
    assert_eq!(restarted.extremities().await, heads);
    let after = restarted
        .send(local(
            "m.room.topic",
            Some(""),
            json!({ "topic": "after restart" }),
        ))
        .await;
    let pdu = Pdu::from_json_str(
        &restarted.version,
        &restarted.event(&after).await.json,
        &after,
    )
    .expect("parse");
    assert_eq!(pdu.prev_events, heads);
    let mut expected = state.clone();
    expected.insert(key("m.room.topic", ""), after.clone());
    assert_eq!(restarted.current_state().await, expected);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_v12_forks_merge_through_state_resolution() {
    forks_merge_through_state_resolution(Backend::Sqlite, "12").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_v11_forks_merge_through_state_resolution() {
    forks_merge_through_state_resolution(Backend::Sqlite, "11").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_v12_forks_merge_through_state_resolution() {
    forks_merge_through_state_resolution(Backend::Postgres, "12").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_v10_forks_merge_through_state_resolution() {
    forks_merge_through_state_resolution(Backend::Postgres, "10").await;
}
