//! Differential test: our state resolution against ruma-state-res's
//! `resolve` on room DAGs generated from fixed seeds, for room versions 10,
//! 11 (v2) and 12 (v2.1).
//!
//! A room grows in rounds: from the current state it forks into 2–4
//! branches; each branch gets a few events (memberships, kicks, bans,
//! power level changes, topics, names, join rule changes) that our auth
//! rules accept against that branch's state; the branches then merge.
//! At each merge the branches' states are resolved by both
//! implementations, and so are the branches with an older state and pairs
//! of branches; the state maps must be identical. The room continues from
//! the resolved state. Auth chains and the conflicted state subgraph given
//! to ruma are computed here, independently of our implementation.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::ruma_pdu::RumaPdu;
use common::*;
use myelin_events::state_res::{AuthGraph, StateMap, resolve, resolve_in, resolve_ix};
use myelin_events::{Pdu, PduTemplate, RoomVersion, StateView, auth_types_for_event, build_pdu};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use ruma::events::StateEventType;
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::{EventId, OwnedEventId};
use serde_json::{Value, json};

const SEEDS: u64 = 8;
const ROUNDS: usize = 12;
const VERSIONS: &[&str] = &["10", "11", "12"];

const ALICE: &str = "@alice:a.test";
const BOB: &str = "@bob:a.test";
const MOD: &str = "@mod:a.test";
const CAROL: &str = "@carol:b.test";
const DAVE: &str = "@dave:c.test";
const EVE: &str = "@eve:b.test";
const USERS: &[&str] = &[ALICE, BOB, MOD, CAROL, DAVE, EVE];
const LEVELS: &[i64] = &[0, 0, 25, 50, 50, 75, 100];

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
}

struct Generator {
    version: RoomVersion,
    seed: u64,
    rng: StdRng,
    room_id: Option<String>,
    events: HashMap<String, Arc<Pdu>>,
    /// The room's graph, extended as events are accepted (as a server
    /// keeps it): it holds every branch's events, not only the sets'.
    graph: AuthGraph,
    ruma_events: HashMap<OwnedEventId, Arc<RumaPdu>>,
    resolutions: usize,
    /// v12: Bob is an additional creator (and so never in `users`).
    bob_creates: bool,
    /// Whether the room's initial events are sent.
    created: bool,
    /// Joins not sent because the branch had no join rules.
    joins_without_join_rules: usize,
    /// Time spent in each implementation's `resolve`.
    ours_time: std::time::Duration,
    ruma_time: std::time::Duration,
    /// Resolutions whose full conflicted set is not just the conflicted
    /// events (they exercise power ordering and mainline ordering).
    conflicted_keys: usize,
}

impl Generator {
    fn new(version: RoomVersion, seed: u64) -> Self {
        let rng = StdRng::seed_from_u64(seed * 7919 + version.id.parse::<u64>().unwrap());
        Self {
            version,
            seed,
            rng,
            room_id: None,
            events: HashMap::new(),
            graph: AuthGraph::new(),
            ruma_events: HashMap::new(),
            resolutions: 0,
            joins_without_join_rules: 0,
            created: false,
            bob_creates: false,
            ours_time: std::time::Duration::ZERO,
            ruma_time: std::time::Duration::ZERO,
            conflicted_keys: 0,
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).unwrap()
    }

    fn store(&mut self, pdu: Pdu) -> Arc<Pdu> {
        let pdu = Arc::new(pdu);
        self.ruma_events.insert(
            EventId::parse(&pdu.event_id).unwrap(),
            Arc::new(RumaPdu::from(&*pdu)),
        );
        self.events.insert(pdu.event_id.clone(), pdu.clone());
        self.graph.insert(pdu.clone()).unwrap();
        pdu
    }

