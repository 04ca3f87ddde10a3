//! The embedded backend.
//!
//! SQLite admits one writer at a time per database file. Rather than let
//! several connections race for that lock (and fail with "database is
//! locked"), every write goes through one connection behind an async mutex:
//! writers queue in tokio, not in SQLite's busy handler. In WAL mode readers
//! neither block nor are blocked by that writer, so reads use a small pool of
//! read-only connections. rusqlite blocks, so every call runs on tokio's
//! blocking pool and never stalls a runtime worker.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction, so a multi-statement
//! operation (deactivation, refresh) is atomic, and `synchronous=FULL` makes
//! an acknowledged write survive a power loss.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Type;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};
use tokio::sync::{Mutex, Semaphore};

mod backup;
mod directory;
mod keys;
mod media;
mod push;
mod relations;
mod rooms;
mod search;
mod to_device;

use crate::migrate::{self, MigrationReport};
use crate::{
    AccessToken, AccountDataStore, DehydratedDevice, Device, DeviceStore, DirectoryUser,
    FilterStore, NewSession, NewUser, OpenOptions, PoolStats, RefreshToken, RegistrationToken,
    RegistrationTokenStore, Storage, StorageError, StorageResult, UiaSession, UiaStore, User,
    UserStore,
};

/// How long a connection waits for a lock held by another process (a
/// `myelin migrate` run, a backup) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows returned by a listing (devices of a user, registration tokens); more
/// than this is abuse, and the rest is not returned.
const LIST_MAX: i64 = 10_000;
/// Expired UIA sessions deleted per write transaction, so a purge never holds
/// the single writer for long.
const UIA_PURGE_BATCH: i64 = 1_000;
/// Batches per purge call; what remains is deleted by the next call.
const UIA_PURGE_BATCHES_MAX: u32 = 1_000;

/// The database in one file, for the single node.
pub struct SqliteStorage {
    path: PathBuf,
    /// `None` once closed.
    writer: Arc<Mutex<Option<Connection>>>,
    /// Idle reader connections; a permit of `reader_permits` entitles to one.
    readers: StdMutex<Vec<Connection>>,
    reader_permits: Semaphore,
    reader_count: u32,
    closed: AtomicBool,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStorage {
    /// Opens (creating it and its directory if needed) the database at
    /// `path`, and applies pending migrations if `options.migrate`.
    pub async fn open(
        path: &Path,
        options: &OpenOptions,
    ) -> StorageResult<(Self, MigrationReport)> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                StorageError::Connect(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        // At least one reader, or every read would wait forever.
        let reader_count = options.sqlite_readers.max(1);
        let apply = options.migrate;
        let owned_path = path.to_path_buf();
        let (writer, readers, report) = tokio::task::spawn_blocking(move || {
            let mut writer = open_writer(&owned_path)?;
            let report = migrate_schema(&mut writer, apply)?;
            let mut readers = Vec::with_capacity(reader_count as usize);
            for _ in 0..reader_count {
                readers.push(open_reader(&owned_path)?);
            }
            Ok::<_, StorageError>((writer, readers, report))
        })
        .await
        .map_err(|e| StorageError::Connect(format!("opening SQLite failed: {e}")))??;
        tracing::debug!(path = %path.display(), readers = reader_count, "opened SQLite database");
        let store = Self {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(Some(writer))),
            readers: StdMutex::new(readers),
            reader_permits: Semaphore::new(reader_count as usize),
            reader_count,
            closed: AtomicBool::new(false),
        };
        Ok((store, report))
    }

