//! The `myelin` command line, run as a real process: the embedded default
//! start, clean shutdown on SIGTERM, config errors, key and config
//! generation, migrations and account creation.

mod common;

use common::{create_postgres_database, drop_postgres_database};
use myelin_core::Config;
use myelin_core::signing_key::SigningKey;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_myelin");
/// How long a started server may take to answer /health.
const START_WAIT: Duration = Duration::from_secs(30);

/// A `myelin` command in `dir`, with no inherited `MYELIN_*` configuration.
fn myelin(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("MYELIN_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("MYELIN_LOG", "warn");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("myelin runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_healthy(base: &str, child: &mut Child) {
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/health")).await
            && r.status().is_success()
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the server did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_subcommand_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(myelin(dir.path()).arg("--help"));
    assert!(out.status.success());
    for sub in [
        "serve",
        "generate-config",
        "generate-keys",
        "migrate",
        "create-user",
        "create-registration-token",
    ] {
        assert!(stdout(&out).contains(sub), "--help lists {sub}");
        let out = run(myelin(dir.path()).args([sub, "--help"]));
        assert!(out.status.success(), "{sub} --help");
        assert!(stdout(&out).contains("Usage"), "{sub} --help prints usage");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_creates_the_embedded_default_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = myelin(dir.path())
        .arg("serve")
        .env("MYELIN_LISTEN", format!("127.0.0.1:{port}"))
        .env("MYELIN_REGISTRATION", "open")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, &mut child).await;

    let data = dir.path().join("myelin-data");
    for file in ["myelin.toml", "signing.key", "myelin.db"] {
        assert!(data.join(file).is_file(), "{file} was created");
    }
    assert!(data.join("media").is_dir(), "the media folder was created");
    let config = Config::load(Some(&data.join("myelin.toml")), Vec::new()).unwrap();
    assert_eq!(config.server_name, "localhost");
    SigningKey::read(&data.join("signing.key")).unwrap();

    // It serves: register over the open flow.
    let client = reqwest::Client::new();
    let body = json!({"username": "alice", "password": "correct horse", "auth": {"type": "m.login.dummy"}});
    let resp = client
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["user_id"], "@alice:localhost");

    let status = terminate(&mut child);
    assert!(
        status.success(),
        "SIGTERM stops the server with success, got {status}"
    );

    // A restart keeps the key and the account.
    let key_before = std::fs::read_to_string(data.join("signing.key")).unwrap();
    let mut child = myelin(dir.path())
        .arg("serve")
        .env("MYELIN_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(&base, &mut child).await;
    let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "correct horse"});
    let resp = client
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(terminate(&mut child).success());
    assert_eq!(
        std::fs::read_to_string(data.join("signing.key")).unwrap(),
        key_before
    );
}

#[test]
fn an_invalid_config_names_the_key_and_fails_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("MYELIN_REGISTRATION", "sometimes", "registration"),
        ("MYELIN_LISTEN", "not-an-address", "listen"),
        ("MYELIN_SERVER_NAME", "bad name!", "server_name"),
        ("MYELIN_DATABASE_URL", "mysql://nope", "database_url"),
    ];
    for (var, value, key) in cases {
        let out = run(myelin(dir.path()).arg("serve").env(var, value));
        assert!(!out.status.success(), "{var}={value} must fail");
        let err = stderr(&out);
        assert!(err.contains(key), "{var}: the error names `{key}`: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{var}: no panic: {err}"
        );
    }
    // A bad key in a file.
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "server_name = \"example.org\"\n[database]\npool_sise = 2\n",
    )
    .unwrap();
    let out = run(myelin(dir.path()).args(["serve", "--config"]).arg(&file));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("database.pool_sise"),
        "{}",
        stderr(&out)
    );
    // A file that is not TOML.
    std::fs::write(&file, "server_name = [").unwrap();
    let out = run(myelin(dir.path()).args(["serve", "--config"]).arg(&file));
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("panicked"));
}

