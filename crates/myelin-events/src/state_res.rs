//! State resolution v2 (room versions 2–11) and v2.1 (room version 12,
//! MSC4297), as the server-server API's "Room version 2" page describes it,
//! with the authorization rules of [`crate::auth`]; v1 (room version 1) is
//! in [`v1`].
//!
//! The resolution works on an [`AuthGraph`]: every event id is a dense
//! `u32` index, every `(type, state_key)` a dense `u32` key, and a chain
//! cover index answers "which events are in this set's auth chain" without
//! walking it (see [`graph`]). A server keeps one graph per room and
//! extends it as events arrive, then calls [`resolve_in`] (string state
//! maps) or [`resolve_ix`] (interned state); [`resolve`] builds a graph
//! from a `fetch` for a one-off resolution.
//!
//! The phases: split the state sets (unconflicted state, conflicted events
//! per set); the auth difference, chain by chain from the index; the full
//! conflicted set (v2.1: with the conflicted state subgraph); the power
//! events in reverse topological power ordering; iterative auth checks;
//! the other events in mainline order; iterative auth checks; the
//! unconflicted state applied last. Independent work (interning the state
//! sets, what the unconflicted state reaches, each set's conflicted events,
//! the senders' power levels) runs on the current rayon pool when it is
//! large enough to pay for it; install a dedicated pool to keep it off an
//! async runtime.
//!
//! Choices where the spec leaves room (all as Synapse and ruma-state-res do):
//! - the events a power event pulls into the power ordering are its auth
//!   events in the full conflicted set, followed only through events of the
//!   full conflicted set;
//! - a sender's power level for that ordering is read from the event's own
//!   auth events (its power levels and create event);
//! - an event's mainline position follows, from the event, the first
//!   `m.room.power_levels` among each event's `auth_events`;
//! - the unconflicted state is applied last in both v2 and v2.1.
//!
//! Events the caller cannot give (unknown or rejected) are absent: they are
//! left out of auth chains and auth events, as the spec treats rejected
//! auth events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use rayon::prelude::*;
use ruma::room_version_rules::StateResolutionVersion;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::auth::{PowerLevel, StateView, auth_types_for_event, check_auth, user_power_level};
use crate::pdu::Pdu;
use crate::room_version::RoomVersion;

pub mod graph;
mod v1;

pub use graph::{AuthGraph, EventIx, IxState, KeyIx};

/// A room state: `(type, state_key)` to event id.
pub type StateMap = HashMap<(String, String), String>;

