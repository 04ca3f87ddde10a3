//! Blobs on the local disk (the embedded default): `<root>/blobs/ab/cd/<sha256>`,
//! written by renaming a finished, synced file into place, so a blob is
//! either absent or whole.

use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::ReaderStream;

use crate::backend::{Blob, ByteRange, MediaBackend, MediaResult, check_name};

/// Read buffer for streaming a blob out.
const READ_CHUNK: usize = 64 * 1024;

pub struct DiskBackend {
    root: PathBuf,
}

impl DiskBackend {
    /// Blobs under `<root>/blobs`; `root` is created if missing.
    pub fn new(root: impl Into<PathBuf>) -> MediaResult<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs"))?;
        Ok(Self { root })
    }

    fn path_of(&self, sha256: &str) -> MediaResult<PathBuf> {
        check_name(sha256)?;
        Ok(self
            .root
            .join("blobs")
            .join(&sha256[0..2])
            .join(&sha256[2..4])
            .join(sha256))
    }
}

#[async_trait]
impl MediaBackend for DiskBackend {
    async fn put_file(&self, sha256: &str, path: &Path, _len: u64) -> MediaResult<()> {
        let target = self.path_of(sha256)?;
        if tokio::fs::try_exists(&target).await? {
            tokio::fs::remove_file(path).await?;
            return Ok(());
        }
        let dir = target.parent().expect("a blob path has a parent");
        tokio::fs::create_dir_all(dir).await?;
        // Durable before it is visible: the file's bytes, then its name.
        tokio::fs::File::open(path).await?.sync_all().await?;
        match tokio::fs::rename(path, &target).await {
            Ok(()) => {}
            // Another file system (a temporary directory elsewhere): copy
            // beside the target, then rename.
            Err(e) if e.kind() == ErrorKind::CrossesDevices => {
                let partial = dir.join(format!(".{sha256}.partial"));
                tokio::fs::copy(path, &partial).await?;
                tokio::fs::File::open(&partial).await?.sync_all().await?;
                tokio::fs::rename(&partial, &target).await?;
                tokio::fs::remove_file(path).await?;
            }
            Err(e) => return Err(e.into()),
        }
        if let Ok(dir) = tokio::fs::File::open(dir).await {
            let _ = dir.sync_all().await;
        }
        Ok(())
    }

    async fn get(&self, sha256: &str, range: Option<ByteRange>) -> MediaResult<Option<Blob>> {
        let path = self.path_of(sha256)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let total_len = file.metadata().await?.len();
        let range = range.map(|r| r.resolve(total_len)).transpose()?;
        let (start, end) = range.unwrap_or((0, total_len.saturating_sub(1)));
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await?;
        }
        let body_len = if total_len == 0 { 0 } else { end - start + 1 };
        let body = ReaderStream::with_capacity(file.take(body_len), READ_CHUNK);
        Ok(Some(Blob {
            total_len,
            range,
            body: Box::pin(body),
        }))
    }

    async fn exists(&self, sha256: &str) -> MediaResult<bool> {
        Ok(tokio::fs::try_exists(self.path_of(sha256)?).await?)
    }

    async fn delete(&self, sha256: &str) -> MediaResult<()> {
        match tokio::fs::remove_file(self.path_of(sha256)?).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn name(&self) -> &'static str {
        "disk"
    }
}
