//! Per-request access-token authentication: digest the token, look it up,
//! check it. Every authenticated request pays this once.
//!
//! cargo bench -p myelin-benches --bench auth
//! (set MYELIN_BENCH_POSTGRES_URL to a database to also measure PostgreSQL)

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use myelin_api::auth::authenticate;
use myelin_core::secrets::token_digest;
use std::hint::black_box;

/// Sessions in the database while measuring: lookups are by index, so the
/// count matters little, but an empty table would flatter.
const SESSIONS: usize = 10_000;

fn bench_auth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("authenticate");

    group.bench_function("token_digest", |b| {
        let token = "myl_at_Fy-EoPApmle-2q6vezEQL8OaFF6ZjsN-fkx-YLhPd9I";
        b.iter(|| token_digest(black_box(token)))
    });

    let dir = tempfile::tempdir().unwrap();
    let mut backends = vec![("sqlite", None)];
    if let Ok(url) = std::env::var("MYELIN_BENCH_POSTGRES_URL") {
        backends.push(("postgres", Some(url)));
    }
    for (name, url) in backends {
        let (state, tokens) = rt.block_on(myelin_benches::state_with_sessions(
            dir.path(),
            url.as_deref(),
            SESSIONS,
        ));
        let mut i = 0usize;
        group.bench_with_input(
            BenchmarkId::new("valid_token", name),
            &tokens,
            |b, tokens| {
                b.iter(|| {
                    i = (i + 7919) % tokens.len();
                    rt.block_on(authenticate(&state, black_box(&tokens[i])))
                        .unwrap()
                })
            },
        );
        group.bench_function(BenchmarkId::new("unknown_token", name), |b| {
            b.iter(|| {
                rt.block_on(authenticate(&state, black_box("myl_at_not-a-real-token")))
                    .unwrap_err()
            })
        });
        rt.block_on(state.storage.close());
    }
    group.finish();
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
