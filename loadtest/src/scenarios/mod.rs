//! The scenarios, and what they share: run context, measurement window,
//! concurrent registration, and a fleet of `/sync` long-pollers that
//! measures delivery latency.
//!
//! Every scenario has a setup phase (registering users, creating rooms),
//! whose failures abort the run, and a measured phase, whose failures are
//! counted by error code and never abort it.

pub mod chat;
pub mod initial_sync;
pub mod join_storm;
pub mod media;
pub mod messages;
pub mod sync_fanout;

use anyhow::Context as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{Server, User};
use crate::report::{KindStats, Recorder, Report};
use crate::resources::{Monitor, Resources};

/// Registrations in flight at once during setup: enough to hide latency,
/// few enough not to turn setup into a password-hashing storm.
const REGISTRATIONS_IN_FLIGHT_MAX: usize = 16;
/// Setup requests (joins, initial syncs, seeding) in flight at once.
const SETUP_IN_FLIGHT_MAX: usize = 32;
/// How long a `/sync` long-poll waits on the server.
const SYNC_TIMEOUT_MS: u64 = 30_000;
/// Pause after a failed `/sync` before the next, so a failing server is not
/// hammered by a hot loop.
const SYNC_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often the delivery wait checks its count.
const DELIVERY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Open-loop requests in flight at most; beyond it the scheduler waits
/// (the waiting still counts toward latency, measured from the due time).
const OPEN_LOOP_IN_FLIGHT_MAX: usize = 10_000;

/// One of the scenarios, with its parameters.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum Scenario {
    /// Users send messages: closed loop (as fast as answered), or open loop
    /// at --rate messages/s with latency from each scheduled time.
    Messages(messages::Args),
    /// A realistic chat mix at --rate requests/s: Zipf-sized rooms, every
    /// user long-polling /sync; sends 45 %, typing 15 %, receipts 15 %,
    /// reactions 10 %, back-pagination 10 %, profile lookups 5 %.
    Chat(chat::Args),
    /// One sender, K members long-polling /sync: the time from each send's
    /// 200 to each member's /sync returning it.
    SyncFanout(sync_fanout::Args),
    /// N users join one public room at once: join latency, joins/s, and
    /// when joined_members shows them all.
    JoinStorm(join_storm::Args),
    /// All users do an initial /sync at once, in rooms seeded with
    /// messages: latency and response size.
    InitialSync(initial_sync::Args),
    /// Upload then download files: MB/s each way.
    Media(media::Args),
}

/// What every scenario needs: the server and how to watch it.
#[derive(Clone)]
pub struct Context {
    pub server: Server,
    /// The server's process, sampled from `/proc` during the measured phase.
    pub server_pid: Option<u32>,
}

/// Runs `scenario` against `ctx.server`.
pub async fn run(ctx: &Context, scenario: &Scenario) -> anyhow::Result<Report> {
    match scenario {
        Scenario::Messages(args) => messages::run(ctx, args).await,
        Scenario::Chat(args) => chat::run(ctx, args).await,
        Scenario::SyncFanout(args) => sync_fanout::run(ctx, args).await,
        Scenario::JoinStorm(args) => join_storm::run(ctx, args).await,
        Scenario::InitialSync(args) => initial_sync::run(ctx, args).await,
        Scenario::Media(args) => media::run(ctx, args).await,
    }
}

/// The measured phase: a recorder whose offsets count from its start, and
/// the resource monitor.
pub struct Measurement {
    pub recorder: Recorder,
    monitor: Monitor,
}

/// The end of the measured phase.
pub struct Measured {
    pub elapsed: Duration,
    pub resources: Resources,
}

impl Measurement {
    pub fn start(ctx: &Context) -> Self {
        let start = Instant::now();
        Self {
            recorder: Recorder::new(start),
            monitor: Monitor::start(start, ctx.server_pid),
        }
    }

    pub async fn stop(self) -> Measured {
        let elapsed = self.recorder.start().elapsed();
        Measured {
            elapsed,
            resources: self.monitor.finish().await,
        }
    }
}

/// Assembles a report; the kinds are whatever `recorder` gathered.
fn report(
    scenario: &str,
    parameters: serde_json::Value,
    measured: Measured,
    recorder: &Recorder,
    events: u64,
    figures: serde_json::Value,
) -> Report {
    let kinds: Vec<(String, KindStats)> = recorder.snapshot();
    Report {
        label: String::new(),
        scenario: scenario.to_owned(),
        parameters,
        elapsed: measured.elapsed,
        events,
        kinds,
        figures: figures.as_object().cloned().unwrap_or_default(),
        resources: measured.resources,
    }
}

