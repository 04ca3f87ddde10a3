//! [`KeyStore`] on PostgreSQL. A claim deletes one row chosen with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claims never get the same key.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use serde_json::Value;

use super::{PostgresStorage, db_error, execute, query_opt};
use crate::keys::{CrossSigningUsage, DeviceKeys, KeySignature, KeyStore, OneTimeKey};
use crate::{StorageError, StorageResult};

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_default()
}

/// `(key_id, key_json)` of a row.
fn key_row(row: &tokio_postgres::Row) -> StorageResult<(String, String)> {
    Ok((
        row.try_get(0).map_err(db_error)?,
        row.try_get(1).map_err(db_error)?,
    ))
}

#[async_trait]
impl KeyStore for PostgresStorage {
    async fn device_keys(&self, user_id: &str, device_id: &str) -> StorageResult<Option<Value>> {
        let row = self
            .query_opt(
                "SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2",
                &[&user_id, &device_id],
            )
            .await?;
        row.map(|row| row.try_get::<_, String>(0).map(|t| parse_json(&t)))
            .transpose()
            .map_err(db_error)
    }

    async fn put_device_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &Value,
        stream_pos: i64,
    ) -> StorageResult<bool> {
        let text = keys.to_string();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let old = query_opt(
            &tx,
            "SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2 FOR UPDATE",
            &[&user_id, &device_id],
        )
        .await?;
        if let Some(old) = old {
            let old: String = old.try_get(0).map_err(db_error)?;
            if parse_json(&old) == *keys {
                return Ok(false);
            }
        }
        log_change(&tx, user_id, stream_pos).await?;
        let pos = stream_pos;
        execute(
            &tx,
            "INSERT INTO device_keys (user_id, device_id, key_json, stream_pos)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, device_id) DO UPDATE
             SET key_json = excluded.key_json, stream_pos = excluded.stream_pos",
            &[&user_id, &device_id, &text, &pos],
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn user_device_keys(
        &self,
        user_id: &str,
        device_ids: &[String],
    ) -> StorageResult<Vec<DeviceKeys>> {
        let rows = self
            .query(
                "SELECT k.device_id, k.key_json, d.display_name FROM device_keys k
                 JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
                 WHERE k.user_id = $1 ORDER BY k.device_id",
                &[&user_id],
            )
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let device_id: String = row.try_get(0).map_err(db_error)?;
            if !device_ids.is_empty() && !device_ids.contains(&device_id) {
                continue;
            }
            out.push(DeviceKeys {
                device_id,
                keys: parse_json(&row.try_get::<_, String>(1).map_err(db_error)?),
                display_name: row.try_get(2).map_err(db_error)?,
            });
        }
        Ok(out)
    }

    async fn put_one_time_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[OneTimeKey],
    ) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        for key in keys {
            let text = key.key.to_string();
            let inserted = execute(
                &tx,
                "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&user_id, &device_id, &key.algorithm, &key.key_id, &text],
            )
            .await?;
            if inserted == 1 {
                continue;
            }
            let old = query_opt(
                &tx,
                "SELECT key_json FROM one_time_keys
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
                &[&user_id, &device_id, &key.algorithm, &key.key_id],
            )
            .await?;
            if let Some(old) = old {
                let old: String = old.try_get(0).map_err(db_error)?;
                if parse_json(&old) != key.key {
                    return Err(StorageError::Conflict(format!(
                        "one-time key {}:{} exists with other content",
                        key.algorithm, key.key_id
                    )));
                }
            }
        }
        tx.commit().await.map_err(db_error)
    }

    async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StorageResult<BTreeMap<String, i64>> {
        let rows = self
            .query(
                "SELECT algorithm, COUNT(*) FROM one_time_keys
                 WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
                &[&user_id, &device_id],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(db_error)
    }

    async fn put_fallback_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[OneTimeKey],
    ) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        for key in keys {
            execute(
                &tx,
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
                 VALUES ($1, $2, $3, $4, $5, FALSE)
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
                 SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE",
                &[
                    &user_id,
                    &device_id,
                    &key.algorithm,
                    &key.key_id,
                    &key.key.to_string(),
                ],
            )
            .await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn unused_fallback_key_types(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StorageResult<Vec<String>> {
        let rows = self
            .query(
                "SELECT algorithm FROM fallback_keys
                 WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY algorithm",
                &[&user_id, &device_id],
            )
            .await?;
        rows.iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(db_error)
    }

    async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> StorageResult<Option<OneTimeKey>> {
        let client = self.client().await?;
        let claimed = query_opt(
            &client,
            "DELETE FROM one_time_keys
             WHERE (user_id, device_id, algorithm, key_id) IN (
                 SELECT user_id, device_id, algorithm, key_id FROM one_time_keys
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                 ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING key_id, key_json",
            &[&user_id, &device_id, &algorithm],
        )
        .await?;
        let row = match claimed {
            Some(row) => Some(row),
            None => {
                query_opt(
                    &client,
                    "UPDATE fallback_keys SET used = TRUE
                     WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                     RETURNING key_id, key_json",
                    &[&user_id, &device_id, &algorithm],
                )
                .await?
            }
        };
        let Some(row) = row else { return Ok(None) };
        let (key_id, json) = key_row(&row)?;
        Ok(Some(OneTimeKey {
            algorithm: algorithm.to_owned(),
            key_id,
            key: parse_json(&json),
        }))
    }

    async fn log_device_list_change(&self, user_id: &str, stream_pos: i64) -> StorageResult<()> {
        let client = self.client().await?;
        log_change(&client, user_id, stream_pos).await
    }

    async fn device_list_changes(&self, after: i64, upto: i64) -> StorageResult<Vec<String>> {
        let rows = self
            .query(
                "SELECT DISTINCT user_id FROM device_list_changes
                 WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY user_id",
                &[&after, &upto],
            )
            .await?;
        rows.iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(db_error)
    }

    async fn cross_signing_key(
        &self,
        user_id: &str,
        usage: CrossSigningUsage,
    ) -> StorageResult<Option<Value>> {
        let row = self
            .query_opt(
                "SELECT key_json FROM cross_signing_keys WHERE user_id = $1 AND usage = $2",
                &[&user_id, &usage.as_str()],
            )
            .await?;
        row.map(|row| row.try_get::<_, String>(0).map(|t| parse_json(&t)))
            .transpose()
            .map_err(db_error)
    }

    async fn put_cross_signing_keys(
        &self,
        user_id: &str,
        keys: &[(CrossSigningUsage, Value)],
        stream_pos: i64,
    ) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        for (usage, key) in keys {
            execute(
                &tx,
                "INSERT INTO cross_signing_keys (user_id, usage, key_json) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, usage) DO UPDATE SET key_json = excluded.key_json",
                &[&user_id, &usage.as_str(), &key.to_string()],
            )
            .await?;
        }
        log_change(&tx, user_id, stream_pos).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn put_key_signatures(
        &self,
        target_user_id: &str,
        signatures: &[KeySignature],
        stream_pos: i64,
    ) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        for s in signatures
            .iter()
            .filter(|s| s.target_user_id == target_user_id)
        {
            execute(
                &tx,
                "INSERT INTO key_signatures
                 (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
                 DO UPDATE SET signature = excluded.signature",
                &[
                    &s.target_user_id,
                    &s.target_key_id,
                    &s.signer_user_id,
                    &s.signer_key_id,
                    &s.signature,
                ],
            )
            .await?;
        }
        log_change(&tx, target_user_id, stream_pos).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn key_signatures(&self, target_user_id: &str) -> StorageResult<Vec<KeySignature>> {
        let rows = self
            .query(
                "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
                 FROM key_signatures WHERE target_user_id = $1
                 ORDER BY target_key_id, signer_user_id, signer_key_id",
                &[&target_user_id],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(KeySignature {
                    target_user_id: row.try_get(0)?,
                    target_key_id: row.try_get(1)?,
                    signer_user_id: row.try_get(2)?,
                    signer_key_id: row.try_get(3)?,
                    signature: row.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(db_error)
            .map(|mut all| {
                // Byte order, whatever the database's collation.
                all.sort();
                all
            })
    }
}

/// Logs a device-list change at a position from the writer's tracker.
async fn log_change(
    client: &impl GenericClient,
    user_id: &str,
    stream_pos: i64,
) -> StorageResult<()> {
    execute(
        client,
        "INSERT INTO device_list_changes (stream_pos, user_id) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
        &[&stream_pos, &user_id],
    )
    .await?;
    Ok(())
}
