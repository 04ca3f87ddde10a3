//! [`ToDeviceStore`] on PostgreSQL.

use async_trait::async_trait;

use super::{PostgresStorage, db_error, execute};
use crate::StorageResult;
use crate::to_device::{TO_DEVICE_PAGE_MAX, ToDeviceMessage, ToDeviceRecipient, ToDeviceStore};

#[async_trait]
impl ToDeviceStore for PostgresStorage {
    async fn put_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        kind: &str,
        recipients: &[ToDeviceRecipient],
        stream_pos: i64,
    ) -> StorageResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let fresh = execute(
            &tx,
            "INSERT INTO to_device_txns (user_id, device_id, txn_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&sender, &sender_device, &txn_id],
        )
        .await?;
        if fresh == 0 {
            return Ok(false);
        }
        for (user_id, device_id, content) in recipients {
            execute(
                &tx,
                "INSERT INTO to_device_inbox (user_id, device_id, stream_pos, sender, kind, content)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    user_id,
                    device_id,
                    &stream_pos,
                    &sender,
                    &kind,
                    &content.to_string(),
                ],
            )
            .await?;
        }
        execute(
            &tx,
            "UPDATE to_device_position SET position = GREATEST(position, $1)",
            &[&stream_pos],
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<ToDeviceMessage>> {
        let limit = i64::from(limit.min(TO_DEVICE_PAGE_MAX));
        let rows = self
            .query(
                "SELECT stream_pos, sender, kind, content FROM to_device_inbox
                 WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4
                 ORDER BY stream_pos LIMIT $5",
                &[&user_id, &device_id, &after, &upto, &limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let content: String = row.try_get(3).map_err(db_error)?;
                Ok(ToDeviceMessage {
                    stream_pos: row.try_get(0).map_err(db_error)?,
                    sender: row.try_get(1).map_err(db_error)?,
                    kind: row.try_get(2).map_err(db_error)?,
                    content: serde_json::from_str(&content).unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn delete_to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
    ) -> StorageResult<u64> {
        self.execute(
            "DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3",
            &[&user_id, &device_id, &upto],
        )
        .await
    }
}
