//! Accepting PDUs from other servers: events that may fork the room's DAG
//! and merge forks, with the server-server API's checks on receipt of a
//! PDU (4–6: auth events, state before, current state) and state resolution
//! wherever several prev events or several forward extremities meet.
//! Spec: <https://spec.matrix.org/v1.19/server-server-api/#checks-performed-on-receipt-of-a-pdu>

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use myelin_core::{ErrorKind, MatrixError, MatrixResult};
use myelin_events::state_res::RESOLUTION_EVENTS_MAX;
use myelin_events::{
    Pdu, RoomVersion, StateMap, auth_types_for_event, check_auth, check_auth_events,
};
use myelin_storage::{EventStatus, NewEvent, NewHead, StateBefore, StoredEvent};

use super::{LocalRoomWriter, RoomHead, is_interested};

/// PDUs one call accepts at most (a federation transaction holds 50).
pub const ACCEPT_BATCH_MAX: usize = 1_000;
/// Event ids per storage lookup while walking auth chains.
const LOAD_BATCH: usize = 1_000;

/// What accepting one PDU did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedPdu {
    /// `Normal` (in the timeline and the DAG's head), `SoftFailed` (allowed
    /// at its position but not by the current state: stored, not served,
    /// not a forward extremity) or `Rejected` (failed authorization: stored,
    /// never state). An event already stored answers with its stored status.
    pub status: EventStatus,
    pub stream_pos: i64,
    /// Why it was rejected or soft-failed.
    pub reason: Option<String>,
}

/// What one `accept_pdus` call keeps between its PDUs.
#[derive(Default)]
struct Cache {
    /// The state after an event, by event id.
    states: HashMap<String, Arc<StateMap>>,
    /// Accepted (not rejected) events loaded for auth and resolution; an
    /// event here has its whole auth chain here too, or in the room's
    /// graph (or known to be rejected or missing).
    pdus: HashMap<String, Arc<Pdu>>,
    /// Events that are rejected, or not stored.
    absent: HashSet<String>,
}

impl LocalRoomWriter {
    /// Accepts PDUs of one room from other servers, in the order their
    /// `prev_events` require, under the room's writer lock.
    ///
    /// The caller (federation) has already checked each PDU's format, its
    /// signatures and its content hash (a PDU whose hash fails arrives
    /// redacted), and must fetch missing events itself: a PDU whose
    /// `prev_events` or `auth_events` are neither stored nor in the batch
    /// is refused with `M_NOT_FOUND`, and so is one whose prev events have
    /// no state (outliers). A PDU of another room is refused with
    /// `M_INVALID_PARAM`. Refused PDUs are not stored; the others are, as:
    /// - rejected, when they fail the authorization rules against their
    ///   auth events or against the state before them (the state after
    ///   their prev event, or the resolution of the states after each);
    /// - soft-failed, when they pass those but not the room's current state;
    /// - accepted otherwise: the forward extremities become the previous
    ///   ones minus its prev events plus itself, and the room's current
    ///   state the resolution of the extremities' states (or the state
    ///   after it when it is the only extremity).
    ///
    /// Returns each PDU's event id and outcome, in the order given.
    pub async fn accept_pdus(
        &self,
        room_id: &str,
        pdus: Vec<Pdu>,
    ) -> Vec<(String, MatrixResult<AcceptedPdu>)> {
        let order: Vec<String> = pdus.iter().map(|p| p.event_id.clone()).collect();
        let mut outcomes: HashMap<String, MatrixResult<AcceptedPdu>> = HashMap::new();
        if pdus.len() > ACCEPT_BATCH_MAX {
            let e = MatrixError::invalid_param(format!(
                "at most {ACCEPT_BATCH_MAX} PDUs are accepted at once"
            ));
            return order.into_iter().map(|id| (id, Err(e.clone()))).collect();
        }
        let slot = self.slot(room_id);
        let mut guard = slot.head.lock().await;
        if guard.is_none() {
            match self.load_head(room_id).await {
                Ok(head) => *guard = Some(head),
                Err(e) => return order.into_iter().map(|id| (id, Err(e.clone()))).collect(),
            }
        }
        let Some(head) = guard.as_mut() else {
            unreachable!("the head was just loaded")
        };
        let mut batch = Vec::with_capacity(pdus.len());
        for pdu in pdus {
            if pdu.room_id != room_id {
                let e = MatrixError::invalid_param(format!(
                    "event {} is for room {}, not {room_id}",
                    pdu.event_id, pdu.room_id
                ));
                outcomes.insert(pdu.event_id, Err(e));
            } else if batch.iter().any(|p: &Pdu| p.event_id == pdu.event_id) {
                // The same event twice: the first one counts.
            } else {
                batch.push(pdu);
            }
        }
        let mut cache = Cache::default();
        for pdu in topological(batch) {
            let id = pdu.event_id.clone();
            let outcome = self.accept_one(head, pdu, &mut cache).await;
            if let Err(e) = &outcome
                && e.kind == ErrorKind::Internal
            {
                // A storage failure may leave the cached head behind the
                // database: reload it before the next PDU.
                match self.load_head(room_id).await {
                    Ok(fresh) => *head = fresh,
                    Err(_) => {
                        outcomes.insert(id, outcome);
                        *guard = None;
                        break;
                    }
                }
            }
            outcomes.insert(id, outcome);
        }
        order
            .into_iter()
            .map(|id| {
                let outcome = outcomes.get(&id).cloned().unwrap_or_else(|| {
                    Err(MatrixError::internal(
                        "the room writer stopped before this event",
                    ))
                });
                (id, outcome)
            })
            .collect()
    }

