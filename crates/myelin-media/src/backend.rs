//! The blob store every media backend implements.
//!
//! Blobs are content-addressed: each is named by the lowercase hex SHA-256 of
//! its bytes, so identical uploads are stored once and a name can never be a
//! path a client chose. Uploads arrive as a finished local file (the HTTP
//! layer streams the request body to a temporary file while hashing it), so a
//! backend never holds a whole blob in memory.

use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;

/// A blob's bytes, streamed.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A blob name that is not 64 lowercase hex digits.
    #[error("invalid blob name")]
    InvalidName,
    /// A range that starts at or past the end of the blob.
    #[error("range not satisfiable (blob of {len} bytes)")]
    RangeNotSatisfiable { len: u64 },
    #[error("media backend I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("media backend: {0}")]
    Backend(String),
}

pub type MediaResult<T> = Result<T, MediaError>;

/// Bytes `start..=end` of a blob (`end` `None`: to the end), as an HTTP
/// `Range: bytes=start-end` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl ByteRange {
    /// The inclusive byte positions this range covers in a blob of `len`
    /// bytes, `end` clamped to the last byte; an error when `start` is past
    /// the end.
    pub fn resolve(self, len: u64) -> MediaResult<(u64, u64)> {
        if self.start >= len || self.end.is_some_and(|end| end < self.start) {
            return Err(MediaError::RangeNotSatisfiable { len });
        }
        let last = len - 1;
        Ok((self.start, self.end.map_or(last, |end| end.min(last))))
    }
}

/// A blob (or the part a range asked for) being read.
pub struct Blob {
    /// The whole blob's length.
    pub total_len: u64,
    /// The inclusive byte positions `body` carries (`None`: the whole blob).
    pub range: Option<(u64, u64)>,
    pub body: ByteStream,
}

impl Blob {
    /// How many bytes `body` carries.
    pub fn body_len(&self) -> u64 {
        match self.range {
            Some((start, end)) => end - start + 1,
            None => self.total_len,
        }
    }
}

#[async_trait]
pub trait MediaBackend: Send + Sync {
    /// Stores the local file at `path` (`len` bytes) as blob `sha256`; if the
    /// blob exists already, nothing is written. The file is consumed: moved
    /// or deleted when this returns `Ok`.
    async fn put_file(&self, sha256: &str, path: &Path, len: u64) -> MediaResult<()>;
    /// The blob's bytes (those of `range`, if given); `None` if there is no
    /// such blob.
    async fn get(&self, sha256: &str, range: Option<ByteRange>) -> MediaResult<Option<Blob>>;
    /// Whether the blob exists.
    async fn exists(&self, sha256: &str) -> MediaResult<bool>;
    /// Deletes the blob; deleting a missing blob is not an error.
    async fn delete(&self, sha256: &str) -> MediaResult<()>;
    /// A short name for logs and metrics (`disk`, `s3`).
    fn name(&self) -> &'static str;
}

/// Why [`spool`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The stream went past the byte limit.
    #[error("more than {max} bytes")]
    TooLarge { max: u64 },
    /// The stream itself failed.
    #[error("reading the bytes failed: {0}")]
    Read(String),
    #[error("writing the temporary file failed: {0}")]
    Write(#[from] std::io::Error),
}

/// Writes `body` to a new file at `path` while hashing it, stopping past
/// `max` bytes (if given); returns the blob name (hex SHA-256) and the
/// length. The file is removed again if anything fails. This is how every
/// blob reaches a backend: from a finished local file, never from memory.
pub async fn spool<S, E>(
    body: S,
    path: &Path,
    max: Option<u64>,
) -> Result<(String, u64), SpoolError>
where
    S: futures_core::Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    use futures_util::StreamExt as _;
    use sha2::Digest as _;
    use tokio::io::AsyncWriteExt as _;

    let result = async {
        let mut file = tokio::fs::File::create(path).await?;
        let mut hasher = sha2::Sha256::new();
        let mut len: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| SpoolError::Read(e.to_string()))?;
            len += chunk.len() as u64;
            if let Some(max) = max
                && len > max
            {
                return Err(SpoolError::TooLarge { max });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok((hex(&hasher.finalize()), len))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}

/// Lowercase hex of a digest (a blob name from a SHA-256).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a blob name is a lowercase hex SHA-256, so it is safe as a file
/// name or an object key.
pub fn check_name(sha256: &str) -> MediaResult<()> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(MediaError::InvalidName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_the_length() {
        let r = |start, end| ByteRange { start, end };
        assert_eq!(r(0, None).resolve(10).unwrap(), (0, 9));
        assert_eq!(r(2, Some(4)).resolve(10).unwrap(), (2, 4));
        assert_eq!(r(2, Some(400)).resolve(10).unwrap(), (2, 9));
        assert!(r(10, None).resolve(10).is_err());
        assert!(r(5, Some(4)).resolve(10).is_err());
        assert!(r(0, None).resolve(0).is_err());
    }

    #[test]
    fn names_are_hex_sha256() {
        assert!(check_name(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            "../etc/passwd",
            &"A".repeat(64),
            &"a".repeat(63),
            &"g".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
