//! URL previews (`GET /_matrix/client/v1/media/preview_url`): fetch a page,
//! read its OpenGraph data, and store its image in the media repository.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1mediapreview_url>
//!
//! - [`extract`] is a pure OpenGraph reader: a small hand-written scanner of
//!   `<meta>` and `<title>` tags (no HTML parser), falling back to `<title>`
//!   and `<meta name="description">`. Pages are read as UTF-8 (lossy).
//! - [`UrlPreviewer`] fetches. The URL is chosen by a user, so unless
//!   `allow_private_addresses` it never reaches a non-public address: names
//!   resolve through [`PublicOnlyResolver`], IP literal hosts are checked
//!   before connecting, redirects are followed by hand (at most
//!   [`MAX_REDIRECTS`]) re-checking every hop, only `http` and `https` are
//!   fetched, and proxies from the environment are not used. Every fetch
//!   has the configured timeout and reads at most `max_bytes`: a longer page
//!   is cut there (what was read is previewed), a longer image is dropped.
//! - A page's `og:image` (or a URL that is itself an image) is fetched under
//!   the same rules and, when it is an image this crate can decode (PNG,
//!   JPEG, GIF, WebP), stored through [`MediaRepo::upload`] with the
//!   requesting user as its uploader; the preview gives its `mxc://` id,
//!   type, dimensions and size.
//! - Previews are cached in memory by URL (successes for [`CACHE_TTL`],
//!   fetch failures for [`FAILURE_TTL`], at most [`CACHE_ENTRIES`], the
//!   oldest evicted first), so a URL posted in a busy room is fetched once;
//!   the cached preview (and its image, uploaded by whoever asked first) is
//!   served to every user, whatever `ts` they ask for. There is no database
//!   table: a restart forgets the cache. Two simultaneous first requests for
//!   one URL both fetch it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use myelin_core::config::UrlPreviewConfig;
use myelin_core::net::{PublicOnlyResolver, blocked_literal, is_public_ip, refused_by_resolver};
use reqwest::Url;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};

use crate::repo::MediaRepo;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;
/// How long a preview is served from the cache.
pub const CACHE_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a failed fetch is remembered (and answered again).
pub const FAILURE_TTL: Duration = Duration::from_secs(60);
/// Most previews kept in the cache.
pub const CACHE_ENTRIES: usize = 1000;
/// Longest title, description or site name kept, in characters.
const TEXT_CHARS_MAX: usize = 1000;
/// Longest URL previewed, in bytes.
const URL_BYTES_MAX: usize = 4096;

/// Why there is no preview.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreviewError {
    /// Previews are off in the config.
    #[error("URL previews are disabled")]
    Disabled,
    /// Not an `http(s)` URL with a host.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The URL, or a redirect, leads to an address that may not be reached.
    #[error("URL blocked: {0}")]
    Blocked(String),
    /// The site could not be reached, answered an error, or too slowly.
    #[error("cannot fetch the URL: {0}")]
    Fetch(String),
}

/// What a page says about itself (OpenGraph, or the fallbacks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenGraph {
    pub title: Option<String>,
    pub description: Option<String>,
    pub site_name: Option<String>,
    /// Absolute `http(s)` URL of the image.
    pub image: Option<Url>,
    pub image_type: Option<String>,
    pub image_width: Option<u32>,
    pub image_height: Option<u32>,
}

/// An image stored in the media repository for a preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewImage {
    pub media_id: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub size: u64,
}

/// A preview: the page's text and its stored image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preview {
    pub title: Option<String>,
    pub description: Option<String>,
    pub site_name: Option<String>,
    pub image: Option<PreviewImage>,
}

type Cached = Result<Preview, PreviewError>;

/// Previews by URL, bounded, each entry with its own expiry.
#[derive(Default)]
struct Cache {
    entries: HashMap<String, (Instant, Instant, Cached)>,
}

impl Cache {
    fn get(&mut self, key: &str, now: Instant) -> Option<Cached> {
        match self.entries.get(key) {
            Some((_, expires, value)) if *expires > now => Some(value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: String, value: Cached, ttl: Duration, now: Instant) {
        if self.entries.len() >= CACHE_ENTRIES && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expires, _)| *expires > now);
            while self.entries.len() >= CACHE_ENTRIES {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (inserted, _, _))| *inserted)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => self.entries.remove(&k),
                    None => break,
                };
            }
        }
        self.entries.insert(key, (now, now + ttl, value));
    }
}

