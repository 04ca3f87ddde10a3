//! Event creation (canonical JSON, content hash, ed25519 signature,
//! reference-hash event id), authorization checks and push rule evaluation
//! for every member — the work the room writer does for every event before
//! it touches storage.
//!
//! cargo bench -p myelin-benches --bench events

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use myelin_core::signing_key::SigningKey;
use myelin_events::push::{EventMemo, PushContext, RuleCompiler, merged_ruleset};
use myelin_events::{Pdu, PduTemplate, RoomVersion, auth_types_for_event, build_pdu, check_auth};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::hint::black_box;

/// Members in the benchmark room: auth checks look up the sender's
/// membership and power level among them.
const MEMBERS: usize = 1_000;

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// A v`version` room with a creator, power levels, join rules and `MEMBERS` members.
fn room(
    version: &RoomVersion,
    key: &SigningKey,
) -> (String, HashMap<(String, String), Pdu>, String, i64) {
    let creator = "@creator:bench.example".to_owned();
    let mut state: HashMap<(String, String), Pdu> = HashMap::new();
    let mut depth = 0;
    let mut last = String::new();
    let mut room_id = if version.rules.authorization.room_create_event_id_as_room_id {
        None
    } else {
        Some("!bench:bench.example".to_owned())
    };
    let mut add = |state: &mut HashMap<(String, String), Pdu>,
                   room_id: &mut Option<String>,
                   sender: &str,
                   kind: &str,
                   key_s: &str,
                   content: Value| {
        depth += 1;
        let content = object(content);
        let auth_events = auth_types_for_event(
            version,
            kind,
            sender,
            Some(key_s),
            &Value::Object(content.clone()),
        )
        .into_iter()
        .filter_map(|k| state.get(&k).map(|p| p.event_id.clone()))
        .collect();
        let template = PduTemplate {
            room_id: room_id.clone(),
            sender: sender.to_owned(),
            kind: kind.to_owned(),
            state_key: Some(key_s.to_owned()),
            content,
            redacts: None,
            prev_events: if last.is_empty() {
                vec![]
            } else {
                vec![last.clone()]
            },
            auth_events,
            depth,
            origin_server_ts: 1_700_000_000_000 + depth,
        };
        let pdu = build_pdu(version, template, "bench.example", key).expect("builds");
        check_auth(version, &pdu, state).expect("authorized");
        *room_id = Some(pdu.room_id.clone());
        last = pdu.event_id.clone();
        state.insert((kind.to_owned(), key_s.to_owned()), pdu);
    };
    let mut create = json!({ "room_version": version.id });
    if !version.rules.authorization.use_room_create_sender {
        create["creator"] = json!(creator);
    }
    add(
        &mut state,
        &mut room_id,
        &creator,
        "m.room.create",
        "",
        create,
    );
    add(
        &mut state,
        &mut room_id,
        &creator,
        "m.room.member",
        &creator,
        json!({ "membership": "join" }),
    );
    let users = if version
        .rules
        .authorization
        .explicitly_privilege_room_creators
    {
        json!({})
    } else {
        json!({ creator.clone(): 100 })
    };
    add(
        &mut state,
        &mut room_id,
        &creator,
        "m.room.power_levels",
        "",
        json!({ "users": users, "state_default": 50, "events_default": 0 }),
    );
    add(
        &mut state,
        &mut room_id,
        &creator,
        "m.room.join_rules",
        "",
        json!({ "join_rule": "public" }),
    );
    for i in 0..MEMBERS {
        let user = format!("@user{i}:bench.example");
        add(
            &mut state,
            &mut room_id,
            &user.clone(),
            "m.room.member",
            &user,
            json!({ "membership": "join" }),
        );
    }
    (room_id.expect("room id"), state, last, depth)
}

fn message(
    version: &RoomVersion,
    room_id: &str,
    state: &HashMap<(String, String), Pdu>,
    prev: &str,
    depth: i64,
) -> PduTemplate {
    let sender = "@user7:bench.example";
    let content = object(
        json!({ "msgtype": "m.text", "body": "Hello, world! A message of ordinary length for a chat." }),
    );
    let auth_events = auth_types_for_event(
        version,
        "m.room.message",
        sender,
        None,
        &Value::Object(content.clone()),
    )
    .into_iter()
    .filter_map(|k| state.get(&k).map(|p| p.event_id.clone()))
    .collect();
    PduTemplate {
        room_id: Some(room_id.to_owned()),
        sender: sender.to_owned(),
        kind: "m.room.message".to_owned(),
        state_key: None,
        content,
        redacts: None,
        prev_events: vec![prev.to_owned()],
        auth_events,
        depth: depth + 1,
        origin_server_ts: 1_700_000_100_000,
    }
}

fn bench_events(c: &mut Criterion) {
    let key = SigningKey::generate();
    let mut group = c.benchmark_group("events");
    for id in ["10", "12"] {
        let version = RoomVersion::parse(id).expect("supported");
        let (room_id, state, prev, depth) = room(&version, &key);
        let template = message(&version, &room_id, &state, &prev, depth);
        group.bench_function(
            BenchmarkId::new("build_and_sign_message", format!("v{id}")),
            |b| {
                b.iter(|| {
                    build_pdu(&version, black_box(template.clone()), "bench.example", &key).unwrap()
                })
            },
        );
        let pdu = build_pdu(&version, template.clone(), "bench.example", &key).unwrap();
        group.bench_function(
            BenchmarkId::new("check_auth_message", format!("v{id}")),
            |b| b.iter(|| check_auth(&version, black_box(&pdu), &state).unwrap()),
        );
        let join = state
            .get(&(
                "m.room.member".to_owned(),
                "@user9:bench.example".to_owned(),
            ))
            .unwrap()
            .clone();
        let mut before = state.clone();
        before.remove(&(
            "m.room.member".to_owned(),
            "@user9:bench.example".to_owned(),
        ));
        group.bench_function(BenchmarkId::new("check_auth_join", format!("v{id}")), |b| {
            b.iter(|| check_auth(&version, black_box(&join), &before).unwrap())
        });
        // What the writer does per message: every member's rules, in turn.
        let mut compiler = RuleCompiler::default();
        let rulesets: Vec<(String, _)> = (0..MEMBERS)
            .map(|i| {
                let user = format!("@user{i}:bench.example");
                let rules = compiler.compile(&merged_ruleset(&user, None));
                (user, rules)
            })
            .collect();
        let event = json!({ "type": pdu.kind, "sender": pdu.sender, "room_id": pdu.room_id,
                            "content": pdu.content });
        group.bench_function(
            BenchmarkId::new("push_rules_message_1000_members", format!("v{id}")),
            |b| {
                b.iter(|| {
                    let mut notified = 0;
                    let mut memo = EventMemo::default();
                    for (user, rules) in &rulesets {
                        let ctx = PushContext {
                            user_id: user,
                            display_name: Some(user),
                            member_count: MEMBERS as u64,
                            sender_power_level: 0,
                            power_levels: None,
                        };
                        if rules
                            .evaluate(black_box(&event), &ctx, &mut memo)
                            .is_some_and(|e| e.notify)
                        {
                            notified += 1;
                        }
                    }
                    notified
                })
            },
        );
        group.bench_function(
            BenchmarkId::new("parse_stored_pdu", format!("v{id}")),
            |b| {
                let text = pdu.to_canonical_string();
                b.iter(|| Pdu::from_json_str(&version, black_box(&text), &pdu.event_id).unwrap())
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_events);
criterion_main!(benches);
