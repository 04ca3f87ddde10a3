//! State resolution v1, the algorithm of room version 1 (the spec's "Room
//! Version 1" page, "State resolution").
//!
//! The resolved state *R* is built in passes:
//! 1. *R* starts as the unconflicted state: every `(type, state_key)` that
//!    all the state sets holding it map to the same event. A key missing
//!    from some sets is not a conflict.
//! 2. The conflicted `m.room.power_levels`, then each conflicted
//!    `m.room.join_rules`, then each conflicted `m.room.member` are resolved
//!    by [`resolve_auth_conflict`]: the candidates in ascending depth and
//!    descending SHA-1 of the event id; the first is taken as is, each next
//!    one replaces it while it passes the auth rules against *R* with the
//!    current winner in place, and the first failure stops the walk.
//! 3. Every other conflicted key by [`resolve_other_conflict`]: the first
//!    candidate by descending depth and ascending SHA-1 of the event id that
//!    passes the auth rules against *R*.
//!
//! Where the spec leaves room, this follows Synapse (`synapse/state/v1.py`),
//! the implementation every v1 room lives with:
//! - the SHA-1 is of the event id's UTF-8 bytes, compared as its hex digest
//!   (the same order as the raw digest);
//! - the keys of one pass are resolved independently, against *R* as it was
//!   before the pass (a member conflict does not see the winner of another
//!   member conflict); *R* is updated when the pass ends;
//! - when no candidate of another key passes, the last one in that order
//!   wins (the lowest depth, then the highest SHA-1);
//! - an event is checked against the events of *R* its auth events
//!   selection names ([`auth_types_for_event`]), as Synapse builds its
//!   `auth_events`.
//!
//! Events the caller cannot give (unknown or rejected) are absent, as
//! Synapse, which loads only accepted events, treats them:
//! - a conflicted key with no known candidate is dropped from the result;
//! - a conflicted key with one known candidate takes it without a check,
//!   and (as in Synapse, which builds its auth state before that step) that
//!   event is not part of *R* for the checks of the other keys;
//! - an unconflicted event is kept as the state sets name it, known or not,
//!   but an unknown one is not in *R* for the checks.
//!
//! One departure, for robustness: an event whose type or state key is not
//! the key a state set files it under is treated as unknown (Synapse would
//! use it as is; no honest state set holds one).

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ruma::room_version_rules::StateResolutionVersion;

use super::{RESOLUTION_EVENTS_MAX, StateMap, StateResError};
use crate::auth::{StateView, auth_types_for_event, check_auth};
use crate::pdu::Pdu;
use crate::room_version::RoomVersion;

const POWER_LEVELS: &str = "m.room.power_levels";
const JOIN_RULES: &str = "m.room.join_rules";
const MEMBER: &str = "m.room.member";

/// A `(type, state_key)` pair.
type Key = (String, String);

/// The events of *R* the auth checks read, by key.
type AuthState = HashMap<Key, Arc<Pdu>>;

/// A conflicted event that could be loaded, with its sort key.
struct Candidate {
    pdu: Arc<Pdu>,
    /// The SHA-1 of the event id (its UTF-8 bytes).
    sha1: [u8; 20],
}

impl Candidate {
    /// The order of Synapse's `_ordered_events`: descending depth, then
    /// ascending SHA-1 of the event id (the event id last, for SHA-1
    /// collisions only).
    fn order(&self) -> (Reverse<i64>, [u8; 20], &str) {
        (Reverse(self.pdu.depth), self.sha1, &self.pdu.event_id)
    }
}