    async fn accept_one(
        &self,
        head: &mut RoomHead,
        pdu: Pdu,
        cache: &mut Cache,
    ) -> MatrixResult<AcceptedPdu> {
        if let Some(stored) = self
            .storage
            .event(&pdu.event_id)
            .await
            .map_err(MatrixError::internal)?
        {
            return Ok(AcceptedPdu {
                status: stored.status,
                stream_pos: stored.stream_pos,
                reason: Some("already known".to_owned()),
            });
        }
        let version = head.version.clone();
        let room_nid = head.record.room_nid;
        if pdu.prev_events.is_empty() {
            return Err(MatrixError::invalid_param(format!(
                "event {} has no prev_events in an existing room",
                pdu.event_id
            )));
        }

        // The state before it: after its prev event, or where its prev
        // events meet, their resolution.
        let mut prev_states = Vec::with_capacity(pdu.prev_events.len());
        for prev in &pdu.prev_events {
            prev_states.push(
                self.state_after(room_nid, &head.record.room_id, prev, cache)
                    .await?,
            );
        }
        let (state_before, before_source) = if let [only] = prev_states.as_slice() {
            (
                only.clone(),
                StateBefore::AfterEvent(pdu.prev_events[0].clone()),
            )
        } else {
            let sets: Vec<StateMap> = prev_states.iter().map(|s| (**s).clone()).collect();
            let resolved = Arc::new(self.resolve_states(head, sets, cache).await?);
            (
                resolved.clone(),
                StateBefore::Resolved {
                    base: pdu.prev_events[0].clone(),
                    state: resolved,
                },
            )
        };

        // Checks 4–6.
        let verdict = match self
            .check_receipt(&version, head, &pdu, &state_before, cache)
            .await?
        {
            Ok(()) => match check_auth(&version, &pdu, &head.state) {
                Ok(()) => (EventStatus::Normal, None),
                Err(e) => (
                    EventStatus::SoftFailed,
                    Some(format!("not allowed by the room's current state: {e}")),
                ),
            },
            Err(reason) => (EventStatus::Rejected, Some(reason)),
        };
        let (status, reason) = verdict;

        // The state after it, and what the head becomes.
        let state_after = if status != EventStatus::Rejected
            && let Some(key) = &pdu.state_key
        {
            let mut after = (*state_before).clone();
            after.insert((pdu.kind.clone(), key.clone()), pdu.event_id.clone());
            Arc::new(after)
        } else {
            state_before.clone()
        };
        let mut extremities = head.extremities.clone();
        let mut new_head = None;
        let mut current = None;
        if status == EventStatus::Normal {
            extremities.retain(|(id, _)| !pdu.prev_events.contains(id));
            extremities.push((pdu.event_id.clone(), pdu.depth));
            let resolved = if extremities.len() > 1 {
                // The event is not stored yet: resolution gets it, and its
                // auth chain, from the cache.
                let graph = head.graph.clone();
                self.load_auth_chains(&version, &pdu.auth_events, |id| graph.holds(id), cache)
                    .await?;
                cache.absent.remove(&pdu.event_id);
                cache
                    .pdus
                    .insert(pdu.event_id.clone(), Arc::new(pdu.clone()));
                let mut sets = Vec::with_capacity(extremities.len());
                for (id, _) in &extremities {
                    if *id == pdu.event_id {
                        sets.push((*state_after).clone());
                    } else {
                        let state = self
                            .state_after(room_nid, &head.record.room_id, id, cache)
                            .await?;
                        sets.push((*state).clone());
                    }
                }
                Some(Arc::new(self.resolve_states(head, sets, cache).await?))
            } else {
                None
            };
            current = Some(resolved.clone().unwrap_or_else(|| state_after.clone()));
            new_head = Some(NewHead {
                extremities: extremities.iter().map(|(id, _)| id.clone()).collect(),
                resolved_state: resolved,
            });
        }

        let push_actions = if status == EventStatus::Normal {
            self.remote_push_actions(head, &pdu).await?
        } else {
            Vec::new()
        };
        let membership = pdu.membership().map(str::to_owned);
        let mut wake: Vec<String> = Vec::new();
        if status == EventStatus::Normal {
            wake.extend(head.interested.keys().cloned());
            if let (Some(target), Some(_)) = (&pdu.state_key, &membership) {
                wake.push(target.clone());
            }
        }
        let pos = self.events.allocate();
        let event = NewEvent {
            room_nid,
            event_id: pdu.event_id.clone(),
            kind: pdu.kind.clone(),
            state_key: pdu.state_key.clone(),
            sender: pdu.sender.clone(),
            origin_server_ts: pdu.origin_server_ts,
            depth: pdu.depth,
            json: pdu.to_canonical_string(),
            prev_events: pdu.prev_events.clone(),
            membership,
            redacts: pdu.redacts.clone(),
            txn: None,
            stream_pos: pos,
            slot_epoch: 0,
            status,
            push_actions,
            state_before: before_source,
            new_head,
        };
        let result = self.storage.persist_event(event).await;
        let ok = result.is_ok();
        let woken = self.events.finish(pos, if ok { wake } else { Vec::new() });
        self.notifier.notify(woken.iter().map(String::as_str));
        result.map_err(MatrixError::internal)?;

        cache
            .states
            .insert(pdu.event_id.clone(), state_after.clone());
        if status != EventStatus::Rejected {
            cache
                .pdus
                .entry(pdu.event_id.clone())
                .or_insert_with(|| Arc::new(pdu.clone()));
            cache.absent.remove(&pdu.event_id);
        }
        if let Some(current) = current {
            head.extremities = extremities;
            self.set_head_state(head, &current, cache).await?;
        }
        Ok(AcceptedPdu {
            status,
            stream_pos: pos,
            reason,
        })
    }

