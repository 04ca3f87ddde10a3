//! The storage contract: every behaviour the server relies on, written once
//! and run against each backend (`sqlite::…` and `postgres::…`), each test on
//! a fresh database.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use myelin_storage::rooms::STATE_CHAIN_LENGTH_MAX;
use myelin_storage::search::search_words;
use myelin_storage::{
    DehydratedDevice, Direction, DynStorage, EventStatus, NewEvent, NewHead, NewSession, NewUser,
    OpenOptions, PersistedEvent, Receipt, RegistrationToken, RelationsQuery, RoomAlias, RoomMember,
    StateBefore, StorageError, StorageResult, StoredEvent, Stream, TopoPos, TxnKey, UiaSession,
    UserMembership,
};
use myelin_storage::{MediaContent, MediaRecord, MediaThumbnail};
use myelin_storage::{PushAction, Pusher, SearchKey, SearchOrder, SearchPage, SearchQuery};
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
        room_create_get_and_conflict,
        given_state_refuses_bad_references_and_writes_nothing,
        given_state_soft_failed_and_rejected_keep_the_head,
        stream_positions_increase,
        max_stream_pos_counts_written_positions,
        persist_events_is_all_or_nothing,
        persist_chain_tracks_state,
        forward_extremities_follow_prev_events,
        memberships_follow_member_events,
        forget_room_is_cleared_by_a_new_membership,
        txn_ids_make_sends_idempotent,
        duplicate_event_id_conflicts_and_writes_nothing,
        redaction_marks_its_target,
        room_events_by_stream_ranges,
        rooms_events_by_stream_reads_several_rooms,
        room_events_topological_pages,
        non_normal_events_are_stored_but_not_served,
        events_bulk_lookup,
        aliases_create_get_delete,
        receipts_put_replace_and_list,
        user_receipts_are_the_users_own,
        account_data_between_reads_changes,
        concurrent_persists_into_different_rooms,
        persist_into_unknown_room_fails,
        directory_visibility_and_listing,
        reports_are_stored_in_order,
        room_events_by_ts_nearest_first,
        relations_are_recorded_paged_and_forgotten_on_redaction,
        relation_aggregations_and_thread_roots,
        search_finds_words_in_rooms_up_to_a_position,
        search_orders_pages_and_filters,
        push_actions_count_list_and_are_forgotten,
        pushers_put_list_progress_and_delete,
        to_device_inbox_once_per_txn_read_in_order_and_acknowledged,
        keys_device_keys_put_query_and_change_log,
        keys_one_time_keys_upload_count_and_conflict,
        keys_claim_one_time_then_fallback,
        keys_concurrent_claims_hand_out_each_key_once,
        backup_versions_number_update_and_delete,
        backup_sessions_replacement_etag_and_count,
        backup_sessions_scopes_and_wrong_versions,
        backup_concurrent_creations_get_distinct_versions,
        keys_cross_signing_keys_replace_and_log_changes,
        keys_signatures_stored_per_target_and_replaced,
        dehydrated_device_replace_and_delete,
        media_create_complete_and_thumbnails,
    ],
    db: [
        migrations_apply_once,
        concurrent_first_opens_apply_each_migration_once,
        schema_too_new_is_refused,
        migrate_false_refuses_pending_migrations,
        account_data_stream_id_increases,
        state_chains_longer_than_the_max_resolve,
        given_state_forks_merges_and_removes,
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
        .put_account_data(
            &alice,
            None,
            "m.a",
            &json!({"n": 1}),
            store
                .next_stream_pos(Stream::AccountData)
                .await
                .expect("pos"),
        )
        .await
        .expect("put");
    let first = db.query_i64(&stream_id("", "m.a")).await;
    store
        .put_account_data(
            &alice,
            Some("!room:test"),
            "m.b",
            &json!({}),
            store
                .next_stream_pos(Stream::AccountData)
                .await
                .expect("pos"),
        )
        .await
        .expect("put");
    let second = db.query_i64(&stream_id("!room:test", "m.b")).await;
    store
        .put_account_data(
            &alice,
            None,
            "m.a",
            &json!({"n": 2}),
            store
                .next_stream_pos(Stream::AccountData)
                .await
                .expect("pos"),
        )
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
        .put_account_data(
            &alice,
            None,
            "m.tag",
            &json!({"scope": "global"}),
            store
                .next_stream_pos(Stream::AccountData)
                .await
                .expect("pos"),
        )
        .await
        .expect("put global");
    store
        .put_account_data(
            &alice,
            room,
            "m.tag",
            &json!({"scope": "room"}),
            store
                .next_stream_pos(Stream::AccountData)
                .await
                .expect("pos"),
        )
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
        .put_account_data(
            &alice,
            None,
            "m.tag",
            &content,
            store
                .next_stream_pos(Stream::AccountData)
                .await
                .expect("pos"),
        )
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
                    .put_account_data(
                        &user_id,
                        None,
                        "m.counter",
                        &json!({ "i": i }),
                        store
                            .next_stream_pos(Stream::AccountData)
                            .await
                            .expect("pos"),
                    )
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

// ---------------------------------------------------------------- rooms

const ROOM_VERSION: &str = "12";

/// `(type, state_key) → event id`, the shape state is compared in.
type StateMap = BTreeMap<(String, String), String>;

/// One room, written as its room writer would: each event gets the next
/// stream position, one more than the greatest depth, and the previous
/// event as its only prev_event.
struct TestRoom {
    store: DynStorage,
    nid: i64,
    room_id: String,
    last: Vec<String>,
    depth: i64,
}

impl TestRoom {
    async fn create(store: &DynStorage, room_id: &str) -> Self {
        let record = store
            .create_room(room_id, ROOM_VERSION, NOW)
            .await
            .expect("create_room");
        Self {
            store: Arc::clone(store),
            nid: record.room_nid,
            room_id: record.room_id,
            last: Vec::new(),
            depth: 0,
        }
    }

    /// The next event (not yet persisted, stream position 0).
    fn event(&self, event_id: &str, kind: &str, state_key: Option<&str>) -> NewEvent {
        NewEvent {
            room_nid: self.nid,
            event_id: event_id.to_owned(),
            kind: kind.to_owned(),
            state_key: state_key.map(str::to_owned),
            sender: "@alice:test".to_owned(),
            origin_server_ts: NOW + self.depth,
            depth: self.depth + 1,
            json: json!({ "event_id": event_id, "type": kind, "state_key": state_key }).to_string(),
            prev_events: self.last.clone(),
            membership: None,
            redacts: None,
            txn: None,
            stream_pos: 0,
            slot_epoch: 0,
            push_actions: Vec::new(),
            status: EventStatus::Normal,
            state_before: StateBefore::Current,
            new_head: None,
        }
    }

    /// Persists `event` at a fresh stream position; a `Normal` event becomes
    /// the next one's prev_event.
    async fn send(&mut self, mut event: NewEvent) -> PersistedEvent {
        event.stream_pos = self
            .store
            .next_stream_pos(Stream::Events)
            .await
            .expect("next_stream_pos");
        let persisted = self
            .store
            .persist_event(event.clone())
            .await
            .unwrap_or_else(|e| panic!("persist {}: {e}", event.event_id));
        assert_eq!(persisted.stream_pos, event.stream_pos);
        if event.status == EventStatus::Normal {
            self.last = vec![event.event_id];
            self.depth = self.depth.max(event.depth);
        }
        persisted
    }

    async fn state(&mut self, event_id: &str, kind: &str, state_key: &str) -> PersistedEvent {
        let event = self.event(event_id, kind, Some(state_key));
        self.send(event).await
    }

    async fn member(&mut self, event_id: &str, user_id: &str, membership: &str) -> PersistedEvent {
        let mut event = self.event(event_id, "m.room.member", Some(user_id));
        event.sender = user_id.to_owned();
        event.membership = Some(membership.to_owned());
        self.send(event).await
    }

    async fn message(&mut self, event_id: &str) -> PersistedEvent {
        let event = self.event(event_id, "m.room.message", None);
        self.send(event).await
    }

    /// Every Normal event of the room in stream order.
    async fn timeline(&self) -> Vec<String> {
        ids(&self
            .store
            .room_events_by_stream(self.nid, i64::MIN, i64::MAX, 10_000, false)
            .await
            .expect("room_events_by_stream"))
    }
}

fn ids(events: &[StoredEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

fn key(kind: &str, state_key: &str) -> (String, String) {
    (kind.to_owned(), state_key.to_owned())
}

async fn state_map(store: &DynStorage, snapshot_nid: i64) -> StateMap {
    store
        .state_at(snapshot_nid)
        .await
        .expect("state_at")
        .into_iter()
        .map(|entry| ((entry.kind, entry.state_key), entry.event_id))
        .collect()
}

async fn current_state_map(store: &DynStorage, room_nid: i64) -> StateMap {
    store
        .current_state(room_nid)
        .await
        .expect("current_state")
        .into_iter()
        .map(|event| {
            let state_key = event.state_key.expect("state events have a state key");
            ((event.kind, state_key), event.event_id)
        })
        .collect()
}

async fn extremities(store: &DynStorage, room_nid: i64) -> Vec<String> {
    let mut ids: Vec<String> = store
        .forward_extremities(room_nid)
        .await
        .expect("forward_extremities")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

async fn room_create_get_and_conflict(store: DynStorage) {
    assert_eq!(store.room("!a:test").await.expect("room"), None);
    let a = store
        .create_room("!a:test", ROOM_VERSION, NOW)
        .await
        .expect("create");
    assert_eq!(a.room_id, "!a:test");
    assert_eq!(a.room_version, ROOM_VERSION);
    assert_eq!(a.created_ms, NOW);
    assert!(a.room_nid > 0, "nid 0 means none");
    assert_eq!(store.room("!a:test").await.expect("room"), Some(a.clone()));
    assert!(matches!(
        store.create_room("!a:test", "11", NOW + 1).await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(
        store.room("!a:test").await.expect("room"),
        Some(a.clone()),
        "a conflicting create changes nothing"
    );
    // Room version 12 ids name no server; nothing may parse one out.
    let b = store
        .create_room(
            "!JUjkN5ppvOEt4VOR2mO0QTL_Qh3aSOHYfa5V4EOR3jA",
            ROOM_VERSION,
            NOW,
        )
        .await
        .expect("create a v12 id");
    assert_ne!(a.room_nid, b.room_nid);
    assert_eq!(store.current_snapshot(b.room_nid).await.expect("snap"), 0);
    assert!(
        store
            .current_state(b.room_nid)
            .await
            .expect("state")
            .is_empty()
    );
    assert!(extremities(&store, b.room_nid).await.is_empty());
}

async fn stream_positions_increase(store: DynStorage) {
    for stream in [Stream::Events, Stream::Receipts] {
        assert_eq!(store.max_stream_pos(stream).await.expect("max"), 0);
    }
    let mut last = 0;
    for _ in 0..5 {
        let pos = store.next_stream_pos(Stream::Events).await.expect("next");
        assert!(pos > last, "{pos} > {last}");
        last = pos;
    }
    assert_eq!(
        store.max_stream_pos(Stream::Events).await.expect("max"),
        last
    );
    assert_eq!(
        store.max_stream_pos(Stream::Receipts).await.expect("max"),
        0,
        "streams are independent"
    );
    let receipt = store.next_stream_pos(Stream::Receipts).await.expect("next");
    assert!(receipt > 0);
    assert_eq!(
        store.max_stream_pos(Stream::Receipts).await.expect("max"),
        receipt
    );
    assert_eq!(
        store.max_stream_pos(Stream::Events).await.expect("max"),
        last
    );

    // Concurrent allocations never repeat.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for _ in 0..25 {
                positions.push(store.next_stream_pos(Stream::Events).await.expect("next"));
            }
            positions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "no position handed out twice");
    assert!(all[0] > last);
    assert_eq!(
        store.max_stream_pos(Stream::Events).await.expect("max"),
        all[count - 1]
    );
}

async fn persist_chain_tracks_state(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!chain:test").await;
    let create = room.state("$create", "m.room.create", "").await;
    let join = room.member("$join", "@alice:test", "join").await;
    let power = room.state("$power", "m.room.power_levels", "").await;
    let name1 = room.state("$name1", "m.room.name", "").await;
    let message = room.message("$message").await;
    let name2 = room.state("$name2", "m.room.name", "").await;

    // Snapshots: before = after of the previous event; a message adds none.
    assert_eq!(create.state_before_nid, 0);
    assert_ne!(create.state_after_nid, 0);
    assert_eq!(join.state_before_nid, create.state_after_nid);
    assert_eq!(power.state_before_nid, join.state_after_nid);
    assert_eq!(name1.state_before_nid, power.state_after_nid);
    assert_eq!(message.state_before_nid, name1.state_after_nid);
    assert_eq!(message.state_after_nid, message.state_before_nid);
    assert_eq!(name2.state_before_nid, message.state_after_nid);
    assert_ne!(name2.state_after_nid, name2.state_before_nid);
    assert_eq!(
        store.current_snapshot(room.nid).await.expect("snap"),
        name2.state_after_nid
    );
    let nids = [&create, &join, &power, &name1, &message, &name2].map(|p| p.event_nid);
    assert!(nids.windows(2).all(|w| w[0] != w[1]));

    let expected_after = |names: &[(&str, &str, &str)]| -> StateMap {
        names
            .iter()
            .map(|(kind, state_key, id)| (key(kind, state_key), (*id).to_owned()))
            .collect()
    };
    let s_create = expected_after(&[("m.room.create", "", "$create")]);
    let s_join = expected_after(&[
        ("m.room.create", "", "$create"),
        ("m.room.member", "@alice:test", "$join"),
    ]);
    let s_power = expected_after(&[
        ("m.room.create", "", "$create"),
        ("m.room.member", "@alice:test", "$join"),
        ("m.room.power_levels", "", "$power"),
    ]);
    let s_name1 = expected_after(&[
        ("m.room.create", "", "$create"),
        ("m.room.member", "@alice:test", "$join"),
        ("m.room.power_levels", "", "$power"),
        ("m.room.name", "", "$name1"),
    ]);
    let s_name2 = expected_after(&[
        ("m.room.create", "", "$create"),
        ("m.room.member", "@alice:test", "$join"),
        ("m.room.power_levels", "", "$power"),
        ("m.room.name", "", "$name2"),
    ]);
    assert!(state_map(&store, 0).await.is_empty(), "snapshot 0 is empty");
    assert_eq!(state_map(&store, create.state_after_nid).await, s_create);
    assert_eq!(state_map(&store, join.state_after_nid).await, s_join);
    assert_eq!(state_map(&store, power.state_after_nid).await, s_power);
    assert_eq!(state_map(&store, name1.state_after_nid).await, s_name1);
    assert_eq!(state_map(&store, message.state_before_nid).await, s_name1);
    assert_eq!(state_map(&store, name2.state_before_nid).await, s_name1);
    assert_eq!(state_map(&store, name2.state_after_nid).await, s_name2);
    assert_eq!(current_state_map(&store, room.nid).await, s_name2);

    // Overwritten state stays visible at the snapshots that had it.
    let at = |snapshot: i64| {
        let store = Arc::clone(&store);
        async move {
            store
                .state_event_at(snapshot, "m.room.name", "")
                .await
                .expect("state_event_at")
                .map(|e| e.event_id)
        }
    };
    assert_eq!(at(power.state_after_nid).await, None);
    assert_eq!(at(name1.state_after_nid).await.as_deref(), Some("$name1"));
    assert_eq!(at(message.state_after_nid).await.as_deref(), Some("$name1"));
    assert_eq!(at(name2.state_after_nid).await.as_deref(), Some("$name2"));
    assert_eq!(at(0).await, None);
    assert_eq!(
        store
            .state_event_at(name2.state_after_nid, "m.room.member", "@alice:test")
            .await
            .expect("state_event_at")
            .map(|e| e.event_id)
            .as_deref(),
        Some("$join")
    );
    assert_eq!(
        store
            .state_event_at(name2.state_after_nid, "m.room.topic", "")
            .await
            .expect("state_event_at"),
        None
    );

    let current_name = store
        .current_state_event(room.nid, "m.room.name", "")
        .await
        .expect("current_state_event")
        .expect("a name");
    assert_eq!(current_name.event_id, "$name2");
    assert_eq!(
        store
            .current_state_event(room.nid, "m.room.topic", "")
            .await
            .expect("current_state_event"),
        None
    );
    assert_eq!(
        store
            .current_state_event(room.nid + 1000, "m.room.name", "")
            .await
            .expect("current_state_event"),
        None,
        "state is per room"
    );

    // The stored row round-trips.
    let stored = store
        .event("$message")
        .await
        .expect("event")
        .expect("stored");
    assert_eq!(stored.event_nid, message.event_nid);
    assert_eq!(stored.room_nid, room.nid);
    assert_eq!(stored.room_id, room.room_id);
    assert_eq!(stored.kind, "m.room.message");
    assert_eq!(stored.state_key, None);
    assert_eq!(stored.sender, "@alice:test");
    assert_eq!(stored.depth, 5);
    assert_eq!(stored.origin_server_ts, NOW + 4);
    assert_eq!(stored.stream_pos, message.stream_pos);
    assert_eq!(
        stored.json,
        json!({"event_id": "$message", "type": "m.room.message", "state_key": null}).to_string()
    );
    assert_eq!(stored.state_before_nid, message.state_before_nid);
    assert_eq!(stored.state_after_nid, message.state_after_nid);
    assert_eq!(stored.status, EventStatus::Normal);
    assert_eq!(
        (stored.redacts, stored.redacted_by, stored.txn),
        (None, None, None)
    );
    let member = store.event("$join").await.expect("event").expect("stored");
    assert_eq!(member.state_key.as_deref(), Some("@alice:test"));
    assert_eq!(member.membership.as_deref(), Some("join"));
    assert_eq!(store.event("$nope").await.expect("event"), None);

    assert_eq!(extremities(&store, room.nid).await, ["$name2"]);
    assert_eq!(
        store
            .forward_extremities(room.nid)
            .await
            .expect("forward_extremities"),
        [("$name2".to_owned(), 6)]
    );
    assert_eq!(
        room.timeline().await,
        ["$create", "$join", "$power", "$name1", "$message", "$name2"]
    );
}

/// Far more state changes than a delta chain may hold: every snapshot still
/// resolves to exactly its state, the chains stay bounded, and storage grows
/// by the changes, not by a copy of the state per event.
async fn state_chains_longer_than_the_max_resolve(db: Arc<TestDb>) {
    let (store, _) = db.open(&OpenOptions::default()).await.expect("open");
    let mut room = TestRoom::create(&store, "!long:test").await;
    let mut expected = StateMap::new();
    let mut history: Vec<(String, PersistedEvent, StateMap, StateMap)> = Vec::new();

    let create = room.state("$create", "m.room.create", "").await;
    expected.insert(key("m.room.create", ""), "$create".to_owned());
    history.push((
        "$create".to_owned(),
        create,
        StateMap::new(),
        expected.clone(),
    ));
    for i in 0..40 {
        let before = expected.clone();
        let (id, persisted) = if i % 5 == 4 {
            let user = format!("@user{i}:test");
            let id = format!("$member{i}");
            let persisted = room.member(&id, &user, "join").await;
            expected.insert(key("m.room.member", &user), id.clone());
            (id, persisted)
        } else if i % 7 == 6 {
            let id = format!("$message{i}");
            (id.clone(), room.message(&id).await)
        } else {
            let id = format!("$topic{i}");
            let persisted = room.state(&id, "m.room.topic", "").await;
            expected.insert(key("m.room.topic", ""), id.clone());
            (id, persisted)
        };
        history.push((id, persisted, before, expected.clone()));
    }

    for (id, persisted, before, after) in &history {
        assert_eq!(
            &state_map(&store, persisted.state_before_nid).await,
            before,
            "state before {id}"
        );
        assert_eq!(
            &state_map(&store, persisted.state_after_nid).await,
            after,
            "state after {id}"
        );
        let topic = store
            .state_event_at(persisted.state_after_nid, "m.room.topic", "")
            .await
            .expect("state_event_at")
            .map(|e| e.event_id);
        assert_eq!(
            topic.as_ref(),
            after.get(&key("m.room.topic", "")),
            "topic after {id}"
        );
        let stored = store.event(id).await.expect("event").expect("stored");
        assert_eq!(
            (stored.state_before_nid, stored.state_after_nid),
            (persisted.state_before_nid, persisted.state_after_nid)
        );
    }
    assert_eq!(current_state_map(&store, room.nid).await, expected);

    let longest = db
        .query_i64("SELECT MAX(chain_length) FROM state_snapshots")
        .await;
    assert_eq!(
        longest, STATE_CHAIN_LENGTH_MAX,
        "chains grow to the max, not past it"
    );
    let full = db
        .query_i64("SELECT COUNT(*) FROM state_snapshots WHERE base_nid IS NULL")
        .await;
    assert!(
        full >= 2,
        "a full snapshot is written once a chain is full: {full}"
    );
    let snapshots = db.query_i64("SELECT COUNT(*) FROM state_snapshots").await;
    let entries = db
        .query_i64("SELECT COUNT(*) FROM state_snapshot_entries")
        .await;
    let copies: i64 = history
        .iter()
        .filter(|(_, p, _, _)| p.state_after_nid != p.state_before_nid)
        .map(|(_, _, _, after)| after.len() as i64)
        .sum();
    assert!(
        entries < copies / 2,
        "deltas, not a copy of the state per event: {entries} entries for {snapshots} \
         snapshots ({copies} if copied)"
    );
    store.close().await;
}

async fn forward_extremities_follow_prev_events(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!fork:test").await;
    room.state("$a", "m.room.create", "").await;
    assert_eq!(extremities(&store, room.nid).await, ["$a"]);

    // Two events on the same parent: a fork with two extremities.
    let mut b = room.event("$b", "m.room.message", None);
    let mut c = room.event("$c", "m.room.message", None);
    b.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
    c.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
    store.persist_event(b).await.expect("b");
    store.persist_event(c).await.expect("c");
    assert_eq!(extremities(&store, room.nid).await, ["$b", "$c"]);

    // One event referencing both (and an unknown one) merges them.
    room.last = vec!["$b".to_owned(), "$c".to_owned(), "$unknown".to_owned()];
    room.depth = 2;
    room.message("$d").await;
    assert_eq!(
        store.forward_extremities(room.nid).await.expect("fe"),
        [("$d".to_owned(), 3)]
    );

    // prev_events never reach into another room.
    let mut other = TestRoom::create(&store, "!other:test").await;
    other.last = vec!["$d".to_owned()];
    other.state("$x", "m.room.create", "").await;
    assert_eq!(extremities(&store, room.nid).await, ["$d"]);
    assert_eq!(extremities(&store, other.nid).await, ["$x"]);
}

async fn memberships_follow_member_events(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!members:test").await;
    let mut other = TestRoom::create(&store, "!other:test").await;
    room.state("$create", "m.room.create", "").await;
    other.state("$create2", "m.room.create", "").await;
    assert!(
        store
            .user_memberships("@bob:test")
            .await
            .expect("um")
            .is_empty()
    );

    let join = room.member("$join1", "@bob:test", "join").await;
    room.member("$alice", "@alice:test", "join").await;
    let memberships = store.user_memberships("@bob:test").await.expect("um");
    assert_eq!(
        memberships,
        [UserMembership {
            room_nid: room.nid,
            room_id: "!members:test".to_owned(),
            membership: "join".to_owned(),
            event_id: "$join1".to_owned(),
            stream_pos: join.stream_pos,
            forgotten: false,
        }]
    );

    let leave = room.member("$leave", "@bob:test", "leave").await;
    other.member("$invite", "@bob:test", "invite").await;
    let memberships = store.user_memberships("@bob:test").await.expect("um");
    assert_eq!(memberships.len(), 2);
    let in_room = memberships
        .iter()
        .find(|m| m.room_nid == room.nid)
        .expect("room");
    assert_eq!(
        (in_room.membership.as_str(), in_room.event_id.as_str()),
        ("leave", "$leave")
    );
    assert_eq!(in_room.stream_pos, leave.stream_pos);
    let in_other = memberships
        .iter()
        .find(|m| m.room_nid == other.nid)
        .expect("other");
    assert_eq!(in_other.room_id, "!other:test");
    assert_eq!(in_other.membership, "invite");

    let rejoin = room.member("$join2", "@bob:test", "join").await;
    let in_room = store
        .user_memberships("@bob:test")
        .await
        .expect("um")
        .into_iter()
        .find(|m| m.room_nid == room.nid)
        .expect("room");
    assert_eq!(
        (in_room.membership.as_str(), in_room.event_id.as_str()),
        ("join", "$join2")
    );
    assert_eq!(in_room.stream_pos, rejoin.stream_pos);

    let members = store.room_members(room.nid).await.expect("members");
    assert_eq!(
        members,
        [
            RoomMember {
                user_id: "@alice:test".to_owned(),
                membership: "join".to_owned(),
                event_id: "$alice".to_owned(),
            },
            RoomMember {
                user_id: "@bob:test".to_owned(),
                membership: "join".to_owned(),
                event_id: "$join2".to_owned(),
            },
        ]
    );
    assert_eq!(
        store
            .current_state_event(room.nid, "m.room.member", "@bob:test")
            .await
            .expect("cse")
            .map(|e| e.event_id)
            .as_deref(),
        Some("$join2")
    );
    assert_eq!(
        store.room_members(other.nid).await.expect("members").len(),
        1
    );
}

async fn forget_room_is_cleared_by_a_new_membership(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!forget:test").await;
    room.state("$create", "m.room.create", "").await;
    room.member("$join", "@bob:test", "join").await;
    room.member("$leave", "@bob:test", "leave").await;
    room.member("$carol", "@carol:test", "join").await;

    store
        .forget_room("@bob:test", room.nid)
        .await
        .expect("forget");
    let room_nid = room.nid;
    let forgotten = |user: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .user_memberships(user)
                .await
                .expect("um")
                .into_iter()
                .find(|m| m.room_nid == room_nid)
                .map(|m| m.forgotten)
        }
    };
    assert_eq!(forgotten("@bob:test").await, Some(true));
    assert_eq!(
        forgotten("@carol:test").await,
        Some(false),
        "only the caller's"
    );
    // Forgetting a room one was never in is a no-op.
    store
        .forget_room("@dave:test", room.nid)
        .await
        .expect("forget");
    assert_eq!(forgotten("@dave:test").await, None);

    room.member("$invite", "@bob:test", "invite").await;
    assert_eq!(
        forgotten("@bob:test").await,
        Some(false),
        "a new membership event clears the mark"
    );
}

async fn txn_ids_make_sends_idempotent(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!txn:test").await;
    room.state("$create", "m.room.create", "").await;
    let txn = TxnKey {
        user_id: "@alice:test".to_owned(),
        device_id: "PHONE".to_owned(),
        txn_id: "t1".to_owned(),
    };
    assert_eq!(
        store
            .txn_event(room.nid, "@alice:test", "PHONE", "t1")
            .await
            .expect("txn"),
        None
    );
    let mut first = room.event("$first", "m.room.message", None);
    first.txn = Some(txn.clone());
    room.send(first).await;
    assert_eq!(
        store
            .txn_event(room.nid, "@alice:test", "PHONE", "t1")
            .await
            .expect("txn")
            .as_deref(),
        Some("$first")
    );
    let stored = store.event("$first").await.expect("event").expect("stored");
    assert_eq!(stored.txn, Some(txn.clone()));

    // A retry that built a new event for the same transaction is refused
    // whole.
    let snapshot = store.current_snapshot(room.nid).await.expect("snap");
    let mut retry = room.event("$retry", "m.room.topic", Some(""));
    retry.txn = Some(txn.clone());
    retry.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
    assert!(matches!(
        store.persist_event(retry).await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(store.event("$retry").await.expect("event"), None);
    assert_eq!(room.timeline().await, ["$create", "$first"]);
    assert_eq!(extremities(&store, room.nid).await, ["$first"]);
    assert_eq!(
        store.current_snapshot(room.nid).await.expect("snap"),
        snapshot
    );
    assert_eq!(
        store
            .current_state_event(room.nid, "m.room.topic", "")
            .await
            .expect("cse"),
        None
    );

    // The same txn id from another device, or another user, is another
    // transaction.
    for (user_id, device_id, event_id) in [
        ("@alice:test", "LAPTOP", "$laptop"),
        ("@bob:test", "PHONE", "$bob"),
    ] {
        let mut event = room.event(event_id, "m.room.message", None);
        event.txn = Some(TxnKey {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            txn_id: "t1".to_owned(),
        });
        room.send(event).await;
        assert_eq!(
            store
                .txn_event(room.nid, user_id, device_id, "t1")
                .await
                .expect("txn")
                .as_deref(),
            Some(event_id)
        );
    }
    assert_eq!(
        store
            .txn_event(room.nid, "@alice:test", "PHONE", "t1")
            .await
            .expect("txn")
            .as_deref(),
        Some("$first")
    );
    // The same transaction id in another room is another transaction.
    let mut elsewhere = TestRoom::create(&store, "!txn-elsewhere:test").await;
    elsewhere.state("$create2", "m.room.create", "").await;
    let mut event = elsewhere.event("$elsewhere", "m.room.message", None);
    event.txn = Some(txn.clone());
    elsewhere.send(event).await;
    assert_eq!(
        store
            .txn_event(elsewhere.nid, "@alice:test", "PHONE", "t1")
            .await
            .expect("txn")
            .as_deref(),
        Some("$elsewhere")
    );
}

async fn duplicate_event_id_conflicts_and_writes_nothing(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!dup:test").await;
    room.state("$create", "m.room.create", "").await;
    room.state("$name", "m.room.name", "").await;
    let snapshot = store.current_snapshot(room.nid).await.expect("snap");
    let state = current_state_map(&store, room.nid).await;

    // Same id, different everything else (a state event with a new key, a
    // membership, a transaction), even in another room.
    let other = TestRoom::create(&store, "!dup2:test").await;
    for target in [room.nid, other.nid] {
        let mut duplicate = room.event("$name", "m.room.member", Some("@eve:test"));
        duplicate.room_nid = target;
        duplicate.membership = Some("join".to_owned());
        duplicate.prev_events = vec!["$create".to_owned()];
        duplicate.txn = Some(TxnKey {
            user_id: "@eve:test".to_owned(),
            device_id: "D".to_owned(),
            txn_id: "t".to_owned(),
        });
        duplicate.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
        assert!(matches!(
            store.persist_event(duplicate).await,
            Err(StorageError::Conflict(_))
        ));
    }
    let stored = store.event("$name").await.expect("event").expect("stored");
    assert_eq!(stored.kind, "m.room.name", "the first event is untouched");
    assert_eq!(
        store.current_snapshot(room.nid).await.expect("snap"),
        snapshot
    );
    assert_eq!(current_state_map(&store, room.nid).await, state);
    assert_eq!(extremities(&store, room.nid).await, ["$name"]);
    assert!(extremities(&store, other.nid).await.is_empty());
    assert!(
        store
            .user_memberships("@eve:test")
            .await
            .expect("um")
            .is_empty()
    );
    assert_eq!(
        store
            .txn_event(other.nid, "@eve:test", "D", "t")
            .await
            .expect("txn"),
        None
    );
    assert_eq!(room.timeline().await, ["$create", "$name"]);
    assert!(other.timeline().await.is_empty());

    // The room writer's next event still persists.
    room.message("$after").await;
    assert_eq!(extremities(&store, room.nid).await, ["$after"]);
}

async fn redaction_marks_its_target(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!redact:test").await;
    let mut other = TestRoom::create(&store, "!elsewhere:test").await;
    room.state("$create", "m.room.create", "").await;
    room.message("$target").await;
    other.message("$foreign").await;

    let mut redaction = room.event("$redaction", "m.room.redaction", None);
    redaction.redacts = Some("$target".to_owned());
    room.send(redaction).await;
    let target = store
        .event("$target")
        .await
        .expect("event")
        .expect("stored");
    assert_eq!(target.redacted_by.as_deref(), Some("$redaction"));
    let redaction = store
        .event("$redaction")
        .await
        .expect("event")
        .expect("stored");
    assert_eq!(redaction.redacts.as_deref(), Some("$target"));
    assert_eq!(redaction.redacted_by, None);

    // A second redaction leaves the first in place.
    let mut again = room.event("$again", "m.room.redaction", None);
    again.redacts = Some("$target".to_owned());
    room.send(again).await;
    let target = store
        .event("$target")
        .await
        .expect("event")
        .expect("stored");
    assert_eq!(target.redacted_by.as_deref(), Some("$redaction"));

    // Another room's event, or an unknown one, is not marked.
    let mut cross = room.event("$cross", "m.room.redaction", None);
    cross.redacts = Some("$foreign".to_owned());
    room.send(cross).await;
    let mut unknown = room.event("$unknown", "m.room.redaction", None);
    unknown.redacts = Some("$never-seen".to_owned());
    room.send(unknown).await;
    let foreign = store
        .event("$foreign")
        .await
        .expect("event")
        .expect("stored");
    assert_eq!(foreign.redacted_by, None);

    // The redacted event stays in the timeline (served redacted).
    assert!(room.timeline().await.contains(&"$target".to_owned()));
}

async fn room_events_by_stream_ranges(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!stream:test").await;
    let mut other = TestRoom::create(&store, "!noise:test").await;
    room.state("$create", "m.room.create", "").await;
    let mut positions = Vec::new();
    for i in 0..10 {
        positions.push(room.message(&format!("$m{i}")).await.stream_pos);
        other.message(&format!("$noise{i}")).await;
    }
    let room_nid = room.nid;
    let page = |after: i64, upto: i64, limit: u32, newest_first: bool| {
        let store = Arc::clone(&store);
        async move {
            ids(&store
                .room_events_by_stream(room_nid, after, upto, limit, newest_first)
                .await
                .expect("room_events_by_stream"))
        }
    };
    let m = |range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|i| format!("$m{i}")).collect()
    };
    // `after` exclusive, `upto` inclusive.
    assert_eq!(page(positions[2], positions[5], 100, false).await, m(3..6));
    // The oldest `limit` of the range, in ascending order.
    assert_eq!(page(positions[0], i64::MAX, 3, false).await, m(1..4));
    // The newest `limit`, newest first.
    let newest: Vec<String> = m(7..10).into_iter().rev().collect();
    assert_eq!(page(positions[0], i64::MAX, 3, true).await, newest);
    let below: Vec<String> = m(2..5).into_iter().rev().collect();
    assert_eq!(page(positions[1], positions[4], 10, true).await, below);
    assert!(page(positions[9], i64::MAX, 10, false).await.is_empty());
    assert!(page(positions[3], positions[3], 10, false).await.is_empty());
    assert!(page(i64::MIN, i64::MAX, 0, false).await.is_empty());
    let mut all = vec!["$create".to_owned()];
    all.extend(m(0..10));
    assert_eq!(page(i64::MIN, i64::MAX, 100, false).await, all);
    let events = store
        .room_events_by_stream(room.nid, i64::MIN, i64::MAX, 100, false)
        .await
        .expect("page");
    assert!(events.iter().all(|e| e.room_id == "!stream:test"));
}

async fn rooms_events_by_stream_reads_several_rooms(store: DynStorage) {
    let mut a = TestRoom::create(&store, "!a:test").await;
    let mut b = TestRoom::create(&store, "!b:test").await;
    let mut other = TestRoom::create(&store, "!other:test").await;
    let start = a.message("$a0").await.stream_pos;
    b.message("$b0").await;
    other.message("$other0").await;
    let mut soft_failed = a.event("$a-soft", "m.room.message", None);
    soft_failed.status = EventStatus::SoftFailed;
    a.send(soft_failed).await;
    a.message("$a1").await;
    let middle = b.message("$b1").await.stream_pos;
    other.message("$other1").await;
    a.message("$a2").await;
    let nids = [a.nid, b.nid];
    let read = |room_nids: Vec<i64>, after: i64, upto: i64, limit: u32| {
        let store = Arc::clone(&store);
        async move {
            ids(&store
                .rooms_events_by_stream(&room_nids, after, upto, limit)
                .await
                .expect("rooms_events_by_stream"))
        }
    };
    // Newest first, `after` exclusive, `upto` inclusive, only `Normal`
    // events of the rooms asked for.
    assert_eq!(
        read(nids.to_vec(), start, i64::MAX, 100).await,
        ["$a2", "$b1", "$a1", "$b0"]
    );
    assert_eq!(
        read(nids.to_vec(), i64::MIN, middle, 100).await,
        ["$b1", "$a1", "$b0", "$a0"]
    );
    // The newest `limit`.
    assert_eq!(
        read(nids.to_vec(), i64::MIN, i64::MAX, 2).await,
        ["$a2", "$b1"]
    );
    assert_eq!(
        read(vec![b.nid], start, i64::MAX, 100).await,
        ["$b1", "$b0"]
    );
    assert!(read(Vec::new(), i64::MIN, i64::MAX, 100).await.is_empty());
    assert!(read(nids.to_vec(), middle, middle, 100).await.is_empty());
    let events = store
        .rooms_events_by_stream(&nids, i64::MIN, i64::MAX, 100)
        .await
        .expect("rooms_events_by_stream");
    let a2 = events.iter().find(|e| e.event_id == "$a2").expect("$a2");
    assert_eq!((a2.room_nid, a2.room_id.as_str()), (a.nid, "!a:test"));
}

async fn room_events_topological_pages(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!topo:test").await;
    // depth 1: create, and an event backfilled later (a negative stream
    // position); depth 2: two forks (a, b) and a late arrival (the newest
    // stream position of all); depth 3: c; depth 4: d. Topological and
    // stream order differ.
    room.state("$create", "m.room.create", "").await;
    let mut a = room.event("$a", "m.room.message", None);
    let mut b = room.event("$b", "m.room.message", None);
    a.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
    b.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
    let (a_pos, b_pos) = (a.stream_pos, b.stream_pos);
    store.persist_event(b).await.expect("b");
    store.persist_event(a).await.expect("a");
    room.last = vec!["$a".to_owned(), "$b".to_owned()];
    room.depth = 2;
    let c = room.message("$c").await;
    let mut backfilled = room.event("$old", "m.room.message", None);
    backfilled.depth = 1;
    backfilled.stream_pos = -5;
    backfilled.prev_events = Vec::new();
    store.persist_event(backfilled).await.expect("backfilled");
    room.message("$d").await;
    let mut late = room.event("$late", "m.room.message", None);
    late.depth = 2;
    late.prev_events = vec!["$create".to_owned()];
    let late = room.send(late).await;

    let room_nid = room.nid;
    let page = |from: TopoPos, dir: Direction, to: Option<TopoPos>, upto: i64, limit: u32| {
        let store = Arc::clone(&store);
        async move {
            ids(&store
                .room_events_topological(room_nid, from, dir, to, upto, limit)
                .await
                .expect("room_events_topological"))
        }
    };
    let start = TopoPos {
        depth: i64::MIN,
        stream_pos: i64::MIN,
    };
    let end = TopoPos {
        depth: i64::MAX,
        stream_pos: i64::MAX,
    };
    let forward = ["$old", "$create", "$a", "$b", "$late", "$c", "$d"];
    assert_eq!(
        page(start, Direction::Forward, None, i64::MAX, 100).await,
        forward,
        "by depth, then stream position, negative ones included"
    );
    let backward: Vec<&str> = forward.iter().rev().copied().collect();
    assert_eq!(
        page(end, Direction::Backward, None, i64::MAX, 100).await,
        backward
    );
    // `from` and `to` are exclusive.
    let at_a = TopoPos {
        depth: 2,
        stream_pos: a_pos,
    };
    let at_c = TopoPos {
        depth: 3,
        stream_pos: c.stream_pos,
    };
    assert_eq!(
        page(at_a, Direction::Forward, Some(at_c), i64::MAX, 100).await,
        ["$b", "$late"]
    );
    assert_eq!(
        page(at_c, Direction::Backward, Some(at_a), i64::MAX, 100).await,
        ["$late", "$b"]
    );
    assert_eq!(
        page(at_c, Direction::Backward, None, i64::MAX, 100).await,
        ["$late", "$b", "$a", "$create", "$old"]
    );
    // Limits keep the nearest events.
    assert_eq!(
        page(at_a, Direction::Forward, None, i64::MAX, 2).await,
        ["$b", "$late"]
    );
    assert_eq!(
        page(end, Direction::Backward, None, i64::MAX, 2).await,
        ["$d", "$c"]
    );
    // Only events at or below `upto` (what the caller's token has seen).
    assert_eq!(
        page(start, Direction::Forward, None, b_pos, 100).await,
        ["$old", "$create", "$a", "$b"]
    );
    assert_eq!(
        page(end, Direction::Backward, None, a_pos, 100).await,
        ["$a", "$create", "$old"]
    );
    assert_eq!(
        page(start, Direction::Forward, None, late.stream_pos - 1, 100).await,
        ["$old", "$create", "$a", "$b", "$c", "$d"]
    );
}

async fn non_normal_events_are_stored_but_not_served(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!status:test").await;
    room.state("$create", "m.room.create", "").await;
    room.member("$join", "@bob:test", "join").await;
    room.message("$target").await;
    let snapshot = store.current_snapshot(room.nid).await.expect("snap");
    let state = current_state_map(&store, room.nid).await;

    for (status, suffix) in [
        (EventStatus::Outlier, "outlier"),
        (EventStatus::Rejected, "rejected"),
        (EventStatus::SoftFailed, "softfailed"),
    ] {
        let mut name = room.event(&format!("$name-{suffix}"), "m.room.name", Some(""));
        name.status = status;
        let persisted = room.send(name).await;
        if status == EventStatus::Outlier {
            assert_eq!(
                (persisted.state_before_nid, persisted.state_after_nid),
                (0, 0)
            );
        } else {
            assert_eq!(
                (persisted.state_before_nid, persisted.state_after_nid),
                (snapshot, snapshot),
                "a {suffix} event changes no state"
            );
        }
        let mut leave = room.event(
            &format!("$leave-{suffix}"),
            "m.room.member",
            Some("@bob:test"),
        );
        leave.membership = Some("leave".to_owned());
        leave.status = status;
        room.send(leave).await;
        let mut redaction = room.event(&format!("$redact-{suffix}"), "m.room.redaction", None);
        redaction.redacts = Some("$target".to_owned());
        redaction.status = status;
        room.send(redaction).await;

        let stored = store
            .event(&format!("$name-{suffix}"))
            .await
            .expect("event")
            .expect("stored, whatever its status");
        assert_eq!(stored.status, status);
    }
    assert_eq!(
        store.current_snapshot(room.nid).await.expect("snap"),
        snapshot
    );
    assert_eq!(current_state_map(&store, room.nid).await, state);
    assert_eq!(extremities(&store, room.nid).await, ["$target"]);
    assert_eq!(room.timeline().await, ["$create", "$join", "$target"]);
    let topological = store
        .room_events_topological(
            room.nid,
            TopoPos {
                depth: i64::MIN,
                stream_pos: i64::MIN,
            },
            Direction::Forward,
            None,
            i64::MAX,
            100,
        )
        .await
        .expect("topological");
    assert_eq!(ids(&topological), ["$create", "$join", "$target"]);
    let bob = store.user_memberships("@bob:test").await.expect("um");
    assert_eq!(bob.len(), 1);
    assert_eq!(
        (bob[0].membership.as_str(), bob[0].event_id.as_str()),
        ("join", "$join")
    );
    let target = store
        .event("$target")
        .await
        .expect("event")
        .expect("stored");
    assert_eq!(target.redacted_by, None);
    assert_eq!(
        store
            .events(&["$name-rejected".to_owned(), "$name-outlier".to_owned()])
            .await
            .expect("events")
            .len(),
        2,
        "lookups by id see every status"
    );
}

async fn events_bulk_lookup(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!bulk:test").await;
    let mut other = TestRoom::create(&store, "!bulk2:test").await;
    room.state("$create", "m.room.create", "").await;
    for i in 0..5 {
        room.message(&format!("$m{i}")).await;
    }
    other.message("$elsewhere").await;
    assert!(store.events(&[]).await.expect("events").is_empty());
    let wanted: Vec<String> = ["$m1", "$m3", "$unknown", "$m3", "$elsewhere", "$create"]
        .map(str::to_owned)
        .to_vec();
    let found = store.events(&wanted).await.expect("events");
    let mut found_ids = ids(&found);
    found_ids.sort();
    assert_eq!(found_ids, ["$create", "$elsewhere", "$m1", "$m3"]);
    let elsewhere = found
        .iter()
        .find(|e| e.event_id == "$elsewhere")
        .expect("found");
    assert_eq!(
        (elsewhere.room_nid, elsewhere.room_id.as_str()),
        (other.nid, "!bulk2:test")
    );
    // More ids than one statement takes.
    let many: Vec<String> = (0..2_500)
        .map(|i| format!("$absent{i}"))
        .chain(["$m4".to_owned()])
        .collect();
    assert_eq!(ids(&store.events(&many).await.expect("events")), ["$m4"]);
}

async fn aliases_create_get_delete(store: DynStorage) {
    let alias = |name: &str, room_id: &str| RoomAlias {
        alias: name.to_owned(),
        room_id: room_id.to_owned(),
        creator: "@alice:test".to_owned(),
    };
    assert_eq!(store.alias("#a:test").await.expect("alias"), None);
    store
        .create_alias(&alias("#b:test", "!room:test"))
        .await
        .expect("create");
    store
        .create_alias(&alias("#a:test", "!room:test"))
        .await
        .expect("create");
    store
        .create_alias(&alias("#c:test", "!other:test"))
        .await
        .expect("create");
    assert!(matches!(
        store.create_alias(&alias("#a:test", "!other:test")).await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(
        store.alias("#a:test").await.expect("alias"),
        Some(alias("#a:test", "!room:test")),
        "a conflicting create changes nothing"
    );
    assert_eq!(
        store.room_aliases("!room:test").await.expect("aliases"),
        ["#a:test", "#b:test"]
    );
    assert!(store.delete_alias("#a:test").await.expect("delete"));
    assert!(!store.delete_alias("#a:test").await.expect("delete"));
    assert_eq!(store.alias("#a:test").await.expect("alias"), None);
    assert_eq!(
        store.room_aliases("!room:test").await.expect("aliases"),
        ["#b:test"]
    );
    assert!(
        store
            .room_aliases("!none:test")
            .await
            .expect("aliases")
            .is_empty()
    );
    store
        .create_alias(&alias("#a:test", "!other:test"))
        .await
        .expect("a deleted alias can be taken again");
}

async fn user_receipts_are_the_users_own(store: DynStorage) {
    let room = TestRoom::create(&store, "!own-receipts:test").await;
    let other = TestRoom::create(&store, "!own-receipts2:test").await;
    for (room_nid, user, receipt_type, thread, event) in [
        (room.nid, "@alice:test", "m.read", None, "$1"),
        (room.nid, "@alice:test", "m.read", Some("$root"), "$2"),
        (room.nid, "@bob:test", "m.read", None, "$3"),
        (other.nid, "@alice:test", "m.read", None, "$4"),
        (room.nid, "@alice:test", "m.read.private", None, "$5"),
        // Replaces alice's unthreaded m.read.
        (room.nid, "@alice:test", "m.read", None, "$6"),
    ] {
        let stream_pos = store
            .next_stream_pos(Stream::Receipts)
            .await
            .expect("receipt position");
        let receipt = Receipt {
            room_nid,
            room_id: String::new(),
            user_id: user.to_owned(),
            receipt_type: receipt_type.to_owned(),
            thread_id: thread.map(str::to_owned),
            event_id: event.to_owned(),
            ts: NOW + stream_pos,
            stream_pos,
        };
        store.put_receipt(&receipt).await.expect("put_receipt");
    }
    let own = store
        .user_receipts(room.nid, "@alice:test")
        .await
        .expect("user_receipts");
    let summary: Vec<(&str, &str, Option<&str>, &str)> = own
        .iter()
        .map(|r| {
            (
                r.user_id.as_str(),
                r.receipt_type.as_str(),
                r.thread_id.as_deref(),
                r.event_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("@alice:test", "m.read", None, "$6"),
            ("@alice:test", "m.read.private", None, "$5"),
            ("@alice:test", "m.read", Some("$root"), "$2"),
        ],
        "newest first, this room's and this user's only"
    );
    assert!(own.iter().all(|r| r.room_id == "!own-receipts:test"));
    assert!(
        store
            .user_receipts(room.nid, "@carol:test")
            .await
            .expect("user_receipts")
            .is_empty()
    );
}

async fn receipts_put_replace_and_list(store: DynStorage) {
    let room = TestRoom::create(&store, "!receipts:test").await;
    let other = TestRoom::create(&store, "!receipts2:test").await;
    let put = |room_nid: i64, user: &str, receipt_type: &str, thread: Option<&str>, event: &str| {
        let store = Arc::clone(&store);
        let (user, receipt_type, thread, event) = (
            user.to_owned(),
            receipt_type.to_owned(),
            thread.map(str::to_owned),
            event.to_owned(),
        );
        async move {
            let stream_pos = store
                .next_stream_pos(Stream::Receipts)
                .await
                .expect("receipt position");
            let receipt = Receipt {
                room_nid,
                room_id: String::new(),
                user_id: user,
                receipt_type,
                thread_id: thread,
                event_id: event,
                ts: NOW + stream_pos,
                stream_pos,
            };
            store.put_receipt(&receipt).await.expect("put_receipt");
            stream_pos
        }
    };
    let p1 = put(room.nid, "@alice:test", "m.read", None, "$1").await;
    let p2 = put(room.nid, "@alice:test", "m.read", Some("main"), "$2").await;
    let p3 = put(room.nid, "@alice:test", "m.read", Some("$root"), "$3").await;
    let p4 = put(room.nid, "@alice:test", "m.read.private", None, "$4").await;
    let p5 = put(other.nid, "@bob:test", "m.read", None, "$5").await;
    // Replaces alice's unthreaded m.read.
    let p6 = put(room.nid, "@alice:test", "m.read", None, "$6").await;

    let current = store.room_receipts(room.nid).await.expect("room_receipts");
    assert_eq!(
        current.len(),
        4,
        "one per (user, type, thread): {current:?}"
    );
    let unthreaded = current
        .iter()
        .find(|r| r.receipt_type == "m.read" && r.thread_id.is_none())
        .expect("unthreaded");
    assert_eq!(unthreaded.event_id, "$6");
    assert_eq!(unthreaded.stream_pos, p6);
    assert_eq!(unthreaded.ts, NOW + p6);
    assert_eq!(unthreaded.room_id, "!receipts:test");
    let threads: Vec<Option<&str>> = {
        let mut t: Vec<_> = current
            .iter()
            .filter(|r| r.receipt_type == "m.read")
            .map(|r| r.thread_id.as_deref())
            .collect();
        t.sort();
        t
    };
    assert_eq!(threads, [None, Some("$root"), Some("main")]);

    let between = |rooms: Vec<i64>, after: i64, upto: i64| {
        let store = Arc::clone(&store);
        async move {
            store
                .receipts_between(&rooms, after, upto)
                .await
                .expect("receipts_between")
                .into_iter()
                .map(|r| r.event_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        between(vec![room.nid, other.nid], 0, i64::MAX).await,
        ["$2", "$3", "$4", "$5", "$6"],
        "in stream order; the replaced receipt is gone"
    );
    assert_eq!(between(vec![room.nid], p1, p4).await, ["$2", "$3", "$4"]);
    assert_eq!(between(vec![other.nid], p2, p5).await, ["$5"]);
    assert!(between(vec![other.nid], p5, i64::MAX).await.is_empty());
    assert!(between(Vec::new(), 0, i64::MAX).await.is_empty());
    assert_eq!(
        store.max_stream_pos(Stream::Receipts).await.expect("max"),
        p6
    );
    assert_eq!(between(vec![room.nid], p2, p3).await, ["$3"]);
    let bob = store.room_receipts(other.nid).await.expect("room_receipts");
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].room_id, "!receipts2:test");
    assert_eq!(bob[0].thread_id, None);
}

async fn account_data_between_reads_changes(store: DynStorage) {
    assert_eq!(
        store
            .max_stream_pos(Stream::AccountData)
            .await
            .expect("max"),
        0
    );
    let alice = create_user(&store, "alice").await;
    let bob = create_user(&store, "bob").await;
    store
        .put_account_data(
            &alice,
            None,
            "m.a",
            &json!({"n": 1}),
            store
                .next_stream_pos(Stream::AccountData)
                .await
                .expect("pos"),
        )
        .await
        .expect("put");
    let first = store
        .max_stream_pos(Stream::AccountData)
        .await
        .expect("max");
    assert!(first > 0);
    store
        .put_account_data(
            &alice,
            Some("!room:test"),
            "m.tag",
            &json!({"t": 1}),
            store
                .next_stream_pos(Stream::AccountData)
                .await
                .expect("pos"),
        )
        .await
        .expect("put");
    store
        .put_account_data(
            &bob,
            None,
            "m.b",
            &json!({}),
            store
                .next_stream_pos(Stream::AccountData)
                .await
                .expect("pos"),
        )
        .await
        .expect("put");
    store
        .put_account_data(
            &alice,
            None,
            "m.a",
            &json!({"n": 2}),
            store
                .next_stream_pos(Stream::AccountData)
                .await
                .expect("pos"),
        )
        .await
        .expect("overwrite");
    let last = store
        .max_stream_pos(Stream::AccountData)
        .await
        .expect("max");

    let all = store
        .account_data_between(&alice, 0, last)
        .await
        .expect("between");
    assert_eq!(
        all.len(),
        2,
        "the overwrite replaced the first change: {all:?}"
    );
    assert_eq!(all[0].room_id.as_deref(), Some("!room:test"));
    assert_eq!(all[0].data_type, "m.tag");
    assert_eq!(all[0].content, json!({"t": 1}));
    assert_eq!(all[1].room_id, None, "'' is global");
    assert_eq!(all[1].content, json!({"n": 2}));
    assert_eq!(all[1].stream_id, last);
    assert!(all[0].stream_id < all[1].stream_id);

    let since_first = store
        .account_data_between(&alice, all[0].stream_id, last)
        .await
        .expect("between");
    assert_eq!(since_first.len(), 1);
    assert_eq!(since_first[0].data_type, "m.a");
    assert!(
        store
            .account_data_between(&alice, 0, all[0].stream_id - 1)
            .await
            .expect("between")
            .is_empty()
    );
    assert!(
        store
            .account_data_between(&alice, last, i64::MAX)
            .await
            .expect("between")
            .is_empty()
    );
    let bobs = store
        .account_data_between(&bob, 0, last)
        .await
        .expect("between");
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].data_type, "m.b");
}

/// Room writers of different rooms persist at once (as a shard owner runs
/// them): no error, every position distinct, every room's state its own.
async fn concurrent_persists_into_different_rooms(store: DynStorage) {
    const ROOMS: usize = 6;
    const EVENTS_PER_ROOM: usize = 15;
    let mut tasks = Vec::new();
    for r in 0..ROOMS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut room = TestRoom::create(&store, &format!("!concurrent{r}:test")).await;
            let mut positions = vec![
                room.state(&format!("$create{r}"), "m.room.create", "")
                    .await
                    .stream_pos,
            ];
            for i in 0..EVENTS_PER_ROOM {
                let persisted = match i % 3 {
                    0 => {
                        room.member(&format!("$m{r}-{i}"), &format!("@u{i}:test"), "join")
                            .await
                    }
                    // Every room shares these (type, state_key) pairs.
                    1 => room.state(&format!("$t{r}-{i}"), "m.room.topic", "").await,
                    _ => room.message(&format!("$x{r}-{i}")).await,
                };
                positions.push(persisted.stream_pos);
            }
            (r, room.nid, positions)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let (r, room_nid, positions) = task.await.expect("writer task");
        let state = current_state_map(&store, room_nid).await;
        assert_eq!(state.len(), 1 + EVENTS_PER_ROOM / 3 + 1, "{state:?}");
        assert_eq!(
            state.get(&key("m.room.topic", "")).map(String::as_str),
            Some(format!("$t{r}-13").as_str())
        );
        let snapshot = store.current_snapshot(room_nid).await.expect("snap");
        assert_eq!(state_map(&store, snapshot).await, state);
        all.extend(positions);
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "every event has its own position");
}

async fn persist_into_unknown_room_fails(store: DynStorage) {
    let room = TestRoom::create(&store, "!known:test").await;
    let mut event = room.event("$lost", "m.room.message", None);
    event.room_nid = room.nid + 1000;
    event.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
    assert!(matches!(
        store.persist_event(event).await,
        Err(StorageError::Backend(_))
    ));
    assert_eq!(store.event("$lost").await.expect("event"), None);
}

/// PostgreSQL only: `events` is partitioned by hash of the room, with a
/// fixed number of partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_events_table_is_partitioned() {
    common::run_with_db(common::Backend::Postgres, |db: Arc<TestDb>| async move {
        let (store, _) = db.open(&OpenOptions::default()).await.expect("open");
        store.close().await;
        assert_eq!(
            db.query_i64(
                "SELECT COUNT(*) FROM pg_partitioned_table
                 WHERE partrelid = 'events'::regclass AND partstrat = 'h'"
            )
            .await,
            1,
            "events is hash-partitioned"
        );
        assert_eq!(
            db.query_i64("SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'events'::regclass")
                .await,
            16
        );
    })
    .await;
}

/// A writer that allocates positions itself (never drawing from the
/// stream's counter) still finds them in `max_stream_pos` after a restart.
async fn max_stream_pos_counts_written_positions(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!self-allocated:test").await;
    let mut event = room.event("$self-allocated", "m.room.message", None);
    event.stream_pos = 1_000;
    store.persist_event(event).await.expect("persist");
    assert_eq!(
        store.max_stream_pos(Stream::Events).await.expect("max"),
        1_000
    );
    let next = store.next_stream_pos(Stream::Events).await.expect("next");
    assert!(next > 0);
    room.last.clear();
}

/// A batch is one transaction: its events land in order, each on the state
/// the previous one left; a batch with one bad event writes nothing.
async fn persist_events_is_all_or_nothing(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!batch:test").await;
    room.state("$create", "m.room.create", "").await;
    let mut batch = Vec::new();
    let mut prev = "$create".to_owned();
    for (depth, (id, kind, key)) in (2..).zip([
        ("$b-name", "m.room.name", Some("")),
        ("$b-m1", "m.room.message", None),
        ("$b-m2", "m.room.message", None),
    ]) {
        let mut event = room.event(id, kind, key);
        event.prev_events = vec![prev.clone()];
        event.depth = depth;
        event.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
        prev = id.to_owned();
        batch.push(event);
    }
    let persisted = store.persist_events(batch).await.expect("batch");
    assert_eq!(persisted.len(), 3);
    assert_ne!(
        persisted[0].state_before_nid, persisted[0].state_after_nid,
        "the name changes state"
    );
    assert_eq!(
        persisted[1].state_before_nid, persisted[0].state_after_nid,
        "each event sees the previous"
    );
    assert_eq!(persisted[2].state_after_nid, persisted[0].state_after_nid);
    assert_eq!(extremities(&store, room.nid).await, ["$b-m2"]);
    let state = current_state_map(&store, room.nid).await;
    assert_eq!(
        state
            .get(&("m.room.name".to_owned(), String::new()))
            .map(String::as_str),
        Some("$b-name")
    );

    // One duplicate in a batch: nothing of the batch is written.
    let mut fresh = room.event("$b-fresh", "m.room.message", None);
    fresh.prev_events = vec!["$b-m2".to_owned()];
    fresh.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
    let mut duplicate = room.event("$b-m1", "m.room.message", None);
    duplicate.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
    let result = store.persist_events(vec![fresh, duplicate]).await;
    assert!(
        matches!(result, Err(StorageError::Conflict(_))),
        "{result:?}"
    );
    assert!(store.event("$b-fresh").await.expect("event").is_none());
    assert_eq!(extremities(&store, room.nid).await, ["$b-m2"]);
    assert!(
        store
            .persist_events(Vec::new())
            .await
            .expect("empty")
            .is_empty()
    );
}

// ---------------------------------------------------------------- directory

async fn directory_visibility_and_listing(store: DynStorage) {
    let a = TestRoom::create(&store, "!a:test").await;
    let b = TestRoom::create(&store, "!b:test").await;
    let c = TestRoom::create(&store, "!c:test").await;
    assert!(!store.room_is_public(a.nid).await.expect("public"));
    assert!(store.public_rooms(100).await.expect("list").is_empty());
    for nid in [c.nid, a.nid, b.nid] {
        store.set_room_public(nid, true).await.expect("publish");
    }
    // Idempotent, and private again.
    store.set_room_public(a.nid, true).await.expect("publish");
    store
        .set_room_public(b.nid, false)
        .await
        .expect("unpublish");
    assert!(store.room_is_public(a.nid).await.expect("public"));
    assert!(!store.room_is_public(b.nid).await.expect("public"));
    let listed: Vec<String> = store
        .public_rooms(100)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.room_id)
        .collect();
    assert_eq!(listed, ["!a:test", "!c:test"]);
    assert_eq!(store.public_rooms(1).await.expect("list").len(), 1);
    let record = &store.public_rooms(1).await.expect("list")[0];
    assert_eq!(record.room_nid, a.nid);
    assert_eq!(record.room_version, ROOM_VERSION);
}

