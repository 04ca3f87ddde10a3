//! PDU building and parsing: event id formats, the v12 room id, reference
//! formats, `redacts` placement, size limits, canonical JSON, signatures.

mod common;

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use common::*;
use myelin_events::pdu::{ID_LENGTH_MAX, PDU_SIZE_MAX, check_canonical};
use myelin_events::redaction::redact;
use myelin_events::{EventError, Pdu, RoomVersion, build_pdu, verify_pdu, verify_pdus};
use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ROOM: &str = "!room:a.test";
const ALICE: &str = "@alice:a.test";

fn message(version: &RoomVersion, content: Value) -> Result<Pdu, EventError> {
    let mut t = template(Some(ROOM), ALICE, "m.room.message", None, content);
    t.prev_events = vec!["$prev:a.test".to_owned()];
    t.auth_events = vec!["$auth:a.test".to_owned()];
    build_pdu(version, t, SERVER, &key())
}

/// The reference hash computed here from the spec's recipe (redact, drop
/// `signatures` and `unsigned`, canonical JSON, SHA-256), independently of
/// the crate's own path through ruma-signatures.
fn spec_reference_hash(version: &RoomVersion, json: &CanonicalJsonObject) -> [u8; 32] {
    let mut redacted =
        ruma::canonical_json::redact(json.clone(), &version.rules.redaction, None).unwrap();
    redacted.remove("signatures");
    redacted.remove("unsigned");
    Sha256::digest(serde_json::to_string(&redacted).unwrap().as_bytes()).into()
}

fn public_keys() -> BTreeMap<String, BTreeMap<String, String>> {
    let key = key();
    BTreeMap::from([(
        SERVER.to_owned(),
        BTreeMap::from([(key.key_id(), key.public_key_base64())]),
    )])
}

#[test]
fn event_ids_follow_each_version_format() {
    for version in all_versions() {
        let pdu = message(&version, json!({"body": "hello", "msgtype": "m.text"})).unwrap();
        let n: u32 = version.id.parse().unwrap();
        if n <= 2 {
            let (local, server) = pdu.event_id[1..].split_once(':').unwrap();
            assert!(pdu.event_id.starts_with('$'));
            assert_eq!(server, SERVER);
            assert_eq!(local.len(), 18);
            assert_eq!(
                pdu.json["event_id"],
                CanonicalJsonValue::String(pdu.event_id.clone())
            );
        } else {
            assert!(
                !pdu.json.contains_key("event_id"),
                "v{n} PDUs carry no event_id"
            );
            let hash = spec_reference_hash(&version, &pdu.json);
            let expected = if n == 3 {
                STANDARD_NO_PAD.encode(hash)
            } else {
                URL_SAFE_NO_PAD.encode(hash)
            };
            assert_eq!(pdu.event_id, format!("${expected}"), "v{n}");
        }
    }
}

#[test]
fn v3_ids_use_standard_base64_and_v4_url_safe() {
    // Find events whose hash has `+` or `/` in standard base64 so the
    // alphabet difference shows.
    let v3 = version("3");
    let v4 = version("4");
    let (mut seen3, mut seen4) = (false, false);
    for i in 0..64 {
        let p3 = message(&v3, json!({"body": i})).unwrap();
        let p4 = message(&v4, json!({"body": i})).unwrap();
        seen3 |= p3.event_id.contains(['+', '/']);
        seen4 |= p4.event_id.contains(['-', '_']);
        assert!(!p3.event_id.contains(['-', '_']));
        assert!(!p4.event_id.contains(['+', '/']));
    }
    assert!(seen3 && seen4);
}

#[test]
fn no_origin_and_version_specific_fields() {
    for version in all_versions() {
        let pdu = message(&version, json!({"body": "x"})).unwrap();
        assert!(!pdu.json.contains_key("origin"));
        let mut keys: Vec<&str> = pdu.json.keys().map(String::as_str).collect();
        keys.retain(|k| *k != "event_id");
        assert_eq!(
            keys,
            [
                "auth_events",
                "content",
                "depth",
                "hashes",
                "origin_server_ts",
                "prev_events",
                "room_id",
                "sender",
                "signatures",
                "type"
            ]
        );
    }
}

