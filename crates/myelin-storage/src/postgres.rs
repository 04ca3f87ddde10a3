//! The cluster backend.
//!
//! Several Myelin nodes share one PostgreSQL database, so nothing here may
//! rely on being the only writer: ids and stream positions come from
//! sequences, multi-statement operations run in one transaction and lock
//! the row they start from, and migrations serialise on an advisory lock so
//! nodes starting together apply each one once. Statements are prepared once
//! per pooled connection (`prepare_cached`).

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

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

/// How long establishing one connection may take before the server is
/// declared unreachable (unless the URL sets `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a free pooled connection.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long checking a returned connection may take.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The advisory lock migrations hold ("myelin" in ASCII); any fixed key
/// works as long as every node uses the same one.
const MIGRATION_LOCK_KEY: i64 = 0x6d79_656c_696e;
/// Rows returned by a listing (devices of a user, registration tokens); more
/// than this is abuse, and the rest is not returned.
const LIST_MAX: i64 = 10_000;
/// Expired UIA sessions deleted per statement, so a purge never holds many
/// row locks at once.
const UIA_PURGE_BATCH: i64 = 1_000;
/// Batches per purge call; what remains is deleted by the next call.
const UIA_PURGE_BATCHES_MAX: u32 = 1_000;

/// A pool of connections to a PostgreSQL database.
pub struct PostgresStorage {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("status", &self.pool.status())
            .finish()
    }
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

impl PostgresStorage {
    /// Connects to `url` (`postgres://user:password@host:port/database`, no
    /// TLS), and applies pending migrations if `options.migrate`.
    pub async fn open(url: &str, options: &OpenOptions) -> StorageResult<(Self, MigrationReport)> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StorageError::Connect(format!("invalid PostgreSQL URL: {}", error_text(&e)))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1) as usize)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(|e| StorageError::Connect(format!("cannot build the PostgreSQL pool: {e}")))?;
        // Connect now, so an unreachable server fails the start, not the
        // first request.
        drop(pool.get().await.map_err(|e| {
            StorageError::Connect(format!(
                "cannot connect to PostgreSQL at {target}: {}",
                pool_error_text(&e)
            ))
        })?);
        let store = Self { pool };
        let report = store.migrate_schema(options.migrate).await?;
        tracing::debug!(%target, pool_size = options.pool_size, "opened PostgreSQL database");
        Ok((store, report))
    }

    async fn client(&self) -> StorageResult<deadpool_postgres::Client> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Applies each pending migration in its own transaction, together with
    /// its `schema_migrations` row, under an advisory lock and after a
    /// re-check, so nodes starting at once apply each migration once.
    async fn migrate_schema(&self, apply: bool) -> StorageResult<MigrationReport> {
        let mut client = self.client().await?;
        let exists: bool = query_one(
            &client,
            "SELECT to_regclass('schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .try_get(0)
        .map_err(db_error)?;
        if !exists && apply {
            let tx = client.transaction().await.map_err(db_error)?;
            execute(
                &tx,
                "SELECT pg_advisory_xact_lock($1)",
                &[&MIGRATION_LOCK_KEY],
            )
            .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    BIGINT NOT NULL PRIMARY KEY,
                    name       TEXT   NOT NULL,
                    applied_ms BIGINT NOT NULL
                )",
            )
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
        }
        let applied: Vec<i64> = if exists || apply {
            query(
                &client,
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(db_error)?
        } else {
            Vec::new()
        };
        let pending = migrate::pending(migrate::POSTGRES, &applied)?;
        if !apply && !pending.is_empty() {
            return Err(migrate::pending_error(&pending));
        }
        let mut report = MigrationReport::default();
        for migration in pending {
            let tx = client.transaction().await.map_err(db_error)?;
            execute(
                &tx,
                "SELECT pg_advisory_xact_lock($1)",
                &[&MIGRATION_LOCK_KEY],
            )
            .await?;
            let done = query_opt(
                &tx,
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[&migration.version],
            )
            .await?
            .is_some();
            if !done {
                tx.batch_execute(migration.sql).await.map_err(|e| {
                    StorageError::Backend(format!(
                        "migration {:04}_{} failed: {}",
                        migration.version,
                        migration.name,
                        error_text(&e)
                    ))
                })?;
                execute(
                    &tx,
                    "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
                    &[&migration.version, &migration.name, &migrate::now_ms()],
                )
                .await?;
                report
                    .applied
                    .push((migration.version, migration.name.to_owned()));
            }
            tx.commit().await.map_err(db_error)?;
            if !done {
                tracing::info!(
                    version = migration.version,
                    name = migration.name,
                    "applied PostgreSQL migration"
                );
            }
        }
        report.current_version = if exists || apply {
            query_one(
                &client,
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
                &[],
            )
            .await?
            .try_get(0)
            .map_err(db_error)?
        } else {
            0
        };
        Ok(report)
    }

    async fn execute(&self, sql: &str, params: &Params<'_>) -> StorageResult<u64> {
        let client = self.client().await?;
        execute(&client, sql, params).await
    }

    async fn query(&self, sql: &str, params: &Params<'_>) -> StorageResult<Vec<Row>> {
        let client = self.client().await?;
        query(&client, sql, params).await
    }

    async fn query_opt(&self, sql: &str, params: &Params<'_>) -> StorageResult<Option<Row>> {
        let client = self.client().await?;
        query_opt(&client, sql, params).await
    }
}

