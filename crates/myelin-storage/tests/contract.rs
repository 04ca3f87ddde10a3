//! The storage contract: every behaviour the server relies on, written once
//! and run against each backend (`sqlite::…` and `postgres::…`), each test on
//! a fresh database.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use myelin_storage::{
    DynStorage, NewSession, NewUser, OpenOptions, RegistrationToken, StorageError, UiaSession,
};
use serde_json::json;

/// Stamps out one `#[tokio::test]` per backend for each test function:
/// `store` tests receive a migrated storage, `db` tests an empty database.
macro_rules! contract {
    (store: [$($store_test:ident),* $(,)?], db: [$($db_test:ident),* $(,)?] $(,)?) => {
        contract!(@backend sqlite, Sqlite, [$($store_test),*], [$($db_test),*]);
        contract!(@backend postgres, Postgres, [$($store_test),*], [$($db_test),*]);
    };
    (@backend $module:ident, $backend:ident, [$($store_test:ident),*], [$($db_test:ident),*]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $store_test() {
                    let backend = crate::common::Backend::$backend;
                    crate::common::run_with_store(backend, super::$store_test).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $db_test() {
                    let backend = crate::common::Backend::$backend;
                    crate::common::run_with_db(backend, super::$db_test).await;
                }
            )*
        }
    };
}

contract! {
    store: [
        user_create_get_and_conflict,
        user_password_and_count,
        deactivate_user_drops_password_profile_devices_and_tokens,
        profile_set_and_clear,
        search_is_case_insensitive_substring,
        search_escapes_like_wildcards,
        search_excludes_deactivated_orders_and_limits,
        session_create_and_lookup,
        session_upsert_keeps_device_name,
        delete_device_removes_its_tokens,
        delete_devices_except_keeps_one,
        device_display_name_and_touch,
        refresh_rotates_session,
        refresh_with_unknown_token_is_false,
        refresh_retry_with_same_old_token_replaces_lost_session,
        retire_predecessor_deletes_old_refresh_token,
        chained_refresh_deletes_predecessor,
        account_data_global_room_and_overwrite,
        filters_are_per_user,
        registration_token_uses_and_expiry,
        registration_token_create_list_delete,
        uia_session_lifecycle,
        uia_purge_expired,
        pool_stats_are_sane,
        concurrent_writes_all_succeed,
        closed_storage_fails_cleanly,
    ],
    db: [
        migrations_apply_once,
        concurrent_first_opens_apply_each_migration_once,
        schema_too_new_is_refused,
        migrate_false_refuses_pending_migrations,
        account_data_stream_id_increases,
    ],
}

const NOW: i64 = 1_700_000_000_000;

/// Creates `@{localpart}:test` and returns its id.
async fn create_user(store: &DynStorage, localpart: &str) -> String {
    let user_id = format!("@{localpart}:test");
    store
        .create_user(NewUser {
            user_id: user_id.clone(),
            localpart: localpart.to_owned(),
            password_hash: Some(format!("hash-of-{localpart}")),
            admin: false,
            created_ms: NOW,
            displayname: Some(localpart.to_owned()),
        })
        .await
        .expect("create_user");
    user_id
}

fn session(user_id: &str, device_id: &str, access: &[u8], refresh: Option<&[u8]>) -> NewSession {
    NewSession {
        user_id: user_id.to_owned(),
        device_id: device_id.to_owned(),
        access_digest: access.to_vec(),
        access_expires_ms: refresh.map(|_| NOW + 300_000),
        refresh_digest: refresh.map(<[u8]>::to_vec),
        refresh_expires_ms: None,
        created_ms: NOW,
    }
}

async fn access_exists(store: &DynStorage, digest: &[u8]) -> bool {
    store
        .access_token(digest)
        .await
        .expect("access_token")
        .is_some()
}

async fn refresh_exists(store: &DynStorage, digest: &[u8]) -> bool {
    store
        .refresh_token(digest)
        .await
        .expect("refresh_token")
        .is_some()
}

fn uia(session_id: &str, expires_ms: i64) -> UiaSession {
    UiaSession {
        session_id: session_id.to_owned(),
        user_id: None,
        purpose: "register".to_owned(),
        completed: Vec::new(),
        data: json!({}),
        expires_ms,
    }
}

fn token(name: &str, uses_allowed: Option<i64>, expiry_ms: Option<i64>) -> RegistrationToken {
    RegistrationToken {
        token: name.to_owned(),
        uses_allowed,
        completed: 0,
        expiry_ms,
    }
}

// ---------------------------------------------------------------- migrations

async fn migrations_apply_once(db: Arc<TestDb>) {
    let (store, first) = db.open(&OpenOptions::default()).await.expect("first open");
    assert!(
        !first.applied.is_empty(),
        "a fresh database gets every migration"
    );
    let newest = first.applied.last().map(|(version, _)| *version);
    assert_eq!(Some(first.current_version), newest);
    store.close().await;

    let (store, second) = db.open(&OpenOptions::default()).await.expect("second open");
    assert!(
        second.applied.is_empty(),
        "nothing is applied twice: {second:?}"
    );
    assert_eq!(second.current_version, first.current_version);
    store.close().await;

    let rows = db.query_i64("SELECT COUNT(*) FROM schema_migrations").await;
    assert_eq!(rows, first.applied.len() as i64, "one row per migration");
}