/// The most events one graph holds (a resolution's state sets and their
/// auth chains, or a room's graph): past it the resolution fails instead
/// of exhausting memory.
pub const RESOLUTION_EVENTS_MAX: usize = 4_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateResError {
    /// A room version whose state resolution this server does not know.
    #[error("room version {0} has no state resolution algorithm here")]
    UnsupportedVersion(&'static str),
    /// The `auth_events` references form a cycle (no valid room does).
    #[error("the auth events form a cycle through {0}")]
    AuthCycle(String),
    /// More than [`RESOLUTION_EVENTS_MAX`] events to load.
    #[error("the state sets and their auth chains hold more than {0} events")]
    TooManyEvents(usize),
}

const CREATE: &str = "m.room.create";
const POWER_LEVELS: &str = "m.room.power_levels";
const JOIN_RULES: &str = "m.room.join_rules";
const MEMBER: &str = "m.room.member";

/// No event, no key.
const NONE: u32 = u32::MAX;
/// Below this many state entries in all, interning runs on one thread.
const PARALLEL_ENTRIES_MIN: usize = 4096;
/// Below this many events, per-event work runs on one thread.
const PARALLEL_EVENTS_MIN: usize = 256;

/// Resolves `state_sets` (the states of the forks being merged) into one
/// state. `fetch` gives an event by id: every event of the state sets and
/// of their auth chains that was accepted, and for v12 the room's create
/// event; it returns `None` for unknown or rejected events.
///
/// It builds a graph of those events for this one resolution; a server
/// that resolves the same room again keeps an [`AuthGraph`] and calls
/// [`resolve_in`].
pub fn resolve<F>(
    version: &RoomVersion,
    state_sets: &[StateMap],
    fetch: F,
) -> Result<StateMap, StateResError>
where
    F: Fn(&str) -> Option<Arc<Pdu>>,
{
    if !matches!(version.rules.state_res, StateResolutionVersion::V2(_)) {
        return v1::resolve(version, state_sets, fetch);
    }
    match state_sets {
        [] => return Ok(StateMap::new()),
        [first, rest @ ..] if rest.iter().all(|set| set == first) => return Ok(first.clone()),
        _ => {}
    }
    let graph = load(version, state_sets, &fetch)?;
    resolve_in(&graph, version, state_sets)
}

/// Resolves `state_sets` against a room's graph, which must hold every
/// accepted event of the state sets and of their auth chains (ids it does
/// not hold are absent events).
pub fn resolve_in(
    graph: &AuthGraph,
    version: &RoomVersion,
    state_sets: &[StateMap],
) -> Result<StateMap, StateResError> {
    let StateResolutionVersion::V2(rules) = &version.rules.state_res else {
        return v1::resolve(version, state_sets, |id| {
            graph.event_ix(id).and_then(|event| graph.pdu_arc(event))
        });
    };
    match state_sets {
        [] => return Ok(StateMap::new()),
        [only] => return Ok(only.clone()),
        _ => {}
    }
    let mut overlay = Overlay::default();
    let sets = overlay.intern(graph, state_sets);
    let key_count = graph.key_count() + overlay.keys.len();
    let resolved = resolve_core(graph, version, rules, &sets, key_count)?;
    // The strings are copied in parallel; the map is filled on one thread.
    let owned = |&(key, event): &(KeyIx, EventIx)| {
        let key = match key.checked_sub(graph.key_count() as KeyIx) {
            None => {
                let (kind, state_key) = graph.key(key);
                (kind.to_owned(), state_key.to_owned())
            }
            Some(extra) => overlay.keys[extra as usize].clone(),
        };
        let id = match event.checked_sub(graph.len() as EventIx) {
            None => graph.event_id(event).to_owned(),
            Some(extra) => overlay.events[extra as usize].clone(),
        };
        (key, id)
    };
    let entries: Vec<((String, String), String)> = if resolved.len() >= PARALLEL_ENTRIES_MIN {
        resolved
            .par_iter()
            .with_min_len(LOOKUP_CHUNK)
            .map(owned)
            .collect()
    } else {
        resolved.iter().map(owned).collect()
    };
    let mut map = StateMap::with_capacity(entries.len());
    map.extend(entries);
    Ok(map)
}

/// Resolves interned state sets (from [`AuthGraph::intern_state`]) against
/// their graph, into an interned state sorted by key: the fastest way, for
/// a server that keeps its rooms' states interned.
pub fn resolve_ix(
    graph: &AuthGraph,
    version: &RoomVersion,
    state_sets: &[IxState],
) -> Result<IxState, StateResError> {
    let StateResolutionVersion::V2(rules) = &version.rules.state_res else {
        let maps: Vec<StateMap> = state_sets.iter().map(|s| graph.state_map(s)).collect();
        let resolved = resolve_in(graph, version, &maps)?;
        let mut state: IxState = resolved
            .iter()
            .filter_map(|((kind, state_key), id)| {
                Some((graph.key_ix(kind, state_key)?, graph.event_ix(id)?))
            })
            .collect();
        state.sort_unstable();
        return Ok(state);
    };
    match state_sets {
        [] => Ok(IxState::new()),
        [only] => {
            let mut state = only.clone();
            state.sort_unstable();
            Ok(state)
        }
        _ => resolve_core(graph, version, rules, state_sets, graph.key_count()),
    }
}

/// Whether an event is a power event: power levels, join rules, create,
/// or a kick or ban (a leave or ban whose sender is not its target).
pub fn is_power_event(pdu: &Pdu) -> bool {
    let Some(state_key) = pdu.state_key.as_deref() else {
        return false;
    };
    match pdu.kind.as_str() {
        POWER_LEVELS | JOIN_RULES | CREATE => state_key.is_empty(),
        MEMBER => matches!(pdu.membership(), Some("leave" | "ban")) && pdu.sender != state_key,
        _ => false,
    }
}

/// Fetches the state sets' events and every event their `auth_events`
/// reach (for v12 also the room's create event) into a new graph, auth
/// events first; fails on a cycle.
fn load<F>(
    version: &RoomVersion,
    state_sets: &[StateMap],
    fetch: &F,
) -> Result<AuthGraph, StateResError>
where
    F: Fn(&str) -> Option<Arc<Pdu>>,
{
    let mut graph = AuthGraph::new();
    let mut fetched: Vec<Option<(Arc<Pdu>, Vec<EventIx>)>> = Vec::new();
    let mut visited: Vec<bool> = Vec::new();
    let mut stack = Vec::new();
    for set in state_sets {
        for id in set.values() {
            stack.push(graph.intern_event(id)?);
        }
    }
    let mut rooms_done = false;
    loop {
        while let Some(event) = stack.pop() {
            let n = event as usize;
            if visited.len() <= n {
                visited.resize(graph.len(), false);
                fetched.resize_with(graph.len(), || None);
            }
            if std::mem::replace(&mut visited[n], true) {
                continue;
            }
            let Some(pdu) = fetch(graph.id(event)) else {
                continue;
            };
            let mut auth = Vec::with_capacity(pdu.auth_events.len());
            for id in &pdu.auth_events {
                let a = graph.intern_event(id)?;
                auth.push(a);
                stack.push(a);
            }
            fetched[n] = Some((pdu, auth));
        }
        if rooms_done || !version.rules.authorization.room_create_event_id_as_room_id {
            break;
        }
        // v12: the create event each room id names.
        rooms_done = true;
        let mut rooms: Vec<String> = fetched
            .iter()
            .flatten()
            .map(|(pdu, _)| pdu.room_id.clone())
            .collect();
        rooms.sort_unstable();
        rooms.dedup();
        for room in rooms {
            if let Some(suffix) = room.strip_prefix('!') {
                stack.push(graph.intern_event(&format!("${suffix}"))?);
            }
        }
    }
    fetched.resize_with(graph.len(), || None);

    // Kahn's algorithm over the fetched events: every event before the
    // events it cites.
    let mut citing = vec![0u32; graph.len()];
    for (_, auth) in fetched.iter().flatten() {
        for &a in auth {
            citing[a as usize] += 1;
        }
    }
    let mut ready: Vec<EventIx> = (0..graph.len() as EventIx)
        .filter(|&n| citing[n as usize] == 0)
        .collect();
    let mut order = Vec::with_capacity(graph.len());
    while let Some(event) = ready.pop() {
        order.push(event);
        if let Some((_, auth)) = &fetched[event as usize] {
            for &a in auth {
                citing[a as usize] -= 1;
                if citing[a as usize] == 0 {
                    ready.push(a);
                }
            }
        }
    }
    if order.len() < graph.len() {
        let stuck = citing.iter().position(|&c| c > 0).unwrap_or(0);
        return Err(StateResError::AuthCycle(
            graph.id(stuck as EventIx).to_owned(),
        ));
    }
    for &event in order.iter().rev() {
        if let Some((pdu, auth)) = fetched[event as usize].take() {
            graph.attach(event, pdu, auth);
        }
    }
    Ok(graph)
}

/// Ids and keys of string state sets that the graph does not know: they
/// get indexes past the graph's.
#[derive(Default)]
struct Overlay {
    events: Vec<String>,
    event_ix: FxHashMap<String, EventIx>,
    keys: Vec<(String, String)>,
    key_ix: FxHashMap<(String, String), KeyIx>,
}

/// Entries looked up per parallel task: a few hundred microseconds of
/// hash lookups, enough to outweigh a task's scheduling.
const LOOKUP_CHUNK: usize = 2048;

/// One state entry, borrowed from a [`StateMap`].
type Entry<'a> = (&'a (String, String), &'a String);

/// Looks a run of state entries up in the graph: their indexes, `NONE`
/// for an entry whose key or event the graph does not know.
fn lookup_run<'a>(
    graph: &AuthGraph,
    entries: impl Iterator<Item = Entry<'a>>,
    out: &mut IxState,
) -> usize {
    let mut misses = 0;
    // Most entries are memberships: look the type up once per run of it.
    let mut kind_keys = None;
    for ((kind, state_key), id) in entries {
        let keys = match kind_keys {
            Some((last, keys)) if last == kind => keys,
            _ => {
                let keys = graph.keys_of_kind(kind);
                kind_keys = Some((kind, keys));
                keys
            }
        };
        let key = keys.and_then(|keys| keys.get(state_key.as_str()).copied());
        match (key, graph.event_ix(id)) {
            (Some(key), Some(event)) => out.push((key, event)),
            _ => {
                misses += 1;
                out.push((NONE, NONE));
            }
        }
    }
    misses
}

