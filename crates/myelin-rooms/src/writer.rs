//! The room writer.

use async_trait::async_trait;
use myelin_core::signing_key::SigningKey;
use myelin_core::time::now_ms;
use myelin_core::{ErrorKind, MatrixError, MatrixResult};
use myelin_events::pdu::check_canonical;
use myelin_events::state_res::AuthGraph;
use myelin_events::{
    EventError, Pdu, PduTemplate, RoomVersion, auth_types_for_event, build_pdu, check_auth,
};
use myelin_storage::rooms::PERSIST_BATCH_MAX;
use myelin_storage::{
    DynStorage, EventStatus, NewEvent, RoomRecord, StateBefore, StorageError, Stream, TxnKey,
};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, oneshot};

use crate::create::{self, CreateRoomRequest};
use crate::notifier::Notifier;
use crate::push::PushRules;
use crate::state_res::StateResolver;
use crate::stream::StreamTracker;

mod accept;

pub use accept::{ACCEPT_BATCH_MAX, AcceptedPdu};

/// `prev_events` of a new event at most (the newest extremities win).
const PREV_EVENTS_MAX: usize = 10;
/// Tries at a free room id before `createRoom` gives up.
const ROOM_ID_ATTEMPTS_MAX: i64 = 8;
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
    /// Accepts PDUs of one room from other servers, whose signatures and
    /// hashes federation has checked: see [`LocalRoomWriter::accept_pdus`].
    async fn accept_pdus(
        &self,
        room_id: &str,
        pdus: Vec<Pdu>,
    ) -> Vec<(String, MatrixResult<AcceptedPdu>)>;
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
    /// The room's auth graph and its chain index, for state resolution:
    /// empty until the room's forks first meet, then extended with the
    /// events each later resolution needs (see `accept::resolve_states`).
    graph: Arc<AuthGraph>,
}

/// A send waiting for the room's writer.
struct Pending {
    event: SendEvent,
    reply: oneshot::Sender<MatrixResult<SentEvent>>,
}

/// One room's writer state: its head, behind the lock that makes it the
/// one writer, and the sends queued for the next group commit.
#[derive(Default)]
struct RoomSlot {
    head: AsyncMutex<Option<RoomHead>>,
    queue: Mutex<VecDeque<Pending>>,
}

/// An event built and authorized against the head, not yet persisted.
struct Built {
    pdu: Pdu,
    membership: Option<String>,
    txn: Option<TxnKey>,
    /// Who to wake once it is readable.
    wake: Vec<String>,
    /// The recipients' push rule outcomes.
    push_actions: Vec<myelin_storage::PushAction>,
}