async fn reports_are_stored_in_order(store: DynStorage) {
    let report = |event_id: Option<&str>, score: Option<i64>| myelin_storage::NewReport {
        room_id: "!r:test".to_owned(),
        event_id: event_id.map(str::to_owned),
        reporter: "@alice:test".to_owned(),
        reason: Some("spam \u{1F4A9}".to_owned()),
        score,
        received_ms: NOW,
    };
    let first = store
        .create_report(&report(Some("$e"), Some(-100)))
        .await
        .expect("report");
    let second = store
        .create_report(&report(None, None))
        .await
        .expect("report");
    assert!(second > first);
    let all = store.reports(0, 100).await.expect("reports");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].report_id, first);
    assert_eq!(all[0].report, report(Some("$e"), Some(-100)));
    assert_eq!(all[1].report, report(None, None));
    let after = store.reports(first, 100).await.expect("reports");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].report_id, second);
    assert_eq!(store.reports(0, 1).await.expect("reports").len(), 1);
}

async fn room_events_by_ts_nearest_first(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!ts:test").await;
    let mut other = TestRoom::create(&store, "!other:test").await;
    room.state("$create", "m.room.create", "").await;
    // origin_server_ts is NOW + depth before the event: $create NOW, $m0
    // NOW + 1, … $m4 NOW + 5; a soft-failed event in between is skipped.
    let mut last = 0;
    for i in 0..5 {
        last = room.message(&format!("$m{i}")).await.stream_pos;
        other.message(&format!("$o{i}")).await;
    }
    let mut hidden = room.event("$hidden", "m.room.message", None);
    hidden.status = EventStatus::SoftFailed;
    hidden.origin_server_ts = NOW + 3;
    room.send(hidden).await;
    let find = |ts: i64, dir: Direction, upto: i64, limit: u32| {
        let store = Arc::clone(&store);
        let nid = room.nid;
        async move {
            ids(&store
                .room_events_by_ts(nid, ts, dir, upto, limit)
                .await
                .expect("room_events_by_ts"))
        }
    };
    assert_eq!(
        find(NOW + 3, Direction::Forward, i64::MAX, 2).await,
        ["$m2", "$m3"]
    );
    assert_eq!(
        find(NOW + 3, Direction::Backward, i64::MAX, 2).await,
        ["$m2", "$m1"]
    );
    assert_eq!(
        find(NOW, Direction::Backward, i64::MAX, 5).await,
        ["$create"]
    );
    assert!(
        find(NOW - 1, Direction::Backward, i64::MAX, 5)
            .await
            .is_empty()
    );
    assert!(
        find(NOW + 100, Direction::Forward, i64::MAX, 5)
            .await
            .is_empty()
    );
    assert_eq!(
        find(NOW + 100, Direction::Backward, i64::MAX, 1).await,
        ["$m4"]
    );
    // Never past `upto`.
    assert_eq!(
        find(NOW + 100, Direction::Backward, last - 1, 1).await,
        ["$m3"]
    );
}