/// Resolves `state_sets` with the v1 algorithm.
pub(super) fn resolve<F>(
    version: &RoomVersion,
    state_sets: &[StateMap],
    fetch: F,
) -> Result<StateMap, StateResError>
where
    F: Fn(&str) -> Option<Arc<Pdu>>,
{
    if !matches!(version.rules.state_res, StateResolutionVersion::V1) {
        return Err(StateResError::UnsupportedVersion(version.id));
    }
    match state_sets {
        [] => return Ok(StateMap::new()),
        [only] => return Ok(only.clone()),
        _ => {}
    }
    let (unconflicted, conflicted) = separate(state_sets);
    if conflicted.is_empty() {
        return Ok(unconflicted);
    }
    let conflicted_events: usize = conflicted.values().map(Vec::len).sum();
    if conflicted_events > RESOLUTION_EVENTS_MAX {
        return Err(StateResError::TooManyEvents(RESOLUTION_EVENTS_MAX));
    }

    // Load the candidates; keys left with fewer than two are settled.
    let mut resolved = unconflicted.clone();
    let mut contested: Vec<(Key, Vec<Candidate>)> = Vec::new();
    for (key, ids) in conflicted {
        let mut candidates: Vec<Candidate> = ids
            .iter()
            .filter_map(|id| fetch_at(&fetch, id, &key))
            .map(|pdu| Candidate {
                sha1: sha1(pdu.event_id.as_bytes()),
                pdu,
            })
            .collect();
        match candidates.len() {
            0 => {}
            1 => {
                resolved.insert(key, candidates[0].pdu.event_id.clone());
            }
            _ => {
                candidates.sort_by(|a, b| a.order().cmp(&b.order()));
                contested.push((key, candidates));
            }
        }
    }
    // Deterministic pass order (the outcome does not depend on it).
    contested.sort_by(|a, b| a.0.cmp(&b.0));

    let mut auth = auth_state(version, &unconflicted, &contested, &fetch);

    // Pass 1: power levels; pass 2: join rules; pass 3: memberships.
    let passes: [fn(&Key) -> bool; 3] = [
        |key| key.0 == POWER_LEVELS && key.1.is_empty(),
        |key| key.0 == JOIN_RULES,
        |key| key.0 == MEMBER,
    ];
    let mut done = vec![false; contested.len()];
    for in_pass in passes {
        let mut winners = Vec::new();
        for (i, (key, candidates)) in contested.iter().enumerate() {
            if done[i] || !in_pass(key) {
                continue;
            }
            done[i] = true;
            if let Some(winner) = resolve_auth_conflict(version, candidates, &auth) {
                winners.push((key.clone(), winner));
            }
        }
        for (key, winner) in winners {
            resolved.insert(key.clone(), winner.event_id.clone());
            auth.insert(key, winner);
        }
    }

    // Pass 4: every other key, against the resolved auth state.
    for (i, (key, candidates)) in contested.iter().enumerate() {
        if done[i] {
            continue;
        }
        if let Some(winner) = resolve_other_conflict(version, candidates, &auth) {
            resolved.insert(key.clone(), winner.event_id.clone());
        }
    }
    Ok(resolved)
}

