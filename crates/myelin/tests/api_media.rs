//! The content repository over HTTP, on both databases and both media
//! backends (the local disk, and S3 on a real s3s-fs server): uploads,
//! downloads with ranges and safe headers, asynchronous uploads, thumbnails,
//! the limits, and what survives a restart.

mod common;
#[path = "../../myelin-media/tests/common/s3s.rs"]
mod s3s;

use std::io::Cursor;
use std::time::Duration;

use common::*;
use myelin_core::Config;
use myelin_core::config::MediaBackendKind;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// One test per database and media backend.
macro_rules! media_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite_disk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Setup::new(crate::common::Backend::Sqlite, super::Store::Disk)).await
                }
            )*
        }
        mod postgres_disk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Setup::new(crate::common::Backend::Postgres, super::Store::Disk)).await
                }
            )*
        }
        mod sqlite_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Setup::new(crate::common::Backend::Sqlite, super::Store::S3)).await
                }
            )*
        }
        mod postgres_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Setup::new(crate::common::Backend::Postgres, super::Store::S3)).await
                }
            )*
        }
    };
}

media_tests!(
    upload_download_and_headers,
    identical_uploads_share_a_blob_and_survive_a_restart,
    upload_limits,
    range_requests,
    asynchronous_uploads,
    thumbnails,
    bad_requests_are_matrix_errors,
    legacy_endpoints_follow_the_switch,
);

backend_tests!(media_moves_from_disk_to_s3_and_back);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Disk,
    S3,
}

/// A database, a media backend, and (for S3) the S3 server, which must
/// outlive the Myelin server.
struct Setup {
    backend: Backend,
    store: Store,
    s3: Option<s3s::S3sFs>,
}

impl Setup {
    fn new(backend: Backend, store: Store) -> Self {
        let s3 = (store == Store::S3).then(s3s::S3sFs::start);
        Self { backend, store, s3 }
    }

    async fn start(&self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let s3 = self.s3.as_ref().map(|s| s.endpoint());
        let store = self.store;
        TestServer::start_with(self.backend, move |config| {
            if store == Store::S3 {
                config.media.backend = MediaBackendKind::S3;
                let settings = &mut config.media.s3;
                settings.endpoint = s3.expect("s3s-fs runs");
                settings.region = s3s::REGION.to_owned();
                settings.bucket = format!("media-{:08x}", rand::random::<u32>());
                settings.access_key_id = s3s::ACCESS_KEY.to_owned();
                settings.secret_access_key = s3s::SECRET_KEY.to_owned();
                settings.path_style = true;
            }
            adjust(config);
        })
        .await
    }
}

const UPLOAD: &str = "/_matrix/media/v3/upload";
const DOWNLOAD: &str = "/_matrix/client/v1/media/download";
const THUMBNAIL: &str = "/_matrix/client/v1/media/thumbnail";

/// A response with its body as bytes.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn errcode(&self) -> Option<String> {
        self.json()["errcode"].as_str().map(str::to_owned)
    }
}

async fn raw(req: reqwest::RequestBuilder) -> Raw {
    let resp = req.send().await.expect("the request is sent");
    Raw {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("the body").to_vec(),
    }
}

async fn upload(
    server: &TestServer,
    s: &Session,
    content_type: &str,
    filename: Option<&str>,
    body: Vec<u8>,
) -> Raw {
    let mut req = server
        .client
        .post(server.url(UPLOAD))
        .bearer_auth(&s.access_token)
        .header("content-type", content_type)
        .body(body);
    if let Some(name) = filename {
        req = req.query(&[("filename", name)]);
    }
    raw(req).await
}

/// Uploads and returns `(server name, media id)` of the content URI.
async fn upload_ok(server: &TestServer, s: &Session, content_type: &str, body: Vec<u8>) -> String {
    let resp = upload(server, s, content_type, None, body).await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.json());
    media_path(&resp.json()["content_uri"])
}

/// `mxc://server/id` → `server/id`.
fn media_path(uri: &Value) -> String {
    uri.as_str()
        .and_then(|u| u.strip_prefix("mxc://"))
        .expect("an mxc URI")
        .to_owned()
}

async fn get(server: &TestServer, s: Option<&Session>, path: &str) -> Raw {
    get_with(server, s, path, &[]).await
}

