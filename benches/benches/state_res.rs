//! State resolution of a big public room's forks (see
//! `myelin_benches::state_res_workload`): ours against ruma-state-res on the
//! same generated inputs.
//!
//! cargo bench -p myelin-benches --bench state_res
//!
//! Ids, for N state events in the room:
//! - `state_res/myelin/{N}`: `resolve_in` on the room's `AuthGraph` (built
//!   as the events arrived, outside the timing, as a server keeps it), from
//!   and to string state maps, on rayon's global pool (one thread per core);
//! - `state_res/myelin_1thread/{N}`: the same on a one-thread pool;
//! - `state_res/myelin_ix/{N}`: `resolve_ix`, the same with the state sets
//!   already interned (a server that keeps its states interned);
//! - `state_res/myelin_cold/{N}`: `resolve` from a `fetch`, building the
//!   graph and its index inside the timing;
//! - `state_res/graph_build/{N}`: inserting every event of the room into a
//!   new graph (what `myelin` does not time; divide by N for the cost each
//!   arriving event adds);
//! - `state_res/ruma/{N}`: ruma-state-res, walking the auth chains inside
//!   the timing (over ruma's own event type, with a plain `HashSet`-based
//!   walk like the one the differential test uses);
//! - `state_res/ruma_given_chains/{N}`: ruma-state-res given the auth chains
//!   computed outside the timing, as a server with an auth chain cache would.
//!
//! - `state_res/rooms/{N}` and `state_res/rooms_1thread/{N}` (for N up to
//!   10,000): `resolve_in` for eight different rooms of N state events at
//!   once (seeds 1 to 8), rooms in parallel on rayon's global pool against
//!   the same on a one-thread pool: a server resolving its rooms' forks on
//!   its state resolution pool.
//!
//! `myelin` against `ruma_given_chains` is the like-for-like comparison of
//! two servers that keep an index of the auth chains; `myelin_cold` against
//! `ruma` that of two that do not. For v12 ruma's conflicted-subgraph
//! callback runs inside its timing, as ours runs inside the resolution.
//! Both get their events from prepared in-memory maps (ours as `Arc<Pdu>`,
//! ruma's as `Arc<RumaPdu>`), and the state sets in their own types.
//!
//! `STATE_RES_SIZES` (comma-separated, default `10,1000,10000,100000`) and
//! `STATE_RES_VERSION` (default `11`) change the workloads.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use myelin_benches::state_res_workload::{Workload, WorkloadParams, from_ruma_state_map};
use myelin_events::state_res::{AuthGraph, resolve_ix};
use rayon::prelude::*;

fn sizes() -> Vec<usize> {
    std::env::var("STATE_RES_SIZES")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("STATE_RES_SIZES: numbers"))
                .collect()
        })
        .unwrap_or_else(|| vec![10, 1_000, 10_000, 100_000])
}

fn state_res(c: &mut Criterion) {
    let version: &'static str = match std::env::var("STATE_RES_VERSION").as_deref() {
        Ok("12") => "12",
        _ => "11",
    };
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let mut group = c.benchmark_group("state_res");
    for n in sizes() {
        let params = WorkloadParams {
            version,
            ..WorkloadParams::new(n)
        };
        let started = Instant::now();
        let workload = Workload::generate(&params);
        let generated = started.elapsed();
        let started = Instant::now();
        let graph = workload.graph();
        let built = started.elapsed();
        let mut interned_graph: AuthGraph = graph.clone();
        let interned = workload.interned_state_sets(&mut interned_graph);

        // All agree (checked once, outside the timing).
        let started = Instant::now();
        let ours = workload.resolve_myelin(&graph).expect("ours resolves");
        let ours_once = started.elapsed();
        let theirs = from_ruma_state_map(workload.resolve_ruma());
        assert_eq!(ours, theirs, "N = {n}: ours and ruma's resolutions differ");
        let cold = workload.resolve_myelin_cold().expect("ours resolves");
        assert_eq!(cold, theirs, "N = {n}: ours (cold) and ruma's differ");
        let ix = resolve_ix(&interned_graph, &workload.version, &interned).expect("resolves");
        assert_eq!(
            interned_graph.state_map(&ix),
            theirs,
            "N = {n}: resolve_ix differs"
        );
        let (chains, links) = graph.index_size();
        eprintln!(
            "state_res N={n} v{version}: generated in {generated:?}; graph of {} events \
             built in {built:?} ({chains} chains, {links} links); one resolution {ours_once:?}; {:?}",
            graph.len(),
            workload.stats
        );

        if n >= 10_000 {
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(10));
        } else {
            group.sample_size(50);
            group.measurement_time(Duration::from_secs(5));
        }
        group.bench_with_input(BenchmarkId::new("myelin", n), &workload, |b, w| {
            b.iter(|| black_box(w.resolve_myelin(&graph).expect("ours resolves")));
        });
        group.bench_with_input(BenchmarkId::new("myelin_1thread", n), &workload, |b, w| {
            one_thread.install(|| {
                b.iter(|| black_box(w.resolve_myelin(&graph).expect("ours resolves")));
            });
        });
        group.bench_with_input(BenchmarkId::new("myelin_ix", n), &workload, |b, w| {
            b.iter(|| {
                black_box(resolve_ix(&interned_graph, &w.version, &interned).expect("resolves"))
            });
        });
        group.bench_with_input(BenchmarkId::new("myelin_cold", n), &workload, |b, w| {
            b.iter(|| black_box(w.resolve_myelin_cold().expect("ours resolves")));
        });
        group.bench_with_input(BenchmarkId::new("graph_build", n), &workload, |b, w| {
            b.iter(|| black_box(w.graph()));
        });
        group.bench_with_input(BenchmarkId::new("ruma", n), &workload, |b, w| {
            b.iter(|| black_box(w.resolve_ruma()));
        });
        group.bench_with_input(
            BenchmarkId::new("ruma_given_chains", n),
            &workload,
            |b, w| {
                b.iter_batched(
                    || w.ruma_auth_chains(),
                    |chains| black_box(w.resolve_ruma_with_chains(chains)),
                    BatchSize::LargeInput,
                );
            },
        );
    }

    // Independent rooms, resolved at once.
    for n in sizes().into_iter().filter(|&n| n <= 10_000) {
        let rooms: Vec<(Workload, AuthGraph)> = (1..=ROOMS)
            .map(|seed| {
                let workload = Workload::generate(&WorkloadParams {
                    version,
                    seed,
                    ..WorkloadParams::new(n)
                });
                let graph = workload.graph();
                (workload, graph)
            })
            .collect();
        let resolve_all = |rooms: &[(Workload, AuthGraph)]| {
            rooms.par_iter().for_each(|(w, graph)| {
                black_box(w.resolve_myelin(graph).expect("ours resolves"));
            });
        };
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(5));
        group.bench_with_input(BenchmarkId::new("rooms", n), &rooms, |b, rooms| {
            b.iter(|| resolve_all(rooms));
        });
        group.bench_with_input(BenchmarkId::new("rooms_1thread", n), &rooms, |b, rooms| {
            one_thread.install(|| b.iter(|| resolve_all(rooms)));
        });
    }
    group.finish();
}

/// Rooms resolved at once in `state_res/rooms/{N}`.
const ROOMS: u64 = 8;

criterion_group!(benches, state_res);
criterion_main!(benches);