/// `host:port/database` of a configuration, for messages (never the
/// password).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{}",
        config.get_dbname().unwrap_or("(default database)")
    )
}

async fn execute(
    client: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> StorageResult<u64> {
    let stmt = client.prepare_cached(sql).await.map_err(db_error)?;
    client.execute(&stmt, params).await.map_err(db_error)
}

async fn query(
    client: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> StorageResult<Vec<Row>> {
    let stmt = client.prepare_cached(sql).await.map_err(db_error)?;
    client.query(&stmt, params).await.map_err(db_error)
}

async fn query_opt(
    client: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> StorageResult<Option<Row>> {
    let stmt = client.prepare_cached(sql).await.map_err(db_error)?;
    client.query_opt(&stmt, params).await.map_err(db_error)
}

async fn query_one(
    client: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> StorageResult<Row> {
    let stmt = client.prepare_cached(sql).await.map_err(db_error)?;
    client.query_one(&stmt, params).await.map_err(db_error)
}

fn db_error(e: tokio_postgres::Error) -> StorageError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        let constraint = e
            .as_db_error()
            .and_then(|db| db.constraint())
            .unwrap_or("unique key");
        return StorageError::Conflict(format!("{constraint}: {}", error_text(&e)));
    }
    StorageError::Backend(error_text(&e))
}

fn pool_error(e: PoolError) -> StorageError {
    match e {
        PoolError::Backend(e) => db_error(e),
        PoolError::Closed => StorageError::Backend("the database is closed".to_owned()),
        e => StorageError::Backend(format!("no database connection: {}", pool_error_text(&e))),
    }
}

/// Sources followed when describing an error.
const ERROR_SOURCES_MAX: usize = 8;

/// An error with its sources: tokio-postgres keeps the useful part (the
/// server's message, the OS error) in the source, out of its `Display`.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    for _ in 0..ERROR_SOURCES_MAX {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// deadpool's `Display` already includes its backend error, but not that
/// error's sources.
fn pool_error_text(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => error_text(e),
        PoolError::Timeout(_) => format!("{e} (the server did not answer in time)"),
        e => error_text(e),
    }
}

fn to_json(value: &serde_json::Value) -> StorageResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StorageError::Backend(format!("cannot serialize JSON: {e}")))
}

