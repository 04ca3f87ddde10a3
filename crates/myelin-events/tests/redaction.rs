//! Redaction vectors per room version, written out by hand from the spec's
//! redaction algorithm of each version (v1, v6, v8, v9, v11 pages).

mod common;

use common::*;
use myelin_events::redaction::redact;
use myelin_events::{Pdu, RoomVersion, build_pdu};
use ruma::CanonicalJsonObject;
use serde_json::{Value, json};

const ROOM: &str = "!room:a.test";
const ALICE: &str = "@alice:a.test";

fn n(version: &RoomVersion) -> u32 {
    version.id.parse().unwrap()
}

fn redacted_content(
    version: &RoomVersion,
    kind: &str,
    state_key: Option<&str>,
    content: Value,
) -> Value {
    let pdu = build_pdu(
        version,
        template(Some(ROOM), ALICE, kind, state_key, content),
        SERVER,
        &key(),
    )
    .unwrap();
    let redacted = redact(version, &pdu).unwrap();
    assert_eq!(redacted.event_id, pdu.event_id);
    assert_eq!(redacted.room_id, pdu.room_id);
    assert_eq!(
        redacted.content,
        Value::from(ruma::CanonicalJsonValue::Object(
            match &redacted.json["content"] {
                ruma::CanonicalJsonValue::Object(c) => c.clone(),
                _ => panic!("content"),
            }
        ))
    );
    redacted.content
}

#[test]
fn member() {
    let content = json!({
        "membership": "join",
        "displayname": "Alice",
        "avatar_url": "mxc://a.test/x",
        "join_authorised_via_users_server": "@mod:a.test",
        "third_party_invite": {"display_name": "a…", "signed": {"mxid": ALICE, "token": "t", "signatures": {}}},
    });
    for v in all_versions() {
        let expected = match n(&v) {
            1..=8 => json!({"membership": "join"}),
            9 | 10 => {
                json!({"membership": "join", "join_authorised_via_users_server": "@mod:a.test"})
            }
            _ => json!({
                "membership": "join",
                "join_authorised_via_users_server": "@mod:a.test",
                "third_party_invite": {"signed": {"mxid": ALICE, "token": "t", "signatures": {}}},
            }),
        };
        assert_eq!(
            redacted_content(&v, "m.room.member", Some(ALICE), content.clone()),
            expected,
            "v{}",
            v.id
        );
    }
}

#[test]
fn power_levels() {
    let content = json!({
        "ban": 50, "events": {"m.room.name": 50}, "events_default": 0, "invite": 0, "kick": 50,
        "notifications": {"room": 50}, "redact": 50, "state_default": 50,
        "users": {ALICE: 100}, "users_default": 0, "historical": 100,
    });
    let classic = json!({
        "ban": 50, "events": {"m.room.name": 50}, "events_default": 0, "kick": 50,
        "redact": 50, "state_default": 50, "users": {ALICE: 100}, "users_default": 0,
    });
    for v in all_versions() {
        let mut expected = classic.clone();
        if n(&v) >= 11 {
            expected["invite"] = json!(0);
        }
        assert_eq!(
            redacted_content(&v, "m.room.power_levels", Some(""), content.clone()),
            expected,
            "v{}",
            v.id
        );
    }
}

#[test]
fn create() {
    for v in all_versions() {
        let content = json!({
            "creator": ALICE, "room_version": v.id, "m.federate": false,
            "predecessor": {"room_id": "!old:a.test"}, "type": "m.space",
        });
        let expected = if n(&v) <= 10 {
            json!({"creator": ALICE})
        } else {
            content.clone()
        };
        let room = (n(&v) < 12).then_some(ROOM);
        let pdu = build_pdu(
            &v,
            template(room, ALICE, "m.room.create", Some(""), content),
            SERVER,
            &key(),
        )
        .unwrap();
        let redacted = redact(&v, &pdu).unwrap();
        assert_eq!(redacted.content, expected, "v{}", v.id);
        assert_eq!(redacted.room_id, pdu.room_id);
    }
}

#[test]
fn join_rules_with_allow() {
    let allow = json!([{"type": "m.room_membership", "room_id": "!space:a.test"}]);
    let content = json!({"join_rule": "restricted", "allow": allow, "extra": 1});
    for v in all_versions() {
        let expected = if n(&v) >= 8 {
            json!({"join_rule": "restricted", "allow": allow})
        } else {
            json!({"join_rule": "restricted"})
        };
        assert_eq!(
            redacted_content(&v, "m.room.join_rules", Some(""), content.clone()),
            expected,
            "v{}",
            v.id
        );
    }
}

