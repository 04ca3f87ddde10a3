//! A graceful stop lets requests already in flight finish, and what they
//! wrote is there after a restart.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

/// Password hashing this costly keeps a login in flight long enough for the
/// stop to begin while it runs.
const SLOW_HASH_MEMORY_KIB: u32 = 64 * 1024;
const SLOW_HASH_ITERATIONS: u32 = 12;

async fn in_flight_requests_finish(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.auth.password_hash_memory_kib = SLOW_HASH_MEMORY_KIB;
        config.auth.password_hash_iterations = SLOW_HASH_ITERATIONS;
    })
    .await;
    server.register("alice", "correct horse battery").await;

    // Several logins at once, each verifying a costly hash.
    let client = server.client.clone();
    let url = server.url("/_matrix/client/v3/login");
    let logins: Vec<_> = (0..4)
        .map(|_| {
            let req = client.post(&url).json(&json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "correct horse battery",
            }));
            tokio::spawn(async move { req.send().await })
        })
        .collect();
    // Let the requests reach the server, then stop it while they run.
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop().await;

    for login in logins {
        let resp = login
            .await
            .unwrap()
            .expect("an accepted request is answered, not cut off");
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["access_token"].is_string());
    }
}

backend_tests!(in_flight_requests_finish);