/// A state set's entries as the graph's indexes, in the set's iteration
/// order, with those it does not know left `NONE`; and how many those are.
/// Large sets are looked up in parallel chunks.
fn lookup(graph: &AuthGraph, set: &StateMap) -> (IxState, usize) {
    let mut state = IxState::with_capacity(set.len());
    if set.len() < PARALLEL_ENTRIES_MIN {
        let misses = lookup_run(graph, set.iter(), &mut state);
        return (state, misses);
    }
    let entries: Vec<Entry> = set.iter().collect();
    let chunks: Vec<(IxState, usize)> = entries
        .par_chunks(LOOKUP_CHUNK)
        .map(|chunk| {
            let mut out = IxState::with_capacity(chunk.len());
            let misses = lookup_run(graph, chunk.iter().copied(), &mut out);
            (out, misses)
        })
        .collect();
    let mut misses = 0;
    for (chunk, chunk_misses) in chunks {
        state.extend_from_slice(&chunk);
        misses += chunk_misses;
    }
    (state, misses)
}

impl Overlay {
    /// Interns the state sets (sets, and chunks of large ones, in
    /// parallel).
    fn intern(&mut self, graph: &AuthGraph, state_sets: &[StateMap]) -> Vec<IxState> {
        let entries: usize = state_sets.iter().map(HashMap::len).sum();
        let looked_up: Vec<(IxState, usize)> = if entries >= PARALLEL_ENTRIES_MIN {
            state_sets
                .par_iter()
                .map(|set| lookup(graph, set))
                .collect()
        } else {
            state_sets.iter().map(|set| lookup(graph, set)).collect()
        };
        looked_up
            .into_iter()
            .zip(state_sets)
            .map(|((mut state, misses), set)| {
                if misses > 0 {
                    // An unchanged map iterates in the same order again.
                    for (slot, ((kind, state_key), id)) in state.iter_mut().zip(set) {
                        if slot.0 == NONE {
                            let key = graph
                                .key_ix(kind, state_key)
                                .unwrap_or_else(|| self.key(graph, kind, state_key));
                            let event = graph.event_ix(id).unwrap_or_else(|| self.event(graph, id));
                            *slot = (key, event);
                        }
                    }
                }
                state
            })
            .collect()
    }

    fn key(&mut self, graph: &AuthGraph, kind: &str, state_key: &str) -> KeyIx {
        let next = (graph.key_count() + self.keys.len()) as KeyIx;
        let key = (kind.to_owned(), state_key.to_owned());
        *self.key_ix.entry(key.clone()).or_insert_with(|| {
            self.keys.push(key);
            next
        })
    }

    fn event(&mut self, graph: &AuthGraph, id: &str) -> EventIx {
        let next = (graph.len() + self.events.len()) as EventIx;
        *self.event_ix.entry(id.to_owned()).or_insert_with(|| {
            self.events.push(id.to_owned());
            next
        })
    }
}

/// The resolution proper, on interned state sets whose keys are below
/// `key_count`; events past the graph's are absent.
fn resolve_core(
    graph: &AuthGraph,
    version: &RoomVersion,
    rules: &ruma::room_version_rules::StateResolutionV2Rules,
    state_sets: &[IxState],
    key_count: usize,
) -> Result<IxState, StateResError> {
    let split = Split::new(state_sets, key_count);
    if split.conflicted.is_empty() {
        return Ok(split.unconflicted);
    }
    let mut full = auth_difference(graph, &split);
    full.extend(
        split
            .conflicted
            .iter()
            .copied()
            .filter(|&event| graph.pdu(event).is_some()),
    );
    if rules.consider_conflicted_state_subgraph {
        full.extend(conflicted_subgraph(graph, &split.conflicted));
    }
    full.sort_unstable();
    full.dedup();
    let full = FullSet::new(graph, full);

    let power_sorted = full.sort_power_events(graph, version)?;

    let mut state = vec![NONE; key_count];
    if !rules.begin_iterative_auth_checks_with_empty_state_map {
        for &(key, event) in &split.unconflicted {
            state[key as usize] = event;
        }
    }
    iterative_auth_checks(graph, version, &power_sorted, &mut state);

    let mut in_power = vec![false; full.events.len()];
    for &event in &power_sorted {
        if let Some(local) = full.local(event) {
            in_power[local] = true;
        }
    }
    let others: Vec<EventIx> = full
        .events
        .iter()
        .zip(&in_power)
        .filter(|(_, power)| !**power)
        .map(|(&event, _)| event)
        .collect();
    let power_levels = graph
        .key_ix(POWER_LEVELS, "")
        .map_or(NONE, |key| state[key as usize]);
    let others = full.mainline_sort(graph, &others, power_levels);
    iterative_auth_checks(graph, version, &others, &mut state);

    for &(key, event) in &split.unconflicted {
        state[key as usize] = event;
    }
    Ok(state
        .iter()
        .enumerate()
        .filter(|(_, event)| **event != NONE)
        .map(|(key, event)| (key as KeyIx, *event))
        .collect())
}

