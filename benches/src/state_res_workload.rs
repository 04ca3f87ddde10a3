//! A big public room for the state resolution benches
//! (`benches/benches/state_res.rs`): `n` signed state events, about 99%
//! memberships (joins, leaves, rejoins, display name changes, a few bans)
//! from many users on many servers, plus a few power level changes, topics
//! and join rule changes. Near the end the DAG forks into `width` branches;
//! each branch gets a few events of its own (membership churn on a shared
//! set of "hot" users, a power level change, a topic), so resolving the
//! branches' states has a real conflicted set over long auth chains.
//!
//! Every event is built with `build_pdu` and accepted by our auth rules
//! against the state of the branch it is sent on. The generator is
//! deterministic from its seed.
//!
//! Both implementations get the same input: [`Workload::state_sets`] and a
//! map of events (ours as [`Pdu`], ruma's as [`RumaPdu`], a small adapter
//! like the one of the differential test in `crates/myelin-events/tests`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use myelin_core::signing_key::SigningKey;
use myelin_events::state_res::{AuthGraph, IxState, StateMap, StateResError, resolve, resolve_in};
use myelin_events::{Pdu, PduTemplate, RoomVersion, StateView, auth_types_for_event, build_pdu};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ruma::events::StateEventType;
use ruma::state_res::Event;
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::{EventId, OwnedEventId};
use serde_json::{Map, Value, json};

const ADMIN: &str = "@admin:a.test";
const MODERATOR: &str = "@mod:a.test";
/// Servers the members are spread over.
const SERVERS: usize = 50;

// Ruma's view of our PDUs: the same adapter the differential tests use.
#[path = "../../crates/myelin-events/tests/common/ruma_pdu.rs"]
mod ruma_pdu;
pub use ruma_pdu::RumaPdu;

/// The shape of a workload.
#[derive(Clone, Debug)]
pub struct WorkloadParams {
    /// Room version id ("11" by default, "12" works too).
    pub version: &'static str,
    /// State events in the room, forks included.
    pub events: usize,
    /// Branches at the end (2–10).
    pub width: usize,
    /// Most events per branch (each branch gets between half and all of it).
    pub branch_events: usize,
    pub seed: u64,
}

impl WorkloadParams {
    /// `events` state events in room version 11, forking into 4 branches of
    /// up to `clamp(events / 500, 4, 20)` events.
    pub fn new(events: usize) -> Self {
        Self {
            version: "11",
            events,
            width: 4,
            branch_events: (events / 500).clamp(4, 20),
            seed: 1,
        }
    }
}

/// Statistics of a generated workload.
#[derive(Clone, Debug, Default)]
pub struct WorkloadStats {
    /// Events in the DAG (all state events).
    pub events: usize,
    /// Events per kind.
    pub kinds: Vec<(String, usize)>,
    /// Distinct users that ever joined.
    pub users: usize,
    /// Events in each branch after the fork.
    pub branch_lengths: Vec<usize>,
    /// Entries in each state set.
    pub state_set_sizes: Vec<usize>,
    /// Conflicted `(type, state_key)` keys and the events in them.
    pub conflicted_keys: usize,
    pub conflicted_events: usize,
    /// Size of each state set's auth chain.
    pub auth_chain_sizes: Vec<usize>,
    /// Auth difference (events in some but not all auth chains).
    pub auth_difference: usize,
    /// Longest path along `auth_events` from a state set's event.
    pub longest_auth_path: usize,
}

/// A room state with its events.
#[derive(Clone, Default)]
struct State(HashMap<(String, String), Arc<Pdu>>);

impl StateView for State {
    fn get(&self, kind: &str, state_key: &str) -> Option<&Pdu> {
        self.0
            .get(&(kind.to_owned(), state_key.to_owned()))
            .map(|p| &**p)
    }
}

impl State {
    fn membership(&self, user: &str) -> Option<&str> {
        self.get("m.room.member", user).and_then(Pdu::membership)
    }
    fn ids(&self) -> StateMap {
        self.0
            .iter()
            .map(|(key, pdu)| (key.clone(), pdu.event_id.clone()))
            .collect()
    }
}

