//! [`PushStore`] on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{PostgresStorage, db_error, execute};
use crate::push::{NOTIFICATIONS_PAGE_MAX, Notification, PushStore, Pusher, UnreadAction};
use crate::{NewEvent, StorageResult};

/// Stores an event's push actions, and drops the rows that stop counting:
/// those of the event it redacts, and those of a member who leaves.
pub(super) async fn record_actions(
    client: &impl GenericClient,
    event: &NewEvent,
) -> StorageResult<()> {
    for action in &event.push_actions {
        execute(
            client,
            "INSERT INTO event_push_actions
             (user_id, room_nid, stream_pos, event_id, thread_id, notify, highlight, actions, ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &action.user_id,
                &event.room_nid,
                &event.stream_pos,
                &event.event_id,
                &action.thread_id,
                &action.notify,
                &action.highlight,
                &action.actions.to_string(),
                &event.origin_server_ts,
            ],
        )
        .await?;
    }
    if let Some(target) = &event.redacts {
        execute(
            client,
            "DELETE FROM event_push_actions WHERE room_nid = $1 AND event_id = $2",
            &[&event.room_nid, target],
        )
        .await?;
    }
    if let (Some(user_id), Some("leave" | "ban")) = (&event.state_key, event.membership.as_deref())
    {
        execute(
            client,
            "DELETE FROM event_push_actions WHERE user_id = $1 AND room_nid = $2",
            &[user_id, &event.room_nid],
        )
        .await?;
    }
    Ok(())
}

const NOTIFICATION_COLUMNS: &str = "a.room_nid, r.room_id, a.event_id, a.stream_pos, a.thread_id,
    a.notify, a.highlight, a.actions, a.ts";

fn notification_from_row(row: &Row) -> StorageResult<Notification> {
    let notification = (|| {
        let actions: String = row.try_get(7)?;
        Ok::<_, tokio_postgres::Error>(Notification {
            room_nid: row.try_get(0)?,
            room_id: row.try_get(1)?,
            event_id: row.try_get(2)?,
            stream_pos: row.try_get(3)?,
            thread_id: row.try_get(4)?,
            notify: row.try_get(5)?,
            highlight: row.try_get(6)?,
            actions: serde_json::from_str(&actions).unwrap_or_default(),
            ts: row.try_get(8)?,
        })
    })();
    notification.map_err(db_error)
}

const PUSHER_COLUMNS: &str = "user_id, device_id, app_id, pushkey, kind, app_display_name,
    device_display_name, profile_tag, lang, data, created_ms, last_stream_pos, failing_since_ms";

fn pusher_from_row(row: &Row) -> StorageResult<Pusher> {
    let pusher = (|| {
        let data: String = row.try_get(9)?;
        Ok::<_, tokio_postgres::Error>(Pusher {
            user_id: row.try_get(0)?,
            device_id: row.try_get(1)?,
            app_id: row.try_get(2)?,
            pushkey: row.try_get(3)?,
            kind: row.try_get(4)?,
            app_display_name: row.try_get(5)?,
            device_display_name: row.try_get(6)?,
            profile_tag: row.try_get(7)?,
            lang: row.try_get(8)?,
            data: serde_json::from_str(&data).unwrap_or_default(),
            created_ms: row.try_get(10)?,
            last_stream_pos: row.try_get(11)?,
            failing_since_ms: row.try_get(12)?,
        })
    })();
    pusher.map_err(db_error)
}

