//! [`DirectoryStore`] on PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PostgresStorage, db_error};
use crate::directory::PUBLIC_ROOMS_MAX;
use crate::{Direction, DirectoryStore, NewReport, Report, RoomRecord, StorageResult, StoredEvent};

/// Reports [`DirectoryStore::reports`] returns at most per call.
const REPORTS_PAGE_MAX: u32 = 1_000;

fn report_from_row(row: &Row) -> StorageResult<Report> {
    let report = (|| {
        Ok::<_, tokio_postgres::Error>(Report {
            report_id: row.try_get(0)?,
            report: NewReport {
                room_id: row.try_get(1)?,
                event_id: row.try_get(2)?,
                reporter: row.try_get(3)?,
                reason: row.try_get(4)?,
                score: row.try_get(5)?,
                received_ms: row.try_get(6)?,
            },
        })
    })();
    report.map_err(db_error)
}

#[async_trait]
impl DirectoryStore for PostgresStorage {
    async fn set_room_public(&self, room_nid: i64, public: bool) -> StorageResult<()> {
        let visibility = if public { "public" } else { "private" };
        self.execute(
            "INSERT INTO room_directory (room_nid, visibility) VALUES ($1, $2)
             ON CONFLICT (room_nid) DO UPDATE SET visibility = EXCLUDED.visibility",
            &[&room_nid, &visibility],
        )
        .await?;
        Ok(())
    }

    async fn room_is_public(&self, room_nid: i64) -> StorageResult<bool> {
        let row = self
            .query_opt(
                "SELECT visibility FROM room_directory WHERE room_nid = $1",
                &[&room_nid],
            )
            .await?;
        let visibility: Option<String> = row
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(db_error)?;
        Ok(visibility.as_deref() == Some("public"))
    }

    async fn public_rooms(&self, limit: u32) -> StorageResult<Vec<RoomRecord>> {
        let limit = i64::from(limit.min(PUBLIC_ROOMS_MAX));
        let rows = self
            .query(
                "SELECT r.room_nid, r.room_id, r.room_version, r.created_ms
                 FROM room_directory d JOIN rooms r ON r.room_nid = d.room_nid
                 WHERE d.visibility = 'public'
                 ORDER BY r.room_nid LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter().map(super::rooms::room_from_row).collect()
    }

    async fn create_report(&self, report: &NewReport) -> StorageResult<i64> {
        let rows = self
            .query(
                "INSERT INTO reports (room_id, event_id, reporter, reason, score, received_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING report_id",
                &[
                    &report.room_id,
                    &report.event_id,
                    &report.reporter,
                    &report.reason,
                    &report.score,
                    &report.received_ms,
                ],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| crate::StorageError::Backend("INSERT returned no row".to_owned()))?;
        row.try_get(0).map_err(db_error)
    }

    async fn reports(&self, after: i64, limit: u32) -> StorageResult<Vec<Report>> {
        let limit = i64::from(limit.min(REPORTS_PAGE_MAX));
        let rows = self
            .query(
                "SELECT report_id, room_id, event_id, reporter, reason, score, received_ms
                 FROM reports WHERE report_id > $1 ORDER BY report_id LIMIT $2",
                &[&after, &limit],
            )
            .await?;
        rows.iter().map(report_from_row).collect()
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
