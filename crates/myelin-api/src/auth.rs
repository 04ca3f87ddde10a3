//! Access-token authentication: the extractor every authenticated endpoint
//! takes, and the function behind it (benchmarked in `benches/`).

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use myelin_core::secrets::{digests_equal, token_digest};
use myelin_core::time::now_ms;
use myelin_core::{ErrorKind, MatrixError};
use std::net::SocketAddr;

use crate::error::ApiError;
use crate::state::AppState;

/// `last_seen_ts` of a device is written at most this often per process.
pub const SEEN_WRITE_INTERVAL_MS: i64 = 5 * 60 * 1000;
/// Devices remembered for the throttle above; the map is cleared past this.
const SEEN_ENTRIES_MAX: usize = 100_000;

/// The user and device an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub device_id: String,
}

/// An authenticated request.
pub struct Auth(pub Identity);

/// A request that may carry an access token.
pub struct MaybeAuth(pub Option<Identity>);

/// The access token of a request: `Authorization: Bearer …`, or the
/// deprecated `access_token` query parameter.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        return Some(token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "access_token").then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves an access token: unknown → `M_UNKNOWN_TOKEN`, expired →
/// `M_UNKNOWN_TOKEN` with `soft_logout: true` (the client may refresh).
pub async fn authenticate(state: &AppState, token: &str) -> Result<Identity, MatrixError> {
    let digest = token_digest(token);
    let record = state
        .storage
        .access_token(&digest)
        .await
        .map_err(MatrixError::internal)?
        .filter(|r| digests_equal(&r.digest, &digest))
        .ok_or_else(|| {
            MatrixError::new(
                ErrorKind::UnknownToken { soft_logout: false },
                "Unknown access token",
            )
        })?;
    if record.expires_ms.is_some_and(|e| e <= now_ms()) {
        return Err(MatrixError::new(
            ErrorKind::UnknownToken { soft_logout: true },
            "The access token has expired",
        ));
    }
    if record.has_predecessor {
        // First use of a refreshed session: the refresh token it replaced dies now.
        state
            .storage
            .retire_predecessor(&digest)
            .await
            .map_err(MatrixError::internal)?;
    }
    Ok(Identity {
        user_id: record.user_id,
        device_id: record.device_id,
    })
}

/// The client's address: the socket peer, or the first `X-Forwarded-For`
/// hop when the config trusts a proxy.
pub fn client_ip(state: &AppState, parts: &Parts) -> Option<String> {
    if state.config.trust_forwarded_for
        && let Some(ip) = forwarded_for(&parts.headers)
    {
        return Some(ip);
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-forwarded-for")?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    first
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// Records that a device was seen, at most once per interval per process,
/// without delaying the request.
fn note_seen(state: &AppState, identity: &Identity, ip: Option<String>) {
    let now = now_ms();
    {
        let mut seen = state.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (identity.user_id.clone(), identity.device_id.clone());
        if seen
            .get(&key)
            .is_some_and(|last| now - last < SEEN_WRITE_INTERVAL_MS)
        {
            return;
        }
        if seen.len() >= SEEN_ENTRIES_MAX {
            seen.clear();
        }
        seen.insert(key, now);
    }
    let state = state.clone();
    let identity = identity.clone();
    tokio::spawn(async move {
        if let Err(e) = state
            .storage
            .touch_device(&identity.user_id, &identity.device_id, ip.as_deref(), now)
            .await
        {
            tracing::warn!(error = %e, "cannot record device last-seen");
        }
    });
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = access_token(parts)
            .ok_or_else(|| MatrixError::new(ErrorKind::MissingToken, "Missing access token"))?;
        let identity = authenticate(state, &token).await?;
        note_seen(state, &identity, client_ip(state, parts));
        Ok(Auth(identity))
    }
}

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match access_token(parts) {
            None => Ok(MaybeAuth(None)),
            Some(token) => Ok(MaybeAuth(Some(authenticate(state, &token).await?))),
        }
    }
}

/// The client address as an extractor (for rate limits).
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            client_ip(state, parts).unwrap_or_else(|| "unknown".to_owned()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_tokens() {
        assert_eq!(percent_decode("abc%2Fdef"), "abc/def");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%"), "%");
    }
}