    /// Checks 4 and 5: against the event's own auth events, then against
    /// the state before it. `Ok(Err(reason))` when the event is rejected.
    async fn check_receipt(
        &self,
        version: &RoomVersion,
        head: &RoomHead,
        pdu: &Pdu,
        state_before: &StateMap,
        cache: &mut Cache,
    ) -> MatrixResult<Result<(), String>> {
        // 4. The auth events: every one must be stored (federation fetches
        // missing ones first); a rejected one rejects the event.
        let stored = self.stored_events(&pdu.auth_events).await?;
        if let Some(missing) = pdu
            .auth_events
            .iter()
            .find(|id| !stored.iter().any(|s| &s.event_id == *id))
        {
            return Err(MatrixError::not_found(format!(
                "auth event {missing} of {} is unknown: fetch it first",
                pdu.event_id
            )));
        }
        let mut auth = Vec::with_capacity(stored.len());
        for event in &stored {
            if event.status != EventStatus::Rejected {
                auth.push(parse(version, event)?);
            }
        }
        let refs: Vec<&Pdu> = auth.iter().collect();
        if let Err(e) = check_auth_events(version, pdu, &refs) {
            return Ok(Err(format!("bad auth events: {e}")));
        }
        let mut auth_state: HashMap<(String, String), Pdu> = auth
            .iter()
            .filter_map(|p| {
                let key = p.state_key.clone()?;
                Some(((p.kind.clone(), key), p.clone()))
            })
            .collect();
        if let Some(create) = create_id(version, &head.record.room_id) {
            let create = self.stored_events(&[create]).await?;
            if let Some(create) = create.iter().find(|c| c.status != EventStatus::Rejected) {
                auth_state.insert(
                    ("m.room.create".to_owned(), String::new()),
                    parse(version, create)?,
                );
            }
        }
        if let Err(e) = check_auth(version, pdu, &auth_state) {
            return Ok(Err(format!("not allowed by its auth events: {e}")));
        }

        // 5. The state before it: only the keys the rules read.
        let mut keys = auth_types_for_event(
            version,
            &pdu.kind,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
        );
        keys.push(("m.room.create".to_owned(), String::new()));
        let ids: Vec<String> = keys
            .iter()
            .filter_map(|k| state_before.get(k).cloned())
            .collect();
        let mut before: HashMap<(String, String), Pdu> = HashMap::new();
        for pdu in self.pdus(version, &ids, cache).await? {
            if let Some(key) = &pdu.state_key {
                before.insert((pdu.kind.clone(), key.clone()), (*pdu).clone());
            }
        }
        if let Err(e) = check_auth(version, pdu, &before) {
            return Ok(Err(format!("not allowed by the state before it: {e}")));
        }
        Ok(Ok(()))
    }

