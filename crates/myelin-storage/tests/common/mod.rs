//! The contract-suite harness: a fresh, empty database per test, on either
//! backend, dropped afterwards even when the test panics.
//!
//! PostgreSQL tests never skip: a suite that silently passes without its
//! database would hide exactly the bugs it exists to find.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use myelin_storage::{DynStorage, MigrationReport, OpenOptions, StorageResult};

/// Where the PostgreSQL tests create their databases.
const POSTGRES_URL_VAR: &str = "MYELIN_TEST_POSTGRES_URL";
const POSTGRES_URL_DEFAULT: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";
/// How long the admin connection may take before the server counts as down.
const ADMIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One empty database, created for one test.
pub struct TestDb {
    kind: Kind,
}

enum Kind {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("cannot create a temporary directory");
                let path = dir.path().join("nested").join("myelin.db");
                Self {
                    kind: Kind::Sqlite { _dir: dir, path },
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VAR)
                    .unwrap_or_else(|_| POSTGRES_URL_DEFAULT.to_owned());
                let name = format!("myelin_test_{:016x}", rand::random::<u64>());
                let admin = pg_connect(&admin_url).await;
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap_or_else(|e| panic!("cannot CREATE DATABASE on {admin_url}: {e}"));
                let url = with_database(&admin_url, &name);
                Self {
                    kind: Kind::Postgres {
                        admin_url,
                        name,
                        url,
                    },
                }
            }
        }
    }

    /// Opens the storage on this database (as a server start would).
    pub async fn open(
        &self,
        options: &OpenOptions,
    ) -> StorageResult<(DynStorage, MigrationReport)> {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                let (store, report) =
                    myelin_storage::sqlite::SqliteStorage::open(path, options).await?;
                Ok((Arc::new(store), report))
            }
            Kind::Postgres { url, .. } => {
                let (store, report) =
                    myelin_storage::postgres::PostgresStorage::open(url, options).await?;
                Ok((Arc::new(store), report))
            }
        }
    }

    /// Runs raw SQL valid in both dialects, bypassing the storage.
    pub async fn execute(&self, sql: &str) {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                let (path, sql) = (path.clone(), sql.to_owned());
                tokio::task::spawn_blocking(move || {
                    let conn =
                        rusqlite::Connection::open(&path).expect("cannot open the SQLite file");
                    conn.busy_timeout(Duration::from_secs(5))
                        .expect("busy_timeout");
                    conn.execute_batch(&sql)
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                })
                .await
                .expect("SQLite task panicked");
            }
            Kind::Postgres { url, .. } => {
                pg_connect(url)
                    .await
                    .batch_execute(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }

    /// The single BIGINT a raw query returns.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                let (path, sql) = (path.clone(), sql.to_owned());
                tokio::task::spawn_blocking(move || {
                    let conn =
                        rusqlite::Connection::open(&path).expect("cannot open the SQLite file");
                    conn.query_row(&sql, [], |row| row.get(0))
                        .unwrap_or_else(|e| panic!("{sql}: {e}"))
                })
                .await
                .expect("SQLite task panicked")
            }
            Kind::Postgres { url, .. } => {
                let row = pg_connect(url)
                    .await
                    .query_one(sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                row.get(0)
            }
        }
    }

    /// Drops the PostgreSQL database (best effort); SQLite's directory goes
    /// with `self`.
    async fn cleanup(&self) {
        if let Kind::Postgres {
            admin_url, name, ..
        } = &self.kind
        {
            let admin = pg_connect(admin_url).await;
            if let Err(e) = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
            {
                eprintln!("could not drop test database {name}: {e}");
            }
        }
    }
}

/// Runs a test on a freshly migrated storage.
pub async fn run_with_store<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(DynStorage) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = TestDb::new(backend).await;
    let store = match db.open(&OpenOptions::default()).await {
        Ok((store, _)) => store,
        Err(e) => {
            db.cleanup().await;
            panic!("cannot open the {backend:?} test storage: {e}");
        }
    };
    let outcome = tokio::spawn(test(Arc::clone(&store))).await;
    store.close().await;
    drop(store);
    db.cleanup().await;
    finish(outcome);
}

/// Runs a test that opens the (empty) database itself.
pub async fn run_with_db<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Arc<TestDb>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = Arc::new(TestDb::new(backend).await);
    let outcome = tokio::spawn(test(Arc::clone(&db))).await;
    db.cleanup().await;
    finish(outcome);
}

fn finish(outcome: Result<(), tokio::task::JoinError>) {
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, connection) = match tokio::time::timeout(ADMIN_CONNECT_TIMEOUT, connect).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => panic!(
            "PostgreSQL for the contract tests is unreachable at {url}: {e}: {}; \
             start it, or set {POSTGRES_URL_VAR} \
             to a server where this user may CREATE DATABASE",
            std::error::Error::source(&e).map_or_else(String::new, ToString::to_string)
        ),
        Err(_) => panic!(
            "PostgreSQL for the contract tests did not answer at {url} \
             within {ADMIN_CONNECT_TIMEOUT:?}; start it, \
             or set {POSTGRES_URL_VAR}"
        ),
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test PostgreSQL connection ended: {e}");
        }
    });
    client
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}