    /// Runs `f` in one write transaction on the writer connection.
    async fn write<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.write_with(move |tx| f(tx).map_err(db_error)).await
    }

    /// Runs `f` in one write transaction on the writer connection, for
    /// writes that may refuse for a reason of their own (not a database
    /// error): any error of `f` rolls the whole transaction back.
    async fn write_with<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StorageResult<T> + Send + 'static,
    {
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        // The guard moves into the blocking task: if the caller is dropped,
        // the transaction still completes before the next writer starts.
        tokio::task::spawn_blocking(move || {
            let conn = writer.as_mut().ok_or_else(closed_error)?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_error)?;
            let value = f(&tx)?;
            tx.commit().map_err(db_error)?;
            Ok(value)
        })
        .await
        .map_err(join_error)?
    }

    /// Runs `f` on a reader connection.
    async fn read<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let _permit = self
            .reader_permits
            .acquire()
            .await
            .map_err(|_| closed_error())?;
        if self.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let path = self.path.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            // A connection is missing only if a task holding it panicked.
            let conn = match idle {
                Some(conn) => conn,
                None => match open_reader(&path) {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err(e)),
                },
            };
            let result = f(&conn).map_err(db_error);
            (Some(conn), result)
        })
        .await
        .map_err(join_error)?;
        if let Some(conn) = conn
            && !self.closed.load(Ordering::Acquire)
        {
            self.readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
        result
    }
}

fn open_writer(path: &Path) -> StorageResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| connect_error(path, &e))?;
    let configure = || -> rusqlite::Result<String> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        plan_once(&conn)?;
        register_functions(&conn)?;
        Ok(mode)
    };
    let mode = configure().map_err(|e| connect_error(path, &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Connect(format!(
            "{}: SQLite refused WAL mode (journal_mode is {mode}); use a local file system",
            path.display()
        )));
    }
    Ok(conn)
}

fn open_reader(path: &Path) -> StorageResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| connect_error(path, &e))?;
    let configure = || -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        plan_once(&conn)?;
        register_functions(&conn)
    };
    configure().map_err(|e| connect_error(path, &e))?;
    Ok(conn)
}

/// Keeps a cached statement's plan whatever values are bound. Without it
/// SQLite compiles a statement again on every run whose bound values may
/// change its plan — any `LIMIT ?` — and parsing and planning the query
/// then cost more than running it.
fn plan_once(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(|_| ())
}

/// SQLite's own `lower()` folds ASCII only; user search must fold any script
/// as PostgreSQL's does.
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "myelin_lower",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(ctx.get::<Option<String>>(0)?.map(|s| s.to_lowercase())),
    )
}

const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_ms INTEGER NOT NULL
)";

/// Applies each pending migration in its own transaction, together with its
/// `schema_migrations` row. `BEGIN IMMEDIATE` and the re-check inside make a
/// concurrent open (another process) apply nothing twice.
fn migrate_schema(conn: &mut Connection, apply: bool) -> StorageResult<MigrationReport> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master
                 WHERE type = 'table' AND name = 'schema_migrations')",
            [],
            |row| row.get(0),
        )
        .map_err(db_error)?;
    if !exists && apply {
        conn.execute_batch(CREATE_SCHEMA_MIGRATIONS)
            .map_err(db_error)?;
    }
    let applied = if exists || apply {
        applied_versions(conn).map_err(db_error)?
    } else {
        Vec::new()
    };
    let pending = migrate::pending(migrate::SQLITE, &applied)?;
    if !apply && !pending.is_empty() {
        return Err(migrate::pending_error(&pending));
    }
    let mut report = MigrationReport::default();
    for migration in pending {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        let done: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [migration.version],
                |row| row.get(0),
            )
            .map_err(db_error)?;
        if !done {
            tx.execute_batch(migration.sql).map_err(|e| {
                StorageError::Backend(format!(
                    "migration {:04}_{} failed: {e}",
                    migration.version, migration.name
                ))
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?1, ?2, ?3)",
                params![migration.version, migration.name, migrate::now_ms()],
            )
            .map_err(db_error)?;
            report
                .applied
                .push((migration.version, migration.name.to_owned()));
        }
        tx.commit().map_err(db_error)?;
        if !done {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied SQLite migration"
            );
        }
    }
    report.current_version = if exists || apply {
        conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(db_error)?
    } else {
        0
    };
    Ok(report)
}

fn applied_versions(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    rows.collect()
}

fn db_error(e: rusqlite::Error) -> StorageError {
    if let rusqlite::Error::SqliteFailure(failure, _) = &e
        && matches!(
            failure.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        )
    {
        return StorageError::Conflict(e.to_string());
    }
    StorageError::Backend(e.to_string())
}

