//! [`MediaStore`] on PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PostgresStorage, db_error, execute, query, query_one, query_opt};
use crate::StorageResult;
use crate::media::{MediaContent, MediaRecord, MediaStore, MediaThumbnail};

const SELECT_MEDIA: &str = "SELECT server_name, media_id, uploader, created_ms, expires_ms,
        content_type, filename, size, sha256, uploaded_ms, quarantined
     FROM media";

fn media_from_row(row: &Row) -> StorageResult<MediaRecord> {
    let get = |i| -> StorageResult<Option<i64>> { row.try_get(i).map_err(db_error) };
    let sha256: Option<String> = row.try_get(8).map_err(db_error)?;
    let content = match sha256 {
        Some(sha256) => Some(MediaContent {
            content_type: row.try_get(5).map_err(db_error)?,
            filename: row.try_get(6).map_err(db_error)?,
            size: get(7)?.unwrap_or_default(),
            sha256,
            uploaded_ms: get(9)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(MediaRecord {
        server_name: row.try_get(0).map_err(db_error)?,
        media_id: row.try_get(1).map_err(db_error)?,
        uploader: row.try_get(2).map_err(db_error)?,
        created_ms: row.try_get(3).map_err(db_error)?,
        expires_ms: get(4)?,
        content,
        quarantined: row.try_get(10).map_err(db_error)?,
    })
}

#[async_trait]
impl MediaStore for PostgresStorage {
    async fn create_media(&self, r: &MediaRecord) -> StorageResult<()> {
        let client = self.client().await?;
        let c = r.content.as_ref();
        execute(
            &client,
            "INSERT INTO media (server_name, media_id, uploader, created_ms, expires_ms,
                content_type, filename, size, sha256, uploaded_ms, quarantined)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &r.server_name,
                &r.media_id,
                &r.uploader,
                &r.created_ms,
                &r.expires_ms,
                &c.map(|c| &c.content_type),
                &c.and_then(|c| c.filename.as_ref()),
                &c.map(|c| c.size),
                &c.map(|c| &c.sha256),
                &c.map(|c| c.uploaded_ms),
                &r.quarantined,
            ],
        )
        .await?;
        Ok(())
    }

    async fn media(&self, server_name: &str, media_id: &str) -> StorageResult<Option<MediaRecord>> {
        let client = self.client().await?;
        query_opt(
            &client,
            &format!("{SELECT_MEDIA} WHERE server_name = $1 AND media_id = $2"),
            &[&server_name, &media_id],
        )
        .await?
        .map(|row| media_from_row(&row))
        .transpose()
    }

    async fn complete_media(
        &self,
        server_name: &str,
        media_id: &str,
        uploader: &str,
        c: &MediaContent,
        now_ms: i64,
    ) -> StorageResult<bool> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE media SET content_type = $4, filename = $5, size = $6, sha256 = $7,
                uploaded_ms = $8, expires_ms = NULL
             WHERE server_name = $1 AND media_id = $2 AND uploader = $3
               AND uploaded_ms IS NULL AND expires_ms > $9",
            &[
                &server_name,
                &media_id,
                &uploader,
                &c.content_type,
                &c.filename,
                &c.size,
                &c.sha256,
                &c.uploaded_ms,
                &now_ms,
            ],
        )
        .await?;
        Ok(changed == 1)
    }

    async fn pending_media_count(&self, uploader: &str, now_ms: i64) -> StorageResult<i64> {
        let client = self.client().await?;
        let row = query_one(
            &client,
            "SELECT COUNT(*) FROM media
             WHERE uploader = $1 AND uploaded_ms IS NULL AND expires_ms > $2",
            &[&uploader, &now_ms],
        )
        .await?;
        row.try_get(0).map_err(db_error)
    }

    async fn put_media_thumbnail(
        &self,
        server_name: &str,
        media_id: &str,
        t: &MediaThumbnail,
    ) -> StorageResult<()> {
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO media_thumbnails (server_name, media_id, width, height, method,
                animated, content_type, size, sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT DO NOTHING",
            &[
                &server_name,
                &media_id,
                &i64::from(t.width),
                &i64::from(t.height),
                &t.method,
                &t.animated,
                &t.content_type,
                &t.size,
                &t.sha256,
            ],
        )
        .await?;
        Ok(())
    }

    async fn media_thumbnails(
        &self,
        server_name: &str,
        media_id: &str,
    ) -> StorageResult<Vec<MediaThumbnail>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT width, height, method, animated, content_type, size, sha256
             FROM media_thumbnails WHERE server_name = $1 AND media_id = $2
             ORDER BY width * height, method, animated",
            &[&server_name, &media_id],
        )
        .await?;
        rows.iter()
            .map(|row| {
                let side = |i| -> StorageResult<u32> {
                    let v: i64 = row.try_get(i).map_err(db_error)?;
                    Ok(u32::try_from(v).unwrap_or(u32::MAX))
                };
                Ok(MediaThumbnail {
                    width: side(0)?,
                    height: side(1)?,
                    method: row.try_get(2).map_err(db_error)?,
                    animated: row.try_get(3).map_err(db_error)?,
                    content_type: row.try_get(4).map_err(db_error)?,
                    size: row.try_get(5).map_err(db_error)?,
                    sha256: row.try_get(6).map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn media_blobs(&self, after: Option<&str>, limit: u32) -> StorageResult<Vec<String>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT sha256 FROM media WHERE sha256 > $1
             UNION SELECT sha256 FROM media_thumbnails WHERE sha256 > $1
             ORDER BY 1 LIMIT $2",
            &[&after.unwrap_or(""), &i64::from(limit)],
        )
        .await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(db_error))
            .collect()
    }
}
