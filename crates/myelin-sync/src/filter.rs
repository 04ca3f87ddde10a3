//! Applying a filter to what `/sync` returns.
//!
//! The definitions and their validation live in `myelin_core::filter`; this
//! module resolves the `filter` query parameter (a stored filter id or inline
//! JSON) and answers "does this event / room pass?".
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#filtering>

use myelin_core::filter::{EventFilter, Filter, RoomEventFilter, parse_filter};
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

    pub fn lazy_load_members(&self) -> bool {
        self.state()
            .and_then(|s| s.lazy_load_members)
            .unwrap_or(false)
    }

    /// Whether the room appears at all (`room.rooms` / `room.not_rooms`).
    pub fn room_allowed(&self, room_id: &str) -> bool {
        self.room()
            .is_none_or(|r| rooms_allow(r.rooms.as_deref(), r.not_rooms.as_deref(), room_id))
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
        self.timeline().is_none_or(|f| section_room(f, room_id))
    }

    pub fn state_room(&self, room_id: &str) -> bool {
        self.state().is_none_or(|f| section_room(f, room_id))
    }

    pub fn ephemeral_room(&self, room_id: &str) -> bool {
        self.ephemeral().is_none_or(|f| section_room(f, room_id))
    }

    pub fn account_data_room(&self, room_id: &str) -> bool {
        self.room_account_data()
            .is_none_or(|f| section_room(f, room_id))
    }

    /// A timeline event passes (`content` is only looked at for `contains_url`).
    pub fn timeline_event(&self, kind: &str, sender: &str, json: &str) -> bool {
        self.timeline().is_none_or(|f| {
            event_matches(&f.base, kind, sender) && contains_url_matches(f.contains_url, json)
        })
    }

    pub fn state_event(&self, kind: &str, sender: &str, json: &str) -> bool {
        self.state().is_none_or(|f| {
            event_matches(&f.base, kind, sender) && contains_url_matches(f.contains_url, json)
        })
    }

    /// An ephemeral event type (`m.typing`, `m.receipt`) passes.
    pub fn ephemeral_type(&self, kind: &str) -> bool {
        self.ephemeral().is_none_or(|f| types_match(&f.base, kind))
    }

    pub fn room_account_data_type(&self, kind: &str) -> bool {
        self.room_account_data()
            .is_none_or(|f| types_match(&f.base, kind))
    }

    pub fn account_data_type(&self, kind: &str) -> bool {
        self.filter
            .account_data
            .as_ref()
            .is_none_or(|f| types_match(f, kind))
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

fn rooms_allow(rooms: Option<&[String]>, not_rooms: Option<&[String]>, room_id: &str) -> bool {
    if not_rooms.is_some_and(|n| n.iter().any(|r| r == room_id)) {
        return false;
    }
    rooms.is_none_or(|r| r.iter().any(|r| r == room_id))
}

fn section_room(f: &RoomEventFilter, room_id: &str) -> bool {
    rooms_allow(f.rooms.as_deref(), f.not_rooms.as_deref(), room_id)
}

fn types_match(f: &EventFilter, kind: &str) -> bool {
    if f.not_types
        .as_ref()
        .is_some_and(|n| n.iter().any(|p| glob(p, kind)))
    {
        return false;
    }
    f.types
        .as_ref()
        .is_none_or(|t| t.iter().any(|p| glob(p, kind)))
}

/// `types`/`not_types` (with `*` wildcards) and `senders`/`not_senders`;
/// the `not_` lists win.
pub(crate) fn event_matches(f: &EventFilter, kind: &str, sender: &str) -> bool {
    if f.not_senders
        .as_ref()
        .is_some_and(|n| n.iter().any(|s| s == sender))
    {
        return false;
    }
    if f.senders
        .as_ref()
        .is_some_and(|s| !s.iter().any(|s| s == sender))
    {
        return false;
    }
    types_match(f, kind)
}

/// `contains_url`: `true` keeps only events whose content has a string
/// `url`, `false` only those without; absent keeps all.
fn contains_url_matches(contains_url: Option<bool>, json: &str) -> bool {
    let Some(wanted) = contains_url else {
        return true;
    };
    let has = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| {
            v.get("content")?
                .get("url")
                .map(serde_json::Value::is_string)
        })
        .unwrap_or(false);
    has == wanted
}

/// Matches `text` against `pattern`, where `*` stands for any sequence of
/// characters (the spec's wildcard in `types`). Linear backtracking over the
/// last star: O(len(pattern) × len(text)) at worst.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn glob_wildcards() {
        assert!(glob("m.room.*", "m.room.message"));
        assert!(glob("*", ""));
        assert!(glob("m.*.member", "m.room.member"));
        assert!(glob("m.room.message", "m.room.message"));
        assert!(!glob("m.room.message", "m.room.messages"));
        assert!(!glob("m.room.*", "m.reaction"));
        assert!(glob("*.*", "a.b"));
        assert!(!glob("a*b", "ac"));
    }

    #[test]
    fn event_filter_rules() {
        let f: EventFilter = serde_json::from_value(json!({
            "types": ["m.room.*"], "not_types": ["m.room.member"], "not_senders": ["@spam:x"]
        }))
        .unwrap();
        assert!(event_matches(&f, "m.room.message", "@a:x"));
        assert!(!event_matches(&f, "m.room.member", "@a:x"));
        assert!(!event_matches(&f, "m.room.message", "@spam:x"));
        assert!(!event_matches(&f, "m.reaction", "@a:x"));
        let none: EventFilter = serde_json::from_value(json!({"types": []})).unwrap();
        assert!(!event_matches(&none, "m.room.message", "@a:x"));
    }

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

    #[test]
    fn contains_url() {
        let with = r#"{"content":{"url":"mxc://x/y"}}"#;
        let without = r#"{"content":{}}"#;
        assert!(contains_url_matches(Some(true), with));
        assert!(!contains_url_matches(Some(true), without));
        assert!(contains_url_matches(Some(false), without));
        assert!(contains_url_matches(None, without));
    }
}