    /// The state after an event of the room (stored, with state).
    async fn state_after(
        &self,
        room_nid: i64,
        room_id: &str,
        event_id: &str,
        cache: &mut Cache,
    ) -> MatrixResult<Arc<StateMap>> {
        if let Some(state) = cache.states.get(event_id) {
            return Ok(state.clone());
        }
        let stored = self
            .storage
            .event(event_id)
            .await
            .map_err(MatrixError::internal)?
            .ok_or_else(|| {
                MatrixError::not_found(format!("prev event {event_id} is unknown: fetch it first"))
            })?;
        if stored.room_nid != room_nid {
            return Err(MatrixError::invalid_param(format!(
                "prev event {event_id} is not in room {room_id}"
            )));
        }
        if stored.status == EventStatus::Outlier {
            return Err(MatrixError::not_found(format!(
                "the state after prev event {event_id} is unknown (an outlier)"
            )));
        }
        let state: StateMap = self
            .storage
            .state_at(stored.state_after_nid)
            .await
            .map_err(MatrixError::internal)?
            .into_iter()
            .map(|e| ((e.kind, e.state_key), e.event_id))
            .collect();
        let state = Arc::new(state);
        cache.states.insert(event_id.to_owned(), state.clone());
        Ok(state)
    }

    /// Resolves `sets` on the state resolution pool, after loading every
    /// event of the sets and of their auth chains.
    async fn resolve_states(
        &self,
        head: &mut RoomHead,
        sets: Vec<StateMap>,
        cache: &mut Cache,
    ) -> MatrixResult<StateMap> {
        let version = head.version.clone();
        let mut roots: BTreeSet<String> = sets.iter().flat_map(|s| s.values().cloned()).collect();
        roots.extend(create_id(&version, &head.record.room_id));
        let roots: Vec<String> = roots.into_iter().collect();
        self.extend_graph(head, &roots, cache).await?;
        self.resolver
            .resolve(&head.record.room_id, &version, head.graph.clone(), sets)
            .await
            .map_err(|e| MatrixError::internal(format!("state resolution failed: {e}")))
    }