/// A fork: its state, its forward extremities, its depth and clock.
#[derive(Clone)]
struct Branch {
    state: State,
    heads: Vec<String>,
    depth: i64,
    ts: i64,
    sent: usize,
}

/// A generated room, ready to resolve with both implementations.
pub struct Workload {
    pub version: RoomVersion,
    /// Our events, by id.
    pub events: HashMap<String, Arc<Pdu>>,
    /// The same events in the order they were sent (auth events first).
    pub arrival: Vec<Arc<Pdu>>,
    /// The same events as ruma sees them.
    pub ruma_events: HashMap<OwnedEventId, Arc<RumaPdu>>,
    /// The branches' states: the input of the resolution.
    pub state_sets: Vec<StateMap>,
    /// The same states in ruma's types.
    pub ruma_state_sets: Vec<ruma::state_res::StateMap<OwnedEventId>>,
    pub stats: WorkloadStats,
}

struct Generator {
    version: RoomVersion,
    rng: StdRng,
    key: SigningKey,
    room_id: Option<String>,
    events: HashMap<String, Arc<Pdu>>,
    arrival: Vec<Arc<Pdu>>,
    rejected: usize,
}

fn user(i: usize) -> String {
    format!("@u{i}:s{}.test", i % SERVERS)
}

fn server_of(user: &str) -> &str {
    user.split_once(':').map_or("", |(_, server)| server)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

impl Generator {
    /// Builds an event on `branch`; keeps it when our auth rules accept it.
    fn send(
        &mut self,
        branch: &mut Branch,
        sender: &str,
        kind: &str,
        state_key: &str,
        content: Value,
    ) -> bool {
        let auth_events =
            auth_types_for_event(&self.version, kind, sender, Some(state_key), &content)
                .into_iter()
                .filter_map(|key| branch.state.0.get(&key).map(|p| p.event_id.clone()))
                .collect();
        // Clocks that sometimes collide, so the event id tie-breaker is used.
        let ts = branch.ts + self.rng.gen_range(0..3);
        let template = PduTemplate {
            room_id: self.room_id.clone(),
            sender: sender.to_owned(),
            kind: kind.to_owned(),
            state_key: Some(state_key.to_owned()),
            content: object(content),
            redacts: None,
            prev_events: branch.heads.clone(),
            auth_events,
            depth: branch.depth + 1,
            origin_server_ts: ts,
        };
        let pdu =
            build_pdu(&self.version, template, server_of(sender), &self.key).expect("event builds");
        if kind != "m.room.create"
            && myelin_events::check_auth(&self.version, &pdu, &branch.state).is_err()
        {
            self.rejected += 1;
            return false;
        }
        self.room_id = Some(pdu.room_id.clone());
        let pdu = Arc::new(pdu);
        self.events.insert(pdu.event_id.clone(), pdu.clone());
        self.arrival.push(pdu.clone());
        branch.heads = vec![pdu.event_id.clone()];
        branch.depth += 1;
        branch.ts = ts;
        branch.sent += 1;
        branch
            .state
            .0
            .insert((kind.to_owned(), state_key.to_owned()), pdu);
        true
    }

    fn power_levels(&self, branch: &Branch) -> Value {
        branch
            .state
            .get("m.room.power_levels", "")
            .map_or(json!({}), |p| p.content.clone())
    }

    fn create_room(&mut self) -> Branch {
        let mut branch = Branch {
            state: State::default(),
            heads: Vec::new(),
            depth: 0,
            ts: 1_700_000_000_000,
            sent: 0,
        };
        let auth = &self.version.rules.authorization;
        let mut content = json!({"room_version": self.version.id});
        if !auth.use_room_create_sender {
            content["creator"] = json!(ADMIN);
        }
        if !self.version.rules.event_format.require_room_create_room_id {
            self.room_id = None;
        } else {
            self.room_id = Some("!bigroom:a.test".to_owned());
        }
        let privileged_creator = auth.explicitly_privilege_room_creators;
        assert!(self.send(&mut branch, ADMIN, "m.room.create", "", content));
        let join = json!({"membership": "join"});
        assert!(self.send(&mut branch, ADMIN, "m.room.member", ADMIN, join.clone()));
        let mut users = json!({MODERATOR: 50});
        if !privileged_creator {
            users[ADMIN] = json!(100);
        }
        let levels = json!({"users": users, "ban": 50, "kick": 50, "redact": 50,
            "state_default": 50, "events_default": 0, "invite": 0});
        assert!(self.send(&mut branch, ADMIN, "m.room.power_levels", "", levels));
        let rules = json!({"join_rule": "public"});
        assert!(self.send(&mut branch, ADMIN, "m.room.join_rules", "", rules));
        let topic = json!({"topic": "a big public room"});
        assert!(self.send(&mut branch, ADMIN, "m.room.topic", "", topic));
        assert!(self.send(&mut branch, MODERATOR, "m.room.member", MODERATOR, join));
        branch
    }

    /// A power level change by the admin: a user's level, or a field.
    fn power_change(&mut self, branch: &mut Branch, target: &str) -> bool {
        let mut content = self.power_levels(branch);
        if self.rng.gen_bool(0.7) {
            let level = [0, 10, 25, 50][self.rng.gen_range(0..4)];
            content["users"][target] = json!(level);
        } else {
            let field = ["kick", "invite", "redact", "events_default"][self.rng.gen_range(0..4)];
            content[field] = json!([0, 25, 50][self.rng.gen_range(0..3)]);
        }
        self.send(branch, ADMIN, "m.room.power_levels", "", content)
    }

    fn topic(&mut self, branch: &mut Branch, sender: &str) -> bool {
        let topic = format!("topic {}", self.rng.gen_range(0..1_000_000));
        self.send(branch, sender, "m.room.topic", "", json!({"topic": topic}))
    }

    fn member(&mut self, branch: &mut Branch, sender: &str, target: &str, content: Value) -> bool {
        self.send(branch, sender, "m.room.member", target, content)
    }
}

/// Picks and removes a random element (order is not kept).
fn take<T>(rng: &mut StdRng, items: &mut Vec<T>) -> Option<T> {
    if items.is_empty() {
        return None;
    }
    let i = rng.gen_range(0..items.len());
    Some(items.swap_remove(i))
}

impl Workload {
    pub fn generate(params: &WorkloadParams) -> Self {
        assert!((2..=10).contains(&params.width), "width 2–10");
        let version = RoomVersion::parse(params.version).expect("supported version");
        let mut generator = Generator {
            version: version.clone(),
            rng: StdRng::seed_from_u64(params.seed),
            key: SigningKey::from_seed("bench".to_owned(), [7; 32]),
            room_id: None,
            events: HashMap::with_capacity(params.events + 16),
            arrival: Vec::with_capacity(params.events + 16),
            rejected: 0,
        };
        let mut main = generator.create_room();
        let fork_events = params.width * params.branch_events;
        let linear = params.events.saturating_sub(fork_events).max(main.sent + 1);

        // The linear history: members come, change their names, go, come
        // back; the moderator bans a few; the admin now and then changes
        // the power levels, the topic or (briefly) the join rules.
        let mut joined: Vec<String> = Vec::new();
        let mut left: Vec<String> = Vec::new();
        let mut next_user = 0;
        let mut users = 0;
        while main.sent < linear {
            let roll = generator.rng.gen_range(0..1000);
            let rng = &mut generator.rng;
            match roll {
                // A few power level changes, topics, join rule changes.
                0..=2 if !joined.is_empty() => {
                    let target = joined[rng.gen_range(0..joined.len())].clone();
                    generator.power_change(&mut main, &target);
                }
                3..=5 => {
                    generator.topic(&mut main, MODERATOR);
                }
                6 => {
                    let admin = ADMIN;
                    generator.send(
                        &mut main,
                        admin,
                        "m.room.join_rules",
                        "",
                        json!({"join_rule": "invite"}),
                    );
                    generator.send(
                        &mut main,
                        admin,
                        "m.room.join_rules",
                        "",
                        json!({"join_rule": "public"}),
                    );
                }
                // A few bans.
                7..=9 if !joined.is_empty() => {
                    let target = take(rng, &mut joined).expect("a member");
                    let ban = json!({"membership": "ban", "reason": "spam"});
                    // Refused when the admin made the target a moderator.
                    if !generator.member(&mut main, MODERATOR, &target, ban) {
                        joined.push(target);
                    }
                }
                // Leaves.
                10..=209 if !joined.is_empty() => {
                    let target = take(rng, &mut joined).expect("a member");
                    assert!(generator.member(
                        &mut main,
                        &target,
                        &target,
                        json!({"membership": "leave"})
                    ));
                    left.push(target);
                }
                // Display name changes.
                210..=409 if !joined.is_empty() => {
                    let target = joined[rng.gen_range(0..joined.len())].clone();
                    let name = format!("name {}", rng.gen_range(0..1_000_000));
                    let content = json!({"membership": "join", "displayname": name});
                    assert!(generator.member(&mut main, &target, &target, content));
                }
                // Rejoins.
                410..=509 if !left.is_empty() => {
                    let target = take(rng, &mut left).expect("a former member");
                    assert!(generator.member(
                        &mut main,
                        &target,
                        &target,
                        json!({"membership": "join"})
                    ));
                    joined.push(target);
                }
                // New members.
                _ => {
                    let target = user(next_user);
                    next_user += 1;
                    users += 1;
                    let content = if rng.gen_bool(0.5) {
                        json!({"membership": "join", "displayname": format!("user {next_user}")})
                    } else {
                        json!({"membership": "join"})
                    };
                    assert!(generator.member(&mut main, &target, &target, content));
                    joined.push(target);
                }
            }
        }

        // The fork: each branch churns the memberships of the same hot users
        // (the latest members), and gets a power level change and a topic.
        let hot: Vec<String> = joined.iter().rev().take(40).cloned().collect();
        let mut branches = vec![main.clone(); params.width];
        for branch in &mut branches {
            branch.sent = 0;
            let length = generator
                .rng
                .gen_range(params.branch_events.div_ceil(2)..=params.branch_events)
                .max(2);
            let power_at = generator.rng.gen_range(0..length);
            let topic_at = generator.rng.gen_range(0..length);
            let mut step = 0;
            while branch.sent < length {
                step += 1;
                if step > length * 20 {
                    break;
                }
                let at = branch.sent;
                if at == power_at && step < length * 10 {
                    let target = hot[generator.rng.gen_range(0..hot.len())].clone();
                    if generator.power_change(branch, &target) {
                        continue;
                    }
                }
                if at == topic_at && step < length * 10 && generator.topic(branch, MODERATOR) {
                    continue;
                }
                let target = hot[generator.rng.gen_range(0..hot.len())].clone();
                let content = match branch.state.membership(&target) {
                    Some("join") => match generator.rng.gen_range(0..10) {
                        0 => {
                            let ban = json!({"membership": "ban", "reason": "spam"});
                            generator.member(branch, MODERATOR, &target, ban);
                            continue;
                        }
                        1..=4 => json!({"membership": "leave"}),
                        _ => {
                            let name = format!("name {}", generator.rng.gen_range(0..1_000_000));
                            json!({"membership": "join", "displayname": name})
                        }
                    },
                    Some("leave") => json!({"membership": "join"}),
                    _ => continue,
                };
                generator.member(branch, &target, &target, content);
            }
        }

        let state_sets: Vec<StateMap> = branches.iter().map(|b| b.state.ids()).collect();
        let ruma_state_sets = state_sets.iter().map(ruma_state_map).collect();
        let ruma_events = generator
            .events
            .iter()
            .map(|(id, pdu)| {
                (
                    EventId::parse(id).expect("event id"),
                    Arc::new(RumaPdu::from(&**pdu)),
                )
            })
            .collect();
        let mut workload = Self {
            version,
            events: generator.events,
            arrival: generator.arrival,
            ruma_events,
            state_sets,
            ruma_state_sets,
            stats: WorkloadStats::default(),
        };
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for pdu in workload.events.values() {
            *kinds.entry(pdu.kind.clone()).or_default() += 1;
        }
        let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
        kinds.sort();
        let chains: Vec<HashSet<&str>> = workload
            .state_sets
            .iter()
            .map(|set| workload.auth_chain_ids(set))
            .collect();
        let union: HashSet<&str> = chains.iter().flatten().copied().collect();
        let auth_difference = union
            .iter()
            .filter(|id| !chains.iter().all(|c| c.contains(*id)))
            .count();
        let keys: HashSet<&(String, String)> =
            workload.state_sets.iter().flat_map(|s| s.keys()).collect();
        let mut conflicted_keys = 0;
        let mut conflicted_events = 0;
        for key in keys {
            let values: HashSet<Option<&String>> =
                workload.state_sets.iter().map(|s| s.get(key)).collect();
            if values.len() > 1 {
                conflicted_keys += 1;
                conflicted_events += values.iter().flatten().count();
            }
        }
        workload.stats = WorkloadStats {
            events: workload.events.len(),
            kinds,
            users,
            branch_lengths: branches.iter().map(|b| b.sent).collect(),
            state_set_sizes: workload.state_sets.iter().map(HashMap::len).collect(),
            conflicted_keys,
            conflicted_events,
            auth_chain_sizes: chains.iter().map(HashSet::len).collect(),
            auth_difference,
            longest_auth_path: workload.longest_auth_path(),
        };
        workload
    }

    fn auth_chain_ids(&self, state: &StateMap) -> HashSet<&str> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = state.values().map(String::as_str).collect();
        while let Some(id) = stack.pop() {
            for auth in &self.events[id].auth_events {
                if seen.insert(auth) {
                    stack.push(auth);
                }
            }
        }
        seen
    }

    fn longest_auth_path(&self) -> usize {
        // Events sorted by depth: auth events always come earlier.
        let mut by_depth: Vec<&Arc<Pdu>> = self.events.values().collect();
        by_depth.sort_by_key(|p| p.depth);
        let mut longest: HashMap<&str, usize> = HashMap::with_capacity(by_depth.len());
        for pdu in by_depth {
            let len = pdu
                .auth_events
                .iter()
                .map(|a| longest[a.as_str()] + 1)
                .max()
                .unwrap_or(0);
            longest.insert(&pdu.event_id, len);
        }
        self.state_sets
            .iter()
            .flat_map(|s| s.values())
            .map(|id| longest[id.as_str()])
            .max()
            .unwrap_or(0)
    }

    /// Our resolution of the state sets.
    /// Ours from scratch: `resolve` fetches the events and builds a graph
    /// of them and its chain index for this one resolution.
    pub fn resolve_myelin_cold(&self) -> Result<StateMap, StateResError> {
        resolve(&self.version, &self.state_sets, |id: &str| {
            self.events.get(id).cloned()
        })
    }

    /// The room's graph as a server keeps it: every event inserted as it
    /// arrived.
    pub fn graph(&self) -> AuthGraph {
        let mut graph = AuthGraph::new();
        for pdu in &self.arrival {
            graph
                .insert(pdu.clone())
                .expect("the graph takes the event");
        }
        graph
    }

    /// Ours on the room's graph, from and to string state maps.
    pub fn resolve_myelin(&self, graph: &AuthGraph) -> Result<StateMap, StateResError> {
        resolve_in(graph, &self.version, &self.state_sets)
    }

    /// The state sets interned in the room's graph.
    pub fn interned_state_sets(&self, graph: &mut AuthGraph) -> Vec<IxState> {
        self.state_sets
            .iter()
            .map(|set| graph.intern_state(set).expect("interns"))
            .collect()
    }

    /// The auth chain of each state set, walked over ruma's events (what a
    /// server using ruma-state-res computes, or loads from a cache, before
    /// it calls `resolve`).
    pub fn ruma_auth_chains(&self) -> Vec<EventIdSet<OwnedEventId>> {
        self.ruma_state_sets
            .iter()
            .map(|set| {
                let mut seen: EventIdSet<OwnedEventId> = EventIdSet::new();
                let mut stack: Vec<&OwnedEventId> = set.values().collect();
                while let Some(id) = stack.pop() {
                    for auth in self.ruma_events[id].auth_events() {
                        if seen.insert(auth.clone()) {
                            stack.push(auth);
                        }
                    }
                }
                seen
            })
            .collect()
    }

    /// The conflicted state subgraph (v12), walked over ruma's events: the
    /// events reachable from a conflicted event that reach one.
    fn ruma_conflicted_subgraph(
        &self,
        conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>,
    ) -> EventIdSet<OwnedEventId> {
        let conflicted: HashSet<&EventId> = conflicted.values().flatten().map(|id| &**id).collect();
        let mut below: Vec<&EventId> = Vec::new();
        let mut seen: HashSet<&EventId> = HashSet::new();
        let mut stack: Vec<&EventId> = conflicted.iter().copied().collect();
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                below.push(id);
                stack.extend(self.ruma_events[id].auth_events().map(|a| &**a));
            }
        }
        // `below` lists each event before its auth events; walking it
        // backwards sees auth events first.
        let mut reaches: HashMap<&EventId, bool> = HashMap::with_capacity(below.len());
        let mut subgraph = EventIdSet::new();
        let mut pending = below.clone();
        while let Some(&id) = pending.last() {
            if reaches.contains_key(id) {
                pending.pop();
                continue;
            }
            let auths: Vec<&OwnedEventId> = self.ruma_events[id].auth_events().collect();
            let unknown: Vec<&EventId> = auths
                .iter()
                .map(|a| &***a)
                .filter(|a| !reaches.contains_key(a))
                .collect();
            if !unknown.is_empty() {
                pending.extend(unknown);
                continue;
            }
            pending.pop();
            let found = conflicted.contains(id) || auths.iter().any(|a| reaches[&***a]);
            reaches.insert(id, found);
            if found {
                subgraph.insert(id.to_owned());
            }
        }
        subgraph
    }

    /// ruma-state-res's resolution of the same state sets, with the auth
    /// chains given (see [`Self::ruma_auth_chains`]).
    pub fn resolve_ruma_with_chains(
        &self,
        auth_chains: Vec<EventIdSet<OwnedEventId>>,
    ) -> ruma::state_res::StateMap<OwnedEventId> {
        let ruma::room_version_rules::StateResolutionVersion::V2(rules) =
            &self.version.rules.state_res
        else {
            panic!("v2 state res");
        };
        ruma::state_res::resolve(
            &self.version.rules.authorization,
            rules,
            &self.ruma_state_sets,
            auth_chains,
            |id: &EventId| self.ruma_events.get(id).cloned(),
            |conflicted| Some(self.ruma_conflicted_subgraph(conflicted)),
        )
        .expect("ruma resolves")
    }

    /// ruma-state-res's resolution, auth chains included.
    pub fn resolve_ruma(&self) -> ruma::state_res::StateMap<OwnedEventId> {
        self.resolve_ruma_with_chains(self.ruma_auth_chains())
    }
}

/// A state map in ruma's types.
pub fn ruma_state_map(set: &StateMap) -> ruma::state_res::StateMap<OwnedEventId> {
    set.iter()
        .map(|((kind, key), id)| {
            (
                (StateEventType::from(kind.as_str()), key.clone()),
                EventId::parse(id).expect("event id"),
            )
        })
        .collect()
}

/// A state map from ruma's types.
pub fn from_ruma_state_map(set: ruma::state_res::StateMap<OwnedEventId>) -> StateMap {
    set.into_iter()
        .map(|((kind, key), id)| ((kind.to_string(), key), id.to_string()))
        .collect()
}
