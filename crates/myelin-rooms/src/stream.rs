//! Stream positions and the "persisted up to" watermark.
//!
//! Writes to different rooms run concurrently, so positions can commit out
//! of order: position 11 may commit while 10 is still being written. A
//! reader that took 11 as "everything up to here" would never see 10. The
//! tracker hands out positions and publishes a watermark — the greatest
//! position below which nothing is still in flight — and readers read only
//! up to it. A single node allocates in process; a cluster will carry one
//! position per writer in its tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use tokio::sync::watch;

/// Users to wake once a position becomes visible.
pub type Visible = Vec<String>;

pub struct StreamTracker {
    inner: Mutex<Inner>,
    watermark: watch::Sender<i64>,
}

struct Inner {
    /// The last position handed out.
    last: i64,
    /// Handed out, not yet finished.
    in_flight: BTreeSet<i64>,
    /// Finished above the watermark, with the users to wake when it passes.
    finished: BTreeMap<i64, Visible>,
}

impl StreamTracker {
    /// A tracker whose positions continue after `start` (the greatest
    /// position already in the database).
    pub fn new(start: i64) -> Self {
        let (watermark, _) = watch::channel(start);
        Self {
            inner: Mutex::new(Inner {
                last: start,
                in_flight: BTreeSet::new(),
                finished: BTreeMap::new(),
            }),
            watermark,
        }
    }

    /// A new position, in flight until [`StreamTracker::finish`].
    pub fn allocate(&self) -> i64 {
        let mut inner = self.lock();
        inner.last += 1;
        let pos = inner.last;
        inner.in_flight.insert(pos);
        pos
    }

    /// Marks `pos` written (or abandoned: `wake` empty), and returns the users
    /// to wake: those of every position the watermark has now passed.
    pub fn finish(&self, pos: i64, wake: Visible) -> Visible {
        let mut inner = self.lock();
        inner.in_flight.remove(&pos);
        inner.finished.insert(pos, wake);
        let mark = match inner.in_flight.first() {
            Some(first) => first - 1,
            None => inner.last,
        };
        let mut woken = Vec::new();
        while let Some(entry) = inner.finished.first_entry() {
            if *entry.key() > mark {
                break;
            }
            woken.extend(entry.remove());
        }
        drop(inner);
        self.watermark.send_if_modified(|w| {
            let changed = *w != mark;
            *w = mark;
            changed
        });
        woken
    }

    /// The greatest position such that every position at or below it is
    /// either written or abandoned.
    pub fn watermark(&self) -> i64 {
        *self.watermark.borrow()
    }

    /// Changes of the watermark.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.watermark.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_commits_hold_the_watermark() {
        let t = StreamTracker::new(5);
        let a = t.allocate();
        let b = t.allocate();
        assert_eq!((a, b), (6, 7));
        assert_eq!(t.watermark(), 5);
        // The later position commits first: readers must not pass 6.
        let woken = t.finish(b, vec!["@b:x".into()]);
        assert!(woken.is_empty());
        assert_eq!(t.watermark(), 5);
        // Then the earlier one: both become visible, both wakes happen.
        let mut woken = t.finish(a, vec!["@a:x".into()]);
        woken.sort();
        assert_eq!(woken, vec!["@a:x".to_owned(), "@b:x".to_owned()]);
        assert_eq!(t.watermark(), 7);
    }

    #[test]
    fn abandoned_positions_do_not_block() {
        let t = StreamTracker::new(0);
        let a = t.allocate();
        let b = t.allocate();
        t.finish(a, Vec::new());
        assert_eq!(t.watermark(), 1);
        t.finish(b, Vec::new());
        assert_eq!(t.watermark(), 2);
    }
}