#[test]
fn references_are_pairs_in_v1_and_v2_only() {
    for version in all_versions() {
        let pdu = message(&version, json!({})).unwrap();
        let prev = &pdu.json["prev_events"];
        let n: u32 = version.id.parse().unwrap();
        let expected: CanonicalJsonValue = if n <= 2 {
            serde_json::from_value(json!([["$prev:a.test", {}]])).unwrap()
        } else {
            serde_json::from_value(json!(["$prev:a.test"])).unwrap()
        };
        assert_eq!(prev, &expected, "v{n}");
        assert_eq!(pdu.prev_events, ["$prev:a.test"]);
        assert_eq!(pdu.auth_events, ["$auth:a.test"]);
    }
}

#[test]
fn parsing_rejects_the_other_reference_format() {
    for (ours, other) in [("1", "3"), ("3", "1")] {
        let pdu = message(&version(other), json!({})).unwrap();
        let mut json = pdu.json.clone();
        json.insert(
            "event_id".into(),
            CanonicalJsonValue::String("$x:a.test".into()),
        );
        let err = Pdu::from_json(&version(ours), json, Some("$x:a.test")).unwrap_err();
        assert!(matches!(err, EventError::Invalid(_)), "{err}");
    }
}

#[test]
fn v12_create_event_names_the_room() {
    let v12 = version("12");
    let create = build_pdu(
        &v12,
        template(
            None,
            ALICE,
            "m.room.create",
            Some(""),
            json!({"room_version": "12"}),
        ),
        SERVER,
        &key(),
    )
    .unwrap();
    assert!(!create.json.contains_key("room_id"));
    let hash = URL_SAFE_NO_PAD.encode(spec_reference_hash(&v12, &create.json));
    assert_eq!(create.event_id, format!("${hash}"));
    assert_eq!(create.room_id, format!("!{hash}"));
    // Parsed back, the room id is derived again.
    let parsed = Pdu::from_json(&v12, create.json.clone(), None).unwrap();
    assert_eq!(parsed, create);
    assert_eq!(create.client_event()["room_id"], json!(format!("!{hash}")));
}

#[test]
fn room_id_presence_is_checked_against_the_version() {
    let create = |v: &str, room: Option<&str>| {
        build_pdu(
            &version(v),
            template(
                room,
                ALICE,
                "m.room.create",
                Some(""),
                json!({"creator": ALICE}),
            ),
            SERVER,
            &key(),
        )
    };
    assert!(matches!(
        create("12", Some(ROOM)),
        Err(EventError::Invalid(_))
    ));
    assert!(matches!(create("11", None), Err(EventError::Invalid(_))));
    assert!(create("11", Some(ROOM)).is_ok());
    let message = build_pdu(
        &version("12"),
        template(None, ALICE, "m.room.message", None, json!({})),
        SERVER,
        &key(),
    );
    assert!(matches!(message, Err(EventError::Invalid(_))));
}

#[test]
fn redacts_moves_into_content_from_v11() {
    for version in all_versions() {
        let mut t = template(
            Some(ROOM),
            ALICE,
            "m.room.redaction",
            None,
            json!({"reason": "spam"}),
        );
        t.redacts = Some("$target:a.test".to_owned());
        let pdu = build_pdu(&version, t, SERVER, &key()).unwrap();
        let n: u32 = version.id.parse().unwrap();
        assert_eq!(pdu.redacts.as_deref(), Some("$target:a.test"));
        if n <= 10 {
            assert_eq!(
                pdu.json["redacts"],
                CanonicalJsonValue::String("$target:a.test".into())
            );
            assert!(pdu.content.get("redacts").is_none());
        } else {
            assert!(!pdu.json.contains_key("redacts"));
            assert_eq!(pdu.content["redacts"], "$target:a.test");
        }
        // Clients get both forms in every version.
        let client = pdu.client_event();
        assert_eq!(client["redacts"], "$target:a.test");
        assert_eq!(client["content"]["redacts"], "$target:a.test");
        assert_eq!(client["content"]["reason"], "spam");
    }
}