/// A fetched body.
struct Fetched {
    url: Url,
    /// The media type, lower case, without parameters.
    content_type: String,
    body: Vec<u8>,
    /// More than `max_bytes` were on offer.
    truncated: bool,
}

/// Makes previews; one per server, shared by every request.
pub struct UrlPreviewer {
    config: UrlPreviewConfig,
    /// Built on the first preview, so a server without previews does not
    /// carry an HTTP client.
    client: OnceLock<reqwest::Client>,
    /// Which IP literal hosts may be fetched.
    ip_allowed: fn(IpAddr) -> bool,
    cache: Mutex<Cache>,
}

fn any_ip(_: IpAddr) -> bool {
    true
}

impl UrlPreviewer {
    pub fn new(config: UrlPreviewConfig) -> Self {
        let ip_allowed = if config.allow_private_addresses {
            any_ip
        } else {
            is_public_ip
        };
        Self {
            config,
            client: OnceLock::new(),
            ip_allowed,
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs.max(1))
    }

    fn max_bytes(&self) -> usize {
        usize::try_from(self.config.max_bytes).unwrap_or(usize::MAX)
    }

    fn client(&self) -> Result<&reqwest::Client, PreviewError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!(
                "Mozilla/5.0 (compatible; Myelin/",
                env!("CARGO_PKG_VERSION"),
                "; URL preview)"
            ))
            .timeout(self.timeout())
            .connect_timeout(self.timeout())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !self.config.allow_private_addresses {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let built = builder
            .build()
            .map_err(|e| PreviewError::Fetch(format!("cannot build the HTTP client: {e}")))?;
        Ok(self.client.get_or_init(|| built))
    }

    /// The preview of `url`, from the cache or fetched; an image is stored
    /// as uploaded by `requester`.
    pub async fn preview(
        &self,
        repo: &Arc<MediaRepo>,
        requester: &str,
        url: &str,
    ) -> Result<Preview, PreviewError> {
        if !self.config.enabled {
            return Err(PreviewError::Disabled);
        }
        let url = self.check_url(url)?;
        let key = url.as_str().to_owned();
        if let Some(cached) = self
            .cache
            .lock()
            .expect("not poisoned")
            .get(&key, Instant::now())
        {
            return cached;
        }
        // Two fetches (page and image), each with redirects: bound the whole.
        let result =
            match tokio::time::timeout(3 * self.timeout(), self.generate(repo, requester, url))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(PreviewError::Fetch("timed out".to_owned())),
            };
        let ttl = match &result {
            Ok(_) => CACHE_TTL,
            Err(PreviewError::Fetch(_) | PreviewError::Blocked(_)) => FAILURE_TTL,
            Err(_) => return result,
        };
        self.cache
            .lock()
            .expect("not poisoned")
            .insert(key, result.clone(), ttl, Instant::now());
        result
    }

    async fn generate(
        &self,
        repo: &Arc<MediaRepo>,
        requester: &str,
        url: Url,
    ) -> Result<Preview, PreviewError> {
        let page = self.fetch(url).await?;
        if page.content_type.starts_with("image/") {
            let image = if page.truncated {
                None
            } else {
                self.store_image(repo, requester, page.body).await
            };
            return Ok(Preview {
                image,
                ..Preview::default()
            });
        }
        if !matches!(
            page.content_type.as_str(),
            "text/html" | "application/xhtml+xml"
        ) {
            // Nothing to read: the spec allows an empty preview.
            return Ok(Preview::default());
        }
        let og = extract(&page.body, &page.url);
        let mut image = None;
        if let Some(image_url) = og.image.clone() {
            match self.fetch(image_url).await {
                Ok(fetched) if fetched.content_type.starts_with("image/") && !fetched.truncated => {
                    image = self.store_image(repo, requester, fetched.body).await;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "URL preview: no image"),
            }
        }
        Ok(Preview {
            title: og.title,
            description: og.description,
            site_name: og.site_name,
            image,
        })
    }

    /// An `http(s)` URL with a host that may be fetched.
    fn check_url(&self, url: &str) -> Result<Url, PreviewError> {
        if url.len() > URL_BYTES_MAX {
            return Err(PreviewError::InvalidUrl("the URL is too long".to_owned()));
        }
        let parsed = Url::parse(url).map_err(|e| PreviewError::InvalidUrl(e.to_string()))?;
        self.check_parsed(parsed)
    }

    fn check_parsed(&self, mut url: Url) -> Result<Url, PreviewError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(PreviewError::InvalidUrl(format!(
                "{} URLs cannot be previewed",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(PreviewError::InvalidUrl("the URL has no host".to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(PreviewError::InvalidUrl(
                "URLs with credentials cannot be previewed".to_owned(),
            ));
        }
        if let Some(ip) = blocked_literal(&url, self.ip_allowed) {
            return Err(PreviewError::Blocked(format!(
                "{ip} is not a public address"
            )));
        }
        url.set_fragment(None);
        Ok(url)
    }

    /// GETs `url`, following redirects by hand, reading at most `max_bytes`.
    async fn fetch(&self, mut url: Url) -> Result<Fetched, PreviewError> {
        let client = self.client()?;
        let mut redirects = 0;
        let mut response = loop {
            let response = client
                .get(url.clone())
                .header(
                    reqwest::header::ACCEPT,
                    "text/html,application/xhtml+xml;q=0.9,image/*;q=0.8,*/*;q=0.1",
                )
                .send()
                .await
                .map_err(request_error)?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| PreviewError::Fetch(format!("{status} without a Location")))?;
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(PreviewError::Fetch("too many redirects".to_owned()));
                }
                let next = url
                    .join(location)
                    .map_err(|e| PreviewError::Fetch(format!("bad redirect: {e}")))?;
                url = match self.check_parsed(next) {
                    Ok(next) => next,
                    Err(PreviewError::InvalidUrl(why)) => {
                        return Err(PreviewError::Blocked(format!("redirect to {why}")));
                    }
                    Err(e) => return Err(e),
                };
                continue;
            }
            if !status.is_success() {
                return Err(PreviewError::Fetch(format!("the site answered {status}")));
            }
            break response;
        };
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let max = self.max_bytes();
        let announced = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if content_type.starts_with("image/")
            && announced.is_some_and(|n| n > self.config.max_bytes)
        {
            // A cut image is useless: do not read it.
            return Ok(Fetched {
                url,
                content_type,
                body: Vec::new(),
                truncated: true,
            });
        }
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            let room = max - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            url,
            content_type,
            body,
            truncated,
        })
    }

    /// Stores `body` when it is an image this crate decodes; `None` (logged)
    /// otherwise.
    async fn store_image(
        &self,
        repo: &Arc<MediaRepo>,
        requester: &str,
        body: Vec<u8>,
    ) -> Option<PreviewImage> {
        let (format, (width, height)) = image_info(&body)?;
        let content_type = format.to_mime_type().to_owned();
        let size = body.len() as u64;
        let stream = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from(body))]);
        match repo.upload(requester, &content_type, None, stream).await {
            Ok(media_id) => Some(PreviewImage {
                media_id,
                content_type,
                width,
                height,
                size,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "URL preview: cannot store the image");
                None
            }
        }
    }
}