    /// Inserts into the room's graph `roots` and their auth chains, as far
    /// down as the graph does not hold them yet: every event in the graph
    /// has its (accepted) auth events in it, so the walk stops at the first
    /// event it holds, and the new events go in auth events first.
    async fn extend_graph(
        &self,
        head: &mut RoomHead,
        roots: &[String],
        cache: &mut Cache,
    ) -> MatrixResult<()> {
        let missing: Vec<String> = roots
            .iter()
            .filter(|id| !head.graph.holds(id))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let graph_before = head.graph.clone();
        self.load_auth_chains(&head.version, &missing, |id| graph_before.holds(id), cache)
            .await?;
        // Depth-first, auth events before the events citing them; each
        // event is expanded once (stored events cannot cite in a cycle, but
        // the walk must end even if they did).
        let graph = Arc::make_mut(&mut head.graph);
        let mut stack: Vec<(String, bool)> = missing.into_iter().map(|id| (id, false)).collect();
        let mut expanded_ids: HashSet<String> = HashSet::new();
        while let Some((id, expanded)) = stack.pop() {
            if graph.holds(&id) {
                continue;
            }
            let Some(pdu) = cache.pdus.get(&id).cloned() else {
                continue; // rejected or unknown: absent
            };
            if expanded {
                graph
                    .insert(pdu)
                    .map_err(|e| MatrixError::internal(format!("state resolution failed: {e}")))?;
            } else if expanded_ids.insert(id.clone()) {
                stack.push((id, true));
                stack.extend(pdu.auth_events.iter().map(|auth| (auth.clone(), false)));
            }
        }
        Ok(())
    }

    /// Loads `roots` and their auth chains into the cache.
    async fn load_auth_chains(
        &self,
        version: &RoomVersion,
        roots: &[String],
        known: impl Fn(&str) -> bool,
        cache: &mut Cache,
    ) -> MatrixResult<()> {
        let walked = self.walk_auth_chains(version, roots, known, cache).await;
        if walked.is_err() {
            // A walk cut short would leave an event without its chain.
            cache.pdus.clear();
            cache.absent.clear();
        }
        walked
    }

    /// Walks down from `roots`, stopping at events `known` holds.
    async fn walk_auth_chains(
        &self,
        version: &RoomVersion,
        roots: &[String],
        known: impl Fn(&str) -> bool,
        cache: &mut Cache,
    ) -> MatrixResult<()> {
        let mut frontier: Vec<String> = roots
            .iter()
            .filter(|id| !cache.pdus.contains_key(*id) && !cache.absent.contains(*id))
            .cloned()
            .collect();
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for chunk in frontier.chunks(LOAD_BATCH) {
                let stored = self.stored_events(chunk).await?;
                for id in chunk {
                    if !stored.iter().any(|s| &s.event_id == id) {
                        cache.absent.insert(id.clone());
                    }
                }
                for event in stored {
                    if event.status == EventStatus::Rejected {
                        cache.absent.insert(event.event_id);
                        continue;
                    }
                    let pdu = parse(version, &event)?;
                    next.extend(
                        pdu.auth_events
                            .iter()
                            .filter(|a| {
                                !cache.pdus.contains_key(*a)
                                    && !cache.absent.contains(*a)
                                    && !known(a)
                            })
                            .cloned(),
                    );
                    cache.pdus.insert(event.event_id, Arc::new(pdu));
                }
                if cache.pdus.len() > RESOLUTION_EVENTS_MAX {
                    return Err(MatrixError::internal(format!(
                        "more than {RESOLUTION_EVENTS_MAX} events to resolve state"
                    )));
                }
            }
            next.sort_unstable();
            next.dedup();
            frontier = next;
        }
        Ok(())
    }

    /// The accepted events of `ids` (from the cache, else storage).
    async fn pdus(
        &self,
        version: &RoomVersion,
        ids: &[String],
        cache: &mut Cache,
    ) -> MatrixResult<Vec<Arc<Pdu>>> {
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !cache.pdus.contains_key(*id))
            .cloned()
            .collect();
        let mut found: Vec<Arc<Pdu>> = ids
            .iter()
            .filter_map(|id| cache.pdus.get(id).cloned())
            .collect();
        for event in self.stored_events(&missing).await? {
            if event.status != EventStatus::Rejected {
                found.push(Arc::new(parse(version, &event)?));
            }
        }
        Ok(found)
    }

    async fn stored_events(&self, ids: &[String]) -> MatrixResult<Vec<StoredEvent>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.storage
            .events(ids)
            .await
            .map_err(MatrixError::internal)
    }

    /// Moves the cached head's state (and interested users) to `state`.
    async fn set_head_state(
        &self,
        head: &mut RoomHead,
        state: &StateMap,
        cache: &mut Cache,
    ) -> MatrixResult<()> {
        let version = head.version.clone();
        head.state.retain(|key, _| state.contains_key(key));
        let changed: Vec<String> = state
            .iter()
            .filter(|(key, id)| head.state.get(*key).is_none_or(|p| &p.event_id != *id))
            .map(|(_, id)| id.clone())
            .collect();
        let loaded = self.pdus(&version, &changed, cache).await?;
        if loaded.len() != changed.len() {
            return Err(MatrixError::internal(
                "an event of the room's new current state is missing or rejected",
            ));
        }
        for pdu in loaded {
            if let Some(key) = &pdu.state_key {
                head.state
                    .insert((pdu.kind.clone(), key.clone()), (*pdu).clone());
            }
        }
        head.interested = head
            .state
            .iter()
            .filter_map(|((kind, key), pdu)| {
                let membership = pdu.membership()?;
                (kind == "m.room.member" && is_interested(membership))
                    .then(|| (key.clone(), membership.to_owned()))
            })
            .collect();
        Ok(())
    }

    /// The push actions of a remote event for the room's joined local users.
    async fn remote_push_actions(
        &self,
        head: &RoomHead,
        pdu: &Pdu,
    ) -> MatrixResult<Vec<myelin_storage::PushAction>> {
        let suffix = format!(":{}", self.server_name);
        let joined: Vec<&str> = head
            .interested
            .iter()
            .filter(|(user, membership)| membership.as_str() == "join" && user.ends_with(&suffix))
            .map(|(user, _)| user.as_str())
            .collect();
        if joined.is_empty() {
            return Ok(Vec::new());
        }
        self.push
            .preload(self.storage.as_ref(), joined.iter().copied())
            .await?;
        Ok(self.push.actions(&head.version, &head.state, &joined, pdu))
    }
}