// ---------------------------------------------------------------- relations

/// An event of `room` relating to `parent` with `rel_type`, sent by `sender`.
fn relating(
    room: &TestRoom,
    event_id: &str,
    sender: &str,
    kind: &str,
    relates_to: serde_json::Value,
) -> NewEvent {
    let mut event = room.event(event_id, kind, None);
    event.sender = sender.to_owned();
    event.json = json!({
        "event_id": event_id,
        "type": kind,
        "sender": sender,
        "content": { "m.relates_to": relates_to },
    })
    .to_string();
    event
}

fn relations_query(room: &TestRoom, parent: &str) -> RelationsQuery {
    RelationsQuery {
        room_nid: room.nid,
        parent_id: parent.to_owned(),
        rel_type: None,
        kind: None,
        depth: 1,
        from: TopoPos {
            depth: i64::MAX,
            stream_pos: i64::MAX,
        },
        dir: Direction::Backward,
        to: None,
        upto: i64::MAX,
        limit: 100,
    }
}

async fn relations_are_recorded_paged_and_forgotten_on_redaction(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!rel:test").await;
    room.message("$root").await;
    let thread = json!({"rel_type": "m.thread", "event_id": "$root"});
    let e = relating(&room, "$t1", "@bob:test", "m.room.message", thread.clone());
    room.send(e).await;
    let e = relating(
        &room,
        "$t2",
        "@alice:test",
        "m.room.message",
        thread.clone(),
    );
    room.send(e).await;
    let react = json!({"rel_type": "m.annotation", "event_id": "$root", "key": "👍"});
    let e = relating(&room, "$r1", "@bob:test", "m.reaction", react);
    room.send(e).await;
    // A reaction to a reply: reached only by recursing.
    let deep = json!({"rel_type": "m.annotation", "event_id": "$t1", "key": "x"});
    let e = relating(&room, "$r2", "@alice:test", "m.reaction", deep);
    room.send(e).await;
    // No well-formed relation: not recorded.
    let e = relating(
        &room,
        "$bad",
        "@bob:test",
        "m.room.message",
        json!({"event_id": 3}),
    );
    room.send(e).await;

    let q = relations_query(&room, "$root");
    let all = store.relations_page(&q).await.expect("relations_page");
    assert_eq!(ids(&all), ["$r1", "$t2", "$t1"], "newest first");
    let forward = RelationsQuery {
        dir: Direction::Forward,
        from: TopoPos {
            depth: 0,
            stream_pos: 0,
        },
        ..q.clone()
    };
    assert_eq!(
        ids(&store.relations_page(&forward).await.unwrap()),
        ["$t1", "$t2", "$r1"]
    );
    let threads_only = RelationsQuery {
        rel_type: Some("m.thread".into()),
        limit: 1,
        ..q.clone()
    };
    let page = store.relations_page(&threads_only).await.unwrap();
    assert_eq!(ids(&page), ["$t2"]);
    let next = RelationsQuery {
        from: TopoPos {
            depth: page[0].depth,
            stream_pos: page[0].stream_pos,
        },
        ..threads_only.clone()
    };
    assert_eq!(ids(&store.relations_page(&next).await.unwrap()), ["$t1"]);
    let reactions = RelationsQuery {
        kind: Some("m.reaction".into()),
        ..q.clone()
    };
    assert_eq!(
        ids(&store.relations_page(&reactions).await.unwrap()),
        ["$r1"]
    );
    let recursive = RelationsQuery {
        depth: 3,
        ..q.clone()
    };
    assert_eq!(
        ids(&store.relations_page(&recursive).await.unwrap()),
        ["$r2", "$r1", "$t2", "$t1"]
    );

    assert!(
        store
            .annotation_exists(room.nid, "$root", "@bob:test", "👍")
            .await
            .unwrap()
    );
    assert!(
        !store
            .annotation_exists(room.nid, "$root", "@alice:test", "👍")
            .await
            .unwrap()
    );
    // Redacting the reaction forgets it.
    let mut redaction = room.event("$redact", "m.room.redaction", None);
    redaction.redacts = Some("$r1".into());
    room.send(redaction).await;
    assert!(
        !store
            .annotation_exists(room.nid, "$root", "@bob:test", "👍")
            .await
            .unwrap()
    );
    assert_eq!(
        ids(&store.relations_page(&q).await.unwrap()),
        ["$t2", "$t1"]
    );
}

