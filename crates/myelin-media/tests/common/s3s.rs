//! A real S3-compatible server for tests: `s3s-fs` (it checks SigV4
//! signatures) on a free loopback port, storing in a fresh temporary
//! directory, killed on drop. Other test crates include this file with
//! `#[path = "…/myelin-media/tests/common/s3s.rs"] mod s3s;` (it needs
//! `myelin-media` and `tempfile`).
//!
//! The binary is `$MYELIN_TEST_S3S_FS`, else `s3s-fs` on the `PATH`, else
//! `~/.cargo/bin/s3s-fs`; without one the test fails (`scripts/test.sh`
//! installs it).

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use myelin_media::s3::{S3Backend, S3Config};

pub const ACCESS_KEY: &str = "myelin-test-access";
pub const SECRET_KEY: &str = "myelin-test-secret";
pub const REGION: &str = "us-east-1";
const INSTALL: &str = "cargo install s3s-fs@0.14.1 --features binary --locked";
/// How long the server may take to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct S3sFs {
    child: Child,
    addr: SocketAddr,
    buckets: AtomicU32,
    // Removed after `drop` has killed the server.
    _root: tempfile::TempDir,
}

impl S3sFs {
    /// Starts a server; panics (failing the test) if it cannot.
    pub fn start() -> Self {
        let binary = binary();
        let root = tempfile::tempdir().expect("s3s-fs root directory");
        // Port 0: the server binds a free port and logs which.
        let mut child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .env("RUST_LOG", "s3s_fs=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));

        // Read the log for "server is running at http://ADDR", then keep
        // draining it so the server never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("server is running at http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => addr.parse::<SocketAddr>().expect("s3s-fs address"),
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "s3s-fs ({}) did not start within {STARTUP_TIMEOUT:?} (exit: {status:?})",
                    binary.display()
                );
            }
        };
        // The log line follows the bind, but check it accepts connections.
        TcpStream::connect_timeout(&addr, STARTUP_TIMEOUT)
            .unwrap_or_else(|e| panic!("s3s-fs at {addr} refuses connections: {e}"));
        Self {
            child,
            addr,
            buckets: AtomicU32::new(0),
            _root: root,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A configuration for a new, empty bucket of this server.
    pub async fn fresh_bucket(&self) -> S3Config {
        let n = self.buckets.fetch_add(1, Ordering::Relaxed);
        let mut config = S3Config::new(REGION, format!("myelin-test-{n}"), ACCESS_KEY, SECRET_KEY);
        config.endpoint = Some(self.endpoint());
        config.path_style = true;
        S3Backend::new(config.clone())
            .expect("S3 backend")
            .ensure_bucket()
            .await
            .expect("creating the test bucket");
        config
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MYELIN_TEST_S3S_FS").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "MYELIN_TEST_S3S_FS={} is not a file; install s3s-fs with `{INSTALL}`",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("s3s-fs"))
        .find(|path| path.is_file());
    let in_cargo_home = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cargo/bin/s3s-fs"))
        .filter(|path| path.is_file());
    on_path.or(in_cargo_home).unwrap_or_else(|| {
        panic!(
            "the S3 tests need s3s-fs, a real S3-compatible server: install it with \
             `{INSTALL}` (or run scripts/test.sh), or point MYELIN_TEST_S3S_FS at the binary"
        )
    })
}
