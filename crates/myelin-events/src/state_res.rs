//! State resolution v2 (room versions 2–11) and v2.1 (room version 12,
//! MSC4297), as the server-server API's "Room version 2" page describes it,
//! with the authorization rules of [`crate::auth`].
//!
//! The resolution works on a graph of interned events: every event id is a
//! dense `u32` index, every `(type, state_key)` a dense `u32` key, so the
//! phases (auth chains, auth difference, conflicted state subgraph, reverse
//! topological power ordering, iterative auth checks, mainline ordering)
//! run on integers and `Vec`s. Strings are read only to intern, to break
//! ties by event id (once, as a rank) and to call the auth rules.
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

use ruma::room_version_rules::StateResolutionVersion;

use crate::auth::{PowerLevel, StateView, auth_types_for_event, check_auth, user_power_level};
use crate::pdu::Pdu;
use crate::room_version::RoomVersion;

mod v1;

/// A room state: `(type, state_key)` to event id.
pub type StateMap = HashMap<(String, String), String>;

/// The most events one resolution loads (the state sets and their auth
/// chains): past it the resolution fails instead of exhausting memory.
pub const RESOLUTION_EVENTS_MAX: usize = 4_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateResError {
    /// Room version 1 resolves state with the v1 algorithm.
    #[error("room version {0} does not use state resolution v2")]
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

/// An interned event or state key.
type Ix = u32;
const NONE: Ix = Ix::MAX;

/// Resolves `state_sets` (the states of the forks being merged) into one
/// state. `fetch` gives an event by id: every event of the state sets and
/// of their auth chains that was accepted, and for v12 the room's create
/// event; it returns `None` for unknown or rejected events.
pub fn resolve<F>(
    version: &RoomVersion,
    state_sets: &[StateMap],
    fetch: F,
) -> Result<StateMap, StateResError>
where
    F: Fn(&str) -> Option<Arc<Pdu>>,
{
    let StateResolutionVersion::V2(rules) = &version.rules.state_res else {
        return v1::resolve(version, state_sets, fetch);
    };
    match state_sets {
        [] => return Ok(StateMap::new()),
        [only] => return Ok(only.clone()),
        _ => {}
    }
    let mut graph = Graph::default();
    let split = graph.split(state_sets)?;
    if split.conflicted.is_empty() {
        return Ok(graph.state_map(&split.unconflicted));
    }
    let roots: Vec<Ix> = state_sets
        .iter()
        .flat_map(|set| set.values())
        .filter_map(|id| graph.id_ix.get(id.as_str()).copied())
        .collect();
    graph.load(&roots, &fetch)?;
    if version.rules.authorization.room_create_event_id_as_room_id {
        graph.load_room_creates(&fetch)?;
    }
    let order = graph.topological_order()?;

    let mut full = graph.auth_difference(&split.members, state_sets.len(), &order);
    for &event in &split.conflicted {
        if graph.pdus[event as usize].is_some() {
            full[event as usize] = true;
        }
    }
    if rules.consider_conflicted_state_subgraph {
        for event in graph.conflicted_subgraph(&split.conflicted) {
            full[event as usize] = true;
        }
    }
    let full_set: Vec<Ix> = (0..graph.len() as Ix)
        .filter(|&n| full[n as usize])
        .collect();
    let rank = graph.id_ranks(&full_set);

    let power_sorted = graph.sort_power_events(version, &full, &full_set, &rank)?;

    let mut state = vec![NONE; graph.key_names.len()];
    if !rules.begin_iterative_auth_checks_with_empty_state_map {
        for &(key, event) in &split.unconflicted {
            state[key as usize] = event;
        }
    }
    graph.iterative_auth_checks(version, &power_sorted, &mut state);

    let mut in_power = vec![false; graph.len()];
    for &event in &power_sorted {
        in_power[event as usize] = true;
    }
    let others: Vec<Ix> = full_set
        .iter()
        .copied()
        .filter(|&n| !in_power[n as usize])
        .collect();
    let power_levels = graph
        .key(POWER_LEVELS, "")
        .map_or(NONE, |key| state[key as usize]);
    let others = graph.mainline_sort(&others, power_levels, &rank);
    graph.iterative_auth_checks(version, &others, &mut state);

    for &(key, event) in &split.unconflicted {
        state[key as usize] = event;
    }
    let resolved: Vec<(Ix, Ix)> = state
        .iter()
        .enumerate()
        .filter(|(_, event)| **event != NONE)
        .map(|(key, event)| (key as Ix, *event))
        .collect();
    Ok(graph.state_map(&resolved))
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

/// The state sets split: the unconflicted state and the conflicted events.
struct Split {
    unconflicted: Vec<(Ix, Ix)>,
    conflicted: Vec<Ix>,
    /// `(event, set)`: which state sets hold each event.
    members: Vec<(Ix, usize)>,
}

/// The interned events of one resolution.
#[derive(Default)]
struct Graph {
    id_ix: HashMap<String, Ix>,
    ids: Vec<String>,
    pdus: Vec<Option<Arc<Pdu>>>,
    loaded: Vec<bool>,
    /// The event's `auth_events` that were given, without duplicates, in order.
    auth: Vec<Vec<Ix>>,
    /// The state key of each event, `NONE` for a message or an unknown event.
    keys: Vec<Ix>,
    key_ix: HashMap<String, HashMap<String, Ix>>,
    key_names: Vec<(String, String)>,
    /// v12: the create event named by each room id.
    room_creates: HashMap<String, Ix>,
}

impl Graph {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn pdu(&self, event: Ix) -> Option<&Pdu> {
        self.pdus.get(event as usize)?.as_deref()
    }

    fn intern_event(&mut self, id: &str) -> Result<Ix, StateResError> {
        if let Some(&ix) = self.id_ix.get(id) {
            return Ok(ix);
        }
        if self.ids.len() >= RESOLUTION_EVENTS_MAX {
            return Err(StateResError::TooManyEvents(RESOLUTION_EVENTS_MAX));
        }
        let ix = self.ids.len() as Ix;
        self.id_ix.insert(id.to_owned(), ix);
        self.ids.push(id.to_owned());
        self.pdus.push(None);
        self.loaded.push(false);
        self.auth.push(Vec::new());
        self.keys.push(NONE);
        Ok(ix)
    }

    fn intern_key(&mut self, kind: &str, state_key: &str) -> Ix {
        if let Some(&ix) = self.key_ix.get(kind).and_then(|keys| keys.get(state_key)) {
            return ix;
        }
        let ix = self.key_names.len() as Ix;
        self.key_names.push((kind.to_owned(), state_key.to_owned()));
        self.key_ix
            .entry(kind.to_owned())
            .or_default()
            .insert(state_key.to_owned(), ix);
        ix
    }

    fn key(&self, kind: &str, state_key: &str) -> Option<Ix> {
        self.key_ix.get(kind)?.get(state_key).copied()
    }

    fn state_map(&self, state: &[(Ix, Ix)]) -> StateMap {
        state
            .iter()
            .map(|&(key, event)| {
                (
                    self.key_names[key as usize].clone(),
                    self.ids[event as usize].clone(),
                )
            })
            .collect()
    }

    /// Interns the state sets and splits them: a key is unconflicted when
    /// every set holds it with the same event.
    fn split(&mut self, state_sets: &[StateMap]) -> Result<Split, StateResError> {
        let mut per_key: Vec<Vec<(Ix, usize)>> = Vec::new();
        let mut members = Vec::new();
        for (set, state) in state_sets.iter().enumerate() {
            for ((kind, state_key), id) in state {
                let key = self.intern_key(kind, state_key) as usize;
                let event = self.intern_event(id)?;
                members.push((event, set));
                if per_key.len() <= key {
                    per_key.resize_with(key + 1, Vec::new);
                }
                match per_key[key].iter_mut().find(|(e, _)| *e == event) {
                    Some((_, count)) => *count += 1,
                    None => per_key[key].push((event, 1)),
                }
            }
        }
        let mut unconflicted = Vec::new();
        let mut conflicted = Vec::new();
        for (key, events) in per_key.iter().enumerate() {
            match events.as_slice() {
                [] => {}
                [(event, count)] if *count == state_sets.len() => {
                    unconflicted.push((key as Ix, *event));
                }
                _ => conflicted.extend(events.iter().map(|(event, _)| *event)),
            }
        }
        Ok(Split {
            unconflicted,
            conflicted,
            members,
        })
    }

    /// Fetches `roots` and every event their `auth_events` reach.
    fn load<F>(&mut self, roots: &[Ix], fetch: &F) -> Result<(), StateResError>
    where
        F: Fn(&str) -> Option<Arc<Pdu>>,
    {
        let mut stack = roots.to_vec();
        while let Some(event) = stack.pop() {
            let n = event as usize;
            if self.loaded[n] {
                continue;
            }
            self.loaded[n] = true;
            let Some(pdu) = fetch(&self.ids[n]) else {
                continue;
            };
            if let Some(state_key) = &pdu.state_key {
                self.keys[n] = self.intern_key(&pdu.kind, state_key);
            }
            let mut auth = Vec::with_capacity(pdu.auth_events.len());
            for id in &pdu.auth_events {
                let auth_event = self.intern_event(id)?;
                if !auth.contains(&auth_event) {
                    auth.push(auth_event);
                }
                stack.push(auth_event);
            }
            self.auth[n] = auth;
            self.pdus[n] = Some(pdu);
        }
        // Keep only the auth events that were given.
        for n in 0..self.len() {
            let mut auth = std::mem::take(&mut self.auth[n]);
            auth.retain(|&a| self.pdus[a as usize].is_some());
            self.auth[n] = auth;
        }
        Ok(())
    }

    /// v12: fetches the create event of each room id (`!x` names `$x`).
    fn load_room_creates<F>(&mut self, fetch: &F) -> Result<(), StateResError>
    where
        F: Fn(&str) -> Option<Arc<Pdu>>,
    {
        let rooms: Vec<String> = {
            let mut rooms: Vec<&str> = self
                .pdus
                .iter()
                .flatten()
                .map(|pdu| pdu.room_id.as_str())
                .collect();
            rooms.sort_unstable();
            rooms.dedup();
            rooms.into_iter().map(str::to_owned).collect()
        };
        for room in rooms {
            let Some(suffix) = room.strip_prefix('!') else {
                continue;
            };
            let create = self.intern_event(&format!("${suffix}"))?;
            self.load(&[create], fetch)?;
            if self
                .pdu(create)
                .is_some_and(|pdu| pdu.kind == CREATE && pdu.state_key.as_deref() == Some(""))
            {
                self.room_creates.insert(room, create);
            }
        }
        Ok(())
    }

    /// Every event before the events it cites (Kahn's algorithm over the
    /// `auth_events` edges); fails on a cycle.
    fn topological_order(&self) -> Result<Vec<Ix>, StateResError> {
        let mut citing = vec![0u32; self.len()];
        for auth in &self.auth {
            for &a in auth {
                citing[a as usize] += 1;
            }
        }
        let mut ready: Vec<Ix> = (0..self.len() as Ix)
            .filter(|&n| citing[n as usize] == 0)
            .collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(event) = ready.pop() {
            order.push(event);
            for &a in &self.auth[event as usize] {
                citing[a as usize] -= 1;
                if citing[a as usize] == 0 {
                    ready.push(a);
                }
            }
        }
        if order.len() < self.len() {
            let stuck = citing.iter().position(|&c| c > 0).unwrap_or(0);
            return Err(StateResError::AuthCycle(self.ids[stuck].clone()));
        }
        Ok(order)
    }

    /// The auth difference: the events in some but not every state set's
    /// auth chain. Each event's set of reaching state sets is computed once,
    /// as a bit mask pushed from the events citing it (newest first).
    fn auth_difference(&self, members: &[(Ix, usize)], sets: usize, order: &[Ix]) -> Vec<bool> {
        let words = sets.div_ceil(64);
        let mut member = vec![0u64; self.len() * words];
        for &(event, set) in members {
            member[event as usize * words + set / 64] |= 1 << (set % 64);
        }
        let mut chain = vec![0u64; self.len() * words];
        for &event in order {
            let n = event as usize;
            for &a in &self.auth[n] {
                let a = a as usize;
                for w in 0..words {
                    chain[a * words + w] |= chain[n * words + w] | member[n * words + w];
                }
            }
        }
        let full_word = |w: usize| {
            let bits = (sets - w * 64).min(64);
            if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            }
        };
        (0..self.len())
            .map(|n| {
                let mask = &chain[n * words..(n + 1) * words];
                mask.iter().any(|&m| m != 0)
                    && (0..words).any(|w| mask[w] != full_word(w))
                    && self.pdus[n].is_some()
            })
            .collect()
    }

    /// v2.1: the events on an `auth_events` path from one conflicted event
    /// to another (the conflicted events included).
    fn conflicted_subgraph(&self, conflicted: &[Ix]) -> Vec<Ix> {
        let mut below = vec![false; self.len()];
        let mut stack: Vec<Ix> = conflicted.to_vec();
        while let Some(event) = stack.pop() {
            if std::mem::replace(&mut below[event as usize], true) {
                continue;
            }
            stack.extend(&self.auth[event as usize]);
        }
        let mut cited_by: Vec<Vec<Ix>> = vec![Vec::new(); self.len()];
        for (n, auth) in self.auth.iter().enumerate() {
            if below[n] {
                for &a in auth {
                    cited_by[a as usize].push(n as Ix);
                }
            }
        }
        let mut above = vec![false; self.len()];
        let mut stack: Vec<Ix> = conflicted.to_vec();
        while let Some(event) = stack.pop() {
            if std::mem::replace(&mut above[event as usize], true) {
                continue;
            }
            stack.extend(&cited_by[event as usize]);
        }
        (0..self.len() as Ix)
            .filter(|&n| below[n as usize] && above[n as usize] && self.pdus[n as usize].is_some())
            .collect()
    }

    /// The rank of each event of `events` in event id order (the last tie
    /// breaker of both orderings); `NONE` for the others.
    fn id_ranks(&self, events: &[Ix]) -> Vec<Ix> {
        let mut sorted = events.to_vec();
        sorted.sort_unstable_by(|a, b| self.ids[*a as usize].cmp(&self.ids[*b as usize]));
        let mut rank = vec![NONE; self.len()];
        for (r, &event) in sorted.iter().enumerate() {
            rank[event as usize] = r as Ix;
        }
        rank
    }

    /// The create event an event is checked with: from v12 the one its
    /// room id names, before it the one among its auth events.
    fn create_for(&self, version: &RoomVersion, event: Ix) -> Option<Ix> {
        let pdu = self.pdu(event)?;
        if version.rules.authorization.room_create_event_id_as_room_id {
            return self.room_creates.get(&pdu.room_id).copied();
        }
        self.auth[event as usize].iter().copied().find(|&a| {
            self.pdu(a)
                .is_some_and(|p| p.kind == CREATE && p.state_key.as_deref() == Some(""))
        })
    }

    /// The first `m.room.power_levels` among an event's auth events.
    fn power_levels_of(&self, event: Ix) -> Option<Ix> {
        self.auth[event as usize].iter().copied().find(|&a| {
            self.pdu(a)
                .is_some_and(|p| p.kind == POWER_LEVELS && p.state_key.as_deref() == Some(""))
        })
    }

    /// The power events of the full conflicted set with their auth events
    /// in it, in reverse topological power ordering: Kahn's algorithm that
    /// always takes, of the events whose auth events are all placed, the
    /// one whose sender has the highest power level, then the earliest
    /// `origin_server_ts`, then the smallest event id.
    fn sort_power_events(
        &self,
        version: &RoomVersion,
        full: &[bool],
        full_set: &[Ix],
        rank: &[Ix],
    ) -> Result<Vec<Ix>, StateResError> {
        let mut in_x = vec![false; self.len()];
        let mut x = Vec::new();
        let mut stack: Vec<Ix> = full_set
            .iter()
            .copied()
            .filter(|&n| self.pdu(n).is_some_and(is_power_event))
            .collect();
        while let Some(event) = stack.pop() {
            if std::mem::replace(&mut in_x[event as usize], true) {
                continue;
            }
            x.push(event);
            for &a in &self.auth[event as usize] {
                if full[a as usize] && !in_x[a as usize] {
                    stack.push(a);
                }
            }
        }
        let mut waiting = vec![0u32; self.len()];
        let mut cited_by: HashMap<Ix, Vec<Ix>> = HashMap::new();
        for &event in &x {
            for &a in &self.auth[event as usize] {
                if in_x[a as usize] {
                    waiting[event as usize] += 1;
                    cited_by.entry(a).or_default().push(event);
                }
            }
        }
        let tie_breaker = |event: Ix| {
            let level = self.sender_level(version, event);
            let ts = self.pdu(event).map_or(0, |p| p.origin_server_ts);
            Reverse((Reverse(level), ts, rank[event as usize], event))
        };
        let mut heap: BinaryHeap<_> = x
            .iter()
            .copied()
            .filter(|&n| waiting[n as usize] == 0)
            .map(tie_breaker)
            .collect();
        let mut sorted = Vec::with_capacity(x.len());
        while let Some(Reverse((_, _, _, event))) = heap.pop() {
            sorted.push(event);
            for &parent in cited_by.get(&event).into_iter().flatten() {
                waiting[parent as usize] -= 1;
                if waiting[parent as usize] == 0 {
                    heap.push(tie_breaker(parent));
                }
            }
        }
        if sorted.len() < x.len() {
            let stuck = x
                .iter()
                .find(|&&n| waiting[n as usize] > 0)
                .map_or(String::new(), |&n| self.ids[n as usize].clone());
            return Err(StateResError::AuthCycle(stuck));
        }
        Ok(sorted)
    }

    /// The sender's power level as the event's auth events give it.
    fn sender_level(&self, version: &RoomVersion, event: Ix) -> PowerLevel {
        let Some(pdu) = self.pdu(event) else {
            return PowerLevel::Int(0);
        };
        let mut view = AuthView::default();
        if let Some(create) = self.create_for(version, event).and_then(|c| self.pdu(c)) {
            view.set(create);
        }
        if let Some(levels) = self.power_levels_of(event).and_then(|p| self.pdu(p)) {
            view.set(levels);
        }
        user_power_level(version, &view, &pdu.sender)
    }

    /// Checks `events` in order against the partially resolved `state`
    /// (its entries for the event's auth types laid over the event's own
    /// auth events); those allowed join it.
    fn iterative_auth_checks(&self, version: &RoomVersion, events: &[Ix], state: &mut [Ix]) {
        for &event in events {
            let Some(pdu) = self.pdu(event) else { continue };
            let key = self.keys[event as usize];
            if key == NONE {
                continue;
            }
            // There are no state-dependent rules for a create event.
            if pdu.kind != CREATE {
                let mut view = AuthView::default();
                for &a in &self.auth[event as usize] {
                    if let Some(auth) = self.pdu(a) {
                        view.set(auth);
                    }
                }
                if version.rules.authorization.room_create_event_id_as_room_id
                    && let Some(create) = self.create_for(version, event).and_then(|c| self.pdu(c))
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
                    if let Some(current) = self
                        .key(kind, state_key)
                        .and_then(|k| state.get(k as usize).copied())
                        .filter(|&e| e != NONE)
                        .and_then(|e| self.pdu(e))
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

    /// `events` in mainline order: by the position of their closest
    /// mainline event (the chain of power levels from `power_levels`
    /// through their own power levels auth events, oldest first; 0 for
    /// none), then `origin_server_ts`, then event id.
    fn mainline_sort(&self, events: &[Ix], power_levels: Ix, rank: &[Ix]) -> Vec<Ix> {
        let mut mainline = Vec::new();
        let mut on_mainline = vec![false; self.len()];
        let mut current = (power_levels != NONE).then_some(power_levels);
        while let Some(event) = current {
            if std::mem::replace(&mut on_mainline[event as usize], true) {
                break;
            }
            mainline.push(event);
            current = self.power_levels_of(event);
        }
        let mut position = vec![NONE; self.len()];
        for (i, &event) in mainline.iter().enumerate() {
            position[event as usize] = (mainline.len() - i) as Ix;
        }
        let mut path = Vec::new();
        let mut keyed: Vec<(Ix, i64, Ix, Ix)> = events
            .iter()
            .map(|&event| {
                let mut current = Some(event);
                let mut found = 0;
                while let Some(n) = current {
                    if position[n as usize] != NONE {
                        found = position[n as usize];
                        break;
                    }
                    path.push(n);
                    current = self.power_levels_of(n);
                }
                for n in path.drain(..) {
                    position[n as usize] = found;
                }
                let ts = self.pdu(event).map_or(0, |p| p.origin_server_ts);
                (found, ts, rank[event as usize], event)
            })
            .collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, _, _, event)| event).collect()
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
    fn room_version_1_is_refused() {
        let version = RoomVersion::parse("1").unwrap();
        assert_eq!(
            resolve(&version, &[StateMap::new(), StateMap::new()], |_: &str| {
                None
            }),
            Err(StateResError::UnsupportedVersion("1"))
        );
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