/// Splits the state sets into the unconflicted state and, for each
/// conflicted key, its distinct event ids (sorted).
fn separate(state_sets: &[StateMap]) -> (StateMap, HashMap<Key, Vec<String>>) {
    let mut seen: HashMap<&Key, Vec<&String>> = HashMap::new();
    for set in state_sets {
        for (key, id) in set {
            let ids = seen.entry(key).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    let mut unconflicted = StateMap::new();
    let mut conflicted = HashMap::new();
    for (key, ids) in seen {
        if let [only] = ids.as_slice() {
            unconflicted.insert(key.clone(), (*only).clone());
        } else {
            let mut ids: Vec<String> = ids.into_iter().cloned().collect();
            ids.sort_unstable();
            conflicted.insert(key.clone(), ids);
        }
    }
    (unconflicted, conflicted)
}

/// Fetches `id` if it is known and is a state event filed under `key`.
fn fetch_at<F>(fetch: &F, id: &str, key: &Key) -> Option<Arc<Pdu>>
where
    F: Fn(&str) -> Option<Arc<Pdu>>,
{
    fetch(id).filter(|pdu| {
        pdu.event_id == id && pdu.kind == key.0 && pdu.state_key.as_deref() == Some(key.1.as_str())
    })
}

/// The starting *R* for the checks: the known unconflicted events at the
/// keys the auth events selection of some candidate names (Synapse's
/// `_create_auth_events_from_maps`).
fn auth_state<F>(
    version: &RoomVersion,
    unconflicted: &StateMap,
    contested: &[(Key, Vec<Candidate>)],
    fetch: &F,
) -> AuthState
where
    F: Fn(&str) -> Option<Arc<Pdu>>,
{
    let mut wanted: HashSet<Key> = HashSet::new();
    for candidate in contested.iter().flat_map(|(_, candidates)| candidates) {
        wanted.extend(auth_types(version, &candidate.pdu));
    }
    wanted
        .into_iter()
        .filter_map(|key| {
            let pdu = fetch_at(fetch, unconflicted.get(&key)?, &key)?;
            Some((key, pdu))
        })
        .collect()
}

/// The keys of `pdu`'s auth events selection.
fn auth_types(version: &RoomVersion, pdu: &Pdu) -> Vec<Key> {
    auth_types_for_event(
        version,
        &pdu.kind,
        &pdu.sender,
        pdu.state_key.as_deref(),
        &pdu.content,
    )
}

/// Resolves a conflicted power levels, join rules or member key (Synapse's
/// `_resolve_auth_events`): walking up from the lowest depth, each candidate
/// replaces the winner so far while it passes the auth rules with that
/// winner in *R*; the first failure ends the walk.
fn resolve_auth_conflict(
    version: &RoomVersion,
    candidates: &[Candidate],
    auth: &AuthState,
) -> Option<Arc<Pdu>> {
    let mut ascending = candidates.iter().rev();
    let mut winner = &ascending.next()?.pdu;
    for candidate in ascending {
        let view = AuthView::new(version, &candidate.pdu, auth, Some(winner));
        if check_auth(version, &candidate.pdu, &view).is_err() {
            break;
        }
        winner = &candidate.pdu;
    }
    Some(Arc::clone(winner))
}

/// Resolves any other conflicted key (Synapse's `_resolve_normal_events`):
/// the first candidate, by descending depth then ascending SHA-1, that
/// passes the auth rules against *R*; if none does, the last one.
fn resolve_other_conflict(
    version: &RoomVersion,
    candidates: &[Candidate],
    auth: &AuthState,
) -> Option<Arc<Pdu>> {
    candidates
        .iter()
        .find(|candidate| {
            let view = AuthView::new(version, &candidate.pdu, auth, None);
            check_auth(version, &candidate.pdu, &view).is_ok()
        })
        .or(candidates.last())
        .map(|candidate| Arc::clone(&candidate.pdu))
}

/// *R* as one event sees it: only the keys of its auth events selection,
/// with `top` (the winner so far of the key being resolved) over `base`.
struct AuthView<'a> {
    base: &'a AuthState,
    top: Option<&'a Pdu>,
    selection: Vec<Key>,
}

impl<'a> AuthView<'a> {
    fn new(
        version: &RoomVersion,
        event: &Pdu,
        base: &'a AuthState,
        top: Option<&'a Arc<Pdu>>,
    ) -> Self {
        Self {
            base,
            top: top.map(|pdu| &**pdu),
            selection: auth_types(version, event),
        }
    }
}

impl StateView for AuthView<'_> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&Pdu> {
        let selected = self
            .selection
            .iter()
            .any(|(k, s)| k == kind && s == state_key);
        if !selected {
            return None;
        }
        if let Some(top) = self.top
            && top.kind == kind
            && top.state_key.as_deref() == Some(state_key)
        {
            return Some(top);
        }
        self.base
            .get(&(kind.to_owned(), state_key.to_owned()))
            .map(|pdu| &**pdu)
    }
}

/// SHA-1 of `data`, for v1's tie-break only (nothing security-relevant).
fn sha1(data: &[u8]) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(data).into()
}

#[cfg(test)]
mod tests {
    use myelin_core::signing_key::SigningKey;
    use serde_json::{Value, json};

    use super::*;
    use crate::pdu::{PduTemplate, build_pdu};

    const ALICE: &str = "@alice:a.test";
    const BOB: &str = "@bob:a.test";
    const CAROL: &str = "@carol:b.test";
    const EVE: &str = "@eve:c.test";
    const TOPIC: &str = "m.room.topic";

    /// A version 1 room whose forks are built event by event; every event
    /// passes the auth rules on its own fork.
    struct Room {
        version: RoomVersion,
        room_id: Option<String>,
        events: HashMap<String, Arc<Pdu>>,
    }