    /// Builds an event on `branch`; keeps it when our auth rules accept it.
    fn send(
        &mut self,
        branch: &mut Branch,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> bool {
        // A resolution can drop the join rules (every conflicted one fails
        // its auth check). Without them our rules treat the room as
        // `invite`, as Synapse does, so a joined user may join again; ruma
        // follows the spec's letter and rejects every join. That is a
        // difference in the auth rules, not in state resolution: joins are
        // not sent without join rules, so no join is ever checked
        // without them.
        if kind == "m.room.member"
            && content["membership"] == "join"
            && !branch
                .state
                .0
                .contains_key(&("m.room.join_rules".to_owned(), String::new()))
            && self.created
        {
            self.joins_without_join_rules += 1;
            return false;
        }
        let auth_events = auth_types_for_event(&self.version, kind, sender, state_key, &content)
            .into_iter()
            .filter_map(|key| branch.state.0.get(&key).map(|p| p.event_id.clone()))
            .collect();
        // Clocks that often collide, so the event id tie-breaker is used.
        let ts = branch.ts + self.rng.gen_range(0..3);
        let template = PduTemplate {
            room_id: self.room_id.clone(),
            sender: sender.to_owned(),
            kind: kind.to_owned(),
            state_key: state_key.map(str::to_owned),
            content: object(content),
            redacts: None,
            prev_events: branch.heads.clone(),
            auth_events,
            depth: branch.depth + 1,
            origin_server_ts: ts,
        };
        let pdu = build_pdu(&self.version, template, server_of(sender), &key()).unwrap();
        if kind != "m.room.create"
            && myelin_events::check_auth(&self.version, &pdu, &branch.state).is_err()
        {
            return false;
        }
        self.room_id = Some(pdu.room_id.clone());
        let pdu = self.store(pdu);
        branch.heads = vec![pdu.event_id.clone()];
        branch.depth += 1;
        branch.ts = ts;
        if let Some(state_key) = &pdu.state_key {
            branch
                .state
                .0
                .insert((pdu.kind.clone(), state_key.clone()), pdu.clone());
        }
        true
    }

    fn create_room(&mut self) -> Branch {
        let mut branch = Branch {
            state: State::default(),
            heads: Vec::new(),
            depth: 0,
            ts: 1_700_000_000_000,
        };
        let mut content = json!({"room_version": self.version.id});
        if !self.version.rules.authorization.use_room_create_sender {
            content["creator"] = json!(ALICE);
        }
        if self.version.rules.authorization.additional_room_creators && self.rng.gen_bool(0.3) {
            content["additional_creators"] = json!([BOB]);
            self.bob_creates = true;
        }
        let derived = !self.version.rules.event_format.require_room_create_room_id;
        if !derived {
            self.room_id = Some("!room:a.test".to_owned());
        }
        assert!(self.send(&mut branch, ALICE, "m.room.create", Some(""), content));
        assert!(self.send(
            &mut branch,
            ALICE,
            "m.room.member",
            Some(ALICE),
            json!({"membership": "join"})
        ));
        let mut users = json!({MOD: 50});
        if !self.bob_creates {
            users[BOB] = json!(50);
        }
        if !self
            .version
            .rules
            .authorization
            .explicitly_privilege_room_creators
        {
            users[ALICE] = json!(100);
        }
        assert!(self.send(
            &mut branch,
            ALICE,
            "m.room.power_levels",
            Some(""),
            json!({"users": users})
        ));
        assert!(self.send(
            &mut branch,
            ALICE,
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "public"})
        ));
        for user in [BOB, MOD, CAROL, DAVE] {
            assert!(self.send(
                &mut branch,
                user,
                "m.room.member",
                Some(user),
                json!({"membership": "join"})
            ));
        }
        branch
    }

    fn joined(branch: &Branch, user: &str) -> bool {
        branch
            .state
            .get("m.room.member", user)
            .is_some_and(|m| m.membership() == Some("join"))
    }

    /// One random event accepted on `branch` (a few tries).
    fn random_event(&mut self, branch: &mut Branch) {
        for _ in 0..8 {
            let joined: Vec<&str> = USERS
                .iter()
                .copied()
                .filter(|u| Self::joined(branch, u))
                .collect();
            let sender = if !joined.is_empty() && self.rng.gen_bool(0.85) {
                self.pick(&joined)
            } else {
                self.pick(USERS)
            };
            let other = self.pick(USERS);
            let own = self.pick(&["join", "leave"]);
            let on_other = self.pick(&["leave", "invite"]);
            let rule = self.pick(&["public", "invite", "public"]);
            let sent = match self.rng.gen_range(0..20) {
                0..=2 => self.send(
                    branch,
                    sender,
                    "m.room.member",
                    Some(sender),
                    json!({"membership": own}),
                ),
                3..=4 => self.send(
                    branch,
                    sender,
                    "m.room.member",
                    Some(other),
                    json!({"membership": "ban"}),
                ),
                5..=6 => self.send(
                    branch,
                    sender,
                    "m.room.member",
                    Some(other),
                    json!({"membership": on_other}),
                ),
                7..=10 => {
                    let mut content = branch
                        .state
                        .get("m.room.power_levels", "")
                        .map_or(json!({}), |p| p.content.clone());
                    if self.rng.gen_bool(0.7) {
                        content["users"][other] = json!(self.pick(LEVELS));
                    } else {
                        let field = self.pick(&["ban", "kick", "state_default", "invite"]);
                        content[field] = json!(self.pick(LEVELS));
                    }
                    if self.rng.gen_bool(0.3) {
                        content["events"] = json!({"m.room.topic": self.pick(LEVELS)});
                    }
                    self.send(branch, sender, "m.room.power_levels", Some(""), content)
                }
                11..=13 => {
                    let topic = format!("topic {}", self.rng.gen_range(0..1000));
                    self.send(
                        branch,
                        sender,
                        "m.room.topic",
                        Some(""),
                        json!({"topic": topic}),
                    )
                }
                14 => self.send(
                    branch,
                    sender,
                    "m.room.name",
                    Some(""),
                    json!({"name": "n"}),
                ),
                15..=16 => self.send(
                    branch,
                    sender,
                    "m.room.join_rules",
                    Some(""),
                    json!({"join_rule": rule}),
                ),
                17 => self.send(
                    branch,
                    sender,
                    "m.room.message",
                    None,
                    json!({"body": "hi", "msgtype": "m.text"}),
                ),
                _ => self.send(
                    branch,
                    sender,
                    "m.room.member",
                    Some(sender),
                    json!({"membership": "join", "displayname": "x"}),
                ),
            };
            if sent {
                return;
            }
        }
    }

    /// The auth chain of a state set, walked here for ruma.
    fn auth_chain(&self, state: &StateMap) -> EventIdSet<OwnedEventId> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = state.values().map(String::as_str).collect();
        while let Some(id) = stack.pop() {
            for auth in &self.events[id].auth_events {
                if seen.insert(auth) {
                    stack.push(auth);
                }
            }
        }
        seen.into_iter()
            .map(|id| EventId::parse(id).unwrap())
            .collect()
    }

    /// The events on an auth path between two conflicted events, walked
    /// here for ruma: reachable from a conflicted event and reaching one.
    fn conflicted_subgraph(&self, conflicted: &HashSet<String>) -> EventIdSet<OwnedEventId> {
        fn reaches<'a>(
            id: &'a str,
            events: &'a HashMap<String, Arc<Pdu>>,
            conflicted: &HashSet<String>,
            memo: &mut HashMap<&'a str, bool>,
        ) -> bool {
            if let Some(&known) = memo.get(id) {
                return known;
            }
            let mut found = conflicted.contains(id);
            for auth in &events[id].auth_events {
                found |= reaches(auth, events, conflicted, memo);
            }
            memo.insert(id, found);
            found
        }
        let mut memo = HashMap::new();
        let mut below: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = conflicted.iter().map(String::as_str).collect();
        while let Some(id) = stack.pop() {
            if below.insert(id) {
                stack.extend(self.events[id].auth_events.iter().map(String::as_str));
            }
        }
        below
            .into_iter()
            .filter(|id| reaches(id, &self.events, conflicted, &mut memo))
            .map(|id| EventId::parse(id).unwrap())
            .collect()
    }

    fn ruma_resolve(&self, sets: &[StateMap]) -> StateMap {
        let ruma_sets: Vec<ruma::state_res::StateMap<OwnedEventId>> = sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|((kind, key), id)| {
                        (
                            (StateEventType::from(kind.as_str()), key.clone()),
                            EventId::parse(id).unwrap(),
                        )
                    })
                    .collect()
            })
            .collect();
        let auth_chains = sets.iter().map(|set| self.auth_chain(set)).collect();
        let ruma::room_version_rules::StateResolutionVersion::V2(rules) =
            &self.version.rules.state_res
        else {
            panic!("v2 state res");
        };
        let resolved = ruma::state_res::resolve(
            &self.version.rules.authorization,
            rules,
            &ruma_sets,
            auth_chains,
            |id: &EventId| self.ruma_events.get(id).cloned(),
            |conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>| {
                let ids = conflicted
                    .values()
                    .flatten()
                    .map(|id| id.to_string())
                    .collect();
                Some(self.conflicted_subgraph(&ids))
            },
        )
        .unwrap_or_else(|e| panic!("seed {} v{}: ruma fails: {e}", self.seed, self.version.id));
        resolved
            .into_iter()
            .map(|((kind, key), id)| ((kind.to_string(), key), id.to_string()))
            .collect()
    }

    /// Resolves `branches` with both implementations; they must agree.
    fn check(&mut self, branches: &[&Branch], round: usize) -> StateMap {
        let sets: Vec<StateMap> = branches.iter().map(|b| b.state.ids()).collect();
        let started = std::time::Instant::now();
        let ours = resolve(&self.version, &sets, |id: &str| {
            self.events.get(id).cloned()
        })
        .unwrap_or_else(|e| panic!("seed {} v{}: ours fails: {e}", self.seed, self.version.id));
        self.ours_time += started.elapsed();
        let context = || format!("seed {} v{} round {round}", self.seed, self.version.id);
        let kept = resolve_in(&self.graph, &self.version, &sets)
            .unwrap_or_else(|e| panic!("{}: resolve_in fails: {e}", context()));
        assert_eq!(
            kept,
            ours,
            "{}: resolve_in on the room's graph differs",
            context()
        );
        let mut graph = self.graph.clone();
        let interned: Vec<_> = sets
            .iter()
            .map(|s| graph.intern_state(s).unwrap())
            .collect();
        let resolved = resolve_ix(&graph, &self.version, &interned)
            .unwrap_or_else(|e| panic!("{}: resolve_ix fails: {e}", context()));
        assert_eq!(
            graph.state_map(&resolved),
            ours,
            "{}: resolve_ix differs",
            context()
        );
        let started = std::time::Instant::now();
        let theirs = self.ruma_resolve(&sets);
        self.ruma_time += started.elapsed();
        if ours != theirs {
            let mut diff: Vec<String> = ours
                .keys()
                .chain(theirs.keys())
                .collect::<HashSet<_>>()
                .into_iter()
                .filter(|k| ours.get(*k) != theirs.get(*k))
                .map(|k| format!("{k:?}: ours {:?}, ruma {:?}", ours.get(k), theirs.get(k)))
                .collect();
            diff.sort();
            panic!(
                "seed {} v{} round {round}: {} sets resolve differently:\n{}",
                self.seed,
                self.version.id,
                sets.len(),
                diff.join("\n")
            );
        }
        self.resolutions += 1;
        let keys: HashSet<_> = sets.iter().flat_map(|s| s.iter()).collect();
        if keys.len() > sets[0].len() {
            self.conflicted_keys += 1;
        }
        ours
    }

    fn run(&mut self) {
        let mut main = self.create_room();
        self.created = true;
        let mut history = vec![main.clone()];
        for round in 0..ROUNDS {
            let width = self.rng.gen_range(2..=4);
            let mut branches = vec![main.clone(); width];
            for branch in &mut branches {
                for _ in 0..self.rng.gen_range(1..=4) {
                    self.random_event(branch);
                }
            }
            // Older states and pairs of branches, for deeper auth differences.
            let old = history[self.rng.gen_range(0..history.len())].clone();
            let mut with_old: Vec<&Branch> = branches.iter().collect();
            with_old.push(&old);
            self.check(&with_old, round);
            self.check(&[&branches[0], &branches[1]], round);
            let all: Vec<&Branch> = branches.iter().collect();
            let resolved = self.check(&all, round);

            let heads: Vec<String> = {
                let mut heads: Vec<String> =
                    branches.iter().flat_map(|b| b.heads.clone()).collect();
                heads.sort();
                heads.dedup();
                heads
            };
            main = Branch {
                state: State(
                    resolved
                        .into_iter()
                        .map(|(key, id)| (key, self.events[&id].clone()))
                        .collect(),
                ),
                heads,
                depth: branches.iter().map(|b| b.depth).max().unwrap(),
                ts: branches.iter().map(|b| b.ts).max().unwrap(),
            };
            history.extend(branches);
            history.push(main.clone());
        }
    }
}

