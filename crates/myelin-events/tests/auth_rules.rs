//! The authorization rules, rule by rule, over every room version: each
//! case builds a small room, sends one event and states in which versions
//! the spec allows it.

mod common;

use std::collections::HashMap;

use common::*;
use myelin_events::{
    AuthError, Pdu, PowerLevel, RoomVersion, build_pdu, check_auth, check_auth_events, creators,
    user_power_level,
};
use serde_json::{Value, json};

const ALICE: &str = "@alice:a.test";
const BOB: &str = "@bob:a.test";
const MOD: &str = "@mod:a.test";
const MOD2: &str = "@mod2:a.test";
const ADMIN: &str = "@admin:a.test";
const CAROL: &str = "@carol:b.test";

type Verdict = Result<(), AuthError>;

fn n(v: &RoomVersion) -> u32 {
    v.id.parse().unwrap()
}

/// Power levels with `users` (plus the creator at 100 before v12, where
/// creators may not be listed) and `extra` fields.
fn power_levels(v: &RoomVersion, users: Value, extra: Value) -> Value {
    let mut users = users.as_object().cloned().unwrap_or_default();
    if !v.rules.authorization.explicitly_privilege_room_creators {
        users.insert(ALICE.to_owned(), json!(100));
    }
    let mut content = json!({"users": users});
    for (key, value) in extra.as_object().cloned().unwrap_or_default() {
        content[key] = value;
    }
    content
}

/// Alice's room with `join_rule`; `members` joined (through a public join
/// rule first when needed) at the levels `users` gives them.
fn room(v: &RoomVersion, join_rule: &str, users: Value, extra: Value, members: &[&str]) -> Room {
    let mut room = Room::standard(v.id, ALICE, power_levels(v, users, extra), "public");
    for member in members {
        room.join(member);
    }
    if join_rule != "public" {
        room.must_send(
            ALICE,
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": join_rule}),
        );
    }
    room
}

fn member(room: &mut Room, sender: &str, target: &str, membership: &str) -> Verdict {
    room.try_send(
        sender,
        "m.room.member",
        Some(target),
        json!({"membership": membership}),
    )
    .map(drop)
}

fn create_verdict(
    v: &RoomVersion,
    room_id: Option<&str>,
    content: Value,
    prev: &[&str],
) -> Verdict {
    let mut t = template(room_id, ALICE, "m.room.create", Some(""), content);
    t.prev_events = prev.iter().map(|p| p.to_string()).collect();
    let pdu = build_pdu(v, t, SERVER, &key()).unwrap();
    check_auth(v, &pdu, &HashMap::new())
}

fn own_room_id(v: &RoomVersion) -> Option<&'static str> {
    v.rules
        .event_format
        .require_room_create_room_id
        .then_some("!r:a.test")
}

struct Case {
    name: &'static str,
    allowed: fn(u32) -> bool,
    run: fn(&RoomVersion) -> Verdict,
}

fn always(_: u32) -> bool {
    true
}

fn never(_: u32) -> bool {
    false
}