#[test]
fn client_event_has_the_client_fields() {
    let v = version("10");
    let state = build_pdu(
        &v,
        template(
            Some(ROOM),
            ALICE,
            "m.room.name",
            Some(""),
            json!({"name": "N"}),
        ),
        SERVER,
        &key(),
    )
    .unwrap();
    let client = state.client_event();
    let keys: Vec<&str> = client.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "content",
            "event_id",
            "origin_server_ts",
            "room_id",
            "sender",
            "state_key",
            "type"
        ]
    );
    assert_eq!(client["content"], json!({"name": "N"}));
    assert_eq!(client["origin_server_ts"], json!(1_700_000_000_000_i64));
    let msg = message(&v, json!({"body": "b"})).unwrap();
    assert!(!msg.client_event().contains_key("state_key"));
    assert!(!msg.is_state());
    assert!(state.is_state());
}

#[test]
fn a_70_kb_event_is_too_large() {
    for version in all_versions() {
        let big = "x".repeat(70 * 1024);
        let err = message(&version, json!({"body": big})).unwrap_err();
        assert!(matches!(err, EventError::TooLarge(_)), "{err}");
    }
}

#[test]
fn the_size_limit_counts_the_signed_pdu_to_the_byte() {
    for id in ["1", "4", "12"] {
        let v = version(id);
        let base = message(&v, json!({"body": ""}))
            .unwrap()
            .to_canonical_string()
            .len();
        let fill = PDU_SIZE_MAX - base;
        let exact = message(&v, json!({"body": "y".repeat(fill)})).unwrap();
        assert_eq!(exact.to_canonical_string().len(), PDU_SIZE_MAX);
        let over = message(&v, json!({"body": "y".repeat(fill + 1)})).unwrap_err();
        assert!(matches!(over, EventError::TooLarge(_)), "v{id}: {over}");
        // Parsing enforces the same limit.
        let mut json = exact.json.clone();
        json.insert("extra".into(), CanonicalJsonValue::String("z".into()));
        assert!(matches!(
            Pdu::from_json(&v, json, Some(&exact.event_id)),
            Err(EventError::TooLarge(_))
        ));
    }
}

#[test]
fn ids_over_255_bytes_are_too_large() {
    let v = version("10");
    let long = "k".repeat(300);
    let state = build_pdu(
        &v,
        template(Some(ROOM), ALICE, "m.room.name", Some(&long), json!({})),
        SERVER,
        &key(),
    );
    assert!(matches!(state, Err(EventError::TooLarge(_))));
    let at_limit = "k".repeat(ID_LENGTH_MAX);
    assert!(
        build_pdu(
            &v,
            template(Some(ROOM), ALICE, "m.room.name", Some(&at_limit), json!({})),
            SERVER,
            &key()
        )
        .is_ok()
    );
    let long_sender = format!("@{}:a.test", "u".repeat(260));
    let sender = build_pdu(
        &v,
        template(Some(ROOM), &long_sender, "m.room.message", None, json!({})),
        SERVER,
        &key(),
    );
    assert!(matches!(sender, Err(EventError::TooLarge(_))));
    let long_type = "t".repeat(256);
    let kind = build_pdu(
        &v,
        template(Some(ROOM), ALICE, &long_type, None, json!({})),
        SERVER,
        &key(),
    );
    assert!(matches!(kind, Err(EventError::TooLarge(_))));
    let long_room = format!("!{}:a.test", "r".repeat(256));
    let room = build_pdu(
        &v,
        template(Some(&long_room), ALICE, "m.room.message", None, json!({})),
        SERVER,
        &key(),
    );
    assert!(matches!(room, Err(EventError::TooLarge(_))));
}

