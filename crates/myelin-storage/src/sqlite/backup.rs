//! [`BackupStore`] on SQLite. Every write runs on the one writer connection,
//! so numbering versions and applying the replacement rule need no locks.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::SqliteStorage;
use crate::StorageResult;
use crate::backup::{
    BackedUpSession, BackupScope, BackupStore, BackupUpload, BackupVersion, replaces,
};

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_default()
}

/// Owned form of a [`BackupScope`], to move into a blocking task.
#[derive(Clone)]
enum Scope {
    All,
    Room(String),
    Session(String, String),
}

impl From<BackupScope<'_>> for Scope {
    fn from(scope: BackupScope<'_>) -> Self {
        match scope {
            BackupScope::All => Scope::All,
            BackupScope::Room(room) => Scope::Room(room.to_owned()),
            BackupScope::Session(room, session) => {
                Scope::Session(room.to_owned(), session.to_owned())
            }
        }
    }
}

/// Whether a version exists and is not deleted.
fn live(conn: &Connection, user_id: &str, version: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM backup_versions WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
        )?
        .query_row(params![user_id, version], |_| Ok(()))
        .optional()?
        .is_some())
}

fn current(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT MAX(version) FROM backup_versions WHERE user_id = ?1 AND deleted = 0",
    )?
    .query_row([user_id], |row| row.get(0))
}

fn etag_and_count(conn: &Connection, user_id: &str, version: i64) -> rusqlite::Result<(i64, i64)> {
    let etag: i64 = conn
        .prepare_cached("SELECT etag FROM backup_versions WHERE user_id = ?1 AND version = ?2")?
        .query_row(params![user_id, version], |row| row.get(0))?;
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM backup_sessions WHERE user_id = ?1 AND version = ?2")?
        .query_row(params![user_id, version], |row| row.get(0))?;
    Ok((etag, count))
}

fn session_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BackedUpSession> {
    let data: String = row.get(5)?;
    Ok(BackedUpSession {
        room_id: row.get(0)?,
        session_id: row.get(1)?,
        first_message_index: row.get(2)?,
        forwarded_count: row.get(3)?,
        is_verified: row.get(4)?,
        session_data: parse_json(&data),
    })
}

const SELECT_SESSIONS: &str = "SELECT room_id, session_id, first_message_index, forwarded_count,
        is_verified, session_data FROM backup_sessions WHERE user_id = ?1 AND version = ?2";