async fn concurrent_first_opens_apply_each_migration_once(db: Arc<TestDb>) {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let db = Arc::clone(&db);
        tasks.push(tokio::spawn(async move {
            db.open(&OpenOptions::default()).await
        }));
    }
    let mut applied = Vec::new();
    let mut stores = Vec::new();
    for task in tasks {
        let (store, report) = task.await.expect("task").expect("concurrent open");
        applied.extend(report.applied);
        stores.push(store);
    }
    let rows = db.query_i64("SELECT COUNT(*) FROM schema_migrations").await;
    assert_eq!(
        applied.len() as i64,
        rows,
        "each migration applied by exactly one opener: {applied:?}"
    );
    let mut versions: Vec<i64> = applied.iter().map(|(v, _)| *v).collect();
    versions.dedup();
    assert_eq!(versions.len(), applied.len());
    for store in stores {
        store.close().await;
    }
}

async fn schema_too_new_is_refused(db: Arc<TestDb>) {
    let (store, report) = db.open(&OpenOptions::default()).await.expect("open");
    store.close().await;
    db.execute(
        "INSERT INTO schema_migrations (version, name, applied_ms) \
         VALUES (9999, 'from the future', 0)",
    )
    .await;
    match db.open(&OpenOptions::default()).await {
        Err(StorageError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, 9999);
            assert_eq!(supported, report.current_version);
        }
        Err(e) => panic!("expected SchemaTooNew, got {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

async fn migrate_false_refuses_pending_migrations(db: Arc<TestDb>) {
    let check_only = OpenOptions {
        migrate: false,
        ..OpenOptions::default()
    };
    match db.open(&check_only).await {
        Err(StorageError::Backend(message)) => {
            assert!(message.contains("pending migrations"), "{message}")
        }
        Err(e) => panic!("expected a pending-migrations error, got {e}"),
        Ok(_) => panic!("an empty database was accepted without migrating"),
    }
    let (store, _) = db
        .open(&OpenOptions::default())
        .await
        .expect("migrating open");
    store.close().await;
    let (store, report) = db
        .open(&check_only)
        .await
        .expect("an up-to-date schema needs no migration");
    assert!(report.applied.is_empty());
    assert!(report.current_version > 0);
    store.close().await;
}

async fn account_data_stream_id_increases(db: Arc<TestDb>) {
    let (store, _) = db.open(&OpenOptions::default()).await.expect("open");
    let alice = create_user(&store, "alice").await;
    let stream_id = |room: &str, data_type: &str| {
        format!(
            "SELECT stream_id FROM account_data WHERE user_id = '{alice}' AND room_id = '{room}' \
             AND data_type = '{data_type}'"
        )
    };
    store
        .put_account_data(&alice, None, "m.a", &json!({"n": 1}))
        .await
        .expect("put");
    let first = db.query_i64(&stream_id("", "m.a")).await;
    store
        .put_account_data(&alice, Some("!room:test"), "m.b", &json!({}))
        .await
        .expect("put");
    let second = db.query_i64(&stream_id("!room:test", "m.b")).await;
    store
        .put_account_data(&alice, None, "m.a", &json!({"n": 2}))
        .await
        .expect("overwrite");
    let third = db.query_i64(&stream_id("", "m.a")).await;
    assert!(
        first < second && second < third,
        "{first} < {second} < {third}"
    );
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM account_data").await,
        2,
        "an overwrite adds no row"
    );
    store.close().await;
}

// ---------------------------------------------------------------- users

async fn user_create_get_and_conflict(store: DynStorage) {
    assert_eq!(store.user("@alice:test").await.expect("user"), None);
    let alice = create_user(&store, "alice").await;
    let user = store
        .user(&alice)
        .await
        .expect("user")
        .expect("alice exists");
    assert_eq!(user.user_id, alice);
    assert_eq!(user.localpart, "alice");
    assert_eq!(user.password_hash.as_deref(), Some("hash-of-alice"));
    assert!(!user.admin && !user.deactivated);
    assert_eq!(user.created_ms, NOW);
    assert_eq!(user.displayname.as_deref(), Some("alice"));
    assert_eq!(user.avatar_url, None);

    let again = store
        .create_user(NewUser {
            user_id: alice.clone(),
            localpart: "alice".to_owned(),
            password_hash: None,
            admin: true,
            created_ms: NOW + 1,
            displayname: None,
        })
        .await;
    assert!(matches!(again, Err(StorageError::Conflict(_))), "{again:?}");
    assert_eq!(
        store.user(&alice).await.expect("user"),
        Some(user),
        "the conflict changed nothing"
    );

    store
        .create_user(NewUser {
            user_id: "@root:test".to_owned(),
            localpart: "root".to_owned(),
            password_hash: None,
            admin: true,
            created_ms: NOW,
            displayname: None,
        })
        .await
        .expect("create admin");
    let root = store
        .user("@root:test")
        .await
        .expect("user")
        .expect("root exists");
    assert!(root.admin);
    assert_eq!(root.password_hash, None);
}

async fn user_password_and_count(store: DynStorage) {
    assert_eq!(store.count_users().await.expect("count"), 0);
    let alice = create_user(&store, "alice").await;
    create_user(&store, "bob").await;
    assert_eq!(store.count_users().await.expect("count"), 2);
    store
        .set_password_hash(&alice, "new-hash")
        .await
        .expect("set password");
    let user = store.user(&alice).await.expect("user").expect("alice");
    assert_eq!(user.password_hash.as_deref(), Some("new-hash"));
    store.deactivate_user(&alice).await.expect("deactivate");
    assert_eq!(
        store.count_users().await.expect("count"),
        2,
        "deactivated accounts still count"
    );
}

async fn deactivate_user_drops_password_profile_devices_and_tokens(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    let bob = create_user(&store, "bob").await;
    store
        .set_avatar_url(&alice, Some("mxc://test/a"))
        .await
        .expect("avatar");
    store
        .create_session(session(&alice, "D1", b"a1", Some(b"r1")), None, None)
        .await
        .expect("session");
    store
        .create_session(session(&alice, "D2", b"a2", None), None, None)
        .await
        .expect("session");
    store
        .create_session(session(&bob, "D1", b"b1", Some(b"rb1")), None, None)
        .await
        .expect("session");

    store.deactivate_user(&alice).await.expect("deactivate");

    let user = store
        .user(&alice)
        .await
        .expect("user")
        .expect("the account row stays");
    assert!(user.deactivated);
    assert_eq!(user.password_hash, None);
    assert_eq!(user.displayname, None);
    assert_eq!(user.avatar_url, None);
    assert!(store.devices(&alice).await.expect("devices").is_empty());
    assert!(!access_exists(&store, b"a1").await);
    assert!(!access_exists(&store, b"a2").await);
    assert!(!refresh_exists(&store, b"r1").await);
    // Other accounts are untouched.
    assert!(access_exists(&store, b"b1").await);
    assert!(refresh_exists(&store, b"rb1").await);
    assert_eq!(store.devices(&bob).await.expect("devices").len(), 1);
}

async fn profile_set_and_clear(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .set_displayname(&alice, Some("Alice Liddell"))
        .await
        .expect("displayname");
    store
        .set_avatar_url(&alice, Some("mxc://test/avatar"))
        .await
        .expect("avatar");
    let user = store.user(&alice).await.expect("user").expect("alice");
    assert_eq!(user.displayname.as_deref(), Some("Alice Liddell"));
    assert_eq!(user.avatar_url.as_deref(), Some("mxc://test/avatar"));

    store
        .set_displayname(&alice, None)
        .await
        .expect("clear displayname");
    store
        .set_avatar_url(&alice, None)
        .await
        .expect("clear avatar");
    let user = store.user(&alice).await.expect("user").expect("alice");
    assert_eq!(user.displayname, None);
    assert_eq!(user.avatar_url, None);

    // Setting on an unknown account is not an error and creates nothing.
    store
        .set_displayname("@nobody:test", Some("x"))
        .await
        .expect("unknown user");
    assert_eq!(store.user("@nobody:test").await.expect("user"), None);
}

// ---------------------------------------------------------------- search

async fn search_is_case_insensitive_substring(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    let bob = create_user(&store, "bob").await;
    store
        .set_displayname(&alice, Some("Wonderland Girl"))
        .await
        .expect("displayname");
    store
        .set_displayname(&bob, Some("ÉMILE Zola"))
        .await
        .expect("displayname");
    store
        .set_avatar_url(&bob, Some("mxc://test/bob"))
        .await
        .expect("avatar");

    let ids = |hits: Vec<myelin_storage::DirectoryUser>| {
        hits.into_iter().map(|h| h.user_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.search_users("ALI", 10).await.expect("search")),
        [alice.as_str()]
    );
    assert_eq!(
        ids(store.search_users("derLAND", 10).await.expect("search")),
        [alice.as_str()]
    );
    assert_eq!(
        ids(store.search_users(":TEST", 10).await.expect("search")),
        [alice.as_str(), bob.as_str()]
    );
    // Case folding is not limited to ASCII.
    assert_eq!(
        ids(store.search_users("émile", 10).await.expect("search")),
        [bob.as_str()]
    );
    assert!(
        store
            .search_users("carol", 10)
            .await
            .expect("search")
            .is_empty()
    );

    let hit = store.search_users("zola", 10).await.expect("search");
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0].displayname.as_deref(), Some("ÉMILE Zola"));
    assert_eq!(hit[0].avatar_url.as_deref(), Some("mxc://test/bob"));
}

