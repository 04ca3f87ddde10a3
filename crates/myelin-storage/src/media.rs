//! Media metadata: one row per media id (`mxc://<server>/<media id>`) and one
//! per stored thumbnail. The bytes are blobs of a media backend
//! (`myelin-media`), named by their SHA-256, so identical content is stored
//! once however many ids point at it.
//!
//! An id is created either complete (`POST /upload`) or pending
//! (`POST /create`, asynchronous upload): a pending id has no content yet,
//! may be completed once by its creator before `expires_ms`, and is then
//! like any other.

use async_trait::async_trait;

use crate::StorageResult;

/// A media id and what is known of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRecord {
    pub server_name: String,
    pub media_id: String,
    /// The local user who created the id (`None` for remote media).
    pub uploader: Option<String>,
    pub created_ms: i64,
    /// The content, once uploaded (`None` while pending).
    pub content: Option<MediaContent>,
    /// A pending id may be uploaded to until then.
    pub expires_ms: Option<i64>,
    /// Quarantined media is never served.
    pub quarantined: bool,
}

/// The content of an uploaded media id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaContent {
    pub content_type: String,
    pub filename: Option<String>,
    pub size: i64,
    /// Lowercase hex SHA-256 of the bytes: the blob's name.
    pub sha256: String,
    pub uploaded_ms: i64,
}

/// A thumbnail stored for a media id, keyed by the request it answers: the
/// box asked for (the image may be smaller, never larger than its source),
/// the method, and whether an animation was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaThumbnail {
    pub width: u32,
    pub height: u32,
    /// `scale` or `crop`.
    pub method: String,
    pub animated: bool,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Records a new media id; [`crate::StorageError::Conflict`] if it
    /// exists.
    async fn create_media(&self, record: &MediaRecord) -> StorageResult<()>;
    async fn media(&self, server_name: &str, media_id: &str) -> StorageResult<Option<MediaRecord>>;
    /// Gives a pending id its content: `false` (nothing written) unless the
    /// id exists, is pending, was created by `uploader` and has not expired
    /// at `now_ms`.
    async fn complete_media(
        &self,
        server_name: &str,
        media_id: &str,
        uploader: &str,
        content: &MediaContent,
        now_ms: i64,
    ) -> StorageResult<bool>;
    /// How many of the user's pending ids have not expired at `now_ms`.
    async fn pending_media_count(&self, uploader: &str, now_ms: i64) -> StorageResult<i64>;
    /// Stores a thumbnail of a media id; one already stored for the same
    /// size, method and animation is kept.
    async fn put_media_thumbnail(
        &self,
        server_name: &str,
        media_id: &str,
        thumbnail: &MediaThumbnail,
    ) -> StorageResult<()>;
    /// The stored thumbnails of a media id, smallest first.
    async fn media_thumbnails(
        &self,
        server_name: &str,
        media_id: &str,
    ) -> StorageResult<Vec<MediaThumbnail>>;
    /// Blob names referenced by media or thumbnails, sorted, after `after`,
    /// at most `limit` (for moving media between backends).
    async fn media_blobs(&self, after: Option<&str>, limit: u32) -> StorageResult<Vec<String>>;
}
