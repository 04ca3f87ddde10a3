//! `myelin.toml`: the configuration, its defaults, environment overrides and
//! the commented template that `myelin generate-config` writes.
//!
//! Every key can be overridden by an environment variable: `MYELIN_` followed
//! by the key's path in upper case, sections joined by `__`
//! (`rate_limits.login.per_second` is `MYELIN_RATE_LIMITS__LOGIN__PER_SECOND`).
//! The five top-level keys are thus `MYELIN_SERVER_NAME`, `MYELIN_LISTEN`,
//! `MYELIN_DATA_DIR`, `MYELIN_DATABASE_URL` and `MYELIN_REGISTRATION`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Environment variables with the `MYELIN_` prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["MYELIN_CONFIG", "MYELIN_LOG"];
/// Prefix of variables reserved for the test suite.
const ENV_TEST_PREFIX: &str = "MYELIN_TEST_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The server name: the part after the `:` in user ids. Never change it
    /// once users exist.
    pub server_name: String,
    /// Address of the Client-Server (and later Server-Server) listener.
    pub listen: String,
    /// Where the embedded default keeps its files.
    pub data_dir: PathBuf,
    /// `sqlite:PATH` or `postgres://…`; default `sqlite:<data_dir>/myelin.db`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Who may register: `open`, `token` (a registration token) or `closed`.
    pub registration: RegistrationMode,
    /// The URL clients reach this server at; default derived from `listen`
    /// for `localhost`, else `https://<server_name>/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_baseurl: Option<String>,
    /// Default `<data_dir>/signing.key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_path: Option<PathBuf>,
    /// Default `<data_dir>/media`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_path: Option<PathBuf>,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy
    /// that sets it).
    pub trust_forwarded_for: bool,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub rate_limits: RateLimitsConfig,
    pub well_known: WellKnownConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub push: PushConfig,
    pub media: MediaConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    Open,
    Token,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL: connections in the pool.
    pub pool_size: u32,
    /// SQLite: read connections beside the one writer.
    pub sqlite_readers: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of an access token issued with a refresh token.
    pub refreshable_access_token_lifetime_ms: u64,
    /// Lifetime of a refresh token; 0 means it never expires.
    pub refresh_token_lifetime_ms: u64,
    /// How long a user-interactive authentication session lives.
    pub uia_session_lifetime_ms: u64,
    /// argon2id memory cost in KiB.
    pub password_hash_memory_kib: u32,
    /// argon2id iterations.
    pub password_hash_iterations: u32,
    /// Shortest password accepted at registration and password change.
    pub password_length_min: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted on JSON endpoints.
    pub max_request_body_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Login attempts per client address.
    pub login: RateLimit,
    /// Login attempts per account (whatever the address).
    pub login_per_account: RateLimit,
    /// Registration requests (and username/token checks) per client address.
    pub registration: RateLimit,
    /// Reports of events and rooms per user.
    pub reports: RateLimit,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
/// `per_second = 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WellKnownConfig {
    /// `m.homeserver.base_url` in `/.well-known/matrix/client`; default `public_baseurl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// `m.server` in `/.well-known/matrix/server`; default `<server_name>:443`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `myelin=debug,info`, …
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics on `/metrics`.
    pub enabled: bool,
}

/// Delivery of notifications to push gateways (`myelin-push`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// First delay before retrying a failed delivery; it doubles per failure.
    pub retry_initial_ms: u64,
    /// Longest delay between two attempts.
    pub retry_max_ms: u64,
    /// After failing this long, a pusher skips the notification it is stuck
    /// on and moves on to the next.
    pub give_up_after_ms: u64,
    /// Timeout of one request to a push gateway (connecting included).
    pub request_timeout_secs: u64,
    /// Let gateway URLs reach private, loopback, link-local and unspecified
    /// addresses (a gateway on the local network, or tests).
    pub allow_private_addresses: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Where media bytes are stored: `disk` (`media_path`) or `s3`.
    pub backend: MediaBackendKind,
    /// Largest upload accepted, in bytes (413 `M_TOO_LARGE` above).
    pub max_upload_bytes: u64,
    /// Serve the deprecated unauthenticated `/_matrix/media/v3/download` and
    /// `/thumbnail` endpoints. Off: media needs an access token
    /// (`/_matrix/client/v1/media/…`), as the spec now advises.
    pub legacy_unauthenticated: bool,
    /// Ids a user may hold from `POST /create` without uploading to them.
    pub max_pending_uploads: u32,
    /// How long such an id can be uploaded to.
    pub pending_upload_lifetime_ms: u64,
    /// Images with more pixels than this get no thumbnail (decompression
    /// bombs are refused before decoding).
    pub max_image_pixels: u64,
    pub s3: MediaS3Config,
    pub url_preview: UrlPreviewConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaBackendKind {
    Disk,
    S3,
}