async fn relation_aggregations_and_thread_roots(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!agg:test").await;
    room.message("$a").await;
    room.message("$b").await;
    let edit = |to: &str| json!({"rel_type": "m.replace", "event_id": to});
    let e = relating(&room, "$e1", "@alice:test", "m.room.message", edit("$a"));
    room.send(e).await;
    let e = relating(&room, "$e2", "@alice:test", "m.room.message", edit("$a"));
    room.send(e).await;
    let e = relating(&room, "$e3", "@bob:test", "m.room.message", edit("$a"));
    room.send(e).await;
    let thread = |to: &str| json!({"rel_type": "m.thread", "event_id": to});
    let e = relating(&room, "$ta1", "@bob:test", "m.room.message", thread("$a"));
    room.send(e).await;
    let e = relating(&room, "$tb1", "@carol:test", "m.room.message", thread("$b"));
    let tb1 = room.send(e).await;
    let e = relating(&room, "$ta2", "@carol:test", "m.room.message", thread("$a"));
    let ta2 = room.send(e).await;
    let reference = json!({"rel_type": "m.reference", "event_id": "$b"});
    let e = relating(&room, "$ref", "@bob:test", "m.room.message", reference);
    room.send(e).await;

    let parents = vec!["$a".to_owned(), "$b".to_owned(), "$none".to_owned()];
    let agg = store
        .relation_aggregations(room.nid, &parents, "@bob:test", i64::MAX, &[])
        .await
        .expect("relation_aggregations");
    let mut edits: Vec<(String, String, String)> = agg
        .replacements
        .iter()
        .map(|r| {
            (
                r.relates_to_id.clone(),
                r.sender.clone(),
                r.event_id.clone(),
            )
        })
        .collect();
    edits.sort();
    assert_eq!(
        edits,
        [
            ("$a".into(), "@alice:test".into(), "$e2".into()),
            ("$a".into(), "@bob:test".into(), "$e3".into())
        ]
    );
    let mut threads = agg.threads.clone();
    threads.sort_by(|x, y| x.root_id.cmp(&y.root_id));
    assert_eq!(threads.len(), 2);
    assert_eq!(
        (
            threads[0].count,
            threads[0].latest_event_id.as_str(),
            threads[0].participated
        ),
        (2, "$ta2", true)
    );
    assert_eq!(
        (
            threads[1].count,
            threads[1].latest_event_id.as_str(),
            threads[1].participated
        ),
        (1, "$tb1", false)
    );
    assert_eq!(agg.references.len(), 1);
    assert_eq!(agg.references[0].event_id, "$ref");

    // Children of excluded senders (a viewer's ignored users) never count.
    let without_carol = store
        .relation_aggregations(
            room.nid,
            &parents,
            "@bob:test",
            i64::MAX,
            &["@carol:test".into()],
        )
        .await
        .expect("relation_aggregations");
    assert_eq!(without_carol.threads.len(), 1, "{without_carol:?}");
    assert_eq!(
        (
            without_carol.threads[0].count,
            without_carol.threads[0].latest_event_id.as_str()
        ),
        (1, "$ta1")
    );
    let without_bob = store
        .relation_aggregations(
            room.nid,
            &parents,
            "@alice:test",
            i64::MAX,
            &["@bob:test".into()],
        )
        .await
        .expect("relation_aggregations");
    let edit_ids: Vec<&str> = without_bob
        .replacements
        .iter()
        .map(|r| r.event_id.as_str())
        .collect();
    assert_eq!(edit_ids, ["$e2"]);
    assert!(without_bob.references.is_empty(), "{without_bob:?}");

    // Threads by latest reply; participation; paging.
    let roots = store
        .thread_roots(room.nid, None, None, i64::MAX, 10)
        .await
        .unwrap();
    let root_ids: Vec<&str> = roots.iter().map(|r| r.root_id.as_str()).collect();
    assert_eq!(root_ids, ["$a", "$b"]);
    assert_eq!(roots[0].latest_stream_pos, ta2.stream_pos);
    let older = store
        .thread_roots(room.nid, None, Some(ta2.stream_pos), i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].root_id, "$b");
    assert_eq!(older[0].latest_stream_pos, tb1.stream_pos);
    let bobs = store
        .thread_roots(room.nid, Some("@bob:test"), None, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].root_id, "$a");
    // Alice sent both roots: she takes part in both threads.
    let alices = store
        .thread_roots(room.nid, Some("@alice:test"), None, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(alices.len(), 2);
    // Bounded by `upto`.
    let early = store
        .thread_roots(room.nid, None, None, tb1.stream_pos, 10)
        .await
        .unwrap();
    assert_eq!(early.len(), 2);
    assert!(early.iter().all(|r| r.latest_stream_pos <= tb1.stream_pos));
}

