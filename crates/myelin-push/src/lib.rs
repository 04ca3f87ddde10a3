//! Delivery of notifications to HTTP push gateways.
//!
//! The room writer records a notification (an `event_push_actions` row) for
//! each user whose push rules notify on an event. [`Pushers`] runs one task
//! per `http` pusher; each sends that user's notifications, in stream order
//! and up to the event stream's watermark, to the pusher's gateway
//! (`POST /_matrix/push/v1/notify`), then records the position it reached
//! in the pusher's row. Caught up, a task sleeps until the room writer's
//! notifier says its user has news, so a busy server does not make every
//! pusher query on every event. A restart resumes from that position: nothing is
//! lost, and nothing is sent twice unless the server stops between a
//! gateway's answer and the write of that position (gateways de-duplicate
//! by `event_id`, as the spec asks).
//!
//! A failed request is retried with exponential back-off; once a pusher
//! has been failing for `push.give_up_after_ms`, the notification it is
//! stuck on is skipped. A gateway that rejects the pushkey ends the pusher.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#push-notifications>,
//! <https://spec.matrix.org/v1.19/push-gateway-api/>
//!
//! Architecture Invariant: this crate reads notifications and writes only
//! pushers' progress (and deletes rejected pushers); it never decides who
//! is notified — the room writer's push rule evaluation does.

pub mod gateway;
pub mod payload;
mod worker;

pub use gateway::{Gateway, NotifyError};

use myelin_core::config::PushConfig;
use myelin_rooms::Notifier;
use myelin_storage::{DynStorage, Pusher, StorageResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// The pusher kind this crate delivers (`email` pushers are stored only).
pub const KIND_HTTP: &str = "http";
/// Notifications one query fetches for a pusher.
pub const BATCH_MAX: u32 = 100;
/// Requests to gateways in flight at once, over all pushers: a burst of
/// notifications to many users does not open thousands of connections.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;
/// What graceful shutdown waits beyond the request timeout for a pusher
/// whose request is in flight, before it abandons it.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(1);

/// A pusher's identity: unique per user, `app_id` and `pushkey`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PusherKey {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
}

impl PusherKey {
    pub fn of(pusher: &Pusher) -> Self {
        Self {
            user_id: pusher.user_id.clone(),
            app_id: pusher.app_id.clone(),
            pushkey: pusher.pushkey.clone(),
        }
    }
}

/// The delivery service: one task per running `http` pusher. Cheap to clone.
#[derive(Clone)]
pub struct Pushers {
    shared: Arc<Shared>,
}

/// What every pusher task shares.
pub(crate) struct Shared {
    pub(crate) storage: DynStorage,
    pub(crate) config: PushConfig,
    pub(crate) gateway: Gateway,
    /// The event stream's watermark: notifications are read up to it.
    pub(crate) watermark: watch::Receiver<i64>,
    /// Wakes a user's pusher when something new concerns the user (an event
    /// in one of their rooms), rather than on every event of the server.
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) requests: Semaphore,
    tasks: Mutex<HashMap<PusherKey, Running>>,
    generation: AtomicU64,
    closed: AtomicBool,
}

struct Running {
    /// Tells a finished task whether it is still the one in the map.
    generation: u64,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Pushers {
    /// A service with no pusher running yet; `watermark` follows the event
    /// stream's watermark (`StreamTracker::subscribe`), and `notifier` is the
    /// room writer's, which wakes a pusher when its user has news.
    pub fn new(
        storage: DynStorage,
        config: PushConfig,
        watermark: watch::Receiver<i64>,
        notifier: Arc<Notifier>,
    ) -> Self {
        let gateway = Gateway::new(&config);
        Self {
            shared: Arc::new(Shared {
                storage,
                config,
                gateway,
                watermark,
                notifier,
                requests: Semaphore::new(REQUESTS_IN_FLIGHT_MAX),
                tasks: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Starts every stored `http` pusher (at server start); returns how many.
    pub async fn start_all(&self) -> StorageResult<usize> {
        let pushers = self.shared.storage.all_pushers().await?;
        let mut started = 0;
        for pusher in pushers.iter().filter(|p| p.kind == KIND_HTTP) {
            self.start(pusher);
            started += 1;
        }
        Ok(started)
    }

    /// Starts delivery for a pusher that was set, or restarts it if it runs
    /// (its URL or data may have changed). The new task waits for the old
    /// one to end and then reads the pusher's progress from storage, so no
    /// notification is sent by both. A pusher of another kind is stopped.
    /// Does nothing after [`Pushers::shutdown`].
    pub fn start(&self, pusher: &Pusher) {
        if pusher.kind != KIND_HTTP {
            self.stop(&pusher.user_id, &pusher.app_id, &pusher.pushkey);
            return;
        }
        let key = PusherKey::of(pusher);
        let mut tasks = self.shared.lock_tasks();
        if self.shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let previous = tasks.remove(&key).map(|old| {
            let _ = old.stop.send(true);
            old.handle
        });
        let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed);
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(worker::run(
            self.shared.clone(),
            key.clone(),
            generation,
            stop_rx,
            previous,
        ));
        tasks.insert(
            key,
            Running {
                generation,
                stop,
                handle,
            },
        );
        running_gauge(tasks.len());
    }

    /// Stops delivery for a pusher that was deleted (a request in flight
    /// still completes).
    pub fn stop(&self, user_id: &str, app_id: &str, pushkey: &str) {
        let key = PusherKey {
            user_id: user_id.to_owned(),
            app_id: app_id.to_owned(),
            pushkey: pushkey.to_owned(),
        };
        let mut tasks = self.shared.lock_tasks();
        if let Some(old) = tasks.remove(&key) {
            let _ = old.stop.send(true);
        }
        running_gauge(tasks.len());
    }

    /// How many pusher tasks run.
    pub fn running(&self) -> usize {
        self.shared.lock_tasks().len()
    }

    /// Stops every task and waits for them: waits and back-off end at once,
    /// a request in flight gets until its timeout (and a little more) to
    /// finish and have its outcome recorded. No task starts afterwards.
    pub async fn shutdown(&self) {
        let running: Vec<Running> = {
            let mut tasks = self.shared.lock_tasks();
            self.shared.closed.store(true, Ordering::SeqCst);
            tasks.drain().map(|(_, r)| r).collect()
        };
        running_gauge(0);
        for task in &running {
            let _ = task.stop.send(true);
        }
        let grace = Duration::from_secs(self.shared.config.request_timeout_secs) + SHUTDOWN_SLACK;
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in running {
            if tokio::time::timeout_at(deadline, &mut task.handle)
                .await
                .is_err()
            {
                tracing::warn!("a pusher did not stop in time; abandoning its request");
                task.handle.abort();
            }
        }
    }
}

impl Shared {
    fn lock_tasks(&self) -> MutexGuard<'_, HashMap<PusherKey, Running>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A task ended on its own (pusher deleted or rejected): forget it,
    /// unless it was already replaced.
    pub(crate) fn finished(&self, key: &PusherKey, generation: u64) {
        let mut tasks = self.lock_tasks();
        if tasks.get(key).is_some_and(|r| r.generation == generation) {
            tasks.remove(key);
        }
        running_gauge(tasks.len());
    }
}

fn running_gauge(n: usize) {
    metrics::gauge!("myelin_push_pushers_running").set(n as f64);
}
