//! `sync-fanout`: one sender in a room of K members who all long-poll
//! `/sync`. Measures, per member and message, the time from the send's 200
//! until that member's `/sync` returned the event (`sync_delivery`), and
//! the send latency. Sends are paced so each wake-up is measured on its own.

use serde_json::json;
use std::time::{Duration, Instant};

use super::{
    Context, Measurement, SyncFleet, join_all, prefix, register_many, report, sync_positions,
};
use crate::report::Report;

/// Pause between sends, so each fan-out is measured on its own.
const SEND_PAUSE: Duration = Duration::from_millis(20);
/// How long, after the last send, deliveries may still arrive.
const DELIVERY_GRACE: Duration = Duration::from_secs(60);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Members long-polling /sync.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Messages sent, one after another.
    #[arg(long, default_value_t = 100)]
    pub messages: usize,
}

pub async fn run(ctx: &Context, args: &Args) -> anyhow::Result<Report> {
    let server = &ctx.server;
    let prefix = prefix();
    let sender = server.register(&format!("{prefix}sender")).await?;
    let room = server.create_room(&sender, true).await?;
    let listeners = register_many(server, &prefix, args.members).await?;
    join_all(
        server,
        listeners
            .iter()
            .map(|u| (u.clone(), room.clone()))
            .collect(),
    )
    .await?;
    let positions = sync_positions(server, &listeners).await?;

    let measurement = Measurement::start(ctx);
    let recorder = measurement.recorder.clone();
    recorder.declare("send", true);
    let fleet = SyncFleet::spawn(server, listeners, positions, &recorder);
    let sent = fleet.sent_handle();
    let mut sends = 0u64;
    for n in 0..args.messages {
        let began = Instant::now();
        let txn = format!("{prefix}-{n}");
        let result = server
            .send_text(&sender, &room, &txn, &format!("fanout {n}"))
            .await;
        if let Some(event_id) = recorder.outcome("send", began, result) {
            sent.sent(event_id, Instant::now());
            sends += 1;
        }
        tokio::time::sleep(SEND_PAUSE).await;
    }
    let expected = sends * args.members as u64;
    let delivered = fleet.wait_for(expected, DELIVERY_GRACE).await;
    fleet.stop();
    let measured = measurement.stop().await;
    for _ in delivered..expected {
        recorder.failure_code("sync_delivery", "missing");
    }
    Ok(report(
        "sync-fanout",
        json!({ "members": args.members, "messages": args.messages }),
        measured,
        &recorder,
        sends,
        json!({ "deliveries_expected": expected, "deliveries": delivered }),
    ))
}