fn connect_error(path: &Path, e: &rusqlite::Error) -> StorageError {
    StorageError::Connect(format!("{}: {e}", path.display()))
}

fn join_error(e: tokio::task::JoinError) -> StorageError {
    StorageError::Backend(format!("database task failed: {e}"))
}

fn closed_error() -> StorageError {
    StorageError::Backend("the database is closed".to_owned())
}

/// Serializes JSON for a TEXT column.
fn to_json(value: &serde_json::Value) -> StorageResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StorageError::Backend(format!("cannot serialize JSON: {e}")))
}

/// Reads a TEXT column holding JSON.
fn json_column(row: &Row<'_>, index: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

/// Reads a TEXT column holding a JSON array of strings.
fn strings_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

/// `%term%` for `LIKE … ESCAPE '\'`, lowercase, with the term's own
/// wildcards escaped so they match literally.
fn contains_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        user_id: row.get(0)?,
        localpart: row.get(1)?,
        password_hash: row.get(2)?,
        admin: row.get(3)?,
        deactivated: row.get(4)?,
        created_ms: row.get(5)?,
        displayname: row.get(6)?,
        avatar_url: row.get(7)?,
    })
}

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        user_id: row.get(0)?,
        device_id: row.get(1)?,
        display_name: row.get(2)?,
        last_seen_ip: row.get(3)?,
        last_seen_ms: row.get(4)?,
        created_ms: row.get(5)?,
    })
}

fn registration_token_from_row(row: &Row<'_>) -> rusqlite::Result<RegistrationToken> {
    Ok(RegistrationToken {
        token: row.get(0)?,
        uses_allowed: row.get(1)?,
        completed: row.get(2)?,
        expiry_ms: row.get(3)?,
    })
}

/// Draws the next value of a `counters` row (the stand-in for a sequence).
fn next_counter(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "UPDATE counters SET position = position + 1 WHERE name = ?1 RETURNING position",
    )?
    .query_row([name], |row| row.get(0))
}