/// From room version 12 the create event is named by the room id.
fn create_id(version: &RoomVersion, room_id: &str) -> Option<String> {
    version
        .rules
        .authorization
        .room_create_event_id_as_room_id
        .then(|| format!("${}", room_id.strip_prefix('!').unwrap_or(room_id)))
}

fn parse(version: &RoomVersion, event: &StoredEvent) -> MatrixResult<Pdu> {
    Pdu::from_json_str(version, &event.json, &event.event_id).map_err(MatrixError::internal)
}

/// The batch in an order where every event comes after the events of the
/// batch it cites as prev events (depth, then event id, among the ready
/// ones). Events in a cycle come last, in depth order: their prev events
/// are then missing and they are refused.
fn topological(batch: Vec<Pdu>) -> Vec<Pdu> {
    let ids: HashSet<String> = batch.iter().map(|p| p.event_id.clone()).collect();
    let mut waiting: HashMap<String, usize> = HashMap::new();
    let mut children: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, pdu) in batch.iter().enumerate() {
        let inside: HashSet<&String> = pdu
            .prev_events
            .iter()
            .filter(|p| ids.contains(*p))
            .collect();
        waiting.insert(pdu.event_id.clone(), inside.len());
        for prev in inside {
            children.entry(prev.clone()).or_default().push(i);
        }
    }
    let key = |p: &Pdu| (p.depth, p.event_id.clone());
    let mut ready: BTreeSet<((i64, String), usize)> = batch
        .iter()
        .enumerate()
        .filter(|(_, p)| waiting[&p.event_id] == 0)
        .map(|(i, p)| (key(p), i))
        .collect();
    let mut order = Vec::with_capacity(batch.len());
    let mut done = vec![false; batch.len()];
    while let Some(first) = ready.pop_first() {
        let i = first.1;
        done[i] = true;
        order.push(i);
        for &child in children.get(&batch[i].event_id).into_iter().flatten() {
            let count = waiting.get_mut(&batch[child].event_id).expect("counted");
            *count -= 1;
            if *count == 0 {
                ready.insert((key(&batch[child]), child));
            }
        }
    }
    let mut rest: Vec<usize> = (0..batch.len()).filter(|i| !done[*i]).collect();
    rest.sort_by_key(|i| key(&batch[*i]));
    order.extend(rest);
    let mut slots: Vec<Option<Pdu>> = batch.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}