async fn search_escapes_like_wildcards(store: DynStorage) {
    let percent = create_user(&store, "percent").await;
    let plain = create_user(&store, "plain").await;
    let under = create_user(&store, "under").await;
    store
        .set_displayname(&percent, Some("100% sure"))
        .await
        .expect("displayname");
    store
        .set_displayname(&plain, Some("100 percent"))
        .await
        .expect("displayname");
    store
        .set_displayname(&under, Some("snake_case back\\slash"))
        .await
        .expect("displayname");

    let ids = |hits: Vec<myelin_storage::DirectoryUser>| {
        hits.into_iter().map(|h| h.user_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.search_users("0%", 10).await.expect("search")),
        [percent.as_str()]
    );
    assert_eq!(
        ids(store.search_users("%", 10).await.expect("search")),
        [percent.as_str()]
    );
    assert_eq!(
        ids(store.search_users("e_c", 10).await.expect("search")),
        [under.as_str()]
    );
    assert_eq!(
        ids(store.search_users("_", 10).await.expect("search")),
        [under.as_str()]
    );
    assert_eq!(
        ids(store.search_users("k\\s", 10).await.expect("search")),
        [under.as_str()]
    );
    assert!(
        store
            .search_users("100_", 10)
            .await
            .expect("search")
            .is_empty()
    );
}

