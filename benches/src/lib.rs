//! Shared set-up for Myelin's criterion benches (`benches/benches/*.rs`).

pub mod state_res_workload;

use myelin_api::AppState;
use myelin_api::client::session;
use myelin_core::Config;
use myelin_core::config::DatabaseUrl;
use myelin_core::signing_key::SigningKey;
use myelin_storage::{NewUser, OpenOptions};

/// A server state on a fresh SQLite database in `dir` (or on PostgreSQL at
/// `postgres_url`), with `users` accounts that each hold one session.
/// Returns the state and the access tokens.
pub async fn state_with_sessions(
    dir: &std::path::Path,
    postgres_url: Option<&str>,
    users: usize,
) -> (AppState, Vec<String>) {
    let url = match postgres_url {
        Some(url) => DatabaseUrl::Postgres(url.to_owned()),
        None => DatabaseUrl::Sqlite(dir.join("bench.db")),
    };
    let (storage, _) = myelin_storage::open(&url, &OpenOptions::default())
        .await
        .expect("storage opens");
    let config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    let key = SigningKey::generate();
    let rooms = myelin_rooms::LocalRoomWriter::new(
        storage.clone(),
        config.server_name.clone(),
        key.clone(),
    )
    .await
    .expect("room writer");
    let state = AppState::new(config, storage, key, std::sync::Arc::new(rooms));
    let mut tokens = Vec::with_capacity(users);
    for i in 0..users {
        let user_id = format!("@bench{i}:localhost");
        state
            .storage
            .create_user(NewUser {
                user_id: user_id.clone(),
                localpart: format!("bench{i}"),
                password_hash: None,
                admin: false,
                created_ms: 0,
                displayname: None,
            })
            .await
            .expect("user");
        let issued = session::issue(&state, &user_id, format!("DEV{i}"), None, false, None)
            .await
            .expect("session");
        tokens.push(issued.access_token);
    }
    (state, tokens)
}