/// Which devices of a user to delete.
#[derive(Clone, Copy)]
enum Devices<'a> {
    One(&'a str),
    AllBut(Option<&'a str>),
}

/// Deletes devices of `user_id` and every token, pending to-device message
/// and end-to-end key of theirs; returns how many devices were deleted.
fn delete_devices(
    tx: &Transaction<'_>,
    user_id: &str,
    which: Devices<'_>,
) -> rusqlite::Result<usize> {
    let (sql, device): (&[&str; 8], Option<&str>) = match which {
        Devices::One(device) => (
            &[
                "DELETE FROM dehydrated_devices WHERE user_id = ?1 AND device_id = ?2",
                "DELETE FROM to_device_inbox WHERE user_id = ?1 AND device_id = ?2",
                "DELETE FROM device_keys WHERE user_id = ?1 AND device_id = ?2",
                "DELETE FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2",
                "DELETE FROM fallback_keys WHERE user_id = ?1 AND device_id = ?2",
                "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
                "DELETE FROM refresh_tokens WHERE user_id = ?1 AND device_id = ?2",
                "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
            ],
            Some(device),
        ),
        Devices::AllBut(keep) => (
            &[
                "DELETE FROM dehydrated_devices WHERE user_id = ?1 AND (?2 IS NULL OR device_id <> ?2)",
                "DELETE FROM to_device_inbox WHERE user_id = ?1 AND (?2 IS NULL OR device_id <> ?2)",
                "DELETE FROM device_keys WHERE user_id = ?1 AND (?2 IS NULL OR device_id <> ?2)",
                "DELETE FROM one_time_keys WHERE user_id = ?1 AND (?2 IS NULL OR device_id <> ?2)",
                "DELETE FROM fallback_keys WHERE user_id = ?1 AND (?2 IS NULL OR device_id <> ?2)",
                "DELETE FROM access_tokens WHERE user_id = ?1 AND (?2 IS NULL OR device_id <> ?2)",
                "DELETE FROM refresh_tokens WHERE user_id = ?1 AND (?2 IS NULL OR device_id <> ?2)",
                "DELETE FROM devices WHERE user_id = ?1 AND (?2 IS NULL OR device_id <> ?2)",
            ],
            keep,
        ),
    };
    // The devices themselves last: the count returned is theirs.
    let [rest @ .., devices] = sql;
    for statement in rest {
        tx.prepare_cached(statement)?
            .execute(params![user_id, device])?;
    }
    tx.prepare_cached(devices)?
        .execute(params![user_id, device])
}

#[async_trait]
impl UserStore for SqliteStorage {
    async fn create_user(&self, user: NewUser) -> StorageResult<()> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO users
                 (user_id, localpart, password_hash, admin, deactivated, created_ms,
                 displayname)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
            )?
            .execute(params![
                user.user_id,
                user.localpart,
                user.password_hash,
                user.admin,
                user.created_ms,
                user.displayname
            ])?;
            Ok(())
        })
        .await
    }

    async fn user(&self, user_id: &str) -> StorageResult<Option<User>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT user_id, localpart, password_hash, admin, deactivated, created_ms,
                    displayname,
                    avatar_url
                 FROM users WHERE user_id = ?1",
            )?
            .query_row([user_id], user_from_row)
            .optional()
        })
        .await
    }

    async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> StorageResult<()> {
        let (user_id, password_hash) = (user_id.to_owned(), password_hash.to_owned());
        self.write(move |tx| {
            tx.prepare_cached("UPDATE users SET password_hash = ?2 WHERE user_id = ?1")?
                .execute(params![user_id, password_hash])?;
            Ok(())
        })
        .await
    }

    async fn deactivate_user(&self, user_id: &str) -> StorageResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE users
                 SET deactivated = 1, password_hash = NULL, displayname = NULL, avatar_url = NULL
                 WHERE user_id = ?1",
            )?
            .execute([&user_id])?;
            delete_devices(tx, &user_id, Devices::AllBut(None))?;
            // Key backups go; versions keep their rows, so no number is reused.
            tx.prepare_cached("DELETE FROM backup_sessions WHERE user_id = ?1")?
                .execute([&user_id])?;
            tx.prepare_cached("UPDATE backup_versions SET deleted = 1 WHERE user_id = ?1")?
                .execute([&user_id])?;
            Ok(())
        })
        .await
    }

    async fn set_displayname(&self, user_id: &str, displayname: Option<&str>) -> StorageResult<()> {
        let (user_id, displayname) = (user_id.to_owned(), displayname.map(str::to_owned));
        self.write(move |tx| {
            tx.prepare_cached("UPDATE users SET displayname = ?2 WHERE user_id = ?1")?
                .execute(params![user_id, displayname])?;
            Ok(())
        })
        .await
    }

    async fn set_avatar_url(&self, user_id: &str, avatar_url: Option<&str>) -> StorageResult<()> {
        let (user_id, avatar_url) = (user_id.to_owned(), avatar_url.map(str::to_owned));
        self.write(move |tx| {
            tx.prepare_cached("UPDATE users SET avatar_url = ?2 WHERE user_id = ?1")?
                .execute(params![user_id, avatar_url])?;
            Ok(())
        })
        .await
    }

    async fn search_users(&self, term: &str, limit: u32) -> StorageResult<Vec<DirectoryUser>> {
        let pattern = contains_pattern(term);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT user_id, displayname, avatar_url FROM users
                 WHERE deactivated = 0
                   AND (myelin_lower(user_id) LIKE ?1 ESCAPE '\\'
                        OR myelin_lower(displayname) LIKE ?1 ESCAPE '\\')
                 ORDER BY user_id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![pattern, i64::from(limit)], |row| {
                Ok(DirectoryUser {
                    user_id: row.get(0)?,
                    displayname: row.get(1)?,
                    avatar_url: row.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn count_users(&self) -> StorageResult<i64> {
        self.read(|conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM users")?
                .query_row([], |row| row.get(0))
        })
        .await
    }
}

#[async_trait]
impl DeviceStore for SqliteStorage {
    async fn create_session(
        &self,
        session: NewSession,
        display_name: Option<&str>,
        ip: Option<&str>,
    ) -> StorageResult<()> {
        let (display_name, ip) = (display_name.map(str::to_owned), ip.map(str::to_owned));
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO devices (user_id, device_id, display_name, last_seen_ip, last_seen_ms,
                 created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (user_id, device_id) DO UPDATE
                 SET last_seen_ip = COALESCE(excluded.last_seen_ip, devices.last_seen_ip),
                     last_seen_ms = excluded.last_seen_ms",
            )?
            .execute(params![
                session.user_id,
                session.device_id,
                display_name,
                ip,
                session.created_ms
            ])?;
            insert_session(tx, &session, None)
        })
        .await
    }

    async fn access_token(&self, digest: &[u8]) -> StorageResult<Option<AccessToken>> {
        let digest = digest.to_vec();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT user_id, device_id, expires_ms, digest,
                    predecessor_refresh_digest IS NOT NULL
                 FROM access_tokens WHERE digest = ?1",
            )?
            .query_row([digest], |row| {
                Ok(AccessToken {
                    user_id: row.get(0)?,
                    device_id: row.get(1)?,
                    expires_ms: row.get(2)?,
                    digest: row.get(3)?,
                    has_predecessor: row.get(4)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn retire_predecessor(&self, access_digest: &[u8]) -> StorageResult<()> {
        let digest = access_digest.to_vec();
        self.write(move |tx| {
            tx.prepare_cached(
                "DELETE FROM refresh_tokens WHERE digest =
                 (SELECT predecessor_refresh_digest FROM access_tokens WHERE digest = ?1)",
            )?
            .execute([&digest])?;
            tx.prepare_cached(
                "UPDATE access_tokens SET predecessor_refresh_digest = NULL WHERE digest = ?1",
            )?
            .execute([&digest])?;
            Ok(())
        })
        .await
    }

    async fn refresh_token(&self, digest: &[u8]) -> StorageResult<Option<RefreshToken>> {
        let digest = digest.to_vec();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT user_id, device_id, expires_ms, digest FROM refresh_tokens
                 WHERE digest = ?1",
            )?
            .query_row([digest], |row| {
                Ok(RefreshToken {
                    user_id: row.get(0)?,
                    device_id: row.get(1)?,
                    expires_ms: row.get(2)?,
                    digest: row.get(3)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn refresh_session(
        &self,
        old_refresh_digest: &[u8],
        new: NewSession,
    ) -> StorageResult<bool> {
        let old = old_refresh_digest.to_vec();
        self.write(move |tx| {
            let known: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE digest = ?1)")?
                .query_row([&old], |row| row.get(0))?;
            if !known {
                return Ok(false);
            }
            // The session `old` belongs to: its access token dies now, and the
            // refresh token it was itself refreshed from (if still alive) is
            // superseded twice over.
            tx.prepare_cached(
                "DELETE FROM refresh_tokens WHERE digest IN
                 (SELECT predecessor_refresh_digest FROM access_tokens WHERE refresh_digest = ?1)",
            )?
            .execute([&old])?;
            tx.prepare_cached("DELETE FROM access_tokens WHERE refresh_digest = ?1")?
                .execute([&old])?;
            // A session an earlier refresh from `old` produced, whose response
            // the client evidently lost.
            tx.prepare_cached(
                "DELETE FROM refresh_tokens WHERE digest IN
                 (SELECT refresh_digest FROM access_tokens WHERE predecessor_refresh_digest = ?1)",
            )?
            .execute([&old])?;
            tx.prepare_cached("DELETE FROM access_tokens WHERE predecessor_refresh_digest = ?1")?
                .execute([&old])?;
            insert_session(tx, &new, Some(&old))?;
            Ok(true)
        })
        .await
    }

    async fn delete_device(&self, user_id: &str, device_id: &str) -> StorageResult<bool> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |tx| Ok(delete_devices(tx, &user_id, Devices::One(&device_id))? > 0))
            .await
    }

    async fn delete_devices_except(&self, user_id: &str, keep: Option<&str>) -> StorageResult<()> {
        let (user_id, keep) = (user_id.to_owned(), keep.map(str::to_owned));
        self.write(move |tx| {
            delete_devices(tx, &user_id, Devices::AllBut(keep.as_deref()))?;
            Ok(())
        })
        .await
    }

    async fn device(&self, user_id: &str, device_id: &str) -> StorageResult<Option<Device>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT user_id, device_id, display_name, last_seen_ip, last_seen_ms, created_ms
                 FROM devices WHERE user_id = ?1 AND device_id = ?2",
            )?
            .query_row([user_id, device_id], device_from_row)
            .optional()
        })
        .await
    }

    async fn devices(&self, user_id: &str) -> StorageResult<Vec<Device>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT user_id, device_id, display_name, last_seen_ip, last_seen_ms, created_ms
                 FROM devices WHERE user_id = ?1 ORDER BY device_id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![user_id, LIST_MAX], device_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn set_device_display_name(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> StorageResult<bool> {
        let (user_id, device_id, name) = (
            user_id.to_owned(),
            device_id.to_owned(),
            name.map(str::to_owned),
        );
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE devices SET display_name = ?3 WHERE user_id = ?1 AND device_id = ?2",
                )?
                .execute(params![user_id, device_id, name])?;
            Ok(changed > 0)
        })
        .await
    }

    async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        ip: Option<&str>,
        seen_ms: i64,
    ) -> StorageResult<()> {
        let (user_id, device_id, ip) = (
            user_id.to_owned(),
            device_id.to_owned(),
            ip.map(str::to_owned),
        );
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE devices SET last_seen_ip = COALESCE(?3, last_seen_ip), last_seen_ms = ?4
                 WHERE user_id = ?1 AND device_id = ?2",
            )?
            .execute(params![user_id, device_id, ip, seen_ms])?;
            Ok(())
        })
        .await
    }

    async fn dehydrated_device(&self, user_id: &str) -> StorageResult<Option<DehydratedDevice>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| dehydrated_device(conn, &user_id))
            .await
    }

    async fn put_dehydrated_device(
        &self,
        device: DehydratedDevice,
        display_name: Option<&str>,
    ) -> StorageResult<Option<String>> {
        let display_name = display_name.map(str::to_owned);
        self.write(move |tx| {
            let old = dehydrated_device(tx, &device.user_id)?.map(|d| d.device_id);
            if let Some(old) = &old {
                delete_devices(tx, &device.user_id, Devices::One(old))?;
            }
            tx.prepare_cached(
                "INSERT INTO devices (user_id, device_id, display_name, created_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                device.user_id,
                device.device_id,
                display_name,
                device.created_ms
            ])?;
            tx.prepare_cached(
                "INSERT INTO dehydrated_devices (user_id, device_id, device_data, created_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                device.user_id,
                device.device_id,
                device.device_data.to_string(),
                device.created_ms
            ])?;
            Ok(old)
        })
        .await
    }

    async fn delete_dehydrated_device(&self, user_id: &str) -> StorageResult<Option<String>> {
        let user_id = user_id.to_owned();
        self.write(move |tx| {
            let old = dehydrated_device(tx, &user_id)?.map(|d| d.device_id);
            if let Some(old) = &old {
                delete_devices(tx, &user_id, Devices::One(old))?;
            }
            Ok(old)
        })
        .await
    }
}

