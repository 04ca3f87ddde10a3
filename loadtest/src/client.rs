//! A minimal Client-Server API client: just the endpoints the scenarios use.
//!
//! Every call returns an [`ApiError`] on failure, which names the failure the
//! way the report counts it: the Matrix `errcode`, else `HTTP_<status>`, else
//! `transport`.

use serde_json::{Value, json};
use std::fmt;
use std::time::Duration;

/// Longest a single request may take; past it the request counts as a
/// `transport` error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Idle keep-alive connections kept per host: enough that thousands of
/// simulated users do not reconnect for every request.
const IDLE_CONNECTIONS_PER_HOST_MAX: usize = 4096;
/// The `/sync` filter every scenario uses: a timeline window large enough
/// that a busy room's events between two long-polls are not cut off.
const SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":100}}}"#;

/// Why a request failed.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// No HTTP response: connection refused or reset, timeout, bad body.
    Transport(String),
    /// A non-2xx response.
    Status {
        status: u16,
        errcode: Option<String>,
        body: String,
    },
}

impl ApiError {
    /// The key the report counts this error under.
    pub fn code(&self) -> String {
        match self {
            ApiError::Transport(_) => "transport".to_owned(),
            ApiError::Status {
                errcode: Some(code),
                ..
            } => code.clone(),
            ApiError::Status { status, .. } => format!("HTTP_{status}"),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Transport(e) => write!(f, "transport error: {e}"),
            ApiError::Status { status, body, .. } => write!(f, "HTTP {status}: {body}"),
        }
    }
}

impl std::error::Error for ApiError {}

fn transport(context: &str, e: impl fmt::Display) -> ApiError {
    ApiError::Transport(format!("{context}: {e}"))
}

/// How users are created.
#[derive(Clone, Debug)]
pub enum Registration {
    /// `POST /register` through the UIA `m.login.dummy` flow (open
    /// registration).
    Dummy,
    /// Synapse's shared-secret admin API, `/_synapse/admin/v1/register`.
    SharedSecret(String),
}

/// A homeserver reached over HTTP.
#[derive(Clone)]
pub struct Server {
    base: String,
    http: reqwest::Client,
    registration: Registration,
}

/// A registered, logged-in user.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub token: String,
}

/// A successful `/sync`: the body and its size on the wire (decoded).
pub struct SyncResponse {
    pub body: Value,
    pub bytes: usize,
}