#[test]
fn generate_config_writes_a_complete_commented_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(myelin(dir.path()).args(["generate-config", "--server-name", "example.org"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 20,
        "the file is commented"
    );
    for key in [
        "server_name",
        "listen",
        "data_dir",
        "database_url",
        "registration",
        "[rate_limits.login]",
        "[auth]",
    ] {
        assert!(text.contains(key), "the template mentions {key}");
    }
    let config = Config::from_table(toml::from_str(&text).unwrap()).unwrap();
    assert_eq!(config.server_name, "example.org");

    let file = dir.path().join("myelin.toml");
    let out = run(myelin(dir.path())
        .args([
            "generate-config",
            "--server-name",
            "example.org",
            "--database-url",
            "postgres://u@h/db",
            "--output",
        ])
        .arg(&file));
    assert!(out.status.success());
    let config = Config::load(Some(&file), Vec::new()).unwrap();
    assert_eq!(config.database_url.as_deref(), Some("postgres://u@h/db"));
    // Never overwrites.
    let out = run(myelin(dir.path())
        .args(["generate-config", "--server-name", "x.org", "--output"])
        .arg(&file));
    assert!(!out.status.success());
}

#[test]
fn generate_keys_writes_the_usual_key_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(myelin(dir.path()).arg("generate-keys"));
    assert!(out.status.success());
    let line = stdout(&out);
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "{line}");
    assert_eq!(parts[0], "ed25519");
    assert!(parts[1].starts_with("a_"));
    assert_eq!(parts[2].len(), 43, "32 bytes of unpadded base64");
    let file = dir.path().join("signing.key");
    let out = run(myelin(dir.path())
        .args(["generate-keys", "--output"])
        .arg(&file));
    assert!(out.status.success());
    SigningKey::read(&file).unwrap();
    let out = run(myelin(dir.path())
        .args(["generate-keys", "--output"])
        .arg(&file));
    assert!(!out.status.success(), "never overwrites a key");
}

#[test]
fn migrate_applies_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(myelin(dir.path()).arg("migrate"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Applied migration 0001"),
        "{}",
        stdout(&out)
    );
    let out = run(myelin(dir.path()).arg("migrate"));
    assert!(out.status.success());
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_once_on_postgres() {
    let (name, url) = create_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(myelin(dir.path())
        .arg("migrate")
        .env("MYELIN_DATABASE_URL", &url));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Applied migration 0001"),
        "{}",
        stdout(&out)
    );
    let out = run(myelin(dir.path())
        .arg("migrate")
        .env("MYELIN_DATABASE_URL", &url));
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
    drop_postgres_database(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_then_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(myelin(dir.path()).args([
        "create-user",
        "--username",
        "Admin",
        "--password",
        "s3cret-pass",
        "--admin",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("@admin:localhost"));
    let again =
        run(myelin(dir.path()).args(["create-user", "--username", "admin", "--password", "x"]));
    assert!(!again.status.success(), "a taken name fails");
    let bad =
        run(myelin(dir.path()).args(["create-user", "--username", "no spaces", "--password", "x"]));
    assert!(!bad.status.success(), "an invalid name fails");

    let port = free_port();
    let mut child = myelin(dir.path())
        .arg("serve")
        .env("MYELIN_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, &mut child).await;
    let client = reqwest::Client::new();
    let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "admin"}, "password": "s3cret-pass"});
    let resp = client
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The embedded default is closed to registration.
    let body =
        json!({"username": "eve", "password": "whatever1", "auth": {"type": "m.login.dummy"}});
    let resp = client
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(terminate(&mut child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(myelin(dir.path()).args([
        "create-registration-token",
        "--token",
        "let-me-in",
        "--uses-allowed",
        "1",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "let-me-in");
    let port = free_port();
    let mut child = myelin(dir.path())
        .arg("serve")
        .env("MYELIN_LISTEN", format!("127.0.0.1:{port}"))
        .env("MYELIN_REGISTRATION", "token")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, &mut child).await;
    let resp = reqwest::get(format!(
        "{base}/_matrix/client/v1/register/m.login.registration_token/validity?token=let-me-in"
    ))
    .await
    .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["valid"], true);
    assert!(terminate(&mut child).success());
}