fn dehydrated_device(
    conn: &Connection,
    user_id: &str,
) -> rusqlite::Result<Option<DehydratedDevice>> {
    conn.prepare_cached(
        "SELECT device_id, device_data, created_ms FROM dehydrated_devices WHERE user_id = ?1",
    )?
    .query_row([user_id], |row| {
        Ok(DehydratedDevice {
            user_id: user_id.to_owned(),
            device_id: row.get(0)?,
            device_data: json_column(row, 1)?,
            created_ms: row.get(2)?,
        })
    })
    .optional()
}

/// Stores a session's access token (and refresh token, if any).
fn insert_session(
    tx: &Transaction<'_>,
    session: &NewSession,
    predecessor: Option<&[u8]>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO access_tokens
         (digest, user_id, device_id, expires_ms, refresh_digest, predecessor_refresh_digest,
          created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        session.access_digest,
        session.user_id,
        session.device_id,
        session.access_expires_ms,
        session.refresh_digest,
        predecessor,
        session.created_ms
    ])?;
    if let Some(refresh_digest) = &session.refresh_digest {
        tx.prepare_cached(
            "INSERT INTO refresh_tokens (digest, user_id, device_id, expires_ms, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            refresh_digest,
            session.user_id,
            session.device_id,
            session.refresh_expires_ms,
            session.created_ms
        ])?;
    }
    Ok(())
}