/// A searchable event of `room` (text in the key its type searches).
fn searchable(room: &TestRoom, event_id: &str, kind: &str, text: &str, sender: &str) -> NewEvent {
    let (state_key, content) = match kind {
        "m.room.name" => (Some(""), json!({ "name": text })),
        "m.room.topic" => (Some(""), json!({ "topic": text })),
        _ => (None, json!({ "msgtype": "m.text", "body": text })),
    };
    let mut event = room.event(event_id, kind, state_key);
    event.sender = sender.to_owned();
    event.json = json!({ "event_id": event_id, "type": kind, "state_key": state_key,
                         "sender": sender, "content": content })
    .to_string();
    event
}

fn search_query(words: &str, rooms: Vec<(i64, i64)>) -> SearchQuery {
    SearchQuery {
        words: search_words(words),
        rooms,
        keys: vec![SearchKey::Body, SearchKey::Name, SearchKey::Topic],
        limit: 10,
        ..SearchQuery::default()
    }
}

fn hit_ids(page: &SearchPage) -> Vec<String> {
    page.hits.iter().map(|h| h.event.event_id.clone()).collect()
}

async fn search_finds_words_in_rooms_up_to_a_position(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!search:test").await;
    let mut other = TestRoom::create(&store, "!other:test").await;
    room.state("$create", "m.room.create", "").await;
    let e = searchable(
        &room,
        "$hello",
        "m.room.message",
        "Hello brave new World",
        "@a:test",
    );
    let hello = room.send(e).await;
    let e = searchable(&room, "$name", "m.room.name", "World news", "@a:test");
    room.send(e).await;
    let e = searchable(
        &other,
        "$elsewhere",
        "m.room.message",
        "world elsewhere",
        "@a:test",
    );
    other.send(e).await;
    let mut hidden = searchable(&room, "$soft", "m.room.message", "world soft", "@a:test");
    hidden.status = EventStatus::SoftFailed;
    room.send(hidden).await;
    let e = searchable(&room, "$later", "m.room.message", "world later", "@a:test");
    room.send(e).await;
    let e = searchable(
        &room,
        "$secret",
        "m.room.message",
        "world secret",
        "@a:test",
    );
    room.send(e).await;
    // A redaction removes its target from the index.
    let mut redaction = room.event("$redaction", "m.room.redaction", None);
    redaction.redacts = Some("$secret".to_owned());
    room.send(redaction).await;

    let all = |q: SearchQuery| {
        let store = Arc::clone(&store);
        async move { store.search_events(&q).await.expect("search_events") }
    };
    let page = all(search_query("WORLD", vec![(room.nid, i64::MAX)])).await;
    let mut found = hit_ids(&page);
    found.sort();
    assert_eq!(found, ["$hello", "$later", "$name"]);
    assert_eq!(page.count, 3);
    assert!(page.hits.iter().all(|h| h.event.room_id == "!search:test"));
    // Every word must match; case and punctuation do not matter.
    let page = all(search_query("\"brave\" world*", vec![(room.nid, i64::MAX)])).await;
    assert_eq!(hit_ids(&page), ["$hello"]);
    // Up to a position in the room.
    let page = all(search_query("world", vec![(room.nid, hello.stream_pos)])).await;
    assert_eq!(hit_ids(&page), ["$hello"]);
    // Several rooms; keys restrict.
    let mut q = search_query("world", vec![(room.nid, i64::MAX), (other.nid, i64::MAX)]);
    q.keys = vec![SearchKey::Name];
    assert_eq!(hit_ids(&all(q).await), ["$name"]);
    let q = search_query("world", vec![(other.nid, i64::MAX)]);
    assert_eq!(hit_ids(&all(q).await), ["$elsewhere"]);
    // Nothing to search for, or nowhere: nothing, and no error.
    for weird in ["", "\"", "*", "NEAR(a b)", "a OR", "\u{0}", "^-:"] {
        all(search_query(weird, vec![(room.nid, i64::MAX)])).await;
    }
    assert!(
        all(search_query("", vec![(room.nid, i64::MAX)]))
            .await
            .hits
            .is_empty()
    );
    assert!(all(search_query("world", vec![])).await.hits.is_empty());
}

async fn search_orders_pages_and_filters(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!order:test").await;
    room.state("$create", "m.room.create", "").await;
    for (id, text, sender) in [
        ("$one", "apple", "@a:test"),
        ("$two", "apple apple apple pie", "@b:test"),
        ("$three", "apple tart", "@a:test"),
    ] {
        let e = searchable(&room, id, "m.room.message", text, sender);
        room.send(e).await;
    }
    let run = |q: SearchQuery| {
        let store = Arc::clone(&store);
        async move { store.search_events(&q).await.expect("search_events") }
    };
    let mut q = search_query("apple", vec![(room.nid, i64::MAX)]);
    q.order = SearchOrder::Recent;
    assert_eq!(hit_ids(&run(q.clone()).await), ["$three", "$two", "$one"]);
    q.limit = 2;
    let first = run(q.clone()).await;
    assert_eq!(first.count, 3);
    assert_eq!(hit_ids(&first), ["$three", "$two"]);
    q.offset = 2;
    assert_eq!(hit_ids(&run(q.clone()).await), ["$one"]);
    // Rank: ranks descend.
    let mut q = search_query("apple", vec![(room.nid, i64::MAX)]);
    q.order = SearchOrder::Rank;
    let ranked = run(q.clone()).await;
    assert_eq!(ranked.hits.len(), 3);
    assert!(ranked.hits.windows(2).all(|w| w[0].rank >= w[1].rank));
    // Senders.
    q.senders = Some(vec!["@a:test".to_owned()]);
    let mut found = hit_ids(&run(q.clone()).await);
    found.sort();
    assert_eq!(found, ["$one", "$three"]);
    q.senders = None;
    q.not_senders = vec!["@a:test".to_owned()];
    assert_eq!(hit_ids(&run(q).await), ["$two"]);
}

// ---------------------------------------------------------------- to-device

async fn to_device_inbox_once_per_txn_read_in_order_and_acknowledged(store: DynStorage) {
    let bob = ("@bob:test".to_owned(), "PHONE".to_owned());
    let recipients = |n: i64| vec![(bob.0.clone(), bob.1.clone(), json!({ "n": n }))];
    let mut positions = Vec::new();
    for (txn, n) in [("t1", 1), ("t2", 2), ("t3", 3)] {
        let pos = store
            .next_stream_pos(Stream::ToDevice)
            .await
            .expect("position");
        assert!(
            store
                .put_to_device("@alice:test", "LAPTOP", txn, "m.test", &recipients(n), pos)
                .await
                .expect("put_to_device")
        );
        positions.push(pos);
    }
    // The same transaction again stores nothing.
    let pos = store
        .next_stream_pos(Stream::ToDevice)
        .await
        .expect("position");
    assert!(
        !store
            .put_to_device("@alice:test", "LAPTOP", "t1", "m.test", &recipients(9), pos)
            .await
            .expect("put_to_device")
    );
    let inbox = store
        .to_device_messages(&bob.0, &bob.1, i64::MIN, i64::MAX, 10)
        .await
        .expect("inbox");
    let got: Vec<(i64, &str, &str, i64)> = inbox
        .iter()
        .map(|m| {
            (
                m.stream_pos,
                m.sender.as_str(),
                m.kind.as_str(),
                m.content["n"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (positions[0], "@alice:test", "m.test", 1),
            (positions[1], "@alice:test", "m.test", 2),
            (positions[2], "@alice:test", "m.test", 3),
        ]
    );
    let page = store
        .to_device_messages(&bob.0, &bob.1, positions[0], positions[2], 1)
        .await
        .expect("inbox");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].stream_pos, positions[1]);
    // Acknowledging deletes up to a position; the greatest position stays.
    let deleted = store
        .delete_to_device_messages(&bob.0, &bob.1, positions[2])
        .await
        .expect("delete");
    assert_eq!(deleted, 3);
    assert!(store.max_stream_pos(Stream::ToDevice).await.expect("max") >= positions[2]);
}

// ---------------------------------------------------------------- push

fn push_action(user_id: &str, thread: Option<&str>, notify: bool, highlight: bool) -> PushAction {
    PushAction {
        user_id: user_id.to_owned(),
        thread_id: thread.map(str::to_owned),
        notify,
        highlight,
        actions: json!(["notify", { "set_tweak": "highlight", "value": highlight }]),
    }
}