async fn search_excludes_deactivated_orders_and_limits(store: DynStorage) {
    for name in ["dora", "carol", "erin", "bob", "alice"] {
        create_user(&store, name).await;
    }
    store
        .deactivate_user("@carol:test")
        .await
        .expect("deactivate");
    let hits: Vec<String> = store
        .search_users("test", 10)
        .await
        .expect("search")
        .into_iter()
        .map(|h| h.user_id)
        .collect();
    assert_eq!(
        hits,
        ["@alice:test", "@bob:test", "@dora:test", "@erin:test"]
    );
    let hits: Vec<String> = store
        .search_users("test", 2)
        .await
        .expect("search")
        .into_iter()
        .map(|h| h.user_id)
        .collect();
    assert_eq!(hits, ["@alice:test", "@bob:test"]);
    assert!(
        store
            .search_users("carol", 10)
            .await
            .expect("search")
            .is_empty()
    );
    assert!(
        store
            .search_users("test", 0)
            .await
            .expect("search")
            .is_empty()
    );
}

// ---------------------------------------------------------------- sessions

async fn session_create_and_lookup(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .create_session(
            session(&alice, "PHONE", b"access-1", Some(b"refresh-1")),
            Some("Phone"),
            Some("10.0.0.1"),
        )
        .await
        .expect("session with refresh");
    store
        .create_session(session(&alice, "LAPTOP", b"access-2", None), None, None)
        .await
        .expect("plain session");

    let token = store
        .access_token(b"access-1")
        .await
        .expect("lookup")
        .expect("access-1");
    assert_eq!(token.user_id, alice);
    assert_eq!(token.device_id, "PHONE");
    assert_eq!(token.expires_ms, Some(NOW + 300_000));
    assert_eq!(token.digest, b"access-1");
    assert!(!token.has_predecessor);
    let refresh = store
        .refresh_token(b"refresh-1")
        .await
        .expect("lookup")
        .expect("refresh-1");
    assert_eq!(
        (refresh.user_id.as_str(), refresh.device_id.as_str()),
        (alice.as_str(), "PHONE")
    );
    assert_eq!(refresh.digest, b"refresh-1");
    assert_eq!(refresh.expires_ms, None);

    let token = store
        .access_token(b"access-2")
        .await
        .expect("lookup")
        .expect("access-2");
    assert_eq!(
        token.expires_ms, None,
        "a token without refresh never expires"
    );
    assert_eq!(store.access_token(b"nope").await.expect("lookup"), None);
    assert_eq!(store.refresh_token(b"nope").await.expect("lookup"), None);

    // Expired tokens are still returned: the caller checks expiry.
    let mut expired = session(&alice, "OLD", b"access-3", None);
    expired.access_expires_ms = Some(1);
    store
        .create_session(expired, None, None)
        .await
        .expect("expired session");
    assert_eq!(
        store
            .access_token(b"access-3")
            .await
            .expect("lookup")
            .expect("access-3")
            .expires_ms,
        Some(1)
    );

    let device = store
        .device(&alice, "PHONE")
        .await
        .expect("device")
        .expect("PHONE");
    assert_eq!(device.display_name.as_deref(), Some("Phone"));
    assert_eq!(device.last_seen_ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(device.last_seen_ms, Some(NOW));
    assert_eq!(device.created_ms, NOW);
    let ids: Vec<String> = store
        .devices(&alice)
        .await
        .expect("devices")
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, ["LAPTOP", "OLD", "PHONE"]);

    // A token digest is unique.
    let duplicate = store
        .create_session(session(&alice, "OTHER", b"access-1", None), None, None)
        .await;
    assert!(
        matches!(duplicate, Err(StorageError::Conflict(_))),
        "{duplicate:?}"
    );
    assert_eq!(
        store.device(&alice, "OTHER").await.expect("device"),
        None,
        "the failed session left no device"
    );
}

async fn session_upsert_keeps_device_name(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .create_session(
            session(&alice, "D", b"a1", None),
            Some("First name"),
            Some("10.0.0.1"),
        )
        .await
        .expect("first login");
    let mut second = session(&alice, "D", b"a2", None);
    second.created_ms = NOW + 1000;
    store
        .create_session(second, Some("Second name"), Some("10.0.0.2"))
        .await
        .expect("second login");

    let device = store.device(&alice, "D").await.expect("device").expect("D");
    assert_eq!(device.display_name.as_deref(), Some("First name"));
    assert_eq!(device.last_seen_ip.as_deref(), Some("10.0.0.2"));
    assert_eq!(device.last_seen_ms, Some(NOW + 1000));
    assert_eq!(device.created_ms, NOW);
    assert_eq!(store.devices(&alice).await.expect("devices").len(), 1);
    assert!(access_exists(&store, b"a1").await && access_exists(&store, b"a2").await);
}

