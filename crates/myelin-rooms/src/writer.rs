//! The room writer.

use async_trait::async_trait;
use myelin_core::signing_key::SigningKey;
use myelin_core::time::now_ms;
use myelin_core::{ErrorKind, MatrixError, MatrixResult};
use myelin_events::pdu::check_canonical;
use myelin_events::{
    EventError, Pdu, PduTemplate, RoomVersion, auth_types_for_event, build_pdu, check_auth,
};
use myelin_storage::{DynStorage, EventStatus, NewEvent, RoomRecord, StorageError, Stream, TxnKey};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Mutex as AsyncMutex;

use crate::create::{self, CreateRoomRequest};
use crate::notifier::Notifier;
use crate::stream::StreamTracker;

/// `prev_events` of a new event at most (the newest extremities win).
const PREV_EVENTS_MAX: usize = 10;
/// The greatest depth the spec allows (canonical JSON integers).
const DEPTH_MAX: i64 = (1 << 53) - 1;
/// Rooms whose head (current state, extremities) is kept in memory; idle
/// rooms past this are dropped and reloaded on their next write.
const CACHED_ROOMS_MAX: usize = 4096;

/// An event a user sends.
#[derive(Debug, Clone, PartialEq)]
pub struct SendEvent {
    pub sender: String,
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Map<String, Value>,
    pub redacts: Option<String>,
    pub txn: Option<TxnKey>,
}

/// What sending produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEvent {
    pub event_id: String,
    pub stream_pos: i64,
}

/// The writer of rooms: in a cluster, each room's calls are routed to the
/// node that owns it.
#[async_trait]
pub trait RoomWriter: Send + Sync {
    /// Creates a room with its initial events; returns its id.
    async fn create_room(&self, creator: &str, request: CreateRoomRequest) -> MatrixResult<String>;
    /// Creates, authorizes and persists one event. A repeated `txn` returns
    /// the event it first produced.
    async fn send(&self, room_id: &str, event: SendEvent) -> MatrixResult<SentEvent>;
}

/// What the writer keeps of a room between writes.
struct RoomHead {
    record: RoomRecord,
    version: RoomVersion,
    state: HashMap<(String, String), Pdu>,
    /// `(event_id, depth)`.
    extremities: Vec<(String, i64)>,
    /// Users whose current membership is join, invite or knock: the users a
    /// new event wakes.
    interested: HashMap<String, String>,
}

type HeadSlot = Arc<AsyncMutex<Option<RoomHead>>>;

/// The single node's room writer.
pub struct LocalRoomWriter {
    storage: DynStorage,
    server_name: String,
    key: SigningKey,
    events: Arc<StreamTracker>,
    receipts: Arc<StreamTracker>,
    account_data: Arc<StreamTracker>,
    notifier: Arc<Notifier>,
    rooms: Mutex<HashMap<String, HeadSlot>>,
}

impl LocalRoomWriter {
    /// A writer whose stream positions continue after the database's.
    pub async fn new(
        storage: DynStorage,
        server_name: String,
        key: SigningKey,
    ) -> MatrixResult<Self> {
        let events = tracker(&storage, Stream::Events).await?;
        let receipts = tracker(&storage, Stream::Receipts).await?;
        let account_data = tracker(&storage, Stream::AccountData).await?;
        Ok(Self {
            storage,
            server_name,
            key,
            events,
            receipts,
            account_data,
            notifier: Arc::new(Notifier::new()),
            rooms: Mutex::new(HashMap::new()),
        })
    }

    /// The event stream's tracker (readers read up to its watermark).
    pub fn events(&self) -> &Arc<StreamTracker> {
        &self.events
    }

    /// The receipt stream's tracker: receipt writers allocate from it and
    /// `/sync` reads up to its watermark.
    pub fn receipts(&self) -> &Arc<StreamTracker> {
        &self.receipts
    }

