//! URL previews over HTTP (`/_matrix/client/v1/media/preview_url` and the
//! deprecated `/_matrix/media/v3/preview_url`), against a small site served
//! on loopback inside the test: OpenGraph data, the image stored in the
//! media repository, the cache, the size limit, and the SSRF rules.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode as AxumStatus, Uri, header};
use axum::response::{IntoResponse, Response};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PREVIEW: &str = "/_matrix/client/v1/media/preview_url";
const LEGACY_PREVIEW: &str = "/_matrix/media/v3/preview_url";
/// `media.url_preview.max_bytes` in these tests.
const MAX_BYTES: u64 = 4096;

backend_tests!(
    previews_a_page_and_its_image_once,
    images_other_content_and_failures,
    pages_over_max_bytes_are_cut,
    private_addresses_are_refused_by_default,
    bad_urls_and_parameters,
    redirects_are_checked,
    disabled_previews,
);

/// Requests per path.
type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// A tiny site: what it serves, and which paths were asked for.
struct Site {
    addr: SocketAddr,
    hits: Hits,
    png: Vec<u8>,
}

impl Site {
    async fn start() -> Self {
        let png = png();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let app = axum::Router::new()
            .fallback(serve)
            .with_state((hits.clone(), png.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, hits, png }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

/// A 16×8 PNG.
fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8 * 16, y as u8 * 32, 99]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

const PAGE: &str = r#"<!DOCTYPE html>
<html><head>
<title>Fallback</title>
<meta content="A &quot;test&quot; page &amp; more" property="og:description">
<meta property='og:title' content='Matrix &#39;Blog&#39; Post'>
<meta property="og:site_name" content="Example">
<meta property="og:image" content="/img/cover.png">
</head><body>Hello</body></html>"#;

async fn serve(State((hits, png)): State<(Hits, Vec<u8>)>, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let html =
        |body: String| ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    let redirect = |to: &str| {
        let mut response = AxumStatus::FOUND.into_response();
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(to).unwrap());
        response
    };
    match path.as_str() {
        "/page" => html(PAGE.to_owned()),
        "/img/cover.png" | "/photo" => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        "/plain" => html(
            "<html><head><title>Just a title</title>\
             <meta name=\"description\" content=\"Described\"></head></html>"
                .to_owned(),
        ),
        "/big" => {
            // The title is early, the description after the limit.
            let padding = "<p>padding</p>\n".repeat(MAX_BYTES as usize / 10);
            html(format!(
                "<html><head><meta property=\"og:title\" content=\"Big page\">{padding}\
                 <meta property=\"og:description\" content=\"Too far\"></head></html>"
            ))
        }
        "/document.pdf" => (
            [(header::CONTENT_TYPE, "application/pdf")],
            b"%PDF-1.4".to_vec(),
        )
            .into_response(),
        "/redirect-to-page" => redirect("/page"),
        "/redirect-to-ftp" => redirect("ftp://example.org/file"),
        "/redirect-to-file" => redirect("file:///etc/passwd"),
        "/loop" => redirect("/loop"),
        _ => AxumStatus::NOT_FOUND.into_response(),
    }
}

async fn preview_at(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    query: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = server.client.get(server.url(path)).query(query);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let (status, _, body) = server.send(req).await;
    (status, body)
}

async fn preview(server: &TestServer, token: &str, url: &str) -> (StatusCode, Value) {
    preview_at(server, PREVIEW, Some(token), &[("url", url)]).await
}

async fn start(backend: Backend, allow_private_addresses: bool) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.media.url_preview.allow_private_addresses = allow_private_addresses;
        config.media.url_preview.max_bytes = MAX_BYTES;
        config.media.url_preview.timeout_secs = 5;
    })
    .await
}

async fn previews_a_page_and_its_image_once(backend: Backend) {
    let site = Site::start().await;
    let server = start(backend, true).await;
    let alice = server.register("alice", "password").await;

    let (status, body) = preview(&server, &alice.access_token, &site.url("/page")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["og:title"], json!("Matrix 'Blog' Post"));
    assert_eq!(body["og:description"], json!("A \"test\" page & more"));
    assert_eq!(body["og:site_name"], json!("Example"));
    assert_eq!(body["og:image:type"], json!("image/png"));
    assert_eq!(body["og:image:width"], json!(16));
    assert_eq!(body["og:image:height"], json!(8));
    assert_eq!(body["matrix:image:size"], json!(site.png.len()));
    let mxc = body["og:image"].as_str().expect("an image").to_owned();
    let media = mxc.strip_prefix("mxc://").expect("an mxc URI");

    // The image is in the media repository.
    let resp = server
        .client
        .get(server.url(&format!("/_matrix/client/v1/media/download/{media}")))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE.as_str()], "image/png");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), site.png);

    // Again, by another user, on the deprecated path, with `ts`: from the
    // cache.
    let bob = server.register("bob", "password").await;
    let again = preview_at(
        &server,
        LEGACY_PREVIEW,
        Some(&bob.access_token),
        &[("url", &site.url("/page")), ("ts", "1510610716656")],
    )
    .await;
    assert_eq!(again, (StatusCode::OK, body.clone()));
    assert_eq!(site.hits("/page"), 1, "the page was fetched once");
    assert_eq!(site.hits("/img/cover.png"), 1, "the image was fetched once");

    // A fragment does not make another page.
    let fragment = preview(&server, &bob.access_token, &site.url("/page#part")).await;
    assert_eq!(fragment, (StatusCode::OK, body));
    assert_eq!(site.hits("/page"), 1);

    // No og tags: the title and description fall back.
    let (status, body) = preview(&server, &alice.access_token, &site.url("/plain")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"og:title": "Just a title", "og:description": "Described"})
    );
    server.stop().await;
}