async fn delete_device_removes_its_tokens(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .create_session(session(&alice, "D1", b"a1", Some(b"r1")), None, None)
        .await
        .expect("session");
    store
        .create_session(session(&alice, "D2", b"a2", Some(b"r2")), None, None)
        .await
        .expect("session");
    store
        .refresh_session(b"r1", session(&alice, "D1", b"a1b", Some(b"r1b")))
        .await
        .expect("refresh");

    assert!(store.delete_device(&alice, "D1").await.expect("delete"));
    assert_eq!(store.device(&alice, "D1").await.expect("device"), None);
    for digest in [&b"a1"[..], b"a1b"] {
        assert!(!access_exists(&store, digest).await);
    }
    for digest in [&b"r1"[..], b"r1b"] {
        assert!(!refresh_exists(&store, digest).await);
    }
    assert!(access_exists(&store, b"a2").await && refresh_exists(&store, b"r2").await);
    assert!(
        !store
            .delete_device(&alice, "D1")
            .await
            .expect("delete again")
    );
    assert!(
        !store
            .delete_device("@nobody:test", "D2")
            .await
            .expect("delete unknown")
    );
}

async fn delete_devices_except_keeps_one(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    let bob = create_user(&store, "bob").await;
    for (device, access, refresh) in [
        ("D1", b"a1", b"r1"),
        ("D2", b"a2", b"r2"),
        ("D3", b"a3", b"r3"),
    ] {
        store
            .create_session(session(&alice, device, access, Some(refresh)), None, None)
            .await
            .expect("session");
    }
    store
        .create_session(session(&bob, "D1", b"b1", None), None, None)
        .await
        .expect("session");

    store
        .delete_devices_except(&alice, Some("D2"))
        .await
        .expect("delete others");
    let ids: Vec<String> = store
        .devices(&alice)
        .await
        .expect("devices")
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, ["D2"]);
    assert!(access_exists(&store, b"a2").await && refresh_exists(&store, b"r2").await);
    assert!(!access_exists(&store, b"a1").await && !refresh_exists(&store, b"r3").await);

    store
        .delete_devices_except(&alice, None)
        .await
        .expect("delete all");
    assert!(store.devices(&alice).await.expect("devices").is_empty());
    assert!(!access_exists(&store, b"a2").await && !refresh_exists(&store, b"r2").await);
    assert!(
        access_exists(&store, b"b1").await,
        "another user's device is untouched"
    );
}

async fn device_display_name_and_touch(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .create_session(session(&alice, "D", b"a", None), None, Some("10.0.0.1"))
        .await
        .expect("session");
    assert!(
        store
            .set_device_display_name(&alice, "D", Some("Desk"))
            .await
            .expect("rename")
    );
    assert!(
        !store
            .set_device_display_name(&alice, "NOPE", Some("x"))
            .await
            .expect("rename unknown")
    );
    store
        .touch_device(&alice, "D", Some("10.0.0.9"), NOW + 5)
        .await
        .expect("touch");
    let device = store.device(&alice, "D").await.expect("device").expect("D");
    assert_eq!(device.display_name.as_deref(), Some("Desk"));
    assert_eq!(device.last_seen_ip.as_deref(), Some("10.0.0.9"));
    assert_eq!(device.last_seen_ms, Some(NOW + 5));
    store
        .touch_device(&alice, "D", None, NOW + 6)
        .await
        .expect("touch without ip");
    let device = store.device(&alice, "D").await.expect("device").expect("D");
    assert_eq!(
        device.last_seen_ip.as_deref(),
        Some("10.0.0.9"),
        "an unknown address keeps the last one"
    );
    assert_eq!(device.last_seen_ms, Some(NOW + 6));
    assert!(
        store
            .set_device_display_name(&alice, "D", None)
            .await
            .expect("clear name")
    );
    assert_eq!(
        store
            .device(&alice, "D")
            .await
            .expect("device")
            .expect("D")
            .display_name,
        None
    );
}

// ---------------------------------------------------------------- refresh

async fn refresh_rotates_session(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .create_session(session(&alice, "D", b"a1", Some(b"r1")), None, None)
        .await
        .expect("login");

    assert!(
        store
            .refresh_session(b"r1", session(&alice, "D", b"a2", Some(b"r2")))
            .await
            .expect("refresh")
    );
    assert!(
        !access_exists(&store, b"a1").await,
        "the old access token dies at once"
    );
    assert!(
        refresh_exists(&store, b"r1").await,
        "the old refresh token lives until the new one is used"
    );
    let new = store
        .access_token(b"a2")
        .await
        .expect("lookup")
        .expect("a2");
    assert!(new.has_predecessor);
    assert_eq!(
        (new.user_id.as_str(), new.device_id.as_str()),
        (alice.as_str(), "D")
    );
    assert!(refresh_exists(&store, b"r2").await);
    assert_eq!(store.devices(&alice).await.expect("devices").len(), 1);
}

async fn refresh_with_unknown_token_is_false(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .create_session(session(&alice, "D", b"a1", Some(b"r1")), None, None)
        .await
        .expect("login");
    assert!(
        !store
            .refresh_session(b"r-unknown", session(&alice, "D", b"a2", Some(b"r2")))
            .await
            .expect("refresh")
    );
    assert!(!access_exists(&store, b"a2").await, "nothing was stored");
    assert!(!refresh_exists(&store, b"r2").await);
    assert!(
        access_exists(&store, b"a1").await,
        "the existing session is untouched"
    );
}

