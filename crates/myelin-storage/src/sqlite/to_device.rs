//! [`ToDeviceStore`] on SQLite.

use async_trait::async_trait;
use rusqlite::params;

use super::SqliteStorage;
use crate::StorageResult;
use crate::to_device::{TO_DEVICE_PAGE_MAX, ToDeviceMessage, ToDeviceRecipient, ToDeviceStore};

#[async_trait]
impl ToDeviceStore for SqliteStorage {
    async fn put_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        kind: &str,
        recipients: &[ToDeviceRecipient],
        stream_pos: i64,
    ) -> StorageResult<bool> {
        let (sender, sender_device, txn_id, kind) = (
            sender.to_owned(),
            sender_device.to_owned(),
            txn_id.to_owned(),
            kind.to_owned(),
        );
        let recipients = recipients.to_vec();
        self.write(move |tx| {
            let fresh = tx
                .prepare_cached(
                    "INSERT INTO to_device_txns (user_id, device_id, txn_id) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![sender, sender_device, txn_id])?;
            if fresh == 0 {
                return Ok(false);
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO to_device_inbox (user_id, device_id, stream_pos, sender, kind, content)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (user_id, device_id, content) in &recipients {
                insert.execute(params![
                    user_id,
                    device_id,
                    stream_pos,
                    sender,
                    kind,
                    content.to_string()
                ])?;
            }
            tx.prepare_cached(
                "UPDATE counters SET position = MAX(position, ?1) WHERE name = 'to_device_stream_pos'",
            )?
            .execute([stream_pos])?;
            Ok(true)
        })
        .await
    }

    async fn to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<ToDeviceMessage>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let limit = limit.min(TO_DEVICE_PAGE_MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT stream_pos, sender, kind, content FROM to_device_inbox
                 WHERE user_id = ?1 AND device_id = ?2 AND stream_pos > ?3 AND stream_pos <= ?4
                 ORDER BY stream_pos LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![user_id, device_id, after, upto, limit], |row| {
                let content: String = row.get(3)?;
                Ok(ToDeviceMessage {
                    stream_pos: row.get(0)?,
                    sender: row.get(1)?,
                    kind: row.get(2)?,
                    content: serde_json::from_str(&content).unwrap_or_default(),
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn delete_to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
    ) -> StorageResult<u64> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "DELETE FROM to_device_inbox
                     WHERE user_id = ?1 AND device_id = ?2 AND stream_pos <= ?3",
                )?
                .execute(params![user_id, device_id, upto])?;
            Ok(n as u64)
        })
        .await
    }
}
