//! The HTTP client that talks to push gateways, and the guard that keeps it
//! out of the server's own network.
//!
//! A gateway URL is chosen by any user, so unless the config allows it a
//! request must not reach a private, loopback, link-local or unspecified
//! address: the resolver drops such addresses from every name it resolves,
//! and an IP literal host (which no resolver sees) is checked before
//! sending. Redirects are not followed (a redirect to a literal address
//! would bypass both), and proxies from the environment are not used.
//! Spec: <https://spec.matrix.org/v1.19/push-gateway-api/#post_matrixpushv1notify>

use myelin_core::config::PushConfig;
use myelin_core::net::{PublicOnlyResolver, blocked_literal, is_public_ip};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Largest gateway answer read; the only thing in it is `rejected`.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// Why a notification could not be handed to a gateway. Every kind is
/// retried: gateways recover, and a blocked URL fails fast every time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The URL is not an `http(s)` URL with a host.
    #[error("invalid gateway URL: {0}")]
    InvalidUrl(String),
    /// The URL's host is (or resolves only to) a non-public address.
    #[error("gateway address not allowed: {0}")]
    Blocked(String),
    /// Connection, TLS or timeout failure.
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    /// The gateway answered with a non-2xx status.
    #[error("gateway answered {0}")]
    Status(u16),
}

/// A client for push gateways, from the `[push]` config. The HTTP client
/// (and its TLS stack, a few MB) is built on the first delivery, so a
/// server without pushers does not carry it.
#[derive(Clone)]
pub struct Gateway {
    client: Arc<OnceLock<reqwest::Client>>,
    timeout: Duration,
    allow_private_addresses: bool,
}

impl Gateway {
    pub fn new(config: &PushConfig) -> Self {
        Self {
            client: Arc::new(OnceLock::new()),
            timeout: Duration::from_secs(config.request_timeout_secs),
            allow_private_addresses: config.allow_private_addresses,
        }
    }

    fn client(&self) -> Result<&reqwest::Client, reqwest::Error> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("Myelin/", env!("CARGO_PKG_VERSION")))
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !self.allow_private_addresses {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let built = builder.build()?;
        Ok(self.client.get_or_init(|| built))
    }

    /// POSTs `body` to `url`; on a 2xx answer, returns its `rejected`
    /// pushkeys (none if the body has no such list).
    pub async fn notify(&self, url: &str, body: &Value) -> Result<Vec<String>, NotifyError> {
        let url = self.check_url(url)?;
        let response = self.client()?.post(url).json(body).send().await?;
        let status = response.status();
        if !status.is_success() {
            return Err(NotifyError::Status(status.as_u16()));
        }
        let bytes = read_limited(response).await?;
        Ok(rejected_pushkeys(&bytes))
    }

    fn check_url(&self, url: &str) -> Result<reqwest::Url, NotifyError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| NotifyError::InvalidUrl(format!("{url}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(NotifyError::InvalidUrl(format!("{url}: not http(s)")));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(NotifyError::InvalidUrl(format!("{url}: no host")));
        }
        // IP literals are connected to without resolving: check them here.
        if !self.allow_private_addresses
            && let Some(ip) = blocked_literal(&parsed, is_public_ip)
        {
            return Err(NotifyError::Blocked(ip.to_string()));
        }
        Ok(parsed)
    }
}

/// The path every gateway URL must have.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// Checks a pusher's `data.url` when it is set: an `http` or `https` URL
/// with a host and the path `/_matrix/push/v1/notify`. (Whether its address
/// may be reached is decided at delivery: names resolve differently later.)
pub fn check_pusher_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".to_owned());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must have a host".to_owned());
    }
    if parsed.path() != NOTIFY_PATH {
        return Err(format!("must have the path {NOTIFY_PATH}"));
    }
    Ok(())
}

/// Reads at most [`RESPONSE_BYTES_MAX`] bytes of a response body.
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = RESPONSE_BYTES_MAX - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == RESPONSE_BYTES_MAX {
            break;
        }
    }
    Ok(body)
}