fn json_column(row: &Row, index: usize) -> StorageResult<serde_json::Value> {
    let text: String = row.try_get(index).map_err(db_error)?;
    serde_json::from_str(&text)
        .map_err(|e| StorageError::Backend(format!("stored JSON is invalid: {e}")))
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

fn user_from_row(row: &Row) -> StorageResult<User> {
    let user = (|| {
        Ok::<_, tokio_postgres::Error>(User {
            user_id: row.try_get(0)?,
            localpart: row.try_get(1)?,
            password_hash: row.try_get(2)?,
            admin: row.try_get(3)?,
            deactivated: row.try_get(4)?,
            created_ms: row.try_get(5)?,
            displayname: row.try_get(6)?,
            avatar_url: row.try_get(7)?,
        })
    })();
    user.map_err(db_error)
}

fn device_from_row(row: &Row) -> StorageResult<Device> {
    let device = (|| {
        Ok::<_, tokio_postgres::Error>(Device {
            user_id: row.try_get(0)?,
            device_id: row.try_get(1)?,
            display_name: row.try_get(2)?,
            last_seen_ip: row.try_get(3)?,
            last_seen_ms: row.try_get(4)?,
            created_ms: row.try_get(5)?,
        })
    })();
    device.map_err(db_error)
}

fn registration_token_from_row(row: &Row) -> StorageResult<RegistrationToken> {
    let token = (|| {
        Ok::<_, tokio_postgres::Error>(RegistrationToken {
            token: row.try_get(0)?,
            uses_allowed: row.try_get(1)?,
            completed: row.try_get(2)?,
            expiry_ms: row.try_get(3)?,
        })
    })();
    token.map_err(db_error)
}

/// Which devices of a user to delete.
#[derive(Clone, Copy)]
enum Devices<'a> {
    One(&'a str),
    AllBut(Option<&'a str>),
}

/// Deletes devices of `user_id` and every token, pending to-device message
/// and end-to-end key of theirs; returns how many devices were deleted.
async fn delete_devices(
    client: &impl GenericClient,
    user_id: &str,
    which: Devices<'_>,
) -> StorageResult<u64> {
    let (sql, device): (&[&str; 8], Option<&str>) = match which {
        Devices::One(device) => (
            &[
                "DELETE FROM dehydrated_devices WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
            ],
            Some(device),
        ),
        Devices::AllBut(keep) => (
            &[
                "DELETE FROM dehydrated_devices
                 WHERE user_id = $1 AND ($2::TEXT IS NULL OR device_id <> $2)",
                "DELETE FROM to_device_inbox
                 WHERE user_id = $1 AND ($2::TEXT IS NULL OR device_id <> $2)",
                "DELETE FROM device_keys
                 WHERE user_id = $1 AND ($2::TEXT IS NULL OR device_id <> $2)",
                "DELETE FROM one_time_keys
                 WHERE user_id = $1 AND ($2::TEXT IS NULL OR device_id <> $2)",
                "DELETE FROM fallback_keys
                 WHERE user_id = $1 AND ($2::TEXT IS NULL OR device_id <> $2)",
                "DELETE FROM access_tokens
                 WHERE user_id = $1 AND ($2::TEXT IS NULL OR device_id <> $2)",
                "DELETE FROM refresh_tokens
                 WHERE user_id = $1 AND ($2::TEXT IS NULL OR device_id <> $2)",
                "DELETE FROM devices WHERE user_id = $1 AND ($2::TEXT IS NULL OR device_id <> $2)",
            ],
            keep,
        ),
    };
    // The devices themselves last: the count returned is theirs.
    let [rest @ .., devices] = sql;
    for statement in rest {
        execute(client, statement, &[&user_id, &device]).await?;
    }
    execute(client, devices, &[&user_id, &device]).await
}

/// Stores a session's access token (and refresh token, if any).
async fn insert_session(
    client: &impl GenericClient,
    session: &NewSession,
    predecessor: Option<&[u8]>,
) -> StorageResult<()> {
    execute(
        client,
        "INSERT INTO access_tokens
         (digest, user_id, device_id, expires_ms, refresh_digest, predecessor_refresh_digest,
          created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &session.access_digest,
            &session.user_id,
            &session.device_id,
            &session.access_expires_ms,
            &session.refresh_digest,
            &predecessor,
            &session.created_ms,
        ],
    )
    .await?;
    if let Some(refresh_digest) = &session.refresh_digest {
        execute(
            client,
            "INSERT INTO refresh_tokens (digest, user_id, device_id, expires_ms, created_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                refresh_digest,
                &session.user_id,
                &session.device_id,
                &session.refresh_expires_ms,
                &session.created_ms,
            ],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl UserStore for PostgresStorage {
    async fn create_user(&self, user: NewUser) -> StorageResult<()> {
        self.execute(
            "INSERT INTO users (user_id, localpart, password_hash, admin, deactivated, created_ms,
                 displayname)
             VALUES ($1, $2, $3, $4, FALSE, $5, $6)",
            &[
                &user.user_id,
                &user.localpart,
                &user.password_hash,
                &user.admin,
                &user.created_ms,
                &user.displayname,
            ],
        )
        .await?;
        Ok(())
    }

    async fn user(&self, user_id: &str) -> StorageResult<Option<User>> {
        self.query_opt(
            "SELECT user_id, localpart, password_hash, admin, deactivated, created_ms, displayname,
                    avatar_url
             FROM users WHERE user_id = $1",
            &[&user_id],
        )
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> StorageResult<()> {
        self.execute(
            "UPDATE users SET password_hash = $2 WHERE user_id = $1",
            &[&user_id, &password_hash],
        )
        .await?;
        Ok(())
    }

    async fn deactivate_user(&self, user_id: &str) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // Updating the user row first locks it, serialising concurrent
        // deactivations of the same account.
        execute(
            &tx,
            "UPDATE users
             SET deactivated = TRUE, password_hash = NULL, displayname = NULL, avatar_url = NULL
             WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
        delete_devices(&tx, user_id, Devices::AllBut(None)).await?;
        // Key backups go; versions keep their rows, so no number is reused.
        execute(
            &tx,
            "DELETE FROM backup_sessions WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
        execute(
            &tx,
            "UPDATE backup_versions SET deleted = TRUE WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
        tx.commit().await.map_err(db_error)
    }

    async fn set_displayname(&self, user_id: &str, displayname: Option<&str>) -> StorageResult<()> {
        self.execute(
            "UPDATE users SET displayname = $2 WHERE user_id = $1",
            &[&user_id, &displayname],
        )
        .await?;
        Ok(())
    }

    async fn set_avatar_url(&self, user_id: &str, avatar_url: Option<&str>) -> StorageResult<()> {
        self.execute(
            "UPDATE users SET avatar_url = $2 WHERE user_id = $1",
            &[&user_id, &avatar_url],
        )
        .await?;
        Ok(())
    }

    async fn search_users(&self, term: &str, limit: u32) -> StorageResult<Vec<DirectoryUser>> {
        let pattern = contains_pattern(term);
        let rows = self
            .query(
                "SELECT user_id, displayname, avatar_url FROM users
                 WHERE NOT deactivated
                   AND (lower(user_id) LIKE $1 ESCAPE '\\'
                        OR lower(displayname) LIKE $1 ESCAPE '\\')
                 ORDER BY user_id LIMIT $2",
                &[&pattern, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DirectoryUser {
                    user_id: row.try_get(0).map_err(db_error)?,
                    displayname: row.try_get(1).map_err(db_error)?,
                    avatar_url: row.try_get(2).map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn count_users(&self) -> StorageResult<i64> {
        let client = self.client().await?;
        query_one(&client, "SELECT COUNT(*) FROM users", &[])
            .await?
            .try_get(0)
            .map_err(db_error)
    }
}

#[async_trait]
impl DeviceStore for PostgresStorage {
    async fn create_session(
        &self,
        session: NewSession,
        display_name: Option<&str>,
        ip: Option<&str>,
    ) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        execute(
            &tx,
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ip, last_seen_ms,
                 created_ms)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (user_id, device_id) DO UPDATE
             SET last_seen_ip = COALESCE(excluded.last_seen_ip, devices.last_seen_ip),
                 last_seen_ms = excluded.last_seen_ms",
            &[
                &session.user_id,
                &session.device_id,
                &display_name,
                &ip,
                &session.created_ms,
            ],
        )
        .await?;
        insert_session(&tx, &session, None).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn access_token(&self, digest: &[u8]) -> StorageResult<Option<AccessToken>> {
        let Some(row) = self
            .query_opt(
                "SELECT user_id, device_id, expires_ms, digest,
                    predecessor_refresh_digest IS NOT NULL
                 FROM access_tokens WHERE digest = $1",
                &[&digest],
            )
            .await?
        else {
            return Ok(None);
        };
        let token = (|| {
            Ok::<_, tokio_postgres::Error>(AccessToken {
                user_id: row.try_get(0)?,
                device_id: row.try_get(1)?,
                expires_ms: row.try_get(2)?,
                digest: row.try_get(3)?,
                has_predecessor: row.try_get(4)?,
            })
        })();
        token.map(Some).map_err(db_error)
    }

    async fn retire_predecessor(&self, access_digest: &[u8]) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let row = query_opt(
            &tx,
            "SELECT predecessor_refresh_digest FROM access_tokens WHERE digest = $1 FOR UPDATE",
            &[&access_digest],
        )
        .await?;
        let predecessor: Option<Vec<u8>> = match row {
            Some(row) => row.try_get(0).map_err(db_error)?,
            None => None,
        };
        if let Some(predecessor) = predecessor {
            execute(
                &tx,
                "DELETE FROM refresh_tokens WHERE digest = $1",
                &[&predecessor],
            )
            .await?;
            execute(
                &tx,
                "UPDATE access_tokens SET predecessor_refresh_digest = NULL WHERE digest = $1",
                &[&access_digest],
            )
            .await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn refresh_token(&self, digest: &[u8]) -> StorageResult<Option<RefreshToken>> {
        let Some(row) = self
            .query_opt(
                "SELECT user_id, device_id, expires_ms, digest FROM refresh_tokens
                 WHERE digest = $1",
                &[&digest],
            )
            .await?
        else {
            return Ok(None);
        };
        let token = (|| {
            Ok::<_, tokio_postgres::Error>(RefreshToken {
                user_id: row.try_get(0)?,
                device_id: row.try_get(1)?,
                expires_ms: row.try_get(2)?,
                digest: row.try_get(3)?,
            })
        })();
        token.map(Some).map_err(db_error)
    }

    async fn refresh_session(
        &self,
        old_refresh_digest: &[u8],
        new: NewSession,
    ) -> StorageResult<bool> {
        let old = old_refresh_digest;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // Locking the old token serialises two refreshes racing with it: the
        // second sees (and drops) the session the first produced.
        let known = query_opt(
            &tx,
            "SELECT 1 FROM refresh_tokens WHERE digest = $1 FOR UPDATE",
            &[&old],
        )
        .await?
        .is_some();
        if !known {
            return Ok(false);
        }
        // The session `old` belongs to: its access token dies now, and the
        // refresh token it was itself refreshed from (if still alive) is
        // superseded twice over.
        execute(
            &tx,
            "DELETE FROM refresh_tokens WHERE digest IN
             (SELECT predecessor_refresh_digest FROM access_tokens WHERE refresh_digest = $1)",
            &[&old],
        )
        .await?;
        execute(
            &tx,
            "DELETE FROM access_tokens WHERE refresh_digest = $1",
            &[&old],
        )
        .await?;
        // A session an earlier refresh from `old` produced, whose response
        // the client evidently lost.
        execute(
            &tx,
            "DELETE FROM refresh_tokens WHERE digest IN
             (SELECT refresh_digest FROM access_tokens WHERE predecessor_refresh_digest = $1)",
            &[&old],
        )
        .await?;
        execute(
            &tx,
            "DELETE FROM access_tokens WHERE predecessor_refresh_digest = $1",
            &[&old],
        )
        .await?;
        insert_session(&tx, &new, Some(old)).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn delete_device(&self, user_id: &str, device_id: &str) -> StorageResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let deleted = delete_devices(&tx, user_id, Devices::One(device_id)).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(deleted > 0)
    }

    async fn delete_devices_except(&self, user_id: &str, keep: Option<&str>) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        delete_devices(&tx, user_id, Devices::AllBut(keep)).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn device(&self, user_id: &str, device_id: &str) -> StorageResult<Option<Device>> {
        self.query_opt(
            "SELECT user_id, device_id, display_name, last_seen_ip, last_seen_ms, created_ms
             FROM devices WHERE user_id = $1 AND device_id = $2",
            &[&user_id, &device_id],
        )
        .await?
        .as_ref()
        .map(device_from_row)
        .transpose()
    }

    async fn devices(&self, user_id: &str) -> StorageResult<Vec<Device>> {
        self.query(
            "SELECT user_id, device_id, display_name, last_seen_ip, last_seen_ms, created_ms
             FROM devices WHERE user_id = $1 ORDER BY device_id LIMIT $2",
            &[&user_id, &LIST_MAX],
        )
        .await?
        .iter()
        .map(device_from_row)
        .collect()
    }

    async fn set_device_display_name(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> StorageResult<bool> {
        let changed = self
            .execute(
                "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
                &[&user_id, &device_id, &name],
            )
            .await?;
        Ok(changed > 0)
    }

    async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        ip: Option<&str>,
        seen_ms: i64,
    ) -> StorageResult<()> {
        self.execute(
            "UPDATE devices SET last_seen_ip = COALESCE($3, last_seen_ip), last_seen_ms = $4
             WHERE user_id = $1 AND device_id = $2",
            &[&user_id, &device_id, &ip, &seen_ms],
        )
        .await?;
        Ok(())
    }

    async fn dehydrated_device(&self, user_id: &str) -> StorageResult<Option<DehydratedDevice>> {
        let client = self.client().await?;
        dehydrated_device(&client, user_id).await
    }

    async fn put_dehydrated_device(
        &self,
        device: DehydratedDevice,
        display_name: Option<&str>,
    ) -> StorageResult<Option<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // One replacement per user at a time, also when there is no row yet
        // to lock.
        lock_user_dehydration(&tx, &device.user_id).await?;
        let old = dehydrated_device(&tx, &device.user_id)
            .await?
            .map(|d| d.device_id);
        if let Some(old) = &old {
            delete_devices(&tx, &device.user_id, Devices::One(old)).await?;
        }
        execute(
            &tx,
            "INSERT INTO devices (user_id, device_id, display_name, created_ms)
             VALUES ($1, $2, $3, $4)",
            &[
                &device.user_id,
                &device.device_id,
                &display_name,
                &device.created_ms,
            ],
        )
        .await?;
        execute(
            &tx,
            "INSERT INTO dehydrated_devices (user_id, device_id, device_data, created_ms)
             VALUES ($1, $2, $3, $4)",
            &[
                &device.user_id,
                &device.device_id,
                &device.device_data.to_string(),
                &device.created_ms,
            ],
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(old)
    }

    async fn delete_dehydrated_device(&self, user_id: &str) -> StorageResult<Option<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        lock_user_dehydration(&tx, user_id).await?;
        let old = dehydrated_device(&tx, user_id).await?.map(|d| d.device_id);
        if let Some(old) = &old {
            delete_devices(&tx, user_id, Devices::One(old)).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(old)
    }
}

/// Serializes changes of one user's dehydrated device until the transaction
/// ends.
async fn lock_user_dehydration(client: &impl GenericClient, user_id: &str) -> StorageResult<()> {
    execute(
        client,
        "SELECT pg_advisory_xact_lock(hashtext('dehydrated_device:' || $1))",
        &[&user_id],
    )
    .await?;
    Ok(())
}

async fn dehydrated_device(
    client: &impl GenericClient,
    user_id: &str,
) -> StorageResult<Option<DehydratedDevice>> {
    let Some(row) = query_opt(
        client,
        "SELECT device_id, device_data, created_ms FROM dehydrated_devices WHERE user_id = $1",
        &[&user_id],
    )
    .await?
    else {
        return Ok(None);
    };
    let data: String = row.try_get(1).map_err(db_error)?;
    Ok(Some(DehydratedDevice {
        user_id: user_id.to_owned(),
        device_id: row.try_get(0).map_err(db_error)?,
        device_data: serde_json::from_str(&data)
            .map_err(|e| StorageError::Backend(format!("dehydrated device data: {e}")))?,
        created_ms: row.try_get(2).map_err(db_error)?,
    }))
}

#[async_trait]
impl AccountDataStore for PostgresStorage {
    async fn put_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        data_type: &str,
        content: &serde_json::Value,
        stream_id: i64,
    ) -> StorageResult<()> {
        let content = to_json(content)?;
        self.execute(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, room_id, data_type) DO UPDATE
             SET content = excluded.content, stream_id = excluded.stream_id",
            &[
                &user_id,
                &room_id.unwrap_or(""),
                &data_type,
                &content,
                &stream_id,
            ],
        )
        .await?;
        Ok(())
    }

    async fn account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        data_type: &str,
    ) -> StorageResult<Option<serde_json::Value>> {
        self.query_opt(
            "SELECT content FROM account_data
             WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
            &[&user_id, &room_id.unwrap_or(""), &data_type],
        )
        .await?
        .map(|row| json_column(&row, 0))
        .transpose()
    }
}

#[async_trait]
impl FilterStore for PostgresStorage {
    async fn create_filter(
        &self,
        user_id: &str,
        definition: &serde_json::Value,
    ) -> StorageResult<String> {
        let definition = to_json(definition)?;
        let client = self.client().await?;
        query_one(
            &client,
            "INSERT INTO filters (user_id, filter_id, definition)
             VALUES ($1, nextval('filter_id')::TEXT, $2)
             RETURNING filter_id",
            &[&user_id, &definition],
        )
        .await?
        .try_get(0)
        .map_err(db_error)
    }

    async fn filter(
        &self,
        user_id: &str,
        filter_id: &str,
    ) -> StorageResult<Option<serde_json::Value>> {
        self.query_opt(
            "SELECT definition FROM filters WHERE user_id = $1 AND filter_id = $2",
            &[&user_id, &filter_id],
        )
        .await?
        .map(|row| json_column(&row, 0))
        .transpose()
    }
}

#[async_trait]
impl RegistrationTokenStore for PostgresStorage {
    async fn create_registration_token(&self, token: RegistrationToken) -> StorageResult<()> {
        self.execute(
            "INSERT INTO registration_tokens (token, uses_allowed, completed, expiry_ms)
                 VALUES ($1, $2, $3, $4)",
            &[
                &token.token,
                &token.uses_allowed,
                &token.completed,
                &token.expiry_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn registration_token(&self, token: &str) -> StorageResult<Option<RegistrationToken>> {
        self.query_opt(
            "SELECT token, uses_allowed, completed, expiry_ms FROM registration_tokens
                 WHERE token = $1",
            &[&token],
        )
        .await?
        .as_ref()
        .map(registration_token_from_row)
        .transpose()
    }

    async fn registration_tokens(&self) -> StorageResult<Vec<RegistrationToken>> {
        self.query(
            "SELECT token, uses_allowed, completed, expiry_ms FROM registration_tokens
                 ORDER BY token LIMIT $1",
            &[&LIST_MAX],
        )
        .await?
        .iter()
        .map(registration_token_from_row)
        .collect()
    }

    async fn use_registration_token(&self, token: &str, now_ms: i64) -> StorageResult<bool> {
        let changed = self
            .execute(
                "UPDATE registration_tokens SET completed = completed + 1
                 WHERE token = $1
                   AND (uses_allowed IS NULL OR completed < uses_allowed)
                   AND (expiry_ms IS NULL OR expiry_ms > $2)",
                &[&token, &now_ms],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn delete_registration_token(&self, token: &str) -> StorageResult<bool> {
        Ok(self
            .execute(
                "DELETE FROM registration_tokens WHERE token = $1",
                &[&token],
            )
            .await?
            > 0)
    }
}

#[async_trait]
impl UiaStore for PostgresStorage {
    async fn create_uia_session(&self, session: UiaSession) -> StorageResult<()> {
        let completed = to_json(&serde_json::Value::from(session.completed.clone()))?;
        let data = to_json(&session.data)?;
        self.execute(
            "INSERT INTO uia_sessions (session_id, user_id, purpose, completed, data, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &session.session_id,
                &session.user_id,
                &session.purpose,
                &completed,
                &data,
                &session.expires_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn uia_session(
        &self,
        session_id: &str,
        now_ms: i64,
    ) -> StorageResult<Option<UiaSession>> {
        let Some(row) = self
            .query_opt(
                "SELECT session_id, user_id, purpose, completed, data, expires_ms
                 FROM uia_sessions WHERE session_id = $1 AND expires_ms > $2",
                &[&session_id, &now_ms],
            )
            .await?
        else {
            return Ok(None);
        };
        let completed: String = row.try_get(3).map_err(db_error)?;
        let completed: Vec<String> = serde_json::from_str(&completed)
            .map_err(|e| StorageError::Backend(format!("stored UIA stages are invalid: {e}")))?;
        Ok(Some(UiaSession {
            session_id: row.try_get(0).map_err(db_error)?,
            user_id: row.try_get(1).map_err(db_error)?,
            purpose: row.try_get(2).map_err(db_error)?,
            completed,
            data: json_column(&row, 4)?,
            expires_ms: row.try_get(5).map_err(db_error)?,
        }))
    }

    async fn complete_uia_stage(
        &self,
        session_id: &str,
        stage: &str,
        data: &serde_json::Value,
    ) -> StorageResult<()> {
        let data = to_json(data)?;
        // One statement: the row lock of the UPDATE makes concurrent stage
        // completions see each other's stages.
        self.execute(
            "UPDATE uia_sessions
             SET completed = CASE
                     WHEN completed::JSONB @> jsonb_build_array($2::TEXT) THEN completed
                     ELSE (completed::JSONB || jsonb_build_array($2::TEXT))::TEXT
                 END,
                 data = $3
             WHERE session_id = $1",
            &[&session_id, &stage, &data],
        )
        .await?;
        Ok(())
    }

    async fn delete_uia_session(&self, session_id: &str) -> StorageResult<()> {
        self.execute(
            "DELETE FROM uia_sessions WHERE session_id = $1",
            &[&session_id],
        )
        .await?;
        Ok(())
    }

    async fn purge_expired_uia_sessions(&self, now_ms: i64) -> StorageResult<u64> {
        let mut purged = 0u64;
        for _ in 0..UIA_PURGE_BATCHES_MAX {
            let deleted = self
                .execute(
                    "DELETE FROM uia_sessions WHERE session_id IN
                     (SELECT session_id FROM uia_sessions WHERE expires_ms <= $1 LIMIT $2)",
                    &[&now_ms, &UIA_PURGE_BATCH],
                )
                .await?;
            purged += deleted;
            if deleted < UIA_PURGE_BATCH as u64 {
                break;
            }
        }
        Ok(purged)
    }
}

#[async_trait]
impl Storage for PostgresStorage {
    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    fn pool_stats(&self) -> PoolStats {
        let status = self.pool.status();
        let size = status.size as u64;
        PoolStats {
            size,
            in_use: size.saturating_sub(status.available as u64),
        }
    }

    async fn close(&self) {
        self.pool.close();
        tracing::debug!("closed PostgreSQL pool");
    }
}
