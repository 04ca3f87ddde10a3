//! Differential test: our authorization rules against ruma-state-res
//! (`check_state_independent_auth_rules` + `check_state_dependent_auth_rules`)
//! on rooms generated from fixed seeds, for every room version.
//!
//! Each generated event (memberships of every kind, restricted joins,
//! messages, state events, power level changes, join rule changes, aliases,
//! redactions, third-party invite tokens, odd `auth_events`) gets both
//! verdicts; they must agree. Accepted events join the room's state.
//! Third-party invites are left out: this server rejects them on purpose.

mod common;

use std::collections::HashMap;

use common::ruma_pdu::RumaPdu;
use common::*;
use myelin_events::{
    Pdu, PduTemplate, RoomVersion, auth_types_for_event, build_pdu, check_auth, check_auth_events,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use ruma::EventId;
use ruma::events::StateEventType;
use ruma::state_res::{check_state_dependent_auth_rules, check_state_independent_auth_rules};
use serde_json::{Map, Value, json};

const SEEDS: u64 = 8;
const EVENTS_PER_ROOM: usize = 45;

const ALICE: &str = "@alice:a.test";
const BOB: &str = "@bob:a.test";
const MOD: &str = "@mod:a.test";
const CAROL: &str = "@carol:b.test";
const DAVE: &str = "@dave:c.test";
const EVE: &str = "@eve:b.test";
const USERS: &[&str] = &[ALICE, BOB, MOD, CAROL, DAVE, EVE];
const LEVELS: &[i64] = &[0, 10, 25, 50, 75, 100];
const JOIN_RULES: &[&str] = &[
    "public",
    "public",
    "invite",
    "knock",
    "restricted",
    "knock_restricted",
    "private",
];
const MEMBERSHIPS: &[&str] = &["join", "join", "invite", "leave", "ban", "knock"];
const LEVEL_FIELDS: &[&str] = &[
    "users_default",
    "events_default",
    "state_default",
    "ban",
    "redact",
    "kick",
    "invite",
];
const STATE_TYPES: &[&str] = &[
    "m.room.name",
    "m.room.topic",
    "org.example.custom",
    "m.room.join_rules",
];

type State = HashMap<(String, String), Pdu>;

/// A room grown by random events; only events both implementations accept
/// are kept.
struct Generator {
    version: RoomVersion,
    rng: StdRng,
    state: State,
    accepted: HashMap<String, Pdu>,
    last: Option<Pdu>,
    room_id: Option<String>,
    creators: Vec<&'static str>,
    /// Whether `build` may cite one auth event too few or too many.
    fuzz_auth_events: bool,
    tally: Tally,
}

#[derive(Default)]
struct Tally {
    accepted: usize,
    rejected: usize,
    mismatches: Vec<String>,
}

impl Generator {
    fn new(version: RoomVersion, seed: u64) -> Self {
        let rng = StdRng::seed_from_u64(seed * 1000 + version.id.parse::<u64>().unwrap());
        Self {
            version,
            rng,
            state: State::new(),
            accepted: HashMap::new(),
            last: None,
            room_id: None,
            creators: vec![ALICE],
            fuzz_auth_events: false,
            tally: Tally::default(),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).unwrap()
    }

    /// Builds an event citing the auth events our selection names (now and
    /// then one too few or one too many) on top of the last accepted event.
    fn build(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        redacts: Option<String>,
    ) -> Pdu {
        let mut auth_events: Vec<String> =
            auth_types_for_event(&self.version, kind, sender, state_key, &content)
                .into_iter()
                .filter_map(|(kind, key)| self.state.get(&(kind, key)).map(|p| p.event_id.clone()))
                .collect();
        if self.fuzz_auth_events && self.chance(0.04) && !auth_events.is_empty() {
            let i = self.rng.gen_range(0..auth_events.len());
            auth_events.remove(i);
        }
        if self.fuzz_auth_events
            && self.chance(0.04)
            && let Some(extra) = self
                .state
                .values()
                .map(|p| p.event_id.clone())
                .collect::<Vec<_>>()
                .choose(&mut self.rng)
            && !auth_events.contains(extra)
        {
            auth_events.push(extra.clone());
        }
        let last = self.last.as_ref().unwrap();
        let template = PduTemplate {
            room_id: self.room_id.clone(),
            sender: sender.to_owned(),
            kind: kind.to_owned(),
            state_key: state_key.map(str::to_owned),
            content: object(content),
            redacts,
            prev_events: vec![last.event_id.clone()],
            auth_events,
            depth: last.depth + 1,
            origin_server_ts: last.origin_server_ts + 1,
        };
        build_pdu(&self.version, template, server_of(sender), &key()).unwrap()
    }

    fn ours(&self, event: &Pdu) -> Result<(), String> {
        if event.kind != "m.room.create" {
            let cited: Vec<&Pdu> = event
                .auth_events
                .iter()
                .filter_map(|id| self.accepted.get(id))
                .collect();
            check_auth_events(&self.version, event, &cited).map_err(|e| e.0)?;
        }
        check_auth(&self.version, event, &self.state).map_err(|e| e.0)
    }

    fn ruma(&self, event: &Pdu) -> Result<(), String> {
        let rules = &self.version.rules.authorization;
        let incoming = RumaPdu::from(event);
        let fetch_event = |id: &EventId| self.accepted.get(id.as_str()).map(RumaPdu::from);
        check_state_independent_auth_rules(rules, &incoming, fetch_event)?;
        let fetch_state = |kind: &StateEventType, key: &str| {
            self.state
                .get(&(kind.to_string(), key.to_owned()))
                .map(RumaPdu::from)
        };
        check_state_dependent_auth_rules(rules, &incoming, fetch_state)
    }

    /// Both verdicts; the event joins the room when both accept it.
    fn submit(&mut self, event: Pdu) -> bool {
        let (ours, ruma) = (self.ours(&event), self.ruma(&event));
        if ours.is_ok() != ruma.is_ok() {
            self.tally.mismatches.push(format!(
                "v{} {} {:?} by {}: content {}\n  ours: {ours:?}\n  ruma: {ruma:?}",
                self.version.id, event.kind, event.state_key, event.sender, event.content
            ));
            return false;
        }
        if ours.is_err() {
            self.tally.rejected += 1;
            return false;
        }
        self.tally.accepted += 1;
        if let Some(key) = &event.state_key {
            self.state
                .insert((event.kind.clone(), key.clone()), event.clone());
        }
        self.accepted.insert(event.event_id.clone(), event.clone());
        self.last = Some(event);
        true
    }

    fn create_room(&mut self) {
        let mut content = json!({"room_version": self.version.id});
        if !self.version.rules.authorization.use_room_create_sender {
            content["creator"] = json!(ALICE);
        }
        if self.chance(0.1) {
            content["m.federate"] = json!(false);
        }
        if self.chance(0.3) {
            content["additional_creators"] = json!([BOB]);
            if self.version.rules.authorization.additional_room_creators {
                self.creators.push(BOB);
            }
        }
        let derived = !self.version.rules.event_format.require_room_create_room_id;
        let room_id = (!derived).then(|| "!room:a.test".to_owned());
        let template = template(
            room_id.as_deref(),
            ALICE,
            "m.room.create",
            Some(""),
            content,
        );
        let create = build_pdu(&self.version, template, SERVER, &key()).unwrap();
        self.room_id = Some(create.room_id.clone());
        self.last = Some(create.clone());
        assert!(
            self.submit(create),
            "v{}: the create event is accepted",
            self.version.id
        );

        let join = self.build(
            ALICE,
            "m.room.member",
            Some(ALICE),
            json!({"membership": "join"}),
            None,
        );
        assert!(self.submit(join), "{:?}", self.tally.mismatches);
        if self.chance(0.85) {
            let levels = self.random_power_levels();
            let event = self.build(ALICE, "m.room.power_levels", Some(""), levels, None);
            self.submit(event);
        }
        let rule = self.pick(JOIN_RULES);
        let event = self.build(
            ALICE,
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": rule}),
            None,
        );
        self.submit(event);
        self.fuzz_auth_events = true;
    }

    fn level(&mut self) -> Value {
        let level = self.pick(LEVELS);
        // Before v10 levels may be strings holding integers.
        if !self.version.rules.authorization.integer_power_levels && self.chance(0.15) {
            let form = self.pick(&["{}", " {} ", "+{}"]);
            return json!(form.replace("{}", &level.to_string()));
        }
        if self.chance(0.02) {
            return json!(format!("{level}"));
        }
        json!(level)
    }

    fn random_power_levels(&mut self) -> Value {
        let mut users = Map::new();
        if !self
            .version
            .rules
            .authorization
            .explicitly_privilege_room_creators
        {
            users.insert(ALICE.to_owned(), json!(100));
        }
        users.insert(MOD.to_owned(), json!(50));
        for user in [BOB, CAROL, DAVE, EVE] {
            if self.chance(0.3) && !self.creators.contains(&user) {
                let level = self.level();
                users.insert(user.to_owned(), level);
            }
        }
        let mut content = json!({"users": users});
        for field in LEVEL_FIELDS {
            if self.chance(0.3) {
                content[*field] = self.level();
            }
        }
        if self.chance(0.5) {
            let kind = self.pick(&[
                "m.room.name",
                "m.room.message",
                "m.room.power_levels",
                "org.example.custom",
            ]);
            content["events"] = json!({kind: self.level()});
        }
        if self.chance(0.3) {
            content["notifications"] = json!({"room": self.level()});
        }
        content
    }

    /// The current power levels with one or two random changes.
    fn changed_power_levels(&mut self) -> Value {
        let mut content = match self
            .state
            .get(&("m.room.power_levels".to_owned(), String::new()))
        {
            Some(current) => current.content.clone(),
            None => self.random_power_levels(),
        };
        for _ in 0..self.rng.gen_range(1..=2) {
            match self.rng.gen_range(0..7) {
                0 | 1 => {
                    let user = self.pick(USERS);
                    let level = self.level();
                    content["users"][user] = level;
                }
                2 => {
                    let user = self.pick(USERS);
                    if let Some(users) = content.get_mut("users").and_then(Value::as_object_mut) {
                        users.remove(user);
                    }
                }
                3 => {
                    let field = self.pick(LEVEL_FIELDS);
                    if self.chance(0.3) {
                        content.as_object_mut().unwrap().remove(field);
                    } else {
                        content[field] = self.level();
                    }
                }
                4 => {
                    let kind = self.pick(&["m.room.name", "m.room.topic", "m.room.power_levels"]);
                    if !content["events"].is_object() {
                        content["events"] = json!({});
                    }
                    content["events"][kind] = self.level();
                }
                5 => content["notifications"] = json!({"room": self.level()}),
                _ => {
                    let level = self.level();
                    content["users"]["not-a-user-id"] = level;
                }
            }
        }
        content
    }

    fn random_sender(&mut self) -> &'static str {
        let joined: Vec<&str> = USERS
            .iter()
            .copied()
            .filter(|u| {
                self.state
                    .get(&("m.room.member".to_owned(), (*u).to_owned()))
                    .is_some_and(|m| m.membership() == Some("join"))
            })
            .collect();
        if !joined.is_empty() && self.chance(0.7) {
            self.pick(&joined)
        } else {
            self.pick(USERS)
        }
    }

    fn random_event(&mut self) -> Pdu {
        let sender = self.random_sender();
        match self.rng.gen_range(0..20) {
            0..=7 => self.random_membership(sender),
            8..=9 => self.build(
                sender,
                "m.room.message",
                None,
                json!({"body": "hi", "msgtype": "m.text"}),
                None,
            ),
            10..=11 => {
                let kind = self.pick(STATE_TYPES);
                let other = self.pick(USERS);
                let state_key = self.pick(&["", sender, other]);
                let content = if kind == "m.room.join_rules" {
                    json!({"join_rule": self.pick(JOIN_RULES)})
                } else {
                    json!({"value": "x"})
                };
                self.build(sender, kind, Some(state_key), content, None)
            }
            12..=14 => {
                let content = self.changed_power_levels();
                self.build(sender, "m.room.power_levels", Some(""), content, None)
            }
            15 => {
                let server = self.pick(&[server_of(sender), "a.test", "b.test"]);
                self.build(
                    sender,
                    "m.room.aliases",
                    Some(server),
                    json!({"aliases": []}),
                    None,
                )
            }
            16..=17 => {
                let target = match self
                    .accepted
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .choose(&mut self.rng)
                {
                    Some(id) if self.rng.gen_bool(0.7) => id.clone(),
                    _ => format!("$gone:{}", self.pick(&["a.test", "b.test"])),
                };
                self.build(
                    sender,
                    "m.room.redaction",
                    None,
                    json!({"reason": "r"}),
                    Some(target),
                )
            }
            _ => {
                let token = self.pick(&["t1", "t2"]);
                self.build(
                    sender,
                    "m.room.third_party_invite",
                    Some(token),
                    json!({"display_name": "x"}),
                    None,
                )
            }
        }
    }

    fn random_membership(&mut self, sender: &'static str) -> Pdu {
        let target = if self.chance(0.6) {
            sender
        } else {
            self.pick(USERS)
        };
        let membership = self.pick(MEMBERSHIPS);
        let mut content = json!({"membership": membership});
        if membership == "join" && self.chance(0.35) {
            content["join_authorised_via_users_server"] =
                json!(self.pick(&[MOD, ALICE, CAROL, BOB]));
        }
        if self.chance(0.2) {
            content["displayname"] = json!("name");
        }
        self.build(sender, "m.room.member", Some(target), content, None)
    }
}

