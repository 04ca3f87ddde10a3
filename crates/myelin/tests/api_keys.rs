//! End-to-end encryption keys over HTTP: uploading signed device keys,
//! one-time and fallback keys, querying and claiming them (each one-time
//! key once, even under concurrent claims), what is refused, the counts in
//! `/sync`, and `/keys/changes`.

mod common;

use std::collections::BTreeSet;

use common::*;
use ed25519_dalek::{Signer as _, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

backend_tests!(
    upload_counts_and_query,
    claim_one_time_keys_then_the_fallback_key,
    concurrent_claims_hand_out_each_key_once,
    bad_uploads_are_refused,
    sync_reports_key_counts,
    changes_list_users_sharing_a_room,
    deleting_a_device_deletes_its_keys,
    device_lists_in_incremental_sync,
    dehydrated_device_lifecycle,
    dehydrated_device_events_in_batches,
);

const DEHYDRATED: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";

/// A device's keys: its ed25519 signing key, as a client holds it.
struct DeviceKeys {
    user_id: String,
    device_id: String,
    signing: SigningKey,
}

impl DeviceKeys {
    fn new(s: &Session) -> Self {
        Self::for_device(&s.user_id, &s.device_id)
    }

    fn for_device(user_id: &str, device_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            signing: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    /// Signs `object` (without `signatures` and `unsigned`) as this device.
    fn sign(&self, mut object: Value) -> Value {
        let map = object.as_object_mut().expect("an object");
        map.remove("signatures");
        map.remove("unsigned");
        let signature = self.signing.sign(canonical(&object).as_bytes());
        object["signatures"] = json!({
            self.user_id.clone(): {
                format!("ed25519:{}", self.device_id): b64(&signature.to_bytes()),
            }
        });
        object
    }

    /// The signed `device_keys` object.
    fn device_keys(&self) -> Value {
        self.sign(json!({
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", self.device_id): b64(&rand::random::<[u8; 32]>()),
                format!("ed25519:{}", self.device_id):
                    b64(self.signing.verifying_key().as_bytes()),
            },
        }))
    }

    /// `count` signed one-time keys with ids `<prefix>0…`.
    fn one_time_keys(&self, prefix: &str, count: usize) -> Value {
        let mut keys = serde_json::Map::new();
        for i in 0..count {
            keys.insert(
                format!("signed_curve25519:{prefix}{i}"),
                self.sign(json!({ "key": b64(&rand::random::<[u8; 32]>()) })),
            );
        }
        Value::Object(keys)
    }

    fn fallback_key(&self, id: &str) -> Value {
        json!({
            format!("signed_curve25519:{id}"):
                self.sign(json!({ "key": b64(&rand::random::<[u8; 32]>()), "fallback": true })),
        })
    }
}

async fn upload(server: &TestServer, s: &Session, body: Value) -> Value {
    let (status, resp) = server
        .post(&format!("{V3}/keys/upload"), Some(&s.access_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "upload: {resp}");
    resp
}

/// The claimed key id (`signed_curve25519:ID`) of each claim, `None` when
/// nothing was claimed.
async fn claim(server: &TestServer, by: &Session, of: &Session) -> Option<String> {
    let (status, resp) = server
        .post(
            &format!("{V3}/keys/claim"),
            Some(&by.access_token),
            json!({ "one_time_keys": { of.user_id.clone(): { of.device_id.clone(): "signed_curve25519" } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "claim: {resp}");
    assert_eq!(resp["failures"], json!({}));
    let keys = resp["one_time_keys"][&of.user_id][&of.device_id].as_object()?;
    assert_eq!(keys.len(), 1, "{resp}");
    keys.keys().next().cloned()
}

async fn upload_counts_and_query(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let keys = DeviceKeys::new(&alice);
    let device_keys = keys.device_keys();
    let resp = upload(
        &server,
        &alice,
        json!({ "device_keys": device_keys, "one_time_keys": keys.one_time_keys("A", 5) }),
    )
    .await;
    assert_eq!(
        resp,
        json!({ "one_time_key_counts": { "signed_curve25519": 5 } })
    );
    // The same device keys again, more one-time keys, an unchanged key.
    let more = keys.one_time_keys("B", 3);
    let resp = upload(
        &server,
        &alice,
        json!({ "device_keys": device_keys, "one_time_keys": more }),
    )
    .await;
    assert_eq!(resp["one_time_key_counts"]["signed_curve25519"], 8);
    let resp = upload(&server, &alice, json!({ "one_time_keys": more })).await;
    assert_eq!(resp["one_time_key_counts"]["signed_curve25519"], 8);
    // Nothing to upload: the counts.
    let resp = upload(&server, &bob, json!({})).await;
    assert_eq!(
        resp,
        json!({ "one_time_key_counts": { "signed_curve25519": 0 } })
    );

    let (status, _) = server
        .put(
            &format!("{V3}/devices/{}", alice.device_id),
            Some(&alice.access_token),
            json!({ "display_name": "Alice's phone" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, resp) = server
        .post(
            &format!("{V3}/keys/query"),
            Some(&bob.access_token),
            json!({ "device_keys": {
                alice.user_id.clone(): [],
                bob.user_id.clone(): [],
                "@carol:remote.example": [],
            } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let mut expected = device_keys.clone();
    expected["unsigned"] = json!({ "device_display_name": "Alice's phone" });
    assert_eq!(
        resp["device_keys"][&alice.user_id],
        json!({ alice.device_id.clone(): expected })
    );
    assert_eq!(resp["device_keys"][&bob.user_id], json!({}));
    assert!(resp["failures"]["remote.example"].is_object(), "{resp}");
    // One device by id; an unknown device is left out.
    let (status, resp) = server
        .post(
            &format!("{V3}/keys/query"),
            Some(&bob.access_token),
            json!({ "device_keys": { alice.user_id.clone(): ["NOSUCHDEVICE"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["device_keys"][&alice.user_id], json!({}));
    assert_eq!(resp["failures"], json!({}));
    server.stop().await;
}

async fn claim_one_time_keys_then_the_fallback_key(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let keys = DeviceKeys::new(&alice);
    let one_time_keys = keys.one_time_keys("K", 2);
    upload(
        &server,
        &alice,
        json!({
            "device_keys": keys.device_keys(),
            "one_time_keys": one_time_keys,
            "fallback_keys": keys.fallback_key("F1"),
        }),
    )
    .await;
    // The claimed key is the uploaded object.
    let (status, resp) = server
        .post(
            &format!("{V3}/keys/claim"),
            Some(&bob.access_token),
            json!({ "one_time_keys": { alice.user_id.clone(): { alice.device_id.clone(): "signed_curve25519" } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let claimed = resp["one_time_keys"][&alice.user_id][&alice.device_id]
        .as_object()
        .expect("a key");
    let (first_id, first) = claimed.iter().next().expect("one key");
    assert_eq!(&one_time_keys[first_id], first);
    let second_id = claim(&server, &bob, &alice).await.expect("second key");
    assert_ne!(first_id, &second_id);
    // No one-time key left: the fallback key, again and again.
    for _ in 0..2 {
        assert_eq!(
            claim(&server, &bob, &alice).await.as_deref(),
            Some("signed_curve25519:F1")
        );
    }
    // A new fallback key replaces the old one.
    upload(
        &server,
        &alice,
        json!({ "fallback_keys": keys.fallback_key("F2") }),
    )
    .await;
    assert_eq!(
        claim(&server, &bob, &alice).await.as_deref(),
        Some("signed_curve25519:F2")
    );
    // A device without keys, an unknown user: nothing, no failure.
    let (status, resp) = server
        .post(
            &format!("{V3}/keys/claim"),
            Some(&alice.access_token),
            json!({ "one_time_keys": {
                bob.user_id.clone(): { bob.device_id.clone(): "signed_curve25519" },
                "@nobody:localhost": { "DEV": "signed_curve25519" },
            } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp, json!({ "one_time_keys": {}, "failures": {} }));
    server.stop().await;
}

async fn concurrent_claims_hand_out_each_key_once(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let keys = DeviceKeys::new(&alice);
    upload(
        &server,
        &alice,
        json!({
            "device_keys": keys.device_keys(),
            "one_time_keys": keys.one_time_keys("K", 5),
            "fallback_keys": keys.fallback_key("FB"),
        }),
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (server, alice, bob) = (server.clone(), alice.clone(), bob.clone());
        tasks.push(tokio::spawn(async move {
            claim(&server, &bob, &alice).await.expect("a key")
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("claim task"));
    }
    let one_time: Vec<_> = ids
        .iter()
        .filter(|id| *id != "signed_curve25519:FB")
        .collect();
    let distinct: BTreeSet<_> = one_time.iter().collect();
    assert_eq!(one_time.len(), 5, "{ids:?}");
    assert_eq!(distinct.len(), 5, "a key was handed out twice: {ids:?}");
    let server = std::sync::Arc::into_inner(server).expect("the only handle");
    server.stop().await;
}

async fn bad_uploads_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let path = format!("{V3}/keys/upload");
    let keys = DeviceKeys::new(&alice);
    upload(
        &server,
        &alice,
        json!({ "device_keys": keys.device_keys() }),
    )
    .await;

    // New identity keys for a device that has some.
    let other = DeviceKeys::new(&alice);
    let result = server
        .post(
            &path,
            Some(&alice.access_token),
            json!({ "device_keys": other.device_keys() }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // A signature that does not verify (bob's fresh device, a field
    // changed after signing), and one that is missing.
    let bobs = DeviceKeys::new(&bob);
    let mut tampered = bobs.device_keys();
    tampered["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    let result = server
        .post(
            &path,
            Some(&bob.access_token),
            json!({ "device_keys": tampered }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let mut unsigned = bobs.device_keys();
    unsigned["signatures"] = json!({});
    let result = server
        .post(
            &path,
            Some(&bob.access_token),
            json!({ "device_keys": unsigned }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Signed by another key than the device's own.
    let mut foreign = bobs.device_keys();
    foreign["keys"][format!("ed25519:{}", bob.device_id)] =
        json!(b64(other.signing.verifying_key().as_bytes()));
    let result = server
        .post(
            &path,
            Some(&bob.access_token),
            json!({ "device_keys": foreign }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Keys of alice's device uploaded by bob, and of another device of bob.
    let result = server
        .post(
            &path,
            Some(&bob.access_token),
            json!({ "device_keys": DeviceKeys::new(&alice).device_keys() }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let mut elsewhere = bob.clone();
    elsewhere.device_id = "OTHERDEVICE".to_owned();
    let result = server
        .post(
            &path,
            Some(&bob.access_token),
            json!({ "device_keys": DeviceKeys::new(&elsewhere).device_keys() }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // None of them was stored.
    let (status, resp) = server
        .post(
            &format!("{V3}/keys/query"),
            Some(&alice.access_token),
            json!({ "device_keys": { bob.user_id.clone(): [] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["device_keys"][&bob.user_id], json!({}));

    // A one-time key id uploaded again with other content.
    upload(
        &server,
        &alice,
        json!({ "one_time_keys": keys.one_time_keys("K", 1) }),
    )
    .await;
    let result = server
        .post(
            &path,
            Some(&alice.access_token),
            json!({ "one_time_keys": keys.one_time_keys("K", 2) }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Nothing of the refused upload was stored.
    let resp = upload(&server, &alice, json!({})).await;
    assert_eq!(resp["one_time_key_counts"]["signed_curve25519"], 1);
    // A key id that is not `<algorithm>:<id>`.
    let result = server
        .post(
            &path,
            Some(&alice.access_token),
            json!({ "one_time_keys": { "signed_curve25519": { "key": "x" } } }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    server.stop().await;
}

async fn sync_reports_key_counts(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let sync = |s: Session| {
        let server = &server;
        async move {
            let (status, body) = server
                .get(&format!("{V3}/sync"), Some(&s.access_token))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            (
                body["device_one_time_keys_count"].clone(),
                body["device_unused_fallback_key_types"].clone(),
            )
        }
    };
    assert_eq!(
        sync(alice.clone()).await,
        (json!({ "signed_curve25519": 0 }), json!([]))
    );
    let keys = DeviceKeys::new(&alice);
    upload(
        &server,
        &alice,
        json!({
            "device_keys": keys.device_keys(),
            "one_time_keys": keys.one_time_keys("K", 3),
            "fallback_keys": keys.fallback_key("F"),
        }),
    )
    .await;
    assert_eq!(
        sync(alice.clone()).await,
        (
            json!({ "signed_curve25519": 3 }),
            json!(["signed_curve25519"])
        )
    );
    for _ in 0..4 {
        claim(&server, &bob, &alice).await.expect("a key");
    }
    assert_eq!(
        sync(alice.clone()).await,
        (json!({ "signed_curve25519": 0 }), json!([]))
    );
    // Another device of the user counts apart.
    let (status, login) = server.login("alice", "password-alice").await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let mut second = alice.clone();
    second.device_id = login["device_id"].as_str().expect("device_id").to_owned();
    second.access_token = login["access_token"].as_str().expect("token").to_owned();
    let keys2 = DeviceKeys::new(&second);
    upload(
        &server,
        &second,
        json!({ "one_time_keys": keys2.one_time_keys("K", 2) }),
    )
    .await;
    assert_eq!(sync(second).await.0, json!({ "signed_curve25519": 2 }));
    assert_eq!(sync(alice).await.0, json!({ "signed_curve25519": 0 }));
    server.stop().await;
}

async fn changes_list_users_sharing_a_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    server
        .room_with(&alice, json!({ "preset": "public_chat" }), &[&bob])
        .await;
    let token = |s: Session| {
        let server = &server;
        async move {
            let (status, body) = server
                .get(&format!("{V3}/sync"), Some(&s.access_token))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["next_batch"].as_str().expect("next_batch").to_owned()
        }
    };
    let from = token(bob.clone()).await;
    upload(
        &server,
        &alice,
        json!({ "device_keys": DeviceKeys::new(&alice).device_keys() }),
    )
    .await;
    // Carol shares no room with bob.
    upload(
        &server,
        &carol,
        json!({ "device_keys": DeviceKeys::new(&carol).device_keys() }),
    )
    .await;
    server
        .say(
            &alice,
            &server.room_with(&alice, json!({}), &[]).await,
            "hi",
        )
        .await;
    let to = token(bob.clone()).await;
    let (status, resp) = server
        .get(
            &format!("{V3}/keys/changes?from={from}&to={to}"),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp, json!({ "changed": [alice.user_id], "left": [] }));
    // Nothing changed after `to`.
    let later = token(bob.clone()).await;
    let (status, resp) = server
        .get(
            &format!("{V3}/keys/changes?from={later}&to={later}"),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["changed"], json!([]));

    let result = server
        .get(
            &format!("{V3}/keys/changes?from=nonsense&to={to}"),
            Some(&bob.access_token),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = server
        .get(
            &format!("{V3}/keys/changes?to={to}"),
            Some(&bob.access_token),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    server.stop().await;
}

async fn deleting_a_device_deletes_its_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let keys = DeviceKeys::new(&alice);
    upload(
        &server,
        &alice,
        json!({
            "device_keys": keys.device_keys(),
            "one_time_keys": keys.one_time_keys("K", 3),
            "fallback_keys": keys.fallback_key("F"),
        }),
    )
    .await;
    assert!(claim(&server, &bob, &alice).await.is_some());
    let (status, body) = server
        .post(
            &format!("{V3}/logout"),
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Neither its one-time keys nor its fallback key are handed out.
    assert_eq!(claim(&server, &bob, &alice).await, None);
    let (status, body) = server
        .post(
            &format!("{V3}/keys/query"),
            Some(&bob.access_token),
            json!({ "device_keys": { alice.user_id.clone(): [] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_keys"][&alice.user_id], json!({}), "{body}");
    server.stop().await;
}

async fn device_lists_in_incremental_sync(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let room = server
        .room_with(&alice, json!({ "preset": "public_chat" }), &[&bob])
        .await;
    let sync = |s: &Session, since: Option<String>| {
        let server = &server;
        let token = s.access_token.clone();
        async move {
            let path = match since {
                Some(since) => format!("{V3}/sync?since={since}&timeout=0"),
                None => format!("{V3}/sync"),
            };
            let (status, body) = server.get(&path, Some(&token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let lists = |body: &Value| {
        (
            body["device_lists"]["changed"].clone(),
            body["device_lists"]["left"].clone(),
        )
    };
    let next = |body: &Value| body["next_batch"].as_str().expect("next_batch").to_owned();
    let start = sync(&bob, None).await;
    assert_eq!(lists(&start), (json!([]), json!([])));

    // Alice (shares a room) uploads keys; Carol (shares none) too.
    upload(
        &server,
        &alice,
        json!({ "device_keys": DeviceKeys::new(&alice).device_keys() }),
    )
    .await;
    upload(
        &server,
        &carol,
        json!({ "device_keys": DeviceKeys::new(&carol).device_keys() }),
    )
    .await;
    let body = sync(&bob, Some(next(&start))).await;
    assert_eq!(lists(&body), (json!([alice.user_id]), json!([])), "{body}");

    // Carol joins: Bob now shares a room with her.
    server.join_room(&carol, &room).await;
    let body = sync(&bob, Some(next(&body))).await;
    assert_eq!(lists(&body), (json!([carol.user_id]), json!([])), "{body}");

    // Carol leaves: Bob shares no room with her any more.
    let (status, resp) = server
        .post(
            &format!("{V3}/rooms/{room}/leave"),
            Some(&carol.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let body = sync(&bob, Some(next(&body))).await;
    assert_eq!(lists(&body), (json!([]), json!([carol.user_id])), "{body}");

    // A device of Alice's is deleted: her list changed.
    let (status, resp) = server
        .post(
            &format!("{V3}/logout"),
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let body = sync(&bob, Some(next(&body))).await;
    assert_eq!(lists(&body), (json!([alice.user_id]), json!([])), "{body}");
    // And nothing more after that.
    let body = sync(&bob, Some(next(&body))).await;
    assert_eq!(lists(&body), (json!([]), json!([])), "{body}");
    server.stop().await;
}

/// The body of `PUT /dehydrated_device` for a new dehydrated device
/// `device_id` of `s`'s user, with two one-time keys and a fallback key.
fn dehydrated_device_body(s: &Session, device_id: &str) -> Value {
    let keys = DeviceKeys::for_device(&s.user_id, device_id);
    let mut device_keys = keys.device_keys();
    device_keys["dehydrated"] = json!(true);
    json!({
        "device_id": device_id,
        "device_data": { "algorithm": "org.matrix.msc3814.v2", "device_pickle": "c2VjcmV0" },
        "initial_device_display_name": "Dehydrated device",
        "device_keys": keys.sign(device_keys),
        "one_time_keys": keys.one_time_keys("K", 2),
        "fallback_keys": keys.fallback_key("F"),
    })
}

async fn put_dehydrated(server: &TestServer, s: &Session, body: Value) -> (StatusCode, Value) {
    server.put(DEHYDRATED, Some(&s.access_token), body).await
}

async fn queried_devices(server: &TestServer, by: &Session, of: &Session) -> Vec<String> {
    let (status, body) = server
        .post(
            &format!("{V3}/keys/query"),
            Some(&by.access_token),
            json!({ "device_keys": { of.user_id.clone(): [] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["device_keys"][&of.user_id]
        .as_object()
        .expect("alice's devices")
        .keys()
        .cloned()
        .collect()
}

async fn dehydrated_device_lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    server
        .room_with(&alice, json!({ "preset": "public_chat" }), &[&bob])
        .await;
    let (status, body) = server.get(DEHYDRATED, Some(&alice.access_token)).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = server
        .delete(DEHYDRATED, Some(&alice.access_token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Refused: keys signed for another device, no keys, data without an
    // algorithm, the id of a device alice uses.
    let mut wrong = dehydrated_device_body(&alice, "DEHY1");
    wrong["device_id"] = json!("OTHER");
    let mut no_keys = dehydrated_device_body(&alice, "DEHY1");
    no_keys
        .as_object_mut()
        .expect("object")
        .remove("device_keys");
    let mut no_algorithm = dehydrated_device_body(&alice, "DEHY1");
    no_algorithm["device_data"] = json!({ "device_pickle": "x" });
    let own_device = dehydrated_device_body(&alice, &alice.device_id);
    for (body, status, errcode) in [
        (wrong, StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        (no_keys, StatusCode::BAD_REQUEST, "M_MISSING_PARAM"),
        (no_algorithm, StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        (own_device, StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
    ] {
        let (got, resp) = put_dehydrated(&server, &alice, body).await;
        assert_eq!(
            (got, resp["errcode"].as_str()),
            (status, Some(errcode)),
            "{resp}"
        );
    }
    let (status, body) = server.get(DEHYDRATED, Some(&alice.access_token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored: {body}");

    let (status, since) = server
        .get(&format!("{V3}/sync"), Some(&bob.access_token))
        .await;
    assert_eq!(status, StatusCode::OK, "{since}");
    let since = since["next_batch"].as_str().expect("next_batch").to_owned();
    let (status, body) =
        put_dehydrated(&server, &alice, dehydrated_device_body(&alice, "DEHY1")).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "device_id": "DEHY1" }))
    );
    let (status, body) = server.get(DEHYDRATED, Some(&alice.access_token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], "DEHY1");
    assert_eq!(body["device_data"]["device_pickle"], "c2VjcmV0");

    // Others see it as one of alice's devices: keys to query and claim, and
    // a change of her device list.
    let mut devices = queried_devices(&server, &bob, &alice).await;
    devices.sort();
    assert_eq!(devices, ["DEHY1"]);
    let dehydrated = Session {
        device_id: "DEHY1".to_owned(),
        ..alice.clone()
    };
    let first = claim(&server, &bob, &dehydrated).await.expect("a key");
    let second = claim(&server, &bob, &dehydrated).await.expect("a key");
    assert_ne!(first, second);
    assert_eq!(
        claim(&server, &bob, &dehydrated).await.as_deref(),
        Some("signed_curve25519:F"),
        "then the fallback key"
    );
    let (status, body) = server
        .get(
            &format!("{V3}/sync?since={since}&timeout=0"),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["device_lists"]["changed"],
        json!([alice.user_id]),
        "{body}"
    );
    let (status, body) = server
        .get(&format!("{V3}/devices"), Some(&alice.access_token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .any(|d| d["device_id"] == "DEHY1" && d["display_name"] == "Dehydrated device"),
        "{body}"
    );

    // A new one replaces it, keys and all.
    let (status, body) =
        put_dehydrated(&server, &alice, dehydrated_device_body(&alice, "DEHY2")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(queried_devices(&server, &bob, &alice).await, ["DEHY2"]);
    assert_eq!(claim(&server, &bob, &dehydrated).await, None);

    let (status, body) = server
        .delete(DEHYDRATED, Some(&alice.access_token), None)
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "device_id": "DEHY2" }))
    );
    let (status, _) = server.get(DEHYDRATED, Some(&alice.access_token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(queried_devices(&server, &bob, &alice).await.is_empty());
    server.stop().await;
}

async fn dehydrated_device_events_in_batches(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let (status, body) =
        put_dehydrated(&server, &alice, dehydrated_device_body(&alice, "DEHY")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Bob shares 105 room keys with it while alice has no device online.
    for i in 0..105 {
        let (status, body) = server
            .put(
                &format!("{V3}/sendToDevice/m.room.encrypted/t{i}"),
                Some(&bob.access_token),
                json!({ "messages": { alice.user_id.clone(): { "DEHY": { "n": i } } } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let events = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/DEHY/events";
    let (status, body) = server
        .post(
            &events.replace("DEHY", &alice.device_id),
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = server
        .post(
            events,
            Some(&alice.access_token),
            json!({ "next_batch": "nope" }),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
        "{body}"
    );

    // Batches in order, ending with an empty one; read twice (the second
    // time after a restart), since reading deletes nothing.
    for round in 0..2 {
        let mut next_batch: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let request = match &next_batch {
                Some(token) => json!({ "next_batch": token }),
                None => json!({}),
            };
            let (status, body) = server
                .post(events, Some(&alice.access_token), request)
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let batch = body["events"].as_array().expect("events").clone();
            next_batch = Some(body["next_batch"].as_str().expect("next_batch").to_owned());
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 100);
            for event in batch {
                assert_eq!(event["sender"], bob.user_id.as_str());
                assert_eq!(event["type"], "m.room.encrypted");
                seen.push(event["content"]["n"].as_i64().expect("n"));
            }
        }
        assert_eq!(seen, (0..105).collect::<Vec<_>>(), "round {round}");
        server.restart().await;
    }
    // The messages go with the device.
    let (status, body) = server
        .delete(DEHYDRATED, Some(&alice.access_token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .post(events, Some(&alice.access_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await;
}