async fn refresh_retry_with_same_old_token_replaces_lost_session(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .create_session(session(&alice, "D", b"a1", Some(b"r1")), None, None)
        .await
        .expect("login");
    assert!(
        store
            .refresh_session(b"r1", session(&alice, "D", b"a2", Some(b"r2")))
            .await
            .expect("refresh")
    );
    // The client lost that response and refreshes with r1 again.
    assert!(
        store
            .refresh_session(b"r1", session(&alice, "D", b"a3", Some(b"r3")))
            .await
            .expect("retry")
    );
    assert!(
        !access_exists(&store, b"a2").await,
        "the lost session is dropped"
    );
    assert!(!refresh_exists(&store, b"r2").await);
    assert!(
        store
            .access_token(b"a3")
            .await
            .expect("lookup")
            .expect("a3")
            .has_predecessor
    );
    assert!(refresh_exists(&store, b"r3").await);
    assert!(
        refresh_exists(&store, b"r1").await,
        "still retryable until a3 is used"
    );

    store
        .retire_predecessor(b"a3")
        .await
        .expect("first use of a3");
    assert!(!refresh_exists(&store, b"r1").await);
    assert!(
        !store
            .refresh_session(b"r1", session(&alice, "D", b"a4", Some(b"r4")))
            .await
            .expect("late retry")
    );
    assert!(
        access_exists(&store, b"a3").await,
        "a late retry changes nothing"
    );
}

async fn retire_predecessor_deletes_old_refresh_token(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .create_session(session(&alice, "D", b"a1", Some(b"r1")), None, None)
        .await
        .expect("login");
    store
        .refresh_session(b"r1", session(&alice, "D", b"a2", Some(b"r2")))
        .await
        .expect("refresh");

    store.retire_predecessor(b"a2").await.expect("retire");
    assert!(!refresh_exists(&store, b"r1").await);
    let token = store
        .access_token(b"a2")
        .await
        .expect("lookup")
        .expect("a2");
    assert!(!token.has_predecessor);
    assert!(
        refresh_exists(&store, b"r2").await,
        "the new refresh token stays"
    );

    // Idempotent, and harmless on tokens without a predecessor or unknown ones.
    store.retire_predecessor(b"a2").await.expect("retire again");
    store
        .retire_predecessor(b"unknown")
        .await
        .expect("retire unknown");
    assert!(access_exists(&store, b"a2").await && refresh_exists(&store, b"r2").await);
}

async fn chained_refresh_deletes_predecessor(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .create_session(session(&alice, "D", b"a1", Some(b"r1")), None, None)
        .await
        .expect("login");
    store
        .refresh_session(b"r1", session(&alice, "D", b"a2", Some(b"r2")))
        .await
        .expect("refresh 1");
    // a2 is never used; the client refreshes again with r2.
    assert!(
        store
            .refresh_session(b"r2", session(&alice, "D", b"a3", Some(b"r3")))
            .await
            .expect("refresh 2")
    );
    assert!(
        !refresh_exists(&store, b"r1").await,
        "r1 is superseded twice over"
    );
    assert!(!access_exists(&store, b"a2").await);
    assert!(
        refresh_exists(&store, b"r2").await,
        "r2 lives until a3 is used"
    );
    assert!(
        store
            .access_token(b"a3")
            .await
            .expect("lookup")
            .expect("a3")
            .has_predecessor
    );
    assert!(
        !store
            .refresh_session(b"r1", session(&alice, "D", b"a4", Some(b"r4")))
            .await
            .expect("stale")
    );

    store.retire_predecessor(b"a3").await.expect("retire");
    assert!(!refresh_exists(&store, b"r2").await);
    assert!(refresh_exists(&store, b"r3").await && access_exists(&store, b"a3").await);
}

// ---------------------------------------------------------------- account data, filters

async fn account_data_global_room_and_overwrite(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    let bob = create_user(&store, "bob").await;
    let room = Some("!room:test");
    assert_eq!(
        store
            .account_data(&alice, None, "m.push_rules")
            .await
            .expect("get"),
        None
    );

    store
        .put_account_data(&alice, None, "m.tag", &json!({"scope": "global"}))
        .await
        .expect("put global");
    store
        .put_account_data(&alice, room, "m.tag", &json!({"scope": "room"}))
        .await
        .expect("put room");
    assert_eq!(
        store
            .account_data(&alice, None, "m.tag")
            .await
            .expect("get"),
        Some(json!({"scope": "global"}))
    );
    assert_eq!(
        store
            .account_data(&alice, room, "m.tag")
            .await
            .expect("get"),
        Some(json!({"scope": "room"}))
    );
    assert_eq!(
        store
            .account_data(&alice, Some("!other:test"), "m.tag")
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        store.account_data(&bob, None, "m.tag").await.expect("get"),
        None
    );

    let content =
        json!({"nested": {"list": [1, 2.5, "three", null, true]}, "nul": "a\u{0}b", "emoji": "🦀"});
    store
        .put_account_data(&alice, None, "m.tag", &content)
        .await
        .expect("overwrite");
    assert_eq!(
        store
            .account_data(&alice, None, "m.tag")
            .await
            .expect("get"),
        Some(content)
    );
    assert_eq!(
        store
            .account_data(&alice, room, "m.tag")
            .await
            .expect("get"),
        Some(json!({"scope": "room"}))
    );
}

