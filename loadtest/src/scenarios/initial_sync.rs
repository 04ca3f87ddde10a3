//! `initial-sync`: every user does a full `/sync` (no `since`) at once.
//!
//! Setup: `rooms` rooms, each joined by all `users` users, with
//! `messages-per-room` messages sent into each. Measured: all users' initial
//! syncs concurrently: latency (`initial_sync`), response size in bytes,
//! and how many rooms each response held (all of them, on a correct
//! server).

use anyhow::Context as _;
use serde_json::json;
use std::time::Instant;
use tokio::task::JoinSet;

use super::{Context, Measurement, for_each_bounded, join_all, prefix, register_many, report};
use crate::report::Report;

/// Seeding messages sent at once during setup.
const SEED_IN_FLIGHT_MAX: usize = 32;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Users, each joined to every room, syncing at once.
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Messages sent into each room during setup.
    #[arg(long, default_value_t = 20)]
    pub messages_per_room: usize,
}

pub async fn run(ctx: &Context, args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.users >= 1, "initial-sync needs at least 1 user");
    let server = &ctx.server;
    let prefix = prefix();
    let users = register_many(server, &prefix, args.users).await?;
    let mut room_ids = Vec::with_capacity(args.rooms);
    for _ in 0..args.rooms {
        room_ids.push(server.create_room(&users[0], true).await?);
    }
    let joins = room_ids
        .iter()
        .flat_map(|room| users[1..].iter().map(|u| (u.clone(), room.clone())))
        .collect();
    join_all(server, joins).await?;
    let seeds: Vec<(usize, usize)> = (0..args.rooms)
        .flat_map(|r| (0..args.messages_per_room).map(move |m| (r, m)))
        .collect();
    {
        let (server, users, room_ids, prefix) = (
            server.clone(),
            users.clone(),
            room_ids.clone(),
            prefix.clone(),
        );
        for_each_bounded(seeds, SEED_IN_FLIGHT_MAX, move |(r, m)| {
            let (server, user, room) = (
                server.clone(),
                users[m % users.len()].clone(),
                room_ids[r].clone(),
            );
            let txn = format!("{prefix}-seed-{r}-{m}");
            async move {
                server
                    .send_text(&user, &room, &txn, &format!("seed {m}"))
                    .await
                    .context("seeding a message")
            }
        })
        .await?;
    }

    let measurement = Measurement::start(ctx);
    let recorder = measurement.recorder.clone();
    recorder.declare("initial_sync", true);
    let mut syncs = JoinSet::new();
    for user in users {
        let (server, recorder) = (server.clone(), recorder.clone());
        syncs.spawn(async move {
            let began = Instant::now();
            let result = server.sync(&user, None, 0).await;
            recorder.outcome("initial_sync", began, result).map(|resp| {
                let rooms = resp.body["rooms"]["join"]
                    .as_object()
                    .map_or(0, serde_json::Map::len);
                (resp.bytes, rooms)
            })
        });
    }
    let mut sizes = Vec::new();
    let mut rooms_seen_min: Option<usize> = None;
    while let Some(joined) = syncs.join_next().await {
        if let Ok(Some((bytes, rooms))) = joined {
            sizes.push(bytes);
            rooms_seen_min = Some(rooms_seen_min.map_or(rooms, |m| m.min(rooms)));
        }
    }
    let measured = measurement.stop().await;
    sizes.sort_unstable();
    let size_at = |p: f64| {
        sizes
            .get(((sizes.len().saturating_sub(1)) as f64 * p).round() as usize)
            .copied()
    };
    let mean = if sizes.is_empty() {
        0.0
    } else {
        sizes.iter().sum::<usize>() as f64 / sizes.len() as f64
    };
    Ok(report(
        "initial-sync",
        json!({
            "users": args.users,
            "rooms": args.rooms,
            "messages_per_room": args.messages_per_room,
        }),
        measured,
        &recorder,
        // Initial syncs create no events; requests/s is the throughput.
        0,
        json!({
            "response_bytes_p50": size_at(0.5),
            "response_bytes_max": sizes.last(),
            "response_bytes_mean": mean,
            "rooms_expected": args.rooms,
            "rooms_seen_min": rooms_seen_min,
        }),
    ))
}