async fn push_actions_count_list_and_are_forgotten(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!push:test").await;
    let bob = "@bob:test";
    room.member("$join", bob, "join").await;
    let mut first = room.event("$m1", "m.room.message", None);
    first.push_actions = vec![push_action(bob, None, true, false)];
    let m1 = room.send(first).await;
    let mut second = room.event("$m2", "m.room.message", None);
    second.push_actions = vec![
        push_action(bob, Some("$m1"), true, true),
        push_action("@carol:test", None, true, false),
    ];
    let m2 = room.send(second).await;
    let mut quiet = room.event("$m3", "m.room.message", None);
    quiet.push_actions = vec![push_action(bob, None, false, true)];
    let m3 = room.send(quiet).await;

    // Unread: notifying rows only, in order, within the bounds.
    let unread = store
        .unread_actions(bob, room.nid, i64::MIN, i64::MAX, 100)
        .await
        .expect("unread_actions");
    let got: Vec<(i64, Option<&str>, bool)> = unread
        .iter()
        .map(|u| (u.stream_pos, u.thread_id.as_deref(), u.highlight))
        .collect();
    assert_eq!(
        got,
        vec![
            (m1.stream_pos, None, false),
            (m2.stream_pos, Some("$m1"), true)
        ]
    );
    let after_first = store
        .unread_actions(bob, room.nid, m1.stream_pos, m2.stream_pos, 100)
        .await
        .expect("unread_actions");
    assert_eq!(after_first.len(), 1);

    // /notifications: newest first, paged by position, highlights only.
    let all = store
        .notifications(bob, None, i64::MAX, 10, false)
        .await
        .expect("notifications");
    let ids: Vec<&str> = all.iter().map(|n| n.event_id.as_str()).collect();
    assert_eq!(ids, vec!["$m3", "$m2", "$m1"]);
    assert_eq!(all[0].room_id, "!push:test");
    assert_eq!(all[1].actions[1]["value"], json!(true));
    let page = store
        .notifications(bob, Some(m3.stream_pos), i64::MAX, 1, false)
        .await
        .expect("notifications");
    assert_eq!(page[0].event_id, "$m2");
    let highlights = store
        .notifications(bob, None, i64::MAX, 10, true)
        .await
        .expect("notifications");
    assert_eq!(highlights.len(), 2);
    let bounded = store
        .notifications(bob, None, m1.stream_pos, 10, false)
        .await
        .expect("notifications");
    assert_eq!(bounded.len(), 1);
    // What a pusher sends: notifying only, oldest first.
    let pending = store
        .notifications_after(bob, m1.stream_pos, i64::MAX, 10)
        .await
        .expect("notifications_after");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event_id, "$m2");

    // The badge: everything notifying after the read receipt.
    assert_eq!(
        store.unread_notification_total(bob).await.expect("total"),
        2
    );
    let stream_pos = store
        .next_stream_pos(Stream::Receipts)
        .await
        .expect("receipt position");
    let receipt = Receipt {
        room_nid: room.nid,
        room_id: String::new(),
        user_id: bob.to_owned(),
        receipt_type: "m.read".to_owned(),
        thread_id: None,
        event_id: "$m1".to_owned(),
        ts: NOW,
        stream_pos,
    };
    store.put_receipt(&receipt).await.expect("put_receipt");
    assert_eq!(
        store.unread_notification_total(bob).await.expect("total"),
        1
    );

    // A redaction forgets its target's rows; leaving forgets the leaver's.
    let mut redaction = room.event("$r", "m.room.redaction", None);
    redaction.redacts = Some("$m2".to_owned());
    room.send(redaction).await;
    assert_eq!(
        store.unread_notification_total(bob).await.expect("total"),
        0
    );
    let carol = store
        .notifications("@carol:test", None, i64::MAX, 10, false)
        .await
        .expect("notifications");
    assert!(carol.is_empty(), "the redacted event's rows are gone");
    room.member("$leave", bob, "leave").await;
    let left = store
        .notifications(bob, None, i64::MAX, 10, false)
        .await
        .expect("notifications");
    assert!(left.is_empty(), "leaving forgets the room's notifications");
}

fn pusher(user_id: &str, app_id: &str, pushkey: &str, device: Option<&str>) -> Pusher {
    Pusher {
        user_id: user_id.to_owned(),
        device_id: device.map(str::to_owned),
        app_id: app_id.to_owned(),
        pushkey: pushkey.to_owned(),
        kind: "http".to_owned(),
        app_display_name: "App".to_owned(),
        device_display_name: "Phone".to_owned(),
        profile_tag: None,
        lang: "en".to_owned(),
        data: json!({ "url": "https://push.example/_matrix/push/v1/notify" }),
        created_ms: NOW,
        last_stream_pos: 7,
        failing_since_ms: None,
    }
}

async fn pushers_put_list_progress_and_delete(store: DynStorage) {
    let alice = "@alice:test";
    let bob = "@bob:test";
    store
        .put_pusher(&pusher(alice, "app", "key1", Some("DEV")))
        .await
        .expect("put_pusher");
    store
        .put_pusher(&pusher(alice, "app", "key2", None))
        .await
        .expect("put_pusher");
    store
        .put_pusher(&pusher(bob, "app", "key1", None))
        .await
        .expect("put_pusher");
    assert_eq!(store.pushers(alice).await.expect("pushers").len(), 2);
    assert_eq!(store.all_pushers().await.expect("all").len(), 3);

    // Progress is kept across a replacement of the pusher's fields.
    assert!(
        store
            .set_pusher_progress(alice, "app", "key1", 42, Some(NOW))
            .await
            .expect("progress")
    );
    let mut changed = pusher(alice, "app", "key1", Some("DEV"));
    changed.lang = "de".to_owned();
    store.put_pusher(&changed).await.expect("put_pusher");
    let stored = store.pushers(alice).await.expect("pushers");
    assert_eq!(stored[0].lang, "de");
    assert_eq!(stored[0].last_stream_pos, 42);
    assert_eq!(stored[0].failing_since_ms, Some(NOW));
    assert!(
        !store
            .set_pusher_progress(alice, "app", "nope", 1, None)
            .await
            .expect("progress")
    );

    // `append: false` takes the key from other users.
    let taken = store
        .delete_pushers_of_key("app", "key1", alice)
        .await
        .expect("delete_pushers_of_key");
    assert_eq!(taken, vec![bob.to_owned()]);
    assert!(store.pushers(bob).await.expect("pushers").is_empty());

    // A device's pushers go with it.
    let gone = store
        .delete_device_pushers(alice, "DEV")
        .await
        .expect("delete_device_pushers");
    assert_eq!(gone, vec![("app".to_owned(), "key1".to_owned())]);
    assert!(
        store
            .delete_pusher(alice, "app", "key2")
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_pusher(alice, "app", "key2")
            .await
            .expect("delete")
    );
    assert!(store.all_pushers().await.expect("all").is_empty());
}

fn otk(algorithm: &str, key_id: &str, key: &str) -> myelin_storage::OneTimeKey {
    myelin_storage::OneTimeKey {
        algorithm: algorithm.to_owned(),
        key_id: key_id.to_owned(),
        key: json!({ "key": key, "signatures": {} }),
    }
}

async fn keys_device_keys_put_query_and_change_log(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    let bob = create_user(&store, "bob").await;
    for (user, device, digest) in [
        (&alice, "PHONE", b"a1"),
        (&alice, "LAPTOP", b"a2"),
        (&bob, "TABLET", b"b1"),
    ] {
        store
            .create_session(session(user, device, digest, None), Some(device), None)
            .await
            .expect("session");
    }
    assert_eq!(store.device_keys(&alice, "PHONE").await.expect("get"), None);
    let phone = json!({ "user_id": alice, "device_id": "PHONE", "keys": { "ed25519:PHONE": "x" } });
    let laptop = json!({ "user_id": alice, "device_id": "LAPTOP", "keys": {} });
    store
        .put_device_keys(&alice, "PHONE", &phone, 10)
        .await
        .expect("put");
    store
        .put_device_keys(&alice, "LAPTOP", &laptop, 12)
        .await
        .expect("put");
    store
        .put_device_keys(&bob, "TABLET", &json!({ "keys": {} }), 20)
        .await
        .expect("put");
    // Unchanged keys log no change.
    assert!(
        !store
            .put_device_keys(&alice, "PHONE", &phone, 30)
            .await
            .expect("put again")
    );
    assert_eq!(
        store.device_keys(&alice, "PHONE").await.expect("get"),
        Some(phone.clone())
    );

    let all = store.user_device_keys(&alice, &[]).await.expect("all");
    let ids: Vec<_> = all.iter().map(|k| k.device_id.as_str()).collect();
    assert_eq!(ids, ["LAPTOP", "PHONE"]);
    assert_eq!(all[1].keys, phone);
    assert_eq!(all[1].display_name.as_deref(), Some("PHONE"));
    let one = store
        .user_device_keys(&alice, &["PHONE".to_owned(), "NOPE".to_owned()])
        .await
        .expect("one");
    assert_eq!(one.len(), 1);
    // Keys of a deleted device are not served.
    assert!(store.delete_device(&alice, "LAPTOP").await.expect("delete"));
    assert_eq!(
        store
            .user_device_keys(&alice, &[])
            .await
            .expect("all")
            .len(),
        1
    );

    assert_eq!(
        store.device_list_changes(0, 100).await.expect("changes"),
        [alice.clone(), bob.clone()]
    );
    // `after < position <= upto`.
    assert_eq!(
        store.device_list_changes(9, 12).await.expect("changes"),
        [alice.as_str()]
    );
    assert_eq!(
        store.device_list_changes(12, 20).await.expect("changes"),
        [bob.as_str()]
    );
    assert!(
        store
            .device_list_changes(20, 100)
            .await
            .expect("changes")
            .is_empty()
    );
    // A change without keys (a deleted device); positions never go back.
    store.log_device_list_change(&bob, 40).await.expect("log");
    assert_eq!(
        store.device_list_changes(30, 40).await.expect("changes"),
        [bob.as_str()]
    );
    assert!(
        store
            .max_stream_pos(Stream::DeviceLists)
            .await
            .expect("max")
            >= 40
    );
}

async fn keys_one_time_keys_upload_count_and_conflict(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    assert!(
        store
            .one_time_key_counts(&alice, "D")
            .await
            .expect("count")
            .is_empty()
    );
    store
        .put_one_time_keys(
            &alice,
            "D",
            &[
                otk("signed_curve25519", "A", "ka"),
                otk("signed_curve25519", "B", "kb"),
                otk("curve25519", "C", "kc"),
            ],
        )
        .await
        .expect("put");
    // The same key again is fine; other devices count apart.
    store
        .put_one_time_keys(&alice, "D", &[otk("signed_curve25519", "A", "ka")])
        .await
        .expect("same again");
    store
        .put_one_time_keys(&alice, "E", &[otk("signed_curve25519", "A", "other")])
        .await
        .expect("other device");
    let counts = store.one_time_key_counts(&alice, "D").await.expect("count");
    assert_eq!(
        counts,
        BTreeMap::from([
            ("curve25519".to_owned(), 1),
            ("signed_curve25519".to_owned(), 2)
        ])
    );
    // A stored key id with other content: the whole upload is refused.
    let refused = store
        .put_one_time_keys(
            &alice,
            "D",
            &[
                otk("signed_curve25519", "Z", "kz"),
                otk("signed_curve25519", "A", "changed"),
            ],
        )
        .await;
    assert!(
        matches!(refused, Err(StorageError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.one_time_key_counts(&alice, "D").await.expect("count")["signed_curve25519"],
        2
    );
}

async fn keys_claim_one_time_then_fallback(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    assert_eq!(
        store
            .claim_key(&alice, "D", "signed_curve25519")
            .await
            .expect("claim"),
        None
    );
    store
        .put_one_time_keys(
            &alice,
            "D",
            &[
                otk("signed_curve25519", "A", "ka"),
                otk("signed_curve25519", "B", "kb"),
            ],
        )
        .await
        .expect("put");
    store
        .put_fallback_keys(&alice, "D", &[otk("signed_curve25519", "F1", "kf1")])
        .await
        .expect("fallback");
    assert_eq!(
        store
            .unused_fallback_key_types(&alice, "D")
            .await
            .expect("types"),
        ["signed_curve25519"]
    );
    let first = store
        .claim_key(&alice, "D", "signed_curve25519")
        .await
        .expect("claim");
    let second = store
        .claim_key(&alice, "D", "signed_curve25519")
        .await
        .expect("claim");
    let mut ids = vec![first.expect("first").key_id, second.expect("second").key_id];
    ids.sort();
    assert_eq!(ids, ["A", "B"]);
    assert!(
        store
            .one_time_key_counts(&alice, "D")
            .await
            .expect("count")
            .is_empty()
    );
    // No one-time key left: the fallback key, marked used, still available.
    for _ in 0..2 {
        let fallback = store
            .claim_key(&alice, "D", "signed_curve25519")
            .await
            .expect("claim")
            .expect("fallback");
        assert_eq!(fallback, otk("signed_curve25519", "F1", "kf1"));
    }
    assert!(
        store
            .unused_fallback_key_types(&alice, "D")
            .await
            .expect("types")
            .is_empty()
    );
    // A new fallback key replaces the old one, unused.
    store
        .put_fallback_keys(&alice, "D", &[otk("signed_curve25519", "F2", "kf2")])
        .await
        .expect("fallback");
    assert_eq!(
        store
            .unused_fallback_key_types(&alice, "D")
            .await
            .expect("types"),
        ["signed_curve25519"]
    );
    let fallback = store
        .claim_key(&alice, "D", "signed_curve25519")
        .await
        .expect("claim")
        .expect("fallback");
    assert_eq!(fallback.key_id, "F2");
    assert_eq!(
        store
            .claim_key(&alice, "D", "curve25519")
            .await
            .expect("claim"),
        None
    );
}

async fn keys_concurrent_claims_hand_out_each_key_once(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    let keys: Vec<_> = (0..20)
        .map(|i| otk("signed_curve25519", &format!("K{i:02}"), &format!("k{i}")))
        .collect();
    store
        .put_one_time_keys(&alice, "D", &keys)
        .await
        .expect("put");
    store
        .put_fallback_keys(&alice, "D", &[otk("signed_curve25519", "FB", "kfb")])
        .await
        .expect("fallback");
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let store = Arc::clone(&store);
        let alice = alice.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim_key(&alice, "D", "signed_curve25519")
                .await
                .expect("claim")
                .expect("a key")
                .key_id
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task"));
    }
    let fallbacks = ids.iter().filter(|id| *id == "FB").count();
    let mut once: Vec<_> = ids.iter().filter(|id| *id != "FB").cloned().collect();
    once.sort();
    let before = once.len();
    once.dedup();
    assert_eq!(
        once.len(),
        before,
        "a one-time key was handed out twice: {ids:?}"
    );
    assert_eq!(once.len(), 20, "{ids:?}");
    assert_eq!(fallbacks, 20);
}

// ---------------------------------------------------------------- key backup

fn backed_up(
    room: &str,
    session: &str,
    index: i64,
    forwarded: i64,
    verified: bool,
) -> myelin_storage::BackedUpSession {
    myelin_storage::BackedUpSession {
        room_id: room.to_owned(),
        session_id: session.to_owned(),
        first_message_index: index,
        forwarded_count: forwarded,
        is_verified: verified,
        session_data: json!({ "ciphertext": format!("{room}/{session}/{index}/{forwarded}/{verified}") }),
    }
}

async fn backup_versions_number_update_and_delete(store: DynStorage) {
    let alg = "m.megolm_backup.v1.curve25519-aes-sha2";
    assert_eq!(
        store
            .backup_version("@alice:test", None)
            .await
            .expect("current"),
        None
    );
    let v1 = store
        .create_backup_version("@alice:test", alg, &json!({ "public_key": "a" }))
        .await
        .expect("create");
    let v2 = store
        .create_backup_version("@alice:test", alg, &json!({ "public_key": "b" }))
        .await
        .expect("create");
    assert_eq!((v1, v2), (1, 2));
    // Numbering is per user.
    let bob = store
        .create_backup_version("@bob:test", alg, &json!({}))
        .await
        .expect("create");
    assert_eq!(bob, 1);
    let current = store
        .backup_version("@alice:test", None)
        .await
        .expect("current")
        .expect("a current version");
    assert_eq!(current.version, 2);
    assert_eq!(current.algorithm, alg);
    assert_eq!(current.auth_data, json!({ "public_key": "b" }));
    assert_eq!(current.count, 0);
    assert!(
        store
            .update_backup_auth_data("@alice:test", 1, &json!({ "public_key": "c" }))
            .await
            .expect("update")
    );
    let one = store
        .backup_version("@alice:test", Some(1))
        .await
        .expect("get")
        .expect("v1");
    assert_eq!(one.auth_data, json!({ "public_key": "c" }));
    assert!(
        !store
            .update_backup_auth_data("@alice:test", 9, &json!({}))
            .await
            .expect("update")
    );
    // Deleting the current version makes the previous one current; deleting
    // again still succeeds; numbers are never reused.
    assert!(
        store
            .delete_backup_version("@alice:test", 2)
            .await
            .expect("delete")
    );
    assert!(
        store
            .delete_backup_version("@alice:test", 2)
            .await
            .expect("delete again")
    );
    assert!(
        !store
            .delete_backup_version("@alice:test", 7)
            .await
            .expect("delete unknown")
    );
    assert_eq!(
        store
            .backup_version("@alice:test", Some(2))
            .await
            .expect("get"),
        None
    );
    assert!(
        !store
            .update_backup_auth_data("@alice:test", 2, &json!({}))
            .await
            .expect("update")
    );
    assert_eq!(
        store
            .backup_version("@alice:test", None)
            .await
            .expect("current")
            .map(|v| v.version),
        Some(1)
    );
    let v3 = store
        .create_backup_version("@alice:test", alg, &json!({}))
        .await
        .expect("create");
    assert_eq!(v3, 3);
    assert!(
        store
            .delete_backup_version("@alice:test", 1)
            .await
            .expect("delete")
    );
    assert!(
        store
            .delete_backup_version("@alice:test", 3)
            .await
            .expect("delete")
    );
    assert_eq!(
        store
            .backup_version("@alice:test", None)
            .await
            .expect("current"),
        None
    );
    assert_eq!(
        store
            .backup_version("@bob:test", None)
            .await
            .expect("bob")
            .map(|v| v.version),
        Some(1)
    );
}

async fn backup_sessions_replacement_etag_and_count(store: DynStorage) {
    use myelin_storage::{BackupScope, BackupUpload};
    let alice = "@alice:test";
    let v = store
        .create_backup_version(alice, "alg", &json!({}))
        .await
        .expect("create");
    let put = |sessions: Vec<myelin_storage::BackedUpSession>| {
        let store = Arc::clone(&store);
        async move {
            store
                .put_backup_sessions(alice, v, &sessions)
                .await
                .expect("put")
        }
    };
    let stored = |upload: BackupUpload| match upload {
        BackupUpload::Stored { etag, count } => (etag, count),
        other => panic!("not stored: {other:?}"),
    };
    let (e1, c1) = stored(put(vec![backed_up("!r:test", "s", 5, 2, false)]).await);
    assert_eq!(c1, 1);
    let get = || {
        let store = Arc::clone(&store);
        async move {
            store
                .backup_sessions(alice, v, BackupScope::Session("!r:test", "s"))
                .await
                .expect("get")
                .expect("version")
                .pop()
                .expect("the session")
        }
    };
    // Worse or equal: kept, etag unchanged.
    for worse in [
        backed_up("!r:test", "s", 6, 0, false),
        backed_up("!r:test", "s", 5, 2, false),
        backed_up("!r:test", "s", 5, 3, false),
    ] {
        let (e, c) = stored(put(vec![worse]).await);
        assert_eq!((e, c), (e1, 1));
        assert_eq!(get().await, backed_up("!r:test", "s", 5, 2, false));
    }
    // Lower forwarded_count wins at the same index.
    let (e2, _) = stored(put(vec![backed_up("!r:test", "s", 5, 1, false)]).await);
    assert_ne!(e2, e1);
    assert_eq!(get().await, backed_up("!r:test", "s", 5, 1, false));
    // Lower first_message_index wins whatever the forwarded_count.
    stored(put(vec![backed_up("!r:test", "s", 4, 9, false)]).await);
    assert_eq!(get().await, backed_up("!r:test", "s", 4, 9, false));
    // Verified beats unverified whatever the index...
    let (e3, _) = stored(put(vec![backed_up("!r:test", "s", 50, 9, true)]).await);
    assert_eq!(get().await, backed_up("!r:test", "s", 50, 9, true));
    // ...and an unverified one never replaces a verified one.
    let (e4, c4) = stored(put(vec![backed_up("!r:test", "s", 0, 0, false)]).await);
    assert_eq!((e4, c4), (e3, 1));
    assert_eq!(get().await, backed_up("!r:test", "s", 50, 9, true));
    // New sessions raise the count; the version reports the same numbers.
    let (e5, c5) = stored(
        put(vec![
            backed_up("!r:test", "t", 0, 0, false),
            backed_up("!q:test", "s", 0, 0, false),
        ])
        .await,
    );
    assert_eq!(c5, 3);
    let version = store
        .backup_version(alice, None)
        .await
        .expect("get")
        .expect("v");
    assert_eq!((version.etag, version.count), (e5, 3));
    // Deleting changes the etag; deleting nothing does not.
    let (e6, c6) = store
        .delete_backup_sessions(alice, v, BackupScope::Session("!r:test", "t"))
        .await
        .expect("delete")
        .expect("version");
    assert_eq!(c6, 2);
    assert_ne!(e6, e5);
    let (e7, c7) = store
        .delete_backup_sessions(alice, v, BackupScope::Session("!r:test", "t"))
        .await
        .expect("delete")
        .expect("version");
    assert_eq!((e7, c7), (e6, 2));
}

async fn backup_sessions_scopes_and_wrong_versions(store: DynStorage) {
    use myelin_storage::{BackupScope, BackupUpload};
    let alice = "@alice:test";
    assert_eq!(
        store
            .put_backup_sessions(alice, 1, &[backed_up("!a:test", "s", 0, 0, false)])
            .await
            .expect("put"),
        BackupUpload::NoVersion
    );
    let v1 = store
        .create_backup_version(alice, "alg", &json!({}))
        .await
        .expect("create");
    store
        .put_backup_sessions(
            alice,
            v1,
            &[
                backed_up("!b:test", "s2", 0, 0, false),
                backed_up("!a:test", "s1", 0, 0, false),
                backed_up("!b:test", "s1", 0, 0, false),
            ],
        )
        .await
        .expect("put");
    let ids = |sessions: Vec<myelin_storage::BackedUpSession>| {
        sessions
            .into_iter()
            .map(|s| format!("{}/{}", s.room_id, s.session_id))
            .collect::<Vec<_>>()
    };
    let all = store
        .backup_sessions(alice, v1, BackupScope::All)
        .await
        .expect("all")
        .expect("v1");
    assert_eq!(ids(all), ["!a:test/s1", "!b:test/s1", "!b:test/s2"]);
    let room = store
        .backup_sessions(alice, v1, BackupScope::Room("!b:test"))
        .await
        .expect("room")
        .expect("v1");
    assert_eq!(ids(room), ["!b:test/s1", "!b:test/s2"]);
    let none = store
        .backup_sessions(alice, v1, BackupScope::Session("!b:test", "nope"))
        .await
        .expect("session")
        .expect("v1");
    assert!(none.is_empty());
    // Another user sees none of it.
    assert_eq!(
        store
            .backup_sessions("@bob:test", v1, BackupScope::All)
            .await
            .expect("bob"),
        None
    );
    let (_, count) = store
        .delete_backup_sessions(alice, v1, BackupScope::Room("!b:test"))
        .await
        .expect("delete")
        .expect("v1");
    assert_eq!(count, 1);
    // A newer version: uploads to the old one are refused, naming the current.
    let v2 = store
        .create_backup_version(alice, "alg", &json!({}))
        .await
        .expect("create");
    assert_eq!(
        store
            .put_backup_sessions(alice, v1, &[backed_up("!a:test", "x", 0, 0, false)])
            .await
            .expect("put"),
        BackupUpload::WrongVersion { current: v2 }
    );
    // The old version can still be read and emptied.
    let (_, count) = store
        .delete_backup_sessions(alice, v1, BackupScope::All)
        .await
        .expect("delete")
        .expect("v1");
    assert_eq!(count, 0);
    // A deleted version loses its sessions and cannot be read.
    store
        .put_backup_sessions(alice, v2, &[backed_up("!a:test", "x", 0, 0, false)])
        .await
        .expect("put");
    assert!(
        store
            .delete_backup_version(alice, v2)
            .await
            .expect("delete")
    );
    assert_eq!(
        store
            .backup_sessions(alice, v2, BackupScope::All)
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        store
            .delete_backup_sessions(alice, v2, BackupScope::All)
            .await
            .expect("delete"),
        None
    );
    // v1 is current again.
    assert!(matches!(
        store
            .put_backup_sessions(alice, v1, &[backed_up("!a:test", "y", 0, 0, false)])
            .await
            .expect("put"),
        BackupUpload::Stored { count: 1, .. }
    ));
}

async fn backup_concurrent_creations_get_distinct_versions(store: DynStorage) {
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .create_backup_version("@alice:test", "alg", &json!({}))
                .await
                .expect("create")
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.expect("task"));
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=10).collect::<Vec<i64>>());
    assert_eq!(
        store
            .backup_version("@alice:test", None)
            .await
            .expect("current")
            .map(|v| v.version),
        Some(10)
    );
}

