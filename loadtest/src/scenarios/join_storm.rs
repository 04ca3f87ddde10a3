//! `join-storm`: N pre-registered users join one public room at once
//! (`concurrency` joins in flight, default all N). Measures join latency,
//! joins/s (successful joins over the time to the last answer), and the
//! time from the start until `GET /rooms/{roomId}/joined_members` lists
//! every joined user (`members_visible_ms`).

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Context, Measurement, prefix, register_many, report};
use crate::report::Report;

/// How often the member list is polled after the joins.
const MEMBERS_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the member list may take to show every join.
const MEMBERS_VISIBLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Users joining the room.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Joins in flight at once (default: all users).
    #[arg(long)]
    pub concurrency: Option<usize>,
}

pub async fn run(ctx: &Context, args: &Args) -> anyhow::Result<Report> {
    let server = &ctx.server;
    let prefix = prefix();
    let owner = server.register(&format!("{prefix}owner")).await?;
    let room = server.create_room(&owner, true).await?;
    let users = register_many(server, &prefix, args.users).await?;
    let concurrency = args.concurrency.unwrap_or(args.users).max(1);

    let measurement = Measurement::start(ctx);
    let recorder = measurement.recorder.clone();
    recorder.declare("join", true);
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut joins = JoinSet::new();
    for user in users {
        let (server, recorder, room, permits) = (
            server.clone(),
            recorder.clone(),
            room.clone(),
            permits.clone(),
        );
        joins.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let began = Instant::now();
            let result = server.join(&user, &room).await;
            recorder.outcome("join", began, result);
        });
    }
    while joins.join_next().await.is_some() {}
    let joins_elapsed = recorder.start().elapsed().as_secs_f64().max(1e-9);
    let joined = recorder.count("join");

    // The owner plus every successful join.
    let expected_members = joined + 1;
    let deadline = Instant::now() + MEMBERS_VISIBLE_TIMEOUT;
    let mut members_seen = 0;
    let mut members_visible_ms = None;
    while Instant::now() < deadline {
        let began = Instant::now();
        let result = server.joined_member_count(&owner, &room).await;
        if let Some(count) = recorder.outcome("joined_members", began, result) {
            members_seen = count;
            if count >= expected_members {
                members_visible_ms = Some(recorder.start().elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        tokio::time::sleep(MEMBERS_POLL_INTERVAL).await;
    }
    let measured = measurement.stop().await;
    if members_visible_ms.is_none() {
        recorder.failure_code("joined_members", "members_missing");
    }
    Ok(report(
        "join-storm",
        json!({ "users": args.users, "concurrency": concurrency }),
        measured,
        &recorder,
        joined as u64,
        json!({
            "joins": joined,
            "joins_per_s": joined as f64 / joins_elapsed,
            "members_expected": expected_members,
            "members_seen": members_seen,
            "members_visible_ms": members_visible_ms,
        }),
    ))
}