#[test]
fn our_resolution_matches_ruma_state_res() {
    let started = std::time::Instant::now();
    let (mut resolutions, mut conflicted, mut skipped_joins) = (0, 0, 0);
    let (mut ours, mut ruma) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    // `STATE_RES_SEEDS=1000 cargo test --release -p myelin-events --test
    // state_res_differential` runs a larger sweep (seeds from 0).
    let seeds: u64 = std::env::var("STATE_RES_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS);
    for id in VERSIONS {
        for seed in 0..seeds {
            let mut generator = Generator::new(version(id), seed);
            generator.run();
            resolutions += generator.resolutions;
            conflicted += generator.conflicted_keys;
            skipped_joins += generator.joins_without_join_rules;
            ours += generator.ours_time;
            ruma += generator.ruma_time;
        }
    }
    assert!(
        conflicted * 2 > resolutions,
        "{conflicted} of {resolutions}"
    );
    eprintln!(
        "{} room DAGs, {resolutions} resolutions ({conflicted} with conflicts) in {:?}: \
         ours {ours:?}, ruma {ruma:?} (ruma's time includes the auth chains walked for it); \
         {skipped_joins} joins not sent for want of join rules",
        seeds * VERSIONS.len() as u64,
        started.elapsed()
    );
}

/// The one difference the generator steers around, pinned so a change to
/// either side shows: with no `m.room.join_rules` in the state, our auth
/// rules treat the room as `invite` (as Synapse does) and let a joined user
/// join again; ruma-state-res rejects every join, following the spec's
/// letter ("otherwise, reject").
#[test]
fn join_without_join_rules_is_a_known_auth_rules_difference() {
    let mut generator = Generator::new(version("11"), 0);
    let mut branch = generator.create_room();
    branch
        .state
        .0
        .remove(&("m.room.join_rules".to_owned(), String::new()));
    assert!(generator.send(
        &mut branch,
        BOB,
        "m.room.member",
        Some(BOB),
        json!({"membership": "join", "displayname": "b"})
    ));
    let rejoin = generator.events[&branch.heads[0]].clone();
    let fetch_state = |kind: &StateEventType, key: &str| {
        branch
            .state
            .0
            .get(&(kind.to_string(), key.to_owned()))
            .map(|p| RumaPdu::from(&**p))
    };
    let ruma = ruma::state_res::check_state_dependent_auth_rules(
        &generator.version.rules.authorization,
        RumaPdu::from(&*rejoin),
        fetch_state,
    );
    assert!(ruma.is_err(), "ruma now allows it: {ruma:?}");
}

/// A room big enough for every parallel path of the resolution: state sets
/// of over 4,096 entries (looked up in parallel chunks), and hundreds of
/// conflicted power events and other events (power levels of senders and
/// mainline positions computed in parallel). Three branches fork from a
/// room of 4,200 members; on each, new users join, members leave, and the
/// moderator kicks members and changes the topic, and Alice changes the
/// power levels (so the mainline decides the topic).
#[test]
fn a_big_room_takes_the_parallel_paths_and_still_matches_ruma() {
    const MEMBERS: usize = 4_200;
    const PER_BRANCH: usize = 120;
    for id in ["11", "12"] {
        let mut generator = Generator::new(version(id), 0);
        let mut base = generator.create_room();
        generator.created = true;
        let members: Vec<String> = (0..MEMBERS).map(|i| format!("@m{i}:d.test")).collect();
        for member in &members {
            let join = json!({"membership": "join"});
            assert!(generator.send(&mut base, member, "m.room.member", Some(member), join));
        }
        let mut branches = vec![base.clone(); 3];
        for (b, branch) in branches.iter_mut().enumerate() {
            for i in 0..PER_BRANCH {
                // Each branch works on its own members, so most events stay
                // valid on their branch and conflict with the others.
                let member = &members[(b * PER_BRANCH + i) * 3];
                let newcomer = format!("@n{b}x{i}:e.test");
                let leave = json!({"membership": "leave"});
                let join = json!({"membership": "join"});
                assert!(generator.send(branch, MOD, "m.room.member", Some(member), leave));
                let other = &members[(b * PER_BRANCH + i) * 3 + 1];
                let own_leave = json!({"membership": "leave"});
                assert!(generator.send(branch, other, "m.room.member", Some(other), own_leave));
                assert!(generator.send(branch, &newcomer, "m.room.member", Some(&newcomer), join));
                if i % 40 == 5 {
                    let mut users = json!({MOD: 50, format!("@pl{b}x{i}:e.test"): 1});
                    if !generator.bob_creates {
                        users[BOB] = json!(50);
                    }
                    let rules = &generator.version.rules.authorization;
                    if !rules.explicitly_privilege_room_creators {
                        users[ALICE] = json!(100);
                    }
                    let levels = json!({"users": users});
                    assert!(generator.send(branch, ALICE, "m.room.power_levels", Some(""), levels));
                }
                if i % 10 == 0 {
                    let topic = json!({"topic": format!("branch {b}, {i}")});
                    assert!(generator.send(branch, MOD, "m.room.topic", Some(""), topic));
                }
            }
        }
        let all: Vec<&Branch> = branches.iter().collect();
        let resolved = generator.check(&all, 0);
        assert!(resolved.len() > MEMBERS, "v{id}: {}", resolved.len());
        generator.check(&[&branches[0], &base], 1);
    }
}