/// The format and dimensions of an image in a format this crate decodes.
fn image_info(body: &[u8]) -> Option<(image::ImageFormat, (u32, u32))> {
    use image::ImageFormat;
    let reader = image::ImageReader::new(std::io::Cursor::new(body))
        .with_guessed_format()
        .ok()?;
    let format = reader.format()?;
    if !matches!(
        format,
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP
    ) {
        return None;
    }
    let dimensions = reader.into_dimensions().ok()?;
    Some((format, dimensions))
}

fn request_error(e: reqwest::Error) -> PreviewError {
    if refused_by_resolver(&e) {
        return PreviewError::Blocked("the host resolves to no public address".to_owned());
    }
    if e.is_timeout() {
        return PreviewError::Fetch("timed out".to_owned());
    }
    if e.is_connect() {
        return PreviewError::Fetch("cannot connect".to_owned());
    }
    PreviewError::Fetch(e.to_string())
}

// ---------------------------------------------------------------------------
// OpenGraph extraction

/// The OpenGraph data of an HTML page served at `page_url`.
pub fn extract(html: &[u8], page_url: &Url) -> OpenGraph {
    let text = String::from_utf8_lossy(html);
    let mut meta: HashMap<String, String> = HashMap::new();
    let mut title: Option<String> = None;
    for item in Scanner::new(&text) {
        match item {
            Item::Meta(attrs) => {
                let key = attrs
                    .iter()
                    .find(|(name, _)| name == "property")
                    .or_else(|| attrs.iter().find(|(name, _)| name == "name"))
                    .map(|(_, v)| v.trim().to_ascii_lowercase());
                let content = attrs
                    .iter()
                    .find(|(name, _)| name == "content")
                    .map(|(_, v)| v.clone());
                if let (Some(key), Some(content)) = (key, content) {
                    meta.entry(key).or_insert(content);
                }
            }
            Item::Title(t) => {
                if title.is_none() {
                    title = Some(t);
                }
            }
        }
    }
    let text_of = |keys: &[&str]| {
        keys.iter()
            .filter_map(|k| meta.get(*k))
            .map(|v| clean_text(v))
            .find(|v| !v.is_empty())
    };
    let image = [
        "og:image",
        "og:image:url",
        "og:image:secure_url",
        "twitter:image",
    ]
    .iter()
    .filter_map(|k| meta.get(*k))
    .filter_map(|v| page_url.join(v.trim()).ok())
    .find(|u| matches!(u.scheme(), "http" | "https"));
    let number = |key: &str| meta.get(key).and_then(|v| v.trim().parse::<u32>().ok());
    OpenGraph {
        title: text_of(&["og:title", "twitter:title"])
            .or_else(|| title.map(|t| clean_text(&t)).filter(|t| !t.is_empty())),
        description: text_of(&["og:description", "twitter:description", "description"]),
        site_name: text_of(&["og:site_name"]),
        image,
        image_type: meta
            .get("og:image:type")
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty()),
        image_width: number("og:image:width"),
        image_height: number("og:image:height"),
    }
}