const CASES: &[Case] = &[
    // Rule 1: m.room.create.
    Case {
        name: "create with prev_events",
        allowed: never,
        run: |v| create_verdict(v, own_room_id(v), json!({"creator": ALICE}), &["$x:a.test"]),
    },
    Case {
        name: "create with a room id of another server (v12: with any room_id)",
        allowed: never,
        run: |v| {
            let t = template(
                Some("!r:b.test"),
                ALICE,
                "m.room.create",
                Some(""),
                json!({"creator": ALICE}),
            );
            let pdu = if v.rules.event_format.require_room_create_room_id {
                build_pdu(v, t, SERVER, &key()).unwrap()
            } else {
                let mut pdu = build_pdu(
                    v,
                    template(None, ALICE, "m.room.create", Some(""), json!({})),
                    SERVER,
                    &key(),
                )
                .unwrap();
                pdu.json.insert(
                    "room_id".into(),
                    ruma::CanonicalJsonValue::String("!r:b.test".into()),
                );
                Pdu::from_json(v, pdu.json, None).unwrap()
            };
            check_auth(v, &pdu, &HashMap::new())
        },
    },
    Case {
        name: "create without creator",
        allowed: |n| n >= 11,
        run: |v| create_verdict(v, own_room_id(v), json!({}), &[]),
    },
    Case {
        name: "create with an unknown room_version",
        allowed: never,
        run: |v| {
            create_verdict(
                v,
                own_room_id(v),
                json!({"creator": ALICE, "room_version": "99"}),
                &[],
            )
        },
    },
    Case {
        name: "create with a known room_version",
        allowed: always,
        run: |v| {
            create_verdict(
                v,
                own_room_id(v),
                json!({"creator": ALICE, "room_version": "1"}),
                &[],
            )
        },
    },
    Case {
        name: "create with additional_creators that are not user ids",
        allowed: |n| n < 12,
        run: |v| {
            create_verdict(
                v,
                own_room_id(v),
                json!({"creator": ALICE, "additional_creators": ["bob"]}),
                &[],
            )
        },
    },
    Case {
        name: "create with valid additional_creators",
        allowed: always,
        run: |v| {
            create_verdict(
                v,
                own_room_id(v),
                json!({"creator": ALICE, "additional_creators": [BOB]}),
                &[],
            )
        },
    },
    // Rule 5.3: joins.
    Case {
        name: "the creator's first join",
        allowed: always,
        run: |v| {
            let mut room = Room::create(v.clone(), ALICE, json!({}));
            member(&mut room, ALICE, ALICE, "join")
        },
    },
    Case {
        name: "another user's join straight after create",
        allowed: never,
        run: |v| {
            let mut room = Room::create(v.clone(), ALICE, json!({}));
            member(&mut room, BOB, BOB, "join")
        },
    },
    Case {
        name: "first join by content.creator who did not send the create event",
        allowed: |n| n <= 10,
        run: |v| {
            let mut room = Room::create(v.clone(), ALICE, json!({"creator": BOB}));
            member(&mut room, BOB, BOB, "join")
        },
    },
    Case {
        name: "join a public room",
        allowed: always,
        run: |v| {
            member(
                &mut room(v, "public", json!({}), json!({}), &[]),
                BOB,
                BOB,
                "join",
            )
        },
    },
    Case {
        name: "join an invite-only room uninvited",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "invite", json!({}), json!({}), &[]),
                BOB,
                BOB,
                "join",
            )
        },
    },
    Case {
        name: "join an invite-only room when invited",
        allowed: always,
        run: |v| {
            let mut room = room(v, "invite", json!({}), json!({}), &[]);
            member(&mut room, ALICE, BOB, "invite")?;
            member(&mut room, BOB, BOB, "join")
        },
    },
    Case {
        name: "join a knock room when invited",
        allowed: |n| n >= 7,
        run: |v| {
            let mut room = room(v, "knock", json!({}), json!({}), &[]);
            member(&mut room, ALICE, BOB, "invite").unwrap();
            member(&mut room, BOB, BOB, "join")
        },
    },
    Case {
        name: "join when banned",
        allowed: never,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({}), &[BOB]);
            member(&mut room, ALICE, BOB, "ban").unwrap();
            member(&mut room, BOB, BOB, "join")
        },
    },
    Case {
        name: "join on behalf of another user",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "public", json!({}), json!({}), &[]),
                ALICE,
                BOB,
                "join",
            )
        },
    },
    Case {
        name: "restricted join authorised by a joined user who may invite",
        allowed: |n| n >= 8,
        run: |v| {
            let mut room = room(v, "restricted", json!({}), json!({}), &[MOD]);
            let content = json!({"membership": "join", "join_authorised_via_users_server": MOD});
            room.try_send(BOB, "m.room.member", Some(BOB), content)
                .map(drop)
        },
    },
    Case {
        name: "restricted join with no authorising user",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "restricted", json!({}), json!({}), &[MOD]),
                BOB,
                BOB,
                "join",
            )
        },
    },
    Case {
        name: "restricted join authorised by a user below the invite level",
        allowed: never,
        run: |v| {
            let mut room = room(v, "restricted", json!({}), json!({"invite": 50}), &[MOD]);
            let content = json!({"membership": "join", "join_authorised_via_users_server": MOD});
            room.try_send(BOB, "m.room.member", Some(BOB), content)
                .map(drop)
        },
    },
    Case {
        name: "restricted join authorised by a user outside the room",
        allowed: never,
        run: |v| {
            let mut room = room(v, "restricted", json!({}), json!({}), &[]);
            let content = json!({"membership": "join", "join_authorised_via_users_server": CAROL});
            room.try_send(BOB, "m.room.member", Some(BOB), content)
                .map(drop)
        },
    },
    Case {
        name: "restricted join when invited",
        allowed: |n| n >= 8,
        run: |v| {
            let mut room = room(v, "restricted", json!({}), json!({}), &[]);
            member(&mut room, ALICE, BOB, "invite").unwrap();
            member(&mut room, BOB, BOB, "join")
        },
    },
    Case {
        name: "knock_restricted join authorised",
        allowed: |n| n >= 10,
        run: |v| {
            let mut room = room(v, "knock_restricted", json!({}), json!({}), &[MOD]);
            let content = json!({"membership": "join", "join_authorised_via_users_server": MOD});
            room.try_send(BOB, "m.room.member", Some(BOB), content)
                .map(drop)
        },
    },
    // Rule 5.7: knocks.
    Case {
        name: "knock on a knock room",
        allowed: |n| n >= 7,
        run: |v| {
            member(
                &mut room(v, "knock", json!({}), json!({}), &[]),
                BOB,
                BOB,
                "knock",
            )
        },
    },
    Case {
        name: "knock on a knock_restricted room",
        allowed: |n| n >= 10,
        run: |v| {
            member(
                &mut room(v, "knock_restricted", json!({}), json!({}), &[]),
                BOB,
                BOB,
                "knock",
            )
        },
    },
    Case {
        name: "knock on a public room",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "public", json!({}), json!({}), &[]),
                BOB,
                BOB,
                "knock",
            )
        },
    },
    Case {
        name: "knock when invited",
        allowed: never,
        run: |v| {
            let mut room = room(v, "knock", json!({}), json!({}), &[]);
            member(&mut room, ALICE, BOB, "invite").unwrap();
            member(&mut room, BOB, BOB, "knock")
        },
    },
    Case {
        name: "knock on behalf of another user",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "knock", json!({}), json!({}), &[]),
                ALICE,
                BOB,
                "knock",
            )
        },
    },
    // Rule 5.4: invites.
    Case {
        name: "invite by a member at the invite level",
        allowed: always,
        run: |v| {
            member(
                &mut room(v, "invite", json!({}), json!({}), &[]),
                ALICE,
                BOB,
                "invite",
            )
        },
    },
    Case {
        name: "invite by a non-member",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "invite", json!({CAROL: 100}), json!({}), &[]),
                CAROL,
                BOB,
                "invite",
            )
        },
    },
    Case {
        name: "invite a banned user",
        allowed: never,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({}), &[BOB]);
            member(&mut room, ALICE, BOB, "ban").unwrap();
            member(&mut room, ALICE, BOB, "invite")
        },
    },
    Case {
        name: "invite a joined user",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "public", json!({}), json!({}), &[BOB]),
                ALICE,
                BOB,
                "invite",
            )
        },
    },
    Case {
        name: "invite below the invite level",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "public", json!({}), json!({"invite": 50}), &[BOB]),
                BOB,
                CAROL,
                "invite",
            )
        },
    },
    Case {
        name: "third-party invite (not supported)",
        allowed: never,
        run: |v| {
            let mut room = room(v, "invite", json!({}), json!({}), &[]);
            let signed = json!({"mxid": BOB, "token": "abc", "signatures": {}});
            let content = json!({"membership": "invite", "third_party_invite": {"display_name": "b", "signed": signed}});
            let verdict = room
                .try_send(ALICE, "m.room.member", Some(BOB), content)
                .map(drop);
            assert!(
                verdict
                    .as_ref()
                    .unwrap_err()
                    .0
                    .contains("third-party invites are not supported")
            );
            verdict
        },
    },
    // Rule 5.5: leaves, kicks, unbans.
    Case {
        name: "leave when joined",
        allowed: always,
        run: |v| {
            member(
                &mut room(v, "public", json!({}), json!({}), &[BOB]),
                BOB,
                BOB,
                "leave",
            )
        },
    },
    Case {
        name: "leave without having joined",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "public", json!({}), json!({}), &[]),
                BOB,
                BOB,
                "leave",
            )
        },
    },
    Case {
        name: "leave after knocking",
        allowed: |n| n >= 7,
        run: |v| {
            let mut room = room(v, "knock", json!({}), json!({}), &[]);
            let knock = room.build(
                BOB,
                "m.room.member",
                Some(BOB),
                json!({"membership": "knock"}),
            );
            room.apply(knock);
            member(&mut room, BOB, BOB, "leave")
        },
    },
    Case {
        name: "kick by a moderator",
        allowed: always,
        run: |v| {
            member(
                &mut room(v, "public", json!({MOD: 50}), json!({}), &[MOD, BOB]),
                MOD,
                BOB,
                "leave",
            )
        },
    },
    Case {
        name: "kick a user of equal level",
        allowed: never,
        run: |v| {
            member(
                &mut room(
                    v,
                    "public",
                    json!({MOD: 50, MOD2: 50}),
                    json!({}),
                    &[MOD, MOD2],
                ),
                MOD,
                MOD2,
                "leave",
            )
        },
    },
    Case {
        name: "kick by a non-member",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "public", json!({MOD: 50}), json!({}), &[BOB]),
                MOD,
                BOB,
                "leave",
            )
        },
    },
    Case {
        name: "unban below the ban level",
        allowed: never,
        run: |v| {
            let mut room = room(
                v,
                "public",
                json!({MOD: 50}),
                json!({"ban": 75}),
                &[MOD, BOB],
            );
            member(&mut room, ALICE, BOB, "ban").unwrap();
            member(&mut room, MOD, BOB, "leave")
        },
    },
    Case {
        name: "unban at the ban and kick levels",
        allowed: always,
        run: |v| {
            let mut room = room(
                v,
                "public",
                json!({MOD: 75}),
                json!({"ban": 75}),
                &[MOD, BOB],
            );
            member(&mut room, ALICE, BOB, "ban").unwrap();
            member(&mut room, MOD, BOB, "leave")
        },
    },
    // Rule 5.6: bans.
    Case {
        name: "ban by a moderator",
        allowed: always,
        run: |v| {
            member(
                &mut room(v, "public", json!({MOD: 50}), json!({}), &[MOD, BOB]),
                MOD,
                BOB,
                "ban",
            )
        },
    },
    Case {
        name: "ban a user above the sender",
        allowed: never,
        run: |v| {
            member(
                &mut room(
                    v,
                    "public",
                    json!({MOD: 50, ADMIN: 100}),
                    json!({}),
                    &[MOD, ADMIN],
                ),
                MOD,
                ADMIN,
                "ban",
            )
        },
    },
    Case {
        name: "ban a user never in the room",
        allowed: always,
        run: |v| {
            member(
                &mut room(v, "public", json!({MOD: 50}), json!({}), &[MOD]),
                MOD,
                CAROL,
                "ban",
            )
        },
    },
    Case {
        name: "unknown membership",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "public", json!({}), json!({}), &[BOB]),
                BOB,
                BOB,
                "dance",
            )
        },
    },
    Case {
        name: "membership event whose state_key is not a user id",
        allowed: never,
        run: |v| {
            member(
                &mut room(v, "public", json!({}), json!({}), &[]),
                ALICE,
                "alice",
                "join",
            )
        },
    },
    Case {
        name: "membership event without membership",
        allowed: never,
        run: |v| {
            room(v, "public", json!({}), json!({}), &[BOB])
                .try_send(BOB, "m.room.member", Some(BOB), json!({}))
                .map(drop)
        },
    },
    // Rules 6–9.
    Case {
        name: "message by a member",
        allowed: always,
        run: |v| {
            room(v, "public", json!({}), json!({}), &[BOB])
                .try_send(BOB, "m.room.message", None, json!({"body": "hi"}))
                .map(drop)
        },
    },
    Case {
        name: "message by a non-member",
        allowed: never,
        run: |v| {
            room(v, "public", json!({}), json!({}), &[])
                .try_send(BOB, "m.room.message", None, json!({"body": "hi"}))
                .map(drop)
        },
    },
    Case {
        name: "m.room.third_party_invite below the invite level",
        allowed: never,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({"invite": 50}), &[BOB]);
            room.try_send(
                BOB,
                "m.room.third_party_invite",
                Some("token"),
                json!({"display_name": "x"}),
            )
            .map(drop)
        },
    },
    Case {
        name: "m.room.third_party_invite at the invite level",
        allowed: always,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({"invite": 50}), &[]);
            room.try_send(
                ALICE,
                "m.room.third_party_invite",
                Some("token"),
                json!({"display_name": "x"}),
            )
            .map(drop)
        },
    },
    Case {
        name: "state event below state_default",
        allowed: never,
        run: |v| {
            room(v, "public", json!({}), json!({}), &[BOB])
                .try_send(BOB, "m.room.name", Some(""), json!({"name": "n"}))
                .map(drop)
        },
    },
    Case {
        name: "state event allowed by an events entry",
        allowed: always,
        run: |v| {
            let mut room = room(
                v,
                "public",
                json!({}),
                json!({"events": {"m.room.name": 0}}),
                &[BOB],
            );
            room.try_send(BOB, "m.room.name", Some(""), json!({"name": "n"}))
                .map(drop)
        },
    },
    Case {
        name: "message below an events entry",
        allowed: never,
        run: |v| {
            let mut room = room(
                v,
                "public",
                json!({}),
                json!({"events": {"m.room.message": 10}}),
                &[BOB],
            );
            room.try_send(BOB, "m.room.message", None, json!({"body": "x"}))
                .map(drop)
        },
    },
    Case {
        name: "state_key of another user",
        allowed: never,
        run: |v| {
            let mut room = room(
                v,
                "public",
                json!({}),
                json!({"events": {"org.example.x": 0}}),
                &[BOB],
            );
            room.try_send(BOB, "org.example.x", Some(ALICE), json!({}))
                .map(drop)
        },
    },
    Case {
        name: "state_key of the sender",
        allowed: always,
        run: |v| {
            let mut room = room(
                v,
                "public",
                json!({}),
                json!({"events": {"org.example.x": 0}}),
                &[BOB],
            );
            room.try_send(BOB, "org.example.x", Some(BOB), json!({}))
                .map(drop)
        },
    },
    // v1–5: m.room.aliases.
    Case {
        name: "aliases for the sender's server by a non-member",
        allowed: |n| n <= 5,
        run: |v| {
            room(v, "public", json!({}), json!({}), &[])
                .try_send(
                    CAROL,
                    "m.room.aliases",
                    Some("b.test"),
                    json!({"aliases": []}),
                )
                .map(drop)
        },
    },
    Case {
        name: "aliases for another server",
        allowed: never,
        run: |v| {
            room(v, "public", json!({}), json!({}), &[])
                .try_send(
                    CAROL,
                    "m.room.aliases",
                    Some("a.test"),
                    json!({"aliases": []}),
                )
                .map(drop)
        },
    },
    // v1–2: redactions.
    Case {
        name: "redaction of the sender's server's event below the redact level",
        allowed: always,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({}), &[BOB]);
            let pdu = room.build_with(
                BOB,
                "m.room.redaction",
                None,
                json!({}),
                Some("$event:a.test"),
            );
            room.try_apply(pdu).map(drop)
        },
    },
    Case {
        name: "redaction of another server's event below the redact level",
        allowed: |n| n >= 3,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({}), &[BOB]);
            let pdu = room.build_with(
                BOB,
                "m.room.redaction",
                None,
                json!({}),
                Some("$event:b.test"),
            );
            room.try_apply(pdu).map(drop)
        },
    },
    Case {
        name: "redaction by a moderator",
        allowed: always,
        run: |v| {
            let mut room = room(v, "public", json!({MOD: 50}), json!({}), &[MOD]);
            let pdu = room.build_with(
                MOD,
                "m.room.redaction",
                None,
                json!({}),
                Some("$event:b.test"),
            );
            room.try_apply(pdu).map(drop)
        },
    },
    // Rule 10: power levels.
    Case {
        name: "power levels with string values",
        allowed: |n| n <= 9,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({}), &[]);
            room.try_send(
                ALICE,
                "m.room.power_levels",
                Some(""),
                power_levels(v, json!({BOB: "10"}), json!({"ban": " +50 "})),
            )
            .map(drop)
        },
    },
    Case {
        name: "power levels with a non-integer string",
        allowed: never,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({}), &[]);
            room.try_send(
                ALICE,
                "m.room.power_levels",
                Some(""),
                power_levels(v, json!({BOB: "ten"}), json!({})),
            )
            .map(drop)
        },
    },
    Case {
        name: "power levels naming a non-user",
        allowed: never,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({}), &[]);
            room.try_send(
                ALICE,
                "m.room.power_levels",
                Some(""),
                power_levels(v, json!({"bob": 10}), json!({})),
            )
            .map(drop)
        },
    },
    Case {
        name: "notifications raised above the sender",
        allowed: |n| n <= 5,
        run: |v| {
            let extra =
                json!({"events": {"m.room.power_levels": 50}, "notifications": {"room": 50}});
            let mut room = room(v, "public", json!({MOD: 50}), extra, &[MOD]);
            let new = power_levels(
                v,
                json!({MOD: 50}),
                json!({"events": {"m.room.power_levels": 50}, "notifications": {"room": 60}}),
            );
            room.try_send(MOD, "m.room.power_levels", Some(""), new)
                .map(drop)
        },
    },
    Case {
        name: "raise another user above the sender",
        allowed: never,
        run: |v| {
            let extra = json!({"events": {"m.room.power_levels": 50}});
            let mut room = room(v, "public", json!({MOD: 50}), extra.clone(), &[MOD]);
            room.try_send(
                MOD,
                "m.room.power_levels",
                Some(""),
                power_levels(v, json!({MOD: 50, BOB: 60}), extra),
            )
            .map(drop)
        },
    },
    Case {
        name: "demote a user of equal level",
        allowed: never,
        run: |v| {
            let extra = json!({"events": {"m.room.power_levels": 50}});
            let mut room = room(
                v,
                "public",
                json!({MOD: 50, MOD2: 50}),
                extra.clone(),
                &[MOD],
            );
            room.try_send(
                MOD,
                "m.room.power_levels",
                Some(""),
                power_levels(v, json!({MOD: 50}), extra),
            )
            .map(drop)
        },
    },
    Case {
        name: "demote oneself",
        allowed: always,
        run: |v| {
            let extra = json!({"events": {"m.room.power_levels": 50}});
            let mut room = room(v, "public", json!({MOD: 50}), extra.clone(), &[MOD]);
            room.try_send(
                MOD,
                "m.room.power_levels",
                Some(""),
                power_levels(v, json!({MOD: 10}), extra),
            )
            .map(drop)
        },
    },
    Case {
        name: "add a ban level above the creator's 100",
        allowed: |n| n >= 12,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({}), &[]);
            room.try_send(
                ALICE,
                "m.room.power_levels",
                Some(""),
                power_levels(v, json!({}), json!({"ban": 101})),
            )
            .map(drop)
        },
    },
    Case {
        name: "list the creator in users",
        allowed: |n| n < 12,
        run: |v| {
            let mut room = room(v, "public", json!({}), json!({}), &[]);
            room.try_send(
                ALICE,
                "m.room.power_levels",
                Some(""),
                json!({"users": {ALICE: 100}}),
            )
            .map(drop)
        },
    },
    Case {
        name: "the creator demotes an admin at 100",
        allowed: |n| n >= 12,
        run: |v| {
            let mut room = room(v, "public", json!({ADMIN: 100}), json!({}), &[ADMIN]);
            room.try_send(
                ALICE,
                "m.room.power_levels",
                Some(""),
                power_levels(v, json!({ADMIN: 0}), json!({})),
            )
            .map(drop)
        },
    },
    Case {
        name: "an additional creator bans an admin",
        allowed: |n| n >= 12,
        run: |v| {
            let mut room = Room::create(v.clone(), ALICE, json!({"additional_creators": [BOB]}));
            room.join(ALICE);
            room.must_send(
                ALICE,
                "m.room.power_levels",
                Some(""),
                power_levels(v, json!({ADMIN: 100}), json!({})),
            );
            room.must_send(
                ALICE,
                "m.room.join_rules",
                Some(""),
                json!({"join_rule": "public"}),
            );
            room.join(ADMIN);
            room.join(BOB);
            member(&mut room, BOB, ADMIN, "ban")
        },
    },
    Case {
        name: "no power levels event: the creator sends state",
        allowed: always,
        run: |v| {
            let mut room = Room::create(v.clone(), ALICE, json!({}));
            room.join(ALICE);
            room.try_send(ALICE, "m.room.name", Some(""), json!({"name": "n"}))
                .map(drop)
        },
    },
    Case {
        name: "no power levels event: another member sends state",
        allowed: never,
        run: |v| {
            let mut room = Room::create(v.clone(), ALICE, json!({}));
            room.join(ALICE);
            room.must_send(
                ALICE,
                "m.room.join_rules",
                Some(""),
                json!({"join_rule": "public"}),
            );
            room.join(BOB);
            room.try_send(BOB, "m.room.name", Some(""), json!({"name": "n"}))
                .map(drop)
        },
    },
    // Rule 4: m.federate.
    Case {
        name: "another server joins a room that does not federate",
        allowed: never,
        run: |v| {
            let mut room = Room::create(v.clone(), ALICE, json!({"m.federate": false}));
            room.join(ALICE);
            room.must_send(
                ALICE,
                "m.room.join_rules",
                Some(""),
                json!({"join_rule": "public"}),
            );
            member(&mut room, CAROL, CAROL, "join")
        },
    },
    Case {
        name: "an event for another room",
        allowed: never,
        run: |v| {
            let room = room(v, "public", json!({}), json!({}), &[]);
            let t = template(
                Some("!other:a.test"),
                ALICE,
                "m.room.message",
                None,
                json!({}),
            );
            let pdu = build_pdu(v, t, SERVER, &key()).unwrap();
            check_auth(v, &pdu, &room.state)
        },
    },
];

