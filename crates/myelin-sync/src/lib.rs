//! `/sync`: stream tokens, initial and incremental sync, long-polling.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#syncing>
//!
//! A response is computed against a fixed set of upper bounds — the event
//! writer's watermark, the receipt and account-data stream positions, the
//! typing and presence positions — read once at its start; those bounds become
//! `next_batch`. Every read is limited to them, so whatever commits while a
//! response is computed lands in the next one, and no event is skipped.
//!
//! Long-polling: the request subscribes to the user's notifier *before*
//! reading the bounds, computes, and when nothing is new waits for a wake
//! (or the timeout) and computes again.
//!
//! `prev_batch` tokens (for `/messages`) have the sync-token format: the
//! events field is the stream position just before the first timeline
//! event, i.e. `/messages?dir=b&from=<prev_batch>` returns the room's events
//! at positions at or below it.

mod device_lists;
mod engine;
mod filter;
mod format;
mod room;
mod token;

use myelin_core::filter::Filter;
use myelin_core::{MatrixError, MatrixResult};
use myelin_rooms::{Notifier, Presence, PresenceState, StreamTracker, Typing};
use myelin_storage::Storage;
use serde_json::Value;
use std::time::Duration;

pub use engine::RECENT_EVENTS_MAX;
pub use filter::{
    INLINE_FILTER_LENGTH_MAX, TIMELINE_LIMIT_DEFAULT, TIMELINE_LIMIT_MAX, load_filter,
};
pub use room::{HEROES_MAX, TIMELINE_BATCH_MAX, TIMELINE_SCAN_MAX, UNREAD_SCAN_MAX};
pub use token::SyncToken;

/// The longest a request waits for something new: longer timeouts are cut
/// to this (clients ask for 30 s; proxies close idle requests after minutes).
pub const TIMEOUT_MAX: Duration = Duration::from_secs(5 * 60);

/// Where a sync reads from.
pub struct SyncSources<'a> {
    pub storage: &'a dyn Storage,
    /// The event stream's tracker: events are read up to its watermark.
    pub events: &'a StreamTracker,
    /// Receipts and account data likewise.
    pub receipts: &'a StreamTracker,
    pub account_data: &'a StreamTracker,
    /// To-device messages and device-list changes likewise.
    pub to_device: &'a StreamTracker,
    pub device_lists: &'a StreamTracker,
    /// Wakes waiting requests when something for their user is written.
    pub notifier: &'a Notifier,
    pub typing: &'a Typing,
    pub presence: &'a Presence,
}

/// A validated `/sync` request.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub user_id: String,
    pub device_id: String,
    pub since: Option<SyncToken>,
    pub filter: Filter,
    pub full_state: bool,
    /// Already capped at [`TIMEOUT_MAX`].
    pub timeout: Duration,
}

/// `since`: absent for an initial sync; malformed → `M_INVALID_PARAM`.
pub fn parse_since(since: Option<&str>) -> MatrixResult<Option<SyncToken>> {
    since
        .filter(|s| !s.is_empty())
        .map(|s| SyncToken::parse(s).map_err(MatrixError::invalid_param))
        .transpose()
}

/// `set_presence`: `online` (the default), `offline` or `unavailable`;
/// anything else is `M_INVALID_PARAM`.
pub fn check_set_presence(set_presence: Option<&str>) -> MatrixResult<PresenceState> {
    match set_presence {
        None => Ok(PresenceState::Online),
        Some(s) => PresenceState::parse(s).ok_or_else(|| {
            MatrixError::invalid_param(format!(
                "set_presence must be online, offline or unavailable, not `{s}`"
            ))
        }),
    }
}

/// The wait a `timeout` (milliseconds) asks for, capped at [`TIMEOUT_MAX`].
pub fn timeout(timeout_ms: Option<u64>) -> Duration {
    Duration::from_millis(timeout_ms.unwrap_or(0)).min(TIMEOUT_MAX)
}

/// Answers a `/sync` request: at once when there is something new (or it
/// is an initial sync, or `full_state`), else once something arrives or
/// the timeout passes.
pub async fn sync(src: &SyncSources<'_>, req: &SyncRequest) -> MatrixResult<Value> {
    let filter = filter::SyncFilter::new(req.filter.clone());
    // Subscribe before reading anything: a write after this point wakes us.
    let mut wake = src.notifier.subscribe(&req.user_id);
    // Syncing with a token acknowledges the to-device messages it covered
    // (once per request, not per long-poll look; a token from the future
    // acknowledges only what is written).
    if let Some(since) = req.since {
        let acked = since.to_device.min(src.to_device.watermark());
        engine::acknowledge_to_device(src.storage, req, acked).await?;
    }
    let deadline = tokio::time::Instant::now() + req.timeout;
    loop {
        let upto = engine::bounds(src).await?;
        let computed = engine::compute(src, req, &filter, upto).await?;
        let must_answer = req.since.is_none() || req.full_state || !computed.empty;
        if must_answer || tokio::time::Instant::now() >= deadline {
            return answer(src, req, computed.body).await;
        }
        match tokio::time::timeout_at(deadline, wake.changed()).await {
            // Something for this user was written: compute again.
            Ok(Ok(())) => {}
            // The notifier is gone (shutting down) or the time is up.
            Ok(Err(_)) | Err(_) => return answer(src, req, computed.body).await,
        }
    }
}

/// The response as sent: the computed sections and the device's key counts.
async fn answer(src: &SyncSources<'_>, req: &SyncRequest, mut body: Value) -> MatrixResult<Value> {
    engine::add_device_key_counts(src, req, &mut body).await?;
    Ok(body)
}