#[async_trait]
impl AccountDataStore for SqliteStorage {
    async fn put_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        data_type: &str,
        content: &serde_json::Value,
        stream_id: i64,
    ) -> StorageResult<()> {
        let content = to_json(content)?;
        let (user_id, room_id, data_type) = (
            user_id.to_owned(),
            room_id.unwrap_or("").to_owned(),
            data_type.to_owned(),
        );
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user_id, room_id, data_type) DO UPDATE
                 SET content = excluded.content, stream_id = excluded.stream_id",
            )?
            .execute(params![user_id, room_id, data_type, content, stream_id])?;
            Ok(())
        })
        .await
    }

    async fn account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        data_type: &str,
    ) -> StorageResult<Option<serde_json::Value>> {
        let (user_id, room_id, data_type) = (
            user_id.to_owned(),
            room_id.unwrap_or("").to_owned(),
            data_type.to_owned(),
        );
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT content FROM account_data
                 WHERE user_id = ?1 AND room_id = ?2 AND data_type = ?3",
            )?
            .query_row([user_id, room_id, data_type], |row| json_column(row, 0))
            .optional()
        })
        .await
    }
}

#[async_trait]
impl FilterStore for SqliteStorage {
    async fn create_filter(
        &self,
        user_id: &str,
        definition: &serde_json::Value,
    ) -> StorageResult<String> {
        let definition = to_json(definition)?;
        let user_id = user_id.to_owned();
        self.write(move |tx| {
            let filter_id = next_counter(tx, "filter_id")?.to_string();
            tx.prepare_cached(
                "INSERT INTO filters (user_id, filter_id, definition) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![user_id, filter_id, definition])?;
            Ok(filter_id)
        })
        .await
    }

    async fn filter(
        &self,
        user_id: &str,
        filter_id: &str,
    ) -> StorageResult<Option<serde_json::Value>> {
        let (user_id, filter_id) = (user_id.to_owned(), filter_id.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT definition FROM filters WHERE user_id = ?1 AND filter_id = ?2",
            )?
            .query_row([user_id, filter_id], |row| json_column(row, 0))
            .optional()
        })
        .await
    }
}

