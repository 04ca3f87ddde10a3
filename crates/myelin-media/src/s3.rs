//! Blobs in S3-compatible object storage: object `media/<sha256>` in one
//! bucket. Objects only ever appear whole (a PutObject or a completed
//! multipart upload), so, as on disk, a blob is either absent or complete.
//!
//! The HTTP client is hyper 1 with rustls on `ring`, configured by hand (no
//! `aws-config`): no environment, profile or instance-metadata lookups, only
//! what [`S3Config`] says.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::{ByteStream as SdkByteStream, Length};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio_util::io::ReaderStream;

use crate::backend::{Blob, ByteRange, MediaBackend, MediaError, MediaResult, check_name};

/// Every object key starts with this, so the bucket can hold other things
/// (and lifecycle or replication rules can target the media alone).
const KEY_PREFIX: &str = "media/";
/// Read buffer for streaming a blob out.
const READ_CHUNK: usize = 64 * 1024;
/// S3's smallest part (all but the last) of a multipart upload.
const PART_SIZE_MIN: u64 = 5 * 1024 * 1024;
/// S3's largest part, and largest single PutObject.
const PART_SIZE_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts in one multipart upload; larger files get larger parts.
const PARTS_MAX: u64 = 10_000;

#[derive(Clone)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:9000`);
    /// `None`: AWS S3 of `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Addresses the bucket in the path (`endpoint/bucket/key`) rather than
    /// in the host name (`bucket.endpoint/key`); most self-hosted servers
    /// need this.
    pub path_style: bool,
    /// Computes and checks checksums only when an operation requires them
    /// (true, the default), instead of the SDK's default of always. The
    /// default sends uploads as `aws-chunked` bodies with trailing checksums,
    /// which several S3-compatible servers reject or store corrupted.
    pub checksums_when_required: bool,
    /// Files of at least this many bytes are sent as a multipart upload,
    /// smaller ones with one PutObject (at most 5 GiB).
    pub multipart_threshold: u64,
    /// The size of each multipart part but the last, 5 MiB to 5 GiB (raised
    /// when a file would need more than 10,000 parts).
    pub part_size: u64,
}

impl S3Config {
    pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
    pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

    /// A configuration for AWS S3 with the defaults: virtual-hosted-style
    /// addressing, checksums when required, multipart from 16 MiB in 8 MiB
    /// parts.
    pub fn new(
        region: impl Into<String>,
        bucket: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: None,
            region: region.into(),
            bucket: bucket.into(),
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            path_style: false,
            checksums_when_required: true,
            multipart_threshold: Self::DEFAULT_MULTIPART_THRESHOLD,
            part_size: Self::DEFAULT_PART_SIZE,
        }
    }
}

/// Never prints the secret key (configurations end up in logs).
impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("checksums_when_required", &self.checksums_when_required)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .finish()
    }
}

pub struct S3Backend {
    client: Client,
    bucket: String,
    region: String,
    multipart_threshold: u64,
    part_size: u64,
}

impl S3Backend {
    /// A client for `config`; makes no request (see [`Self::ensure_bucket`]).
    /// Fails on a part size S3 would refuse.
    pub fn new(config: S3Config) -> MediaResult<Self> {
        if !(PART_SIZE_MIN..=PART_SIZE_MAX).contains(&config.part_size) {
            return Err(MediaError::Backend(format!(
                "s3: part size {} is outside 5 MiB..=5 GiB",
                config.part_size
            )));
        }
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let credentials = Credentials::new(
            &config.access_key_id,
            &config.secret_access_key,
            None,
            None,
            "myelin-config",
        );
        let mut sdk = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http_client)
            .credentials_provider(credentials)
            .region(Region::new(config.region.clone()))
            .force_path_style(config.path_style);
        if let Some(endpoint) = &config.endpoint {
            sdk = sdk.endpoint_url(endpoint);
        }
        if config.checksums_when_required {
            sdk = sdk
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Ok(Self {
            client: Client::from_conf(sdk.build()),
            bucket: config.bucket,
            region: config.region,
            multipart_threshold: config.multipart_threshold.min(PART_SIZE_MAX),
            part_size: config.part_size,
        })
    }

    /// Creates the bucket if it does not exist (at startup, and in tests).
    pub async fn ensure_bucket(&self) -> MediaResult<()> {
        let head = self.client.head_bucket().bucket(&self.bucket).send().await;
        match head {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(sdk_error("HeadBucket", &self.bucket, e)),
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that refuses its own name here.
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            // Created meanwhile by another instance.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error("CreateBucket", &self.bucket, e)),
        }
    }

    fn key_of(sha256: &str) -> MediaResult<String> {
        check_name(sha256)?;
        Ok(format!("{KEY_PREFIX}{sha256}"))
    }

