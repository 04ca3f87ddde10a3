//! State resolution off the async runtime: a dedicated rayon pool runs the
//! pure [`myelin_events::state_res::resolve_in`] (CPU-bound, up to seconds on large rooms)
//! so that it never holds a tokio worker, and metrics say how much CPU each
//! room costs.
//!
//! Metrics:
//! - `myelin_state_res_total{outcome}`: resolutions, `outcome` = `ok` or
//!   `error`;
//! - `myelin_state_res_duration_seconds`: time of one resolution on the
//!   pool (the pure CPU part, no loading);
//! - `myelin_state_res_state_sets` and `myelin_state_res_graph_events`: state
//!   sets per resolution, and events in the room's graph it runs on;
//! - `myelin_state_res_room_cpu_seconds{room_id}`: cumulative seconds of the
//!   ten rooms that cost most (bounded labels: a room that leaves the top
//!   ten is set to 0 and no longer updated).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use myelin_events::state_res::{AuthGraph, resolve_in};
use myelin_events::{RoomVersion, StateMap, StateResError};
use tokio::sync::oneshot;

/// Rooms exported by `myelin_state_res_room_cpu_seconds`.
pub const TOP_ROOMS: usize = 10;
/// Rooms whose cumulative CPU time is remembered; past it the cheaper half
/// is forgotten (a room that matters climbs back quickly).
const TRACKED_ROOMS_MAX: usize = 10_000;

/// Why a resolution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    StateRes(#[from] StateResError),
    /// The pool dropped the job (it panicked, or the pool is shutting down).
    #[error("the state resolution task was lost: {0}")]
    Lost(String),
}

/// One room's cumulative state resolution cost.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomCost {
    pub room_id: String,
    pub cpu_seconds: f64,
    pub resolutions: u64,
}

#[derive(Default)]
struct Costs {
    rooms: HashMap<String, (f64, u64)>,
    /// The rooms the gauge currently exports.
    exported: Vec<String>,
}

/// Runs state resolutions on its own rayon pool.
pub struct StateResolver {
    pool: rayon::ThreadPool,
    costs: Mutex<Costs>,
}

impl StateResolver {
    /// A pool of one thread per core, named `myelin-state-res-N`.
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_threads(threads)
    }

    pub fn with_threads(threads: usize) -> Self {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("myelin-state-res-{i}"))
            .build()
            .unwrap_or_else(|e| panic!("cannot start the state resolution pool: {e}"));
        Self {
            pool,
            costs: Mutex::new(Costs::default()),
        }
    }

    /// Resolves `state_sets` of `room_id` against the room's graph on the
    /// pool, and awaits the result without blocking the runtime. The graph
    /// must hold every accepted event of the state sets and of their auth
    /// chains (and from room version 12 the create event): the caller
    /// loads them, the pool only computes.
    pub async fn resolve(
        &self,
        room_id: &str,
        version: &RoomVersion,
        graph: Arc<AuthGraph>,
        state_sets: Vec<StateMap>,
    ) -> Result<StateMap, ResolveError> {
        metrics::histogram!("myelin_state_res_state_sets").record(state_sets.len() as f64);
        metrics::histogram!("myelin_state_res_graph_events").record(graph.len() as f64);
        let (tx, rx) = oneshot::channel();
        let version = version.clone();
        self.pool.spawn(move || {
            let started = Instant::now();
            let result = resolve_in(&graph, &version, &state_sets);
            let _ = tx.send((result, started.elapsed()));
        });
        let outcome = rx.await;
        let (result, elapsed) = match outcome {
            Ok(done) => done,
            Err(e) => {
                metrics::counter!("myelin_state_res_total", "outcome" => "error").increment(1);
                return Err(ResolveError::Lost(e.to_string()));
            }
        };
        metrics::histogram!("myelin_state_res_duration_seconds").record(elapsed.as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("myelin_state_res_total", "outcome" => outcome).increment(1);
        self.record(room_id, elapsed);
        Ok(result?)
    }

    /// Adds `elapsed` to the room's cost and refreshes the top-rooms gauge.
    fn record(&self, room_id: &str, elapsed: Duration) {
        let mut costs = self.costs.lock().unwrap_or_else(|p| p.into_inner());
        let entry = costs.rooms.entry(room_id.to_owned()).or_insert((0.0, 0));
        entry.0 += elapsed.as_secs_f64();
        entry.1 += 1;
        if costs.rooms.len() > TRACKED_ROOMS_MAX {
            let mut all: Vec<f64> = costs.rooms.values().map(|(s, _)| *s).collect();
            all.sort_by(|a, b| b.total_cmp(a));
            let cut = all[TRACKED_ROOMS_MAX / 2];
            costs.rooms.retain(|_, (s, _)| *s > cut);
        }
        let top: Vec<RoomCost> = top_of(&costs.rooms, TOP_ROOMS);
        for room in &costs.exported {
            if !top.iter().any(|t| &t.room_id == room) {
                metrics::gauge!("myelin_state_res_room_cpu_seconds", "room_id" => room.clone())
                    .set(0.0);
            }
        }
        for room in &top {
            metrics::gauge!("myelin_state_res_room_cpu_seconds", "room_id" => room.room_id.clone())
                .set(room.cpu_seconds);
        }
        costs.exported = top.into_iter().map(|t| t.room_id).collect();
    }

    /// The rooms that cost most state resolution time, most first, at most
    /// `limit` (for an admin API).
    pub fn top_rooms(&self, limit: usize) -> Vec<RoomCost> {
        let costs = self.costs.lock().unwrap_or_else(|p| p.into_inner());
        top_of(&costs.rooms, limit)
    }
}

impl Default for StateResolver {
    fn default() -> Self {
        Self::new()
    }
}

fn top_of(rooms: &HashMap<String, (f64, u64)>, limit: usize) -> Vec<RoomCost> {
    let mut all: Vec<RoomCost> = rooms
        .iter()
        .map(|(room_id, (cpu_seconds, resolutions))| RoomCost {
            room_id: room_id.clone(),
            cpu_seconds: *cpu_seconds,
            resolutions: *resolutions,
        })
        .collect();
    all.sort_by(|a, b| {
        b.cpu_seconds
            .total_cmp(&a.cpu_seconds)
            .then_with(|| a.room_id.cmp(&b.room_id))
    });
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_rooms_are_bounded_and_ordered() {
        let resolver = StateResolver::with_threads(1);
        for i in 0..15u64 {
            resolver.record(&format!("!r{i}:test"), Duration::from_millis(i + 1));
        }
        resolver.record("!r0:test", Duration::from_millis(100));
        let top = resolver.top_rooms(TOP_ROOMS);
        assert_eq!(top.len(), TOP_ROOMS);
        assert_eq!(top[0].room_id, "!r0:test");
        assert_eq!(top[0].resolutions, 2);
        assert_eq!(top[1].room_id, "!r14:test");
        let exported = resolver.costs.lock().unwrap().exported.clone();
        assert_eq!(exported.len(), TOP_ROOMS);
        assert!(!exported.contains(&"!r1:test".to_owned()));
    }
}
