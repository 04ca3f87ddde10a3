//! [`BackupStore`] on PostgreSQL. Creating a version takes a per-user
//! advisory lock so two creations never pick the same number; an upload locks
//! its version's row (`FOR UPDATE`), so uploads and deletions of one version
//! run one after the other.

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{PostgresStorage, db_error, execute, query, query_one, query_opt};
use crate::StorageResult;
use crate::backup::{
    BackedUpSession, BackupScope, BackupStore, BackupUpload, BackupVersion, replaces,
};

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_default()
}

fn session_from_row(row: &Row) -> StorageResult<BackedUpSession> {
    let data: String = row.try_get(5).map_err(db_error)?;
    Ok(BackedUpSession {
        room_id: row.try_get(0).map_err(db_error)?,
        session_id: row.try_get(1).map_err(db_error)?,
        first_message_index: row.try_get(2).map_err(db_error)?,
        forwarded_count: row.try_get(3).map_err(db_error)?,
        is_verified: row.try_get(4).map_err(db_error)?,
        session_data: parse_json(&data),
    })
}

const SELECT_SESSIONS: &str = "SELECT room_id, session_id, first_message_index, forwarded_count,
        is_verified, session_data FROM backup_sessions WHERE user_id = $1 AND version = $2";

async fn current(
    client: &impl deadpool_postgres::GenericClient,
    user_id: &str,
) -> StorageResult<Option<i64>> {
    let row = query_one(
        client,
        "SELECT MAX(version) FROM backup_versions WHERE user_id = $1 AND NOT deleted",
        &[&user_id],
    )
    .await?;
    row.try_get(0).map_err(db_error)
}

async fn etag_and_count(
    client: &impl deadpool_postgres::GenericClient,
    user_id: &str,
    version: i64,
) -> StorageResult<(i64, i64)> {
    let row = query_one(
        client,
        "SELECT etag, (SELECT COUNT(*) FROM backup_sessions s
                       WHERE s.user_id = v.user_id AND s.version = v.version)
         FROM backup_versions v WHERE user_id = $1 AND version = $2",
        &[&user_id, &version],
    )
    .await?;
    Ok((
        row.try_get(0).map_err(db_error)?,
        row.try_get(1).map_err(db_error)?,
    ))
}

/// The `AND …` filter of a scope and its extra parameters (`$3`, `$4`).
fn scope_filter<'a>(scope: &BackupScope<'a>) -> (&'static str, Vec<&'a str>) {
    match *scope {
        BackupScope::All => ("", Vec::new()),
        BackupScope::Room(room) => (" AND room_id = $3", vec![room]),
        BackupScope::Session(room, session) => {
            (" AND room_id = $3 AND session_id = $4", vec![room, session])
        }
    }
}

