//! The body of `POST /_matrix/push/v1/notify`: pure functions over the
//! pusher, the notification and what was looked up about its event.
//! Spec: <https://spec.matrix.org/v1.19/push-gateway-api/#post_matrixpushv1notify>

use myelin_storage::{Notification, Pusher};
use serde_json::{Map, Value, json};

/// The `data.format` that asks for no event details (`event_id_only`).
pub const FORMAT_EVENT_ID_ONLY: &str = "event_id_only";

/// What is known about the notified event besides the notification itself.
#[derive(Debug, Clone, Default)]
pub struct EventDetails {
    /// The event (PDU JSON); `None` if it is not readable (redacted).
    pub event: Option<Value>,
    pub room_name: Option<String>,
    pub room_alias: Option<String>,
    pub sender_display_name: Option<String>,
    /// The user's badge: unread notifications over all rooms.
    pub unread: u64,
}

/// Whether the pusher asked for `event_id_only` notifications.
pub fn is_event_id_only(pusher: &Pusher) -> bool {
    pusher.data.get("format").and_then(Value::as_str) == Some(FORMAT_EVENT_ID_ONLY)
}

/// The tweaks of a push rule's actions: every `set_tweak` with its `value`
/// (`true` when absent, as `highlight` allows).
pub fn tweaks(actions: &Value) -> Map<String, Value> {
    let mut tweaks = Map::new();
    for action in actions.as_array().into_iter().flatten() {
        if let Some(name) = action.get("set_tweak").and_then(Value::as_str) {
            let value = action.get("value").cloned().unwrap_or(Value::Bool(true));
            tweaks.insert(name.to_owned(), value);
        }
    }
    tweaks
}

/// `high` if the notification makes a sound or highlights, or may do so
/// (an encrypted event, whose rules the device evaluates); else `low`, which
/// lets gateways batch it to save battery.
pub fn priority(tweaks: &Map<String, Value>, event_type: Option<&str>) -> &'static str {
    let truthy = |v: Option<&Value>| match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    if event_type == Some("m.room.encrypted")
        || truthy(tweaks.get("highlight"))
        || truthy(tweaks.get("sound"))
    {
        "high"
    } else {
        "low"
    }
}

/// The pusher's `data` without `url` (the gateway knows where it is).
pub fn device_data(data: &Value) -> Value {
    let mut data = data.as_object().cloned().unwrap_or_default();
    data.remove("url");
    Value::Object(data)
}

