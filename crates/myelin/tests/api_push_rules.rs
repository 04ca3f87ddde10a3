//! Push rules over HTTP: the default ruleset, user rules and their order,
//! enabling and re-acting default rules, delivery through `/sync`'s account
//! data, and the error cases.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PR: &str = "/_matrix/client/v3/pushrules";

fn ids(rules: &Value) -> Vec<String> {
    rules
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["rule_id"].as_str().expect("rule_id").to_owned())
        .collect()
}

async fn default_ruleset_shape(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let tok = Some(alice.access_token.as_str());

    let (status, body) = server.get(&format!("{PR}/"), tok).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let global = &body["global"];
    let overrides = ids(&global["override"]);
    assert_eq!(overrides[0], ".m.rule.master");
    for id in [
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ] {
        assert!(overrides.contains(&id.to_owned()), "missing {id}");
    }
    assert_eq!(global["override"][0]["enabled"], json!(false));
    assert_eq!(global["override"][0]["default"], json!(true));
    let invite = &global["override"][2];
    assert_eq!(invite["conditions"][2]["pattern"], json!(alice.user_id));
    assert_eq!(ids(&global["content"]), [".m.rule.contains_user_name"]);
    assert_eq!(global["content"][0]["pattern"], json!("alice"));
    assert_eq!(
        ids(&global["underride"]),
        [
            ".m.rule.call",
            ".m.rule.encrypted_room_one_to_one",
            ".m.rule.room_one_to_one",
            ".m.rule.message",
            ".m.rule.encrypted",
        ]
    );
    assert_eq!(global["room"], json!([]));
    assert_eq!(global["sender"], json!([]));

    let (status, only_global) = server.get(&format!("{PR}/global/"), tok).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&only_global, global);

    let (status, rule) = server
        .get(&format!("{PR}/global/underride/.m.rule.message"), tok)
        .await;
    assert_eq!(status, StatusCode::OK, "{rule}");
    assert_eq!(rule["actions"], json!(["notify"]));
    assert_eq!(rule["conditions"][0]["pattern"], json!("m.room.message"));

    assert_error(
        &server.get(&format!("{PR}/"), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    server.stop().await;
}

async fn custom_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let tok = Some(alice.access_token.as_str());

    let cake = json!({ "pattern": "cake", "actions": ["notify", { "set_tweak": "sound", "value": "cakealarm.wav" }] });
    let (status, body) = server
        .put(&format!("{PR}/global/content/nocake"), tok, cake)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, rule) = server
        .get(&format!("{PR}/global/content/nocake"), tok)
        .await;
    assert_eq!(status, StatusCode::OK, "{rule}");
    assert_eq!(
        rule,
        json!({
            "rule_id": "nocake", "default": false, "enabled": true, "pattern": "cake",
            "actions": ["notify", { "set_tweak": "sound", "value": "cakealarm.wav" }],
        })
    );
    // User rules rank above the defaults of their kind.
    let (_, all) = server.get(&format!("{PR}/"), tok).await;
    assert_eq!(
        ids(&all["global"]["content"]),
        ["nocake", ".m.rule.contains_user_name"]
    );

    // Override rules: a new one is the most important user rule, below master.
    let beer = json!({
        "conditions": [
            { "kind": "event_match", "key": "content.body", "pattern": "beer" },
            { "kind": "room_member_count", "is": "<=10" },
        ],
        "actions": ["notify", { "set_tweak": "sound", "value": "beeroclock.wav" }],
    });
    for id in ["a", "b"] {
        let (status, body) = server
            .put(&format!("{PR}/global/override/{id}"), tok, beer.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, all) = server.get(&format!("{PR}/"), tok).await;
    assert_eq!(
        ids(&all["global"]["override"])[..3],
        [".m.rule.master", "b", "a"]
    );

    // before / after.
    let (status, body) = server
        .put(
            &format!("{PR}/global/override/c?after=a"),
            tok,
            beer.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .put(
            &format!("{PR}/global/override/d?before=b"),
            tok,
            beer.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Moving an existing rule.
    let (status, body) = server
        .put(
            &format!("{PR}/global/override/b?after=c"),
            tok,
            beer.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, all) = server.get(&format!("{PR}/"), tok).await;
    assert_eq!(
        ids(&all["global"]["override"])[..6],
        [
            ".m.rule.master",
            "d",
            "a",
            "c",
            "b",
            ".m.rule.suppress_notices"
        ]
    );
    // Relative to a server-default or unknown rule: 400.
    assert_eq!(
        server
            .put(
                &format!("{PR}/global/override/e?before=.m.rule.suppress_notices"),
                tok,
                beer.clone()
            )
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server
            .put(
                &format!("{PR}/global/override/e?after=nope"),
                tok,
                beer.clone()
            )
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    // Room and sender rules.
    let room_rule = format!("{PR}/global/room/%21dj234r78wl45Gh4D%3Amatrix.org");
    let (status, body) = server.put(&room_rule, tok, json!({ "actions": [] })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, rule) = server.get(&room_rule, tok).await;
    assert_eq!(rule["rule_id"], json!("!dj234r78wl45Gh4D:matrix.org"));
    assert_eq!(rule["actions"], json!([]));

    // The change reaches /sync as the account data m.push_rules.
    let (status, sync) = server.get("/_matrix/client/v3/sync?timeout=0", tok).await;
    assert_eq!(status, StatusCode::OK);
    let push_rules = sync["account_data"]["events"]
        .as_array()
        .expect("account data")
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("m.push_rules in /sync");
    assert_eq!(
        ids(&push_rules["content"]["global"]["content"]),
        ["nocake", ".m.rule.contains_user_name"]
    );

    // Delete.
    let (status, _) = server
        .delete(&format!("{PR}/global/content/nocake"), tok, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &server
            .get(&format!("{PR}/global/content/nocake"), tok)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .delete(&format!("{PR}/global/content/nocake"), tok, None)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Server-default rules cannot be deleted, nor created by clients.
    assert_error(
        &server
            .delete(&format!("{PR}/global/override/.m.rule.master"), tok, None)
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .put(&format!("{PR}/global/override/.mine"), tok, beer.clone())
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    // Another user sees only the defaults.
    let bob = server.register("bob", "password-bob").await;
    let (_, all) = server.get(&format!("{PR}/"), Some(&bob.access_token)).await;
    assert_eq!(
        ids(&all["global"]["override"])[1],
        ".m.rule.suppress_notices"
    );
    assert_eq!(all["global"]["room"], json!([]));
    server.stop().await;
}

async fn enabled_and_actions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let tok = Some(alice.access_token.as_str());
    let master = format!("{PR}/global/override/.m.rule.master");

    let (status, body) = server.get(&format!("{master}/enabled"), tok).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "enabled": false }));
    let (status, _) = server
        .put(
            &format!("{master}/enabled"),
            tok,
            json!({ "enabled": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = server.get(&format!("{master}/enabled"), tok).await;
    assert_eq!(body, json!({ "enabled": true }));
    let (_, rule) = server.get(&master, tok).await;
    assert_eq!(rule["enabled"], json!(true));
    assert_eq!(rule["default"], json!(true));

    let message = format!("{PR}/global/underride/.m.rule.message");
    let (_, body) = server.get(&format!("{message}/actions"), tok).await;
    assert_eq!(body, json!({ "actions": ["notify"] }));
    let new_actions = json!(["notify", { "set_tweak": "highlight" }]);
    let (status, body) = server
        .put(
            &format!("{message}/actions"),
            tok,
            json!({ "actions": new_actions }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = server.get(&format!("{message}/actions"), tok).await;
    assert_eq!(body, json!({ "actions": new_actions }));
    // The overrides keep the rule's place among the defaults.
    let (_, all) = server.get(&format!("{PR}/"), tok).await;
    assert_eq!(ids(&all["global"]["underride"])[3], ".m.rule.message");
    assert_eq!(all["global"]["override"][0]["enabled"], json!(true));

    // A user rule keeps `enabled` when it is replaced.
    let (status, _) = server
        .put(
            &format!("{PR}/global/sender/%40spam%3Aexample.org"),
            tok,
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let sender = format!("{PR}/global/sender/%40spam%3Aexample.org");
    server
        .put(
            &format!("{sender}/enabled"),
            tok,
            json!({ "enabled": false }),
        )
        .await;
    server
        .put(&sender, tok, json!({ "actions": ["notify"] }))
        .await;
    let (_, rule) = server.get(&sender, tok).await;
    assert_eq!(rule["enabled"], json!(false));
    assert_eq!(rule["actions"], json!(["notify"]));

    // Bad input.
    assert_error(
        &server
            .put(
                &format!("{master}/enabled"),
                tok,
                json!({ "enabled": "yes" }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_eq!(
        server
            .put(
                &format!("{message}/actions"),
                tok,
                json!({ "actions": ["explode"] })
            )
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server
            .put(&format!("{message}/actions"), tok, json!({}))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    server.stop().await;
}

async fn unknown_rules_and_bad_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let tok = Some(alice.access_token.as_str());

    for path in [
        format!("{PR}/global/override/nope"),
        format!("{PR}/global/override/nope/enabled"),
        format!("{PR}/global/override/nope/actions"),
        // Right id, wrong kind.
        format!("{PR}/global/content/.m.rule.master"),
    ] {
        assert_error(
            &server.get(&path, tok).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
    assert_error(
        &server
            .put(
                &format!("{PR}/global/override/nope/enabled"),
                tok,
                json!({ "enabled": true }),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(
                &format!("{PR}/global/override/nope/actions"),
                tok,
                json!({ "actions": [] }),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Unknown kind or scope.
    assert_eq!(
        server.get(&format!("{PR}/global/weird/x"), tok).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server.get(&format!("{PR}/device/override/x"), tok).await.0,
        StatusCode::BAD_REQUEST
    );
    // A content rule needs a pattern; every rule needs actions.
    assert_error(
        &server
            .put(
                &format!("{PR}/global/content/x"),
                tok,
                json!({ "actions": [] }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    assert_eq!(
        server
            .put(
                &format!("{PR}/global/override/x"),
                tok,
                json!({ "conditions": [] })
            )
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_error(
        &server
            .put(
                &format!("{PR}/global/override/x"),
                tok,
                json!({ "actions": [], "conditions": "no" }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    // Slashes and backslashes are refused.
    assert_eq!(
        server
            .put(
                &format!("{PR}/global/override/a%5Cb"),
                tok,
                json!({ "actions": [] })
            )
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    // Clients still cannot write m.push_rules directly.
    let (status, _) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.push_rules",
                alice.user_id
            ),
            tok,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await;
}

/// A user who never changed a rule still gets the defaults in their
/// initial sync, where clients look for them.
async fn initial_sync_carries_default_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let (status, body) = server
        .get("/_matrix/client/v3/sync", Some(&alice.access_token))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let events = body["account_data"]["events"]
        .as_array()
        .expect("account data events");
    let rules = events
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("m.push_rules in the initial sync");
    let overrides = rules["content"]["global"]["override"]
        .as_array()
        .expect("override rules");
    assert_eq!(overrides[0]["rule_id"], ".m.rule.master");
    // An incremental sync does not repeat them.
    let since = body["next_batch"].as_str().unwrap();
    let (_, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
            Some(&alice.access_token),
        )
        .await;
    let again = body["account_data"]["events"]
        .as_array()
        .map_or(0, |e| e.len());
    assert_eq!(again, 0, "{body}");
    server.stop().await;
}

backend_tests!(
    initial_sync_carries_default_rules,
    default_ruleset_shape,
    custom_rules,
    enabled_and_actions,
    unknown_rules_and_bad_input
);
