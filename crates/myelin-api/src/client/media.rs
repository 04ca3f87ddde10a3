//! The content repository: uploads (direct and asynchronous), downloads with
//! ranges, thumbnails and the upload limit. The work is `myelin_media::MediaRepo`'s;
//! this module turns HTTP into calls and answers into HTTP.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#content-repository>
//!
//! Downloads are served as untrusted content: a sandboxing
//! `Content-Security-Policy`, `X-Content-Type-Options: nosniff`, and
//! `Content-Disposition: attachment` for every type but those a browser shows
//! without running anything. Only local media exists until federation.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use myelin_core::{ErrorKind, MatrixError};
use myelin_media::thumbnail::Method;
use myelin_media::{ByteRange, RepoError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{MatrixPath, MatrixQuery};
use crate::state::AppState;

/// How long a download waits for a pending upload when the client does not
/// say.
const DEFAULT_WAIT_MS: u64 = 20_000;
/// Longest file name accepted, in bytes.
const FILENAME_LENGTH_MAX: usize = 255;
/// The policy every download is served with: nothing in it runs.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; \
     object-src 'self';";
/// Types served `inline`: shown by browsers without running anything.
/// Everything else (HTML, SVG, JavaScript, …) is an `attachment`.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

fn repo_error(e: RepoError) -> ApiError {
    let error = match e {
        RepoError::NotFound => MatrixError::not_found("Media not found"),
        RepoError::NotYetUploaded => MatrixError::new(
            ErrorKind::NotYetUploaded,
            "The media has not been uploaded yet",
        ),
        RepoError::TooLarge { max } => MatrixError::new(
            ErrorKind::TooLarge,
            format!("Uploads may be at most {max} bytes"),
        ),
        RepoError::Forbidden(why) => MatrixError::forbidden(why),
        RepoError::CannotOverwrite => MatrixError::new(
            ErrorKind::CannotOverwriteMedia,
            "This media id already has content",
        ),
        RepoError::TooManyPending => MatrixError::new(
            ErrorKind::LimitExceeded {
                retry_after_ms: 60_000,
            },
            "Too many media ids are waiting for their upload",
        ),
        RepoError::Thumbnail(e) => MatrixError::new(
            ErrorKind::Unknown,
            format!("Cannot make a thumbnail of this media: {e}"),
        ),
        RepoError::Receive(e) => {
            MatrixError::new(ErrorKind::Unknown, format!("The upload failed: {e}"))
        }
        e @ (RepoError::BadRange(_)
        | RepoError::Storage(_)
        | RepoError::Media(_)
        | RepoError::Io(_)) => MatrixError::internal(e),
    };
    error.into()
}

#[derive(Deserialize)]
pub struct UploadQuery {
    filename: Option<String>,
}

fn check_filename(filename: &Option<String>) -> ApiResult<()> {
    if let Some(name) = filename
        && (name.len() > FILENAME_LENGTH_MAX || name.chars().any(char::is_control))
    {
        return Err(MatrixError::invalid_param("Invalid filename").into());
    }
    Ok(())
}

/// The upload's `Content-Type` (default `application/octet-stream`), and a
/// 413 at once when `Content-Length` announces too much.
fn upload_headers(state: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    let max = state.media.config().max_upload_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max
    {
        return Err(repo_error(RepoError::TooLarge { max }));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 255)
        .unwrap_or("application/octet-stream");
    Ok(content_type.to_owned())
}

fn mxc(state: &AppState, media_id: &str) -> String {
    format!("mxc://{}/{media_id}", state.server_name())
}

/// `POST /_matrix/media/v3/upload`
pub async fn upload(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixQuery(query): MatrixQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    check_filename(&query.filename)?;
    let content_type = upload_headers(&state, &headers)?;
    let media_id = state
        .media
        .upload(
            &me.user_id,
            &content_type,
            query.filename,
            body.into_data_stream(),
        )
        .await
        .map_err(repo_error)?;
    Ok(Json(json!({ "content_uri": mxc(&state, &media_id) })))
}

/// `POST /_matrix/media/v1/create`: an id to upload to later.
pub async fn create(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<Value>> {
    let (media_id, expires) = state.media.create(&me.user_id).await.map_err(repo_error)?;
    Ok(Json(json!({
        "content_uri": mxc(&state, &media_id),
        "unused_expires_at": expires,
    })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
pub async fn upload_to(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    check_filename(&query.filename)?;
    if server_name != state.server_name() || !valid_media_id(&media_id) {
        return Err(repo_error(RepoError::NotFound));
    }
    let content_type = upload_headers(&state, &headers)?;
    state
        .media
        .upload_to(
            &me.user_id,
            &server_name,
            &media_id,
            &content_type,
            query.filename,
            body.into_data_stream(),
        )
        .await
        .map_err(repo_error)?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v1/media/config` (and the deprecated
/// `/_matrix/media/v3/config`).
pub async fn config(State(state): State<AppState>, Auth(_me): Auth) -> Json<Value> {
    Json(json!({ "m.upload.size": state.media.config().max_upload_bytes }))
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<u64>,
}

/// Media ids are ours (letters and digits); anything else names no media,
/// and never reaches storage.
fn valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn wait_of(timeout_ms: Option<u64>) -> Duration {
    Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_WAIT_MS))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
pub async fn download(
    State(state): State<AppState>,
    Auth(_me): Auth,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_download(&state, &server_name, &media_id, None, query, &headers).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
pub async fn download_as(
    State(state): State<AppState>,
    Auth(_me): Auth,
    MatrixPath((server_name, media_id, filename)): MatrixPath<(String, String, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_download(
        &state,
        &server_name,
        &media_id,
        Some(filename),
        query,
        &headers,
    )
    .await
}

/// The deprecated unauthenticated `GET /_matrix/media/v3/download/…`: served
/// only when `media.legacy_unauthenticated` is on.
pub async fn legacy_download(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    legacy_allowed(&state)?;
    serve_download(&state, &server_name, &media_id, None, query, &headers).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
/// (deprecated, unauthenticated).
pub async fn legacy_download_as(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id, filename)): MatrixPath<(String, String, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    legacy_allowed(&state)?;
    serve_download(
        &state,
        &server_name,
        &media_id,
        Some(filename),
        query,
        &headers,
    )
    .await
}

fn legacy_allowed(state: &AppState) -> ApiResult<()> {
    if state.media.config().legacy_unauthenticated {
        Ok(())
    } else {
        Err(MatrixError::not_found(
            "Unauthenticated media is off on this server: use /_matrix/client/v1/media",
        )
        .into())
    }
}

async fn serve_download(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    filename: Option<String>,
    query: DownloadQuery,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if server_name != state.server_name() || !valid_media_id(media_id) {
        return Err(repo_error(RepoError::NotFound));
    }
    let wait = wait_of(query.timeout_ms);
    // The length is needed to read a suffix range; the content (and its
    // length) comes first.
    let content = state
        .media
        .content(server_name, media_id, wait)
        .await
        .map_err(repo_error)?;
    let total = u64::try_from(content.size).unwrap_or(0);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(value) => match parse_range(value, total) {
            RangeHeader::Ignore => None,
            RangeHeader::Range(range) => Some(range),
            RangeHeader::Unsatisfiable => return Ok(unsatisfiable(total)),
        },
    };
    let download = match state
        .media
        .download(server_name, media_id, range, wait)
        .await
    {
        Ok(download) => download,
        Err(RepoError::BadRange(_)) => return Ok(unsatisfiable(total)),
        Err(e) => return Err(repo_error(e)),
    };
    let filename = filename.or(download.content.filename.clone());
    let mut response = blob_response(
        &download.content.content_type,
        filename.as_deref(),
        download.blob,
    );
    response
        .headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(response)
}

#[derive(Deserialize)]
pub struct ThumbnailQuery {
    width: u32,
    height: u32,
    method: Option<String>,
    #[serde(default)]
    animated: bool,
    timeout_ms: Option<u64>,
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub async fn thumbnail(
    State(state): State<AppState>,
    Auth(_me): Auth,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
) -> ApiResult<Response> {
    serve_thumbnail(&state, &server_name, &media_id, query).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated,
/// unauthenticated).
pub async fn legacy_thumbnail(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
) -> ApiResult<Response> {
    legacy_allowed(&state)?;
    serve_thumbnail(&state, &server_name, &media_id, query).await
}

async fn serve_thumbnail(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    query: ThumbnailQuery,
) -> ApiResult<Response> {
    let method = match query.method.as_deref() {
        None => Method::Scale,
        Some(m) => Method::parse(m)
            .ok_or_else(|| MatrixError::invalid_param("method must be `scale` or `crop`"))?,
    };
    if query.width == 0 || query.height == 0 {
        return Err(MatrixError::invalid_param("width and height must be positive").into());
    }
    if server_name != state.server_name() || !valid_media_id(media_id) {
        return Err(repo_error(RepoError::NotFound));
    }
    let thumbnail = state
        .media
        .thumbnail(
            server_name,
            media_id,
            query.width,
            query.height,
            method,
            query.animated,
            wait_of(query.timeout_ms),
        )
        .await
        .map_err(|e| match e {
            RepoError::Thumbnail(myelin_media::thumbnail::ThumbnailError::InvalidSize {
                ..
            }) => MatrixError::invalid_param("The requested thumbnail size is too large").into(),
            e => repo_error(e),
        })?;
    Ok(blob_response(
        &thumbnail.thumbnail.content_type,
        None,
        thumbnail.blob,
    ))
}

/// A blob as a response, with the headers untrusted content needs; 206 with
/// `Content-Range` for a part.
fn blob_response(content_type: &str, filename: Option<&str>, blob: myelin_media::Blob) -> Response {
    let status = if blob.range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut response = (status, Body::from_stream(blob.body)).into_response();
    let h = response.headers_mut();
    let content_type_value = HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, content_type_value);
    let body_len = match blob.range {
        Some((start, end)) => end - start + 1,
        None => blob.total_len,
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if let Some((start, end)) = blob.range
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", blob.total_len))
    {
        h.insert(header::CONTENT_RANGE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&content_disposition(content_type, filename)) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    // Content never changes under an id.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    response
}

/// 416 with the length, for a range past the end.
fn unsatisfiable(total: u64) -> Response {
    let mut response = (
        StatusCode::RANGE_NOT_SATISFIABLE,
        Json(json!({ "errcode": "M_UNKNOWN", "error": "Range not satisfiable" })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

/// `inline` or `attachment`, with the file name (RFC 6266: an ASCII
/// fallback and the UTF-8 form).
fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let disposition = if INLINE_TYPES.contains(&essence.as_str()) {
        "inline"
    } else {
        "attachment"
    };
    match filename {
        None => disposition.to_owned(),
        Some(name) => {
            let ascii: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let encoded: String = name
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{disposition}; filename=\"{ascii}\"; filename*=utf-8''{encoded}")
        }
    }
}

enum RangeHeader {
    /// Not a single byte range we serve: answer with the whole content.
    Ignore,
    Range(ByteRange),
    Unsatisfiable,
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` (one range; several ranges are
/// answered with the whole content, as HTTP allows).
fn parse_range(value: &str, total: u64) -> RangeHeader {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeHeader::Ignore;
    };
    if spec.contains(',') {
        return RangeHeader::Ignore;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeHeader::Ignore;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    match (start.trim().is_empty(), end.trim().is_empty()) {
        // The last `n` bytes.
        (true, false) => match parse(end) {
            Some(0) => RangeHeader::Unsatisfiable,
            Some(n) if total > 0 => RangeHeader::Range(ByteRange {
                start: total.saturating_sub(n),
                end: None,
            }),
            Some(_) => RangeHeader::Unsatisfiable,
            None => RangeHeader::Ignore,
        },
        (false, _) => {
            let Some(start) = parse(start) else {
                return RangeHeader::Ignore;
            };
            let end = if end.trim().is_empty() {
                None
            } else {
                match parse(end) {
                    Some(end) if end >= start => Some(end),
                    _ => return RangeHeader::Ignore,
                }
            };
            if start >= total {
                RangeHeader::Unsatisfiable
            } else {
                RangeHeader::Range(ByteRange { start, end })
            }
        }
        (true, true) => RangeHeader::Ignore,
    }
}

#[derive(Deserialize)]
pub struct PreviewQuery {
    url: String,
    /// The preferred point in time (ms). Only the newest preview is kept,
    /// which the spec allows; the value is checked but unused.
    #[serde(rename = "ts")]
    _ts: Option<i64>,
}

/// `GET /_matrix/client/v1/media/preview_url` (and the deprecated
/// `/_matrix/media/v3/preview_url`, authenticated too): the OpenGraph data
/// of a page, its image stored here (uploaded as the requesting user).
///
/// The spec lists no errors but 429; this answers 404 `M_UNRECOGNIZED` when
/// previews are disabled (as Synapse, which then has no such endpoint),
/// 400 `M_INVALID_PARAM` for a URL that is not `http(s)` with a host,
/// 403 `M_FORBIDDEN` for one (or a redirect) leading to a non-public
/// address, and 502 `M_UNKNOWN` when the site cannot be fetched. Content
/// that is neither HTML nor an image previews as `{}`.
pub async fn preview_url(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixQuery(query): MatrixQuery<PreviewQuery>,
) -> ApiResult<Json<Value>> {
    use myelin_media::preview::PreviewError;
    let preview = state
        .previews
        .preview(&state.media, &me.user_id, &query.url)
        .await
        .map_err(|e| -> ApiError {
            match e {
                PreviewError::Disabled => MatrixError::new(
                    ErrorKind::Unrecognized {
                        method_not_allowed: false,
                    },
                    "URL previews are disabled on this server",
                )
                .into(),
                PreviewError::InvalidUrl(why) => {
                    MatrixError::invalid_param(format!("Cannot preview this URL: {why}")).into()
                }
                PreviewError::Blocked(why) => {
                    MatrixError::forbidden(format!("URL blocked: {why}")).into()
                }
                PreviewError::Fetch(why) => ApiError::WithStatus(
                    StatusCode::BAD_GATEWAY,
                    MatrixError::unknown(format!("Cannot fetch the URL: {why}")),
                ),
            }
        })?;
    let mut body = serde_json::Map::new();
    let text = [
        ("og:title", preview.title),
        ("og:description", preview.description),
        ("og:site_name", preview.site_name),
    ];
    for (key, value) in text {
        if let Some(value) = value {
            body.insert(key.to_owned(), json!(value));
        }
    }
    if let Some(image) = preview.image {
        body.insert("og:image".to_owned(), json!(mxc(&state, &image.media_id)));
        body.insert("og:image:type".to_owned(), json!(image.content_type));
        body.insert("og:image:width".to_owned(), json!(image.width));
        body.insert("og:image:height".to_owned(), json!(image.height));
        body.insert("matrix:image:size".to_owned(), json!(image.size));
    }
    Ok(Json(Value::Object(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let range = |v| match parse_range(v, 100) {
            RangeHeader::Range(r) => Some((r.start, r.end)),
            RangeHeader::Ignore => None,
            RangeHeader::Unsatisfiable => Some((u64::MAX, None)),
        };
        assert_eq!(range("bytes=0-9"), Some((0, Some(9))));
        assert_eq!(range("bytes=90-"), Some((90, None)));
        assert_eq!(range("bytes=-10"), Some((90, None)));
        assert_eq!(range("bytes=-1000"), Some((0, None)));
        assert_eq!(range("bytes=100-"), Some((u64::MAX, None)));
        assert_eq!(range("bytes=0-1,5-6"), None);
        assert_eq!(range("items=0-1"), None);
        assert_eq!(range("bytes=9-1"), None);
    }

    #[test]
    fn dispositions() {
        assert_eq!(content_disposition("image/png", None), "inline");
        assert_eq!(content_disposition("text/html", None), "attachment");
        assert_eq!(content_disposition("image/svg+xml", None), "attachment");
        assert_eq!(
            content_disposition("text/plain; charset=utf-8", Some("a \"b\".txt")),
            "inline; filename=\"a _b_.txt\"; filename*=utf-8''a%20%22b%22.txt"
        );
        assert_eq!(
            content_disposition("application/pdf", Some("é.pdf")),
            "attachment; filename=\"_.pdf\"; filename*=utf-8''%C3%A9.pdf"
        );
    }
}