/// S3-compatible object storage for media.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaS3Config {
    /// The service's URL, such as `http://127.0.0.1:3900`; empty for AWS.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `http://host/bucket/key` addressing rather than `http://bucket.host/key`
    /// (most self-hosted services want this).
    pub path_style: bool,
    /// Compute request and check response checksums only when an operation
    /// requires them: several S3-compatible servers reject or corrupt the
    /// SDK's default aws-chunked uploads. `false` keeps the SDK's default.
    pub checksums_when_required: bool,
}

impl std::fmt::Debug for MediaS3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaS3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("checksums_when_required", &self.checksums_when_required)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlPreviewConfig {
    /// Serve `/preview_url`.
    pub enabled: bool,
    /// Let previews fetch private, loopback and link-local addresses (never
    /// on a server whose network holds anything private).
    pub allow_private_addresses: bool,
    /// Largest page or image fetched, in bytes.
    pub max_bytes: u64,
    /// Timeout of one fetch, connecting included.
    pub timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            listen: "127.0.0.1:8008".to_owned(),
            data_dir: PathBuf::from("./myelin-data"),
            database_url: None,
            registration: RegistrationMode::Closed,
            public_baseurl: None,
            signing_key_path: None,
            media_path: None,
            trust_forwarded_for: false,
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            well_known: WellKnownConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            push: PushConfig::default(),
            media: MediaConfig::default(),
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            backend: MediaBackendKind::Disk,
            max_upload_bytes: 50 * 1024 * 1024,
            legacy_unauthenticated: false,
            max_pending_uploads: 10,
            pending_upload_lifetime_ms: 24 * 60 * 60 * 1000,
            max_image_pixels: 8192 * 8192,
            s3: MediaS3Config::default(),
            url_preview: UrlPreviewConfig::default(),
        }
    }
}

impl Default for MediaS3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".to_owned(),
            bucket: "myelin-media".to_owned(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: true,
            checksums_when_required: true,
        }
    }
}

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_private_addresses: false,
            max_bytes: 10 * 1024 * 1024,
            timeout_secs: 10,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            pool_size: 16,
            sqlite_readers: 4,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            refreshable_access_token_lifetime_ms: 5 * 60 * 1000,
            refresh_token_lifetime_ms: 0,
            uia_session_lifetime_ms: 15 * 60 * 1000,
            password_hash_memory_kib: 19 * 1024,
            password_hash_iterations: 2,
            password_length_min: 8,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            login: RateLimit {
                per_second: 1.0,
                burst: 10,
            },
            login_per_account: RateLimit {
                per_second: 0.5,
                burst: 5,
            },
            registration: RateLimit {
                per_second: 0.17,
                burst: 3,
            },
            reports: RateLimit {
                per_second: 0.05,
                burst: 10,
            },
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            retry_initial_ms: 1000,
            retry_max_ms: 10 * 60 * 1000,
            give_up_after_ms: 24 * 60 * 60 * 1000,
            request_timeout_secs: 10,
            allow_private_addresses: false,
        }
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("invalid config key `{key}`: {message}")]
    Key { key: String, message: String },
}

fn key_error(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        message: message.into(),
    }
}

