//! Applying a filter to what `/sync` returns.
//!
//! The definitions and their validation live in `myelin_core::filter`; this
//! module resolves the `filter` query parameter (a stored filter id or inline
//! JSON) and answers "does this event / room pass?".
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#filtering>

use myelin_core::filter::{Filter, RoomEventFilter, parse_filter};
use myelin_core::{MatrixError, MatrixResult};
use myelin_storage::Storage;

/// Timeline events per room when the filter names no limit (Synapse's and
/// the clients' usual default).
pub const TIMELINE_LIMIT_DEFAULT: usize = 10;
/// Timeline events per room at most, whatever the filter asks: a bound on
/// the work and the size of one response.
pub const TIMELINE_LIMIT_MAX: usize = 500;
/// Longest inline filter accepted in the query string.
pub const INLINE_FILTER_LENGTH_MAX: usize = 16 * 1024;

/// The filter of a request: `param` is a filter id (stored with
/// `POST /user/{userId}/filter`) or a JSON object (it starts with `{`).
/// No parameter is the empty filter (everything).
pub async fn load_filter(
    storage: &dyn Storage,
    user_id: &str,
    param: Option<&str>,
) -> MatrixResult<Filter> {
    let Some(param) = param.filter(|p| !p.is_empty()) else {
        return Ok(Filter::default());
    };
    let definition = if param.trim_start().starts_with('{') {
        if param.len() > INLINE_FILTER_LENGTH_MAX {
            return Err(MatrixError::invalid_param(format!(
                "The inline filter is longer than {INLINE_FILTER_LENGTH_MAX} bytes"
            )));
        }
        serde_json::from_str(param)
            .map_err(|e| MatrixError::invalid_param(format!("The filter is not valid JSON: {e}")))?
    } else {
        storage
            .filter(user_id, param)
            .await
            .map_err(MatrixError::internal)?
            .ok_or_else(|| MatrixError::invalid_param(format!("Unknown filter `{param}`")))?
    };
    parse_filter(definition).map_err(MatrixError::invalid_param)
}

/// A filter's answers for one sync.
pub(crate) struct SyncFilter {
    pub filter: Filter,
}

impl SyncFilter {
    pub fn new(filter: Filter) -> Self {
        Self { filter }
    }

    fn room(&self) -> Option<&myelin_core::filter::RoomFilter> {
        self.filter.room.as_ref()
    }

    /// The timeline limit per room.
    pub fn timeline_limit(&self) -> usize {
        let limit = self
            .room()
            .and_then(|r| r.timeline.as_ref())
            .and_then(|t| t.base.limit)
            .map_or(TIMELINE_LIMIT_DEFAULT, |l| {
                usize::try_from(l).unwrap_or(TIMELINE_LIMIT_MAX)
            });
        limit.clamp(1, TIMELINE_LIMIT_MAX)
    }

    pub fn include_leave(&self) -> bool {
        self.room().and_then(|r| r.include_leave).unwrap_or(false)
    }

    /// Whether thread notifications are counted apart
    /// (`room.timeline.unread_thread_notifications`).
    pub fn unread_thread_notifications(&self) -> bool {
        self.timeline()
            .and_then(|t| t.unread_thread_notifications)
            .unwrap_or(false)
    }

    pub fn lazy_load_members(&self) -> bool {
        self.state()
            .and_then(|s| s.lazy_load_members)
            .unwrap_or(false)
    }

    /// Whether the room appears at all (`room.rooms` / `room.not_rooms`).
    pub fn room_allowed(&self, room_id: &str) -> bool {
        self.room().is_none_or(|r| {
            myelin_core::filter::rooms_allow(r.rooms.as_deref(), r.not_rooms.as_deref(), room_id)
        })
    }

    fn timeline(&self) -> Option<&RoomEventFilter> {
        self.room().and_then(|r| r.timeline.as_ref())
    }

    fn state(&self) -> Option<&RoomEventFilter> {
        self.room().and_then(|r| r.state.as_ref())
    }

    fn ephemeral(&self) -> Option<&RoomEventFilter> {
        self.room().and_then(|r| r.ephemeral.as_ref())
    }

    fn room_account_data(&self) -> Option<&RoomEventFilter> {
        self.room().and_then(|r| r.account_data.as_ref())
    }

    /// Whether the timeline of `room_id` is wanted at all.
    pub fn timeline_room(&self, room_id: &str) -> bool {
        self.timeline().is_none_or(|f| f.allows_room(room_id))
    }

    pub fn state_room(&self, room_id: &str) -> bool {
        self.state().is_none_or(|f| f.allows_room(room_id))
    }

    pub fn ephemeral_room(&self, room_id: &str) -> bool {
        self.ephemeral().is_none_or(|f| f.allows_room(room_id))
    }

    pub fn account_data_room(&self, room_id: &str) -> bool {
        self.room_account_data()
            .is_none_or(|f| f.allows_room(room_id))
    }

    /// A timeline event passes (`content` is only looked at for `contains_url`).
    pub fn timeline_event(&self, kind: &str, sender: &str, json: &str) -> bool {
        self.timeline().is_none_or(|f| {
            f.matches_event(
                kind,
                sender,
                f.contains_url.is_some() && myelin_core::filter::event_has_url(json),
            )
        })
    }

    pub fn state_event(&self, kind: &str, sender: &str, json: &str) -> bool {
        self.state().is_none_or(|f| {
            f.matches_event(
                kind,
                sender,
                f.contains_url.is_some() && myelin_core::filter::event_has_url(json),
            )
        })
    }

    /// An ephemeral event type (`m.typing`, `m.receipt`) passes.
    pub fn ephemeral_type(&self, kind: &str) -> bool {
        self.ephemeral().is_none_or(|f| f.base.matches_type(kind))
    }

    pub fn room_account_data_type(&self, kind: &str) -> bool {
        self.room_account_data()
            .is_none_or(|f| f.base.matches_type(kind))
    }

    pub fn account_data_type(&self, kind: &str) -> bool {
        self.filter
            .account_data
            .as_ref()
            .is_none_or(|f| f.matches_type(kind))
    }

    /// A presence event passes the filter's `presence` types and senders.
    pub fn presence_event(&self, kind: &str, sender: &str) -> bool {
        self.filter
            .presence
            .as_ref()
            .is_none_or(|f| f.matches(kind, sender))
    }

    /// Presence events at most (`presence.limit`).
    pub fn presence_limit(&self) -> Option<usize> {
        self.filter
            .presence
            .as_ref()
            .and_then(|f| f.limit)
            .and_then(|l| usize::try_from(l).ok())
    }

    /// Global account data entries at most (`account_data.limit`).
    pub fn account_data_limit(&self) -> Option<usize> {
        self.filter
            .account_data
            .as_ref()
            .and_then(|f| f.limit)
            .and_then(|l| usize::try_from(l).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_and_rooms() {
        let f = SyncFilter::new(
            parse_filter(json!({
                "room": {"timeline": {"limit": 100000}, "not_rooms": ["!b"], "state": {"lazy_load_members": true}}
            }))
            .unwrap(),
        );
        assert_eq!(f.timeline_limit(), TIMELINE_LIMIT_MAX);
        assert!(f.room_allowed("!a"));
        assert!(!f.room_allowed("!b"));
        assert!(f.lazy_load_members());
        assert_eq!(
            SyncFilter::new(Filter::default()).timeline_limit(),
            TIMELINE_LIMIT_DEFAULT
        );
    }
}