async fn keys_cross_signing_keys_replace_and_log_changes(store: DynStorage) {
    use myelin_storage::CrossSigningUsage::{Master, SelfSigning, UserSigning};
    let alice = create_user(&store, "alice").await;
    let bob = create_user(&store, "bob").await;
    assert_eq!(
        store.cross_signing_key(&alice, Master).await.expect("get"),
        None
    );
    let master = json!({ "user_id": alice, "usage": ["master"], "keys": { "ed25519:M1": "M1" } });
    let ssk =
        json!({ "user_id": alice, "usage": ["self_signing"], "keys": { "ed25519:S1": "S1" } });
    let usk =
        json!({ "user_id": alice, "usage": ["user_signing"], "keys": { "ed25519:U1": "U1" } });
    store
        .put_cross_signing_keys(
            &alice,
            &[
                (Master, master.clone()),
                (SelfSigning, ssk.clone()),
                (UserSigning, usk.clone()),
            ],
            5,
        )
        .await
        .expect("put");
    for (usage, key) in [(Master, &master), (SelfSigning, &ssk), (UserSigning, &usk)] {
        assert_eq!(
            store
                .cross_signing_key(&alice, usage)
                .await
                .expect("get")
                .as_ref(),
            Some(key)
        );
        assert_eq!(
            store.cross_signing_key(&bob, usage).await.expect("get"),
            None
        );
    }
    // A new master key replaces the old one only.
    let master2 = json!({ "user_id": alice, "usage": ["master"], "keys": { "ed25519:M2": "M2" } });
    store
        .put_cross_signing_keys(&alice, &[(Master, master2.clone())], 7)
        .await
        .expect("put");
    assert_eq!(
        store.cross_signing_key(&alice, Master).await.expect("get"),
        Some(master2)
    );
    assert_eq!(
        store
            .cross_signing_key(&alice, SelfSigning)
            .await
            .expect("get"),
        Some(ssk)
    );
    assert_eq!(
        store.device_list_changes(0, 5).await.expect("changes"),
        vec![alice.clone()]
    );
    assert_eq!(
        store.device_list_changes(5, 7).await.expect("changes"),
        vec![alice.clone()]
    );
    assert_eq!(
        store.device_list_changes(7, 100).await.expect("changes"),
        Vec::<String>::new()
    );
}

async fn keys_signatures_stored_per_target_and_replaced(store: DynStorage) {
    use myelin_storage::KeySignature;
    let alice = create_user(&store, "alice").await;
    let bob = create_user(&store, "bob").await;
    let sig = |target: &str, key: &str, signer: &str, by: &str, value: &str| KeySignature {
        target_user_id: target.to_owned(),
        target_key_id: key.to_owned(),
        signer_user_id: signer.to_owned(),
        signer_key_id: by.to_owned(),
        signature: value.to_owned(),
    };
    assert!(store.key_signatures(&alice).await.expect("read").is_empty());
    store
        .put_key_signatures(
            &alice,
            &[
                sig(&alice, "PHONE", &alice, "ed25519:SSK", "s1"),
                sig(&alice, "MASTER", &alice, "ed25519:PHONE", "s2"),
                // Another target user's: skipped.
                sig(&bob, "BOBMASTER", &alice, "ed25519:USK", "s3"),
            ],
            3,
        )
        .await
        .expect("put");
    store
        .put_key_signatures(
            &bob,
            &[sig(&bob, "BOBMASTER", &alice, "ed25519:USK", "s3")],
            4,
        )
        .await
        .expect("put");
    assert_eq!(
        store.key_signatures(&alice).await.expect("read"),
        vec![
            sig(&alice, "MASTER", &alice, "ed25519:PHONE", "s2"),
            sig(&alice, "PHONE", &alice, "ed25519:SSK", "s1"),
        ]
    );
    assert_eq!(
        store.key_signatures(&bob).await.expect("read"),
        vec![sig(&bob, "BOBMASTER", &alice, "ed25519:USK", "s3")]
    );
    // The same signer over the same key again: replaced.
    store
        .put_key_signatures(
            &alice,
            &[sig(&alice, "PHONE", &alice, "ed25519:SSK", "s1b")],
            6,
        )
        .await
        .expect("put");
    assert_eq!(
        store.key_signatures(&alice).await.expect("read"),
        vec![
            sig(&alice, "MASTER", &alice, "ed25519:PHONE", "s2"),
            sig(&alice, "PHONE", &alice, "ed25519:SSK", "s1b"),
        ]
    );
    assert_eq!(
        store.device_list_changes(0, 3).await.expect("changes"),
        vec![alice.clone()]
    );
    assert_eq!(
        store.device_list_changes(3, 4).await.expect("changes"),
        vec![bob.clone()]
    );
    assert_eq!(
        store.device_list_changes(4, 6).await.expect("changes"),
        vec![alice.clone()]
    );
}