/// The `rejected` pushkeys of a gateway's answer; an answer that is not the
/// expected JSON rejects nothing.
pub fn rejected_pushkeys(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| match v.get("rejected") {
            Some(Value::Array(keys)) => Some(
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway(allow_private_addresses: bool) -> Gateway {
        Gateway::new(&PushConfig {
            allow_private_addresses,
            request_timeout_secs: 2,
            ..PushConfig::default()
        })
    }

    #[test]
    fn pusher_urls() {
        for ok in [
            "https://push.example.org/_matrix/push/v1/notify",
            "http://127.0.0.1:5000/_matrix/push/v1/notify",
            "https://push.example.org:8443/_matrix/push/v1/notify?x=1",
        ] {
            assert_eq!(check_pusher_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "push.example.org/_matrix/push/v1/notify",
            "ftp://push.example.org/_matrix/push/v1/notify",
            "https://push.example.org/",
            "https://push.example.org/_matrix/push/v1/notify/",
            "https:///_matrix/push/v1/notify",
            "",
        ] {
            assert!(check_pusher_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejected_list() {
        assert_eq!(rejected_pushkeys(br#"{"rejected":["a","b"]}"#), ["a", "b"]);
        assert!(rejected_pushkeys(br#"{"rejected":[]}"#).is_empty());
        assert!(rejected_pushkeys(b"{}").is_empty());
        assert!(rejected_pushkeys(b"not json").is_empty());
        assert!(rejected_pushkeys(br#"{"rejected":"a"}"#).is_empty());
    }

    #[tokio::test]
    async fn literal_private_addresses_are_blocked() {
        let g = gateway(false);
        for url in [
            "http://127.0.0.1:1/_matrix/push/v1/notify",
            "http://0x7f.1/_matrix/push/v1/notify",
            "http://2130706433/_matrix/push/v1/notify",
            "http://[::1]:8080/_matrix/push/v1/notify",
            "http://[::ffff:10.0.0.1]/_matrix/push/v1/notify",
            "https://169.254.169.254/_matrix/push/v1/notify",
            "http://0.0.0.0/_matrix/push/v1/notify",
        ] {
            match g.notify(url, &json!({})).await {
                Err(NotifyError::Blocked(_)) => {}
                other => panic!("{url}: expected Blocked, got {other:?}"),
            }
        }
        assert!(matches!(
            g.notify("ftp://example.org/x", &json!({})).await,
            Err(NotifyError::InvalidUrl(_))
        ));
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_blocked() {
        // `localhost` resolves to loopback addresses only.
        let err = gateway(false)
            .notify("http://localhost:9/_matrix/push/v1/notify", &json!({}))
            .await
            .expect_err("a loopback name is refused");
        assert!(matches!(err, NotifyError::Request(_)), "{err:?}");
        assert!(
            myelin_core::net::refused_by_resolver(&err),
            "the resolver refused it: {err:?}"
        );
    }

    #[tokio::test]
    async fn delivers_and_reads_rejections_when_private_allowed() {
        use axum::routing::post;
        let app = axum::Router::new().route(
            "/_matrix/push/v1/notify",
            post(|axum::Json(body): axum::Json<Value>| async move {
                let key = body["notification"]["devices"][0]["pushkey"].clone();
                axum::Json(json!({ "rejected": [key] }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let body = json!({"notification": {"devices": [{"pushkey": "k1"}]}});
        let url = format!("http://{addr}/_matrix/push/v1/notify");
        assert_eq!(gateway(true).notify(&url, &body).await.unwrap(), ["k1"]);
        let url = format!("http://localhost:{}/_matrix/push/v1/notify", addr.port());
        assert_eq!(gateway(true).notify(&url, &body).await.unwrap(), ["k1"]);
        assert!(matches!(
            gateway(true)
                .notify(&format!("http://{addr}/elsewhere"), &body)
                .await,
            Err(NotifyError::Status(404))
        ));
    }
}