#[async_trait]
impl RegistrationTokenStore for SqliteStorage {
    async fn create_registration_token(&self, token: RegistrationToken) -> StorageResult<()> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO registration_tokens (token, uses_allowed, completed, expiry_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                token.token,
                token.uses_allowed,
                token.completed,
                token.expiry_ms
            ])?;
            Ok(())
        })
        .await
    }

    async fn registration_token(&self, token: &str) -> StorageResult<Option<RegistrationToken>> {
        let token = token.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT token, uses_allowed, completed, expiry_ms FROM registration_tokens
                 WHERE token = ?1",
            )?
            .query_row([token], registration_token_from_row)
            .optional()
        })
        .await
    }

    async fn registration_tokens(&self) -> StorageResult<Vec<RegistrationToken>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT token, uses_allowed, completed, expiry_ms FROM registration_tokens
                 ORDER BY token LIMIT ?1",
            )?;
            let rows = stmt.query_map([LIST_MAX], registration_token_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn use_registration_token(&self, token: &str, now_ms: i64) -> StorageResult<bool> {
        let token = token.to_owned();
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE registration_tokens SET completed = completed + 1
                     WHERE token = ?1
                       AND (uses_allowed IS NULL OR completed < uses_allowed)
                       AND (expiry_ms IS NULL OR expiry_ms > ?2)",
                )?
                .execute(params![token, now_ms])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn delete_registration_token(&self, token: &str) -> StorageResult<bool> {
        let token = token.to_owned();
        self.write(move |tx| {
            Ok(tx
                .prepare_cached("DELETE FROM registration_tokens WHERE token = ?1")?
                .execute([token])?
                > 0)
        })
        .await
    }
}