async fn dehydrated_device_replace_and_delete(store: DynStorage) {
    let alice = create_user(&store, "alice").await;
    store
        .create_session(session(&alice, "PHONE", b"a1", None), None, None)
        .await
        .expect("session");
    let dehydrated = |device_id: &str, n: i64| DehydratedDevice {
        user_id: alice.clone(),
        device_id: device_id.to_owned(),
        device_data: json!({ "algorithm": "m.dehydration.v1.olm", "n": n }),
        created_ms: NOW + n,
    };
    assert_eq!(store.dehydrated_device(&alice).await.expect("get"), None);

    let replaced = store
        .put_dehydrated_device(dehydrated("DEHY1", 1), Some("Backup device"))
        .await
        .expect("put");
    assert_eq!(replaced, None);
    assert_eq!(
        store.dehydrated_device(&alice).await.expect("get"),
        Some(dehydrated("DEHY1", 1))
    );
    let device = store.device(&alice, "DEHY1").await.expect("device");
    assert_eq!(
        device.and_then(|d| d.display_name).as_deref(),
        Some("Backup device")
    );
    // It is a device like others: keys and an inbox of its own.
    store
        .put_device_keys(&alice, "DEHY1", &json!({ "device_id": "DEHY1" }), 1)
        .await
        .expect("keys");
    store
        .put_to_device(
            &alice,
            "PHONE",
            "t1",
            "m.room_key",
            &[(alice.clone(), "DEHY1".to_owned(), json!({}))],
            1,
        )
        .await
        .expect("to-device");

    // Another device's id is refused, and changes nothing.
    let err = store
        .put_dehydrated_device(dehydrated("PHONE", 2), None)
        .await
        .expect_err("existing device id");
    assert!(matches!(err, StorageError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.dehydrated_device(&alice).await.expect("get"),
        Some(dehydrated("DEHY1", 1))
    );

    // A new one replaces the old, which goes with its keys and inbox.
    let replaced = store
        .put_dehydrated_device(dehydrated("DEHY2", 3), None)
        .await
        .expect("replace");
    assert_eq!(replaced.as_deref(), Some("DEHY1"));
    assert_eq!(store.device(&alice, "DEHY1").await.expect("device"), None);
    assert_eq!(
        store.device_keys(&alice, "DEHY1").await.expect("keys"),
        None
    );
    let inbox = store
        .to_device_messages(&alice, "DEHY1", i64::MIN, i64::MAX, 10)
        .await
        .expect("inbox");
    assert!(inbox.is_empty());
    // The same id again replaces it afresh.
    let replaced = store
        .put_dehydrated_device(dehydrated("DEHY2", 4), None)
        .await
        .expect("replace with the same id");
    assert_eq!(replaced.as_deref(), Some("DEHY2"));
    assert_eq!(
        store.dehydrated_device(&alice).await.expect("get"),
        Some(dehydrated("DEHY2", 4))
    );

    assert_eq!(
        store
            .delete_dehydrated_device(&alice)
            .await
            .expect("delete"),
        Some("DEHY2".to_owned())
    );
    assert_eq!(
        store.delete_dehydrated_device(&alice).await.expect("again"),
        None
    );
    assert_eq!(store.device(&alice, "DEHY2").await.expect("device"), None);
    assert!(
        store
            .device(&alice, "PHONE")
            .await
            .expect("device")
            .is_some()
    );

    // Deleting devices the ordinary way forgets it too.
    store
        .put_dehydrated_device(dehydrated("DEHY3", 5), None)
        .await
        .expect("put");
    store
        .delete_devices_except(&alice, Some("PHONE"))
        .await
        .expect("logout others");
    assert_eq!(store.dehydrated_device(&alice).await.expect("get"), None);
}

async fn media_create_complete_and_thumbnails(store: DynStorage) {
    let content = |sha: char| MediaContent {
        content_type: "image/png".to_owned(),
        filename: Some("cat.png".to_owned()),
        size: 1234,
        sha256: sha.to_string().repeat(64),
        uploaded_ms: NOW + 5,
    };
    let record = |id: &str, content: Option<MediaContent>| MediaRecord {
        server_name: "test".to_owned(),
        media_id: id.to_owned(),
        uploader: Some("@alice:test".to_owned()),
        created_ms: NOW,
        expires_ms: content.is_none().then_some(NOW + 1_000),
        content,
        quarantined: false,
    };
    // A complete upload.
    store
        .create_media(&record("done", Some(content('a'))))
        .await
        .expect("create");
    assert_eq!(
        store.media("test", "done").await.expect("get"),
        Some(record("done", Some(content('a'))))
    );
    let err = store
        .create_media(&record("done", None))
        .await
        .expect_err("the id exists");
    assert!(matches!(err, StorageError::Conflict(_)), "{err:?}");
    assert_eq!(store.media("other", "done").await.expect("get"), None);

    // Pending ids: completed once, by their creator, before they expire.
    for id in ["p1", "p2", "p3"] {
        store.create_media(&record(id, None)).await.expect("create");
    }
    assert_eq!(
        store
            .pending_media_count("@alice:test", NOW)
            .await
            .expect("count"),
        3
    );
    let complete = |id: &'static str, who: &'static str, now: i64| {
        let store = store.clone();
        let c = content('b');
        async move {
            store
                .complete_media("test", id, who, &c, now)
                .await
                .expect("complete")
        }
    };
    assert!(
        !complete("p1", "@mallory:test", NOW).await,
        "not the creator"
    );
    assert!(complete("p1", "@alice:test", NOW).await);
    assert!(!complete("p1", "@alice:test", NOW).await, "only once");
    assert!(!complete("done", "@alice:test", NOW).await, "not pending");
    assert!(!complete("p2", "@alice:test", NOW + 1_000).await, "expired");
    assert!(!complete("nope", "@alice:test", NOW).await, "unknown");
    let p1 = store.media("test", "p1").await.expect("get").expect("p1");
    assert_eq!((p1.content, p1.expires_ms), (Some(content('b')), None));
    assert_eq!(
        store
            .pending_media_count("@alice:test", NOW)
            .await
            .expect("count"),
        2
    );
    assert_eq!(
        store
            .pending_media_count("@alice:test", NOW + 1_000)
            .await
            .expect("count"),
        0
    );

    // Thumbnails, smallest first, each size once.
    let thumb = |w: u32, h: u32, method: &str, sha: char| MediaThumbnail {
        width: w,
        height: h,
        method: method.to_owned(),
        animated: false,
        content_type: "image/png".to_owned(),
        size: i64::from(w * h),
        sha256: sha.to_string().repeat(64),
    };
    for t in [thumb(320, 240, "scale", 'c'), thumb(32, 32, "crop", 'd')] {
        store
            .put_media_thumbnail("test", "done", &t)
            .await
            .expect("thumbnail");
    }
    store
        .put_media_thumbnail("test", "done", &thumb(32, 32, "crop", 'e'))
        .await
        .expect("again");
    assert_eq!(
        store.media_thumbnails("test", "done").await.expect("list"),
        [thumb(32, 32, "crop", 'd'), thumb(320, 240, "scale", 'c')]
    );
    assert!(
        store
            .media_thumbnails("test", "p2")
            .await
            .expect("list")
            .is_empty()
    );

    // Every blob once, in pages.
    let first = store.media_blobs(None, 2).await.expect("blobs");
    let rest = store
        .media_blobs(first.last().map(String::as_str), 10)
        .await
        .expect("blobs");
    let all: Vec<String> = first.into_iter().chain(rest).collect();
    let expected: Vec<String> = "abcd".chars().map(|c| c.to_string().repeat(64)).collect();
    assert_eq!(all, expected);
}

// ------------------------------------------------- states given by the caller

/// A state map as [`StateBefore::Resolved`] and [`NewHead`] take it.
fn given(state: &StateMap) -> Arc<std::collections::HashMap<(String, String), String>> {
    Arc::new(state.clone().into_iter().collect())
}

/// A member event of `room` with a state given by the caller.
fn forked_member(room: &TestRoom, event_id: &str, user_id: &str, prev: &[&str]) -> NewEvent {
    let mut event = room.event(event_id, "m.room.member", Some(user_id));
    event.sender = user_id.to_owned();
    event.membership = Some("join".to_owned());
    event.prev_events = prev.iter().map(|p| (*p).to_owned()).collect();
    event
}

async fn persist_at_next_pos(
    store: &DynStorage,
    mut event: NewEvent,
) -> StorageResult<PersistedEvent> {
    event.stream_pos = store
        .next_stream_pos(Stream::Events)
        .await
        .expect("next_stream_pos");
    store.persist_event(event).await
}

/// An event from another server forks the DAG from an earlier event: its
/// state before is the state after its prev event (the same snapshot), the
/// head becomes the caller's (two extremities, a resolved current state,
/// memberships following it); a merge event's resolved state before is a
/// small delta over its first prev event's state; a resolved state may drop
/// keys, which the current state and memberships then lose.
async fn given_state_forks_merges_and_removes(db: Arc<TestDb>) {
    let (store, _) = db.open(&OpenOptions::default()).await.expect("open");
    let mut room = TestRoom::create(&store, "!fork:test").await;
    room.state("$create", "m.room.create", "").await;
    room.member("$alice", "@alice:test", "join").await;
    let name = room.state("$name", "m.room.name", "").await;
    let topic = room.state("$topic", "m.room.topic", "").await;
    let at_name = state_map(&store, name.state_after_nid).await;
    let at_topic = state_map(&store, topic.state_after_nid).await;

    // Bob joins on a branch that starts after $name, before $topic.
    let mut resolved = at_topic.clone();
    resolved.insert(key("m.room.member", "@bob:remote"), "$bob".to_owned());
    let mut bob = forked_member(&room, "$bob", "@bob:remote", &["$name"]);
    bob.state_before = StateBefore::AfterEvent("$name".to_owned());
    bob.new_head = Some(NewHead {
        extremities: vec!["$topic".to_owned(), "$bob".to_owned()],
        resolved_state: Some(given(&resolved)),
    });
    let snapshots = db.query_i64("SELECT COUNT(*) FROM state_snapshots").await;
    let bob = persist_at_next_pos(&store, bob)
        .await
        .expect("persist $bob");
    assert_eq!(
        bob.state_before_nid, name.state_after_nid,
        "the same snapshot"
    );
    let mut after_bob = at_name.clone();
    after_bob.insert(key("m.room.member", "@bob:remote"), "$bob".to_owned());
    assert_eq!(state_map(&store, bob.state_after_nid).await, after_bob);
    assert_eq!(current_state_map(&store, room.nid).await, resolved);
    let current = store.current_snapshot(room.nid).await.expect("snapshot");
    assert_eq!(state_map(&store, current).await, resolved);
    assert_eq!(extremities(&store, room.nid).await, ["$bob", "$topic"]);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM state_snapshots").await,
        snapshots + 2,
        "the state after $bob and the resolved current state"
    );
    assert_eq!(
        db.query_i64(&format!(
            "SELECT COUNT(*) FROM state_snapshot_entries WHERE snapshot_nid = {current}"
        ))
        .await,
        1,
        "the resolved state is a delta over the state after $bob: the topic"
    );
    let members = store.room_members(room.nid).await.expect("members");
    assert!(
        members
            .iter()
            .any(|m| m.user_id == "@bob:remote" && m.membership == "join"),
        "{members:?}"
    );
    let bobs = store
        .user_memberships("@bob:remote")
        .await
        .expect("memberships");
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].event_id, "$bob");

    // A merge: its state before is the resolution, a delta over $topic.
    let mut merge = room.event("$merge", "m.room.message", None);
    merge.prev_events = vec!["$topic".to_owned(), "$bob".to_owned()];
    merge.state_before = StateBefore::Resolved {
        base: "$topic".to_owned(),
        state: given(&resolved),
    };
    merge.new_head = Some(NewHead {
        extremities: vec!["$merge".to_owned()],
        resolved_state: None,
    });
    let merge = persist_at_next_pos(&store, merge)
        .await
        .expect("persist $merge");
    assert_eq!(state_map(&store, merge.state_before_nid).await, resolved);
    assert_eq!(merge.state_after_nid, merge.state_before_nid);
    assert_eq!(
        db.query_i64(&format!(
            "SELECT COUNT(*) FROM state_snapshot_entries WHERE snapshot_nid = {}",
            merge.state_before_nid
        ))
        .await,
        1,
        "a delta over the state after $topic: bob's membership"
    );
    assert_eq!(current_state_map(&store, room.nid).await, resolved);
    assert_eq!(extremities(&store, room.nid).await, ["$merge"]);
    assert_eq!(
        store
            .state_event_at(merge.state_before_nid, "m.room.member", "@bob:remote")
            .await
            .expect("state_event_at")
            .map(|e| e.event_id),
        Some("$bob".to_owned())
    );

    // A resolved state without the topic and without bob: both leave the
    // snapshots, the current state and the memberships.
    let mut dropped = resolved.clone();
    dropped.remove(&key("m.room.topic", ""));
    dropped.remove(&key("m.room.member", "@bob:remote"));
    let mut name2 = room.event("$name2", "m.room.name", Some(""));
    name2.prev_events = vec!["$merge".to_owned()];
    name2.state_before = StateBefore::Resolved {
        base: "$merge".to_owned(),
        state: given(&dropped),
    };
    name2.new_head = Some(NewHead {
        extremities: vec!["$name2".to_owned()],
        resolved_state: None,
    });
    let name2 = persist_at_next_pos(&store, name2)
        .await
        .expect("persist $name2");
    assert_eq!(state_map(&store, name2.state_before_nid).await, dropped);
    let mut after = dropped.clone();
    after.insert(key("m.room.name", ""), "$name2".to_owned());
    assert_eq!(state_map(&store, name2.state_after_nid).await, after);
    assert_eq!(current_state_map(&store, room.nid).await, after);
    assert_eq!(
        store
            .state_event_at(name2.state_after_nid, "m.room.topic", "")
            .await
            .expect("state_event_at"),
        None
    );
    let members = store.room_members(room.nid).await.expect("members");
    assert!(
        members.iter().all(|m| m.user_id != "@bob:remote"),
        "{members:?}"
    );

    // A local event on the head still works the old way after all that.
    room.last = vec!["$name2".to_owned()];
    room.depth = 10;
    room.message("$local").await;
    assert_eq!(extremities(&store, room.nid).await, ["$local"]);
    assert_eq!(current_state_map(&store, room.nid).await, after);
}

/// Unknown events in a given state or head, a state entry that is not the
/// event of its key, an outlier's state, or a normal event with a given
/// state and no head: each is an error, and nothing of the event is written.
async fn given_state_refuses_bad_references_and_writes_nothing(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!bad:test").await;
    room.state("$create", "m.room.create", "").await;
    room.member("$alice", "@alice:test", "join").await;
    let outlier = {
        let mut event = room.event("$outlier", "m.room.topic", Some(""));
        event.status = EventStatus::Outlier;
        event
    };
    persist_at_next_pos(&store, outlier).await.expect("outlier");
    let state_before = current_state_map(&store, room.nid).await;
    let head = |extremities: &[&str]| NewHead {
        extremities: extremities.iter().map(|e| (*e).to_owned()).collect(),
        resolved_state: None,
    };

    let mut cases: Vec<(&str, NewEvent)> = Vec::new();
    let mut e = forked_member(&room, "$x1", "@bob:remote", &["$alice"]);
    e.state_before = StateBefore::AfterEvent("$unknown".to_owned());
    e.new_head = Some(head(&["$x1"]));
    cases.push(("unknown prev", e));
    let mut e = forked_member(&room, "$x2", "@bob:remote", &["$alice"]);
    e.state_before = StateBefore::AfterEvent("$outlier".to_owned());
    e.new_head = Some(head(&["$x2"]));
    cases.push(("outlier", e));
    let mut wrong = state_before.clone();
    wrong.insert(key("m.room.name", ""), "$unknown".to_owned());
    let mut e = forked_member(&room, "$x3", "@bob:remote", &["$alice"]);
    e.state_before = StateBefore::Resolved {
        base: "$alice".to_owned(),
        state: given(&wrong),
    };
    e.new_head = Some(head(&["$x3"]));
    cases.push(("unknown state event", e));
    let mut wrong = state_before.clone();
    wrong.insert(key("m.room.name", ""), "$alice".to_owned());
    let mut e = forked_member(&room, "$x4", "@bob:remote", &["$alice"]);
    e.state_before = StateBefore::Resolved {
        base: "$alice".to_owned(),
        state: given(&wrong),
    };
    e.new_head = Some(head(&["$x4"]));
    cases.push(("event under another key", e));
    let mut e = forked_member(&room, "$x5", "@bob:remote", &["$alice"]);
    e.state_before = StateBefore::AfterEvent("$alice".to_owned());
    cases.push(("no head", e));
    let mut e = forked_member(&room, "$x6", "@bob:remote", &["$alice"]);
    e.state_before = StateBefore::AfterEvent("$alice".to_owned());
    e.new_head = Some(head(&["$x6", "$unknown"]));
    cases.push(("unknown extremity", e));
    let mut e = forked_member(&room, "$x7", "@bob:remote", &["$alice"]);
    e.state_before = StateBefore::AfterEvent("$alice".to_owned());
    e.new_head = Some(NewHead {
        extremities: vec!["$x7".to_owned()],
        resolved_state: Some(given(&wrong)),
    });
    cases.push(("bad resolved current state", e));

    for (case, event) in cases {
        let id = event.event_id.clone();
        let result = persist_at_next_pos(&store, event).await;
        assert!(
            matches!(result, Err(StorageError::Backend(_))),
            "{case}: {result:?}"
        );
        assert_eq!(store.event(&id).await.expect("event"), None, "{case}");
        assert_eq!(extremities(&store, room.nid).await, ["$alice"], "{case}");
        assert_eq!(
            current_state_map(&store, room.nid).await,
            state_before,
            "{case}"
        );
    }
    // The same mistake inside a batch fails the whole batch.
    let good = room.event("$good", "m.room.message", None);
    let mut bad = forked_member(&room, "$x8", "@bob:remote", &["$alice"]);
    bad.state_before = StateBefore::AfterEvent("$unknown".to_owned());
    bad.new_head = Some(head(&["$x8"]));
    assert!(store.persist_events(vec![good, bad]).await.is_err());
    assert_eq!(store.event("$good").await.expect("event"), None);
}

/// A soft-failed event with a given state has a state after it (later
/// events may cite it); a rejected one's state after is its state before;
/// neither moves the head when the caller gives none. One batch may hold
/// an event and another whose state is the state after it.
async fn given_state_soft_failed_and_rejected_keep_the_head(store: DynStorage) {
    let mut room = TestRoom::create(&store, "!soft:test").await;
    room.state("$create", "m.room.create", "").await;
    let alice = room.member("$alice", "@alice:test", "join").await;
    let topic = room.state("$topic", "m.room.topic", "").await;
    let current = current_state_map(&store, room.nid).await;
    let at_alice = state_map(&store, alice.state_after_nid).await;

    let mut soft = forked_member(&room, "$soft", "@bob:remote", &["$alice"]);
    soft.status = EventStatus::SoftFailed;
    soft.state_before = StateBefore::AfterEvent("$alice".to_owned());
    let mut rejected = forked_member(&room, "$rejected", "@eve:remote", &["$soft"]);
    rejected.status = EventStatus::Rejected;
    rejected.state_before = StateBefore::AfterEvent("$soft".to_owned());
    let mut pos = Vec::new();
    for event in [&mut soft, &mut rejected] {
        event.stream_pos = store.next_stream_pos(Stream::Events).await.expect("pos");
        pos.push(event.stream_pos);
    }
    let persisted = store
        .persist_events(vec![soft, rejected])
        .await
        .expect("persist_events");
    assert_eq!(persisted[0].state_before_nid, alice.state_after_nid);
    let mut after_soft = at_alice.clone();
    after_soft.insert(key("m.room.member", "@bob:remote"), "$soft".to_owned());
    assert_eq!(
        state_map(&store, persisted[0].state_after_nid).await,
        after_soft
    );
    assert_eq!(persisted[1].state_before_nid, persisted[0].state_after_nid);
    assert_eq!(persisted[1].state_after_nid, persisted[1].state_before_nid);
    assert_eq!(current_state_map(&store, room.nid).await, current);
    assert_eq!(extremities(&store, room.nid).await, ["$topic"]);
    assert!(
        store
            .room_members(room.nid)
            .await
            .expect("members")
            .iter()
            .all(|m| m.user_id == "@alice:test")
    );
    assert_eq!(room.timeline().await, ["$create", "$alice", "$topic"]);
    let stored = store
        .event("$rejected")
        .await
        .expect("event")
        .expect("stored");
    assert_eq!(stored.status, EventStatus::Rejected);
    assert_eq!(
        topic.state_after_nid,
        store.current_snapshot(room.nid).await.expect("snapshot")
    );
}
