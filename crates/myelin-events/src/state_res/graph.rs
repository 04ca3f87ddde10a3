//! A room's auth graph: its events interned as dense `u32` indexes, their
//! `auth_events` edges, and a chain cover index of their auth chains.
//!
//! # The chain cover index
//!
//! Every event is placed on a *chain*, a path along `auth_events`: an event
//! extends the chain of its auth event with the same `(type, state_key)`
//! when that auth event is still the chain's last (so a user's successive
//! memberships, or the successive power levels, share a chain); otherwise it
//! starts a new chain. So on every chain, an event's auth chain holds every
//! event before it on the chain.
//!
//! Each chain keeps *links*: "from position `p` on, this chain's events
//! reach the first `n` events of chain `c`". An event's auth chain is then
//! exactly, for each chain, a prefix: on its own chain the events before it,
//! on chain `c` the largest `n` among its chain's links from positions up
//! to its own. Links are stored only where they add to what the chain's
//! earlier events already reach (the transitive closure, kept small).
//!
//! A set of events reaches, per chain, the largest prefix any of them does,
//! so the auth difference of state sets is, chain by chain, the positions
//! between the smallest and the largest prefix the sets reach: no auth chain
//! is walked. Synapse's chain cover index (its
//! `docs/auth_chain_difference_algorithm.md`) is the same idea over SQL
//! tables; here it lives in memory and is extended as events are inserted.
//!
//! Events are inserted after their auth events (the order a room's DAG
//! arrives in). An auth event that is not in the graph when its citing
//! event is inserted is absent for good, as the spec treats rejected auth
//! events: insert only accepted events.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{CREATE, NONE, RESOLUTION_EVENTS_MAX, StateMap, StateResError};
use crate::pdu::Pdu;

/// An event's index in an [`AuthGraph`].
pub type EventIx = u32;
/// A `(type, state_key)`'s index in an [`AuthGraph`].
pub type KeyIx = u32;
/// A room state over an [`AuthGraph`]'s indexes: `(key, event)` pairs, one
/// per key.
pub type IxState = Vec<(KeyIx, EventIx)>;

/// "From position `from` on, a chain reaches the first `count` events of
/// chain `chain`."
#[derive(Debug, Clone, Copy)]
struct Link {
    from: u32,
    chain: u32,
    count: u32,
}

#[derive(Debug, Clone, Default)]
struct Chain {
    /// The chain's events, oldest first.
    events: Vec<EventIx>,
    /// Sorted by `from` (appended as the chain grows).
    links: Vec<Link>,
}

/// A room's events with their auth edges and chain cover index (see the
/// module documentation). Build it once per room and [`insert`] events as
/// they are accepted; [`super::resolve_in`] and [`super::resolve_ix`]
/// resolve state sets against it without walking auth chains.
///
/// [`insert`]: AuthGraph::insert
#[derive(Debug, Clone, Default)]
pub struct AuthGraph {
    id_ix: FxHashMap<Arc<str>, EventIx>,
    ids: Vec<Arc<str>>,
    /// `None` for an id known only from a state set (never inserted).
    pdus: Vec<Option<Arc<Pdu>>>,
    /// `(start, len)` of each event's auth events in `auth_edges`.
    auth_spans: Vec<(u32, u32)>,
    auth_edges: Vec<EventIx>,
    /// The state key of each event, `NONE` for a message or absent event.
    keys: Vec<KeyIx>,
    key_ix: FxHashMap<String, FxHashMap<String, KeyIx>>,
    key_names: Vec<(String, String)>,
    /// `(chain, position)` of each event; `(NONE, 0)` when absent.
    pos: Vec<(u32, u32)>,
    chains: Vec<Chain>,
    links: usize,
    /// v12: the create event each room id names (`!x` names `$x`).
    room_creates: FxHashMap<String, EventIx>,
}