async fn images_other_content_and_failures(backend: Backend) {
    let site = Site::start().await;
    let server = start(backend, true).await;
    let alice = server.register("alice", "password").await;
    let token = &alice.access_token;

    // A URL that is an image previews as that image.
    let (status, body) = preview(&server, token, &site.url("/photo")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["og:image"].as_str().unwrap().starts_with("mxc://"));
    assert_eq!(body["og:image:width"], json!(16));
    assert_eq!(body["matrix:image:size"], json!(site.png.len()));
    assert!(body.get("og:title").is_none());

    // Content that is neither: an empty preview.
    let (status, body) = preview(&server, token, &site.url("/document.pdf")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));

    // A site answering an error: 502, and remembered for a while.
    let missing = site.url("/missing");
    let result = preview(&server, token, &missing).await;
    assert_error(&result, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    let result = preview(&server, token, &missing).await;
    assert_error(&result, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    assert_eq!(site.hits("/missing"), 1);

    // Nobody listening.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let result = preview(&server, token, &format!("http://{closed}/")).await;
    assert_error(&result, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    server.stop().await;
}

async fn pages_over_max_bytes_are_cut(backend: Backend) {
    let site = Site::start().await;
    let server = start(backend, true).await;
    let alice = server.register("alice", "password").await;
    let (status, body) = preview(&server, &alice.access_token, &site.url("/big")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"og:title": "Big page"}),
        "read up to the limit"
    );
    server.stop().await;
}

async fn private_addresses_are_refused_by_default(backend: Backend) {
    let site = Site::start().await;
    let server = TestServer::start_with(backend, |_| {}).await;
    let alice = server.register("alice", "password").await;
    let port = site.addr.port();
    for url in [
        site.url("/page"),
        format!("http://localhost:{port}/page"),
        format!("http://[::1]:{port}/page"),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
        format!("http://2130706433:{port}/page"),
        "http://10.0.0.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://0.0.0.0/".to_owned(),
    ] {
        let result = preview(&server, &alice.access_token, &url).await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    assert_eq!(site.total_hits(), 0, "the site saw no request");
    server.stop().await;
}

async fn bad_urls_and_parameters(backend: Backend) {
    let server = start(backend, true).await;
    let alice = server.register("alice", "password").await;
    let token = &alice.access_token;
    for url in [
        "file:///etc/passwd",
        "ftp://ftp.example.org/file",
        "javascript:alert(1)",
        "not a url",
        "http://",
        "https://user:secret@example.org/",
        "",
    ] {
        let result = preview(&server, token, url).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    let result = preview_at(&server, PREVIEW, Some(token), &[]).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    let result = preview_at(
        &server,
        PREVIEW,
        Some(token),
        &[("url", "https://example.org/"), ("ts", "yesterday")],
    )
    .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    for path in [PREVIEW, LEGACY_PREVIEW] {
        let result = preview_at(&server, path, None, &[("url", "https://example.org/")]).await;
        assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    }
    server.stop().await;
}

async fn redirects_are_checked(backend: Backend) {
    let site = Site::start().await;
    let server = start(backend, true).await;
    let alice = server.register("alice", "password").await;
    let token = &alice.access_token;

    // Followed by hand to an allowed page.
    let (status, body) = preview(&server, token, &site.url("/redirect-to-page")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["og:title"], json!("Matrix 'Blog' Post"));

    // Every hop is checked: a redirect off http(s) is refused.
    for path in ["/redirect-to-ftp", "/redirect-to-file"] {
        let result = preview(&server, token, &site.url(path)).await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }

    // Endless redirects stop.
    let result = preview(&server, token, &site.url("/loop")).await;
    assert_error(&result, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    assert_eq!(site.hits("/loop"), 6, "the first request and 5 redirects");
    server.stop().await;
}

async fn disabled_previews(backend: Backend) {
    let site = Site::start().await;
    let server = TestServer::start_with(backend, |config| {
        config.media.url_preview.enabled = false;
        config.media.url_preview.allow_private_addresses = true;
    })
    .await;
    let alice = server.register("alice", "password").await;
    for path in [PREVIEW, LEGACY_PREVIEW] {
        let result = preview_at(
            &server,
            path,
            Some(&alice.access_token),
            &[("url", &site.url("/page"))],
        )
        .await;
        assert_error(&result, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    }
    assert_eq!(site.total_hits(), 0);
    server.stop().await;
}