async fn filters_are_per_user(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    let bob = create_user(&store, "bob").await;
    let first = store
        .create_filter(&alice, &json!({"room": {"timeline": {"limit": 10}}}))
        .await
        .expect("create");
    let second = store
        .create_filter(&alice, &json!({"presence": {"not_types": ["*"]}}))
        .await
        .expect("create");
    let bobs = store
        .create_filter(&bob, &json!({"event_fields": ["type"]}))
        .await
        .expect("create");
    assert_ne!(first, second);
    assert!(!first.is_empty() && !bobs.is_empty());

    assert_eq!(
        store.filter(&alice, &first).await.expect("get"),
        Some(json!({"room": {"timeline": {"limit": 10}}}))
    );
    assert_eq!(
        store.filter(&alice, &second).await.expect("get"),
        Some(json!({"presence": {"not_types": ["*"]}}))
    );
    assert_eq!(
        store.filter(&bob, &bobs).await.expect("get"),
        Some(json!({"event_fields": ["type"]}))
    );
    assert_eq!(
        store.filter(&bob, &first).await.expect("get"),
        None,
        "another user's filter is invisible"
    );
    assert_eq!(store.filter(&alice, &bobs).await.expect("get"), None);
    assert_eq!(
        store.filter(&alice, "not-a-number").await.expect("get"),
        None
    );
}

// ---------------------------------------------------------------- registration tokens

async fn registration_token_uses_and_expiry(store: DynStorage) {
    store
        .create_registration_token(token("twice", Some(2), None))
        .await
        .expect("create");
    store
        .create_registration_token(token("expiring", None, Some(NOW)))
        .await
        .expect("create");
    store
        .create_registration_token(token("unlimited", None, None))
        .await
        .expect("create");
    store
        .create_registration_token(token("never", Some(0), None))
        .await
        .expect("create");

    assert!(
        store
            .use_registration_token("twice", NOW)
            .await
            .expect("use 1")
    );
    assert!(
        store
            .use_registration_token("twice", NOW)
            .await
            .expect("use 2")
    );
    assert!(
        !store
            .use_registration_token("twice", NOW)
            .await
            .expect("use 3")
    );
    assert_eq!(
        store
            .registration_token("twice")
            .await
            .expect("get")
            .expect("twice")
            .completed,
        2
    );

    assert!(
        store
            .use_registration_token("expiring", NOW - 1)
            .await
            .expect("before expiry")
    );
    assert!(
        !store
            .use_registration_token("expiring", NOW)
            .await
            .expect("at expiry")
    );
    assert_eq!(
        store
            .registration_token("expiring")
            .await
            .expect("get")
            .expect("expiring")
            .completed,
        1
    );

    for _ in 0..5 {
        assert!(
            store
                .use_registration_token("unlimited", NOW)
                .await
                .expect("use")
        );
    }
    assert_eq!(
        store
            .registration_token("unlimited")
            .await
            .expect("get")
            .expect("unlimited")
            .completed,
        5
    );
    assert!(
        !store
            .use_registration_token("never", NOW)
            .await
            .expect("use")
    );
    assert!(
        !store
            .use_registration_token("unknown", NOW)
            .await
            .expect("use unknown")
    );
}

async fn registration_token_create_list_delete(store: DynStorage) {
    assert!(store.registration_tokens().await.expect("list").is_empty());
    let b = RegistrationToken {
        token: "bbb".to_owned(),
        uses_allowed: Some(3),
        completed: 1,
        expiry_ms: Some(NOW),
    };
    store
        .create_registration_token(b.clone())
        .await
        .expect("create");
    store
        .create_registration_token(token("aaa", None, None))
        .await
        .expect("create");
    let again = store
        .create_registration_token(token("bbb", None, None))
        .await;
    assert!(matches!(again, Err(StorageError::Conflict(_))), "{again:?}");

    assert_eq!(
        store.registration_token("bbb").await.expect("get"),
        Some(b.clone())
    );
    assert_eq!(store.registration_token("zzz").await.expect("get"), None);
    assert_eq!(
        store.registration_tokens().await.expect("list"),
        [token("aaa", None, None), b]
    );

    assert!(
        store
            .delete_registration_token("aaa")
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_registration_token("aaa")
            .await
            .expect("delete again")
    );
    assert_eq!(store.registration_token("aaa").await.expect("get"), None);
    assert_eq!(store.registration_tokens().await.expect("list").len(), 1);
}

// ---------------------------------------------------------------- UIA