/// Where a database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Config {
    /// Reads `path` (if any), applies the `MYELIN_*` variables of `env` over it,
    /// and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Syntax {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        Self::from_table(table)
    }

    /// Deserializes and validates a TOML table.
    pub fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| key_error(e.path().to_string(), e.into_inner().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if crate::ids::parse_server_name(&self.server_name).is_none() {
            return Err(key_error(
                "server_name",
                format!("`{}` is not a valid server name", self.server_name),
            ));
        }
        self.listen_addr()?;
        if let Some(url) = &self.database_url {
            parse_database_url(url)?;
        }
        for (key, url) in [
            ("public_baseurl", &self.public_baseurl),
            ("well_known.client", &self.well_known.client),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(key_error(key, "must be an http:// or https:// URL"));
            }
        }
        if self.database.pool_size == 0 {
            return Err(key_error("database.pool_size", "must be at least 1"));
        }
        if self.database.sqlite_readers == 0 {
            return Err(key_error("database.sqlite_readers", "must be at least 1"));
        }
        if self.auth.refreshable_access_token_lifetime_ms == 0 {
            return Err(key_error(
                "auth.refreshable_access_token_lifetime_ms",
                "must be positive",
            ));
        }
        if self.auth.uia_session_lifetime_ms == 0 {
            return Err(key_error(
                "auth.uia_session_lifetime_ms",
                "must be positive",
            ));
        }
        if self.auth.password_hash_memory_kib < 8 || self.auth.password_hash_iterations == 0 {
            return Err(key_error(
                "auth.password_hash_memory_kib",
                "argon2 needs at least 8 KiB and 1 iteration",
            ));
        }
        if self.limits.max_request_body_bytes < 1024 {
            return Err(key_error(
                "limits.max_request_body_bytes",
                "must be at least 1024",
            ));
        }
        for (key, limit) in [
            ("rate_limits.login", self.rate_limits.login),
            (
                "rate_limits.login_per_account",
                self.rate_limits.login_per_account,
            ),
            ("rate_limits.registration", self.rate_limits.registration),
            ("rate_limits.reports", self.rate_limits.reports),
        ] {
            if !limit.per_second.is_finite() || limit.per_second < 0.0 {
                return Err(key_error(
                    format!("{key}.per_second"),
                    "must be a number ≥ 0",
                ));
            }
            if limit.per_second > 0.0 && limit.burst == 0 {
                return Err(key_error(format!("{key}.burst"), "must be at least 1"));
            }
        }
        if self.push.retry_initial_ms == 0 {
            return Err(key_error("push.retry_initial_ms", "must be positive"));
        }
        if self.push.retry_max_ms < self.push.retry_initial_ms {
            return Err(key_error(
                "push.retry_max_ms",
                "must be at least push.retry_initial_ms",
            ));
        }
        if self.push.request_timeout_secs == 0 {
            return Err(key_error("push.request_timeout_secs", "must be positive"));
        }
        if self.media.max_upload_bytes == 0 {
            return Err(key_error("media.max_upload_bytes", "must be positive"));
        }
        if self.media.backend == MediaBackendKind::S3 {
            let s3 = &self.media.s3;
            for (key, value) in [
                ("media.s3.bucket", &s3.bucket),
                ("media.s3.region", &s3.region),
                ("media.s3.access_key_id", &s3.access_key_id),
                ("media.s3.secret_access_key", &s3.secret_access_key),
            ] {
                if value.is_empty() {
                    return Err(key_error(key, "must be set when media.backend is s3"));
                }
            }
        }
        if self.media.url_preview.timeout_secs == 0 {
            return Err(key_error(
                "media.url_preview.timeout_secs",
                "must be positive",
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            key_error(
                "listen",
                format!("`{}` is not an address such as 127.0.0.1:8008", self.listen),
            )
        })
    }

    pub fn database(&self) -> Result<DatabaseUrl, ConfigError> {
        match &self.database_url {
            Some(url) => parse_database_url(url),
            None => Ok(DatabaseUrl::Sqlite(self.data_dir.join("myelin.db"))),
        }
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("signing.key"))
    }

    pub fn media_path(&self) -> PathBuf {
        self.media_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("media"))
    }

    /// The base URL clients use, with a trailing `/`.
    pub fn public_baseurl(&self) -> String {
        let url = match &self.public_baseurl {
            Some(url) => url.clone(),
            None if self.server_name == "localhost"
                || self.server_name.starts_with("localhost:") =>
            {
                // A wildcard address is not one a client can reach.
                match self.listen_addr() {
                    Ok(addr) if addr.ip().is_unspecified() => {
                        format!("http://localhost:{}/", addr.port())
                    }
                    _ => format!("http://{}/", self.listen),
                }
            }
            None => format!("https://{}/", self.server_name),
        };
        if url.ends_with('/') {
            url
        } else {
            format!("{url}/")
        }
    }

    /// `m.server` of `/.well-known/matrix/server`.
    pub fn well_known_server(&self) -> String {
        self.well_known.server.clone().unwrap_or_else(|| {
            if self.server_name.contains(':') {
                self.server_name.clone()
            } else {
                format!("{}:443", self.server_name)
            }
        })
    }
}

