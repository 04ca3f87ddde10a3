//! The blob-store contract, written once and run against every backend: the
//! local disk here, S3 against a real S3-compatible server (`s3.rs`).

#[path = "common/s3s.rs"]
mod s3s;

use std::path::Path;

use futures_util::StreamExt as _;
use myelin_media::s3::S3Backend;
use myelin_media::{ByteRange, DiskBackend, MediaBackend, MediaError};

/// Runs every contract check against `backend`; `scratch` is a directory for
/// the source files uploads consume.
pub async fn contract(backend: &dyn MediaBackend, scratch: &Path) {
    round_trip_and_ranges(backend, scratch).await;
    identical_content_is_stored_once(backend, scratch).await;
    missing_and_deleted_blobs(backend, scratch).await;
    bad_names_never_reach_storage(backend).await;
    large_blob_streams(backend, scratch).await;
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn source(scratch: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = scratch.join(format!("upload-{:016x}", rand_u64()));
    tokio::fs::write(&path, bytes).await.expect("write source");
    path
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

async fn read(backend: &dyn MediaBackend, sha: &str, range: Option<ByteRange>) -> Option<Vec<u8>> {
    let blob = backend.get(sha, range).await.expect("get")?;
    let expected = blob.body_len();
    let mut body = blob.body;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(out.len() as u64, expected, "body_len matches the body");
    Some(out)
}

async fn put(backend: &dyn MediaBackend, scratch: &Path, bytes: &[u8]) -> String {
    let sha = sha256_hex(bytes);
    let path = source(scratch, bytes).await;
    backend
        .put_file(&sha, &path, bytes.len() as u64)
        .await
        .expect("put");
    assert!(!path.exists(), "the source file is consumed");
    sha
}

async fn round_trip_and_ranges(backend: &dyn MediaBackend, scratch: &Path) {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let sha = put(backend, scratch, &bytes).await;
    assert!(backend.exists(&sha).await.expect("exists"));
    assert_eq!(read(backend, &sha, None).await.as_deref(), Some(&bytes[..]));
    let blob = backend.get(&sha, None).await.expect("get").expect("blob");
    assert_eq!((blob.total_len, blob.range), (10_000, None));

    let r = |start, end| Some(ByteRange { start, end });
    assert_eq!(
        read(backend, &sha, r(0, Some(0))).await.unwrap(),
        &bytes[0..1]
    );
    assert_eq!(
        read(backend, &sha, r(100, Some(199))).await.unwrap(),
        &bytes[100..200]
    );
    assert_eq!(
        read(backend, &sha, r(9_990, None)).await.unwrap(),
        &bytes[9_990..]
    );
    assert_eq!(
        read(backend, &sha, r(9_990, Some(50_000))).await.unwrap(),
        &bytes[9_990..]
    );
    let blob = backend
        .get(&sha, r(100, Some(199)))
        .await
        .expect("get")
        .expect("blob");
    assert_eq!((blob.total_len, blob.range), (10_000, Some((100, 199))));
    match backend.get(&sha, r(10_000, None)).await {
        Err(MediaError::RangeNotSatisfiable { len: 10_000 }) => {}
        other => panic!(
            "a range past the end: {:?}",
            other.map(|b| b.map(|b| b.range))
        ),
    }
}

async fn identical_content_is_stored_once(backend: &dyn MediaBackend, scratch: &Path) {
    let first = put(backend, scratch, b"the same bytes").await;
    let second = put(backend, scratch, b"the same bytes").await;
    assert_eq!(first, second);
    assert_eq!(
        read(backend, &first, None).await.as_deref(),
        Some(&b"the same bytes"[..])
    );
}

async fn missing_and_deleted_blobs(backend: &dyn MediaBackend, scratch: &Path) {
    let missing = sha256_hex(b"never stored");
    assert!(backend.get(&missing, None).await.expect("get").is_none());
    assert!(!backend.exists(&missing).await.expect("exists"));
    backend
        .delete(&missing)
        .await
        .expect("deleting a missing blob");

    let sha = put(backend, scratch, b"short-lived").await;
    backend.delete(&sha).await.expect("delete");
    assert!(backend.get(&sha, None).await.expect("get").is_none());

    let empty = put(backend, scratch, b"").await;
    assert_eq!(read(backend, &empty, None).await.as_deref(), Some(&b""[..]));
}

async fn bad_names_never_reach_storage(backend: &dyn MediaBackend) {
    for name in ["../../etc/passwd", "", "ABC", &"A".repeat(64), "aa/../bb"] {
        assert!(
            matches!(backend.get(name, None).await, Err(MediaError::InvalidName)),
            "{name}"
        );
        assert!(matches!(
            backend.exists(name).await,
            Err(MediaError::InvalidName)
        ));
        assert!(matches!(
            backend.delete(name).await,
            Err(MediaError::InvalidName)
        ));
    }
}

async fn large_blob_streams(backend: &dyn MediaBackend, scratch: &Path) {
    // Larger than one multipart part of the S3 backend.
    let bytes: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sha = put(backend, scratch, &bytes).await;
    let back = read(backend, &sha, None).await.expect("blob");
    assert!(back == bytes, "20 MiB come back intact");
    let tail = read(
        backend,
        &sha,
        Some(ByteRange {
            start: 15 * 1024 * 1024,
            end: None,
        }),
    )
    .await
    .expect("blob");
    assert!(tail[..] == bytes[15 * 1024 * 1024..]);
}

#[tokio::test]
async fn disk_backend_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = dir.path().join("tmp");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let backend = DiskBackend::new(dir.path().join("media")).expect("backend");
    contract(&backend, &scratch).await;
}

#[tokio::test]
async fn s3_backend_contract() {
    let server = s3s::S3sFs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = server.fresh_bucket().await;
    // The 20 MiB blob of the suite goes through a multipart upload.
    assert!(config.multipart_threshold < 20 * 1024 * 1024);
    let backend = S3Backend::new(config.clone()).expect("backend");
    backend
        .ensure_bucket()
        .await
        .expect("an existing bucket is fine");
    contract(&backend, dir.path()).await;

    // The server checks signatures: a wrong secret is an error, not a miss.
    let mut wrong = config;
    wrong.secret_access_key = "wrong".into();
    let wrong = S3Backend::new(wrong).expect("backend");
    match wrong.exists(&sha256_hex(b"anything")).await {
        Err(MediaError::Backend(message)) => assert!(message.contains("HeadObject"), "{message}"),
        other => panic!("a wrong secret: {other:?}"),
    }
}
