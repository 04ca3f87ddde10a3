//! The scenarios.

use anyhow::Context as _;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use crate::client::{Server, User};
use crate::report::{Latencies, Report};

/// How long a sync-fanout member waits for one message before the run fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A run-unique prefix, so several runs can share one server.
fn prefix() -> String {
    format!("lt{:08x}", rand::random::<u32>())
}

async fn register_many(server: &Server, prefix: &str, count: usize) -> anyhow::Result<Vec<User>> {
    let mut users = Vec::with_capacity(count);
    for i in 0..count {
        users.push(server.register(&format!("{prefix}u{i}")).await?);
    }
    Ok(users)
}

pub async fn messages(
    server: &Server,
    users: usize,
    rooms: usize,
    per_user: usize,
) -> anyhow::Result<Report> {
    let prefix = prefix();
    let senders = register_many(server, &prefix, users).await?;
    let owner = server.register(&format!("{prefix}owner")).await?;
    let mut room_ids = Vec::with_capacity(rooms);
    for _ in 0..rooms {
        room_ids.push(server.create_room(&owner, true).await?);
    }
    for (i, user) in senders.iter().enumerate() {
        server.join(user, &room_ids[i % rooms]).await?;
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, user) in senders.into_iter().enumerate() {
        let server = server.clone();
        let room = room_ids[i % rooms].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            for n in 0..per_user {
                let t = Instant::now();
                server
                    .send_text(&user, &room, &format!("t{n}"), &format!("message {n}"))
                    .await?;
                lat.record(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut send = Latencies::default();
    for task in tasks {
        send.extend(task.await??);
    }
    let elapsed = start.elapsed();
    Ok(Report {
        label: String::new(),
        scenario: "messages".into(),
        parameters: json!({ "users": users, "rooms": rooms, "messages_per_user": per_user }),
        elapsed,
        events: users * per_user,
        latencies: vec![("send".into(), send)],
        figures: serde_json::Value::Null,
    })
}

pub async fn sync_fanout(
    server: &Server,
    members: usize,
    messages: usize,
) -> anyhow::Result<Report> {
    let prefix = prefix();
    let sender = server.register(&format!("{prefix}sender")).await?;
    let room = server.create_room(&sender, true).await?;
    let listeners = register_many(server, &prefix, members).await?;
    for user in &listeners {
        server.join(user, &room).await?;
    }
    // When each event's send returned, by event id.
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for user in listeners {
        let server = server.clone();
        let room = room.clone();
        let sent_at = sent_at.clone();
        let since = server.sync(&user, None, 0).await?["next_batch"]
            .as_str()
            .context("next_batch")?
            .to_owned();
        tasks.push(tokio::spawn(async move {
            let mut since = since;
            let mut seen = 0;
            let mut arrivals: Vec<(String, Instant)> = Vec::new();
            let deadline = Instant::now()
                + DELIVERY_TIMEOUT * u32::try_from(messages.max(1)).unwrap_or(u32::MAX);
            while seen < messages && Instant::now() < deadline {
                let body = server.sync(&user, Some(&since), 30_000).await?;
                let now = Instant::now();
                since = body["next_batch"]
                    .as_str()
                    .context("next_batch")?
                    .to_owned();
                let events = body["rooms"]["join"][&room]["timeline"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for event in events.iter().filter(|e| e["type"] == "m.room.message") {
                    if let Some(id) = event["event_id"].as_str() {
                        arrivals.push((id.to_owned(), now));
                        seen += 1;
                    }
                }
            }
            let sent_at = sent_at.lock().await;
            let mut lat = Latencies::default();
            for (id, at) in arrivals {
                // The sync may return before the send's 200: count that as 0.
                if let Some(sent) = sent_at.get(&id) {
                    lat.record(at.saturating_duration_since(*sent));
                }
            }
            anyhow::Ok((lat, seen))
        }));
    }
    let start = Instant::now();
    let mut send = Latencies::default();
    for n in 0..messages {
        let t = Instant::now();
        let id = server
            .send_text(&sender, &room, &format!("t{n}"), &format!("fanout {n}"))
            .await?;
        let done = Instant::now();
        send.record(done - t);
        sent_at.lock().await.insert(id, done);
        // Pace the sends so each wake-up is measured on its own.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut delivery = Latencies::default();
    let mut delivered = 0;
    for task in tasks {
        let (lat, seen) = task.await??;
        delivery.extend(lat);
        delivered += seen;
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(
        delivered == members * messages,
        "only {delivered} of {} deliveries arrived",
        members * messages
    );
    Ok(Report {
        label: String::new(),
        scenario: "sync-fanout".into(),
        parameters: json!({ "members": members, "messages": messages }),
        elapsed,
        events: messages,
        latencies: vec![("send".into(), send), ("sync_delivery".into(), delivery)],
        figures: serde_json::Value::Null,
    })
}

/// One user uploads `count` files of `size_mb` MiB (distinct random bytes,
/// so nothing is deduplicated), one after another, then downloads each:
/// MB/s each way, from the first byte sent to the last byte received.
pub async fn media(server: &Server, size_mb: usize, count: usize) -> anyhow::Result<Report> {
    use rand::RngCore as _;
    let prefix = prefix();
    let user = server.register(&format!("{prefix}media")).await?;
    let size = size_mb * 1024 * 1024;
    let (mut up, mut down) = (Latencies::default(), Latencies::default());
    let (mut up_time, mut down_time) = (Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    let mut uris = Vec::with_capacity(count);
    for _ in 0..count {
        let mut bytes = vec![0u8; size];
        rand::thread_rng().fill_bytes(&mut bytes);
        let t = Instant::now();
        uris.push(server.upload(&user, bytes).await?);
        up.record(t.elapsed());
        up_time += t.elapsed();
    }
    for uri in &uris {
        let t = Instant::now();
        let len = server.download(&user, uri).await?;
        anyhow::ensure!(len == size as u64, "downloaded {len} of {size} bytes");
        down.record(t.elapsed());
        down_time += t.elapsed();
    }
    let mb = (size * count) as f64 / 1e6;
    Ok(Report {
        label: String::new(),
        scenario: "media".into(),
        parameters: json!({ "size_mib": size_mb, "count": count }),
        elapsed: start.elapsed(),
        events: count * 2,
        latencies: vec![("upload".into(), up), ("download".into(), down)],
        figures: json!({
            "upload_mb_per_s": mb / up_time.as_secs_f64().max(1e-9),
            "download_mb_per_s": mb / down_time.as_secs_f64().max(1e-9),
        }),
    })
}
