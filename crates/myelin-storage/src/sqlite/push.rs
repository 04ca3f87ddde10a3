//! [`PushStore`] on SQLite.

use async_trait::async_trait;
use rusqlite::{Transaction, params};

use super::SqliteStorage;
use crate::push::{NOTIFICATIONS_PAGE_MAX, Notification, PushStore, Pusher, UnreadAction};
use crate::{NewEvent, StorageResult};

/// Stores an event's push actions, and drops the rows that stop counting:
/// those of the event it redacts, and those of a member who leaves.
pub(super) fn record_actions(tx: &Transaction<'_>, event: &NewEvent) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO event_push_actions
         (user_id, room_nid, stream_pos, event_id, thread_id, notify, highlight, actions, ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for action in &event.push_actions {
        insert.execute(params![
            action.user_id,
            event.room_nid,
            event.stream_pos,
            event.event_id,
            action.thread_id,
            action.notify,
            action.highlight,
            action.actions.to_string(),
            event.origin_server_ts
        ])?;
    }
    if let Some(target) = &event.redacts {
        tx.prepare_cached("DELETE FROM event_push_actions WHERE room_nid = ?1 AND event_id = ?2")?
            .execute(params![event.room_nid, target])?;
    }
    if let (Some(user_id), Some("leave" | "ban")) = (&event.state_key, event.membership.as_deref())
    {
        tx.prepare_cached("DELETE FROM event_push_actions WHERE user_id = ?1 AND room_nid = ?2")?
            .execute(params![user_id, event.room_nid])?;
    }
    Ok(())
}

const NOTIFICATION_COLUMNS: &str = "a.room_nid, r.room_id, a.event_id, a.stream_pos, a.thread_id,
    a.notify, a.highlight, a.actions, a.ts";

fn notification_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    let actions: String = row.get(7)?;
    Ok(Notification {
        room_nid: row.get(0)?,
        room_id: row.get(1)?,
        event_id: row.get(2)?,
        stream_pos: row.get(3)?,
        thread_id: row.get(4)?,
        notify: row.get(5)?,
        highlight: row.get(6)?,
        actions: serde_json::from_str(&actions).unwrap_or_default(),
        ts: row.get(8)?,
    })
}

const PUSHER_COLUMNS: &str = "user_id, device_id, app_id, pushkey, kind, app_display_name,
    device_display_name, profile_tag, lang, data, created_ms, last_stream_pos, failing_since_ms";

fn pusher_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Pusher> {
    let data: String = row.get(9)?;
    Ok(Pusher {
        user_id: row.get(0)?,
        device_id: row.get(1)?,
        app_id: row.get(2)?,
        pushkey: row.get(3)?,
        kind: row.get(4)?,
        app_display_name: row.get(5)?,
        device_display_name: row.get(6)?,
        profile_tag: row.get(7)?,
        lang: row.get(8)?,
        data: serde_json::from_str(&data).unwrap_or_default(),
        created_ms: row.get(10)?,
        last_stream_pos: row.get(11)?,
        failing_since_ms: row.get(12)?,
    })
}

