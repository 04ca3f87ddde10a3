//! Presence: ephemeral, in memory (like typing), with its own stream
//! position so an incremental `/sync` knows whose presence changed.
//! (A cluster will share it through Redis.)
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#presence>

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use myelin_storage::Storage;

use crate::notifier::Notifier;

/// An online user with no activity for this long becomes `unavailable`.
pub const PRESENCE_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How often idle users are swept (and their audiences woken).
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Longest `status_msg` accepted, in bytes.
pub const STATUS_MSG_LENGTH_MAX: usize = 1024;

/// A user's presence state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceState {
    Online,
    Unavailable,
    Offline,
}

impl PresenceState {
    /// `online`, `unavailable` or `offline`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(Self::Online),
            "unavailable" => Some(Self::Unavailable),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Unavailable => "unavailable",
            Self::Offline => "offline",
        }
    }
}

/// What a client sees of a user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    pub user_id: String,
    pub presence: PresenceState,
    pub status_msg: Option<String>,
    /// Milliseconds since the user's last activity (`None`: never active).
    pub last_active_ago: Option<i64>,
    pub currently_active: bool,
    /// The position of the user's last change.
    pub changed_at: i64,
}

impl UserPresence {
    /// The content of the user's `m.presence` event (and the body of
    /// `GET /presence/{userId}/status`).
    pub fn content(&self) -> serde_json::Value {
        let mut content = serde_json::json!({
            "presence": self.presence.as_str(),
            "currently_active": self.currently_active,
        });
        if let Some(ago) = self.last_active_ago {
            content["last_active_ago"] = ago.into();
        }
        if let Some(msg) = &self.status_msg {
            content["status_msg"] = msg.clone().into();
        }
        content
    }
}

#[derive(Clone)]
pub struct Presence(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    notifier: Arc<Notifier>,
}

struct State {
    /// The presence stream's position; bumped by every change.
    pos: i64,
    users: HashMap<String, Entry>,
}

struct Entry {
    presence: PresenceState,
    status_msg: Option<String>,
    /// Milliseconds since the epoch.
    last_active_ts: Option<i64>,
    changed_at: i64,
    /// Who to wake when it changes (who shared a room at the last change).
    audience: Vec<String>,
}

impl Presence {
    /// A presence tracker; its idle sweeper runs on the current tokio runtime
    /// until the tracker is dropped.
    pub fn new(notifier: Arc<Notifier>) -> Self {
        let presence = Self(Arc::new(Inner {
            state: Mutex::new(State {
                // From the clock, like typing: a restarted server never hands
                // out a position an old token already passed.
                pos: myelin_core::time::now_ms(),
                users: HashMap::new(),
            }),
            notifier,
        }));
        let weak = Arc::downgrade(&presence.0);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { break };
                    Presence(inner).sweep(myelin_core::time::now_ms());
                }
            });
        }
        presence
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets a user's presence (and, when `status_msg` is `Some`, its status
    /// message), marking them active now unless `offline`. Returns whether
    /// anything others see changed; the caller then calls [`Self::wake`]
    /// with who shares a room with the user.
    pub fn set(
        &self,
        user_id: &str,
        presence: PresenceState,
        status_msg: Option<Option<String>>,
    ) -> bool {
        self.set_at(user_id, presence, status_msg, myelin_core::time::now_ms())
    }

    fn set_at(
        &self,
        user_id: &str,
        presence: PresenceState,
        status_msg: Option<Option<String>>,
        now: i64,
    ) -> bool {
        let mut state = self.lock();
        let State { pos, users } = &mut *state;
        let entry = users.entry(user_id.to_owned()).or_insert_with(|| Entry {
            presence: PresenceState::Offline,
            status_msg: None,
            last_active_ts: None,
            changed_at: 0,
            audience: Vec::new(),
        });
        let mut changed = entry.presence != presence;
        entry.presence = presence;
        if let Some(msg) = status_msg
            && entry.status_msg != msg
        {
            entry.status_msg = msg;
            changed = true;
        }
        if presence != PresenceState::Offline {
            entry.last_active_ts = Some(now);
        }
        if changed {
            *pos += 1;
            entry.changed_at = *pos;
        }
        changed
    }

    /// A `/sync` with `set_presence`: `online` marks the user active (a
    /// change only when they were not online), `unavailable` sets that.
    /// `offline` means "do not mark me online" and changes nothing.
    pub fn syncing(&self, user_id: &str, presence: PresenceState) -> bool {
        match presence {
            PresenceState::Offline => false,
            p => self.set(user_id, p, None),
        }
    }

    /// Records who shares a room with `user_id` and wakes them (and the user).
    pub fn wake(&self, user_id: &str, mut audience: Vec<String>) {
        if !audience.iter().any(|u| u == user_id) {
            audience.push(user_id.to_owned());
        }
        if let Some(entry) = self.lock().users.get_mut(user_id) {
            entry.audience = audience.clone();
        }
        self.0.notifier.notify(audience.iter().map(String::as_str));
    }

    /// A user's presence now; `offline` and never active when unknown.
    pub fn get(&self, user_id: &str) -> UserPresence {
        let now = myelin_core::time::now_ms();
        let state = self.lock();
        match state.users.get(user_id) {
            Some(entry) => view(user_id, entry, now),
            None => UserPresence {
                user_id: user_id.to_owned(),
                presence: PresenceState::Offline,
                status_msg: None,
                last_active_ago: None,
                currently_active: false,
                changed_at: 0,
            },
        }
    }

    /// Users whose presence changed after `after` up to `upto` (all known
    /// users when `after` is `None`), among `among`.
    pub fn changed(
        &self,
        after: Option<i64>,
        upto: i64,
        among: &HashSet<String>,
    ) -> Vec<UserPresence> {
        let now = myelin_core::time::now_ms();
        let state = self.lock();
        let mut out: Vec<UserPresence> = state
            .users
            .iter()
            .filter(|(u, e)| {
                after.is_none_or(|a| e.changed_at > a) && e.changed_at <= upto && among.contains(*u)
            })
            .map(|(u, e)| view(u, e, now))
            .collect();
        out.sort_by_key(|p| p.changed_at);
        out
    }

    /// The presence stream's position.
    pub fn position(&self) -> i64 {
        self.lock().pos
    }

    /// Online users idle past [`PRESENCE_IDLE_TIMEOUT`] become `unavailable`;
    /// each gets a new position and their audience is woken.
    fn sweep(&self, now: i64) {
        let idle = PRESENCE_IDLE_TIMEOUT.as_millis() as i64;
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            let State { pos, users } = &mut *state;
            for entry in users.values_mut() {
                if entry.presence == PresenceState::Online
                    && entry.last_active_ts.is_none_or(|t| now - t >= idle)
                {
                    entry.presence = PresenceState::Unavailable;
                    *pos += 1;
                    entry.changed_at = *pos;
                    wake.extend(entry.audience.iter().cloned());
                }
            }
        }
        if !wake.is_empty() {
            self.0.notifier.notify(wake.iter().map(String::as_str));
        }
    }
}