    /// The account-data stream's tracker, used the same way.
    pub fn account_data(&self) -> &Arc<StreamTracker> {
        &self.account_data
    }

    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    fn slot(&self, room_id: &str) -> HeadSlot {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if rooms.len() >= CACHED_ROOMS_MAX && !rooms.contains_key(room_id) {
            // Drop the heads no writer holds; they reload on demand.
            rooms.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        rooms.entry(room_id.to_owned()).or_default().clone()
    }

    async fn load_head(&self, room_id: &str) -> MatrixResult<RoomHead> {
        let record = self
            .storage
            .room(room_id)
            .await
            .map_err(MatrixError::internal)?
            .ok_or_else(|| MatrixError::not_found("Unknown room"))?;
        let version = RoomVersion::parse(&record.room_version).ok_or_else(|| {
            MatrixError::internal(format!(
                "room {room_id} has unsupported version {}",
                record.room_version
            ))
        })?;
        let mut state = HashMap::new();
        let mut interested = HashMap::new();
        for stored in self
            .storage
            .current_state(record.room_nid)
            .await
            .map_err(MatrixError::internal)?
        {
            let pdu = Pdu::from_json_str(&version, &stored.json, &stored.event_id)
                .map_err(MatrixError::internal)?;
            if let (Some(key), Some(membership)) = (&pdu.state_key, &stored.membership)
                && pdu.kind == "m.room.member"
                && is_interested(membership)
            {
                interested.insert(key.clone(), membership.clone());
            }
            state.insert(
                (pdu.kind.clone(), pdu.state_key.clone().unwrap_or_default()),
                pdu,
            );
        }
        let extremities = self
            .storage
            .forward_extremities(record.room_nid)
            .await
            .map_err(MatrixError::internal)?;
        Ok(RoomHead {
            record,
            version,
            state,
            extremities,
            interested,
        })
    }

    /// Builds, authorizes and persists an event on `head`.
    async fn append(&self, head: &mut RoomHead, event: SendEvent) -> MatrixResult<SentEvent> {
        if let Some(txn) = &event.txn
            && let Some(sent) = self.existing_txn(head.record.room_nid, txn).await?
        {
            return Ok(sent);
        }
        let content = Value::Object(event.content);
        check_canonical(&content).map_err(event_error)?;
        let auth_events = auth_types_for_event(
            &head.version,
            &event.kind,
            &event.sender,
            event.state_key.as_deref(),
            &content,
        )
        .into_iter()
        .filter_map(|(kind, key)| head.state.get(&(kind, key)).map(|p| p.event_id.clone()))
        .collect();
        let mut prev = head.extremities.clone();
        prev.sort_by_key(|(_, depth)| std::cmp::Reverse(*depth));
        prev.truncate(PREV_EVENTS_MAX);
        let depth = prev
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(0)
            .saturating_add(1)
            .min(DEPTH_MAX);
        let Value::Object(content) = content else {
            unreachable!("content is an object")
        };
        let template = PduTemplate {
            room_id: Some(head.record.room_id.clone()),
            sender: event.sender,
            kind: event.kind,
            state_key: event.state_key,
            content,
            redacts: event.redacts,
            prev_events: prev.into_iter().map(|(id, _)| id).collect(),
            auth_events,
            depth,
            origin_server_ts: now_ms(),
        };
        let pdu = build_pdu(&head.version, template, &self.server_name, &self.key)
            .map_err(event_error)?;
        check_auth(&head.version, &pdu, &head.state).map_err(|e| MatrixError::forbidden(e.0))?;
        self.commit(head, pdu, event.txn).await
    }

    async fn existing_txn(&self, room_nid: i64, txn: &TxnKey) -> MatrixResult<Option<SentEvent>> {
        let Some(event_id) = self
            .storage
            .txn_event(room_nid, &txn.user_id, &txn.device_id, &txn.txn_id)
            .await
            .map_err(MatrixError::internal)?
        else {
            return Ok(None);
        };
        let stream_pos = self
            .storage
            .event(&event_id)
            .await
            .map_err(MatrixError::internal)?
            .map_or(0, |e| e.stream_pos);
        Ok(Some(SentEvent {
            event_id,
            stream_pos,
        }))
    }

    /// Persists an authorized event and moves the head past it.
    async fn commit(
        &self,
        head: &mut RoomHead,
        pdu: Pdu,
        txn: Option<TxnKey>,
    ) -> MatrixResult<SentEvent> {
        let membership = (pdu.kind == "m.room.member")
            .then(|| {
                pdu.content
                    .get("membership")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .flatten();
        let stream_pos = self.events.allocate();
        let new = NewEvent {
            room_nid: head.record.room_nid,
            event_id: pdu.event_id.clone(),
            kind: pdu.kind.clone(),
            state_key: pdu.state_key.clone(),
            sender: pdu.sender.clone(),
            origin_server_ts: pdu.origin_server_ts,
            depth: pdu.depth,
            json: pdu.to_canonical_string(),
            prev_events: pdu.prev_events.clone(),
            membership: membership.clone(),
            redacts: pdu.redacts.clone(),
            txn: txn.clone(),
            stream_pos,
            slot_epoch: 0,
            status: EventStatus::Normal,
        };
        if let Err(e) = self.storage.persist_event(new).await {
            let woken = self.events.finish(stream_pos, Vec::new());
            self.notifier.notify(woken.iter().map(String::as_str));
            if let (StorageError::Conflict(_), Some(txn)) = (&e, &txn)
                && let Some(sent) = self.existing_txn(head.record.room_nid, txn).await?
            {
                return Ok(sent);
            }
            return Err(MatrixError::internal(e));
        }

        // The head moves past the event only once it is committed.
        head.extremities = vec![(pdu.event_id.clone(), pdu.depth)];
        let mut wake: Vec<String> = head.interested.keys().cloned().collect();
        if let (Some(target), Some(membership)) = (&pdu.state_key, &membership) {
            wake.push(target.clone());
            if is_interested(membership) {
                head.interested.insert(target.clone(), membership.clone());
            } else {
                head.interested.remove(target);
            }
        }
        let event_id = pdu.event_id.clone();
        if let Some(key) = &pdu.state_key {
            head.state.insert((pdu.kind.clone(), key.clone()), pdu);
        }
        let woken = self.events.finish(stream_pos, wake);
        self.notifier.notify(woken.iter().map(String::as_str));
        Ok(SentEvent {
            event_id,
            stream_pos,
        })
    }
}

/// A tracker whose positions continue after the database's greatest.
async fn tracker(storage: &DynStorage, stream: Stream) -> MatrixResult<Arc<StreamTracker>> {
    let pos = storage
        .max_stream_pos(stream)
        .await
        .map_err(MatrixError::internal)?;
    Ok(Arc::new(StreamTracker::new(pos)))
}

/// Memberships whose holders see the room's new events.
fn is_interested(membership: &str) -> bool {
    matches!(membership, "join" | "invite" | "knock")
}

fn event_error(e: EventError) -> MatrixError {
    match e {
        EventError::TooLarge(m) => MatrixError::new(ErrorKind::TooLarge, m),
        EventError::Invalid(m) => MatrixError::bad_json(m),
        other => MatrixError::internal(other),
    }
}

#[async_trait]
impl RoomWriter for LocalRoomWriter {
    async fn create_room(&self, creator: &str, request: CreateRoomRequest) -> MatrixResult<String> {
        let plan = create::plan(&self.server_name, creator, request)?;
        if let Some(alias) = &plan.alias
            && self
                .storage
                .alias(alias)
                .await
                .map_err(MatrixError::internal)?
                .is_some()
        {
            return Err(MatrixError::new(
                ErrorKind::RoomInUse,
                "Room alias already taken",
            ));
        }
        let version = plan.version.clone();
        // The create event comes first: from v12 it names the room.
        let create_template = PduTemplate {
            room_id: plan.room_id.clone(),
            sender: creator.to_owned(),
            kind: "m.room.create".to_owned(),
            state_key: Some(String::new()),
            content: plan.create_content.clone(),
            redacts: None,
            prev_events: Vec::new(),
            auth_events: Vec::new(),
            depth: 1,
            origin_server_ts: now_ms(),
        };
        check_canonical(&Value::Object(plan.create_content.clone())).map_err(event_error)?;
        let create = build_pdu(&version, create_template, &self.server_name, &self.key)
            .map_err(event_error)?;
        let empty = HashMap::new();
        check_auth(&version, &create, &empty).map_err(|e| MatrixError::bad_json(e.0))?;
        let room_id = create.room_id.clone();
        let record = match self
            .storage
            .create_room(&room_id, version.id, now_ms())
            .await
        {
            Ok(record) => record,
            Err(StorageError::Conflict(_)) => {
                return Err(MatrixError::internal("room id collision"));
            }
            Err(e) => return Err(MatrixError::internal(e)),
        };
        let slot = self.slot(&room_id);
        let mut guard = slot.lock().await;
        let head = guard.insert(RoomHead {
            record,
            version,
            state: HashMap::new(),
            extremities: Vec::new(),
            interested: HashMap::new(),
        });
        self.commit(head, create, None).await?;
        if let Some(alias) = &plan.alias {
            let record = myelin_storage::RoomAlias {
                alias: alias.clone(),
                room_id: room_id.clone(),
                creator: creator.to_owned(),
            };
            match self.storage.create_alias(&record).await {
                Ok(()) => {}
                Err(StorageError::Conflict(_)) => {
                    return Err(MatrixError::new(
                        ErrorKind::RoomInUse,
                        "Room alias already taken",
                    ));
                }
                Err(e) => return Err(MatrixError::internal(e)),
            }
        }
        for event in plan.events {
            let send = SendEvent {
                sender: creator.to_owned(),
                kind: event.kind,
                state_key: event.state_key,
                content: event.content,
                redacts: None,
                txn: None,
            };
            self.append(head, send).await.map_err(|e| match e.kind {
                // An initial_state event the rules refuse is the request's fault.
                ErrorKind::Forbidden => MatrixError::new(ErrorKind::InvalidRoomState, e.message),
                _ => e,
            })?;
        }
        Ok(room_id)
    }

    async fn send(&self, room_id: &str, event: SendEvent) -> MatrixResult<SentEvent> {
        let slot = self.slot(room_id);
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(self.load_head(room_id).await?);
        }
        let head = guard.as_mut().expect("the head was just loaded");
        self.append(head, event).await
    }
}
