//! A minimal Client-Server API client: just what the scenarios use.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use std::time::Duration;

/// Longest a single request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Server {
    base: String,
    http: reqwest::Client,
}

/// A registered, logged-in user.
#[derive(Clone)]
pub struct User {
    pub token: String,
}

impl Server {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(1024)
            .build()
            .expect("an HTTP client");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("request to {path}"))?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Registers `username` through the `m.login.dummy` flow.
    pub async fn register(&self, username: &str) -> anyhow::Result<User> {
        let password = format!("{username}-password");
        let path = "/_matrix/client/v3/register";
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                path,
                None,
                Some(json!({ "username": username, "password": password })),
            )
            .await?;
        let session = match status {
            401 => body["session"].as_str().map(str::to_owned),
            200 => return user_of(&body),
            _ => bail!("register {username}: {status} {body}"),
        };
        let auth = json!({ "type": "m.login.dummy", "session": session });
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                path,
                None,
                Some(json!({ "username": username, "password": password, "auth": auth })),
            )
            .await?;
        if status != 200 {
            bail!("register {username}: {status} {body}");
        }
        user_of(&body)
    }

    pub async fn create_room(&self, user: &User, public: bool) -> anyhow::Result<String> {
        let preset = if public {
            "public_chat"
        } else {
            "private_chat"
        };
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&user.token),
                Some(json!({ "preset": preset })),
            )
            .await?;
        if status != 200 {
            bail!("createRoom: {status} {body}");
        }
        Ok(body["room_id"].as_str().context("room_id")?.to_owned())
    }

    pub async fn join(&self, user: &User, room_id: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/_matrix/client/v3/join/{room_id}"),
                Some(&user.token),
                Some(json!({})),
            )
            .await?;
        if status != 200 {
            bail!("join: {status} {body}");
        }
        Ok(())
    }

    /// Uploads `bytes` as `application/octet-stream`; returns the `mxc://` URI.
    pub async fn upload(&self, user: &User, bytes: Vec<u8>) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!("{}/_matrix/media/v3/upload", self.base))
            .bearer_auth(&user.token)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .context("upload")?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        if status != 200 {
            bail!("upload: {status} {body}");
        }
        Ok(body["content_uri"]
            .as_str()
            .context("content_uri")?
            .to_owned())
    }

    /// Downloads an `mxc://` URI (authenticated media), reading the body to
    /// the end without keeping it; returns its length.
    pub async fn download(&self, user: &User, mxc: &str) -> anyhow::Result<u64> {
        let path = mxc.strip_prefix("mxc://").context("an mxc URI")?;
        let mut resp = self
            .http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{path}",
                self.base
            ))
            .bearer_auth(&user.token)
            .send()
            .await
            .context("download")?;
        if resp.status() != 200 {
            bail!("download: {}", resp.status());
        }
        let mut len = 0u64;
        while let Some(chunk) = resp.chunk().await.context("download body")? {
            len += chunk.len() as u64;
        }
        Ok(len)
    }

    /// Sends a text message; returns the event id.
    pub async fn send_text(
        &self,
        user: &User,
        room_id: &str,
        txn: &str,
        body: &str,
    ) -> anyhow::Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
        let (status, resp) = self
            .call(
                reqwest::Method::PUT,
                &path,
                Some(&user.token),
                Some(json!({ "msgtype": "m.text", "body": body })),
            )
            .await?;
        if status != 200 {
            bail!("send: {status} {resp}");
        }
        Ok(resp["event_id"].as_str().context("event_id")?.to_owned())
    }

    /// One `/sync` call.
    pub async fn sync(
        &self,
        user: &User,
        since: Option<&str>,
        timeout_ms: u64,
    ) -> anyhow::Result<Value> {
        let filter = r#"{"room":{"timeline":{"limit":50}}}"#;
        let mut path = format!(
            "/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}",
            urlencode(filter)
        );
        if let Some(since) = since {
            path.push_str(&format!("&since={}", urlencode(since)));
        }
        let (status, body) = self
            .call(reqwest::Method::GET, &path, Some(&user.token), None)
            .await?;
        if status != 200 {
            bail!("sync: {status} {body}");
        }
        Ok(body)
    }
}

fn user_of(body: &Value) -> anyhow::Result<User> {
    Ok(User {
        token: body["access_token"]
            .as_str()
            .context("access_token")?
            .to_owned(),
    })
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