fn view(user_id: &str, entry: &Entry, now: i64) -> UserPresence {
    UserPresence {
        user_id: user_id.to_owned(),
        presence: entry.presence,
        status_msg: entry.status_msg.clone(),
        last_active_ago: entry.last_active_ts.map(|t| (now - t).max(0)),
        currently_active: entry.presence == PresenceState::Online,
        changed_at: entry.changed_at,
    }
}

/// Everyone who shares a joined room with `user_id` (the user included):
/// whose presence they see, and who sees theirs.
pub async fn shared_users(
    storage: &dyn Storage,
    user_id: &str,
) -> myelin_storage::StorageResult<HashSet<String>> {
    let mut users = HashSet::from([user_id.to_owned()]);
    for m in storage.user_memberships(user_id).await? {
        if m.membership != "join" {
            continue;
        }
        for member in storage.room_members(m.room_nid).await? {
            if member.membership == "join" {
                users.insert(member.user_id);
            }
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_wake_and_idle() {
        let notifier = Arc::new(Notifier::new());
        let presence = Presence::new(notifier.clone());
        let rx = notifier.subscribe("@b:x");
        let start = presence.position();
        assert!(start > 0, "positions start from the clock");
        assert_eq!(presence.get("@a:x").presence, PresenceState::Offline);

        assert!(presence.set("@a:x", PresenceState::Online, Some(Some("hi".into()))));
        presence.wake("@a:x", vec!["@b:x".into()]);
        assert!(rx.has_changed().unwrap());
        let p = presence.get("@a:x");
        assert_eq!(p.presence, PresenceState::Online);
        assert_eq!(p.status_msg.as_deref(), Some("hi"));
        assert!(p.currently_active);
        assert_eq!(p.changed_at, start + 1);
        // Still online: activity only, no new position.
        assert!(!presence.syncing("@a:x", PresenceState::Online));
        assert!(!presence.syncing("@a:x", PresenceState::Offline));
        assert_eq!(presence.position(), start + 1);

        let among = HashSet::from(["@a:x".to_owned()]);
        assert_eq!(presence.changed(Some(start), start + 1, &among).len(), 1);
        assert!(
            presence
                .changed(Some(start + 1), start + 1, &among)
                .is_empty()
        );
        assert!(
            presence
                .changed(None, start + 1, &HashSet::new())
                .is_empty()
        );

        let later = myelin_core::time::now_ms() + PRESENCE_IDLE_TIMEOUT.as_millis() as i64;
        presence.sweep(later);
        assert_eq!(presence.get("@a:x").presence, PresenceState::Unavailable);
        assert_eq!(presence.position(), start + 2);
    }
}