#[async_trait]
impl UiaStore for SqliteStorage {
    async fn create_uia_session(&self, session: UiaSession) -> StorageResult<()> {
        let completed = to_json(&serde_json::Value::from(session.completed.clone()))?;
        let data = to_json(&session.data)?;
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO uia_sessions
                 (session_id, user_id, purpose, completed, data, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                session.session_id,
                session.user_id,
                session.purpose,
                completed,
                data,
                session.expires_ms
            ])?;
            Ok(())
        })
        .await
    }

    async fn uia_session(
        &self,
        session_id: &str,
        now_ms: i64,
    ) -> StorageResult<Option<UiaSession>> {
        let session_id = session_id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT session_id, user_id, purpose, completed, data, expires_ms
                 FROM uia_sessions WHERE session_id = ?1 AND expires_ms > ?2",
            )?
            .query_row(params![session_id, now_ms], |row| {
                Ok(UiaSession {
                    session_id: row.get(0)?,
                    user_id: row.get(1)?,
                    purpose: row.get(2)?,
                    completed: strings_column(row, 3)?,
                    data: json_column(row, 4)?,
                    expires_ms: row.get(5)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn complete_uia_stage(
        &self,
        session_id: &str,
        stage: &str,
        data: &serde_json::Value,
    ) -> StorageResult<()> {
        let data = to_json(data)?;
        let (session_id, stage) = (session_id.to_owned(), stage.to_owned());
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE uia_sessions
                 SET completed = CASE
                         WHEN EXISTS (SELECT 1 FROM json_each(uia_sessions.completed)
                                     WHERE value = ?2)
                         THEN completed
                         ELSE json_insert(completed, '$[#]', ?2)
                     END,
                     data = ?3
                 WHERE session_id = ?1",
            )?
            .execute(params![session_id, stage, data])?;
            Ok(())
        })
        .await
    }

    async fn delete_uia_session(&self, session_id: &str) -> StorageResult<()> {
        let session_id = session_id.to_owned();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM uia_sessions WHERE session_id = ?1")?
                .execute([session_id])?;
            Ok(())
        })
        .await
    }

    async fn purge_expired_uia_sessions(&self, now_ms: i64) -> StorageResult<u64> {
        let mut purged = 0u64;
        for _ in 0..UIA_PURGE_BATCHES_MAX {
            let deleted = self
                .write(move |tx| {
                    tx.prepare_cached(
                        "DELETE FROM uia_sessions WHERE session_id IN
                         (SELECT session_id FROM uia_sessions WHERE expires_ms <= ?1 LIMIT ?2)",
                    )?
                    .execute(params![now_ms, UIA_PURGE_BATCH])
                })
                .await?;
            purged += deleted as u64;
            if (deleted as i64) < UIA_PURGE_BATCH {
                break;
            }
        }
        Ok(purged)
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    fn backend_name(&self) -> &'static str {
        "sqlite"
    }

    fn pool_stats(&self) -> PoolStats {
        if self.closed.load(Ordering::Acquire) {
            return PoolStats::default();
        }
        let readers = u64::from(self.reader_count);
        let readers_busy = readers.saturating_sub(self.reader_permits.available_permits() as u64);
        let writer_busy = u64::from(self.writer.try_lock().is_err());
        PoolStats {
            size: readers + 1,
            in_use: readers_busy + writer_busy,
        }
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.reader_permits.close();
        // Waits for the write in progress; the last connection to close
        // checkpoints the WAL into the database file.
        drop(self.writer.lock().await.take());
        let readers =
            std::mem::take(&mut *self.readers.lock().unwrap_or_else(PoisonError::into_inner));
        drop(readers);
        tracing::debug!(path = %self.path.display(), "closed SQLite database");
    }
}