/// Whitespace collapsed, at most [`TEXT_CHARS_MAX`] characters.
fn clean_text(s: &str) -> String {
    let mut out = String::new();
    for (i, word) in s.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > TEXT_CHARS_MAX {
        out = out.chars().take(TEXT_CHARS_MAX - 1).collect();
        out.push('…');
    }
    out
}

/// What the scanner reports.
enum Item {
    /// A `<meta>` tag's attributes: names lower case, values decoded.
    Meta(Vec<(String, String)>),
    /// The decoded text of a `<title>` element.
    Title(String),
}

/// Walks HTML for `<meta>` and `<title>` tags, skipping comments and the
/// contents of `<script>` and `<style>`. Never fails: broken markup ends
/// the walk or is skipped.
struct Scanner<'a> {
    text: &'a str,
    /// `text` with ASCII lower-cased: same byte offsets, for searching.
    lower: String,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            lower: text.to_ascii_lowercase(),
            pos: 0,
        }
    }

    /// Moves past the next `needle` (lower case); to the end if none.
    fn skip_past(&mut self, needle: &str) {
        self.pos = match self.lower[self.pos..].find(needle) {
            Some(i) => self.pos + i + needle.len(),
            None => self.text.len(),
        };
    }

    /// Reads attributes from `pos` up to and past the tag's `>`.
    fn attributes(&mut self) -> Vec<(String, String)> {
        let bytes = self.text.as_bytes();
        let mut attrs = Vec::new();
        loop {
            while self.pos < bytes.len()
                && (bytes[self.pos].is_ascii_whitespace() || bytes[self.pos] == b'/')
            {
                self.pos += 1;
            }
            if self.pos >= bytes.len() {
                return attrs;
            }
            if bytes[self.pos] == b'>' {
                self.pos += 1;
                return attrs;
            }
            let start = self.pos;
            while self.pos < bytes.len()
                && !bytes[self.pos].is_ascii_whitespace()
                && !matches!(bytes[self.pos], b'=' | b'>' | b'/')
            {
                self.pos += 1;
            }
            let name = self.lower[start..self.pos].to_owned();
            if name.is_empty() {
                // A stray `=`: step over it.
                self.pos += 1;
                continue;
            }
            while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            let mut value = String::new();
            if self.pos < bytes.len() && bytes[self.pos] == b'=' {
                self.pos += 1;
                while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
                    self.pos += 1;
                }
                if self.pos < bytes.len() && matches!(bytes[self.pos], b'"' | b'\'') {
                    let quote = bytes[self.pos];
                    let start = self.pos + 1;
                    let end = bytes[start..]
                        .iter()
                        .position(|&b| b == quote)
                        .map_or(bytes.len(), |i| start + i);
                    value = decode_entities(&self.text[start..end]);
                    self.pos = (end + 1).min(bytes.len());
                } else {
                    let start = self.pos;
                    while self.pos < bytes.len()
                        && !bytes[self.pos].is_ascii_whitespace()
                        && bytes[self.pos] != b'>'
                    {
                        self.pos += 1;
                    }
                    value = decode_entities(&self.text[start..self.pos]);
                }
            }
            attrs.push((name, value));
        }
    }
}

