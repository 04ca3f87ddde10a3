//! Typing notifications: ephemeral, in memory, with their own stream
//! position so an incremental `/sync` knows whether a room's typing list
//! changed. (A cluster will share them through Redis.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::notifier::Notifier;

/// The longest a client may say it types without repeating itself.
pub const TYPING_TIMEOUT_MAX: Duration = Duration::from_secs(120);
/// How often expired typing notices are swept (and their rooms woken).
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Typing(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    notifier: Arc<Notifier>,
}

#[derive(Default)]
struct State {
    /// The typing stream's position; bumped by every change.
    pos: i64,
    rooms: HashMap<String, RoomTyping>,
}

#[derive(Default)]
struct RoomTyping {
    /// user → when their notice expires.
    users: HashMap<String, Instant>,
    /// The position of the last change in this room.
    changed_at: i64,
    /// Who to wake when it changes (the room's members at the last change).
    audience: Vec<String>,
}

impl Typing {
    /// A typing tracker; its sweeper runs on the current tokio runtime until
    /// the tracker is dropped.
    pub fn new(notifier: Arc<Notifier>) -> Self {
        let typing = Self(Arc::new(Inner {
            state: Mutex::new(State {
                // Positions start from the clock so a restarted server never
                // hands out one a client's old token already passed.
                pos: myelin_core::time::now_ms(),
                rooms: HashMap::new(),
            }),
            notifier,
        }));
        let weak = Arc::downgrade(&typing.0);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { break };
                    Typing(inner).sweep(Instant::now());
                }
            });
        }
        typing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts (`Some(timeout)`) or stops (`None`) `user_id` typing in a room,
    /// waking `audience` (the room's members).
    pub fn set(
        &self,
        room_id: &str,
        user_id: &str,
        timeout: Option<Duration>,
        audience: Vec<String>,
    ) {
        let now = Instant::now();
        let changed = {
            let mut state = self.lock();
            let State { pos, rooms } = &mut *state;
            let room = rooms.entry(room_id.to_owned()).or_default();
            let changed = match timeout {
                Some(t) => room
                    .users
                    .insert(user_id.to_owned(), now + t.min(TYPING_TIMEOUT_MAX))
                    .is_none(),
                None => room.users.remove(user_id).is_some(),
            };
            if changed {
                *pos += 1;
                room.changed_at = *pos;
            }
            room.audience = audience;
            changed.then(|| room.audience.clone())
        };
        if let Some(audience) = changed {
            self.0.notifier.notify(audience.iter().map(String::as_str));
        }
    }

    /// Who types in a room now, and the position of its last change.
    pub fn room(&self, room_id: &str) -> (Vec<String>, i64) {
        let state = self.lock();
        match state.rooms.get(room_id) {
            Some(room) => {
                let now = Instant::now();
                let mut users: Vec<String> = room
                    .users
                    .iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(u, _)| u.clone())
                    .collect();
                users.sort();
                (users, room.changed_at)
            }
            None => (Vec::new(), 0),
        }
    }

    /// The typing stream's position.
    pub fn position(&self) -> i64 {
        self.lock().pos
    }

    /// Drops expired notices; each room that changed gets a new position and
    /// its audience is woken.
    fn sweep(&self, now: Instant) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            let State { pos, rooms } = &mut *state;
            // Rooms stay (one small entry each) so that a client syncing
            // late still learns from `changed_at` that typing stopped.
            for room in rooms.values_mut() {
                let before = room.users.len();
                room.users.retain(|_, until| *until > now);
                if room.users.len() != before {
                    *pos += 1;
                    room.changed_at = *pos;
                    wake.extend(room.audience.iter().cloned());
                }
            }
        }
        if !wake.is_empty() {
            self.0.notifier.notify(wake.iter().map(String::as_str));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_stop_and_expire() {
        let notifier = Arc::new(Notifier::new());
        let typing = Typing::new(notifier.clone());
        let rx = notifier.subscribe("@b:x");
        let start = typing.position();
        assert!(start > 0, "positions start from the clock");
        typing.set(
            "!r",
            "@a:x",
            Some(Duration::from_secs(30)),
            vec!["@b:x".into()],
        );
        assert!(rx.has_changed().unwrap());
        let (users, at) = typing.room("!r");
        assert_eq!(users, vec!["@a:x".to_owned()]);
        assert_eq!(at, start + 1);
        typing.set("!r", "@a:x", None, vec!["@b:x".into()]);
        assert!(typing.room("!r").0.is_empty());
        assert_eq!(typing.position(), start + 2);
        typing.set(
            "!r",
            "@a:x",
            Some(Duration::from_millis(1)),
            vec!["@b:x".into()],
        );
        typing.sweep(Instant::now() + Duration::from_secs(1));
        assert!(typing.room("!r").0.is_empty());
        assert_eq!(typing.position(), start + 4);
    }
}
