//! The media repository: what the HTTP endpoints ask of media, over a blob
//! backend and the metadata store.
//!
//! - An upload streams the request body into a temporary file while hashing
//!   it (never the whole body in memory), hands the file to the backend as
//!   the blob named by its SHA-256, then records the id. Identical content
//!   is stored once.
//! - `create` reserves an id for an asynchronous upload; a download of it
//!   waits (up to the client's timeout) for the upload, woken by it.
//! - Thumbnails are made once and kept: the usual sizes in the background
//!   after an upload, other sizes on the first request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt as _;
use myelin_core::config::MediaConfig;
use myelin_core::secrets::random_alphanumeric;
use myelin_core::time::now_ms;
use myelin_storage::{DynStorage, MediaContent, MediaRecord, MediaThumbnail, StorageError};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, Semaphore};

use crate::backend::{Blob, ByteRange, MediaBackend, MediaError, SpoolError, hex, spool};
use crate::thumbnail::{self, Method, ThumbnailError, ThumbnailLimits};

/// Length of a new media id (letters and digits).
const MEDIA_ID_LENGTH: usize = 24;
/// Longest wait a download of a pending id may ask for.
pub const DOWNLOAD_WAIT_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("media not found")]
    NotFound,
    #[error("the media has not been uploaded yet")]
    NotYetUploaded,
    #[error("the upload is larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("media already uploaded")]
    CannotOverwrite,
    #[error("too many pending uploads")]
    TooManyPending,
    #[error("{0}")]
    BadRange(MediaError),
    #[error("cannot thumbnail: {0}")]
    Thumbnail(ThumbnailError),
    #[error("reading the upload failed: {0}")]
    Receive(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Media(MediaError),
    #[error("media I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<MediaError> for RepoError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::RangeNotSatisfiable { .. } => RepoError::BadRange(e),
            e => RepoError::Media(e),
        }
    }
}

pub type RepoResult<T> = Result<T, RepoError>;

/// A media id's content and its bytes, being read.
pub struct Download {
    pub content: MediaContent,
    pub blob: Blob,
}

/// A thumbnail and its bytes, being read.
pub struct ThumbnailDownload {
    pub thumbnail: MediaThumbnail,
    pub blob: Blob,
}

pub struct MediaRepo {
    storage: DynStorage,
    backend: Arc<dyn MediaBackend>,
    server_name: String,
    config: MediaConfig,
    /// Where uploads are written before they become blobs.
    tmp_dir: PathBuf,
    /// Downloads waiting for the upload of a pending id, by media id.
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
    /// Thumbnail jobs running at once (each may hold a decoded image of up
    /// to `max_image_pixels`), one per core.
    thumbnail_jobs: Semaphore,
}

impl MediaRepo {
    /// `tmp_dir` is created (and emptied of files an earlier run left).
    pub fn new(
        storage: DynStorage,
        backend: Arc<dyn MediaBackend>,
        server_name: String,
        config: MediaConfig,
        tmp_dir: PathBuf,
    ) -> std::io::Result<Self> {
        let _ = std::fs::remove_dir_all(&tmp_dir);
        std::fs::create_dir_all(&tmp_dir)?;
        Ok(Self {
            storage,
            backend,
            server_name,
            config,
            tmp_dir,
            waiting: Mutex::new(HashMap::new()),
            thumbnail_jobs: Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        })
    }

