//! [`KeyStore`] on SQLite. Claims run on the one writer connection, in one
//! transaction each, so no key is handed out twice.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::SqliteStorage;
use crate::keys::{CrossSigningUsage, DeviceKeys, KeySignature, KeyStore, OneTimeKey};
use crate::{StorageError, StorageResult};

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_default()
}

#[async_trait]
impl KeyStore for SqliteStorage {
    async fn device_keys(&self, user_id: &str, device_id: &str) -> StorageResult<Option<Value>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT key_json FROM device_keys WHERE user_id = ?1 AND device_id = ?2",
            )?
            .query_row(params![user_id, device_id], |row| {
                row.get::<_, String>(0).map(|t| parse_json(&t))
            })
            .optional()
        })
        .await
    }

    async fn put_device_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &Value,
        stream_pos: i64,
    ) -> StorageResult<bool> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let text = keys.to_string();
        self.write(move |tx| {
            let old: Option<String> = tx
                .prepare_cached(
                    "SELECT key_json FROM device_keys WHERE user_id = ?1 AND device_id = ?2",
                )?
                .query_row(params![user_id, device_id], |row| row.get(0))
                .optional()?;
            if old.is_some_and(|old| parse_json(&old) == parse_json(&text)) {
                return Ok(false);
            }
            log_change(tx, &user_id, stream_pos)?;
            let pos = stream_pos;
            tx.prepare_cached(
                "INSERT INTO device_keys (user_id, device_id, key_json, stream_pos)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id, device_id) DO UPDATE
                 SET key_json = excluded.key_json, stream_pos = excluded.stream_pos",
            )?
            .execute(params![user_id, device_id, text, pos])?;
            Ok(true)
        })
        .await
    }

    async fn log_device_list_change(&self, user_id: &str, stream_pos: i64) -> StorageResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |tx| log_change(tx, &user_id, stream_pos))
            .await
    }

    async fn user_device_keys(
        &self,
        user_id: &str,
        device_ids: &[String],
    ) -> StorageResult<Vec<DeviceKeys>> {
        let user_id = user_id.to_owned();
        let wanted = device_ids.to_vec();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT k.device_id, k.key_json, d.display_name FROM device_keys k
                 JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
                 WHERE k.user_id = ?1 ORDER BY k.device_id",
            )?;
            let rows = stmt.query_map([user_id], |row| {
                Ok(DeviceKeys {
                    device_id: row.get(0)?,
                    keys: parse_json(&row.get::<_, String>(1)?),
                    display_name: row.get(2)?,
                })
            })?;
            let all: Vec<DeviceKeys> = rows.collect::<rusqlite::Result<_>>()?;
            Ok(all
                .into_iter()
                .filter(|k| wanted.is_empty() || wanted.contains(&k.device_id))
                .collect())
        })
        .await
    }

    async fn put_one_time_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[OneTimeKey],
    ) -> StorageResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let keys = keys.to_vec();
        self.write_with(move |tx| {
            let db = super::db_error;
            let mut existing = tx
                .prepare_cached(
                    "SELECT key_json FROM one_time_keys
                     WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3 AND key_id = ?4",
                )
                .map_err(db)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db)?;
            for key in &keys {
                let old: Option<String> = existing
                    .query_row(
                        params![user_id, device_id, key.algorithm, key.key_id],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(db)?;
                match old {
                    Some(old) if parse_json(&old) == key.key => {}
                    Some(_) => {
                        return Err(StorageError::Conflict(format!(
                            "one-time key {}:{} exists with other content",
                            key.algorithm, key.key_id
                        )));
                    }
                    None => {
                        insert
                            .execute(params![
                                user_id,
                                device_id,
                                key.algorithm,
                                key.key_id,
                                key.key.to_string()
                            ])
                            .map_err(db)?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StorageResult<BTreeMap<String, i64>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT algorithm, COUNT(*) FROM one_time_keys
                 WHERE user_id = ?1 AND device_id = ?2 GROUP BY algorithm",
            )?;
            let rows = stmt.query_map(params![user_id, device_id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn put_fallback_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[OneTimeKey],
    ) -> StorageResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let keys = keys.to_vec();
        self.write(move |tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0)
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
                 SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0",
            )?;
            for key in &keys {
                upsert.execute(params![
                    user_id,
                    device_id,
                    key.algorithm,
                    key.key_id,
                    key.key.to_string()
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn unused_fallback_key_types(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StorageResult<Vec<String>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT algorithm FROM fallback_keys
                 WHERE user_id = ?1 AND device_id = ?2 AND NOT used ORDER BY algorithm",
            )?;
            let rows = stmt.query_map(params![user_id, device_id], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> StorageResult<Option<OneTimeKey>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let algorithm = algorithm.to_owned();
        self.write(move |tx| {
            let one_time: Option<(String, String)> = tx
                .prepare_cached(
                    "SELECT key_id, key_json FROM one_time_keys
                     WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3
                     ORDER BY key_id LIMIT 1",
                )?
                .query_row(params![user_id, device_id, algorithm], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            if let Some((key_id, json)) = one_time {
                tx.prepare_cached(
                    "DELETE FROM one_time_keys
                     WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3 AND key_id = ?4",
                )?
                .execute(params![user_id, device_id, algorithm, key_id])?;
                return Ok(Some(OneTimeKey {
                    algorithm,
                    key_id,
                    key: parse_json(&json),
                }));
            }
            let fallback: Option<(String, String)> = tx
                .prepare_cached(
                    "UPDATE fallback_keys SET used = 1
                     WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3
                     RETURNING key_id, key_json",
                )?
                .query_row(params![user_id, device_id, algorithm], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            Ok(fallback.map(|(key_id, json)| OneTimeKey {
                algorithm,
                key_id,
                key: parse_json(&json),
            }))
        })
        .await
    }

    async fn device_list_changes(&self, after: i64, upto: i64) -> StorageResult<Vec<String>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT user_id FROM device_list_changes
                 WHERE stream_pos > ?1 AND stream_pos <= ?2 ORDER BY user_id",
            )?;
            let rows = stmt.query_map(params![after, upto], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn cross_signing_key(
        &self,
        user_id: &str,
        usage: CrossSigningUsage,
    ) -> StorageResult<Option<Value>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT key_json FROM cross_signing_keys WHERE user_id = ?1 AND usage = ?2",
            )?
            .query_row(params![user_id, usage.as_str()], |row| {
                row.get::<_, String>(0).map(|t| parse_json(&t))
            })
            .optional()
        })
        .await
    }

    async fn put_cross_signing_keys(
        &self,
        user_id: &str,
        keys: &[(CrossSigningUsage, Value)],
        stream_pos: i64,
    ) -> StorageResult<()> {
        let user_id = user_id.to_owned();
        let keys: Vec<(CrossSigningUsage, String)> =
            keys.iter().map(|(u, k)| (*u, k.to_string())).collect();
        self.write(move |tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO cross_signing_keys (user_id, usage, key_json) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, usage) DO UPDATE SET key_json = excluded.key_json",
            )?;
            for (usage, text) in &keys {
                upsert.execute(params![user_id, usage.as_str(), text])?;
            }
            log_change(tx, &user_id, stream_pos)
        })
        .await
    }

    async fn put_key_signatures(
        &self,
        target_user_id: &str,
        signatures: &[KeySignature],
        stream_pos: i64,
    ) -> StorageResult<()> {
        let target = target_user_id.to_owned();
        let signatures: Vec<KeySignature> = signatures
            .iter()
            .filter(|s| s.target_user_id == target_user_id)
            .cloned()
            .collect();
        self.write(move |tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO key_signatures
                 (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
                 DO UPDATE SET signature = excluded.signature",
            )?;
            for s in &signatures {
                upsert.execute(params![
                    s.target_user_id,
                    s.target_key_id,
                    s.signer_user_id,
                    s.signer_key_id,
                    s.signature
                ])?;
            }
            log_change(tx, &target, stream_pos)
        })
        .await
    }

    async fn key_signatures(&self, target_user_id: &str) -> StorageResult<Vec<KeySignature>> {
        let target = target_user_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
                 FROM key_signatures WHERE target_user_id = ?1
                 ORDER BY target_key_id, signer_user_id, signer_key_id",
            )?;
            let rows = stmt.query_map([target], |row| {
                Ok(KeySignature {
                    target_user_id: row.get(0)?,
                    target_key_id: row.get(1)?,
                    signer_user_id: row.get(2)?,
                    signer_key_id: row.get(3)?,
                    signature: row.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

/// Logs a device-list change, and keeps the stream's counter at least at
/// its position (positions come from the writer's tracker).
fn log_change(
    tx: &rusqlite::Transaction<'_>,
    user_id: &str,
    stream_pos: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO device_list_changes (stream_pos, user_id) VALUES (?1, ?2)
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![stream_pos, user_id])?;
    tx.prepare_cached(
        "UPDATE counters SET position = MAX(position, ?1) WHERE name = 'device_list_stream_pos'",
    )?
    .execute([stream_pos])?;
    Ok(())
}