/// A run-unique prefix for user names and transaction ids, so several runs
/// can share one server.
fn prefix() -> String {
    format!("lt{:08x}", rand::random::<u32>())
}

/// Registers `{prefix}u0` … `{prefix}u{count-1}`, a few at a time.
async fn register_many(server: &Server, prefix: &str, count: usize) -> anyhow::Result<Vec<User>> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}u{i}")).collect();
    let server = server.clone();
    for_each_bounded(names, REGISTRATIONS_IN_FLIGHT_MAX, move |name| {
        let server = server.clone();
        async move {
            server
                .register(&name)
                .await
                .with_context(|| format!("registering {name}"))
        }
    })
    .await
}

/// Runs `f` over `items` with at most `limit` in flight; the results keep
/// the items' order. The first error aborts (setup only).
async fn for_each_bounded<I, T, F, Fut>(items: Vec<I>, limit: usize, f: F) -> anyhow::Result<Vec<T>>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut set = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let fut = f(item);
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (i, fut.await)
        });
    }
    let mut results: Vec<Option<T>> = Vec::new();
    results.resize_with(set.len(), || None);
    while let Some(joined) = set.join_next().await {
        let (i, result) = joined.context("a setup task panicked")?;
        results[i] = Some(result?);
    }
    Ok(results.into_iter().flatten().collect())
}

/// Each user's `/sync` position after an initial `timeout=0` sync (setup),
/// so the long-poll loops only see events of the measured phase.
async fn sync_positions(server: &Server, users: &[User]) -> anyhow::Result<Vec<String>> {
    let server = server.clone();
    for_each_bounded(users.to_vec(), SETUP_IN_FLIGHT_MAX, move |user| {
        let server = server.clone();
        async move {
            let resp = server.sync(&user, None, 0).await.context("initial sync")?;
            Ok(resp.body["next_batch"]
                .as_str()
                .context("next_batch")?
                .to_owned())
        }
    })
    .await
}

/// Users long-polling `/sync`, each in its own task, measuring for every
/// `m.room.message` sent by someone else the time from its send's 200 (see
/// [`SentHandle::sent`]) until a `/sync` returned it (`sync_delivery`). The
/// long-polls themselves are recorded as kind `sync`.
pub struct SyncFleet {
    shared: Arc<FleetShared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct FleetShared {
    recorder: Recorder,
    /// When each send returned 200, by event id.
    sent_at: Mutex<HashMap<String, Instant>>,
    /// Arrivals of events whose send had not yet returned (or failed).
    early: Mutex<Vec<(String, Instant)>>,
    delivered: AtomicU64,
}

impl FleetShared {
    fn arrived(&self, event_id: &str, at: Instant) {
        let sent = self
            .sent_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(event_id)
            .copied();
        match sent {
            Some(sent) => self.deliver(sent, at),
            None => self
                .early
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((event_id.to_owned(), at)),
        }
    }

    fn deliver(&self, sent: Instant, at: Instant) {
        // A sync may return the event before the send's 200 does: that is
        // a delivery latency of 0.
        self.recorder.latency(
            "sync_delivery",
            false,
            sent,
            at.saturating_duration_since(sent),
        );
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Matches early arrivals whose send has since returned.
    fn settle_early(&self) {
        let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
        let sent_at = self.sent_at.lock().unwrap_or_else(|e| e.into_inner());
        early.retain(|(id, at)| match sent_at.get(id) {
            Some(&sent) => {
                self.deliver(sent, *at);
                false
            }
            None => true,
        });
    }
}

impl SyncFleet {
    /// Starts one long-poll loop per user, from `positions` (see
    /// [`sync_positions`]).
    fn spawn(
        server: &Server,
        users: Vec<User>,
        positions: Vec<String>,
        recorder: &Recorder,
    ) -> Self {
        recorder.declare("sync", true);
        recorder.declare("sync_delivery", false);
        let shared = Arc::new(FleetShared {
            recorder: recorder.clone(),
            sent_at: Mutex::default(),
            early: Mutex::default(),
            delivered: AtomicU64::new(0),
        });
        let tasks = users
            .into_iter()
            .zip(positions)
            .map(|(user, since)| {
                tokio::spawn(sync_loop(server.clone(), user, since, shared.clone()))
            })
            .collect();
        Self { shared, tasks }
    }

