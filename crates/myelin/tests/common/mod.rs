//! The test harness: a real server on a loopback port, on a fresh database of
//! either backend, driven over real HTTP.
//!
//! PostgreSQL tests use the server at `MYELIN_TEST_POSTGRES_URL` (default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`) and FAIL when it is
//! unreachable: they never skip.

#![allow(dead_code)]

use myelin::server::RunningServer;
use myelin_core::Config;
use myelin_core::config::{RateLimit, RegistrationMode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn postgres_admin_url() -> String {
    std::env::var("MYELIN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh PostgreSQL database; dropped by [`drop_postgres_database`].
pub async fn create_postgres_database() -> (String, String) {
    let admin = postgres_admin_url();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is required for these tests and is not reachable at {admin}: {e}. Start it, or set MYELIN_TEST_POSTGRES_URL.")
    });
    tokio::spawn(conn);
    let name = format!("myelin_test_{:016x}", rand::random::<u64>());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    let (base, _) = admin
        .rsplit_once('/')
        .expect("the admin URL has a database path");
    (name.clone(), format!("{base}/{name}"))
}

pub async fn drop_postgres_database(name: &str) {
    let admin = postgres_admin_url();
    if let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

/// The configuration tests start from: open registration, limits off,
/// cheap password hashing, a random loopback port.
pub fn test_config(data_dir: PathBuf) -> Config {
    let mut config = Config {
        server_name: "localhost".to_owned(),
        listen: "127.0.0.1:0".to_owned(),
        data_dir,
        registration: RegistrationMode::Open,
        ..Config::default()
    };
    let off = RateLimit {
        per_second: 0.0,
        burst: 0,
    };
    config.rate_limits.login = off;
    config.rate_limits.login_per_account = off;
    config.rate_limits.registration = off;
    config.auth.password_hash_memory_kib = 64;
    config.auth.password_hash_iterations = 1;
    config
}

pub struct TestServer {
    pub backend: Backend,
    pub base: String,
    pub client: reqwest::Client,
    server: Option<RunningServer>,
    config: Config,
    dir: tempfile::TempDir,
    postgres_db: Option<String>,
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
    pub password: String,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server after `adjust` changed the test config.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path().to_path_buf());
        let mut postgres_db = None;
        if backend == Backend::Postgres {
            let (name, url) = create_postgres_database().await;
            config.database_url = Some(url);
            postgres_db = Some(name);
        }
        adjust(&mut config);
        let server = myelin::server::start(config.clone())
            .await
            .expect("the server starts");
        let base = server.base_url();
        Self {
            backend,
            base,
            client: reqwest::Client::new(),
            server: Some(server),
            config,
            dir,
            postgres_db,
        }
    }

    /// Stops the server and starts it again on the same database and data
    /// directory (on a new port: `base` changes).
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// [`Self::restart`] after `adjust` changed the config.
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        adjust(&mut self.config);
        if let Some(server) = self.server.take() {
            server.stop().await.expect("the server stops cleanly");
        }
        let server = myelin::server::start(self.config.clone())
            .await
            .expect("the server restarts");
        self.base = server.base_url();
        self.server = Some(server);
    }

    /// The running server's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The running server's storage, to set up what no endpoint creates
    /// (registration tokens, for instance).
    pub fn storage(&self) -> &myelin_storage::DynStorage {
        &self.server.as_ref().expect("the server is running").storage
    }

    /// The running server's room writer (its notifier shows who a request woke).
    pub fn rooms(&self) -> &std::sync::Arc<myelin_rooms::LocalRoomWriter> {
        &self.server.as_ref().expect("the server is running").rooms
    }

    /// The full URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a hand-built request (for headers); returns the status, the
    /// response headers and the JSON body (`Null` if none, a string if not JSON).
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let resp = req.send().await.expect("the request is sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("the body is read");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, json)
    }

    /// Sends a request; returns the status and the JSON body (`Null` if none).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the request is sent");
        let status = resp.status();
        let text = resp.text().await.expect("the body is read");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// Sends raw bytes as the body.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .body(body);
        req = req.header("content-type", "application/json");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("the request is sent");
        let status = resp.status();
        let text = resp.text().await.expect("the body is read");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, token, body).await
    }

    /// Registers through the `m.login.dummy` flow and returns the session.
    pub async fn register(&self, username: &str, password: &str) -> Session {
        let body = json!({
            "username": username,
            "password": password,
            "auth": { "type": "m.login.dummy" },
        });
        let (status, body) = self.post("/_matrix/client/v3/register", None, body).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "registration of {username} failed: {body}"
        );
        Session {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            access_token: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            password: password.to_owned(),
        }
    }

    /// Creates a room as `owner` with the `createRoom` body `body`, has
    /// each of `others` join it, and returns its id.
    pub async fn room_with(&self, owner: &Session, body: Value, others: &[&Session]) -> String {
        let (status, resp) = self
            .post(
                "/_matrix/client/v3/createRoom",
                Some(&owner.access_token),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "createRoom: {resp}");
        let room = resp["room_id"].as_str().expect("room_id").to_owned();
        for s in others {
            self.join_room(s, &room).await;
        }
        room
    }

    pub async fn join_room(&self, s: &Session, room: &str) {
        let (status, resp) = self
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                Some(&s.access_token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "join: {resp}");
    }

    /// Sends an event of `kind` with a fresh transaction id; its event id.
    pub async fn send_event(&self, s: &Session, room: &str, kind: &str, content: Value) -> String {
        let txn = format!("t{}", rand::random::<u64>());
        let (status, resp) = self
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
                Some(&s.access_token),
                content,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "send: {resp}");
        resp["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Sends an `m.text` message.
    pub async fn say(&self, s: &Session, room: &str, text: &str) -> String {
        let content = json!({ "msgtype": "m.text", "body": text });
        self.send_event(s, room, "m.room.message", content).await
    }

    /// Logs in with a password and returns the raw response.
    pub async fn login(&self, user: &str, password: &str) -> (StatusCode, Value) {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        });
        self.post("/_matrix/client/v3/login", None, body).await
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("the server stops cleanly");
        }
        if let Some(db) = self.postgres_db.take() {
            drop_postgres_database(&db).await;
        }
    }
}

/// Asserts a Matrix error: status and `errcode`.
#[track_caller]
pub fn assert_error(result: &(StatusCode, Value), status: StatusCode, errcode: &str) {
    let (s, body) = result;
    assert_eq!(*s, status, "unexpected status; body: {body}");
    assert_eq!(
        body["errcode"],
        json!(errcode),
        "unexpected errcode; body: {body}"
    );
    assert!(
        body["error"].is_string(),
        "an error body has a message: {body}"
    );
}

/// Stamps out each `async fn name(backend: Backend)` as one test per backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

impl Drop for TestServer {
    /// A test that panicked before `stop()` still drops its PostgreSQL
    /// database (`WITH (FORCE)` ends the server's open connections).
    fn drop(&mut self) {
        if let Some(db) = self.postgres_db.take() {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_postgres_database(&db));
                }
            })
            .join();
        }
    }
}

/// Canonical JSON (keys sorted at every level, no insignificant spaces), as
/// a client signs it.
pub fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// Unpadded standard base64, the encoding of Matrix keys and signatures.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}