async fn uia_session_lifecycle(store: DynStorage) {
    let mut session = uia("s1", NOW + 1000);
    session.user_id = Some("@alice:test".to_owned());
    session.purpose = "deactivate".to_owned();
    store
        .create_uia_session(session.clone())
        .await
        .expect("create");
    let again = store.create_uia_session(uia("s1", NOW)).await;
    assert!(matches!(again, Err(StorageError::Conflict(_))), "{again:?}");

    assert_eq!(
        store.uia_session("s1", NOW).await.expect("get"),
        Some(session.clone())
    );
    assert_eq!(
        store.uia_session("s1", NOW + 1000).await.expect("get"),
        None,
        "expired at expires_ms"
    );
    assert_eq!(store.uia_session("nope", NOW).await.expect("get"), None);

    store
        .complete_uia_stage("s1", "m.login.dummy", &json!({"a": 1}))
        .await
        .expect("stage");
    store
        .complete_uia_stage("s1", "m.login.registration_token", &json!({"token": "t"}))
        .await
        .expect("stage");
    store
        .complete_uia_stage("s1", "m.login.dummy", &json!({"b": 2}))
        .await
        .expect("stage again");
    let got = store
        .uia_session("s1", NOW)
        .await
        .expect("get")
        .expect("s1");
    assert_eq!(
        got.completed,
        ["m.login.dummy", "m.login.registration_token"],
        "a stage is recorded once"
    );
    assert_eq!(got.data, json!({"b": 2}), "the data is replaced");
    assert_eq!(
        (got.user_id, got.purpose),
        (session.user_id, session.purpose)
    );

    store
        .complete_uia_stage("nope", "m.login.dummy", &json!({}))
        .await
        .expect("unknown session");
    store.delete_uia_session("s1").await.expect("delete");
    assert_eq!(store.uia_session("s1", NOW).await.expect("get"), None);
    store.delete_uia_session("s1").await.expect("delete again");
}

async fn uia_purge_expired(store: DynStorage) {
    store
        .create_uia_session(uia("old-1", NOW - 10))
        .await
        .expect("create");
    store
        .create_uia_session(uia("old-2", NOW))
        .await
        .expect("create");
    store
        .create_uia_session(uia("live", NOW + 10))
        .await
        .expect("create");
    assert_eq!(
        store.purge_expired_uia_sessions(NOW).await.expect("purge"),
        2
    );
    assert_eq!(
        store
            .purge_expired_uia_sessions(NOW)
            .await
            .expect("purge again"),
        0
    );
    assert!(store.uia_session("live", NOW).await.expect("get").is_some());
    assert_eq!(
        store.uia_session("old-1", NOW - 100).await.expect("get"),
        None,
        "purged, not just expired"
    );
}

// ---------------------------------------------------------------- operations

async fn pool_stats_are_sane(store: DynStorage) {
    let _ = store.count_users().await.expect("a query");
    let stats = store.pool_stats();
    assert!(stats.size >= 1, "{stats:?}");
    assert!(stats.in_use <= stats.size, "{stats:?}");
    assert_eq!(stats.in_use, 0, "nothing is running: {stats:?}");
    assert!(["sqlite", "postgres"].contains(&store.backend_name()));
}

/// Writers from many tasks at once all succeed (no "database is locked"),
/// with reads interleaved.
async fn concurrent_writes_all_succeed(store: DynStorage) {
    const TASKS: usize = 8;
    const WRITES_PER_TASK: usize = 20;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let user_id = create_user(&store, &format!("user{task}")).await;
            for i in 0..WRITES_PER_TASK {
                let access = format!("access-{task}-{i}");
                store
                    .create_session(
                        session(&user_id, &format!("D{i}"), access.as_bytes(), None),
                        None,
                        None,
                    )
                    .await
                    .expect("concurrent session");
                store
                    .put_account_data(&user_id, None, "m.counter", &json!({ "i": i }))
                    .await
                    .expect("concurrent account data");
                store
                    .create_filter(&user_id, &json!({ "i": i }))
                    .await
                    .expect("concurrent filter");
                assert!(
                    access_exists(&store, access.as_bytes()).await,
                    "a write is visible to the next read"
                );
            }
            user_id
        }));
    }
    for task in tasks {
        let user_id = task.await.expect("writer task");
        assert_eq!(
            store.devices(&user_id).await.expect("devices").len(),
            WRITES_PER_TASK
        );
        let last = json!({ "i": WRITES_PER_TASK - 1 });
        assert_eq!(
            store
                .account_data(&user_id, None, "m.counter")
                .await
                .expect("get"),
            Some(last)
        );
    }
    assert_eq!(store.count_users().await.expect("count"), TASKS as i64);
}

async fn closed_storage_fails_cleanly(store: DynStorage) {
    create_user(&store, "alice").await;
    store.close().await;
    let started = Instant::now();
    assert!(
        store.user("@alice:test").await.is_err(),
        "a read after close fails"
    );
    assert!(
        store.set_displayname("@alice:test", None).await.is_err(),
        "a write after close fails"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "and fails at once"
    );
}

// ---------------------------------------------------------------- backend-specific opening

#[tokio::test]
async fn postgres_unreachable_is_a_quick_connect_error() {
    let started = Instant::now();
    let result = myelin_storage::postgres::PostgresStorage::open(
        "postgres://postgres@127.0.0.1:1/none",
        &OpenOptions::default(),
    )
    .await;
    match result {
        Err(StorageError::Connect(message)) => {
            assert!(message.contains("127.0.0.1:1"), "{message}")
        }
        Err(e) => panic!("expected a Connect error, got {e}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn sqlite_unopenable_path_is_a_connect_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let result = myelin_storage::sqlite::SqliteStorage::open(
        &file.join("myelin.db"),
        &OpenOptions::default(),
    )
    .await;
    assert!(
        matches!(result, Err(StorageError::Connect(_))),
        "{:?}",
        result.err()
    );
}