    #[derive(Clone)]
    struct Fork {
        state: HashMap<Key, Pdu>,
        heads: Vec<String>,
        depth: i64,
    }

    impl Room {
        /// Alice creates a public room at power 100, with Bob (50) and
        /// Carol (0) joined. The base fork is at depth 6.
        fn new() -> (Self, Fork) {
            let mut room = Self {
                version: RoomVersion::parse("1").unwrap(),
                room_id: Some("!room:a.test".to_owned()),
                events: HashMap::new(),
            };
            let mut fork = Fork {
                state: HashMap::new(),
                heads: Vec::new(),
                depth: 0,
            };
            room.send(
                &mut fork,
                ALICE,
                "m.room.create",
                "",
                json!({"creator": ALICE}),
            );
            room.join(&mut fork, ALICE);
            room.send(&mut fork, ALICE, POWER_LEVELS, "", levels(50, 0));
            room.send(
                &mut fork,
                ALICE,
                JOIN_RULES,
                "",
                json!({"join_rule": "public"}),
            );
            room.join(&mut fork, BOB);
            room.join(&mut fork, CAROL);
            (room, fork)
        }

        fn join(&mut self, fork: &mut Fork, user: &str) -> String {
            self.send(fork, user, MEMBER, user, json!({"membership": "join"}))
        }

        fn topic(&mut self, fork: &mut Fork, sender: &str, topic: &str) -> String {
            self.send(fork, sender, TOPIC, "", json!({ "topic": topic }))
        }

        fn send(
            &mut self,
            fork: &mut Fork,
            sender: &str,
            kind: &str,
            state_key: &str,
            content: Value,
        ) -> String {
            self.send_as(None, fork, sender, kind, state_key, content)
        }

        /// Sends an event; `id` replaces its random v1 event id, for tests
        /// that pin the SHA-1 tie-break.
        fn send_as(
            &mut self,
            id: Option<&str>,
            fork: &mut Fork,
            sender: &str,
            kind: &str,
            state_key: &str,
            content: Value,
        ) -> String {
            let auth_events =
                auth_types_for_event(&self.version, kind, sender, Some(state_key), &content)
                    .into_iter()
                    .filter_map(|key| fork.state.get(&key).map(|p| p.event_id.clone()))
                    .collect();
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
                origin_server_ts: 1_700_000_000_000,
            };
            let key = SigningKey::from_seed("test".to_owned(), [7; 32]);
            let server = sender.split_once(':').unwrap().1;
            let mut pdu = build_pdu(&self.version, template, server, &key).unwrap();
            if let Some(id) = id {
                pdu.event_id = id.to_owned();
            }
            check_auth(&self.version, &pdu, &fork.state).unwrap();
            fork.heads = vec![pdu.event_id.clone()];
            fork.depth += 1;
            fork.state
                .insert((kind.to_owned(), state_key.to_owned()), pdu.clone());
            let id = pdu.event_id.clone();
            self.events.insert(id.clone(), Arc::new(pdu));
            id
        }

        fn resolve(&self, forks: &[&Fork]) -> StateMap {
            self.resolve_hiding(forks, &[])
        }

