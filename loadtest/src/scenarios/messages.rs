//! `messages`: users send text messages into rooms.
//!
//! Closed loop (default): every user sends its messages one after another,
//! each as soon as the previous one returned, so the measured rate is what
//! the server sustains with `users` requests in flight. Open loop
//! (`--rate R`): the `users × messages` sends are due at fixed intervals of
//! `1/R` s regardless of answers, each latency counting from its due time;
//! the report gives the achieved rate against the target.

use serde_json::json;
use std::time::Instant;

use super::{Context, Measurement, Schedule, join_all, open_loop, prefix, register_many, report};
use crate::client::{Server, User};
use crate::report::Report;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Sending users.
    #[arg(long, default_value_t = 10)]
    pub users: usize,
    /// Rooms; user i sends into room i % rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Messages each user sends.
    #[arg(long, default_value_t = 100)]
    pub messages: usize,
    /// Open loop: total target rate in messages/s (all users together);
    /// latency counts from each send's scheduled time.
    #[arg(long)]
    pub rate: Option<f64>,
}

pub async fn run(ctx: &Context, args: &Args) -> anyhow::Result<Report> {
    let server = &ctx.server;
    let rooms = args.rooms.max(1);
    let prefix = prefix();
    let senders = register_many(server, &prefix, args.users).await?;
    let owner = server.register(&format!("{prefix}owner")).await?;
    let mut room_ids = Vec::with_capacity(rooms);
    for _ in 0..rooms {
        room_ids.push(server.create_room(&owner, true).await?);
    }
    let pairs = senders
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), room_ids[i % rooms].clone()))
        .collect();
    join_all(server, pairs).await?;

    let measurement = Measurement::start(ctx);
    let recorder = measurement.recorder.clone();
    recorder.declare("send", true);
    let total = (args.users * args.messages) as u64;
    let mut figures = json!({ "mode": "closed" });
    match args.rate {
        None => {
            closed_loop(
                server,
                &senders,
                &room_ids,
                &prefix,
                args.messages,
                &recorder,
            )
            .await
        }
        Some(rate) => {
            let schedule = Schedule::new(recorder.start(), rate);
            let senders = senders.clone();
            let room_ids = room_ids.clone();
            open_loop(&schedule, total, |i, due| {
                let (server, recorder) = (server.clone(), recorder.clone());
                let user_index = (i % args.users.max(1) as u64) as usize;
                let user = senders[user_index].clone();
                let room = room_ids[user_index % rooms].clone();
                let txn = format!("{prefix}-{i}");
                async move {
                    let result = server
                        .send_text(&user, &room, &txn, &format!("message {i}"))
                        .await;
                    recorder.outcome("send", due, result);
                }
            })
            .await;
            let elapsed = recorder.start().elapsed().as_secs_f64().max(1e-9);
            let sent = recorder.count("send");
            figures = json!({
                "mode": "open",
                "target_rate_per_s": rate,
                "achieved_rate_per_s": sent as f64 / elapsed,
            });
        }
    }
    let measured = measurement.stop().await;
    let sent = recorder.count("send");
    Ok(report(
        "messages",
        json!({
            "users": args.users,
            "rooms": rooms,
            "messages_per_user": args.messages,
            "rate": args.rate,
        }),
        measured,
        &recorder,
        sent as u64,
        figures,
    ))
}

/// Every user sends its messages back to back.
async fn closed_loop(
    server: &Server,
    senders: &[User],
    room_ids: &[String],
    prefix: &str,
    per_user: usize,
    recorder: &crate::report::Recorder,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, user) in senders.iter().enumerate() {
        let (server, recorder, user) = (server.clone(), recorder.clone(), user.clone());
        let room = room_ids[i % room_ids.len()].clone();
        let prefix = prefix.to_owned();
        tasks.spawn(async move {
            for n in 0..per_user {
                let began = Instant::now();
                let txn = format!("{prefix}-{i}-{n}");
                let result = server
                    .send_text(&user, &room, &txn, &format!("message {n}"))
                    .await;
                recorder.outcome("send", began, result);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