/// The state sets split: the unconflicted state and the conflicted events.
struct Split {
    /// Sorted by key.
    unconflicted: IxState,
    /// Sorted, without duplicates.
    conflicted: Vec<EventIx>,
    /// Each set's events at conflicted keys.
    per_set: Vec<Vec<EventIx>>,
}

impl Split {
    /// A key is unconflicted when every set holds it with the same event.
    fn new(state_sets: &[IxState], key_count: usize) -> Self {
        let sets = state_sets.len() as u32;
        let mut first = vec![NONE; key_count];
        let mut agreeing = vec![0u32; key_count];
        let mut clash = vec![false; key_count];
        for state in state_sets {
            for &(key, event) in state {
                let k = key as usize;
                if first[k] == NONE {
                    first[k] = event;
                } else if first[k] != event {
                    clash[k] = true;
                }
                agreeing[k] += 1;
            }
        }
        let conflicted_key = |k: usize| clash[k] || agreeing[k] < sets;
        let unconflicted = (0..key_count)
            .filter(|&k| first[k] != NONE && !conflicted_key(k))
            .map(|k| (k as KeyIx, first[k]))
            .collect();
        let per_set: Vec<Vec<EventIx>> = state_sets
            .iter()
            .map(|state| {
                state
                    .iter()
                    .filter(|&&(key, _)| conflicted_key(key as usize))
                    .map(|&(_, event)| event)
                    .collect()
            })
            .collect();
        let mut conflicted: Vec<EventIx> = per_set.iter().flatten().copied().collect();
        conflicted.sort_unstable();
        conflicted.dedup();
        Self {
            unconflicted,
            conflicted,
            per_set,
        }
    }
}

/// The auth difference from the chain cover index: per chain, each set's
/// auth chain holds a prefix (the longest its events reach); the events
/// between the shortest and the longest prefix are in some auth chains but
/// not all. A set's prefixes are those of the unconflicted state (shared by
/// every set, computed once) raised by the set's own conflicted events.
fn auth_difference(graph: &AuthGraph, split: &Split) -> Vec<EventIx> {
    let chains = graph.chain_count();
    // The furthest unconflicted event on each chain reaches at least what
    // the others on it do.
    let mut furthest = vec![NONE; chains];
    for &(_, event) in &split.unconflicted {
        if let Some((chain, position)) = graph.position(event) {
            let slot = &mut furthest[chain as usize];
            if *slot == NONE || position > *slot {
                *slot = position;
            }
        }
    }
    // What the furthest events of chains `offset..` reach, per chain.
    let reach_of = |offset: usize, furthest: &[u32]| {
        let mut reached = vec![0u32; chains];
        for (i, &position) in furthest.iter().enumerate() {
            if position != NONE {
                graph.reach_into((offset + i) as u32, position, |to, count| {
                    let slot = &mut reached[to as usize];
                    *slot = (*slot).max(count);
                });
            }
        }
        reached
    };
    let threads = rayon::current_num_threads();
    let shared = if split.unconflicted.len() >= PARALLEL_ENTRIES_MIN && threads > 1 {
        let part = chains.div_ceil(threads);
        furthest
            .par_chunks(part)
            .enumerate()
            .map(|(i, furthest)| reach_of(i * part, furthest))
            .reduce_with(|mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x = (*x).max(y);
                }
                a
            })
            .unwrap_or_else(|| vec![0; chains])
    } else {
        reach_of(0, &furthest)
    };

    let own = |events: &Vec<EventIx>| {
        let mut reached: FxHashMap<u32, u32> = FxHashMap::default();
        for &event in events {
            if let Some((chain, position)) = graph.position(event) {
                graph.reach_into(chain, position, |to, count| {
                    let slot = reached.entry(to).or_insert(0);
                    *slot = (*slot).max(count);
                });
            }
        }
        reached
    };
    let per_set: Vec<FxHashMap<u32, u32>> = if split.conflicted.len() >= PARALLEL_EVENTS_MIN {
        split.per_set.par_iter().map(own).collect()
    } else {
        split.per_set.iter().map(own).collect()
    };
    let mut touched: Vec<u32> = per_set.iter().flat_map(|m| m.keys().copied()).collect();
    touched.sort_unstable();
    touched.dedup();
    let mut difference = Vec::new();
    for chain in touched {
        let base = shared[chain as usize];
        let (mut shortest, mut longest) = (u32::MAX, 0);
        for reached in &per_set {
            let prefix = reached.get(&chain).copied().unwrap_or(0).max(base);
            shortest = shortest.min(prefix);
            longest = longest.max(prefix);
        }
        if shortest < longest {
            difference.extend_from_slice(graph.chain_events(chain, shortest, longest));
        }
    }
    difference
}

/// v2.1: the events on an `auth_events` path from one conflicted event
/// to another (the conflicted events included).
fn conflicted_subgraph(graph: &AuthGraph, conflicted: &[EventIx]) -> Vec<EventIx> {
    let mut below: FxHashSet<EventIx> = FxHashSet::default();
    let mut cited_by: FxHashMap<EventIx, Vec<EventIx>> = FxHashMap::default();
    let mut stack: Vec<EventIx> = conflicted.to_vec();
    while let Some(event) = stack.pop() {
        if !below.insert(event) {
            continue;
        }
        for &a in graph.auth(event) {
            cited_by.entry(a).or_default().push(event);
            stack.push(a);
        }
    }
    let mut above: FxHashSet<EventIx> = FxHashSet::default();
    let mut stack: Vec<EventIx> = conflicted.to_vec();
    while let Some(event) = stack.pop() {
        if !above.insert(event) {
            continue;
        }
        stack.extend(cited_by.get(&event).into_iter().flatten());
    }
    below
        .into_iter()
        .filter(|event| above.contains(event) && graph.pdu(*event).is_some())
        .collect()
}

/// A power event's place in the reverse topological power ordering: its
/// sender's power level (highest first), `origin_server_ts`, its rank by
/// event id, and its local index.
type PowerOrder = (Reverse<PowerLevel>, i64, u32, usize);

/// The full conflicted set, sorted, with each event's rank in event id
/// order (the last tie breaker of both orderings).
struct FullSet {
    events: Vec<EventIx>,
    rank: Vec<u32>,
}