#[test]
fn canonical_json_rejects_floats_and_big_integers() {
    let limit = (1_i64 << 53) - 1;
    assert!(
        check_canonical(&json!({"a": [1, -2, {"b": limit}], "c": -limit, "d": null, "e": true}))
            .is_ok()
    );
    for bad in [
        json!(1.5),
        json!({"a": 1.0}),
        json!([[0.1]]),
        json!(limit + 1),
        json!(-limit - 1),
        json!(u64::MAX),
        json!({"deep": {"deeper": [1e3]}}),
    ] {
        assert!(
            matches!(check_canonical(&bad), Err(EventError::Invalid(_))),
            "{bad}"
        );
    }
    let v = version("10");
    assert!(matches!(
        message(&v, json!({"n": 2.5})),
        Err(EventError::Invalid(_))
    ));
    assert!(matches!(
        message(&v, json!({"n": 1_i64 << 53})),
        Err(EventError::Invalid(_))
    ));
    let mut t = template(Some(ROOM), ALICE, "m.room.message", None, json!({}));
    t.origin_server_ts = 1 << 53;
    assert!(matches!(
        build_pdu(&v, t, SERVER, &key()),
        Err(EventError::Invalid(_))
    ));
    // Stored text with a float or a too large integer does not parse.
    let good = message(&v, json!({"n": 1})).unwrap();
    for (from, to) in [
        ("\"n\":1", "\"n\":1.0"),
        ("\"n\":1", "\"n\":9007199254740992"),
    ] {
        let text = good.to_canonical_string().replace(from, to);
        assert!(
            matches!(
                Pdu::from_json_str(&v, &text, &good.event_id),
                Err(EventError::Invalid(_))
            ),
            "{to}"
        );
    }
}

#[test]
fn stored_text_round_trips() {
    for version in all_versions() {
        let pdu = message(&version, json!({"body": "é \u{1F600} \"q\" \\ \n"})).unwrap();
        let text = pdu.to_canonical_string();
        assert!(!text.contains(": ") && !text.contains(", "));
        let parsed = Pdu::from_json_str(&version, &text, &pdu.event_id).unwrap();
        assert_eq!(parsed, pdu);
        // Without the id, v3+ recomputes the same one.
        assert_eq!(
            Pdu::from_json(&version, pdu.json.clone(), None)
                .unwrap()
                .event_id,
            pdu.event_id
        );
    }
    // v1-2 ids are inside the JSON: a different id is refused.
    let pdu = message(&version("1"), json!({})).unwrap();
    assert!(matches!(
        Pdu::from_json_str(&version("1"), &pdu.to_canonical_string(), "$other:a.test"),
        Err(EventError::Invalid(_))
    ));
}

#[test]
fn parsing_checks_field_types() {
    let v = version("10");
    let pdu = message(&v, json!({})).unwrap();
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("type", None),
        ("type", Some(json!(1))),
        ("sender", Some(json!("not-a-user"))),
        ("content", Some(json!("text"))),
        ("depth", Some(json!(-1))),
        ("depth", Some(json!("1"))),
        ("origin_server_ts", None),
        ("hashes", None),
        ("signatures", Some(json!([]))),
        ("room_id", None),
        ("room_id", Some(json!("room"))),
        ("state_key", Some(json!(5))),
        ("prev_events", Some(json!("x"))),
        (
            "auth_events",
            Some(json!([
                "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11"
            ])),
        ),
    ];
    for (field, value) in cases {
        let mut json = pdu.json.clone();
        match &value {
            Some(value) => json.insert(
                field.to_owned(),
                serde_json::from_value(value.clone()).unwrap(),
            ),
            None => json.remove(field),
        };
        assert!(
            matches!(Pdu::from_json(&v, json, None), Err(EventError::Invalid(_))),
            "{field} = {value:?}"
        );
    }
    let mut t = template(Some(ROOM), ALICE, "m.room.message", None, json!({}));
    t.prev_events = (0..21).map(|i| format!("$p{i}")).collect();
    assert!(matches!(
        build_pdu(&v, t, SERVER, &key()),
        Err(EventError::Invalid(_))
    ));
}

