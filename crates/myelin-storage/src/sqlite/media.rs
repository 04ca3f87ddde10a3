//! [`MediaStore`] on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStorage;
use crate::StorageResult;
use crate::media::{MediaContent, MediaRecord, MediaStore, MediaThumbnail};

const SELECT_MEDIA: &str = "SELECT server_name, media_id, uploader, created_ms, expires_ms,
        content_type, filename, size, sha256, uploaded_ms, quarantined
     FROM media";

fn media_from_row(row: &Row<'_>) -> rusqlite::Result<MediaRecord> {
    let sha256: Option<String> = row.get(8)?;
    let content = match sha256 {
        Some(sha256) => Some(MediaContent {
            content_type: row.get(5)?,
            filename: row.get(6)?,
            size: row.get(7)?,
            sha256,
            uploaded_ms: row.get(9)?,
        }),
        None => None,
    };
    Ok(MediaRecord {
        server_name: row.get(0)?,
        media_id: row.get(1)?,
        uploader: row.get(2)?,
        created_ms: row.get(3)?,
        expires_ms: row.get(4)?,
        content,
        quarantined: row.get(10)?,
    })
}

#[async_trait]
impl MediaStore for SqliteStorage {
    async fn create_media(&self, record: &MediaRecord) -> StorageResult<()> {
        let r = record.clone();
        self.write(move |tx| {
            let c = r.content.as_ref();
            tx.prepare_cached(
                "INSERT INTO media (server_name, media_id, uploader, created_ms, expires_ms,
                    content_type, filename, size, sha256, uploaded_ms, quarantined)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                r.server_name,
                r.media_id,
                r.uploader,
                r.created_ms,
                r.expires_ms,
                c.map(|c| &c.content_type),
                c.and_then(|c| c.filename.as_ref()),
                c.map(|c| c.size),
                c.map(|c| &c.sha256),
                c.map(|c| c.uploaded_ms),
                r.quarantined,
            ])?;
            Ok(())
        })
        .await
    }

    async fn media(&self, server_name: &str, media_id: &str) -> StorageResult<Option<MediaRecord>> {
        let (server_name, media_id) = (server_name.to_owned(), media_id.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "{SELECT_MEDIA} WHERE server_name = ?1 AND media_id = ?2"
            ))?
            .query_row(params![server_name, media_id], media_from_row)
            .optional()
        })
        .await
    }

    async fn complete_media(
        &self,
        server_name: &str,
        media_id: &str,
        uploader: &str,
        content: &MediaContent,
        now_ms: i64,
    ) -> StorageResult<bool> {
        let (server_name, media_id, uploader, c) = (
            server_name.to_owned(),
            media_id.to_owned(),
            uploader.to_owned(),
            content.clone(),
        );
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE media SET content_type = ?4, filename = ?5, size = ?6, sha256 = ?7,
                        uploaded_ms = ?8, expires_ms = NULL
                     WHERE server_name = ?1 AND media_id = ?2 AND uploader = ?3
                       AND uploaded_ms IS NULL AND expires_ms > ?9",
                )?
                .execute(params![
                    server_name,
                    media_id,
                    uploader,
                    c.content_type,
                    c.filename,
                    c.size,
                    c.sha256,
                    c.uploaded_ms,
                    now_ms
                ])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn pending_media_count(&self, uploader: &str, now_ms: i64) -> StorageResult<i64> {
        let uploader = uploader.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT COUNT(*) FROM media
                 WHERE uploader = ?1 AND uploaded_ms IS NULL AND expires_ms > ?2",
            )?
            .query_row(params![uploader, now_ms], |row| row.get(0))
        })
        .await
    }

    async fn put_media_thumbnail(
        &self,
        server_name: &str,
        media_id: &str,
        thumbnail: &MediaThumbnail,
    ) -> StorageResult<()> {
        let (server_name, media_id, t) = (
            server_name.to_owned(),
            media_id.to_owned(),
            thumbnail.clone(),
        );
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO media_thumbnails (server_name, media_id, width, height, method,
                    animated, content_type, size, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                server_name,
                media_id,
                t.width,
                t.height,
                t.method,
                t.animated,
                t.content_type,
                t.size,
                t.sha256
            ])?;
            Ok(())
        })
        .await
    }

    async fn media_thumbnails(
        &self,
        server_name: &str,
        media_id: &str,
    ) -> StorageResult<Vec<MediaThumbnail>> {
        let (server_name, media_id) = (server_name.to_owned(), media_id.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT width, height, method, animated, content_type, size, sha256
                 FROM media_thumbnails WHERE server_name = ?1 AND media_id = ?2
                 ORDER BY width * height, method, animated",
            )?;
            let rows = stmt.query_map(params![server_name, media_id], |row| {
                Ok(MediaThumbnail {
                    width: row.get(0)?,
                    height: row.get(1)?,
                    method: row.get(2)?,
                    animated: row.get(3)?,
                    content_type: row.get(4)?,
                    size: row.get(5)?,
                    sha256: row.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn media_blobs(&self, after: Option<&str>, limit: u32) -> StorageResult<Vec<String>> {
        let after = after.unwrap_or("").to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT sha256 FROM media WHERE sha256 > ?1
                 UNION SELECT sha256 FROM media_thumbnails WHERE sha256 > ?1
                 ORDER BY 1 LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }
}