        /// Resolves with the events `hidden` unknown to `fetch`.
        fn resolve_hiding(&self, forks: &[&Fork], hidden: &[&str]) -> StateMap {
            let sets: Vec<StateMap> = forks.iter().map(|fork| state_map(fork)).collect();
            resolve(&self.version, &sets, |id: &str| {
                if hidden.contains(&id) {
                    return None;
                }
                self.events.get(id).cloned()
            })
            .unwrap()
        }
    }

    fn state_map(fork: &Fork) -> StateMap {
        fork.state
            .iter()
            .map(|(key, pdu)| (key.clone(), pdu.event_id.clone()))
            .collect()
    }

    /// Power levels with Alice at 100 and Bob and Carol at the levels given.
    fn levels(bob: i64, carol: i64) -> Value {
        json!({"users": {ALICE: 100, BOB: bob, CAROL: carol}})
    }

    fn get<'a>(state: &'a StateMap, kind: &str, state_key: &str) -> Option<&'a str> {
        state
            .get(&(kind.to_owned(), state_key.to_owned()))
            .map(String::as_str)
    }

    fn hex(digest: [u8; 20]) -> String {
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// FIPS 180-4 / RFC 3174 test vectors, including a two-block message
    /// and the padding boundaries (55, 56 and 64 bytes).
    #[test]
    fn sha1_matches_known_vectors() {
        assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(
            hex(sha1(b"The quick brown fox jumps over the lazy dog")),
            "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"
        );
        assert_eq!(
            hex(sha1(&[b'a'; 55])),
            "c1c8bbdc22796e28c0e15163d20899b65621d65a"
        );
        assert_eq!(
            hex(sha1(&[b'a'; 64])),
            "0098ba824b5c16427bd7a1122a5a442a25ec644d"
        );
        assert_eq!(
            hex(sha1(&[b'a'; 1_000_000])),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    /// Synapse: a single state set (or sets that agree) is returned as is.
    #[test]
    fn no_conflict_returns_the_state_as_is() {
        let (room, base) = Room::new();
        let expected = state_map(&base);
        assert_eq!(room.resolve(&[&base]), expected);
        assert_eq!(room.resolve(&[&base, &base.clone(), &base]), expected);
        let version = RoomVersion::parse("1").unwrap();
        assert_eq!(resolve(&version, &[], |_| None).unwrap(), StateMap::new());
    }

    /// Spec: other conflicts go to the highest depth, then the lowest
    /// sha1(event_id), that passes auth (not the lowest event id).
    #[test]
    fn conflicting_topics_pick_highest_depth_then_lowest_sha1() {
        let (mut room, base) = Room::new();
        // sha1: a = 2d7e…, b = e066…, c = 12d1…: c wins a tie, though
        // neither the first nor the last id.
        let ids = ["$topic-a:a.test", "$topic-b:a.test", "$topic-c:a.test"];
        let mut forks = [base.clone(), base.clone(), base.clone()];
        for (fork, id) in forks.iter_mut().zip(ids) {
            room.send_as(Some(id), fork, ALICE, TOPIC, "", json!({"topic": id}));
        }
        let sets: Vec<&Fork> = forks.iter().collect();
        let state = room.resolve(&sets);
        assert_eq!(get(&state, TOPIC, ""), Some("$topic-c:a.test"));
        // The order of the sets does not matter.
        let reversed: Vec<&Fork> = forks.iter().rev().collect();
        assert_eq!(room.resolve(&reversed), state);

        // A deeper topic beats a shallower one whatever its hash.
        let mut deeper = base.clone();
        room.topic(&mut deeper, ALICE, "first");
        let deep = room.send_as(
            Some("$topic-b:a.test-deep"),
            &mut deeper,
            ALICE,
            TOPIC,
            "",
            json!({"topic": "deep"}),
        );
        let state = room.resolve(&[&forks[2], &deeper]);
        assert_eq!(get(&state, TOPIC, ""), Some(deep.as_str()));
    }

    /// Spec/Synapse: power levels are walked from the lowest depth; the
    /// first candidate that fails auth stops the walk, later ones are never
    /// considered.
    #[test]
    fn power_levels_conflict_stops_at_the_first_failing_candidate() {
        let (mut room, base) = Room::new();
        // Fork A (depth 7): Alice demotes Bob to 0.
        let mut a = base.clone();
        let demote = room.send(&mut a, ALICE, POWER_LEVELS, "", levels(0, 0));
        // Fork B (depth 8): Bob, still at 50, raises Carol to 50.
        let mut b = base.clone();
        room.topic(&mut b, BOB, "b");
        let raise = room.send(&mut b, BOB, POWER_LEVELS, "", levels(50, 50));
        // Fork C (depth 9): Alice raises Carol to 20 (would pass).
        let mut c = base.clone();
        room.topic(&mut c, ALICE, "c1");
        room.topic(&mut c, ALICE, "c2");
        room.send(&mut c, ALICE, POWER_LEVELS, "", levels(50, 20));

        // A (7) is taken, B (8) fails against it (Bob at 0): the walk
        // stops and A wins, though C (9) would pass.
        let state = room.resolve(&[&a, &b, &c]);
        assert_eq!(get(&state, POWER_LEVELS, ""), Some(demote.as_str()));
        // Against the base power levels B passes and wins.
        let state = room.resolve(&[&base, &b]);
        assert_eq!(get(&state, POWER_LEVELS, ""), Some(raise.as_str()));
    }

    /// Spec: power levels are walked by ascending depth then descending
    /// sha1, each passing one replacing the last: of equal-depth events
    /// that all pass, the lowest sha1 wins.
    #[test]
    fn power_levels_tie_goes_to_the_lowest_sha1() {
        let (mut room, base) = Room::new();
        let ids = ["$topic-a:a.test", "$topic-b:a.test", "$topic-c:a.test"];
        let mut forks = [base.clone(), base.clone(), base.clone()];
        for (carol, (fork, id)) in forks.iter_mut().zip(ids).enumerate() {
            let content = levels(50, carol as i64 + 1);
            room.send_as(Some(id), fork, ALICE, POWER_LEVELS, "", content);
        }
        let sets: Vec<&Fork> = forks.iter().collect();
        let state = room.resolve(&sets);
        assert_eq!(get(&state, POWER_LEVELS, ""), Some("$topic-c:a.test"));
    }

    /// Spec/Synapse: a member conflict keeps the ban whichever of a racing
    /// ban and join is deeper: a join fails after the ban, a ban passes
    /// after the join.
    #[test]
    fn ban_wins_a_race_with_a_join() {
        for ban_deeper in [false, true] {
            let (mut room, base) = Room::new();
            let mut joined = base.clone();
            let mut banned = base.clone();
            if ban_deeper {
                room.topic(&mut banned, ALICE, "before the ban");
            } else {
                room.topic(&mut joined, ALICE, "before the join");
            }
            room.join(&mut joined, EVE);
            let ban = room.send(
                &mut banned,
                ALICE,
                MEMBER,
                EVE,
                json!({"membership": "ban"}),
            );
            let state = room.resolve(&[&joined, &banned]);
            assert_eq!(get(&state, MEMBER, EVE), Some(ban.as_str()), "{ban_deeper}");
        }
    }

    /// Spec/Synapse: join rules are resolved after, and checked against,
    /// the resolved power levels: a change by a user demoted in the other
    /// fork loses to the older rule.
    #[test]
    fn join_rules_conflict_is_checked_against_resolved_power_levels() {
        let (mut room, base) = Room::new();
        let public = get(&state_map(&base), JOIN_RULES, "").unwrap().to_owned();
        let mut a = base.clone();
        let demote = room.send(&mut a, ALICE, POWER_LEVELS, "", levels(0, 0));
        let mut b = base.clone();
        let invite_only = room.send(&mut b, BOB, JOIN_RULES, "", json!({"join_rule": "invite"}));

        let state = room.resolve(&[&a, &b]);
        assert_eq!(get(&state, POWER_LEVELS, ""), Some(demote.as_str()));
        assert_eq!(get(&state, JOIN_RULES, ""), Some(public.as_str()));

        // Without the demotion Bob's newer rule passes and wins.
        let state = room.resolve(&[&base, &b]);
        assert_eq!(get(&state, JOIN_RULES, ""), Some(invite_only.as_str()));
    }

    /// Spec/Synapse: a key missing from some sets is not a conflict; a key
    /// conflicts only between the sets that hold it.
    #[test]
    fn keys_in_only_some_sets() {
        let (mut room, base) = Room::new();
        let mut a = base.clone();
        let name = room.send(&mut a, ALICE, "m.room.name", "", json!({"name": "A"}));
        let mut b = base.clone();
        room.topic(&mut b, ALICE, "b1");
        let deep_topic = room.topic(&mut b, ALICE, "b2");
        let mut c = base.clone();
        room.topic(&mut c, ALICE, "c");

        let state = room.resolve(&[&a, &b, &c]);
        assert_eq!(get(&state, "m.room.name", ""), Some(name.as_str()));
        assert_eq!(get(&state, TOPIC, ""), Some(deep_topic.as_str()));
        let mut expected = state_map(&base);
        expected.insert(("m.room.name".to_owned(), String::new()), name);
        expected.insert((TOPIC.to_owned(), String::new()), deep_topic);
        assert_eq!(state, expected);
    }

    /// Synapse: when no candidate of another key passes auth, the last in
    /// order (lowest depth) wins.
    #[test]
    fn other_conflict_falls_back_to_the_lowest_depth() {
        let (mut room, base) = Room::new();
        let mut a = base.clone();
        room.topic(&mut a, BOB, "a1");
        room.topic(&mut a, BOB, "a2");
        let mut b = base.clone();
        let shallow = room.topic(&mut b, BOB, "b");
        let demote = room.send(&mut b, ALICE, POWER_LEVELS, "", levels(0, 0));

        let state = room.resolve(&[&a, &b]);
        assert_eq!(get(&state, POWER_LEVELS, ""), Some(demote.as_str()));
        // Bob (now 0) can send neither topic: the shallower one stays.
        assert_eq!(get(&state, TOPIC, ""), Some(shallow.as_str()));
    }

    /// Synapse: unknown (or rejected) events are absent: a conflicted key
    /// with no known candidate is dropped, one with a single known
    /// candidate takes it unchecked, an unknown unconflicted event is kept
    /// but not used for auth checks.
    #[test]
    fn unknown_events_are_absent() {
        let (mut room, base) = Room::new();
        let mut a = base.clone();
        let name_a = room.send(&mut a, ALICE, "m.room.name", "", json!({"name": "A"}));
        let topic_a = room.topic(&mut a, ALICE, "a");
        let mut b = base.clone();
        let name_b = room.send(&mut b, ALICE, "m.room.name", "", json!({"name": "B"}));
        room.topic(&mut b, ALICE, "b1");
        let topic_b = room.topic(&mut b, ALICE, "b2");
        let mut c = base.clone();
        room.topic(&mut c, BOB, "c1");
        let avatar = room.send(
            &mut c,
            BOB,
            "m.room.avatar",
            "",
            json!({"url": "mxc://a/b"}),
        );

        // The deeper topic is unknown, so the other takes its place.
        let state = room.resolve_hiding(&[&a, &b], &[topic_b.as_str()]);
        assert_eq!(get(&state, TOPIC, ""), Some(topic_a.as_str()));
        // No name is known: the key is dropped.
        let state = room.resolve_hiding(&[&a, &b], &[name_a.as_str(), name_b.as_str()]);
        assert_eq!(get(&state, "m.room.name", ""), None);
        // An unknown unconflicted event stays in the result.
        let state = room.resolve_hiding(&[&b, &c], &[avatar.as_str()]);
        assert_eq!(get(&state, "m.room.avatar", ""), Some(avatar.as_str()));

        // With the create event unknown every check fails: topics fall back
        // to the lowest depth (c's Bob topic at 7, a's at 8).
        let create = get(&state_map(&base), "m.room.create", "")
            .unwrap()
            .to_owned();
        let state = room.resolve_hiding(&[&a, &c], &[create.as_str()]);
        assert_eq!(get(&state, "m.room.create", ""), Some(create.as_str()));
        let c_topic = get(&state_map(&c), TOPIC, "").unwrap().to_owned();
        assert_eq!(get(&state, TOPIC, ""), Some(c_topic.as_str()));
    }

    /// An event filed under another key than its own is treated as unknown.
    #[test]
    fn misfiled_events_are_ignored() {
        let (mut room, base) = Room::new();
        let mut a = base.clone();
        let topic = room.topic(&mut a, ALICE, "a");
        let mut b = base.clone();
        let name = room.send(&mut b, ALICE, "m.room.name", "", json!({"name": "B"}));
        let mut sets = vec![state_map(&a), state_map(&base)];
        sets[1].insert((TOPIC.to_owned(), String::new()), name);
        let state = resolve(&room.version, &sets, |id: &str| {
            room.events.get(id).cloned()
        })
        .unwrap();
        assert_eq!(get(&state, TOPIC, ""), Some(topic.as_str()));
    }

    /// Only room version 1 resolves with v1.
    #[test]
    fn other_versions_are_refused() {
        let v2 = RoomVersion::parse("2").unwrap();
        let err = resolve(&v2, &[StateMap::new(), StateMap::new()], |_| None).unwrap_err();
        assert_eq!(err, StateResError::UnsupportedVersion("2"));
    }
}
