//! State resolution of a big public room's forks (see
//! `myelin_benches::state_res_workload`): ours against ruma-state-res on the
//! same generated inputs.
//!
//! cargo bench -p myelin-benches --bench state_res
//!
//! Ids: `state_res/myelin/{N}`, `state_res/ruma/{N}` and
//! `state_res/ruma_given_chains/{N}`, for N state events in the room.
//! `STATE_RES_SIZES` (comma-separated, default `10,1000,10000,100000`) and
//! `STATE_RES_VERSION` (default `11`) change the workloads.
//!
//! Fairness: our `resolve` takes only the state sets and a `fetch`, and walks
//! the auth chains itself. ruma's `resolve` takes the auth chains as an
//! argument. `state_res/ruma` walks them inside the timed closure (over
//! ruma's own event type, with a plain `HashSet`-based walk like the one the
//! differential test uses), so both sides do the same work from the same
//! input; `state_res/ruma_given_chains` precomputes them outside the timing,
//! as a server with an auth chain cache would, to show what the walk costs.
//! For v12 ruma's conflicted-subgraph callback runs inside its timing, as
//! ours runs inside `resolve`. Both get their events from a prepared
//! in-memory map (ours as `Arc<Pdu>`, ruma's as `Arc<RumaPdu>`), and the
//! state sets prepared in their own types.
//!
//! There is no `myelin_1thread` variant: our resolution has no parallelism
//! and rayon is not a dependency of the workspace.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use myelin_benches::state_res_workload::{Workload, WorkloadParams, from_ruma_state_map};

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
    let mut group = c.benchmark_group("state_res");
    for n in sizes() {
        let params = WorkloadParams {
            version,
            ..WorkloadParams::new(n)
        };
        let started = Instant::now();
        let workload = Workload::generate(&params);
        let generated = started.elapsed();

        // Both agree (checked once, outside the timing).
        let started = Instant::now();
        let ours = workload.resolve_myelin().expect("ours resolves");
        let ours_once = started.elapsed();
        let started = Instant::now();
        let theirs = from_ruma_state_map(workload.resolve_ruma());
        let ruma_once = started.elapsed();
        assert_eq!(ours, theirs, "N = {n}: ours and ruma's resolutions differ");
        eprintln!(
            "state_res N={n} v{version}: generated in {generated:?}; one resolution: \
             myelin {ours_once:?}, ruma {ruma_once:?}; {:?}",
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
            b.iter(|| black_box(w.resolve_myelin().expect("ours resolves")));
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
                    criterion::BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, state_res);
criterion_main!(benches);