#[async_trait]
impl BackupStore for PostgresStorage {
    async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &Value,
    ) -> StorageResult<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        query_one(
            &tx,
            "SELECT pg_advisory_xact_lock(hashtextextended('backup_versions:' || $1, 0))",
            &[&user_id],
        )
        .await?;
        let row = query_one(
            &tx,
            "INSERT INTO backup_versions (user_id, version, algorithm, auth_data)
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3
             FROM backup_versions WHERE user_id = $1
             RETURNING version",
            &[&user_id, &algorithm, &auth_data.to_string()],
        )
        .await?;
        let version: i64 = row.try_get(0).map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(version)
    }

    async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> StorageResult<Option<BackupVersion>> {
        let client = self.client().await?;
        let version = match version {
            Some(v) => v,
            None => match current(&client, user_id).await? {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        let row = query_opt(
            &client,
            "SELECT algorithm, auth_data, etag,
                    (SELECT COUNT(*) FROM backup_sessions s
                     WHERE s.user_id = v.user_id AND s.version = v.version)
             FROM backup_versions v WHERE user_id = $1 AND version = $2 AND NOT deleted",
            &[&user_id, &version],
        )
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let auth_data: String = row.try_get(1).map_err(db_error)?;
        Ok(Some(BackupVersion {
            version,
            algorithm: row.try_get(0).map_err(db_error)?,
            auth_data: parse_json(&auth_data),
            etag: row.try_get(2).map_err(db_error)?,
            count: row.try_get(3).map_err(db_error)?,
        }))
    }

    async fn update_backup_auth_data(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &Value,
    ) -> StorageResult<bool> {
        let n = self
            .execute(
                "UPDATE backup_versions SET auth_data = $3
                 WHERE user_id = $1 AND version = $2 AND NOT deleted",
                &[&user_id, &version, &auth_data.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_backup_version(&self, user_id: &str, version: i64) -> StorageResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let n = execute(
            &tx,
            "UPDATE backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2",
            &[&user_id, &version],
        )
        .await?;
        execute(
            &tx,
            "DELETE FROM backup_sessions WHERE user_id = $1 AND version = $2",
            &[&user_id, &version],
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(n > 0)
    }

    async fn put_backup_sessions(
        &self,
        user_id: &str,
        version: i64,
        sessions: &[BackedUpSession],
    ) -> StorageResult<BackupUpload> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // Lock the version first: a deletion of it waits, or is seen.
        query_opt(
            &tx,
            "SELECT 1 FROM backup_versions WHERE user_id = $1 AND version = $2 FOR UPDATE",
            &[&user_id, &version],
        )
        .await?;
        match current(&tx, user_id).await? {
            None => return Ok(BackupUpload::NoVersion),
            Some(current) if current != version => {
                return Ok(BackupUpload::WrongVersion { current });
            }
            Some(_) => {}
        }
        let mut changed = false;
        for new in sessions {
            let existing = query_opt(
                &tx,
                &format!("{SELECT_SESSIONS} AND room_id = $3 AND session_id = $4"),
                &[&user_id, &version, &new.room_id, &new.session_id],
            )
            .await?
            .map(|row| session_from_row(&row))
            .transpose()?;
            if existing.as_ref().is_some_and(|old| !replaces(old, new)) {
                continue;
            }
            execute(
                &tx,
                "INSERT INTO backup_sessions (user_id, version, room_id, session_id,
                     first_message_index, forwarded_count, is_verified, session_data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
                     first_message_index = excluded.first_message_index,
                     forwarded_count = excluded.forwarded_count,
                     is_verified = excluded.is_verified,
                     session_data = excluded.session_data",
                &[
                    &user_id,
                    &version,
                    &new.room_id,
                    &new.session_id,
                    &new.first_message_index,
                    &new.forwarded_count,
                    &new.is_verified,
                    &new.session_data.to_string(),
                ],
            )
            .await?;
            changed = true;
        }
        if changed {
            execute(
                &tx,
                "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
                &[&user_id, &version],
            )
            .await?;
        }
        let (etag, count) = etag_and_count(&tx, user_id, version).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(BackupUpload::Stored { etag, count })
    }

    async fn backup_sessions(
        &self,
        user_id: &str,
        version: i64,
        scope: BackupScope<'_>,
    ) -> StorageResult<Option<Vec<BackedUpSession>>> {
        let client = self.client().await?;
        let live = query_opt(
            &client,
            "SELECT 1 FROM backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted",
            &[&user_id, &version],
        )
        .await?;
        if live.is_none() {
            return Ok(None);
        }
        let (filter, extra) = scope_filter(&scope);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&user_id, &version];
        for value in &extra {
            params.push(value);
        }
        let rows = query(
            &client,
            &format!("{SELECT_SESSIONS}{filter} ORDER BY room_id, session_id"),
            &params,
        )
        .await?;
        rows.iter()
            .map(session_from_row)
            .collect::<StorageResult<Vec<_>>>()
            .map(Some)
    }

    async fn delete_backup_sessions(
        &self,
        user_id: &str,
        version: i64,
        scope: BackupScope<'_>,
    ) -> StorageResult<Option<(i64, i64)>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let live = query_opt(
            &tx,
            "SELECT 1 FROM backup_versions
             WHERE user_id = $1 AND version = $2 AND NOT deleted FOR UPDATE",
            &[&user_id, &version],
        )
        .await?;
        if live.is_none() {
            return Ok(None);
        }
        let (filter, extra) = scope_filter(&scope);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&user_id, &version];
        for value in &extra {
            params.push(value);
        }
        let n = execute(
            &tx,
            &format!("DELETE FROM backup_sessions WHERE user_id = $1 AND version = $2{filter}"),
            &params,
        )
        .await?;
        if n > 0 {
            execute(
                &tx,
                "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
                &[&user_id, &version],
            )
            .await?;
        }
        let result = etag_and_count(&tx, user_id, version).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(result))
    }
}