impl FullSet {
    fn new(graph: &AuthGraph, events: Vec<EventIx>) -> Self {
        let mut by_id: Vec<u32> = (0..events.len() as u32).collect();
        by_id.sort_unstable_by(|&a, &b| {
            graph
                .id(events[a as usize])
                .cmp(graph.id(events[b as usize]))
        });
        let mut rank = vec![0; events.len()];
        for (r, &local) in by_id.iter().enumerate() {
            rank[local as usize] = r as u32;
        }
        Self { events, rank }
    }

    fn local(&self, event: EventIx) -> Option<usize> {
        self.events.binary_search(&event).ok()
    }

    /// The power events of the full conflicted set with their auth events
    /// in it, in reverse topological power ordering: Kahn's algorithm that
    /// always takes, of the events whose auth events are all placed, the
    /// one whose sender has the highest power level, then the earliest
    /// `origin_server_ts`, then the smallest event id.
    fn sort_power_events(
        &self,
        graph: &AuthGraph,
        version: &RoomVersion,
    ) -> Result<Vec<EventIx>, StateResError> {
        let len = self.events.len();
        let mut in_x = vec![false; len];
        let mut x = Vec::new();
        let mut stack: Vec<usize> = (0..len)
            .filter(|&l| graph.pdu(self.events[l]).is_some_and(is_power_event))
            .collect();
        while let Some(local) = stack.pop() {
            if std::mem::replace(&mut in_x[local], true) {
                continue;
            }
            x.push(local);
            for &a in graph.auth(self.events[local]) {
                if let Some(a) = self.local(a)
                    && !in_x[a]
                {
                    stack.push(a);
                }
            }
        }
        let mut waiting = vec![0u32; len];
        let mut cited_by: Vec<Vec<usize>> = vec![Vec::new(); len];
        for &local in &x {
            for &a in graph.auth(self.events[local]) {
                if let Some(a) = self.local(a)
                    && in_x[a]
                {
                    waiting[local] += 1;
                    cited_by[a].push(local);
                }
            }
        }
        let tie_breaker = |local: usize| {
            let event = self.events[local];
            let level = sender_level(graph, version, event);
            let ts = graph.pdu(event).map_or(0, |p| p.origin_server_ts);
            (Reverse(level), ts, self.rank[local], local)
        };
        let mut keys: Vec<Option<PowerOrder>> = vec![None; len];
        let computed: Vec<_> = if x.len() >= PARALLEL_EVENTS_MIN {
            x.par_iter().map(|&l| tie_breaker(l)).collect()
        } else {
            x.iter().map(|&l| tie_breaker(l)).collect()
        };
        for key in computed {
            keys[key.3] = Some(key);
        }
        let mut heap: BinaryHeap<_> = x
            .iter()
            .filter(|&&l| waiting[l] == 0)
            .filter_map(|&l| keys[l].map(Reverse))
            .collect();
        let mut sorted = Vec::with_capacity(x.len());
        while let Some(Reverse((_, _, _, local))) = heap.pop() {
            sorted.push(self.events[local]);
            for &parent in &cited_by[local] {
                waiting[parent] -= 1;
                if waiting[parent] == 0
                    && let Some(key) = keys[parent]
                {
                    heap.push(Reverse(key));
                }
            }
        }
        if sorted.len() < x.len() {
            let stuck = x
                .iter()
                .find(|&&l| waiting[l] > 0)
                .map_or(String::new(), |&l| graph.id(self.events[l]).to_owned());
            return Err(StateResError::AuthCycle(stuck));
        }
        Ok(sorted)
    }

    /// `events` in mainline order: by the position of their closest
    /// mainline event (the chain of power levels from `power_levels`
    /// through their own power levels auth events, oldest first; 0 for
    /// none), then `origin_server_ts`, then event id.
    fn mainline_sort(
        &self,
        graph: &AuthGraph,
        events: &[EventIx],
        power_levels: EventIx,
    ) -> Vec<EventIx> {
        let mut mainline = Vec::new();
        let mut current = (power_levels != NONE).then_some(power_levels);
        while let Some(event) = current {
            if mainline.contains(&event) {
                break;
            }
            mainline.push(event);
            current = power_levels_of(graph, event);
        }
        let mainline: FxHashMap<EventIx, u32> = mainline
            .iter()
            .enumerate()
            .map(|(i, &event)| (event, (mainline.len() - i) as u32))
            .collect();
        // Each task walks its events' power levels up to the mainline,
        // remembering the positions found on the way (in its own memo:
        // tasks share only the mainline).
        let key_chunk = |chunk: &[EventIx]| {
            let mut memo: FxHashMap<EventIx, u32> = FxHashMap::default();
            let mut path = Vec::new();
            let keyed: Vec<(u32, i64, u32, EventIx)> = chunk
                .iter()
                .map(|&event| {
                    let mut current = Some(event);
                    let mut found = 0;
                    while let Some(n) = current {
                        if let Some(&p) = mainline.get(&n).or_else(|| memo.get(&n)) {
                            found = p;
                            break;
                        }
                        if path.contains(&n) {
                            break;
                        }
                        path.push(n);
                        current = power_levels_of(graph, n);
                    }
                    for n in path.drain(..) {
                        memo.insert(n, found);
                    }
                    let ts = graph.pdu(event).map_or(0, |p| p.origin_server_ts);
                    let rank = self.local(event).map_or(NONE, |l| self.rank[l]);
                    (found, ts, rank, event)
                })
                .collect();
            keyed
        };
        let keyed = if events.len() >= PARALLEL_EVENTS_MIN {
            let chunks: Vec<_> = events
                .par_chunks(PARALLEL_EVENTS_MIN)
                .map(key_chunk)
                .collect();
            let mut keyed = chunks.concat();
            keyed.par_sort_unstable();
            keyed
        } else {
            let mut keyed = key_chunk(events);
            keyed.sort_unstable();
            keyed
        };
        keyed.into_iter().map(|(_, _, _, event)| event).collect()
    }
}