    /// Where sends are noted (from any task).
    pub fn sent_handle(&self) -> SentHandle {
        SentHandle(self.shared.clone())
    }

    /// Waits until `expected` deliveries arrived or `grace` passed; returns
    /// how many arrived.
    pub async fn wait_for(&self, expected: u64, grace: Duration) -> u64 {
        let deadline = Instant::now() + grace;
        loop {
            self.shared.settle_early();
            let delivered = self.shared.delivered.load(Ordering::Relaxed);
            if delivered >= expected || Instant::now() >= deadline {
                return delivered;
            }
            tokio::time::sleep(DELIVERY_POLL_INTERVAL).await;
        }
    }

    /// Stops the long-poll loops.
    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Notes, for a [`SyncFleet`], when sends returned 200.
#[derive(Clone)]
pub struct SentHandle(Arc<FleetShared>);

impl SentHandle {
    /// The send of `event_id` returned 200 at `at`.
    pub fn sent(&self, event_id: String, at: Instant) {
        self.0
            .sent_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(event_id, at);
    }
}

async fn sync_loop(server: Server, user: User, mut since: String, shared: Arc<FleetShared>) {
    loop {
        let began = Instant::now();
        let resp = match server.sync(&user, Some(&since), SYNC_TIMEOUT_MS).await {
            Ok(resp) => resp,
            Err(e) => {
                shared.recorder.failure("sync", &e);
                tokio::time::sleep(SYNC_RETRY_PAUSE).await;
                continue;
            }
        };
        let now = Instant::now();
        shared.recorder.success("sync", began);
        if let Some(next) = resp.body["next_batch"].as_str() {
            since = next.to_owned();
        }
        let Some(rooms) = resp.body["rooms"]["join"].as_object() else {
            continue;
        };
        for room in rooms.values() {
            let events = room["timeline"]["events"].as_array();
            for event in events.into_iter().flatten() {
                if event["type"] == "m.room.message"
                    && event["sender"].as_str() != Some(user.user_id.as_str())
                    && let Some(id) = event["event_id"].as_str()
                {
                    shared.arrived(id, now);
                }
            }
        }
    }
}

/// Sends that a run schedules at fixed intervals (open loop): the `i`-th is
/// due at `start + i / rate`, and its latency counts from then, so a slow
/// server cannot hide its slowness by delaying the next request
/// (no coordinated omission).
pub struct Schedule {
    start: Instant,
    rate_per_s: f64,
}

/// The lowest rate a schedule accepts, in requests/s (one per ~3 hours).
const SCHEDULE_RATE_MIN: f64 = 1e-4;

impl Schedule {
    pub fn new(start: Instant, rate_per_s: f64) -> Self {
        Self {
            start,
            rate_per_s: rate_per_s.max(SCHEDULE_RATE_MIN),
        }
    }

    /// When request `i` is due.
    pub fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate_per_s)
    }

    /// How many requests fall due within `duration` (the `i` with
    /// `i / rate < duration`).
    pub fn count_within(&self, duration: Duration) -> u64 {
        (duration.as_secs_f64() * self.rate_per_s - 1e-9)
            .ceil()
            .max(0.0) as u64
    }
}

/// Starts request `i` for each `i` in `0..count` at `schedule.due(i)`
/// without waiting for earlier ones (open loop), then waits for all to
/// finish. `request(i, due)` records its own outcome.
async fn open_loop<F, Fut>(schedule: &Schedule, count: u64, request: F)
where
    F: Fn(u64, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT_MAX));
    let mut set = JoinSet::new();
    for i in 0..count {
        let due = schedule.due(i);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let fut = request(i, due);
        set.spawn(async move {
            fut.await;
            drop(permit);
        });
        // Reap finished tasks so a long run does not accumulate them.
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
}

/// Joins each `(user, room)` pair (setup).
async fn join_all(server: &Server, pairs: Vec<(User, String)>) -> anyhow::Result<()> {
    let server = server.clone();
    for_each_bounded(pairs, SETUP_IN_FLIGHT_MAX, move |(user, room)| {
        let server = server.clone();
        async move {
            server
                .join(&user, &room)
                .await
                .with_context(|| format!("{} joining {room}", user.user_id))
        }
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_and_spaces_requests() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 20.0);
        assert_eq!(schedule.count_within(Duration::from_secs(2)), 40);
        assert_eq!(schedule.count_within(Duration::from_millis(2_001)), 41);
        assert_eq!(schedule.due(40) - start, Duration::from_secs(2));
    }
}