    pub fn backend(&self) -> &Arc<dyn MediaBackend> {
        &self.backend
    }

    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Stores an upload under a new id of the caller's; returns the id.
    pub async fn upload<S, E>(
        self: &Arc<Self>,
        uploader: &str,
        content_type: &str,
        filename: Option<String>,
        body: S,
    ) -> RepoResult<String>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let content = self.receive(content_type, filename, body).await?;
        let media_id = random_alphanumeric(MEDIA_ID_LENGTH);
        let record = MediaRecord {
            server_name: self.server_name.clone(),
            media_id: media_id.clone(),
            uploader: Some(uploader.to_owned()),
            created_ms: content.uploaded_ms,
            content: Some(content.clone()),
            expires_ms: None,
            quarantined: false,
        };
        self.storage.create_media(&record).await?;
        self.pregenerate_thumbnails(&media_id, &content);
        Ok(media_id)
    }

    /// Reserves an id for an asynchronous upload by `uploader`; returns the
    /// id and when it stops accepting the upload.
    pub async fn create(&self, uploader: &str) -> RepoResult<(String, i64)> {
        let now = now_ms();
        let pending = self.storage.pending_media_count(uploader, now).await?;
        if pending >= i64::from(self.config.max_pending_uploads) {
            return Err(RepoError::TooManyPending);
        }
        let expires = now.saturating_add(
            i64::try_from(self.config.pending_upload_lifetime_ms).unwrap_or(i64::MAX),
        );
        let media_id = random_alphanumeric(MEDIA_ID_LENGTH);
        self.storage
            .create_media(&MediaRecord {
                server_name: self.server_name.clone(),
                media_id: media_id.clone(),
                uploader: Some(uploader.to_owned()),
                created_ms: now,
                content: None,
                expires_ms: Some(expires),
                quarantined: false,
            })
            .await?;
        Ok((media_id, expires))
    }

    /// Uploads the content of an id reserved by [`Self::create`]: only by
    /// its creator, once, before it expires.
    pub async fn upload_to<S, E>(
        self: &Arc<Self>,
        uploader: &str,
        server_name: &str,
        media_id: &str,
        content_type: &str,
        filename: Option<String>,
        body: S,
    ) -> RepoResult<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let record = self
            .storage
            .media(server_name, media_id)
            .await?
            .ok_or(RepoError::NotFound)?;
        if record.uploader.as_deref() != Some(uploader) {
            return Err(RepoError::Forbidden(
                "Only the creator of a media id can upload to it",
            ));
        }
        if record.content.is_some() {
            return Err(RepoError::CannotOverwrite);
        }
        if record.expires_ms.is_some_and(|at| at <= now_ms()) {
            return Err(RepoError::NotFound);
        }
        let content = self.receive(content_type, filename, body).await?;
        let now = now_ms();
        if !self
            .storage
            .complete_media(server_name, media_id, uploader, &content, now)
            .await?
        {
            // Another upload won the race (or the id expired meanwhile); the
            // blob stays, as content-addressed blobs may be shared.
            return Err(RepoError::CannotOverwrite);
        }
        if let Some(waiting) = self.waiting.lock().expect("not poisoned").remove(media_id) {
            waiting.notify_waiters();
        }
        self.pregenerate_thumbnails(media_id, &content);
        Ok(())
    }

    /// The content of a media id, waiting up to `wait` for a pending one.
    pub async fn content(
        &self,
        server_name: &str,
        media_id: &str,
        wait: Duration,
    ) -> RepoResult<MediaContent> {
        let deadline = tokio::time::Instant::now() + wait.min(DOWNLOAD_WAIT_MAX);
        loop {
            // Registered (`enable`) before the lookup, so an upload
            // finishing in between still wakes this wait.
            let notify = self
                .waiting
                .lock()
                .expect("not poisoned")
                .entry(media_id.to_owned())
                .or_default()
                .clone();
            let mut notified = std::pin::pin!(notify.notified());
            notified.as_mut().enable();
            let record = self.storage.media(server_name, media_id).await?;
            let Some(record) = record.filter(|r| !r.quarantined) else {
                self.forget_waiter(media_id, &notify);
                return Err(RepoError::NotFound);
            };
            if let Some(content) = record.content {
                self.forget_waiter(media_id, &notify);
                return Ok(content);
            }
            if record.expires_ms.is_some_and(|at| at <= now_ms()) {
                self.forget_waiter(media_id, &notify);
                return Err(RepoError::NotFound);
            }
            if tokio::time::timeout_at(deadline, notified.as_mut())
                .await
                .is_err()
            {
                self.forget_waiter(media_id, &notify);
                return Err(RepoError::NotYetUploaded);
            }
        }
    }

    /// Drops the waiters' entry once nobody else holds it.
    fn forget_waiter(&self, media_id: &str, notify: &Arc<Notify>) {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        // Ours and the map's: nobody else is waiting.
        if Arc::strong_count(notify) <= 2
            && waiting
                .get(media_id)
                .is_some_and(|n| Arc::ptr_eq(n, notify))
        {
            waiting.remove(media_id);
        }
    }

    /// A media id's bytes (those of `range`, if given).
    pub async fn download(
        &self,
        server_name: &str,
        media_id: &str,
        range: Option<ByteRange>,
        wait: Duration,
    ) -> RepoResult<Download> {
        let content = self.content(server_name, media_id, wait).await?;
        let blob = self
            .backend
            .get(&content.sha256, range)
            .await?
            .ok_or(RepoError::NotFound)?;
        Ok(Download { content, blob })
    }

    /// A thumbnail of a media id: a stored one that fits the request (see
    /// [`pick_thumbnail`]), or a new one made and stored now. Sizes are
    /// bounded by the thumbnail limits, so requests cannot make unbounded
    /// numbers of large thumbnails.
    #[allow(clippy::too_many_arguments)]
    pub async fn thumbnail(
        &self,
        server_name: &str,
        media_id: &str,
        width: u32,
        height: u32,
        method: Method,
        animated: bool,
        wait: Duration,
    ) -> RepoResult<ThumbnailDownload> {
        let content = self.content(server_name, media_id, wait).await?;
        if !thumbnail::thumbnailable(&content.content_type) {
            return Err(RepoError::Thumbnail(ThumbnailError::Unsupported(format!(
                "{} is not an image format thumbnails are made of",
                content.content_type
            ))));
        }
        let stored = self.storage.media_thumbnails(server_name, media_id).await?;
        let thumbnail = match pick_thumbnail(&stored, width, height, method, animated) {
            Some(t) => t.clone(),
            None => {
                let made = self
                    .make_thumbnails(&content, &[(width, height, method)], animated)
                    .await?;
                let thumbnail = made.into_iter().next().ok_or(RepoError::NotFound)?;
                self.storage
                    .put_media_thumbnail(server_name, media_id, &thumbnail)
                    .await?;
                thumbnail
            }
        };
        let blob = self
            .backend
            .get(&thumbnail.sha256, None)
            .await?
            .ok_or(RepoError::NotFound)?;
        Ok(ThumbnailDownload { thumbnail, blob })
    }

    /// Makes the usual thumbnail sizes of new image content, in the
    /// background: a failure only means they are made on request instead.
    fn pregenerate_thumbnails(self: &Arc<Self>, media_id: &str, content: &MediaContent) {
        if !thumbnail::thumbnailable(&content.content_type) {
            return;
        }
        let (repo, media_id, content) = (self.clone(), media_id.to_owned(), content.clone());
        tokio::spawn(async move {
            let made = match repo
                .make_thumbnails(&content, thumbnail::PREGENERATED, false)
                .await
            {
                Ok(made) => made,
                Err(e) => {
                    tracing::debug!(%media_id, error = %e, "no thumbnails made on upload");
                    return;
                }
            };
            for t in made {
                let stored = repo
                    .storage
                    .put_media_thumbnail(&repo.server_name, &media_id, &t)
                    .await;
                if let Err(e) = stored {
                    tracing::warn!(%media_id, error = %e, "cannot record a thumbnail");
                }
            }
        });
    }

    /// Makes thumbnails of `content` at `sizes` and stores their blobs.
    async fn make_thumbnails(
        &self,
        content: &MediaContent,
        sizes: &[(u32, u32, Method)],
        animated: bool,
    ) -> RepoResult<Vec<MediaThumbnail>> {
        let _job = self
            .thumbnail_jobs
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let source = self.read_all(&content.sha256).await?;
        let limits = ThumbnailLimits {
            max_source_pixels: self.config.max_image_pixels,
            ..ThumbnailLimits::default()
        };
        let sizes = sizes.to_vec();
        let made = tokio::task::spawn_blocking(move || {
            thumbnail::make_thumbnails(&source, &sizes, animated, &limits)
                .map(|made| made.into_iter().zip(sizes).collect::<Vec<_>>())
        })
        .await
        .map_err(|e| RepoError::Receive(format!("thumbnail task failed: {e}")))?
        .map_err(RepoError::Thumbnail)?;
        let mut stored = Vec::with_capacity(made.len());
        for (t, (width, height, method)) in made {
            let sha256 = hex_sha256(&t.bytes);
            let path = self.tmp_path();
            tokio::fs::write(&path, &t.bytes).await?;
            self.backend
                .put_file(&sha256, &path, t.bytes.len() as u64)
                .await?;
            stored.push(MediaThumbnail {
                // Recorded under the request it answers (size, method,
                // animation asked for), so the same request finds it again,
                // also when the result is smaller or a still.
                width,
                height,
                method: method.as_str().to_owned(),
                animated,
                content_type: t.content_type.to_owned(),
                size: t.bytes.len() as i64,
                sha256,
            });
        }
        Ok(stored)
    }

    /// A whole blob in memory (thumbnail sources only, bounded by the upload
    /// limit).
    async fn read_all(&self, sha256: &str) -> RepoResult<Vec<u8>> {
        let blob = self
            .backend
            .get(sha256, None)
            .await?
            .ok_or(RepoError::NotFound)?;
        let mut bytes = Vec::with_capacity(usize::try_from(blob.total_len).unwrap_or(0));
        let mut body = blob.body;
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    fn tmp_path(&self) -> PathBuf {
        self.tmp_dir.join(random_alphanumeric(24))
    }

    /// Streams an upload into a temporary file while hashing it, refusing it
    /// past the size limit, then stores it as a blob.
    async fn receive<S, E>(
        &self,
        content_type: &str,
        filename: Option<String>,
        body: S,
    ) -> RepoResult<MediaContent>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let max = self.config.max_upload_bytes;
        let path = self.tmp_path();
        let (sha256, size) = spool(body, &path, Some(max)).await.map_err(|e| match e {
            SpoolError::TooLarge { max } => RepoError::TooLarge { max },
            SpoolError::Read(why) => RepoError::Receive(why),
            SpoolError::Write(e) => RepoError::Io(e),
        })?;
        if let Err(e) = self.backend.put_file(&sha256, &path, size).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e.into());
        }
        Ok(MediaContent {
            content_type: content_type.to_owned(),
            filename,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            sha256,
            uploaded_ms: now_ms(),
        })
    }
}