#[test]
fn built_events_verify_and_tampered_ones_do_not() {
    for version in all_versions() {
        let pdu = message(&version, json!({"body": "signed"})).unwrap();
        assert_eq!(
            verify_pdu(&version, &pdu.json, &public_keys()),
            Ok(()),
            "v{}",
            version.id
        );

        // Altered content: the signatures (over the redacted form) still
        // hold, the content hash does not.
        let mut json = pdu.json.clone();
        json.insert(
            "content".into(),
            serde_json::from_value(json!({"body": "forged"})).unwrap(),
        );
        assert_eq!(
            verify_pdu(&version, &json, &public_keys()),
            Err(EventError::ContentHashMismatch)
        );

        // Altered signed fields break the signature.
        let mut json = pdu.json.clone();
        json.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(5_u32.into()),
        );
        assert!(matches!(
            verify_pdu(&version, &json, &public_keys()),
            Err(EventError::Unverified(_))
        ));

        // Another key, or no key for the server, fails.
        let other = myelin_core::signing_key::SigningKey::from_seed("test".into(), [9; 32]);
        let wrong = BTreeMap::from([(
            SERVER.to_owned(),
            BTreeMap::from([(other.key_id(), other.public_key_base64())]),
        )]);
        assert!(matches!(
            verify_pdu(&version, &pdu.json, &wrong),
            Err(EventError::Unverified(_))
        ));
        assert!(matches!(
            verify_pdu(&version, &pdu.json, &BTreeMap::new()),
            Err(EventError::Unverified(_))
        ));

        // A redacted event keeps valid signatures.
        let redacted = redact(&version, &pdu).unwrap();
        assert_eq!(
            verify_pdu(&version, &redacted.json, &public_keys()),
            Err(EventError::ContentHashMismatch)
        );
    }
}

#[test]
fn a_batch_verifies_each_pdu_in_order() {
    let version = RoomVersion::parse("11").unwrap();
    let mut batch: Vec<_> = (0..40)
        .map(|i| {
            message(&version, json!({"body": format!("m{i}")}))
                .unwrap()
                .json
        })
        .collect();
    batch[7].insert(
        "content".into(),
        serde_json::from_value(json!({"body": "forged"})).unwrap(),
    );
    batch[23].insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(5_u32.into()),
    );
    let results = verify_pdus(&version, &batch, &public_keys());
    assert_eq!(results.len(), 40);
    for (i, result) in results.iter().enumerate() {
        match i {
            7 => assert_eq!(result, &Err(EventError::ContentHashMismatch)),
            23 => assert!(matches!(result, Err(EventError::Unverified(_)))),
            _ => assert_eq!(result, &Ok(()), "pdu {i}"),
        }
    }
    assert!(verify_pdus(&version, &[], &public_keys()).is_empty());
}

#[test]
fn restricted_joins_need_the_authorising_servers_signature_from_v8() {
    for version in all_versions() {
        let content =
            json!({"membership": "join", "join_authorised_via_users_server": "@mod:b.test"});
        let pdu = build_pdu(
            &version,
            template(Some(ROOM), ALICE, "m.room.member", Some(ALICE), content),
            SERVER,
            &key(),
        )
        .unwrap();
        let verdict = verify_pdu(&version, &pdu.json, &public_keys());
        let n: u32 = version.id.parse().unwrap();
        if n >= 8 {
            assert!(matches!(verdict, Err(EventError::Unverified(_))), "v{n}");
        } else {
            assert_eq!(verdict, Ok(()), "v{n}");
        }
    }
}