/// The single node's room writer.
///
/// Sends to one room are group-committed: a send queues itself, and the
/// send that holds the room's lock builds and authorizes every queued
/// event (each on the state the previous one left) and persists them in
/// one transaction — one durable commit for a burst, instead of one each.
pub struct LocalRoomWriter {
    storage: DynStorage,
    server_name: String,
    key: SigningKey,
    events: Arc<StreamTracker>,
    receipts: Arc<StreamTracker>,
    account_data: Arc<StreamTracker>,
    to_device: Arc<StreamTracker>,
    device_lists: Arc<StreamTracker>,
    notifier: Arc<Notifier>,
    push: PushRules,
    rooms: Mutex<HashMap<String, Arc<RoomSlot>>>,
    resolver: Arc<StateResolver>,
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
        let to_device = tracker(&storage, Stream::ToDevice).await?;
        let device_lists = tracker(&storage, Stream::DeviceLists).await?;
        Ok(Self {
            storage,
            server_name,
            key,
            events,
            receipts,
            account_data,
            to_device,
            device_lists,
            notifier: Arc::new(Notifier::new()),
            push: PushRules::default(),
            rooms: Mutex::new(HashMap::new()),
            resolver: Arc::new(StateResolver::new()),
        })
    }

    /// The same writer resolving state on `resolver` (e.g. one pool shared
    /// with other components).
    pub fn with_state_resolver(mut self, resolver: Arc<StateResolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// The pool state resolution runs on, and its per-room costs.
    pub fn state_resolver(&self) -> &Arc<StateResolver> {
        &self.resolver
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

    /// The to-device stream's tracker, used the same way.
    pub fn to_device(&self) -> &Arc<StreamTracker> {
        &self.to_device
    }

    /// The device-list stream's tracker (changes of users' devices and
    /// keys), used the same way.
    pub fn device_lists(&self) -> &Arc<StreamTracker> {
        &self.device_lists
    }

    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// The cache of users' push rules: whoever changes a user's push rules
    /// or ignore list invalidates it here.
    pub fn push_rules(&self) -> &PushRules {
        &self.push
    }

    fn slot(&self, room_id: &str) -> Arc<RoomSlot> {
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
            graph: Arc::default(),
        })
    }

    /// Builds and authorizes an event on `head`, and moves the head past it
    /// (tentatively: if the commit fails, the caller drops the head and it
    /// is reloaded from the database).
    fn build(&self, head: &mut RoomHead, event: SendEvent) -> MatrixResult<Built> {
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
        let joined: Vec<&str> = head
            .interested
            .iter()
            .filter(|(_, membership)| membership.as_str() == "join")
            .map(|(user, _)| user.as_str())
            .collect();
        let push_actions = self.push.actions(&head.version, &head.state, &joined, &pdu);
        Ok(advance(head, pdu, event.txn, push_actions))
    }

    /// Whether the sender already reacted to the target with the key: in
    /// the database, or earlier in this batch. The room's one writer checks
    /// it, so two racing reactions cannot both pass.
    async fn annotation_taken(
        &self,
        room_nid: i64,
        (target, sender, key): &(String, String, String),
        batch: &HashSet<(String, String, String)>,
    ) -> MatrixResult<bool> {
        if batch.contains(&(target.clone(), sender.clone(), key.clone())) {
            return Ok(true);
        }
        self.storage
            .annotation_exists(room_nid, target, sender, key)
            .await
            .map_err(MatrixError::internal)
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

    /// Persists built events of one room in one transaction (in chunks of
    /// at most `PERSIST_BATCH_MAX`), then makes them readable and wakes
    /// their audience. All or nothing per chunk.
    async fn commit(&self, room_nid: i64, built: Vec<Built>) -> MatrixResult<Vec<SentEvent>> {
        let mut sent = Vec::with_capacity(built.len());
        let mut built = built.into_iter().peekable();
        while built.peek().is_some() {
            let chunk: Vec<Built> = built.by_ref().take(PERSIST_BATCH_MAX).collect();
            let positions: Vec<i64> = chunk.iter().map(|_| self.events.allocate()).collect();
            let new: Vec<NewEvent> = chunk
                .iter()
                .zip(&positions)
                .map(|(b, pos)| NewEvent {
                    room_nid,
                    event_id: b.pdu.event_id.clone(),
                    kind: b.pdu.kind.clone(),
                    state_key: b.pdu.state_key.clone(),
                    sender: b.pdu.sender.clone(),
                    origin_server_ts: b.pdu.origin_server_ts,
                    depth: b.pdu.depth,
                    json: b.pdu.to_canonical_string(),
                    prev_events: b.pdu.prev_events.clone(),
                    membership: b.membership.clone(),
                    redacts: b.pdu.redacts.clone(),
                    txn: b.txn.clone(),
                    stream_pos: *pos,
                    slot_epoch: 0,
                    push_actions: b.push_actions.clone(),
                    status: EventStatus::Normal,
                    state_before: StateBefore::Current,
                    new_head: None,
                })
                .collect();
            let result = self.storage.persist_events(new).await;
            let ok = result.is_ok();
            for (b, pos) in chunk.into_iter().zip(positions) {
                let wake = if ok { b.wake } else { Vec::new() };
                let woken = self.events.finish(pos, wake);
                self.notifier.notify(woken.iter().map(String::as_str));
                if ok {
                    sent.push(SentEvent {
                        event_id: b.pdu.event_id,
                        stream_pos: pos,
                    });
                }
            }
            result.map_err(MatrixError::internal)?;
        }
        Ok(sent)
    }

    /// Runs one group commit: every queued send (up to `PERSIST_BATCH_MAX`),
    /// built in order on `head`, persisted together, each answered.
    async fn drain(&self, slot: &RoomSlot, head: &mut Option<RoomHead>, room_id: &str) {
        let batch: Vec<Pending> = {
            let mut queue = slot.queue.lock().unwrap_or_else(|p| p.into_inner());
            let n = queue.len().min(PERSIST_BATCH_MAX);
            queue.drain(..n).collect()
        };
        if batch.is_empty() {
            return;
        }
        if head.is_none() {
            match self.load_head(room_id).await {
                Ok(h) => *head = Some(h),
                Err(e) => {
                    for p in batch {
                        let _ = p.reply.send(Err(e.clone()));
                    }
                    return;
                }
            }
        }
        let Some(room) = head.as_mut() else { return };
        let room_nid = room.record.room_nid;
        // The rules of everyone the batch may notify, loaded before building.
        let recipients = room
            .interested
            .iter()
            .filter(|(_, m)| m.as_str() == "join")
            .map(|(user, _)| user.as_str())
            .chain(batch.iter().filter_map(|p| {
                (p.event.kind == "m.room.member")
                    .then_some(p.event.state_key.as_deref())
                    .flatten()
            }));
        if let Err(e) = self.push.preload(self.storage.as_ref(), recipients).await {
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
            return;
        }
        let mut built = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        // The same transaction twice in one batch is one event.
        let mut txn_index: HashMap<TxnKey, usize> = HashMap::new();
        let mut repeats: Vec<(usize, oneshot::Sender<MatrixResult<SentEvent>>)> = Vec::new();
        // Reactions of this batch: `(target, sender, key)`.
        let mut annotations: HashSet<(String, String, String)> = HashSet::new();
        for Pending { event, reply } in batch {
            if let Some(txn) = &event.txn {
                if let Some(&i) = txn_index.get(txn) {
                    repeats.push((i, reply));
                    continue;
                }
                match self.existing_txn(room_nid, txn).await {
                    Ok(Some(sent)) => {
                        let _ = reply.send(Ok(sent));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                }
            }
            let annotation = annotation_of(&event);
            if let Some(reaction) = &annotation {
                let taken = match self
                    .annotation_taken(room_nid, reaction, &annotations)
                    .await
                {
                    Ok(taken) => taken,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                };
                if taken {
                    let _ = reply.send(Err(MatrixError::new(
                        ErrorKind::DuplicateAnnotation,
                        "You already reacted to this event with this key",
                    )));
                    continue;
                }
            }
            let txn = event.txn.clone();
            match self.build(room, event) {
                Ok(b) => {
                    if let Some(txn) = txn {
                        txn_index.insert(txn, built.len());
                    }
                    annotations.extend(annotation);
                    built.push(b);
                    replies.push(reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if built.is_empty() {
            return;
        }
        match self.commit(room_nid, built).await {
            Ok(sent) => {
                for (i, reply) in repeats {
                    let _ = reply.send(Ok(sent[i].clone()));
                }
                for (reply, sent) in replies.into_iter().zip(sent) {
                    let _ = reply.send(Ok(sent));
                }
            }
            Err(e) => {
                // The head moved past events that are not stored: reload it.
                *head = None;
                for reply in replies
                    .into_iter()
                    .chain(repeats.into_iter().map(|(_, r)| r))
                {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// `(target, sender, key)` of a reaction (`m.annotation`), which a user may
/// send once per target and key.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#event-annotations-and-reactions>
fn annotation_of(event: &SendEvent) -> Option<(String, String, String)> {
    let relates_to = event.content.get("m.relates_to")?;
    if relates_to.get("rel_type")?.as_str()? != "m.annotation" {
        return None;
    }
    Some((
        relates_to.get("event_id")?.as_str()?.to_owned(),
        event.sender.clone(),
        relates_to.get("key")?.as_str()?.to_owned(),
    ))
}

/// Moves `head` past an authorized event.
fn advance(
    head: &mut RoomHead,
    pdu: Pdu,
    txn: Option<TxnKey>,
    push_actions: Vec<myelin_storage::PushAction>,
) -> Built {
    let membership = (pdu.kind == "m.room.member")
        .then(|| {
            pdu.content
                .get("membership")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .flatten();
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
    if let Some(key) = &pdu.state_key {
        head.state
            .insert((pdu.kind.clone(), key.clone()), pdu.clone());
    }
    Built {
        pdu,
        membership,
        txn,
        wake,
        push_actions,
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
        check_canonical(&Value::Object(plan.create_content.clone())).map_err(event_error)?;
        // Two rooms created by one user in the same millisecond would have
        // the same v12 create event, hence the same room id: a collision
        // retries one millisecond later (and, before v12, with a new random id).
        let mut attempt = 0;
        let (create, record) = loop {
            let room_id = match (&plan.room_id, attempt) {
                (Some(id), 0) => Some(id.clone()),
                (Some(_), _) => Some(create::random_room_id(&self.server_name)),
                (None, _) => None,
            };
            let create_template = PduTemplate {
                room_id,
                sender: creator.to_owned(),
                kind: "m.room.create".to_owned(),
                state_key: Some(String::new()),
                content: plan.create_content.clone(),
                redacts: None,
                prev_events: Vec::new(),
                auth_events: Vec::new(),
                depth: 1,
                origin_server_ts: now_ms() + attempt,
            };
            let create = build_pdu(&version, create_template, &self.server_name, &self.key)
                .map_err(event_error)?;
            let empty = HashMap::new();
            check_auth(&version, &create, &empty).map_err(|e| MatrixError::bad_json(e.0))?;
            match self
                .storage
                .create_room(&create.room_id, version.id, now_ms())
                .await
            {
                Ok(record) => break (create, record),
                Err(StorageError::Conflict(_)) if attempt < ROOM_ID_ATTEMPTS_MAX => attempt += 1,
                Err(StorageError::Conflict(_)) => {
                    return Err(MatrixError::internal("room id collision"));
                }
                Err(e) => return Err(MatrixError::internal(e)),
            }
        };
        let room_id = create.room_id.clone();
        let room_nid = record.room_nid;
        let slot = self.slot(&room_id);
        let mut guard = slot.head.lock().await;
        let mut head = RoomHead {
            record,
            version,
            state: HashMap::new(),
            extremities: Vec::new(),
            interested: HashMap::new(),
            graph: Arc::default(),
        };
        // Every initial event is built first, then all are committed together.
        let mut built = vec![advance(&mut head, create, None, Vec::new())];
        for event in plan.events {
            let send = SendEvent {
                sender: creator.to_owned(),
                kind: event.kind,
                state_key: event.state_key,
                content: event.content,
                redacts: None,
                txn: None,
            };
            built.push(self.build(&mut head, send).map_err(|e| match e.kind {
                // An initial_state event the rules refuse is the request's fault.
                ErrorKind::Forbidden => MatrixError::new(ErrorKind::InvalidRoomState, e.message),
                _ => e,
            })?);
        }
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
        self.commit(room_nid, built).await?;
        *guard = Some(head);
        Ok(room_id)
    }

    async fn send(&self, room_id: &str, event: SendEvent) -> MatrixResult<SentEvent> {
        let slot = self.slot(room_id);
        let (reply, mut answer) = oneshot::channel();
        slot.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Pending { event, reply });
        loop {
            let mut head = slot.head.lock().await;
            // A writer before us may have committed this send with its batch.
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(MatrixError::internal("the room writer dropped a send"));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            self.drain(&slot, &mut head, room_id).await;
        }
    }

    async fn accept_pdus(
        &self,
        room_id: &str,
        pdus: Vec<Pdu>,
    ) -> Vec<(String, MatrixResult<AcceptedPdu>)> {
        LocalRoomWriter::accept_pdus(self, room_id, pdus).await
    }
}