    /// The object's length; `None` if there is no such object.
    async fn head_len(&self, key: &str) -> MediaResult<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => {
                let len = head.content_length().unwrap_or(0);
                u64::try_from(len)
                    .map(Some)
                    .map_err(|_| MediaError::Backend(format!("s3 HeadObject {key}: length {len}")))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(sdk_error("HeadObject", key, e)),
        }
    }

    /// The error for a range the server found unsatisfiable (or that a
    /// `Range` header cannot express): `RangeNotSatisfiable` with the length.
    async fn unsatisfiable(&self, key: &str, range: ByteRange) -> MediaResult<Option<Blob>> {
        let Some(len) = self.head_len(key).await? else {
            return Ok(None);
        };
        match range.resolve(len) {
            Err(e) => Err(e),
            Ok(_) => Err(MediaError::Backend(format!(
                "s3 GetObject {key}: server refused range {range:?} of a {len}-byte object"
            ))),
        }
    }

    async fn put_single(&self, key: &str, path: &Path) -> MediaResult<()> {
        let body = SdkByteStream::from_path(path)
            .await
            .map_err(|e| MediaError::Backend(format!("s3 PutObject {key}: {e}")))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| sdk_error("PutObject", key, e))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &str, path: &Path, len: u64) -> MediaResult<()> {
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error("CreateMultipartUpload", key, e))?;
        let Some(upload_id) = upload.upload_id() else {
            return Err(MediaError::Backend(format!(
                "s3 CreateMultipartUpload {key}: no upload id"
            )));
        };
        let result = self.upload_parts(key, upload_id, path, len).await;
        if result.is_err() {
            // Parts of an abandoned upload are stored (and billed) until aborted.
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(key, error = %DisplayErrorContext(&e), "s3: aborting a multipart upload failed");
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        len: u64,
    ) -> MediaResult<()> {
        let part_size = self.part_size.max(len.div_ceil(PARTS_MAX));
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < len {
            let part_len = part_size.min(len - offset);
            let body = SdkByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(part_len))
                .build()
                .await
                .map_err(|e| MediaError::Backend(format!("s3 UploadPart {key}: {e}")))?;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(part_len as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| sdk_error("UploadPart", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag)
                    .build(),
            );
            offset += part_len;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("CompleteMultipartUpload", key, e))?;
        Ok(())
    }
}

#[async_trait]
impl MediaBackend for S3Backend {
    async fn put_file(&self, sha256: &str, path: &Path, len: u64) -> MediaResult<()> {
        let key = Self::key_of(sha256)?;
        if self.head_len(&key).await?.is_none() {
            // The plan of parts follows `len`: it must be the file's.
            let actual = tokio::fs::metadata(path).await?.len();
            if actual != len {
                return Err(MediaError::Backend(format!(
                    "s3 put {key}: file has {actual} bytes, expected {len}"
                )));
            }
            if len < self.multipart_threshold {
                self.put_single(&key, path).await?;
            } else {
                self.put_multipart(&key, path, len).await?;
            }
        }
        tokio::fs::remove_file(path).await?;
        Ok(())
    }

    async fn get(&self, sha256: &str, range: Option<ByteRange>) -> MediaResult<Option<Blob>> {
        let key = Self::key_of(sha256)?;
        let mut request = self.client.get_object().bucket(&self.bucket).key(&key);
        if let Some(r) = range {
            request = request.range(match r.end {
                // `bytes=5-4` is no valid range; servers would send it all.
                Some(end) if end < r.start => return self.unsatisfiable(&key, r).await,
                Some(end) => format!("bytes={}-{end}", r.start),
                None => format!("bytes={}-", r.start),
            });
        }
        let object = match request.send().await {
            Ok(object) => object,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) if status(&e) == Some(416) => {
                return match range {
                    Some(r) => self.unsatisfiable(&key, r).await,
                    None => Err(sdk_error("GetObject", &key, e)),
                };
            }
            Err(e) => return Err(sdk_error("GetObject", &key, e)),
        };
        let body_len = object
            .content_length()
            .and_then(|len| u64::try_from(len).ok());
        let (total_len, range) = match (range, object.content_range()) {
            (None, _) => (body_len, None),
            // The server's range must be the one asked for, resolved.
            (Some(r), Some(content_range)) => match parse_content_range(content_range) {
                Some((start, end, total)) if r.resolve(total).ok() == Some((start, end)) => {
                    (Some(total), Some((start, end)))
                }
                _ => (None, None),
            },
            // A whole object answering a range that covers it all.
            (Some(r), None) => match body_len.map(|len| (len, r.resolve(len))) {
                Some((len, Ok(whole))) if whole == (0, len - 1) => (Some(len), Some(whole)),
                _ => (None, None),
            },
        };
        let Some(total_len) = total_len else {
            return Err(MediaError::Backend(format!(
                "s3 GetObject {key}: unexpected answer (Content-Length {:?}, Content-Range {:?})",
                object.content_length(),
                object.content_range()
            )));
        };
        let body = ReaderStream::with_capacity(object.body.into_async_read(), READ_CHUNK);
        Ok(Some(Blob {
            total_len,
            range,
            body: Box::pin(body),
        }))
    }

    async fn exists(&self, sha256: &str) -> MediaResult<bool> {
        Ok(self.head_len(&Self::key_of(sha256)?).await?.is_some())
    }

    async fn delete(&self, sha256: &str) -> MediaResult<()> {
        let key = Self::key_of(sha256)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // S3 answers 204 for a missing key; some compatible servers 404.
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(sdk_error("DeleteObject", &key, e)),
        }
    }

    fn name(&self) -> &'static str {
        "s3"
    }
}

/// The HTTP status of a failed request (`None`: no response, e.g. a
/// connection error).
fn status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn sdk_error<E: std::error::Error + 'static>(
    operation: &str,
    what: &str,
    e: SdkError<E, HttpResponse>,
) -> MediaError {
    MediaError::Backend(format!(
        "s3 {operation} {what}: {}",
        DisplayErrorContext(&e)
    ))
}

/// `bytes 100-199/10000` → `(100, 199, 10000)`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total) = (start.parse().ok()?, end.parse().ok()?, total.parse().ok()?);
    (start <= end && end < total).then_some((start, end, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 100-199/10000"),
            Some((100, 199, 10_000))
        );
        assert_eq!(parse_content_range("bytes 0-0/1"), Some((0, 0, 1)));
        for bad in [
            "bytes */10",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let config = S3Config::new("us-east-1", "media", "AKID", "very-secret");
        let shown = format!("{config:?}");
        assert!(
            shown.contains("AKID") && !shown.contains("very-secret"),
            "{shown}"
        );
    }
}