#[async_trait]
impl PushStore for PostgresStorage {
    async fn unread_actions(
        &self,
        user_id: &str,
        room_nid: i64,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<UnreadAction>> {
        let limit = i64::from(limit.min(NOTIFICATIONS_PAGE_MAX));
        let rows = self
            .query(
                "SELECT stream_pos, thread_id, highlight FROM event_push_actions
                 WHERE user_id = $1 AND room_nid = $2 AND stream_pos > $3 AND stream_pos <= $4
                   AND notify
                 ORDER BY stream_pos LIMIT $5",
                &[&user_id, &room_nid, &after, &upto, &limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UnreadAction {
                    stream_pos: row.try_get(0).map_err(db_error)?,
                    thread_id: row.try_get(1).map_err(db_error)?,
                    highlight: row.try_get(2).map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn notifications(
        &self,
        user_id: &str,
        before: Option<i64>,
        upto: i64,
        limit: u32,
        highlight_only: bool,
    ) -> StorageResult<Vec<Notification>> {
        let limit = i64::from(limit.min(NOTIFICATIONS_PAGE_MAX));
        let before = before.unwrap_or(i64::MAX);
        let rows = self
            .query(
                &format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM event_push_actions a
                     JOIN rooms r ON r.room_nid = a.room_nid
                     WHERE a.user_id = $1 AND a.stream_pos < $2 AND a.stream_pos <= $3
                       AND (a.highlight OR NOT $4)
                     ORDER BY a.stream_pos DESC LIMIT $5"
                ),
                &[&user_id, &before, &upto, &highlight_only, &limit],
            )
            .await?;
        rows.iter().map(notification_from_row).collect()
    }

    async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<Notification>> {
        let limit = i64::from(limit.min(NOTIFICATIONS_PAGE_MAX));
        let rows = self
            .query(
                &format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM event_push_actions a
                     JOIN rooms r ON r.room_nid = a.room_nid
                     WHERE a.user_id = $1 AND a.stream_pos > $2 AND a.stream_pos <= $3
                       AND a.notify
                     ORDER BY a.stream_pos LIMIT $4"
                ),
                &[&user_id, &after, &upto, &limit],
            )
            .await?;
        rows.iter().map(notification_from_row).collect()
    }

    async fn unread_notification_total(&self, user_id: &str) -> StorageResult<u64> {
        let rows = self
            .query(
                "SELECT count(*) FROM event_push_actions a
                 WHERE a.user_id = $1 AND a.notify AND a.stream_pos > COALESCE(
                     (SELECT max(e.stream_pos) FROM receipts c
                      JOIN event_locator l ON l.event_id = c.event_id
                      JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
                      WHERE c.room_nid = a.room_nid AND c.user_id = a.user_id
                        AND c.receipt_type IN ('m.read', 'm.read.private')
                        AND c.thread_id IN ('', 'main')),
                     -9223372036854775808)",
                &[&user_id],
            )
            .await?;
        let count: i64 = match rows.first() {
            Some(row) => row.try_get(0).map_err(db_error)?,
            None => 0,
        };
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn put_pusher(&self, p: &Pusher) -> StorageResult<()> {
        self.execute(
            &format!(
                "INSERT INTO pushers ({PUSHER_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET
                     device_id = EXCLUDED.device_id, kind = EXCLUDED.kind,
                     app_display_name = EXCLUDED.app_display_name,
                     device_display_name = EXCLUDED.device_display_name,
                     profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang,
                     data = EXCLUDED.data"
            ),
            &[
                &p.user_id,
                &p.device_id,
                &p.app_id,
                &p.pushkey,
                &p.kind,
                &p.app_display_name,
                &p.device_display_name,
                &p.profile_tag,
                &p.lang,
                &p.data.to_string(),
                &p.created_ms,
                &p.last_stream_pos,
                &p.failing_since_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> StorageResult<bool> {
        let n = self
            .execute(
                "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
                &[&user_id, &app_id, &pushkey],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_pushers_of_key(
        &self,
        app_id: &str,
        pushkey: &str,
        except_user: &str,
    ) -> StorageResult<Vec<String>> {
        let rows = self
            .query(
                "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3
                 RETURNING user_id",
                &[&app_id, &pushkey, &except_user],
            )
            .await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(db_error))
            .collect()
    }

    async fn delete_device_pushers(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StorageResult<Vec<(String, String)>> {
        let rows = self
            .query(
                "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2
                 RETURNING app_id, pushkey",
                &[&user_id, &device_id],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(db_error)?,
                    row.try_get(1).map_err(db_error)?,
                ))
            })
            .collect()
    }

    async fn pushers(&self, user_id: &str) -> StorageResult<Vec<Pusher>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1
                     ORDER BY app_id, pushkey"
                ),
                &[&user_id],
            )
            .await?;
        rows.iter().map(pusher_from_row).collect()
    }

    async fn all_pushers(&self) -> StorageResult<Vec<Pusher>> {
        let rows = self
            .query(
                &format!("SELECT {PUSHER_COLUMNS} FROM pushers ORDER BY user_id, app_id, pushkey"),
                &[],
            )
            .await?;
        rows.iter().map(pusher_from_row).collect()
    }

    async fn set_pusher_progress(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
        last_stream_pos: i64,
        failing_since_ms: Option<i64>,
    ) -> StorageResult<bool> {
        let n = self
            .execute(
                "UPDATE pushers SET last_stream_pos = $4, failing_since_ms = $5
                 WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
                &[
                    &user_id,
                    &app_id,
                    &pushkey,
                    &last_stream_pos,
                    &failing_since_ms,
                ],
            )
            .await?;
        Ok(n > 0)
    }
}