/// Create events with each create rule broken, for every version.
fn create_variants(version: &RoomVersion, tally: &mut Tally) {
    let derived = !version.rules.event_format.require_room_create_room_id;
    let mut variants: Vec<(Option<&str>, Value, Vec<String>, bool)> = vec![
        (
            Some("!room:a.test"),
            json!({"creator": ALICE}),
            vec![],
            false,
        ),
        (
            Some("!room:b.test"),
            json!({"creator": ALICE}),
            vec![],
            false,
        ),
        (Some("!room:a.test"), json!({}), vec![], false),
        (
            Some("!room:a.test"),
            json!({"creator": ALICE}),
            vec!["$p:a.test".to_owned()],
            false,
        ),
        (
            Some("!room:a.test"),
            json!({"creator": ALICE, "additional_creators": ["x"]}),
            vec![],
            false,
        ),
        (
            Some("!room:a.test"),
            json!({"creator": ALICE, "additional_creators": [BOB, 5]}),
            vec![],
            false,
        ),
        (
            Some("!room:a.test"),
            json!({"creator": ALICE, "additional_creators": [BOB]}),
            vec![],
            false,
        ),
    ];
    if derived {
        // Build without a room id, then put one back in (rule 1.2 of v12).
        for variant in &mut variants {
            variant.3 = variant.0 == Some("!room:b.test");
            variant.0 = None;
        }
    }
    for (room_id, content, prev_events, inject_room_id) in variants {
        let mut t = template(room_id, ALICE, "m.room.create", Some(""), content);
        t.prev_events = prev_events;
        let mut pdu = build_pdu(version, t, SERVER, &key()).unwrap();
        if inject_room_id {
            pdu.json.insert(
                "room_id".into(),
                ruma::CanonicalJsonValue::String("!room:a.test".into()),
            );
            pdu = Pdu::from_json(version, pdu.json, None).unwrap();
        }
        let ours = check_auth(version, &pdu, &State::new()).map_err(|e| e.0);
        let rules = &version.rules.authorization;
        let ruma = check_state_independent_auth_rules(rules, RumaPdu::from(&pdu), |_: &EventId| {
            None::<RumaPdu>
        });
        if ours.is_ok() != ruma.is_ok() {
            tally.mismatches.push(format!(
                "v{} create {}\n  ours: {ours:?}\n  ruma: {ruma:?}",
                version.id, pdu.content
            ));
        } else if ours.is_ok() {
            tally.accepted += 1;
        } else {
            tally.rejected += 1;
        }
    }
}

#[test]
fn our_verdicts_match_ruma_state_res() {
    let mut total = Tally::default();
    let mut merge = |tally: Tally| {
        total.accepted += tally.accepted;
        total.rejected += tally.rejected;
        total.mismatches.extend(tally.mismatches);
    };
    for version in all_versions() {
        let mut creates = Tally::default();
        create_variants(&version, &mut creates);
        merge(creates);
        for seed in 0..SEEDS {
            let mut generator = Generator::new(version.clone(), seed);
            generator.create_room();
            for _ in 0..EVENTS_PER_ROOM {
                let event = generator.random_event();
                generator.submit(event);
            }
            merge(generator.tally);
        }
    }
    let checked = total.accepted + total.rejected + total.mismatches.len();
    assert!(
        total.mismatches.is_empty(),
        "{} of {checked} verdicts differ:\n{}",
        total.mismatches.len(),
        total.mismatches.join("\n")
    );
    // The generator must exercise both outcomes in earnest.
    assert!(
        total.accepted * 5 > checked && total.rejected * 5 > checked,
        "{} accepted, {} rejected",
        total.accepted,
        total.rejected
    );
    eprintln!(
        "{checked} events: {} accepted, {} rejected",
        total.accepted, total.rejected
    );
}
