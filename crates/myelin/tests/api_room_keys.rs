//! Server-side key backups over HTTP: versions (create, read, update,
//! delete), keys at every level (all rooms, one room, one session), the
//! spec's rule for which copy of a session to keep, etags and counts, uploads
//! to a version that is not the current one, deleted versions, one user's
//! backups hidden from another, and bad input.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const ALG: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const ROOM: &str = "!room:localhost";
/// `ROOM`, percent-encoded for a path.
const ROOM_PATH: &str = "%21room%3Alocalhost";

backend_tests!(
    versions_are_created_read_updated_and_deleted,
    keys_are_stored_read_and_deleted_at_every_level,
    an_existing_session_is_replaced_only_by_a_better_one,
    uploads_go_only_to_the_current_version,
    deleted_versions_lose_their_keys,
    users_do_not_see_each_others_backups,
    bad_requests_are_refused,
    deactivation_deletes_the_backup,
);

async fn create_version(server: &TestServer, s: &Session, auth_data: Value) -> String {
    let (status, body) = server
        .post(
            &format!("{V3}/room_keys/version"),
            Some(&s.access_token),
            json!({ "algorithm": ALG, "auth_data": auth_data }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["version"].as_str().expect("version").to_owned()
}

fn key(index: u64, forwarded: u64, verified: bool, tag: &str) -> Value {
    json!({
        "first_message_index": index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": { "ephemeral": "e", "ciphertext": tag, "mac": "m" },
    })
}

/// Uploads one session; returns the response.
async fn put_session(
    server: &TestServer,
    s: &Session,
    version: &str,
    session: &str,
    data: Value,
) -> (StatusCode, Value) {
    server
        .put(
            &format!("{V3}/room_keys/keys/{ROOM_PATH}/{session}?version={version}"),
            Some(&s.access_token),
            data,
        )
        .await
}

/// `(etag, count)` of a successful upload or deletion.
#[track_caller]
fn etag_count(result: &(StatusCode, Value)) -> (String, u64) {
    let (status, body) = result;
    assert_eq!(*status, StatusCode::OK, "{body}");
    (
        body["etag"].as_str().expect("etag").to_owned(),
        body["count"].as_u64().expect("count"),
    )
}

async fn get_session(server: &TestServer, s: &Session, version: &str, session: &str) -> Value {
    let (status, body) = server
        .get(
            &format!("{V3}/room_keys/keys/{ROOM_PATH}/{session}?version={version}"),
            Some(&s.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn versions_are_created_read_updated_and_deleted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let token = Some(alice.access_token.as_str());
    assert_error(
        &server.get(&format!("{V3}/room_keys/version"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let v1 = create_version(&server, &alice, json!({ "public_key": "one" })).await;
    assert_eq!(v1, "1");
    let (status, body) = server.get(&format!("{V3}/room_keys/version"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["algorithm"], ALG);
    assert_eq!(body["auth_data"], json!({ "public_key": "one" }));
    assert_eq!(body["count"], 0);
    assert!(body["etag"].is_string(), "{body}");
    assert_eq!(body["version"], "1");
    let v2 = create_version(&server, &alice, json!({ "public_key": "two" })).await;
    assert_eq!(v2, "2");
    let (_, current) = server.get(&format!("{V3}/room_keys/version"), token).await;
    assert_eq!(current["version"], "2");
    let (status, one) = server
        .get(&format!("{V3}/room_keys/version/1"), token)
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["auth_data"], json!({ "public_key": "one" }));
    assert_eq!(one["version"], "1");

    // Update: auth_data changes; the algorithm and version must match.
    let (status, body) = server
        .put(
            &format!("{V3}/room_keys/version/1"),
            token,
            json!({ "algorithm": ALG, "auth_data": { "public_key": "uno" }, "version": "1" }),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (_, one) = server
        .get(&format!("{V3}/room_keys/version/1"), token)
        .await;
    assert_eq!(one["auth_data"], json!({ "public_key": "uno" }));
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/version/1"),
                token,
                json!({ "algorithm": "m.other", "auth_data": {} }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/version/1"),
                token,
                json!({ "algorithm": ALG, "auth_data": {}, "version": "2" }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/version/7"),
                token,
                json!({ "algorithm": ALG, "auth_data": {} }),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Delete: the previous version becomes current; deleting again succeeds;
    // unknown versions are 404.
    let (status, body) = server
        .delete(&format!("{V3}/room_keys/version/2"), token, None)
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, _) = server
        .delete(&format!("{V3}/room_keys/version/2"), token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for missing in ["2", "99", "abc", "01"] {
        assert_error(
            &server
                .get(&format!("{V3}/room_keys/version/{missing}"), token)
                .await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
    assert_error(
        &server
            .delete(&format!("{V3}/room_keys/version/99"), token, None)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, current) = server.get(&format!("{V3}/room_keys/version"), token).await;
    assert_eq!(current["version"], "1");
    // Numbers are never reused.
    assert_eq!(create_version(&server, &alice, json!({})).await, "3");
    server.stop().await;
}

async fn keys_are_stored_read_and_deleted_at_every_level(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let token = Some(alice.access_token.as_str());
    let v = create_version(&server, &alice, json!({})).await;
    let (status, body) = server
        .get(&format!("{V3}/room_keys/keys?version={v}"), token)
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "rooms": {} })));
    let (status, body) = server
        .get(
            &format!("{V3}/room_keys/keys/{ROOM_PATH}?version={v}"),
            token,
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "sessions": {} })));
    assert_error(
        &server
            .get(
                &format!("{V3}/room_keys/keys/{ROOM_PATH}/nope?version={v}"),
                token,
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, version) = server
        .get(&format!("{V3}/room_keys/version/{v}"), token)
        .await;
    let etag0 = version["etag"].as_str().expect("etag").to_owned();

    // All rooms at once.
    let (etag1, count) = etag_count(
        &server
            .put(
                &format!("{V3}/room_keys/keys?version={v}"),
                token,
                json!({ "rooms": {
                    ROOM: { "sessions": { "s1": key(0, 0, false, "a1") } },
                    "!other:localhost": { "sessions": {
                        "s1": key(0, 0, false, "b1"),
                        "s2": key(3, 1, true, "b2"),
                    } },
                } }),
            )
            .await,
    );
    assert_eq!(count, 3);
    assert_ne!(etag1, etag0);
    // One room.
    let (etag2, count) = etag_count(
        &server
            .put(
                &format!("{V3}/room_keys/keys/{ROOM_PATH}?version={v}"),
                token,
                json!({ "sessions": { "s2": key(0, 0, false, "a2") } }),
            )
            .await,
    );
    assert_eq!(count, 4);
    assert_ne!(etag2, etag1);
    // One session.
    let (etag3, count) =
        etag_count(&put_session(&server, &alice, &v, "s3", key(1, 2, true, "a3")).await);
    assert_eq!(count, 5);
    assert_ne!(etag3, etag2);
    // The version reports the same etag and count.
    let (_, version) = server
        .get(&format!("{V3}/room_keys/version/{v}"), token)
        .await;
    assert_eq!(version["etag"], etag3);
    assert_eq!(version["count"], 5);

    assert_eq!(
        get_session(&server, &alice, &v, "s3").await,
        key(1, 2, true, "a3")
    );
    let (status, room) = server
        .get(
            &format!("{V3}/room_keys/keys/{ROOM_PATH}?version={v}"),
            token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        room,
        json!({ "sessions": {
            "s1": key(0, 0, false, "a1"),
            "s2": key(0, 0, false, "a2"),
            "s3": key(1, 2, true, "a3"),
        } })
    );
    let (status, all) = server
        .get(&format!("{V3}/room_keys/keys?version={v}"), token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["rooms"][ROOM], room);
    assert_eq!(
        all["rooms"]["!other:localhost"],
        json!({ "sessions": { "s1": key(0, 0, false, "b1"), "s2": key(3, 1, true, "b2") } })
    );

    // Deleting one session, one room, then everything.
    let (etag4, count) = etag_count(
        &server
            .delete(
                &format!("{V3}/room_keys/keys/{ROOM_PATH}/s1?version={v}"),
                token,
                None,
            )
            .await,
    );
    assert_eq!(count, 4);
    assert_ne!(etag4, etag3);
    assert_error(
        &server
            .get(
                &format!("{V3}/room_keys/keys/{ROOM_PATH}/s1?version={v}"),
                token,
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Deleting what is not there changes nothing.
    let again = etag_count(
        &server
            .delete(
                &format!("{V3}/room_keys/keys/{ROOM_PATH}/s1?version={v}"),
                token,
                None,
            )
            .await,
    );
    assert_eq!(again, (etag4.clone(), 4));
    let (etag5, count) = etag_count(
        &server
            .delete(
                &format!("{V3}/room_keys/keys/{ROOM_PATH}?version={v}"),
                token,
                None,
            )
            .await,
    );
    assert_eq!(count, 2);
    assert_ne!(etag5, etag4);
    let (etag6, count) = etag_count(
        &server
            .delete(&format!("{V3}/room_keys/keys?version={v}"), token, None)
            .await,
    );
    assert_eq!(count, 0);
    assert_ne!(etag6, etag5);
    let (_, all) = server
        .get(&format!("{V3}/room_keys/keys?version={v}"), token)
        .await;
    assert_eq!(all, json!({ "rooms": {} }));
    server.stop().await;
}

async fn an_existing_session_is_replaced_only_by_a_better_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let v = create_version(&server, &alice, json!({})).await;
    let (etag, _) =
        etag_count(&put_session(&server, &alice, &v, "s", key(5, 2, false, "first")).await);
    // Worse or no better: kept, and the etag does not move.
    for worse in [
        key(6, 0, false, "later index"),
        key(5, 3, false, "more forwarded"),
        key(5, 2, false, "same"),
    ] {
        let result = put_session(&server, &alice, &v, "s", worse).await;
        assert_eq!(etag_count(&result), (etag.clone(), 1));
        assert_eq!(
            get_session(&server, &alice, &v, "s").await,
            key(5, 2, false, "first")
        );
    }
    // A lower forwarded_count at the same index wins.
    let (etag2, _) = etag_count(
        &put_session(&server, &alice, &v, "s", key(5, 1, false, "less forwarded")).await,
    );
    assert_ne!(etag2, etag);
    assert_eq!(
        get_session(&server, &alice, &v, "s").await,
        key(5, 1, false, "less forwarded")
    );
    // A lower first_message_index wins whatever the forwarded_count.
    put_session(&server, &alice, &v, "s", key(2, 7, false, "earlier")).await;
    assert_eq!(
        get_session(&server, &alice, &v, "s").await,
        key(2, 7, false, "earlier")
    );
    // Verified beats unverified, even with a later index...
    put_session(&server, &alice, &v, "s", key(9, 9, true, "verified")).await;
    assert_eq!(
        get_session(&server, &alice, &v, "s").await,
        key(9, 9, true, "verified")
    );
    // ...and then only a better verified copy replaces it.
    put_session(&server, &alice, &v, "s", key(0, 0, false, "unverified")).await;
    assert_eq!(
        get_session(&server, &alice, &v, "s").await,
        key(9, 9, true, "verified")
    );
    put_session(
        &server,
        &alice,
        &v,
        "s",
        key(8, 9, true, "verified earlier"),
    )
    .await;
    assert_eq!(
        get_session(&server, &alice, &v, "s").await,
        key(8, 9, true, "verified earlier")
    );
    // The same rule inside one multi-room upload.
    let result = server
        .put(
            &format!("{V3}/room_keys/keys?version={v}"),
            Some(&alice.access_token),
            json!({ "rooms": { ROOM: { "sessions": { "s": key(8, 10, true, "worse") } } } }),
        )
        .await;
    assert_eq!(etag_count(&result).1, 1);
    assert_eq!(
        get_session(&server, &alice, &v, "s").await,
        key(8, 9, true, "verified earlier")
    );
    server.stop().await;
}

async fn uploads_go_only_to_the_current_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let token = Some(alice.access_token.as_str());
    // No backup at all: 404.
    assert_error(
        &put_session(&server, &alice, "1", "s", key(0, 0, false, "x")).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let v1 = create_version(&server, &alice, json!({})).await;
    etag_count(&put_session(&server, &alice, &v1, "s", key(0, 0, false, "x")).await);
    let v2 = create_version(&server, &alice, json!({})).await;
    for wrong in [v1.as_str(), "99", "abc"] {
        let result = put_session(&server, &alice, wrong, "s", key(0, 0, false, "y")).await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(result.1["current_version"], json!(v2), "{}", result.1);
        let result = server
            .put(
                &format!("{V3}/room_keys/keys?version={wrong}"),
                token,
                json!({ "rooms": {} }),
            )
            .await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(result.1["current_version"], json!(v2));
        let result = server
            .put(
                &format!("{V3}/room_keys/keys/{ROOM_PATH}?version={wrong}"),
                token,
                json!({ "sessions": {} }),
            )
            .await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(result.1["current_version"], json!(v2));
    }
    // The old version keeps its keys and can still be read.
    assert_eq!(
        get_session(&server, &alice, &v1, "s").await,
        key(0, 0, false, "x")
    );
    // The current one accepts uploads; its count is its own.
    let (_, count) =
        etag_count(&put_session(&server, &alice, &v2, "s", key(0, 0, false, "z")).await);
    assert_eq!(count, 1);
    server.stop().await;
}

async fn deleted_versions_lose_their_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let token = Some(alice.access_token.as_str());
    let v1 = create_version(&server, &alice, json!({})).await;
    etag_count(&put_session(&server, &alice, &v1, "s", key(0, 0, false, "x")).await);
    let (status, _) = server
        .delete(&format!("{V3}/room_keys/version/{v1}"), token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        format!("{V3}/room_keys/keys?version={v1}"),
        format!("{V3}/room_keys/keys/{ROOM_PATH}?version={v1}"),
        format!("{V3}/room_keys/keys/{ROOM_PATH}/s?version={v1}"),
    ] {
        assert_error(
            &server.get(&path, token).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
        assert_error(
            &server.delete(&path, token, None).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
    // No current version: uploads are 404.
    assert_error(
        &server.get(&format!("{V3}/room_keys/version"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &put_session(&server, &alice, &v1, "s", key(0, 0, false, "y")).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/version/{v1}"),
                token,
                json!({ "algorithm": ALG, "auth_data": {} }),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // A new version starts empty; uploads to the deleted one name it.
    let v2 = create_version(&server, &alice, json!({})).await;
    assert_ne!(v2, v1);
    let (_, version) = server.get(&format!("{V3}/room_keys/version"), token).await;
    assert_eq!(version["count"], 0);
    let result = put_session(&server, &alice, &v1, "s", key(0, 0, false, "y")).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(result.1["current_version"], json!(v2));
    let (_, all) = server
        .get(&format!("{V3}/room_keys/keys?version={v2}"), token)
        .await;
    assert_eq!(all, json!({ "rooms": {} }));
    server.stop().await;
}

async fn users_do_not_see_each_others_backups(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let bob = server.register("bob", "pw-bob-1").await;
    let bob_token = Some(bob.access_token.as_str());
    let v = create_version(&server, &alice, json!({ "public_key": "alice" })).await;
    etag_count(&put_session(&server, &alice, &v, "s", key(0, 0, false, "alice's")).await);
    assert_error(
        &server
            .get(&format!("{V3}/room_keys/version"), bob_token)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    for path in [
        format!("{V3}/room_keys/version/{v}"),
        format!("{V3}/room_keys/keys?version={v}"),
        format!("{V3}/room_keys/keys/{ROOM_PATH}/s?version={v}"),
    ] {
        assert_error(
            &server.get(&path, bob_token).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
    assert_error(
        &server
            .delete(&format!("{V3}/room_keys/version/{v}"), bob_token, None)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .delete(&format!("{V3}/room_keys/keys?version={v}"), bob_token, None)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &put_session(&server, &bob, &v, "s", key(0, 0, true, "bob's")).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Bob's own backup is numbered and filled on its own.
    let bv = create_version(&server, &bob, json!({ "public_key": "bob" })).await;
    assert_eq!(bv, "1");
    let (_, all) = server
        .get(&format!("{V3}/room_keys/keys?version={bv}"), bob_token)
        .await;
    assert_eq!(all, json!({ "rooms": {} }));
    etag_count(&put_session(&server, &bob, &bv, "s", key(0, 0, true, "bob's")).await);
    assert_eq!(
        get_session(&server, &alice, &v, "s").await,
        key(0, 0, false, "alice's")
    );
    let (_, version) = server
        .get(
            &format!("{V3}/room_keys/version"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(version["auth_data"], json!({ "public_key": "alice" }));
    server.stop().await;
}

async fn bad_requests_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "pw-alice-1").await;
    let token = Some(alice.access_token.as_str());
    let v = create_version(&server, &alice, json!({})).await;

    // No access token.
    assert_error(
        &server.get(&format!("{V3}/room_keys/version"), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    // `version` is required on every keys endpoint.
    for path in [
        format!("{V3}/room_keys/keys"),
        format!("{V3}/room_keys/keys/{ROOM_PATH}"),
        format!("{V3}/room_keys/keys/{ROOM_PATH}/s"),
    ] {
        assert_error(
            &server.get(&path, token).await,
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAM",
        );
        assert_error(
            &server.delete(&path, token, None).await,
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAM",
        );
    }
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/keys/{ROOM_PATH}/s"),
                token,
                key(0, 0, false, "x"),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    // Room ids start with `!`.
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/keys/%23alias%3Alocalhost/s?version={v}"),
                token,
                key(0, 0, false, "x"),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/keys?version={v}"),
                token,
                json!({ "rooms": { "room": { "sessions": { "s": key(0, 0, false, "x") } } } }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .get(&format!("{V3}/room_keys/keys/room?version={v}"), token)
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    // Over-long ids and oversized data.
    let long = "s".repeat(300);
    assert_error(
        &put_session(&server, &alice, &v, &long, key(0, 0, false, "x")).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let big = "x".repeat(70_000);
    assert_error(
        &put_session(&server, &alice, &v, "s", key(0, 0, false, &big)).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .post(
                &format!("{V3}/room_keys/version"),
                token,
                json!({ "algorithm": ALG, "auth_data": { "k": big } }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .post(
                &format!("{V3}/room_keys/version"),
                token,
                json!({ "algorithm": "", "auth_data": {} }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    // Too many sessions in one upload.
    let sessions: serde_json::Map<String, Value> = (0..=10_000)
        .map(|i| (format!("s{i}"), key(0, 0, false, "")))
        .collect();
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/keys/{ROOM_PATH}?version={v}"),
                token,
                json!({ "sessions": sessions }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    // Bodies of the wrong shape.
    for bad in [
        json!({ "first_message_index": -1, "forwarded_count": 0, "is_verified": false, "session_data": {} }),
        json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": "yes", "session_data": {} }),
        json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": "x" }),
        json!({ "first_message_index": 0, "is_verified": false, "session_data": {} }),
    ] {
        assert_error(
            &put_session(&server, &alice, &v, "s", bad).await,
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );
    }
    assert_error(
        &server
            .post(
                &format!("{V3}/room_keys/version"),
                token,
                json!({ "algorithm": ALG }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/keys?version={v}"),
                token,
                json!({}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .request_raw(
                Method::POST,
                &format!("{V3}/room_keys/version"),
                token,
                b"{not json".to_vec(),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    // Nothing was stored by any of it.
    let (_, version) = server.get(&format!("{V3}/room_keys/version"), token).await;
    assert_eq!(version["count"], 0);
    assert_eq!(version["version"], json!(v));
    server.stop().await;
}

async fn deactivation_deletes_the_backup(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let version = create_version(&server, &alice, json!({ "public_key": "abc" })).await;
    let (status, body) = put_session(&server, &alice, &version, "s1", key(0, 0, true, "a")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .post(
            &format!("{V3}/account/deactivate"),
            Some(&alice.access_token),
            json!({ "auth": {
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": "password-alice",
            }}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let current = server
        .storage()
        .backup_version(&alice.user_id, None)
        .await
        .expect("backup_version");
    assert!(current.is_none(), "{current:?}");
    server.stop().await;
}