/// The create event an event is checked with: from v12 the one its
/// room id names, before it the one among its auth events.
fn create_for(graph: &AuthGraph, version: &RoomVersion, event: EventIx) -> Option<EventIx> {
    let pdu = graph.pdu(event)?;
    if version.rules.authorization.room_create_event_id_as_room_id {
        return graph.room_create(&pdu.room_id);
    }
    graph.auth(event).iter().copied().find(|&a| {
        graph
            .pdu(a)
            .is_some_and(|p| p.kind == CREATE && p.state_key.as_deref() == Some(""))
    })
}

/// The first `m.room.power_levels` among an event's auth events.
fn power_levels_of(graph: &AuthGraph, event: EventIx) -> Option<EventIx> {
    graph.auth(event).iter().copied().find(|&a| {
        graph
            .pdu(a)
            .is_some_and(|p| p.kind == POWER_LEVELS && p.state_key.as_deref() == Some(""))
    })
}

/// The sender's power level as the event's auth events give it.
fn sender_level(graph: &AuthGraph, version: &RoomVersion, event: EventIx) -> PowerLevel {
    let Some(pdu) = graph.pdu(event) else {
        return PowerLevel::Int(0);
    };
    let mut view = AuthView::default();
    if let Some(create) = create_for(graph, version, event).and_then(|c| graph.pdu(c)) {
        view.set(create);
    }
    if let Some(levels) = power_levels_of(graph, event).and_then(|p| graph.pdu(p)) {
        view.set(levels);
    }
    user_power_level(version, &view, &pdu.sender)
}

/// Checks `events` in order against the partially resolved `state` (its
/// entries for the event's auth types laid over the event's own auth
/// events); those allowed join it.
fn iterative_auth_checks(
    graph: &AuthGraph,
    version: &RoomVersion,
    events: &[EventIx],
    state: &mut [EventIx],
) {
    for &event in events {
        let Some(pdu) = graph.pdu(event) else {
            continue;
        };
        let key = graph.key_of(event);
        if key == NONE {
            continue;
        }
        // There are no state-dependent rules for a create event.
        if pdu.kind != CREATE {
            let mut view = AuthView::default();
            for &a in graph.auth(event) {
                if let Some(auth) = graph.pdu(a) {
                    view.set(auth);
                }
            }
            if version.rules.authorization.room_create_event_id_as_room_id
                && let Some(create) = create_for(graph, version, event).and_then(|c| graph.pdu(c))
            {
                view.set(create);
            }
            let auth_types = auth_types_for_event(
                version,
                &pdu.kind,
                &pdu.sender,
                pdu.state_key.as_deref(),
                &pdu.content,
            );
            for (kind, state_key) in &auth_types {
                if let Some(current) = graph
                    .key_ix(kind, state_key)
                    .and_then(|k| state.get(k as usize).copied())
                    .filter(|&e| e != NONE)
                    .and_then(|e| graph.pdu(e))
                {
                    view.set(current);
                }
            }
            if check_auth(version, pdu, &view).is_err() {
                continue;
            }
        }
        if let Some(slot) = state.get_mut(key as usize) {
            *slot = event;
        }
    }
}

/// The few events an event is checked against, one per `(type, state_key)`.
#[derive(Default)]
struct AuthView<'a> {
    events: Vec<&'a Pdu>,
}

impl<'a> AuthView<'a> {
    fn set(&mut self, pdu: &'a Pdu) {
        let Some(state_key) = pdu.state_key.as_deref() else {
            return;
        };
        match self
            .events
            .iter_mut()
            .find(|e| e.kind == pdu.kind && e.state_key.as_deref() == Some(state_key))
        {
            Some(slot) => *slot = pdu,
            None => self.events.push(pdu),
        }
    }
}

