//! Real clients against the server: matrix-nio (Python, with vodozemac for
//! its cryptography) runs `tests/clients/nio_e2ee.py`, in which two users
//! exchange messages in an encrypted room, each decrypting the other's, and
//! a new device of one of them gets the keys of earlier messages by key
//! sharing (see the script for each step).
//!
//! The Python interpreter is `MYELIN_NIO_PYTHON`, a virtual environment
//! with `tests/clients/requirements.txt` installed: `scripts/test.sh` makes
//! it. Without it the test fails, saying so; it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

backend_tests!(nio_users_and_a_new_device_exchange_encrypted_messages);

/// How long the script may take (it needs a few seconds).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn python() -> PathBuf {
    match std::env::var_os("MYELIN_NIO_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "MYELIN_NIO_PYTHON is not set: it must name the Python of a virtual environment with \
             crates/myelin/tests/clients/requirements.txt installed (scripts/test.sh makes one)"
        ),
    }
}

async fn nio_users_and_a_new_device_exchange_encrypted_messages(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/nio_e2ee.py");
    // Output goes to files, not pipes: a chatty client must never block on a
    // full pipe while the test waits for it.
    let logs = tempfile::tempdir().expect("tempdir");
    let (stdout_path, stderr_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let create = |path: &Path| std::fs::File::create(path).expect("a log file");
    let mut child = Command::new(python())
        .arg(&script)
        .args([
            server.url(""),
            alice.user_id.clone(),
            alice.password.clone(),
            bob.user_id.clone(),
            bob.password.clone(),
        ])
        .stdin(Stdio::null())
        .stdout(create(&stdout_path))
        .stderr(create(&stderr_path))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break status;
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            break child.wait().expect("wait for the killed script");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.success(),
        "nio_e2ee.py failed ({status}) after {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        started.elapsed()
    );
    assert!(stdout.contains("nio_e2ee: ok"), "{stdout}");
    server.stop().await;
}