async fn get_with(
    server: &TestServer,
    s: Option<&Session>,
    path: &str,
    headers: &[(&str, &str)],
) -> Raw {
    let mut req = server.client.get(server.url(path));
    if let Some(s) = s {
        req = req.bearer_auth(&s.access_token);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    raw(req).await
}

/// A PNG of `width`×`height` with a gradient.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8, 255])
    });
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode a png");
    out.into_inner()
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .expect("a png thumbnail");
    (image.width(), image.height())
}

async fn upload_download_and_headers(setup: Setup) {
    let server = setup.start(|_| {}).await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let body = b"hello, media".to_vec();
    let resp = upload(
        &server,
        &alice,
        "text/plain",
        Some("hello.txt"),
        body.clone(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.json());
    let uri = resp.json()["content_uri"].clone();
    assert!(
        uri.as_str().unwrap().starts_with("mxc://localhost/"),
        "{uri}"
    );
    let path = media_path(&uri);

    // Anyone signed in may download it.
    let got = get(&server, Some(&bob), &format!("{DOWNLOAD}/{path}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, body);
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.header("content-length"), Some("12"));
    assert_eq!(
        got.header("content-disposition"),
        Some("inline; filename=\"hello.txt\"; filename*=utf-8''hello.txt")
    );
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert!(
        got.header("content-security-policy")
            .is_some_and(|csp| csp.starts_with("sandbox; default-src 'none';")),
        "{:?}",
        got.headers
    );
    assert_eq!(got.header("accept-ranges"), Some("bytes"));
    // The name in the path wins.
    let got = get(&server, Some(&bob), &format!("{DOWNLOAD}/{path}/other.txt")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(
        got.header("content-disposition")
            .is_some_and(|d| d.contains("filename=\"other.txt\"")),
        "{:?}",
        got.headers
    );

    // Types a browser would run are attachments.
    for kind in ["text/html", "image/svg+xml", "application/javascript"] {
        let path = upload_ok(&server, &alice, kind, b"<script>alert(1)</script>".to_vec()).await;
        let got = get(&server, Some(&bob), &format!("{DOWNLOAD}/{path}")).await;
        assert_eq!(got.header("content-type"), Some(kind));
        assert_eq!(
            got.header("content-disposition"),
            Some("attachment"),
            "{kind}"
        );
    }
    // No token, no media.
    let got = get(&server, None, &format!("{DOWNLOAD}/{path}")).await;
    assert_eq!(
        (got.status, got.errcode().as_deref()),
        (StatusCode::UNAUTHORIZED, Some("M_MISSING_TOKEN"))
    );
    // The upload limit is advertised.
    for config in [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
    ] {
        let got = get(&server, Some(&bob), config).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.json(), json!({ "m.upload.size": 50 * 1024 * 1024 }));
    }
    server.stop().await;
}

async fn identical_uploads_share_a_blob_and_survive_a_restart(setup: Setup) {
    let mut server = setup.start(|_| {}).await;
    let alice = server.register("alice", "password-alice").await;
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let first = upload_ok(&server, &alice, "application/octet-stream", bytes.clone()).await;
    let second = upload_ok(&server, &alice, "application/octet-stream", bytes.clone()).await;
    assert_ne!(first, second, "each upload gets its own id");
    let (a, b) = (
        server
            .storage()
            .media("localhost", first.split('/').nth(1).unwrap())
            .await
            .unwrap(),
        server
            .storage()
            .media("localhost", second.split('/').nth(1).unwrap())
            .await
            .unwrap(),
    );
    assert_eq!(
        a.and_then(|m| m.content).map(|c| c.sha256),
        b.and_then(|m| m.content).map(|c| c.sha256),
        "one blob"
    );
    server.restart().await;
    for path in [&first, &second] {
        let got = get(&server, Some(&alice), &format!("{DOWNLOAD}/{path}")).await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(got.body == bytes, "the bytes survive a restart");
    }
    server.stop().await;
}

async fn upload_limits(setup: Setup) {
    let server = setup
        .start(|config| config.media.max_upload_bytes = 1_000)
        .await;
    let alice = server.register("alice", "password-alice").await;
    upload_ok(&server, &alice, "text/plain", vec![b'a'; 1_000]).await;
    // Announced too large: refused before reading.
    let resp = upload(&server, &alice, "text/plain", None, vec![b'a'; 1_001]).await;
    assert_eq!(
        (resp.status, resp.errcode().as_deref()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE"))
    );
    // Chunked, with no length: refused once the limit is passed. The server
    // answers before the body has all been sent, so the client may see the
    // connection closed instead of the 413; either way nothing is stored.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b'b'; 100])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let sent = server
        .client
        .post(server.url(UPLOAD))
        .bearer_auth(&alice.access_token)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await;
    if let Ok(resp) = sent {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE"))
        );
    }
    let blobs = server.storage().media_blobs(None, 10).await.expect("blobs");
    assert_eq!(blobs.len(), 1, "only the upload within the limit is stored");
    let got = get(&server, Some(&alice), "/_matrix/client/v1/media/config").await;
    assert_eq!(got.json(), json!({ "m.upload.size": 1_000 }));
    server.stop().await;
}

async fn range_requests(setup: Setup) {
    let server = setup.start(|_| {}).await;
    let alice = server.register("alice", "password-alice").await;
    let bytes: Vec<u8> = (0..1_000u32).map(|i| (i % 256) as u8).collect();
    let path = upload_ok(&server, &alice, "application/octet-stream", bytes.clone()).await;
    let url = format!("{DOWNLOAD}/{path}");
    for (range, from, to) in [
        ("bytes=0-9", 0, 9),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=500-5000", 500, 999),
    ] {
        let got = get_with(&server, Some(&alice), &url, &[("range", range)]).await;
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(got.body, &bytes[from..=to], "{range}");
        let content_range = format!("bytes {from}-{to}/1000");
        assert_eq!(got.header("content-range"), Some(content_range.as_str()));
    }
    let got = get_with(&server, Some(&alice), &url, &[("range", "bytes=1000-")]).await;
    assert_eq!(got.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(got.header("content-range"), Some("bytes */1000"));
    // Several ranges: the whole content.
    let got = get_with(&server, Some(&alice), &url, &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!((got.status, got.body.len()), (StatusCode::OK, 1_000));
    server.stop().await;
}

async fn asynchronous_uploads(setup: Setup) {
    let server = setup
        .start(|config| config.media.max_pending_uploads = 3)
        .await;
    let alice = server.register("alice", "password-alice").await;
    let bob = server.register("bob", "password-bob").await;
    let (status, created) = server
        .post(
            "/_matrix/media/v1/create",
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert!(created["unused_expires_at"].as_i64().is_some(), "{created}");
    let path = media_path(&created["content_uri"]);

    // Not there yet: a download waits, then gives up.
    let got = get(
        &server,
        Some(&bob),
        &format!("{DOWNLOAD}/{path}?timeout_ms=100"),
    )
    .await;
    assert_eq!(
        (got.status, got.errcode().as_deref()),
        (StatusCode::GATEWAY_TIMEOUT, Some("M_NOT_YET_UPLOADED"))
    );
    // Only the creator may upload.
    let put = |s: &Session, path: &str, body: &'static [u8]| {
        server
            .client
            .put(server.url(&format!(
                "/_matrix/media/v3/upload/{path}?filename=late.txt"
            )))
            .bearer_auth(&s.access_token)
            .header("content-type", "text/plain")
            .body(body)
    };
    let resp = raw(put(&bob, &path, b"not yours")).await;
    assert_eq!(
        (resp.status, resp.errcode().as_deref()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );
    // A waiting download is woken by the upload.
    let waiting = {
        let (client, url, token) = (
            server.client.clone(),
            server.url(&format!("{DOWNLOAD}/{path}?timeout_ms=10000")),
            bob.access_token.clone(),
        );
        tokio::spawn(async move { raw(client.get(url).bearer_auth(token)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = raw(put(&alice, &path, b"worth the wait")).await;
    assert_eq!((resp.status, resp.json()), (StatusCode::OK, json!({})));
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting download is woken")
        .expect("the task");
    assert_eq!(
        (got.status, got.body.as_slice()),
        (StatusCode::OK, &b"worth the wait"[..])
    );
    assert!(
        got.header("content-disposition")
            .is_some_and(|d| d.contains("late.txt"))
    );
    // Once only.
    let resp = raw(put(&alice, &path, b"again")).await;
    assert_eq!(
        (resp.status, resp.errcode().as_deref()),
        (StatusCode::CONFLICT, Some("M_CANNOT_OVERWRITE_MEDIA"))
    );
    let resp = raw(put(&alice, "localhost/nosuchmedia", b"x")).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    let resp = raw(put(&alice, "elsewhere.example/abc", b"x")).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);

    // At most three ids waiting for content per user.
    for _ in 0..3 {
        let (status, body) = server
            .post(
                "/_matrix/media/v1/create",
                Some(&alice.access_token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = server
        .post(
            "/_matrix/media/v1/create",
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("M_LIMIT_EXCEEDED")),
        "{body}"
    );
    server.stop().await;
}

async fn thumbnails(setup: Setup) {
    let server = setup.start(|_| {}).await;
    let alice = server.register("alice", "password-alice").await;
    let path = upload_ok(&server, &alice, "image/png", png(400, 200)).await;
    let thumb = |query: &str| format!("{THUMBNAIL}/{path}?{query}");

    let got = get(
        &server,
        Some(&alice),
        &thumb("width=32&height=32&method=crop"),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.json());
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(png_size(&got.body), (32, 32));
    let got = get(
        &server,
        Some(&alice),
        &thumb("width=100&height=100&method=scale"),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(png_size(&got.body), (100, 50));
    // Never larger than the source.
    let got = get(&server, Some(&alice), &thumb("width=1000&height=1000")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(png_size(&got.body), (400, 200));
    // Asked again, the stored one is served, byte for byte.
    let first = got_scale_100(&server, &alice, &path).await;
    assert_eq!(first, got_scale_100(&server, &alice, &path).await);

    // The usual sizes are made after the upload (in the background).
    let media_id = path.split('/').nth(1).unwrap().to_owned();
    let mut stored = Vec::new();
    for _ in 0..100 {
        stored = server
            .storage()
            .media_thumbnails("localhost", &media_id)
            .await
            .unwrap();
        if stored.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (w, h, method) in [
        (32, 32, "crop"),
        (96, 96, "crop"),
        (320, 240, "scale"),
        (640, 480, "scale"),
        (800, 600, "scale"),
    ] {
        assert!(
            stored
                .iter()
                .any(|t| (t.width, t.height, t.method.as_str()) == (w, h, method)),
            "{w}x{h} {method}: {stored:?}"
        );
    }

    // Not an image; a bad method; a zero size.
    let text = upload_ok(&server, &alice, "text/plain", b"words".to_vec()).await;
    let got = get(
        &server,
        Some(&alice),
        &format!("{THUMBNAIL}/{text}?width=32&height=32"),
    )
    .await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{:?}", got.json());
    for query in ["width=32&height=32&method=stretch", "width=0&height=32"] {
        let got = get(&server, Some(&alice), &thumb(query)).await;
        assert_eq!(
            (got.status, got.errcode().as_deref()),
            (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
            "{query}"
        );
    }
    let got = get(&server, Some(&alice), &thumb("height=32")).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{:?}", got.json());

    // A bomb: a tiny PNG declaring 100000×100000 pixels gets no thumbnail,
    // and is refused without decoding.
    let bomb = upload_ok(&server, &alice, "image/png", png_bomb(100_000, 100_000)).await;
    let got = get(
        &server,
        Some(&alice),
        &format!("{THUMBNAIL}/{bomb}?width=32&height=32"),
    )
    .await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{:?}", got.json());
    server.stop().await;
}

async fn got_scale_100(server: &TestServer, s: &Session, path: &str) -> Vec<u8> {
    get(
        server,
        Some(s),
        &format!("{THUMBNAIL}/{path}?width=100&height=100&method=scale"),
    )
    .await
    .body
}

/// A PNG signature and an IHDR chunk declaring `width`×`height`, and
/// nothing else.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(b"IHDR");
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

async fn bad_requests_are_matrix_errors(setup: Setup) {
    let server = setup.start(|_| {}).await;
    let alice = server.register("alice", "password-alice").await;
    for path in [
        "localhost/nosuchmedia",
        "elsewhere.example/abcdef",
        "localhost/..%2F..%2Fetc%2Fpasswd",
        "localhost/a.b",
    ] {
        let got = get(&server, Some(&alice), &format!("{DOWNLOAD}/{path}")).await;
        assert_eq!(
            (got.status, got.errcode().as_deref()),
            (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")),
            "{path}"
        );
        let got = get(
            &server,
            Some(&alice),
            &format!("{THUMBNAIL}/{path}?width=8&height=8"),
        )
        .await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{path}");
    }
    let resp = upload(
        &server,
        &alice,
        "text/plain",
        Some("bad\nname"),
        b"x".to_vec(),
    )
    .await;
    assert_eq!(
        (resp.status, resp.errcode().as_deref()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );
    let resp = raw(server.client.post(server.url(UPLOAD)).body("x")).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

async fn legacy_endpoints_follow_the_switch(setup: Setup) {
    for legacy in [false, true] {
        let server = setup
            .start(|config| config.media.legacy_unauthenticated = legacy)
            .await;
        let alice = server.register("alice", "password-alice").await;
        let path = upload_ok(&server, &alice, "image/png", png(64, 64)).await;
        let download = get(&server, None, &format!("/_matrix/media/v3/download/{path}")).await;
        let thumbnail = get(
            &server,
            None,
            &format!("/_matrix/media/v3/thumbnail/{path}?width=32&height=32"),
        )
        .await;
        if legacy {
            assert_eq!(download.status, StatusCode::OK);
            assert_eq!(png_size(&download.body), (64, 64));
            assert_eq!(thumbnail.status, StatusCode::OK);
        } else {
            for got in [download, thumbnail] {
                assert_eq!(
                    (got.status, got.errcode().as_deref()),
                    (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
                );
            }
        }
        server.stop().await;
    }
}

/// `myelin media migrate`: disk → S3 with a corrupt blob reported and the
/// rest copied, a second run that resumes, then the server on S3 alone.
async fn media_moves_from_disk_to_s3_and_back(backend: Backend) {
    let setup = Setup::new(backend, Store::S3);
    // Configured for S3, serving from the disk.
    let mut server = setup
        .start(|config| config.media.backend = MediaBackendKind::Disk)
        .await;
    let alice = server.register("alice", "password-alice").await;
    let contents: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("file number {i}").repeat(1000).into_bytes())
        .collect();
    let mut paths = Vec::new();
    for bytes in &contents {
        paths.push(upload_ok(&server, &alice, "text/plain", bytes.clone()).await);
    }
    let blob_path = |bytes: &[u8]| {
        use sha2::Digest as _;
        let sha: String = sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        server
            .config()
            .media_path()
            .join("blobs")
            .join(&sha[0..2])
            .join(&sha[2..4])
            .join(&sha)
    };
    let corrupt = blob_path(&contents[0]);
    std::fs::write(&corrupt, b"bit rot").expect("corrupt a blob");

    let report = myelin::commands::media_migrate(server.config(), MediaBackendKind::S3)
        .await
        .expect("the migration runs");
    assert_eq!((report.copied, report.already_there), (2, 0), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].1.contains("corrupt"), "{report:?}");

    // Repaired, a second run copies only what is missing.
    std::fs::write(&corrupt, &contents[0]).expect("repair the blob");
    let report = myelin::commands::media_migrate(server.config(), MediaBackendKind::S3)
        .await
        .expect("the migration runs");
    assert_eq!(
        (report.copied, report.already_there, report.failed.len()),
        (1, 2, 0),
        "{report:?}"
    );

    // On S3 alone: the disk's blobs are gone, every file still downloads.
    let blobs = server.config().media_path().join("blobs");
    server
        .restart_with(|config| config.media.backend = MediaBackendKind::S3)
        .await;
    std::fs::remove_dir_all(&blobs).expect("remove the disk blobs");
    for (path, bytes) in paths.iter().zip(&contents) {
        let got = get(&server, Some(&alice), &format!("{DOWNLOAD}/{path}")).await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(&got.body == bytes);
    }

    // And back to the disk.
    let report = myelin::commands::media_migrate(server.config(), MediaBackendKind::Disk)
        .await
        .expect("the migration runs");
    assert_eq!((report.copied, report.failed.len()), (3, 0), "{report:?}");
    server
        .restart_with(|config| config.media.backend = MediaBackendKind::Disk)
        .await;
    for (path, bytes) in paths.iter().zip(&contents) {
        let got = get(&server, Some(&alice), &format!("{DOWNLOAD}/{path}")).await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(&got.body == bytes);
    }
    server.stop().await;
}