/// A stored thumbnail may answer a request for a box up to this many times
/// smaller in each dimension (the spec lets a thumbnail be larger than
/// asked); further off, a thumbnail of the size asked for is made.
const REUSE_FACTOR: u32 = 2;

/// The stored thumbnail to answer a request with: the same method and
/// animation, at least the requested size and at most [`REUSE_FACTOR`]
/// times it (the smallest such), else none.
fn pick_thumbnail(
    stored: &[MediaThumbnail],
    width: u32,
    height: u32,
    method: Method,
    animated: bool,
) -> Option<&MediaThumbnail> {
    stored
        .iter()
        .filter(|t| t.method == method.as_str() && t.animated == animated)
        .filter(|t| t.width >= width && t.height >= height)
        .filter(|t| {
            t.width <= width.saturating_mul(REUSE_FACTOR)
                && t.height <= height.saturating_mul(REUSE_FACTOR)
        })
        .min_by_key(|t| u64::from(t.width) * u64::from(t.height))
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(width: u32, height: u32, method: &str, animated: bool) -> MediaThumbnail {
        MediaThumbnail {
            width,
            height,
            method: method.to_owned(),
            animated,
            content_type: "image/png".to_owned(),
            size: 1,
            sha256: String::new(),
        }
    }

    #[test]
    fn stored_thumbnails_answer_nearby_sizes_only() {
        let all = [
            stored(32, 32, "crop", false),
            stored(96, 96, "crop", false),
            stored(320, 240, "scale", false),
            stored(640, 480, "scale", false),
            stored(96, 96, "crop", true),
        ];
        let pick = |w, h, method, animated| {
            pick_thumbnail(&all, w, h, method, animated).map(|t| (t.width, t.height))
        };
        assert_eq!(pick(32, 32, Method::Crop, false), Some((32, 32)));
        assert_eq!(pick(50, 50, Method::Crop, false), Some((96, 96)));
        assert_eq!(pick(300, 200, Method::Scale, false), Some((320, 240)));
        assert_eq!(pick(400, 300, Method::Scale, false), Some((640, 480)));
        // Too far from any stored size: made on request.
        assert_eq!(pick(100, 100, Method::Scale, false), None);
        assert_eq!(pick(1000, 1000, Method::Scale, false), None);
        // Method and animation must match.
        assert_eq!(pick(32, 32, Method::Scale, false), None);
        assert_eq!(pick(64, 64, Method::Crop, true), Some((96, 96)));
    }
}