impl AuthGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Events known, inserted or only named by a state set.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Chains and links of the index (for statistics).
    pub fn index_size(&self) -> (usize, usize) {
        (self.chains.len(), self.links)
    }

    /// The event's index, if the graph knows its id.
    pub fn event_ix(&self, event_id: &str) -> Option<EventIx> {
        self.id_ix.get(event_id).copied()
    }

    /// Whether the event was inserted (not only named by a state set).
    pub fn holds(&self, event_id: &str) -> bool {
        self.event_ix(event_id)
            .is_some_and(|event| self.pdus[event as usize].is_some())
    }

    /// The id of an event of this graph.
    pub fn event_id(&self, event: EventIx) -> &str {
        &self.ids[event as usize]
    }

    /// The event, if it was inserted.
    pub fn pdu(&self, event: EventIx) -> Option<&Pdu> {
        self.pdus.get(event as usize)?.as_deref()
    }

    /// The event, shared, if it was inserted.
    pub fn pdu_arc(&self, event: EventIx) -> Option<Arc<Pdu>> {
        self.pdus.get(event as usize)?.clone()
    }

    /// The index of a `(type, state_key)`, if any event of the graph or
    /// interned state has it.
    pub fn key_ix(&self, kind: &str, state_key: &str) -> Option<KeyIx> {
        self.key_ix.get(kind)?.get(state_key).copied()
    }

    /// The keys of one event type, by state key.
    pub(super) fn keys_of_kind(&self, kind: &str) -> Option<&FxHashMap<String, KeyIx>> {
        self.key_ix.get(kind)
    }

    /// The `(type, state_key)` of a key of this graph.
    pub fn key(&self, key: KeyIx) -> (&str, &str) {
        let (kind, state_key) = &self.key_names[key as usize];
        (kind, state_key)
    }

    /// Number of interned keys.
    pub fn key_count(&self) -> usize {
        self.key_names.len()
    }

    /// Inserts an accepted event, after its auth events; auth events the
    /// graph does not hold are absent. Inserting an event twice returns
    /// its index.
    pub fn insert(&mut self, pdu: Arc<Pdu>) -> Result<EventIx, StateResError> {
        let event = self.intern_event(&pdu.event_id)?;
        if self.pdus[event as usize].is_some() {
            return Ok(event);
        }
        let auth: Vec<EventIx> = pdu
            .auth_events
            .iter()
            .filter_map(|id| self.event_ix(id))
            .collect();
        self.attach(event, pdu, auth);
        Ok(event)
    }

    /// Interns a state map's ids and keys (ids the graph does not hold
    /// become absent events).
    pub fn intern_state(&mut self, state: &StateMap) -> Result<IxState, StateResError> {
        let mut interned = Vec::with_capacity(state.len());
        for ((kind, state_key), id) in state {
            let key = self.intern_key(kind, state_key);
            interned.push((key, self.intern_event(id)?));
        }
        Ok(interned)
    }

    /// The state map of an interned state.
    pub fn state_map(&self, state: &[(KeyIx, EventIx)]) -> StateMap {
        let mut map = StateMap::with_capacity(state.len());
        for &(key, event) in state {
            map.insert(
                self.key_names[key as usize].clone(),
                self.ids[event as usize].to_string(),
            );
        }
        map
    }

    pub(super) fn intern_event(&mut self, id: &str) -> Result<EventIx, StateResError> {
        if let Some(&ix) = self.id_ix.get(id) {
            return Ok(ix);
        }
        if self.ids.len() >= RESOLUTION_EVENTS_MAX {
            return Err(StateResError::TooManyEvents(RESOLUTION_EVENTS_MAX));
        }
        let ix = self.ids.len() as EventIx;
        let id: Arc<str> = Arc::from(id);
        self.id_ix.insert(id.clone(), ix);
        self.ids.push(id);
        self.pdus.push(None);
        self.auth_spans.push((0, 0));
        self.keys.push(NONE);
        self.pos.push((NONE, 0));
        Ok(ix)
    }

    pub(super) fn intern_key(&mut self, kind: &str, state_key: &str) -> KeyIx {
        if let Some(ix) = self.key_ix(kind, state_key) {
            return ix;
        }
        let ix = self.key_names.len() as KeyIx;
        self.key_names.push((kind.to_owned(), state_key.to_owned()));
        self.key_ix
            .entry(kind.to_owned())
            .or_default()
            .insert(state_key.to_owned(), ix);
        ix
    }

    /// Gives an interned, absent event its PDU and the auth events that
    /// the graph holds, and places it in the index.
    pub(super) fn attach(&mut self, event: EventIx, pdu: Arc<Pdu>, mut auth: Vec<EventIx>) {
        let n = event as usize;
        auth.retain(|&a| self.pdus[a as usize].is_some());
        let mut seen = Vec::with_capacity(auth.len());
        auth.retain(|&a| {
            let new = !seen.contains(&a);
            seen.push(a);
            new
        });
        if let Some(state_key) = &pdu.state_key {
            self.keys[n] = self.intern_key(&pdu.kind, state_key);
            if pdu.kind == CREATE
                && state_key.is_empty()
                && let Some(suffix) = pdu.event_id.strip_prefix('$')
            {
                self.room_creates.insert(format!("!{suffix}"), event);
            }
        }
        self.place(event, &auth);
        self.auth_spans[n] = (self.auth_edges.len() as u32, auth.len() as u32);
        self.auth_edges.extend(auth);
        self.pdus[n] = Some(pdu);
    }

    /// Puts `event` on a chain and records the links its auth events add.
    fn place(&mut self, event: EventIx, auth: &[EventIx]) {
        let key = self.keys[event as usize];
        // Extend the chain of the auth event with the same state key (a
        // user's previous membership, the previous power levels) when it
        // is still its chain's last: chains follow one key's history. Any
        // other choice is as correct, but sharing chains between keys
        // scatters each key's history over many chains and multiplies the
        // links (a room's power levels over hundreds of chains).
        let extend = auth.iter().copied().find(|&a| {
            let (chain, position) = self.pos[a as usize];
            key != NONE
                && self.keys[a as usize] == key
                && self.chains[chain as usize].events.len() == position as usize + 1
        });
        // What the event reaches: each auth event and what it reaches.
        let mut reach: Vec<(u32, u32)> = Vec::new();
        for &a in auth {
            let (chain, position) = self.pos[a as usize];
            reach.push((chain, position + 1));
            self.push_reach(chain, position, &mut reach);
        }
        let reach = max_per_chain(reach);
        let (chain, position, implied) = match extend {
            Some(a) => {
                let (chain, position) = self.pos[a as usize];
                let mut implied = Vec::new();
                self.push_reach(chain, position, &mut implied);
                (chain, position + 1, max_per_chain(implied))
            }
            None => {
                self.chains.push(Chain::default());
                (self.chains.len() as u32 - 1, 0, Vec::new())
            }
        };
        self.pos[event as usize] = (chain, position);
        let chain_data = &mut self.chains[chain as usize];
        chain_data.events.push(event);
        for (to, count) in reach {
            let known = implied
                .binary_search_by_key(&to, |&(c, _)| c)
                .map_or(0, |i| implied[i].1);
            if to != chain && count > known {
                chain_data.links.push(Link {
                    from: position,
                    chain: to,
                    count,
                });
                self.links += 1;
            }
        }
    }

    /// Pushes what the event at `position` on `chain` reaches through the
    /// chain's links (not its own chain).
    fn push_reach(&self, chain: u32, position: u32, out: &mut Vec<(u32, u32)>) {
        out.extend(
            self.chains[chain as usize]
                .links
                .iter()
                .take_while(|link| link.from <= position)
                .map(|link| (link.chain, link.count)),
        );
    }

    // The resolution reads the graph through these.

    pub(super) fn auth(&self, event: EventIx) -> &[EventIx] {
        match self.auth_spans.get(event as usize) {
            Some(&(start, len)) => &self.auth_edges[start as usize..(start + len) as usize],
            None => &[],
        }
    }

    pub(super) fn key_of(&self, event: EventIx) -> KeyIx {
        self.keys.get(event as usize).copied().unwrap_or(NONE)
    }

    pub(super) fn id(&self, event: EventIx) -> &str {
        &self.ids[event as usize]
    }

    pub(super) fn room_create(&self, room_id: &str) -> Option<EventIx> {
        self.room_creates.get(room_id).copied()
    }

    pub(super) fn chain_count(&self) -> usize {
        self.chains.len()
    }

    /// `(chain, position)` of an inserted event.
    pub(super) fn position(&self, event: EventIx) -> Option<(u32, u32)> {
        let &(chain, position) = self.pos.get(event as usize)?;
        (chain != NONE).then_some((chain, position))
    }

    /// Raises `reached[c]` to what the event at `position` on `chain`
    /// reaches of each chain `c` (its auth chain, the event excluded).
    pub(super) fn reach_into(&self, chain: u32, position: u32, mut raise: impl FnMut(u32, u32)) {
        raise(chain, position);
        for link in self.chains[chain as usize]
            .links
            .iter()
            .take_while(|link| link.from <= position)
        {
            raise(link.chain, link.count);
        }
    }

    /// The auth chain of an inserted event as the index gives it, sorted
    /// (for tests: it must equal the walked one).
    #[cfg(test)]
    pub(super) fn indexed_auth_chain(&self, event: EventIx) -> Vec<EventIx> {
        let Some((chain, position)) = self.position(event) else {
            return Vec::new();
        };
        let mut reached = vec![0u32; self.chains.len()];
        self.reach_into(chain, position, |to, count| {
            reached[to as usize] = reached[to as usize].max(count);
        });
        let mut events: Vec<EventIx> = reached
            .iter()
            .enumerate()
            .flat_map(|(c, &count)| self.chain_events(c as u32, 0, count).iter().copied())
            .collect();
        events.sort_unstable();
        events
    }

    /// Events at positions `from..to` of `chain`.
    pub(super) fn chain_events(&self, chain: u32, from: u32, to: u32) -> &[EventIx] {
        &self.chains[chain as usize].events[from as usize..to as usize]
    }
}

/// The largest count per chain, sorted by chain.
fn max_per_chain(mut reach: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    reach.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    reach.dedup_by_key(|&mut (chain, _)| chain);
    reach
}