#[async_trait]
impl BackupStore for SqliteStorage {
    async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &Value,
    ) -> StorageResult<i64> {
        let (user_id, algorithm, auth_data) = (
            user_id.to_owned(),
            algorithm.to_owned(),
            auth_data.to_string(),
        );
        self.write(move |tx| {
            let version: i64 = tx
                .prepare_cached(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM backup_versions WHERE user_id = ?1",
                )?
                .query_row([&user_id], |row| row.get(0))?;
            tx.prepare_cached(
                "INSERT INTO backup_versions (user_id, version, algorithm, auth_data)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![user_id, version, algorithm, auth_data])?;
            Ok(version)
        })
        .await
    }

    async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> StorageResult<Option<BackupVersion>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let version = match version {
                Some(v) => v,
                None => match current(conn, &user_id)? {
                    Some(v) => v,
                    None => return Ok(None),
                },
            };
            let row = conn
                .prepare_cached(
                    "SELECT algorithm, auth_data, etag FROM backup_versions
                     WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
                )?
                .query_row(params![user_id, version], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .optional()?;
            let Some((algorithm, auth_data, etag)) = row else {
                return Ok(None);
            };
            let (_, count) = etag_and_count(conn, &user_id, version)?;
            Ok(Some(BackupVersion {
                version,
                algorithm,
                auth_data: parse_json(&auth_data),
                etag,
                count,
            }))
        })
        .await
    }

    async fn update_backup_auth_data(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &Value,
    ) -> StorageResult<bool> {
        let (user_id, auth_data) = (user_id.to_owned(), auth_data.to_string());
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE backup_versions SET auth_data = ?3
                     WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
                )?
                .execute(params![user_id, version, auth_data])?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_backup_version(&self, user_id: &str, version: i64) -> StorageResult<bool> {
        let user_id = user_id.to_owned();
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE backup_versions SET deleted = 1 WHERE user_id = ?1 AND version = ?2",
                )?
                .execute(params![user_id, version])?;
            tx.prepare_cached("DELETE FROM backup_sessions WHERE user_id = ?1 AND version = ?2")?
                .execute(params![user_id, version])?;
            Ok(n > 0)
        })
        .await
    }

    async fn put_backup_sessions(
        &self,
        user_id: &str,
        version: i64,
        sessions: &[BackedUpSession],
    ) -> StorageResult<BackupUpload> {
        let user_id = user_id.to_owned();
        let sessions = sessions.to_vec();
        self.write(move |tx| {
            match current(tx, &user_id)? {
                None => return Ok(BackupUpload::NoVersion),
                Some(current) if current != version => {
                    return Ok(BackupUpload::WrongVersion { current });
                }
                Some(_) => {}
            }
            let mut changed = false;
            for new in &sessions {
                let existing = tx
                    .prepare_cached(&format!(
                        "{SELECT_SESSIONS} AND room_id = ?3 AND session_id = ?4"
                    ))?
                    .query_row(
                        params![user_id, version, new.room_id, new.session_id],
                        session_from_row,
                    )
                    .optional()?;
                if existing.as_ref().is_some_and(|old| !replaces(old, new)) {
                    continue;
                }
                tx.prepare_cached(
                    "INSERT INTO backup_sessions (user_id, version, room_id, session_id,
                         first_message_index, forwarded_count, is_verified, session_data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
                         first_message_index = excluded.first_message_index,
                         forwarded_count = excluded.forwarded_count,
                         is_verified = excluded.is_verified,
                         session_data = excluded.session_data",
                )?
                .execute(params![
                    user_id,
                    version,
                    new.room_id,
                    new.session_id,
                    new.first_message_index,
                    new.forwarded_count,
                    new.is_verified,
                    new.session_data.to_string()
                ])?;
                changed = true;
            }
            if changed {
                tx.prepare_cached(
                    "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = ?1 AND version = ?2",
                )?
                .execute(params![user_id, version])?;
            }
            let (etag, count) = etag_and_count(tx, &user_id, version)?;
            Ok(BackupUpload::Stored { etag, count })
        })
        .await
    }

    async fn backup_sessions(
        &self,
        user_id: &str,
        version: i64,
        scope: BackupScope<'_>,
    ) -> StorageResult<Option<Vec<BackedUpSession>>> {
        let user_id = user_id.to_owned();
        let scope = Scope::from(scope);
        self.read(move |conn| {
            if !live(conn, &user_id, version)? {
                return Ok(None);
            }
            let order = "ORDER BY room_id, session_id";
            let sessions = match &scope {
                Scope::All => conn
                    .prepare_cached(&format!("{SELECT_SESSIONS} {order}"))?
                    .query_map(params![user_id, version], session_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                Scope::Room(room) => conn
                    .prepare_cached(&format!("{SELECT_SESSIONS} AND room_id = ?3 {order}"))?
                    .query_map(params![user_id, version, room], session_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                Scope::Session(room, session) => conn
                    .prepare_cached(&format!(
                        "{SELECT_SESSIONS} AND room_id = ?3 AND session_id = ?4"
                    ))?
                    .query_map(params![user_id, version, room, session], session_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(Some(sessions))
        })
        .await
    }

    async fn delete_backup_sessions(
        &self,
        user_id: &str,
        version: i64,
        scope: BackupScope<'_>,
    ) -> StorageResult<Option<(i64, i64)>> {
        let user_id = user_id.to_owned();
        let scope = Scope::from(scope);
        self.write(move |tx| {
            if !live(tx, &user_id, version)? {
                return Ok(None);
            }
            let base = "DELETE FROM backup_sessions WHERE user_id = ?1 AND version = ?2";
            let n = match &scope {
                Scope::All => tx
                    .prepare_cached(base)?
                    .execute(params![user_id, version])?,
                Scope::Room(room) => tx
                    .prepare_cached(&format!("{base} AND room_id = ?3"))?
                    .execute(params![user_id, version, room])?,
                Scope::Session(room, session) => tx
                    .prepare_cached(&format!("{base} AND room_id = ?3 AND session_id = ?4"))?
                    .execute(params![user_id, version, room, session])?,
            };
            if n > 0 {
                tx.prepare_cached(
                    "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = ?1 AND version = ?2",
                )?
                .execute(params![user_id, version])?;
            }
            etag_and_count(tx, &user_id, version).map(Some)
        })
        .await
    }
}