impl StateView for AuthView<'_> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&Pdu> {
        self.events
            .iter()
            .copied()
            .find(|e| e.kind == kind && e.state_key.as_deref() == Some(state_key))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use myelin_core::signing_key::SigningKey;
    use serde_json::{Value, json};

    use super::*;
    use crate::pdu::{PduTemplate, build_pdu};

    const ALICE: &str = "@alice:a.test";
    const BOB: &str = "@bob:a.test";
    const CAROL: &str = "@carol:b.test";
    const EVE: &str = "@eve:c.test";
    const T0: i64 = 1_700_000_000_000;

    type State = HashMap<(String, String), Pdu>;

    /// A room whose forks are built event by event; every event must pass
    /// the auth rules on its own fork.
    struct Room {
        version: RoomVersion,
        room_id: Option<String>,
        events: HashMap<String, Arc<Pdu>>,
    }

    #[derive(Clone)]
    struct Fork {
        state: State,
        heads: Vec<String>,
        depth: i64,
    }

    impl Room {
        /// Alice creates a public room at power 100 with Bob (50) and
        /// Carol joined.
        fn new(version: &str) -> (Self, Fork) {
            let mut room = Self {
                version: RoomVersion::parse(version).unwrap(),
                room_id: None,
                events: HashMap::new(),
            };
            if room.version.rules.event_format.require_room_create_room_id {
                room.room_id = Some("!room:a.test".to_owned());
            }
            let mut fork = Fork {
                state: State::new(),
                heads: Vec::new(),
                depth: 0,
            };
            let create = json!({"creator": ALICE, "room_version": version});
            room.send(&mut fork, ALICE, "m.room.create", "", create, T0);
            room.join(&mut fork, ALICE);
            let levels = json!({"users": {ALICE: 100, BOB: 50}});
            room.send(&mut fork, ALICE, "m.room.power_levels", "", levels, T0);
            let rule = json!({"join_rule": "public"});
            room.send(&mut fork, ALICE, "m.room.join_rules", "", rule, T0);
            room.join(&mut fork, BOB);
            room.join(&mut fork, CAROL);
            (room, fork)
        }

        fn join(&mut self, fork: &mut Fork, user: &str) -> String {
            let content = json!({"membership": "join"});
            self.send(fork, user, "m.room.member", user, content, T0)
        }

        fn send(
            &mut self,
            fork: &mut Fork,
            sender: &str,
            kind: &str,
            state_key: &str,
            content: Value,
            ts: i64,
        ) -> String {
            let auth_events =
                auth_types_for_event(&self.version, kind, sender, Some(state_key), &content)
                    .into_iter()
                    .filter_map(|key| fork.state.get(&key).map(|p| p.event_id.clone()))
                    .collect();
            let mut content = content;
            // From v12 the creator has unlimited power and is not listed.
            if kind == POWER_LEVELS
                && self
                    .version
                    .rules
                    .authorization
                    .explicitly_privilege_room_creators
                && let Some(users) = content.get_mut("users").and_then(Value::as_object_mut)
            {
                users.remove(ALICE);
            }
            let Value::Object(content) = content else {
                panic!("content is an object");
            };
            let template = PduTemplate {
                room_id: self.room_id.clone(),
                sender: sender.to_owned(),
                kind: kind.to_owned(),
                state_key: Some(state_key.to_owned()),
                content,
                redacts: None,
                prev_events: fork.heads.clone(),
                auth_events,
                depth: fork.depth + 1,
                origin_server_ts: ts,
            };
            let key = SigningKey::from_seed("test".to_owned(), [7; 32]);
            let server = sender.split_once(':').unwrap().1;
            let pdu = build_pdu(&self.version, template, server, &key).unwrap();
            check_auth(&self.version, &pdu, &fork.state).unwrap();
            self.room_id = Some(pdu.room_id.clone());
            fork.heads = vec![pdu.event_id.clone()];
            fork.depth += 1;
            fork.state
                .insert((kind.to_owned(), state_key.to_owned()), pdu.clone());
            let id = pdu.event_id.clone();
            self.events.insert(id.clone(), Arc::new(pdu));
            id
        }

        fn resolve(&self, forks: &[&Fork]) -> StateMap {
            let sets: Vec<StateMap> = forks
                .iter()
                .map(|fork| {
                    fork.state
                        .iter()
                        .map(|(key, pdu)| (key.clone(), pdu.event_id.clone()))
                        .collect()
                })
                .collect();
            resolve(&self.version, &sets, |id: &str| {
                self.events.get(id).cloned()
            })
            .unwrap()
        }
    }

    fn get<'a>(state: &'a StateMap, kind: &str, state_key: &str) -> Option<&'a str> {
        state
            .get(&(kind.to_owned(), state_key.to_owned()))
            .map(String::as_str)
    }

    #[test]
    fn a_demotion_beats_the_ban_it_races() {
        for version in ["2", "10", "11", "12"] {
            let (mut room, base) = Room::new(version);
            let (mut a, mut b) = (base.clone(), base.clone());
            let demote = room.send(
                &mut a,
                ALICE,
                "m.room.power_levels",
                "",
                json!({"users": {ALICE: 100, BOB: 0}}),
                T0 + 10,
            );
            room.send(
                &mut b,
                BOB,
                "m.room.member",
                CAROL,
                json!({"membership": "ban"}),
                T0 + 5,
            );
            let carol_joined = base.state[&("m.room.member".into(), CAROL.into())]
                .event_id
                .clone();
            for forks in [[&a, &b], [&b, &a]] {
                let resolved = room.resolve(&forks);
                assert_eq!(get(&resolved, "m.room.power_levels", ""), Some(&*demote));
                assert_eq!(
                    get(&resolved, "m.room.member", CAROL),
                    Some(&*carol_joined),
                    "v{version}: Bob's ban is checked after his demotion"
                );
            }
        }
    }

    #[test]
    fn a_join_rule_change_beats_a_racing_join() {
        for version in ["2", "11", "12"] {
            let (mut room, base) = Room::new(version);
            let (mut a, mut b) = (base.clone(), base.clone());
            let invite_only = room.send(
                &mut a,
                ALICE,
                "m.room.join_rules",
                "",
                json!({"join_rule": "invite"}),
                T0 + 20,
            );
            room.join(&mut b, EVE);
            let resolved = room.resolve(&[&a, &b]);
            assert_eq!(get(&resolved, "m.room.join_rules", ""), Some(&*invite_only));
            assert_eq!(get(&resolved, "m.room.member", EVE), None, "v{version}");
        }
    }

    #[test]
    fn topics_follow_the_mainline_before_the_clock() {
        for version in ["2", "11", "12"] {
            let (mut room, base) = Room::new(version);
            let (mut a, mut b) = (base.clone(), base.clone());
            room.send(
                &mut a,
                ALICE,
                "m.room.power_levels",
                "",
                json!({"users": {ALICE: 100, BOB: 50, CAROL: 10}}),
                T0 + 1,
            );
            let on_new_levels = room.send(
                &mut a,
                ALICE,
                "m.room.topic",
                "",
                json!({"topic": "a"}),
                T0 + 2,
            );
            // Later by the clock, but cites the older power levels.
            room.send(
                &mut b,
                BOB,
                "m.room.topic",
                "",
                json!({"topic": "b"}),
                T0 + 100,
            );
            let resolved = room.resolve(&[&b, &a]);
            assert_eq!(
                get(&resolved, "m.room.topic", ""),
                Some(&*on_new_levels),
                "v{version}"
            );
        }
    }

    #[test]
    fn same_mainline_ties_break_by_timestamp_then_event_id() {
        for version in ["2", "11", "12"] {
            let (mut room, base) = Room::new(version);
            // An offline server's topic: older clock, same power levels.
            let (mut a, mut b) = (base.clone(), base.clone());
            room.send(
                &mut a,
                ALICE,
                "m.room.topic",
                "",
                json!({"topic": "a"}),
                T0 + 50,
            );
            let later = room.send(
                &mut b,
                BOB,
                "m.room.topic",
                "",
                json!({"topic": "b"}),
                T0 + 60,
            );
            assert_eq!(
                get(&room.resolve(&[&b, &a]), "m.room.topic", ""),
                Some(&*later)
            );

            let (mut c, mut d) = (base.clone(), base.clone());
            let c_id = room.send(
                &mut c,
                ALICE,
                "m.room.topic",
                "",
                json!({"topic": "c"}),
                T0 + 70,
            );
            let d_id = room.send(
                &mut d,
                BOB,
                "m.room.topic",
                "",
                json!({"topic": "d"}),
                T0 + 70,
            );
            let greater = c_id.clone().max(d_id.clone());
            let resolved = room.resolve(&[&c, &d]);
            assert_eq!(
                get(&resolved, "m.room.topic", ""),
                Some(&*greater),
                "v{version}"
            );
        }
    }

    #[test]
    fn power_events_order_by_sender_power() {
        // Bob (50) and Alice (100) both change the join rules at once: the
        // higher-powered sender's event sorts first, so Bob's is applied
        // last and wins if it still passes the auth checks.
        for version in ["2", "12"] {
            let (mut room, base) = Room::new(version);
            let (mut a, mut b) = (base.clone(), base.clone());
            room.send(
                &mut a,
                ALICE,
                "m.room.join_rules",
                "",
                json!({"join_rule": "invite"}),
                T0 + 100,
            );
            let bobs = room.send(
                &mut b,
                BOB,
                "m.room.join_rules",
                "",
                json!({"join_rule": "knock"}),
                T0 + 1,
            );
            let resolved = room.resolve(&[&a, &b]);
            assert_eq!(
                get(&resolved, "m.room.join_rules", ""),
                Some(&*bobs),
                "v{version}"
            );
        }
    }

    #[test]
    fn unconflicted_state_and_trivial_inputs() {
        let (room, base) = Room::new("12");
        let resolved = room.resolve(&[&base, &base]);
        assert_eq!(resolved.len(), base.state.len());
        assert!(
            resolve(&room.version, &[], |_: &str| None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_index_gives_every_events_exact_auth_chain() {
        let (mut room, base) = Room::new("11");
        let (mut a, mut b) = (base.clone(), base.clone());
        for (i, user) in [EVE, "@f:c.test", "@g:d.test"].into_iter().enumerate() {
            room.join(&mut a, user);
            let levels = json!({"users": {ALICE: 100, BOB: 50, user: 10 + i}});
            room.send(&mut a, ALICE, POWER_LEVELS, "", levels, T0 + i as i64);
            let leave = json!({"membership": "leave"});
            room.send(&mut b, CAROL, MEMBER, CAROL, leave, T0);
            room.join(&mut b, CAROL);
            let topic = json!({"topic": format!("t{i}")});
            room.send(&mut b, BOB, "m.room.topic", "", topic, T0);
        }
        // Auth events first, as a server inserts what it accepts.
        let mut graph = AuthGraph::new();
        let mut ids: Vec<&String> = room.events.keys().collect();
        ids.sort();
        let mut stack: Vec<(&String, bool)> = ids.into_iter().map(|id| (id, false)).collect();
        while let Some((id, expanded)) = stack.pop() {
            let pdu = &room.events[id];
            if graph.event_ix(id).is_some() {
                continue;
            }
            if expanded {
                graph.insert(pdu.clone()).unwrap();
            } else {
                stack.push((id, true));
                stack.extend(pdu.auth_events.iter().map(|a| (a, false)));
            }
        }
        assert_eq!(graph.len(), room.events.len());
        for event in 0..graph.len() as EventIx {
            let mut walked = Vec::new();
            let mut stack = graph.auth(event).to_vec();
            while let Some(a) = stack.pop() {
                if !walked.contains(&a) {
                    walked.push(a);
                    stack.extend_from_slice(graph.auth(a));
                }
            }
            walked.sort_unstable();
            assert_eq!(
                graph.indexed_auth_chain(event),
                walked,
                "{}",
                graph.id(event)
            );
        }
        // Chains follow one key's history: every power levels event is on
        // one chain, and so are Carol's memberships.
        let chain_of = |kind: &str, state_key: &str| -> Vec<u32> {
            let mut chains: Vec<u32> = (0..graph.len() as EventIx)
                .filter(|&e| {
                    let pdu = graph.pdu(e).unwrap();
                    pdu.kind == kind && pdu.state_key.as_deref() == Some(state_key)
                })
                .map(|e| graph.position(e).unwrap().0)
                .collect();
            chains.dedup();
            chains
        };
        assert_eq!(chain_of(POWER_LEVELS, "").len(), 1);
        assert_eq!(chain_of(MEMBER, CAROL).len(), 1);
        // Inserting twice is harmless.
        let again = graph.insert(room.events.values().next().unwrap().clone());
        assert!(again.is_ok());
        assert_eq!(graph.len(), room.events.len());
    }

    #[test]
    fn missing_events_and_cycles_are_errors_or_absent_not_panics() {
        let (mut room, base) = Room::new("11");
        let (mut a, mut b) = (base.clone(), base.clone());
        let topic = room.send(
            &mut a,
            ALICE,
            "m.room.topic",
            "",
            json!({"topic": "a"}),
            T0 + 1,
        );
        room.send(
            &mut b,
            BOB,
            "m.room.topic",
            "",
            json!({"topic": "b"}),
            T0 + 2,
        );
        // Nothing can be fetched: the conflicted events drop out.
        let sets = [a.state.clone(), b.state.clone()].map(|state| {
            state
                .iter()
                .map(|(key, pdu)| (key.clone(), pdu.event_id.clone()))
                .collect::<StateMap>()
        });
        let resolved = resolve(&room.version, &sets, |_: &str| None).unwrap();
        assert_eq!(get(&resolved, "m.room.topic", ""), None);

        // A cycle: the topic cites itself through its power levels.
        let mut events = room.events.clone();
        let levels_id = base.state[&("m.room.power_levels".into(), String::new())]
            .event_id
            .clone();
        let mut levels = (*events[&levels_id]).clone();
        levels.auth_events.push(topic.clone());
        events.insert(levels_id, Arc::new(levels));
        let result = resolve(&room.version, &sets, |id: &str| events.get(id).cloned());
        assert!(
            matches!(result, Err(StateResError::AuthCycle(_))),
            "{result:?}"
        );
    }
}