impl Server {
    pub fn new(base: &str, registration: Registration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST_MAX)
            .build()
            .expect("an HTTP client");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            registration,
        }
    }

    /// One request; a 2xx answer yields the JSON body (null if not JSON)
    /// and its length in bytes.
    async fn call_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(Value, usize), ApiError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| transport(path, e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| transport(path, e))?;
        let json = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                status,
                errcode: json["errcode"].as_str().map(str::to_owned),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok((json, bytes.len()))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        Ok(self.call_raw(method, path, token, body.as_ref()).await?.0)
    }

    /// Registers `username` with the configured [`Registration`].
    pub async fn register(&self, username: &str) -> Result<User, ApiError> {
        let password = format!("{username}-password-lt");
        match &self.registration {
            Registration::Dummy => self.register_dummy(username, &password).await,
            Registration::SharedSecret(secret) => {
                self.register_shared_secret(secret, username, &password)
                    .await
            }
        }
    }

    async fn register_dummy(&self, username: &str, password: &str) -> Result<User, ApiError> {
        let path = "/_matrix/client/v3/register";
        let first = json!({ "username": username, "password": password });
        let session = match self
            .call_raw(reqwest::Method::POST, path, None, Some(&first))
            .await
        {
            Ok((body, _)) => return user_of(&body),
            Err(ApiError::Status {
                status: 401, body, ..
            }) => serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["session"]
                .as_str()
                .map(str::to_owned),
            Err(e) => return Err(e),
        };
        let auth = json!({ "type": "m.login.dummy", "session": session });
        let body = self
            .call(
                reqwest::Method::POST,
                path,
                None,
                Some(json!({ "username": username, "password": password, "auth": auth })),
            )
            .await?;
        user_of(&body)
    }

    /// Synapse's shared-secret registration: fetch a nonce, then register
    /// with an HMAC-SHA1 over `nonce\0username\0password\0notadmin`.
    async fn register_shared_secret(
        &self,
        secret: &str,
        username: &str,
        password: &str,
    ) -> Result<User, ApiError> {
        let path = "/_synapse/admin/v1/register";
        let nonce = self.call(reqwest::Method::GET, path, None, None).await?["nonce"]
            .as_str()
            .ok_or_else(|| transport(path, "no nonce in the answer"))?
            .to_owned();
        let message = format!("{nonce}\0{username}\0{password}\0notadmin");
        let mac = hex(&crate::hmac::hmac_sha1(
            secret.as_bytes(),
            message.as_bytes(),
        ));
        let body = json!({
            "nonce": nonce,
            "username": username,
            "password": password,
            "admin": false,
            "mac": mac,
        });
        let body = self
            .call(reqwest::Method::POST, path, None, Some(body))
            .await?;
        user_of(&body)
    }

    pub async fn create_room(&self, user: &User, public: bool) -> Result<String, ApiError> {
        let preset = if public {
            "public_chat"
        } else {
            "private_chat"
        };
        let body = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&user.token),
                Some(json!({ "preset": preset })),
            )
            .await?;
        string_field(&body, "room_id", "createRoom")
    }

    /// `POST /join/{roomIdOrAlias}`.
    pub async fn join(&self, user: &User, room: &str) -> Result<(), ApiError> {
        self.call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", encode(room)),
            Some(&user.token),
            Some(json!({})),
        )
        .await?;
        Ok(())
    }

    /// `GET /rooms/{roomId}/joined_members`: how many members are joined.
    pub async fn joined_member_count(&self, user: &User, room: &str) -> Result<usize, ApiError> {
        let body = self
            .call(
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/rooms/{}/joined_members", encode(room)),
                Some(&user.token),
                None,
            )
            .await?;
        Ok(body["joined"].as_object().map_or(0, serde_json::Map::len))
    }

    /// Uploads `bytes` as `application/octet-stream`; returns the `mxc://` URI.
    pub async fn upload(&self, user: &User, bytes: Vec<u8>) -> Result<String, ApiError> {
        let path = "/_matrix/media/v3/upload";
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&user.token)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .map_err(|e| transport(path, e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| transport(path, e))?;
        let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
        if status != 200 {
            return Err(ApiError::Status {
                status,
                errcode: body["errcode"].as_str().map(str::to_owned),
                body: text,
            });
        }
        string_field(&body, "content_uri", path)
    }

    /// Downloads an `mxc://` URI (authenticated media), reading the body to
    /// the end without keeping it; returns its length.
    pub async fn download(&self, user: &User, mxc: &str) -> Result<u64, ApiError> {
        let path = mxc
            .strip_prefix("mxc://")
            .ok_or_else(|| transport("download", "not an mxc URI"))?;
        let url = format!("{}/_matrix/client/v1/media/download/{path}", self.base);
        let mut resp = self
            .http
            .get(url)
            .bearer_auth(&user.token)
            .send()
            .await
            .map_err(|e| transport("download", e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let text = resp.text().await.unwrap_or_default();
            let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
            return Err(ApiError::Status {
                status,
                errcode: body["errcode"].as_str().map(str::to_owned),
                body: text,
            });
        }
        let mut len = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport("download", e))? {
            len += chunk.len() as u64;
        }
        Ok(len)
    }

    /// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`; returns the event id.
    pub async fn send_event(
        &self,
        user: &User,
        room: &str,
        event_type: &str,
        txn: &str,
        content: Value,
    ) -> Result<String, ApiError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{}/{}",
            encode(room),
            encode(event_type),
            encode(txn)
        );
        let body = self
            .call(
                reqwest::Method::PUT,
                &path,
                Some(&user.token),
                Some(content),
            )
            .await?;
        string_field(&body, "event_id", "send")
    }

    /// Sends an `m.text` message; returns the event id.
    pub async fn send_text(
        &self,
        user: &User,
        room: &str,
        txn: &str,
        body: &str,
    ) -> Result<String, ApiError> {
        let content = json!({ "msgtype": "m.text", "body": body });
        self.send_event(user, room, "m.room.message", txn, content)
            .await
    }

    /// Sends an `m.reaction` annotating `event_id` with `key`.
    pub async fn react(
        &self,
        user: &User,
        room: &str,
        txn: &str,
        event_id: &str,
        key: &str,
    ) -> Result<String, ApiError> {
        let content = json!({
            "m.relates_to": { "rel_type": "m.annotation", "event_id": event_id, "key": key }
        });
        self.send_event(user, room, "m.reaction", txn, content)
            .await
    }

    /// `PUT /rooms/{roomId}/typing/{userId}` with `typing: true`.
    pub async fn typing(&self, user: &User, room: &str) -> Result<(), ApiError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/typing/{}",
            encode(room),
            encode(&user.user_id)
        );
        let body = json!({ "typing": true, "timeout": 30_000 });
        self.call(reqwest::Method::PUT, &path, Some(&user.token), Some(body))
            .await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/receipt/m.read/{eventId}`.
    pub async fn read_receipt(
        &self,
        user: &User,
        room: &str,
        event_id: &str,
    ) -> Result<(), ApiError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            encode(room),
            encode(event_id)
        );
        self.call(
            reqwest::Method::POST,
            &path,
            Some(&user.token),
            Some(json!({})),
        )
        .await?;
        Ok(())
    }

    /// `GET /rooms/{roomId}/messages?dir=b&limit=…`: back-pagination from
    /// the live end; returns how many events came back.
    pub async fn messages(&self, user: &User, room: &str, limit: u32) -> Result<usize, ApiError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}",
            encode(room)
        );
        let body = self
            .call(reqwest::Method::GET, &path, Some(&user.token), None)
            .await?;
        Ok(body["chunk"].as_array().map_or(0, Vec::len))
    }

    /// `GET /profile/{userId}/displayname`.
    pub async fn displayname(&self, user: &User, of: &str) -> Result<Option<String>, ApiError> {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", encode(of));
        let body = self
            .call(reqwest::Method::GET, &path, Some(&user.token), None)
            .await?;
        Ok(body["displayname"].as_str().map(str::to_owned))
    }

    /// One `/sync` call, with the shared filter.
    pub async fn sync(
        &self,
        user: &User,
        since: Option<&str>,
        timeout_ms: u64,
    ) -> Result<SyncResponse, ApiError> {
        let mut path = format!(
            "/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}",
            encode(SYNC_FILTER)
        );
        if let Some(since) = since {
            path.push_str(&format!("&since={}", encode(since)));
        }
        let (body, bytes) = self
            .call_raw(reqwest::Method::GET, &path, Some(&user.token), None)
            .await?;
        Ok(SyncResponse { body, bytes })
    }
}

fn string_field(body: &Value, field: &str, context: &str) -> Result<String, ApiError> {
    body[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| transport(context, format!("no `{field}` in the answer")))
}

fn user_of(body: &Value) -> Result<User, ApiError> {
    Ok(User {
        user_id: string_field(body, "user_id", "register")?,
        token: string_field(body, "access_token", "register")?,
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a
/// path segment or a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