impl Iterator for Scanner<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let bytes = self.text.as_bytes();
        loop {
            let lt = self.pos + self.text[self.pos..].find('<')?;
            self.pos = lt + 1;
            if self.lower[self.pos..].starts_with("!--") {
                self.skip_past("-->");
                continue;
            }
            let name_start = self.pos;
            while self.pos < bytes.len() && bytes[self.pos].is_ascii_alphanumeric() {
                self.pos += 1;
            }
            if self.pos == name_start {
                // `</x>`, `<!DOCTYPE>`, `<?xml?>` or a bare `<`: not a tag we read.
                continue;
            }
            let name = self.lower[name_start..self.pos].to_owned();
            let attrs = self.attributes();
            match name.as_str() {
                "meta" => return Some(Item::Meta(attrs)),
                "title" => {
                    let start = self.pos;
                    let end = self.lower[start..]
                        .find("</title")
                        .map_or(self.text.len(), |i| start + i);
                    self.pos = end;
                    return Some(Item::Title(decode_entities(&self.text[start..end])));
                }
                "script" => self.skip_past("</script"),
                "style" => self.skip_past("</style"),
                _ => {}
            }
        }
    }
}

/// Decodes the common named references and every numeric one; anything
/// else is kept as written.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest[1..]
            .find(';')
            .filter(|&semi| semi <= 10)
            .and_then(|semi| entity(&rest[1..=semi]).map(|c| (c, semi + 2)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character an entity's name (between `&` and `;`) stands for.
fn entity(name: &str) -> Option<char> {
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "mdash" => '—',
        "ndash" => '–',
        "hellip" => '…',
        "laquo" => '«',
        "raquo" => '»',
        "copy" => '©',
        "reg" => '®',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse::<u32>().ok()?,
            };
            return char::from_u32(code).filter(|c| *c != '\0');
        }
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Url {
        Url::parse("https://example.org/blog/post.html?x=1").unwrap()
    }

    #[test]
    fn reads_opengraph_tags() {
        let html = br#"<!DOCTYPE html>
<html><head>
  <meta charset="utf-8">
  <title>Fallback title</title>
  <meta property="og:title" content="Matrix Blog Post">
  <meta property="og:description" content="This is a really cool blog post">
  <meta property="og:site_name" content="Matrix.org" />
  <meta property="og:image" content="https://example.org/img/cover.png">
  <meta property="og:image:type" content="image/png">
  <meta property="og:image:width" content="1200">
  <meta property="og:image:height" content="630">
</head><body><p>Hello</p></body></html>"#;
        let og = extract(html, &page());
        assert_eq!(og.title.as_deref(), Some("Matrix Blog Post"));
        assert_eq!(
            og.description.as_deref(),
            Some("This is a really cool blog post")
        );
        assert_eq!(og.site_name.as_deref(), Some("Matrix.org"));
        assert_eq!(
            og.image.unwrap().as_str(),
            "https://example.org/img/cover.png"
        );
        assert_eq!(og.image_type.as_deref(), Some("image/png"));
        assert_eq!((og.image_width, og.image_height), (Some(1200), Some(630)));
    }

    #[test]
    fn attribute_order_quotes_case_and_name_instead_of_property() {
        let html = br#"<HEAD>
<META CONTENT='Single &amp; quoted' PROPERTY='og:title'/>
<meta content=unquoted-description name=og:description>
<meta
   content="/images/a b.jpg"
   property="og:image"
>
</HEAD>"#;
        let og = extract(html, &page());
        assert_eq!(og.title.as_deref(), Some("Single & quoted"));
        assert_eq!(og.description.as_deref(), Some("unquoted-description"));
        assert_eq!(
            og.image.unwrap().as_str(),
            "https://example.org/images/a%20b.jpg"
        );
    }

    #[test]
    fn decodes_entities() {
        let html = br#"<meta property="og:title" content="&quot;Tom&#39;s&quot; &lt;b&gt; &#x263A; &#9731; &unknown; & done &amp">"#;
        let og = extract(html, &page());
        assert_eq!(
            og.title.as_deref(),
            Some("\"Tom's\" <b> \u{263a} \u{2603} &unknown; & done &amp")
        );
        assert_eq!(
            decode_entities("&#0;&#xFFFFFFFF;&#;"),
            "&#0;&#xFFFFFFFF;&#;"
        );
    }

    #[test]
    fn falls_back_to_title_and_description() {
        let html = b"<html><head><title>\n  The   page\n  title &mdash; site </title>\
            <meta name=\"Description\" content=\"  A plain description. \">\
            </head><body><title>not this</title></body></html>";
        let og = extract(html, &page());
        assert_eq!(og.title.as_deref(), Some("The page title — site"));
        assert_eq!(og.description.as_deref(), Some("A plain description."));
        assert_eq!(og.image, None);
    }

    #[test]
    fn relative_and_unusable_images() {
        let html = br#"<meta property="og:image" content="../img/x.png?a=1&amp;b=2">"#;
        let og = extract(html, &page());
        assert_eq!(
            og.image.unwrap().as_str(),
            "https://example.org/img/x.png?a=1&b=2"
        );
        let html = br#"<meta property="og:image" content="//cdn.example.net/x.png">"#;
        let og = extract(html, &page());
        assert_eq!(og.image.unwrap().as_str(), "https://cdn.example.net/x.png");
        let html = br#"<meta property="og:image" content="javascript:alert(1)">
            <meta property="og:image" content="data:image/png;base64,AAAA">"#;
        assert_eq!(extract(html, &page()).image, None);
    }

    #[test]
    fn ignores_comments_scripts_and_styles() {
        let html = br#"<!-- <meta property="og:title" content="commented"> -->
<script>var s = '<meta property="og:title" content="scripted">';</script>
<style>/* <title>styled</title> */</style>
<meta property="og:title" content="real">"#;
        assert_eq!(extract(html, &page()).title.as_deref(), Some("real"));
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: [&[u8]; 12] = [
            b"",
            b"<",
            b"<<<<>>>>",
            b"<meta",
            b"<meta property=\"og:title\" content=\"unterminated",
            b"<meta property='og:title' content=",
            b"<title>no end",
            b"<!-- no end",
            b"<script>no end",
            b"<meta = = => <meta/> <meta property=og:title content=x",
            b"\xff\xfe<\xc3\x28meta property=\"og:title\" content=\"\xe2\x82\">",
            b"&&&;&#x;&#99999999999;<title>&#x110000;</title>",
        ];
        for html in inputs {
            let _ = extract(html, &page());
        }
        let og = extract(b"<meta property=og:title content=x", &page());
        assert_eq!(og.title.as_deref(), Some("x"));
        // Multi-byte text right before delimiters.
        let og = extract(
            "<title>Ünïcödé ✓</title><meta property=\"og:description\" content=\"日本語\">"
                .as_bytes(),
            &page(),
        );
        assert_eq!(og.title.as_deref(), Some("Ünïcödé ✓"));
        assert_eq!(og.description.as_deref(), Some("日本語"));
        // Random bytes.
        let alphabet = b"<>=\"'/ &;#!-metaMETApropertycontenttitle\xc3\xa9\xff";
        let mut state = 0x2545_f491_u32;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..300)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    alphabet[state as usize % alphabet.len()]
                })
                .collect();
            let _ = extract(&bytes, &page());
        }
    }

    #[test]
    fn long_text_is_cut() {
        let long = "word ".repeat(1000);
        let html = format!("<meta property=\"og:description\" content=\"{long}\">");
        let og = extract(html.as_bytes(), &page());
        assert_eq!(og.description.unwrap().chars().count(), TEXT_CHARS_MAX);
    }

    #[test]
    fn no_tags_no_preview() {
        let og = extract(b"just some text, not HTML", &page());
        assert_eq!(og, OpenGraph::default());
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let mut cache = Cache::default();
        let now = Instant::now();
        let preview = Ok(Preview {
            title: Some("t".to_owned()),
            ..Preview::default()
        });
        cache.insert("a".to_owned(), preview.clone(), CACHE_TTL, now);
        assert_eq!(cache.get("a", now), Some(preview.clone()));
        assert_eq!(cache.get("a", now + CACHE_TTL), None);
        assert!(cache.entries.is_empty());
        for i in 0..CACHE_ENTRIES + 10 {
            let at = now + Duration::from_millis(i as u64);
            cache.insert(format!("u{i}"), preview.clone(), CACHE_TTL, at);
        }
        assert_eq!(cache.entries.len(), CACHE_ENTRIES);
        let later = now + Duration::from_secs(1);
        assert_eq!(cache.get("u0", later), None, "the oldest went first");
        assert!(
            cache
                .get(&format!("u{}", CACHE_ENTRIES + 9), later)
                .is_some()
        );
    }

    fn previewer(allow_private_addresses: bool) -> UrlPreviewer {
        UrlPreviewer::new(UrlPreviewConfig {
            enabled: true,
            allow_private_addresses,
            max_bytes: 1024,
            timeout_secs: 2,
        })
    }

    #[test]
    fn urls_are_checked() {
        let p = previewer(false);
        for bad in [
            "file:///etc/passwd",
            "ftp://example.org/x",
            "javascript:alert(1)",
            "not a url",
            "http://",
            "https://user:pw@example.org/",
            "",
        ] {
            assert!(
                matches!(p.check_url(bad), Err(PreviewError::InvalidUrl(_))),
                "{bad}"
            );
        }
        for blocked in [
            "http://127.0.0.1/",
            "http://[::1]:8080/",
            "http://10.0.0.1/",
            "http://0x7f.1/",
            "https://169.254.169.254/latest/meta-data",
            "http://[::ffff:192.168.0.1]/",
        ] {
            assert!(
                matches!(p.check_url(blocked), Err(PreviewError::Blocked(_))),
                "{blocked}"
            );
            assert!(previewer(true).check_url(blocked).is_ok(), "{blocked}");
        }
        assert_eq!(
            p.check_url("https://example.org/a#frag").unwrap().as_str(),
            "https://example.org/a"
        );
    }

    /// A one-route HTTP server on 127.0.0.1 answering every request with
    /// `response`; counts requests.
    async fn stub(response: String) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        (addr, hits)
    }

    #[tokio::test]
    async fn redirects_are_checked_at_every_hop() {
        use std::sync::atomic::Ordering;
        // Only 127.0.0.1 is "public" here: a redirect to another loopback
        // address stands for one to a private address.
        let only_first = |ip: IpAddr| ip == IpAddr::from([127, 0, 0, 1]);
        let mut p = previewer(false);
        p.ip_allowed = only_first;
        let (target, target_hits) = stub(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
        )
        .await;
        let private = format!("http://127.0.0.2:{}/", target.port());
        let (addr, hits) = stub(format!(
            "HTTP/1.1 302 Found\r\nlocation: {private}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
        .await;
        let url = Url::parse(&format!("http://{addr}/")).unwrap();
        let err = p.fetch(url).await.err().expect("refused");
        assert!(matches!(err, PreviewError::Blocked(_)), "{err:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(target_hits.load(Ordering::SeqCst), 0, "never connected");

        // Endless redirects stop.
        let (addr, hits) = stub(
            "HTTP/1.1 301 Moved\r\nlocation: /again\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
        )
        .await;
        let url = Url::parse(&format!("http://{addr}/")).unwrap();
        let err = p.fetch(url).await.err().expect("refused");
        assert!(matches!(err, PreviewError::Fetch(_)), "{err:?}");
        assert_eq!(hits.load(Ordering::SeqCst), MAX_REDIRECTS + 1);
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_blocked() {
        let err = previewer(false)
            .fetch(Url::parse("http://localhost:9/").unwrap())
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, PreviewError::Blocked(_)), "{err:?}");
    }

    #[tokio::test]
    async fn bodies_are_cut_at_max_bytes() {
        let body = "x".repeat(5000);
        let (addr, _) = stub(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ))
        .await;
        let fetched = previewer(true)
            .fetch(Url::parse(&format!("http://{addr}/")).unwrap())
            .await
            .unwrap();
        assert_eq!(fetched.content_type, "text/html");
        assert_eq!(fetched.body.len(), 1024);
        assert!(fetched.truncated);
    }
}