/// The whole request body for one notification.
pub fn notify_body(pusher: &Pusher, notification: &Notification, details: &EventDetails) -> Value {
    let tweaks = tweaks(&notification.actions);
    let event = details.event.as_ref();
    let event_type = event.and_then(|e| e.get("type")).and_then(Value::as_str);
    let device = json!({
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.created_ms / 1000,
        "data": device_data(&pusher.data),
        "tweaks": tweaks,
    });
    // "Counts whose value is zero should be omitted."
    let mut counts = Map::new();
    if details.unread > 0 {
        counts.insert("unread".to_owned(), json!(details.unread));
    }
    let mut n = Map::new();
    n.insert("event_id".to_owned(), json!(notification.event_id));
    n.insert("room_id".to_owned(), json!(notification.room_id));
    n.insert("prio".to_owned(), json!(priority(&tweaks, event_type)));
    n.insert("counts".to_owned(), Value::Object(counts));
    n.insert("devices".to_owned(), json!([device]));
    if is_event_id_only(pusher) {
        return json!({ "notification": n });
    }
    if let Some(event) = event {
        for key in ["type", "sender"] {
            if let Some(v) = event.get(key).filter(|v| v.is_string()) {
                n.insert(key.to_owned(), v.clone());
            }
        }
        if let Some(content) = event.get("content").filter(|c| c.is_object()) {
            n.insert("content".to_owned(), content.clone());
        }
        if event_type == Some("m.room.member")
            && let Some(target) = event.get("state_key").and_then(Value::as_str)
        {
            n.insert("user_is_target".to_owned(), json!(target == pusher.user_id));
        }
    }
    let optional = [
        ("sender_display_name", &details.sender_display_name),
        ("room_name", &details.room_name),
        ("room_alias", &details.room_alias),
    ];
    for (key, value) in optional {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            n.insert(key.to_owned(), json!(v));
        }
    }
    json!({ "notification": n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pusher(data: Value) -> Pusher {
        Pusher {
            user_id: "@alice:x".into(),
            device_id: Some("DEV".into()),
            app_id: "org.example.app".into(),
            pushkey: "key-1".into(),
            kind: "http".into(),
            app_display_name: "App".into(),
            device_display_name: "Phone".into(),
            profile_tag: None,
            lang: "en".into(),
            data,
            created_ms: 1_700_000_123_456,
            last_stream_pos: 0,
            failing_since_ms: None,
        }
    }

    fn notification(actions: Value) -> Notification {
        Notification {
            room_nid: 1,
            room_id: "!r:x".into(),
            event_id: "$e".into(),
            stream_pos: 7,
            thread_id: None,
            notify: true,
            highlight: false,
            actions,
            ts: 1,
        }
    }

    fn message() -> Value {
        json!({
            "type": "m.room.message",
            "sender": "@bob:x",
            "room_id": "!r:x",
            "content": { "msgtype": "m.text", "body": "hi" },
        })
    }

    #[test]
    fn full_format() {
        let p = pusher(json!({ "url": "https://gw/_matrix/push/v1/notify", "extra": 1 }));
        let n = notification(json!(["notify", { "set_tweak": "sound", "value": "default" }]));
        let details = EventDetails {
            event: Some(message()),
            room_name: Some("Room".into()),
            room_alias: None,
            sender_display_name: Some("Bob".into()),
            unread: 3,
        };
        assert_eq!(
            notify_body(&p, &n, &details),
            json!({ "notification": {
                "event_id": "$e",
                "room_id": "!r:x",
                "type": "m.room.message",
                "sender": "@bob:x",
                "sender_display_name": "Bob",
                "room_name": "Room",
                "prio": "high",
                "content": { "msgtype": "m.text", "body": "hi" },
                "counts": { "unread": 3 },
                "devices": [{
                    "app_id": "org.example.app",
                    "pushkey": "key-1",
                    "pushkey_ts": 1_700_000_123,
                    "data": { "extra": 1 },
                    "tweaks": { "sound": "default" },
                }],
            }})
        );
    }

    #[test]
    fn event_id_only_format() {
        let p = pusher(
            json!({ "url": "https://gw/_matrix/push/v1/notify", "format": "event_id_only" }),
        );
        let n = notification(json!(["notify"]));
        let details = EventDetails {
            event: Some(message()),
            room_name: Some("Room".into()),
            unread: 0,
            ..EventDetails::default()
        };
        assert_eq!(
            notify_body(&p, &n, &details),
            json!({ "notification": {
                "event_id": "$e",
                "room_id": "!r:x",
                "prio": "low",
                "counts": {},
                "devices": [{
                    "app_id": "org.example.app",
                    "pushkey": "key-1",
                    "pushkey_ts": 1_700_000_123,
                    "data": { "format": "event_id_only" },
                    "tweaks": {},
                }],
            }})
        );
    }

    #[test]
    fn member_events_say_whether_the_user_is_the_target() {
        let p = pusher(json!({ "url": "u" }));
        let n = notification(json!(["notify"]));
        let mut details = EventDetails {
            event: Some(json!({
                "type": "m.room.member", "sender": "@bob:x", "state_key": "@alice:x",
                "content": { "membership": "invite" },
            })),
            ..EventDetails::default()
        };
        assert_eq!(
            notify_body(&p, &n, &details)["notification"]["user_is_target"],
            json!(true)
        );
        details.event.as_mut().unwrap()["state_key"] = json!("@carol:x");
        assert_eq!(
            notify_body(&p, &n, &details)["notification"]["user_is_target"],
            json!(false)
        );
    }

    #[test]
    fn tweaks_and_priority() {
        let t = tweaks(&json!([
            "notify",
            { "set_tweak": "sound", "value": "default" },
            { "set_tweak": "highlight" },
            "dont_notify",
        ]));
        assert_eq!(
            Value::Object(t.clone()),
            json!({ "sound": "default", "highlight": true })
        );
        assert_eq!(priority(&t, Some("m.room.message")), "high");
        let t = tweaks(&json!(["notify", { "set_tweak": "highlight", "value": false }]));
        assert_eq!(priority(&t, Some("m.room.message")), "low");
        assert_eq!(priority(&t, Some("m.room.encrypted")), "high");
        assert_eq!(priority(&Map::new(), None), "low");
        assert!(tweaks(&json!("notify")).is_empty());
    }
}