#[test]
fn redaction() {
    for v in all_versions() {
        let mut t = template(
            Some(ROOM),
            ALICE,
            "m.room.redaction",
            None,
            json!({"reason": "spam"}),
        );
        t.redacts = Some("$target:a.test".to_owned());
        let pdu = build_pdu(&v, t, SERVER, &key()).unwrap();
        let redacted = redact(&v, &pdu).unwrap();
        if n(&v) <= 10 {
            // The top-level `redacts` is not among the kept keys.
            assert_eq!(redacted.content, json!({}), "v{}", v.id);
            assert_eq!(redacted.redacts, None);
            assert!(!redacted.json.contains_key("redacts"));
        } else {
            assert_eq!(
                redacted.content,
                json!({"redacts": "$target:a.test"}),
                "v{}",
                v.id
            );
            assert_eq!(redacted.redacts.as_deref(), Some("$target:a.test"));
        }
    }
}

#[test]
fn history_visibility() {
    for v in all_versions() {
        let content = json!({"history_visibility": "shared", "other": true});
        assert_eq!(
            redacted_content(&v, "m.room.history_visibility", Some(""), content),
            json!({"history_visibility": "shared"})
        );
    }
}

#[test]
fn aliases_until_v5_only() {
    for v in all_versions() {
        let content = json!({"aliases": ["#a:a.test"], "other": 1});
        let expected = if n(&v) <= 5 {
            json!({"aliases": ["#a:a.test"]})
        } else {
            json!({})
        };
        assert_eq!(
            redacted_content(&v, "m.room.aliases", Some(SERVER), content),
            expected,
            "v{}",
            v.id
        );
    }
}

#[test]
fn message_and_other_types_lose_all_content() {
    for v in all_versions() {
        assert_eq!(
            redacted_content(
                &v,
                "m.room.message",
                None,
                json!({"body": "hi", "msgtype": "m.text"})
            ),
            json!({})
        );
        assert_eq!(
            redacted_content(&v, "m.room.name", Some(""), json!({"name": "N"})),
            json!({})
        );
        assert_eq!(
            redacted_content(&v, "m.room.topic", Some(""), json!({"topic": "T"})),
            json!({})
        );
    }
}

/// Top-level keys: `origin`, `membership` and `prev_state` are kept until
/// v10 and dropped from v11; unknown keys and `unsigned` always go.
#[test]
fn top_level_keys() {
    for v in all_versions() {
        let pdu = build_pdu(
            &v,
            template(
                Some(ROOM),
                ALICE,
                "m.room.message",
                None,
                json!({"body": "x"}),
            ),
            SERVER,
            &key(),
        )
        .unwrap();
        let mut json: CanonicalJsonObject = pdu.json.clone();
        for (key, value) in [
            ("origin", json!(SERVER)),
            ("membership", json!("join")),
            ("prev_state", json!([])),
            ("unsigned", json!({"age": 1})),
            ("custom", json!(1)),
        ] {
            json.insert(key.to_owned(), serde_json::from_value(value).unwrap());
        }
        let with_extras = Pdu::from_json(&v, json, Some(&pdu.event_id)).unwrap();
        let redacted = redact(&v, &with_extras).unwrap();
        let mut keys: Vec<&str> = redacted.json.keys().map(String::as_str).collect();
        keys.retain(|k| *k != "event_id");
        let mut expected = vec![
            "auth_events",
            "content",
            "depth",
            "hashes",
            "origin_server_ts",
            "prev_events",
            "room_id",
            "sender",
            "signatures",
            "type",
        ];
        if n(&v) <= 10 {
            expected.extend(["membership", "origin", "prev_state"]);
            expected.sort_unstable();
        }
        assert_eq!(keys, expected, "v{}", v.id);
        assert_eq!(redacted.event_id, pdu.event_id);
        // The reference hash ignores what redaction removes: same id.
        if n(&v) >= 3 {
            let hash_id = |json: &CanonicalJsonObject| {
                Pdu::from_json(&v, json.clone(), None).unwrap().event_id
            };
            assert_eq!(hash_id(&redacted.json), hash_id(&with_extras.json));
        }
    }
}
