//! Wakes long-polling `/sync` requests of the users an event concerns.
//!
//! Each waiting user has a watch channel; a write wakes only its room's
//! users, so a busy room does not make every syncing client re-query.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

#[derive(Default)]
pub struct Notifier {
    users: Mutex<HashMap<String, watch::Sender<u64>>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Notifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver that changes whenever `user_id` is notified. Subscribe
    /// *before* reading what is new, so no wake-up is lost in between.
    pub fn subscribe(&self, user_id: &str) -> watch::Receiver<u64> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            // Shutting down: a receiver whose sender is gone ends any wait.
            return watch::channel(0).1;
        }
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .entry(user_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Ends every wait, now and later: the server is stopping, and a
    /// long-poll must not hold the graceful shutdown for its whole timeout.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.users.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Wakes the waiting requests of these users.
    pub fn notify<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for user_id in user_ids {
            if let Some(tx) = users.get(user_id) {
                if tx.receiver_count() == 0 {
                    // Nobody waits any more: forget the channel.
                    users.remove(user_id);
                } else {
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_the_named_users() {
        let n = Notifier::new();
        let mut a = n.subscribe("@a:x");
        let mut b = n.subscribe("@b:x");
        n.notify(["@a:x"]);
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a.changed().await.unwrap();
        n.notify(["@b:x", "@nobody:x"]);
        b.changed().await.unwrap();
        n.close();
        assert!(b.changed().await.is_err(), "closing ends waits");
        assert!(
            n.subscribe("@c:x").changed().await.is_err(),
            "and later ones"
        );
        n.close();
        assert!(b.changed().await.is_err(), "closing ends waits");
        assert!(
            n.subscribe("@c:x").changed().await.is_err(),
            "and later ones"
        );
    }
}