fn parse_database_url(url: &str) -> Result<DatabaseUrl, ConfigError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(key_error(
                "database_url",
                "`sqlite:` needs a path, as in sqlite:./myelin-data/myelin.db",
            ));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(DatabaseUrl::Postgres(url.to_owned()))
    } else {
        Err(key_error(
            "database_url",
            "must start with sqlite: or postgres://",
        ))
    }
}

/// Applies `MYELIN_*` variables over `table`. A variable's value is read as
/// the type the key has by default (a string stays a string), so
/// `MYELIN_SERVER_NAME=1234` is the name "1234".
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).expect("the default config serializes");
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("MYELIN_")
                && !k.starts_with(ENV_TEST_PREFIX)
                && !ENV_NOT_KEYS.contains(&k.as_str())
        })
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name["MYELIN_".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let key = path.join(".");
        let default = lookup(&defaults, &path);
        let value = env_value(&raw, default).ok_or_else(|| {
            key_error(
                &key,
                format!("environment variable {name}=`{raw}` is not a valid value"),
            )
        })?;
        let mut node = &mut *table;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                node.insert(part.clone(), value);
                break;
            }
            // A section the file does not have starts from its defaults, so
            // overriding one field keeps the others.
            let seed = lookup(&defaults, &path[..=i]).cloned();
            let entry = node
                .entry(part.clone())
                .or_insert_with(|| seed.unwrap_or_else(|| toml::Value::Table(toml::Table::new())));
            node = entry.as_table_mut().ok_or_else(|| {
                key_error(
                    path[..=i].join("."),
                    format!("is not a section, but {name} treats it as one"),
                )
            })?;
        }
    }
    Ok(())
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut node = table;
    for part in parents {
        node = node.get(part)?.as_table()?;
    }
    node.get(last)
}

fn env_value(raw: &str, default: Option<&toml::Value>) -> Option<toml::Value> {
    use toml::Value;
    Some(match default {
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(Value::Integer(_)) => Value::Integer(raw.trim().parse().ok()?),
        Some(Value::Float(_)) => Value::Float(raw.trim().parse().ok()?),
        Some(Value::Boolean(_)) => Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return None,
        }),
        // Keys that default to nothing (and unknown keys, which deserialization
        // then names): a TOML literal if it reads as one, else a string.
        _ => toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.to_owned())),
    })
}

