//! [`DirectoryStore`] on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteStorage;
use crate::directory::PUBLIC_ROOMS_MAX;
use crate::{Direction, DirectoryStore, NewReport, Report, RoomRecord, StorageResult, StoredEvent};

/// Reports [`DirectoryStore::reports`] returns at most per call.
const REPORTS_PAGE_MAX: u32 = 1_000;

#[async_trait]
impl DirectoryStore for SqliteStorage {
    async fn set_room_public(&self, room_nid: i64, public: bool) -> StorageResult<()> {
        let visibility = if public { "public" } else { "private" };
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO room_directory (room_nid, visibility) VALUES (?1, ?2)
                 ON CONFLICT (room_nid) DO UPDATE SET visibility = excluded.visibility",
            )?
            .execute(params![room_nid, visibility])?;
            Ok(())
        })
        .await
    }

    async fn room_is_public(&self, room_nid: i64) -> StorageResult<bool> {
        self.read(move |conn| {
            let visibility: Option<String> = conn
                .prepare_cached("SELECT visibility FROM room_directory WHERE room_nid = ?1")?
                .query_row([room_nid], |row| row.get(0))
                .optional()?;
            Ok(visibility.as_deref() == Some("public"))
        })
        .await
    }

    async fn public_rooms(&self, limit: u32) -> StorageResult<Vec<RoomRecord>> {
        let limit = limit.min(PUBLIC_ROOMS_MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT r.room_nid, r.room_id, r.room_version, r.created_ms
                 FROM room_directory d JOIN rooms r ON r.room_nid = d.room_nid
                 WHERE d.visibility = 'public'
                 ORDER BY r.room_nid LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |row| {
                Ok(RoomRecord {
                    room_nid: row.get(0)?,
                    room_id: row.get(1)?,
                    room_version: row.get(2)?,
                    created_ms: row.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn create_report(&self, report: &NewReport) -> StorageResult<i64> {
        let report = report.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO reports (room_id, event_id, reporter, reason, score, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                report.room_id,
                report.event_id,
                report.reporter,
                report.reason,
                report.score,
                report.received_ms
            ])?;
            Ok(tx.last_insert_rowid())
        })
        .await
    }

    async fn reports(&self, after: i64, limit: u32) -> StorageResult<Vec<Report>> {
        let limit = limit.min(REPORTS_PAGE_MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT report_id, room_id, event_id, reporter, reason, score, received_ms
                 FROM reports WHERE report_id > ?1 ORDER BY report_id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |row| {
                Ok(Report {
                    report_id: row.get(0)?,
                    report: NewReport {
                        room_id: row.get(1)?,
                        event_id: row.get(2)?,
                        reporter: row.get(3)?,
                        reason: row.get(4)?,
                        score: row.get(5)?,
                        received_ms: row.get(6)?,
                    },
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn room_events_by_ts(
        &self,
        room_nid: i64,
        ts: i64,
        dir: Direction,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>> {
        self.events_by_ts(room_nid, ts, dir, upto, limit).await
    }
}
