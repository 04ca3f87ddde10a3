//! Cross-signing over HTTP: uploading master, self-signing and user-signing
//! keys (the first upload without user-interactive authentication, a
//! replacement with it), what `/keys/query` shows of them and to whom, keys
//! refused, signatures verified and refused per key, signatures in
//! `/keys/query`, and device-list changes a peer sees in `/sync`.

mod common;

use common::*;
use ed25519_dalek::{Signer as _, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

backend_tests!(
    upload_query_and_replace,
    bad_keys_are_refused,
    signatures_verified_per_key,
    device_lists_change_for_a_peer,
);

/// An ed25519 key pair as a client holds it.
struct Key(SigningKey);

impl Key {
    fn new() -> Self {
        Self(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    fn public(&self) -> String {
        b64(self.0.verifying_key().as_bytes())
    }

    /// Adds `user_id`'s signature with key id `ed25519:<key_name>` to
    /// `object` (signed without `signatures` and `unsigned`).
    fn sign(&self, user_id: &str, key_name: &str, mut object: Value) -> Value {
        let mut content = object.clone();
        let map = content.as_object_mut().expect("an object");
        map.remove("signatures");
        map.remove("unsigned");
        let signature = self.0.sign(canonical(&content).as_bytes());
        if !object["signatures"].is_object() {
            object["signatures"] = json!({});
        }
        if !object["signatures"][user_id].is_object() {
            object["signatures"][user_id] = json!({});
        }
        object["signatures"][user_id][format!("ed25519:{key_name}")] =
            json!(b64(&signature.to_bytes()));
        object
    }

    /// A cross-signing key object of `usage` for `user_id` with this key.
    fn cross_signing_key(&self, user_id: &str, usage: &str) -> Value {
        json!({
            "user_id": user_id,
            "usage": [usage],
            "keys": { format!("ed25519:{}", self.public()): self.public() },
        })
    }
}

/// A user's cross-signing keys.
struct CrossSigning {
    user_id: String,
    master: Key,
    self_signing: Key,
    user_signing: Key,
}

impl CrossSigning {
    fn new(s: &Session) -> Self {
        Self {
            user_id: s.user_id.clone(),
            master: Key::new(),
            self_signing: Key::new(),
            user_signing: Key::new(),
        }
    }

    fn master_key(&self) -> Value {
        self.master.cross_signing_key(&self.user_id, "master")
    }

    /// A key of `usage` signed by the master key.
    fn signed_by_master(&self, key: &Key, usage: &str) -> Value {
        self.master.sign(
            &self.user_id,
            &self.master.public(),
            key.cross_signing_key(&self.user_id, usage),
        )
    }

    fn upload_body(&self) -> Value {
        json!({
            "master_key": self.master_key(),
            "self_signing_key": self.signed_by_master(&self.self_signing, "self_signing"),
            "user_signing_key": self.signed_by_master(&self.user_signing, "user_signing"),
        })
    }
}

/// Uploads the session device's signed device keys; its signing key and the
/// `device_keys` object.
async fn upload_device_keys(server: &TestServer, s: &Session) -> (Key, Value) {
    let key = Key::new();
    let device_keys = key.sign(
        &s.user_id,
        &s.device_id,
        json!({
            "user_id": s.user_id,
            "device_id": s.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", s.device_id): b64(&rand::random::<[u8; 32]>()),
                format!("ed25519:{}", s.device_id): key.public(),
            },
        }),
    );
    let (status, resp) = server
        .post(
            &format!("{V3}/keys/upload"),
            Some(&s.access_token),
            json!({ "device_keys": device_keys }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    (key, device_keys)
}

async fn device_signing(server: &TestServer, s: &Session, body: Value) -> (StatusCode, Value) {
    server
        .post(
            &format!("{V3}/keys/device_signing/upload"),
            Some(&s.access_token),
            body,
        )
        .await
}

async fn signatures(server: &TestServer, s: &Session, body: Value) -> Value {
    let (status, resp) = server
        .post(
            &format!("{V3}/keys/signatures/upload"),
            Some(&s.access_token),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp
}

async fn query(server: &TestServer, by: &Session, users: &[&Session]) -> Value {
    let wanted: serde_json::Map<String, Value> = users
        .iter()
        .map(|s| (s.user_id.clone(), json!([])))
        .collect();
    let (status, resp) = server
        .post(
            &format!("{V3}/keys/query"),
            Some(&by.access_token),
            json!({ "device_keys": wanted }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp
}

fn password_auth(user: &str, password: &str, session: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
        "session": session,
    })
}

async fn upload_query_and_replace(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let keys = CrossSigning::new(&alice);
    let body = keys.upload_body();
    // The first upload needs no authentication.
    let (status, resp) = device_signing(&server, &alice, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp, json!({}));
    // The same keys again: nothing to authenticate.
    let (status, resp) = device_signing(&server, &alice, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    // Alice sees all three; Bob not her user-signing key.
    let resp = query(&server, &alice, &[&alice]).await;
    assert_eq!(
        resp["master_keys"],
        json!({ alice.user_id.clone(): body["master_key"] })
    );
    assert_eq!(
        resp["self_signing_keys"],
        json!({ alice.user_id.clone(): body["self_signing_key"] })
    );
    assert_eq!(
        resp["user_signing_keys"],
        json!({ alice.user_id.clone(): body["user_signing_key"] })
    );
    let resp = query(&server, &bob, &[&alice, &bob]).await;
    assert_eq!(
        resp["master_keys"],
        json!({ alice.user_id.clone(): body["master_key"] })
    );
    assert_eq!(
        resp["self_signing_keys"],
        json!({ alice.user_id.clone(): body["self_signing_key"] })
    );
    assert_eq!(resp["user_signing_keys"], json!({}));

    // Replacing the keys needs the password.
    let new_keys = CrossSigning::new(&alice);
    let new_body = new_keys.upload_body();
    let (status, resp) = device_signing(&server, &alice, new_body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{resp}");
    assert_eq!(
        resp["flows"],
        json!([{ "stages": ["m.login.password"] }]),
        "{resp}"
    );
    let session = resp["session"].as_str().expect("session").to_owned();
    // Nothing replaced yet.
    let resp = query(&server, &alice, &[&alice]).await;
    assert_eq!(resp["master_keys"][&alice.user_id], body["master_key"]);
    let mut with_auth = new_body.clone();
    with_auth["auth"] = password_auth("alice", "wrong", &session);
    let (status, resp) = device_signing(&server, &alice, with_auth.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{resp}");
    with_auth["auth"] = password_auth("alice", "password-alice", &session);
    let (status, resp) = device_signing(&server, &alice, with_auth).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let resp = query(&server, &alice, &[&alice]).await;
    assert_eq!(resp["master_keys"][&alice.user_id], new_body["master_key"]);
    assert_eq!(
        resp["self_signing_keys"][&alice.user_id],
        new_body["self_signing_key"]
    );

    // A new self-signing key alone, signed by the stored master key.
    let ssk = Key::new();
    let mut body = json!({ "self_signing_key": new_keys.signed_by_master(&ssk, "self_signing") });
    let (status, resp) = device_signing(&server, &alice, body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{resp}");
    let session = resp["session"].as_str().expect("session").to_owned();
    body["auth"] = password_auth("alice", "password-alice", &session);
    let (status, resp) = device_signing(&server, &alice, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let resp = query(&server, &bob, &[&alice]).await;
    assert_eq!(
        resp["self_signing_keys"][&alice.user_id],
        body["self_signing_key"]
    );
    server.stop().await;
}

async fn bad_keys_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let keys = CrossSigning::new(&alice);
    let refused = |body: Value, status: StatusCode, errcode: &'static str| {
        let (server, alice) = (&server, &alice);
        async move {
            let result = device_signing(server, alice, body).await;
            assert_error(&result, status, errcode);
        }
    };
    // Another user's key.
    let mut body = keys.upload_body();
    body["master_key"]["user_id"] = json!(bob.user_id);
    refused(body, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    // The wrong usage.
    let mut body = keys.upload_body();
    body["master_key"]["usage"] = json!(["self_signing"]);
    refused(body, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    // Two keys.
    let mut body = keys.upload_body();
    let other = Key::new().public();
    body["master_key"]["keys"][format!("ed25519:{other}")] = json!(other);
    refused(body, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    // A key id that is not `ed25519:<the key>`.
    let mut body = keys.upload_body();
    body["master_key"]["keys"] = json!({ "ed25519:something": keys.master.public() });
    refused(body, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    // A self-signing key not signed by the master key.
    let mut body = keys.upload_body();
    body["self_signing_key"] = keys.self_signing.sign(
        &alice.user_id,
        &keys.master.public(),
        keys.self_signing
            .cross_signing_key(&alice.user_id, "self_signing"),
    );
    refused(body, StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE").await;
    // A user-signing key without any signature.
    let mut body = keys.upload_body();
    body["user_signing_key"] = keys
        .user_signing
        .cross_signing_key(&alice.user_id, "user_signing");
    refused(body, StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE").await;
    // A self-signing key and no master key at all.
    let body = json!({ "self_signing_key": keys.upload_body()["self_signing_key"] });
    refused(body, StatusCode::BAD_REQUEST, "M_MISSING_PARAM").await;
    // Nothing was stored.
    let resp = query(&server, &alice, &[&alice]).await;
    assert_eq!(resp["master_keys"], json!({}), "{resp}");
    assert_eq!(resp["self_signing_keys"], json!({}), "{resp}");
    assert_eq!(resp["user_signing_keys"], json!({}), "{resp}");
    server.stop().await;
}

async fn signatures_verified_per_key(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let carol = server.register("carol", "password-carol").await;
    let (device_key, device_keys) = upload_device_keys(&server, &alice).await;
    let alice_keys = CrossSigning::new(&alice);
    let bob_keys = CrossSigning::new(&bob);
    for (s, keys) in [(&alice, &alice_keys), (&bob, &bob_keys)] {
        let (status, resp) = device_signing(&server, s, keys.upload_body()).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
    }
    let alice_master = alice_keys.master.public();
    let bob_master = bob_keys.master.public();
    let uid = alice.user_id.clone();

    // Alice's self-signing key over her device.
    let signed_device =
        alice_keys
            .self_signing
            .sign(&uid, &alice_keys.self_signing.public(), device_keys.clone());
    // Her device over her master key.
    let signed_master = device_key.sign(&uid, &alice.device_id, alice_keys.master_key());
    // Her user-signing key over Bob's master key.
    let signed_bob = alice_keys.user_signing.sign(
        &uid,
        &alice_keys.user_signing.public(),
        bob_keys.master_key(),
    );
    let device_sig = signed_device["signatures"][&uid]
        [format!("ed25519:{}", alice_keys.self_signing.public())]
    .clone();
    let master_sig =
        signed_master["signatures"][&uid][format!("ed25519:{}", alice.device_id)].clone();
    let bob_sig = signed_bob["signatures"][&uid]
        [format!("ed25519:{}", alice_keys.user_signing.public())]
    .clone();

    // A signature by the wrong key (the master key over a device).
    let mut bad_device = device_keys.clone();
    bad_device["signatures"][&uid][format!("ed25519:{}", alice_keys.self_signing.public())] =
        alice_keys.master.sign(&uid, "x", device_keys.clone())["signatures"][&uid]["ed25519:x"]
            .clone();
    // A changed object.
    let mut changed_bob = signed_bob.clone();
    changed_bob["usage"] = json!(["master", "other"]);

    let resp = signatures(
        &server,
        &alice,
        json!({
            uid.clone(): {
                alice.device_id.clone(): signed_device,
                alice_master.clone(): signed_master,
                "NOSUCHDEVICE": device_keys,
            },
            bob.user_id.clone(): { bob_master.clone(): signed_bob },
        }),
    )
    .await;
    assert_eq!(
        resp["failures"][&uid]["NOSUCHDEVICE"]["errcode"],
        json!("M_NOT_FOUND"),
        "{resp}"
    );
    assert_eq!(
        resp["failures"].as_object().map(|f| f.len()),
        Some(1),
        "{resp}"
    );
    assert_eq!(
        resp["failures"][&uid].as_object().map(|f| f.len()),
        Some(1),
        "{resp}"
    );

    let resp = signatures(
        &server,
        &alice,
        json!({
            uid.clone(): { alice.device_id.clone(): bad_device },
            bob.user_id.clone(): { bob_master.clone(): changed_bob, "NOSUCHKEY": {} },
        }),
    )
    .await;
    let failure = |user: &str, key: &str| resp["failures"][user][key]["errcode"].clone();
    assert_eq!(
        failure(&uid, &alice.device_id),
        json!("M_INVALID_SIGNATURE"),
        "{resp}"
    );
    assert_eq!(
        failure(&bob.user_id, &bob_master),
        json!("M_INVALID_SIGNATURE"),
        "{resp}"
    );
    assert_eq!(
        failure(&bob.user_id, "NOSUCHKEY"),
        json!("M_NOT_FOUND"),
        "{resp}"
    );
    assert!(resp["failures"][&uid][&alice.device_id]["error"].is_string());

    // Alice sees every signature.
    let resp = query(&server, &alice, &[&alice, &bob]).await;
    let ssk_id = format!("ed25519:{}", alice_keys.self_signing.public());
    let device = &resp["device_keys"][&uid][&alice.device_id];
    assert_eq!(device["signatures"][&uid][&ssk_id], device_sig, "{resp}");
    assert_eq!(
        device["signatures"][&uid][format!("ed25519:{}", alice.device_id)],
        device_keys["signatures"][&uid][format!("ed25519:{}", alice.device_id)]
    );
    assert_eq!(
        resp["master_keys"][&uid]["signatures"][&uid][format!("ed25519:{}", alice.device_id)],
        master_sig,
        "{resp}"
    );
    let usk_id = format!("ed25519:{}", alice_keys.user_signing.public());
    assert_eq!(
        resp["master_keys"][&bob.user_id]["signatures"][&uid][&usk_id], bob_sig,
        "{resp}"
    );
    // Carol sees Alice's own signatures, not Alice's over Bob's key.
    let resp = query(&server, &carol, &[&alice, &bob]).await;
    assert_eq!(
        resp["device_keys"][&uid][&alice.device_id]["signatures"][&uid][&ssk_id],
        device_sig
    );
    assert_eq!(
        resp["master_keys"][&bob.user_id]["signatures"].get(&uid),
        None,
        "{resp}"
    );
    // Nor does Bob: a user-signing key's signatures are its owner's.
    let resp = query(&server, &bob, &[&bob]).await;
    assert_eq!(
        resp["master_keys"][&bob.user_id]["signatures"].get(&uid),
        None,
        "{resp}"
    );
    server.stop().await;
}

async fn device_lists_change_for_a_peer(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    server
        .room_with(&alice, json!({ "preset": "public_chat" }), &[&bob])
        .await;
    let sync = |since: Option<String>| {
        let (server, token) = (&server, bob.access_token.clone());
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
    let next = |body: &Value| body["next_batch"].as_str().expect("next_batch").to_owned();
    let (_, _) = upload_device_keys(&server, &alice).await;
    let start = sync(None).await;

    let keys = CrossSigning::new(&alice);
    let (status, resp) = device_signing(&server, &alice, keys.upload_body()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let body = sync(Some(next(&start))).await;
    assert_eq!(
        body["device_lists"]["changed"],
        json!([alice.user_id]),
        "{body}"
    );
    let body = sync(Some(next(&body))).await;
    assert_eq!(body["device_lists"]["changed"], json!([]), "{body}");

    // Alice signs her master key with her device: changed again.
    let query_resp = query(&server, &alice, &[&alice]).await;
    let device_keys = query_resp["device_keys"][&alice.user_id][&alice.device_id].clone();
    let mut device_keys = device_keys;
    device_keys
        .as_object_mut()
        .expect("object")
        .remove("unsigned");
    let signed = keys
        .self_signing
        .sign(&alice.user_id, &keys.self_signing.public(), device_keys);
    let resp = signatures(
        &server,
        &alice,
        json!({ alice.user_id.clone(): { alice.device_id.clone(): signed } }),
    )
    .await;
    assert_eq!(resp["failures"], json!({}), "{resp}");
    let body = sync(Some(next(&body))).await;
    assert_eq!(
        body["device_lists"]["changed"],
        json!([alice.user_id]),
        "{body}"
    );
    server.stop().await;
}