#[test]
fn rules_by_version() {
    let mut failures = Vec::new();
    for case in CASES {
        for v in all_versions() {
            let verdict = (case.run)(&v);
            if verdict.is_ok() != (case.allowed)(n(&v)) {
                failures.push(format!("{} (v{}): {verdict:?}", case.name, v.id));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn errors_say_why() {
    let v = version("11");
    let mut room = room(&v, "public", json!({}), json!({}), &[BOB]);
    let err = room
        .try_send(BOB, "m.room.name", Some(""), json!({"name": "n"}))
        .unwrap_err();
    assert_eq!(
        err.0,
        "the sender's power level 0 is below the 50 needed to send m.room.name"
    );
    let err = room
        .try_send(CAROL, "m.room.message", None, json!({}))
        .unwrap_err();
    assert!(err.0.contains("must be in the room"), "{err}");
}

fn auth_events_of<'a>(room: &'a Room, pdu: &Pdu) -> Vec<&'a Pdu> {
    room.events
        .iter()
        .filter(|e| pdu.auth_events.contains(&e.event_id))
        .collect()
}

#[test]
fn auth_events_selection_is_enforced() {
    for v in all_versions() {
        let n = n(&v);
        let mut room = room(&v, "public", json!({}), json!({}), &[BOB]);
        let message = room.build(BOB, "m.room.message", None, json!({}));
        let cited = auth_events_of(&room, &message);
        assert_eq!(check_auth_events(&v, &message, &cited), Ok(()), "v{n}");
        assert_eq!(cited.iter().any(|e| e.kind == "m.room.create"), n < 12);

        // Before v12 the create event must be cited; from v12 it may not be.
        let create = room.create_event().clone();
        let mut without_create = message.clone();
        without_create
            .auth_events
            .retain(|id| *id != create.event_id);
        let verdict =
            check_auth_events(&v, &without_create, &auth_events_of(&room, &without_create));
        assert_eq!(verdict.is_ok(), n >= 12, "v{n} without create: {verdict:?}");
        let mut with_create = without_create.clone();
        with_create.auth_events.push(create.event_id.clone());
        let verdict = check_auth_events(&v, &with_create, &auth_events_of(&room, &with_create));
        assert_eq!(verdict.is_ok(), n < 12, "v{n} with create: {verdict:?}");

        // A type the selection does not name.
        let join_rules = room.state[&("m.room.join_rules".to_owned(), String::new())].clone();
        let mut extra = message.clone();
        extra.auth_events.push(join_rules.event_id.clone());
        assert!(check_auth_events(&v, &extra, &auth_events_of(&room, &extra)).is_err());

        // Two events for the same (type, state_key): Bob's join, then his
        // display name change.
        let old_join = room.state[&("m.room.member".to_owned(), BOB.to_owned())].clone();
        room.must_send(
            BOB,
            "m.room.member",
            Some(BOB),
            json!({"membership": "join", "displayname": "B"}),
        );
        let mut duplicate = room.build(BOB, "m.room.message", None, json!({}));
        duplicate.auth_events.push(old_join.event_id.clone());
        let verdict = check_auth_events(&v, &duplicate, &auth_events_of(&room, &duplicate));
        assert!(verdict.unwrap_err().0.contains("twice"));

        // An auth event that is not given (unknown or rejected).
        assert!(check_auth_events(&v, &message, &[]).is_err());

        // An auth event of another room.
        let mut foreign = room.state[&("m.room.power_levels".to_owned(), String::new())].clone();
        foreign.room_id = "!elsewhere:a.test".to_owned();
        let mut cited = auth_events_of(&room, &message);
        cited.retain(|e| e.kind != "m.room.power_levels");
        cited.push(&foreign);
        assert!(
            check_auth_events(&v, &message, &cited)
                .unwrap_err()
                .0
                .contains("another room")
        );
    }
}

#[test]
fn auth_types_by_membership() {
    let v8 = version("8");
    let v12 = version("12");
    let types = |v: &RoomVersion, content: Value| {
        myelin_events::auth_types_for_event(v, "m.room.member", BOB, Some(CAROL), &content)
    };
    let pairs = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        types(
            &v8,
            json!({"membership": "join", "join_authorised_via_users_server": MOD})
        ),
        pairs(&[
            ("m.room.create", ""),
            ("m.room.power_levels", ""),
            ("m.room.member", BOB),
            ("m.room.member", CAROL),
            ("m.room.join_rules", ""),
            ("m.room.member", MOD),
        ])
    );
    assert_eq!(
        types(
            &version("7"),
            json!({"membership": "join", "join_authorised_via_users_server": MOD})
        )
        .len(),
        5
    );
    assert_eq!(
        types(
            &v12,
            json!({"membership": "invite", "third_party_invite": {"signed": {"token": "t"}}})
        ),
        pairs(&[
            ("m.room.power_levels", ""),
            ("m.room.member", BOB),
            ("m.room.member", CAROL),
            ("m.room.join_rules", ""),
            ("m.room.third_party_invite", "t"),
        ])
    );
    assert_eq!(types(&v12, json!({"membership": "leave"})).len(), 3);
    assert!(
        myelin_events::auth_types_for_event(&v12, "m.room.create", BOB, Some(""), &json!({}))
            .is_empty()
    );
}

#[test]
fn power_level_helpers() {
    assert!(PowerLevel::Infinite > PowerLevel::Int(i64::MAX));
    assert!(PowerLevel::Int(-1) < PowerLevel::Int(0));
    assert_eq!(
        PowerLevel::Infinite.max(PowerLevel::Int(5)),
        PowerLevel::Infinite
    );

    for v in all_versions() {
        let n = n(&v);
        let mut room = Room::create(v.clone(), ALICE, json!({"additional_creators": [BOB]}));
        room.join(ALICE);
        // No power levels event: creators at 100 (infinite from v12).
        let alice = user_power_level(&v, &room.state, ALICE);
        assert_eq!(
            alice,
            if n >= 12 {
                PowerLevel::Infinite
            } else {
                PowerLevel::Int(100)
            },
            "v{n}"
        );
        let bob = user_power_level(&v, &room.state, BOB);
        assert_eq!(
            bob,
            if n >= 12 {
                PowerLevel::Infinite
            } else {
                PowerLevel::Int(0)
            },
            "v{n}"
        );
        room.must_send(
            ALICE,
            "m.room.power_levels",
            Some(""),
            power_levels(&v, json!({MOD: 50}), json!({"users_default": 5})),
        );
        assert_eq!(user_power_level(&v, &room.state, MOD), PowerLevel::Int(50));
        assert_eq!(user_power_level(&v, &room.state, CAROL), PowerLevel::Int(5));
        let expected: Vec<&str> = if n >= 12 {
            vec![ALICE, BOB]
        } else {
            vec![ALICE]
        };
        assert_eq!(creators(&v, room.create_event()), expected, "v{n}");
    }
    assert_eq!(
        user_power_level(&version("12"), &HashMap::new(), ALICE),
        PowerLevel::Int(0)
    );
}
