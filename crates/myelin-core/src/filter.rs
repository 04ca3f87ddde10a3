//! Filter definitions (`POST /user/{userId}/filter`, `GET /sync?filter=`).
//!
//! Parsing is validation: a definition that deserializes here is stored as the
//! client sent it. `/sync` (a later issue) reads the same types.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#filtering>

use serde::{Deserialize, Serialize};

/// Longest list a filter may hold (rooms, senders, types), a bound on the
/// work each sync does for it.
pub const FILTER_LIST_LENGTH_MAX: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_data: Option<EventFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_fields: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_format: Option<EventFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<EventFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    Client,
    Federation,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_senders: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub senders: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_data: Option<RoomEventFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<RoomEventFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_leave: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RoomEventFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<RoomEventFilter>,
}

/// `RoomEventFilter` and `StateFilter` of the spec, which have the same fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomEventFilter {
    #[serde(flatten)]
    pub base: EventFilter,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_url: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_redundant_members: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lazy_load_members: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread_thread_notifications: Option<bool>,
}

/// Matches `text` against `pattern`, where `*` stands for any run of
/// characters (the spec's wildcard in `types`). Backtracks only to the last
/// star: O(len(pattern) × len(text)) at worst.
pub fn glob(pattern: &str, text: &str) -> bool {
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

/// `rooms` / `not_rooms`: the `not_` list wins; no `rooms` list allows all.
pub fn rooms_allow(rooms: Option<&[String]>, not_rooms: Option<&[String]>, room_id: &str) -> bool {
    if not_rooms.is_some_and(|n| n.iter().any(|r| r == room_id)) {
        return false;
    }
    rooms.is_none_or(|r| r.iter().any(|r| r == room_id))
}

/// Whether an event (its JSON) has a string `content.url`, for `contains_url`.
pub fn event_has_url(event_json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(event_json)
        .ok()
        .and_then(|v| {
            v.get("content")?
                .get("url")
                .map(serde_json::Value::is_string)
        })
        .unwrap_or(false)
}

impl EventFilter {
    /// `types` / `not_types` (with `*` wildcards); the `not_` list wins.
    pub fn matches_type(&self, kind: &str) -> bool {
        if self
            .not_types
            .as_ref()
            .is_some_and(|n| n.iter().any(|p| glob(p, kind)))
        {
            return false;
        }
        self.types
            .as_ref()
            .is_none_or(|t| t.iter().any(|p| glob(p, kind)))
    }

    /// Types, and `senders` / `not_senders`; the `not_` lists win.
    pub fn matches(&self, kind: &str, sender: &str) -> bool {
        if self
            .not_senders
            .as_ref()
            .is_some_and(|n| n.iter().any(|s| s == sender))
        {
            return false;
        }
        if self
            .senders
            .as_ref()
            .is_some_and(|s| !s.iter().any(|s| s == sender))
        {
            return false;
        }
        self.matches_type(kind)
    }
}

impl RoomEventFilter {
    pub fn allows_room(&self, room_id: &str) -> bool {
        rooms_allow(self.rooms.as_deref(), self.not_rooms.as_deref(), room_id)
    }

    /// Types, senders and `contains_url` (whether the event has a string
    /// `content.url`); rooms are [`RoomEventFilter::allows_room`]'s.
    pub fn matches_event(&self, kind: &str, sender: &str, has_url: bool) -> bool {
        self.base.matches(kind, sender) && self.contains_url.is_none_or(|wanted| wanted == has_url)
    }
}

/// Parses and validates a filter definition. The error says which field is wrong.
pub fn parse_filter(value: serde_json::Value) -> Result<Filter, String> {
    check_objects(&value, FILTER_OBJECT_PATHS)?;
    let filter: Filter = serde_path_to_error::deserialize(value)
        .map_err(|e| format!("invalid filter at `{}`: {}", e.path(), e.inner()))?;
    filter.validate()?;
    Ok(filter)
}

/// Parses and validates a `RoomEventFilter` given on its own (the `filter`
/// parameter of `/rooms/{roomId}/messages` and `/rooms/{roomId}/context`).
/// The error says which field is wrong.
pub fn parse_room_event_filter(value: serde_json::Value) -> Result<RoomEventFilter, String> {
    check_objects(&value, &[""])?;
    let filter: RoomEventFilter = serde_path_to_error::deserialize(value)
        .map_err(|e| format!("invalid filter at `{}`: {}", e.path(), e.inner()))?;
    filter.validate("filter")?;
    Ok(filter)
}

/// The parts of a filter that are objects. serde would also read a struct
/// from a JSON array, which the spec does not allow.
const FILTER_OBJECT_PATHS: &[&str] = &[
    "",
    "account_data",
    "presence",
    "room",
    "room.account_data",
    "room.ephemeral",
    "room.state",
    "room.timeline",
];

fn check_objects(root: &serde_json::Value, paths: &[&str]) -> Result<(), String> {
    for path in paths {
        let node = if path.is_empty() {
            Some(root)
        } else {
            path.split('.').try_fold(root, |node, key| node.get(key))
        };
        if let Some(node) = node
            && !node.is_object()
        {
            let at = if path.is_empty() { "the filter" } else { path };
            return Err(format!("`{at}` must be a JSON object"));
        }
    }
    Ok(())
}

impl Filter {
    fn validate(&self) -> Result<(), String> {
        if let Some(f) = &self.account_data {
            f.validate("account_data")?;
        }
        if let Some(f) = &self.presence {
            f.validate("presence")?;
        }
        if let Some(fields) = &self.event_fields {
            check_len("event_fields", fields)?;
        }
        if let Some(room) = &self.room {
            check_rooms("room.rooms", room.rooms.as_deref())?;
            check_rooms("room.not_rooms", room.not_rooms.as_deref())?;
            for (name, f) in [
                ("room.account_data", &room.account_data),
                ("room.ephemeral", &room.ephemeral),
                ("room.state", &room.state),
                ("room.timeline", &room.timeline),
            ] {
                if let Some(f) = f {
                    f.validate(name)?;
                }
            }
        }
        Ok(())
    }
}

impl EventFilter {
    fn validate(&self, at: &str) -> Result<(), String> {
        if self.limit == Some(0) {
            return Err(format!("`{at}.limit` must be a positive integer"));
        }
        for (name, list) in [
            ("senders", &self.senders),
            ("not_senders", &self.not_senders),
        ] {
            if let Some(list) = list {
                check_len(&format!("{at}.{name}"), list)?;
                if let Some(bad) = list.iter().find(|s| crate::ids::parse_user_id(s).is_none()) {
                    return Err(format!(
                        "`{at}.{name}` holds `{bad}`, which is not a user id"
                    ));
                }
            }
        }
        for (name, list) in [("types", &self.types), ("not_types", &self.not_types)] {
            if let Some(list) = list {
                check_len(&format!("{at}.{name}"), list)?;
            }
        }
        Ok(())
    }
}

impl RoomEventFilter {
    fn validate(&self, at: &str) -> Result<(), String> {
        self.base.validate(at)?;
        check_rooms(&format!("{at}.rooms"), self.rooms.as_deref())?;
        check_rooms(&format!("{at}.not_rooms"), self.not_rooms.as_deref())
    }
}

fn check_len(at: &str, list: &[String]) -> Result<(), String> {
    if list.len() > FILTER_LIST_LENGTH_MAX {
        return Err(format!(
            "`{at}` holds more than {FILTER_LIST_LENGTH_MAX} entries"
        ));
    }
    Ok(())
}

/// Room ids start with `!`; from room version 12 they carry no server name,
/// so nothing more is parsed out of them.
fn check_rooms(at: &str, rooms: Option<&[String]>) -> Result<(), String> {
    let Some(rooms) = rooms else { return Ok(()) };
    if rooms.len() > FILTER_LIST_LENGTH_MAX {
        return Err(format!(
            "`{at}` holds more than {FILTER_LIST_LENGTH_MAX} entries"
        ));
    }
    match rooms.iter().find(|r| !r.starts_with('!') || r.len() > 255) {
        Some(bad) => Err(format!("`{at}` holds `{bad}`, which is not a room id")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_the_spec_example() {
        let f = parse_filter(json!({
            "event_fields": ["type", "content", "sender"],
            "event_format": "client",
            "presence": {"not_senders": ["@alice:example.com"], "types": ["m.presence"]},
            "room": {
                "ephemeral": {"not_rooms": ["!726s6s6q:example.com"], "not_senders": ["@spam:example.com"], "types": ["m.receipt", "m.typing"]},
                "rooms": ["!726s6s6q:example.com"],
                "state": {"not_rooms": ["!726s6s6q:example.com"], "types": ["m.room.*"], "lazy_load_members": true},
                "timeline": {"limit": 10, "not_rooms": ["!726s6s6q:example.com"], "not_senders": ["@spam:example.com"], "types": ["m.room.message"]}
            }
        }))
        .unwrap();
        assert_eq!(f.room.unwrap().timeline.unwrap().base.limit, Some(10));
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(parse_filter(json!({"event_format": "xml"})).is_err());
        assert!(parse_filter(json!({"room": {"timeline": {"limit": "ten"}}})).is_err());
        assert!(parse_filter(json!({"room": {"timeline": {"limit": 0}}})).is_err());
        assert!(parse_filter(json!({"room": {"timeline": {"limit": -1}}})).is_err());
        assert!(parse_filter(json!({"room": {"rooms": ["not-a-room"]}})).is_err());
        assert!(parse_filter(json!({"presence": {"senders": ["nobody"]}})).is_err());
        assert!(parse_filter(json!([])).is_err());
        assert!(parse_filter(json!({"presence": []})).is_err());
        assert!(parse_filter(json!({"room": {"timeline": [10]}})).is_err());
    }

    #[test]
    fn room_event_filter_alone() {
        let f = parse_room_event_filter(
            json!({"types": ["m.room.*"], "lazy_load_members": true, "contains_url": false}),
        )
        .unwrap();
        assert_eq!(f.base.types, Some(vec!["m.room.*".to_owned()]));
        assert_eq!(f.lazy_load_members, Some(true));
        assert!(parse_room_event_filter(json!([])).is_err());
        assert!(parse_room_event_filter(json!({"senders": ["nobody"]})).is_err());
        assert!(parse_room_event_filter(json!({"limit": 0})).is_err());
        assert!(parse_room_event_filter(json!({"contains_url": "yes"})).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob("m.room.*", "m.room.message"));
        assert!(glob("*", ""));
        assert!(glob("m.*.member", "m.room.member"));
        assert!(glob("*.*", "a.b"));
        assert!(!glob("m.room.message", "m.room.messages"));
        assert!(!glob("m.room.*", "m.reaction"));
        assert!(!glob("a*b", "ac"));
        assert!(!glob("a*a", "a"));
    }

    #[test]
    fn event_and_room_rules() {
        let f: EventFilter = serde_json::from_value(json!({
            "types": ["m.room.*"], "not_types": ["m.room.member"], "not_senders": ["@spam:x"]
        }))
        .unwrap();
        assert!(f.matches("m.room.message", "@a:x"));
        assert!(!f.matches("m.room.member", "@a:x"));
        assert!(!f.matches("m.room.message", "@spam:x"));
        assert!(!f.matches("m.reaction", "@a:x"));
        let only: EventFilter = serde_json::from_value(json!({ "senders": ["@a:x"] })).unwrap();
        assert!(!only.matches("m.room.message", "@b:x"));
        let r: RoomEventFilter = serde_json::from_value(
            json!({ "rooms": ["!a"], "not_rooms": ["!b"], "contains_url": true }),
        )
        .unwrap();
        assert!(r.allows_room("!a") && !r.allows_room("!b") && !r.allows_room("!c"));
        assert!(r.matches_event("m.room.message", "@a:x", true));
        assert!(!r.matches_event("m.room.message", "@a:x", false));
        assert!(event_has_url(r#"{"content":{"url":"mxc://x/y"}}"#));
        assert!(!event_has_url(r#"{"content":{"url":5}}"#));
    }

    #[test]
    fn error_names_the_field() {
        let err = parse_filter(json!({"room": {"timeline": {"limit": "ten"}}})).unwrap_err();
        assert!(err.contains("room.timeline"), "{err}");
    }
}