/// The commented `myelin.toml` that `myelin generate-config` writes: every key,
/// each with its default.
pub fn config_template(server_name: &str, database_url: Option<&str>, data_dir: &Path) -> String {
    let d = Config::default();
    let database_line = match database_url {
        Some(url) => format!("database_url = {}", toml_string(url)),
        None => format!(
            "# database_url = \"sqlite:{}/myelin.db\"",
            data_dir.display()
        ),
    };
    format!(
        r#"# Myelin homeserver configuration.
#
# Every key can be overridden by an environment variable: MYELIN_ and the key's
# path in capitals, sections joined by "__" (rate_limits.login.per_second is
# MYELIN_RATE_LIMITS__LOGIN__PER_SECOND). Relative paths are relative to the
# directory the server is started in.

# The server name: the part after ":" in user ids (@alice:example.org).
# It can never change once users exist.
server_name = {server_name}

# Address of the client (and federation) listener.          MYELIN_LISTEN
listen = {listen}

# Where the embedded default keeps its files: database, key, media.
data_dir = {data_dir}

# The database: "sqlite:PATH" (the embedded default) or
# "postgres://user:password@host:5432/dbname".                MYELIN_DATABASE_URL
{database_line}

# Who may register: "open" (anyone), "token" (with a registration token made
# by `myelin create-registration-token`) or "closed" (`myelin create-user` only).
registration = "{registration}"

# The URL clients reach this server at. Default: http://<listen>/ for a
# server named localhost, else https://<server_name>/.
# public_baseurl = "https://matrix.example.org/"

# The server's ed25519 signing key. Default: <data_dir>/signing.key
# signing_key_path = "./myelin-data/signing.key"

# Where uploaded media is stored. Default: <data_dir>/media
# media_path = "./myelin-data/media"

# Take the client's address from X-Forwarded-For. Only behind a reverse proxy
# that sets that header, or clients can forge their address.
trust_forwarded_for = {trust_forwarded_for}

[database]
# PostgreSQL: connections in the pool.
pool_size = {pool_size}
# SQLite: read connections beside the single writer.
sqlite_readers = {sqlite_readers}

[auth]
# Lifetime of access tokens issued together with a refresh token.
refreshable_access_token_lifetime_ms = {at_life}
# Lifetime of refresh tokens; 0 means they never expire.
refresh_token_lifetime_ms = {rt_life}
# How long a user-interactive authentication session stays open.
uia_session_lifetime_ms = {uia_life}
# argon2id cost of password hashes (OWASP: 19456 KiB, 2 iterations).
password_hash_memory_kib = {pw_mem}
password_hash_iterations = {pw_iter}
# Shortest password accepted at registration and password change.
password_length_min = {pw_min}

[limits]
# Largest request body accepted on JSON endpoints, in bytes.
max_request_body_bytes = {body_max}

# Token buckets: `burst` requests at once, refilled at `per_second`.
# per_second = 0 turns a limit off.
[rate_limits.login]
per_second = {login_rate:?}
burst = {login_burst}

[rate_limits.login_per_account]
per_second = {acct_rate:?}
burst = {acct_burst}

[rate_limits.registration]
per_second = {reg_rate:?}
burst = {reg_burst}

# Reports of events and rooms, per user.
[rate_limits.reports]
per_second = {report_rate:?}
burst = {report_burst}

[well_known]
# m.homeserver.base_url of /.well-known/matrix/client. Default: public_baseurl.
# client = "https://matrix.example.org/"
# m.server of /.well-known/matrix/server. Default: <server_name>:443.
# server = "matrix.example.org:443"

[log]
# A tracing filter, such as "info" or "myelin_api=debug,info".
level = "{log_level}"
# "text" or "json".
format = "text"

[metrics]
# Serve Prometheus metrics on /metrics.
enabled = {metrics}

[push]
# Retries of a failed delivery to a push gateway: the first after
# retry_initial_ms, each later one twice as late, at most retry_max_ms apart.
retry_initial_ms = {push_retry_initial}
retry_max_ms = {push_retry_max}
# After failing for this long, skip the notification and go on to the next.
give_up_after_ms = {push_give_up}
# Timeout of one request to a push gateway.
request_timeout_secs = {push_timeout}
# Let gateway URLs reach private, loopback and link-local addresses. Off, a
# pusher cannot be used to probe the server's own network.
allow_private_addresses = {push_private}

[media]
# Where media bytes go: "disk" (media_path) or "s3" (below).
backend = "disk"
# Largest upload, in bytes.
max_upload_bytes = {media_max}
# Also serve the deprecated unauthenticated /_matrix/media/v3/download and
# /thumbnail endpoints (clients older than Matrix 1.11 use them).
legacy_unauthenticated = {media_legacy}
# Media ids a user may reserve with POST /create before uploading to them,
# and how long each can be uploaded to.
max_pending_uploads = {media_pending}
pending_upload_lifetime_ms = {media_pending_life}
# Images larger than this many pixels get no thumbnails.
max_image_pixels = {media_pixels}

[media.s3]
# S3-compatible object storage, used when backend = "s3".
# endpoint = "http://127.0.0.1:3900"   (empty for AWS itself)
region = "{s3_region}"
bucket = "{s3_bucket}"
# access_key_id = "…"                   MYELIN_MEDIA__S3__ACCESS_KEY_ID
# secret_access_key = "…"               MYELIN_MEDIA__S3__SECRET_ACCESS_KEY
# http://host/bucket/key rather than http://bucket.host/key.
path_style = {s3_path_style}
# Checksums only where S3 requires them: several S3-compatible servers reject
# or corrupt the SDK's default aws-chunked uploads. false keeps the default.
checksums_when_required = {s3_checksums}

[media.url_preview]
# Serve URL previews (/preview_url).
enabled = {preview_enabled}
# Let previews fetch private, loopback and link-local addresses. Off, a
# preview cannot be used to probe the server's own network.
allow_private_addresses = {preview_private}
# Largest page or image fetched, in bytes, and the time one fetch may take.
max_bytes = {preview_max}
timeout_secs = {preview_timeout}
"#,
        server_name = toml_string(server_name),
        listen = toml_string(&d.listen),
        data_dir = toml_string(&data_dir.display().to_string()),
        registration = "closed",
        trust_forwarded_for = d.trust_forwarded_for,
        pool_size = d.database.pool_size,
        sqlite_readers = d.database.sqlite_readers,
        at_life = d.auth.refreshable_access_token_lifetime_ms,
        rt_life = d.auth.refresh_token_lifetime_ms,
        uia_life = d.auth.uia_session_lifetime_ms,
        pw_mem = d.auth.password_hash_memory_kib,
        pw_iter = d.auth.password_hash_iterations,
        pw_min = d.auth.password_length_min,
        body_max = d.limits.max_request_body_bytes,
        login_rate = d.rate_limits.login.per_second,
        login_burst = d.rate_limits.login.burst,
        acct_rate = d.rate_limits.login_per_account.per_second,
        acct_burst = d.rate_limits.login_per_account.burst,
        reg_rate = d.rate_limits.registration.per_second,
        reg_burst = d.rate_limits.registration.burst,
        report_rate = d.rate_limits.reports.per_second,
        report_burst = d.rate_limits.reports.burst,
        log_level = d.log.level,
        metrics = d.metrics.enabled,
        push_retry_initial = d.push.retry_initial_ms,
        push_retry_max = d.push.retry_max_ms,
        push_give_up = d.push.give_up_after_ms,
        push_timeout = d.push.request_timeout_secs,
        push_private = d.push.allow_private_addresses,
        media_max = d.media.max_upload_bytes,
        media_legacy = d.media.legacy_unauthenticated,
        media_pending = d.media.max_pending_uploads,
        media_pending_life = d.media.pending_upload_lifetime_ms,
        media_pixels = d.media.max_image_pixels,
        s3_region = d.media.s3.region,
        s3_bucket = d.media.s3.bucket,
        s3_path_style = d.media.s3.path_style,
        s3_checksums = d.media.s3.checksums_when_required,
        preview_enabled = d.media.url_preview.enabled,
        preview_private = d.media.url_preview.allow_private_addresses,
        preview_max = d.media.url_preview.max_bytes,
        preview_timeout = d.media.url_preview.timeout_secs,
    )
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn template_parses_to_the_defaults() {
        let text = config_template("example.org", None, Path::new("./myelin-data"));
        let table: toml::Table = toml::from_str(&text).unwrap();
        let config = Config::from_table(table).unwrap();
        assert_eq!(
            config,
            Config {
                server_name: "example.org".into(),
                ..Config::default()
            }
        );
    }

    #[test]
    fn template_with_postgres() {
        let text = config_template(
            "example.org",
            Some("postgres://u@h/db"),
            Path::new("/var/lib/myelin"),
        );
        let config = Config::from_table(toml::from_str(&text).unwrap()).unwrap();
        assert_eq!(
            config.database().unwrap(),
            DatabaseUrl::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/myelin"));
    }

    #[test]
    fn the_five_documented_variables() {
        let config = Config::load(
            None,
            env(&[
                ("MYELIN_SERVER_NAME", "example.org"),
                ("MYELIN_LISTEN", "0.0.0.0:9000"),
                ("MYELIN_DATA_DIR", "/tmp/m"),
                ("MYELIN_DATABASE_URL", "postgres://x@y/z"),
                ("MYELIN_REGISTRATION", "open"),
                ("MYELIN_TEST_POSTGRES_URL", "ignored"),
                ("PATH", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server_name, "example.org");
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/m"));
        assert_eq!(
            config.database().unwrap(),
            DatabaseUrl::Postgres("postgres://x@y/z".into())
        );
        assert_eq!(config.registration, RegistrationMode::Open);
    }

    #[test]
    fn nested_variables_and_types() {
        let config = Config::load(
            None,
            env(&[
                ("MYELIN_RATE_LIMITS__LOGIN__PER_SECOND", "3"),
                ("MYELIN_RATE_LIMITS__LOGIN__BURST", "7"),
                ("MYELIN_METRICS__ENABLED", "false"),
                ("MYELIN_PUBLIC_BASEURL", "https://m.example.org"),
                ("MYELIN_PUSH__ALLOW_PRIVATE_ADDRESSES", "true"),
                ("MYELIN_PUSH__RETRY_INITIAL_MS", "50"),
            ]),
        )
        .unwrap();
        assert!(config.push.allow_private_addresses);
        assert_eq!(config.push.retry_initial_ms, 50);
        assert_eq!(config.push.retry_max_ms, PushConfig::default().retry_max_ms);
        assert_eq!(
            config.rate_limits.login,
            RateLimit {
                per_second: 3.0,
                burst: 7
            }
        );
        assert!(!config.metrics.enabled);
        assert_eq!(config.public_baseurl(), "https://m.example.org/");
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("MYELIN_REGISTRATION", "sometimes")], "registration"),
            (&[("MYELIN_LISTEN", "nowhere")], "listen"),
            (&[("MYELIN_SERVER_NAME", "bad name!")], "server_name"),
            (&[("MYELIN_DATABASE_URL", "mysql://x")], "database_url"),
            (
                &[("MYELIN_DATABASE__POOL_SIZE", "many")],
                "database.pool_size",
            ),
            (&[("MYELIN_NO_SUCH_KEY", "1")], "no_such_key"),
            (
                &[("MYELIN_RATE_LIMITS__LOGIN__PER_SECOND", "-1")],
                "rate_limits.login.per_second",
            ),
            (&[("MYELIN_PUSH__RETRY_MAX_MS", "10")], "push.retry_max_ms"),
        ];
        for (vars, key) in cases {
            match Config::load(None, env(vars)) {
                Err(ConfigError::Key { key: k, .. }) => assert_eq!(&k, key, "{vars:?}"),
                other => panic!("{vars:?}: expected an error naming {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_key_in_a_file_is_named() {
        let table: toml::Table = toml::from_str("[database]\npool_sise = 3\n").unwrap();
        match Config::from_table(table) {
            Err(ConfigError::Key { key, .. }) => assert_eq!(key, "database.pool_sise"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn derived_paths() {
        let c = Config {
            data_dir: PathBuf::from("/d"),
            ..Config::default()
        };
        assert_eq!(
            c.database().unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("/d/myelin.db"))
        );
        assert_eq!(c.signing_key_path(), PathBuf::from("/d/signing.key"));
        assert_eq!(c.media_path(), PathBuf::from("/d/media"));
        assert_eq!(c.public_baseurl(), "http://127.0.0.1:8008/");
        assert_eq!(c.well_known_server(), "localhost:443");
        let c = Config {
            listen: "0.0.0.0:8008".into(),
            ..Config::default()
        };
        assert_eq!(c.public_baseurl(), "http://localhost:8008/");
    }
}