#[async_trait]
impl PushStore for SqliteStorage {
    async fn unread_actions(
        &self,
        user_id: &str,
        room_nid: i64,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<UnreadAction>> {
        let user_id = user_id.to_owned();
        let limit = limit.min(NOTIFICATIONS_PAGE_MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT stream_pos, thread_id, highlight FROM event_push_actions
                 WHERE user_id = ?1 AND room_nid = ?2 AND stream_pos > ?3 AND stream_pos <= ?4
                   AND notify
                 ORDER BY stream_pos LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![user_id, room_nid, after, upto, limit], |row| {
                Ok(UnreadAction {
                    stream_pos: row.get(0)?,
                    thread_id: row.get(1)?,
                    highlight: row.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn notifications(
        &self,
        user_id: &str,
        before: Option<i64>,
        upto: i64,
        limit: u32,
        highlight_only: bool,
    ) -> StorageResult<Vec<Notification>> {
        let user_id = user_id.to_owned();
        let limit = limit.min(NOTIFICATIONS_PAGE_MAX);
        let before = before.unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM event_push_actions a
                 JOIN rooms r ON r.room_nid = a.room_nid
                 WHERE a.user_id = ?1 AND a.stream_pos < ?2 AND a.stream_pos <= ?3
                   AND (a.highlight OR NOT ?4)
                 ORDER BY a.stream_pos DESC LIMIT ?5"
            ))?;
            let rows = stmt.query_map(
                params![user_id, before, upto, highlight_only, limit],
                notification_from_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<Notification>> {
        let user_id = user_id.to_owned();
        let limit = limit.min(NOTIFICATIONS_PAGE_MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM event_push_actions a
                 JOIN rooms r ON r.room_nid = a.room_nid
                 WHERE a.user_id = ?1 AND a.stream_pos > ?2 AND a.stream_pos <= ?3 AND a.notify
                 ORDER BY a.stream_pos LIMIT ?4"
            ))?;
            let rows =
                stmt.query_map(params![user_id, after, upto, limit], notification_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn unread_notification_total(&self, user_id: &str) -> StorageResult<u64> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let count: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM event_push_actions a
                     WHERE a.user_id = ?1 AND a.notify AND a.stream_pos > COALESCE(
                         (SELECT max(e.stream_pos) FROM receipts c
                          JOIN event_locator l ON l.event_id = c.event_id
                          JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
                          WHERE c.room_nid = a.room_nid AND c.user_id = a.user_id
                            AND c.receipt_type IN ('m.read', 'm.read.private')
                            AND c.thread_id IN ('', 'main')),
                         -9223372036854775808)",
                )?
                .query_row([user_id], |row| row.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn put_pusher(&self, pusher: &Pusher) -> StorageResult<()> {
        let p = pusher.clone();
        self.write(move |tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO pushers ({PUSHER_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET
                     device_id = excluded.device_id, kind = excluded.kind,
                     app_display_name = excluded.app_display_name,
                     device_display_name = excluded.device_display_name,
                     profile_tag = excluded.profile_tag, lang = excluded.lang,
                     data = excluded.data"
            ))?
            .execute(params![
                p.user_id,
                p.device_id,
                p.app_id,
                p.pushkey,
                p.kind,
                p.app_display_name,
                p.device_display_name,
                p.profile_tag,
                p.lang,
                p.data.to_string(),
                p.created_ms,
                p.last_stream_pos,
                p.failing_since_ms
            ])?;
            Ok(())
        })
        .await
    }

    async fn delete_pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> StorageResult<bool> {
        let (user_id, app_id, pushkey) =
            (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "DELETE FROM pushers WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
                )?
                .execute(params![user_id, app_id, pushkey])?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_pushers_of_key(
        &self,
        app_id: &str,
        pushkey: &str,
        except_user: &str,
    ) -> StorageResult<Vec<String>> {
        let (app_id, pushkey, except_user) = (
            app_id.to_owned(),
            pushkey.to_owned(),
            except_user.to_owned(),
        );
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM pushers WHERE app_id = ?1 AND pushkey = ?2 AND user_id <> ?3
                 RETURNING user_id",
            )?;
            let rows = stmt.query_map(params![app_id, pushkey, except_user], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn delete_device_pushers(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StorageResult<Vec<(String, String)>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM pushers WHERE user_id = ?1 AND device_id = ?2
                 RETURNING app_id, pushkey",
            )?;
            let rows = stmt.query_map(params![user_id, device_id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn pushers(&self, user_id: &str) -> StorageResult<Vec<Pusher>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = ?1
                 ORDER BY app_id, pushkey"
            ))?;
            let rows = stmt.query_map([user_id], pusher_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn all_pushers(&self) -> StorageResult<Vec<Pusher>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PUSHER_COLUMNS} FROM pushers ORDER BY user_id, app_id, pushkey"
            ))?;
            let rows = stmt.query_map([], pusher_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn set_pusher_progress(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
        last_stream_pos: i64,
        failing_since_ms: Option<i64>,
    ) -> StorageResult<bool> {
        let (user_id, app_id, pushkey) =
            (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE pushers SET last_stream_pos = ?4, failing_since_ms = ?5
                     WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
                )?
                .execute(params![
                    user_id,
                    app_id,
                    pushkey,
                    last_stream_pos,
                    failing_since_ms
                ])?;
            Ok(n > 0)
        })
        .await
    }
}
