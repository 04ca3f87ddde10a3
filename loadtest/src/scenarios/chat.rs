//! `chat`: a realistic mix of chat traffic at a fixed total request rate.
//!
//! Setup: `users` users in `rooms` rooms whose sizes follow Zipf's law
//! (room k holds about `users / 2 / (k+1)` members, at least 2), so a few
//! rooms are big and most are small; a user left out of every room joins
//! one picked with the same Zipf weights, so everyone is in at least one.
//!
//! Measured phase: every user long-polls `/sync` in its own task (kind
//! `sync`, not part of the target rate), and requests are due at fixed
//! intervals of `1/rate` s for `duration` s (open loop, latency from the
//! due time). Each picks a random user, one of that user's rooms, and a
//! kind by weight: [`MIX`]. Reactions and receipts target one of the room's
//! recent messages; before the room has any, they send a message instead.
//! Reported: latency and errors per kind, achieved vs target rate, and the
//! delivery latency of every message to every other member
//! (`sync_delivery`).

use rand::distributions::{Distribution as _, WeightedIndex};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    Context, Measurement, Schedule, SentHandle, SyncFleet, join_all, open_loop, prefix,
    register_many, report, sync_positions,
};
use crate::client::{Server, User};
use crate::report::{Recorder, Report};

/// The share of all users in the biggest room.
const ZIPF_TOP_SHARE: f64 = 0.5;
/// Zipf exponent of room sizes (1: room k is 1/k the size of the biggest).
const ZIPF_EXPONENT: f64 = 1.0;
/// Recent messages remembered per room as reaction and receipt targets.
const RECENT_EVENTS_MAX: usize = 20;
/// Events fetched by one back-pagination.
const PAGINATION_LIMIT: u32 = 20;
/// How long, after the last scheduled request, deliveries may still arrive.
const DELIVERY_GRACE: Duration = Duration::from_secs(30);
/// Reaction keys; a user never sends the same key twice to one event
/// (servers may reject duplicate annotations).
const REACTION_KEYS: [&str; 8] = ["👍", "❤️", "😂", "🎉", "👀", "🚀", "🙏", "✅"];

/// What a scheduled request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Send,
    Reaction,
    Typing,
    Receipt,
    Messages,
    Profile,
}

/// The request mix: kind, report name, weight (percent).
const MIX: [(Kind, &str, u32); 6] = [
    (Kind::Send, "send", 45),
    (Kind::Reaction, "reaction", 10),
    (Kind::Typing, "typing", 15),
    (Kind::Receipt, "receipt", 15),
    (Kind::Messages, "messages", 10),
    (Kind::Profile, "profile", 5),
];

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Users, each long-polling /sync.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Rooms, sized by a Zipf law.
    #[arg(long, default_value_t = 20)]
    pub rooms: usize,
    /// Length of the measured phase, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Target total rate of the request mix, in requests/s (syncs excluded).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seed for room membership and the request sequence; the same seed
    /// gives every server the same workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The run's shared state, read and written by the request tasks.
struct Chat {
    server: Server,
    recorder: Recorder,
    sent: SentHandle,
    prefix: String,
    users: Vec<User>,
    room_ids: Vec<String>,
    room_members: Vec<Vec<usize>>,
    recent: Vec<Mutex<VecDeque<String>>>,
    /// `(user, "event_id key")` pairs already reacted.
    reacted: Mutex<HashSet<(usize, String)>>,
    deliveries_expected: AtomicU64,
    events: AtomicU64,
}

pub async fn run(ctx: &Context, args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.users >= 2, "chat needs at least 2 users");
    let server = &ctx.server;
    let rooms = args.rooms.max(1);
    let seed = args.seed;
    let mut rng = StdRng::seed_from_u64(seed);
    let room_members = zipf_rooms(args.users, rooms, &mut rng);

    let prefix = prefix();
    let users = register_many(server, &prefix, args.users).await?;
    let mut room_ids = Vec::with_capacity(rooms);
    for members in &room_members {
        room_ids.push(server.create_room(&users[members[0]], true).await?);
    }
    let joins = room_members
        .iter()
        .zip(&room_ids)
        .flat_map(|(members, room)| {
            members[1..]
                .iter()
                .map(|&u| (users[u].clone(), room.clone()))
        })
        .collect();
    join_all(server, joins).await?;
    let positions = sync_positions(server, &users).await?;

    let measurement = Measurement::start(ctx);
    let recorder = measurement.recorder.clone();
    for (_, name, _) in MIX {
        recorder.declare(name, true);
    }
    let fleet = SyncFleet::spawn(server, users.clone(), positions, &recorder);
    let chat = Arc::new(Chat {
        server: server.clone(),
        recorder: recorder.clone(),
        sent: fleet.sent_handle(),
        prefix,
        users,
        recent: room_ids.iter().map(|_| Mutex::default()).collect(),
        room_ids,
        room_members,
        reacted: Mutex::default(),
        deliveries_expected: AtomicU64::new(0),
        events: AtomicU64::new(0),
    });
    // Which rooms each user is in, to pick a (user, room) pair.
    let mut rooms_of: Vec<Vec<usize>> = vec![Vec::new(); args.users];
    for (room, members) in chat.room_members.iter().enumerate() {
        for &u in members {
            rooms_of[u].push(room);
        }
    }
    let rooms_of = Arc::new(rooms_of);
    let weights = WeightedIndex::new(MIX.iter().map(|m| m.2)).expect("positive weights");

    let schedule = Schedule::new(recorder.start(), args.rate);
    let scheduled = schedule.count_within(Duration::from_secs(args.duration));
    open_loop(&schedule, scheduled, |i, due| {
        // One RNG per request, derived from the seed: the sequence is
        // reproducible whatever order the tasks run in.
        let mut rng = StdRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let kind = MIX[weights.sample(&mut rng)].0;
        let user = rng.gen_range(0..args.users);
        let room = *rooms_of[user]
            .choose(&mut rng)
            .expect("every user is in a room");
        let chat = chat.clone();
        async move { chat.request(i, due, kind, user, room, rng).await }
    })
    .await;
    let schedule_elapsed = recorder.start().elapsed().as_secs_f64().max(1e-9);
    let measured = measurement.stop().await;

    let expected = chat.deliveries_expected.load(Ordering::Relaxed);
    let delivered = fleet.wait_for(expected, DELIVERY_GRACE).await;
    fleet.stop();
    for _ in delivered..expected {
        recorder.failure_code("sync_delivery", "missing");
    }
    let completed: u64 = recorder
        .snapshot()
        .iter()
        .filter(|(k, _)| MIX.iter().any(|m| m.1 == k))
        .map(|(_, s)| s.count() as u64 + s.errors_total())
        .sum();
    let room_sizes: Vec<usize> = chat.room_members.iter().map(Vec::len).collect();
    Ok(report(
        "chat",
        json!({
            "users": args.users,
            "rooms": rooms,
            "duration_s": args.duration,
            "rate": args.rate,
            "seed": seed,
        }),
        measured,
        &recorder,
        chat.events.load(Ordering::Relaxed),
        json!({
            "target_rate_per_s": args.rate,
            "achieved_rate_per_s": completed as f64 / schedule_elapsed,
            "scheduled_requests": scheduled,
            "room_sizes": room_sizes,
            "deliveries_expected": expected,
            "deliveries": delivered,
        }),
    ))
}

impl Chat {
    async fn request(
        &self,
        i: u64,
        due: Instant,
        kind: Kind,
        user: usize,
        room: usize,
        mut rng: StdRng,
    ) {
        let (server, who, room_id) = (&self.server, &self.users[user], &self.room_ids[room]);
        let target = self.recent_event(room, &mut rng);
        match (kind, target) {
            (Kind::Reaction, Some(event_id)) => {
                let Some(key) = self.unused_key(user, &event_id, &mut rng) else {
                    return self.send(i, due, user, room).await;
                };
                let txn = format!("{}-{i}", self.prefix);
                let result = server.react(who, room_id, &txn, &event_id, key).await;
                if self.recorder.outcome("reaction", due, result).is_some() {
                    self.events.fetch_add(1, Ordering::Relaxed);
                }
            }
            (Kind::Receipt, Some(event_id)) => {
                let result = server.read_receipt(who, room_id, &event_id).await;
                self.recorder.outcome("receipt", due, result);
            }
            (Kind::Typing, _) => {
                let result = server.typing(who, room_id).await;
                self.recorder.outcome("typing", due, result);
            }
            (Kind::Messages, _) => {
                let result = server.messages(who, room_id, PAGINATION_LIMIT).await;
                self.recorder.outcome("messages", due, result);
            }
            (Kind::Profile, _) => {
                let members = &self.room_members[room];
                let of = &self.users[*members.choose(&mut rng).unwrap_or(&user)].user_id;
                let result = server.displayname(who, of).await;
                self.recorder.outcome("profile", due, result);
            }
            // A message, or a reaction or receipt before there is a target.
            (Kind::Send | Kind::Reaction | Kind::Receipt, _) => self.send(i, due, user, room).await,
        }
    }

    async fn send(&self, i: u64, due: Instant, user: usize, room: usize) {
        let txn = format!("{}-{i}", self.prefix);
        let result = self
            .server
            .send_text(
                &self.users[user],
                &self.room_ids[room],
                &txn,
                &format!("chat {i}"),
            )
            .await;
        let Some(event_id) = self.recorder.outcome("send", due, result) else {
            return;
        };
        self.sent.sent(event_id.clone(), Instant::now());
        let others = self.room_members[room].len().saturating_sub(1) as u64;
        self.deliveries_expected
            .fetch_add(others, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent[room].lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_EVENTS_MAX {
            recent.pop_front();
        }
        recent.push_back(event_id);
    }

    fn recent_event(&self, room: usize, rng: &mut StdRng) -> Option<String> {
        let recent = self.recent[room].lock().unwrap_or_else(|e| e.into_inner());
        if recent.is_empty() {
            return None;
        }
        recent.get(rng.gen_range(0..recent.len())).cloned()
    }

    /// A reaction key `user` has not yet sent to `event_id`, now marked used.
    fn unused_key(&self, user: usize, event_id: &str, rng: &mut StdRng) -> Option<&'static str> {
        let mut reacted = self.reacted.lock().unwrap_or_else(|e| e.into_inner());
        let start = rng.gen_range(0..REACTION_KEYS.len());
        (0..REACTION_KEYS.len())
            .map(|k| REACTION_KEYS[(start + k) % REACTION_KEYS.len()])
            .find(|key| reacted.insert((user, format!("{event_id} {key}"))))
    }
}

/// Room memberships: room k gets `users · ZIPF_TOP_SHARE / (k+1)^s`
/// members (at least 2), drawn at random; users in no room then join one
/// picked by the same weights.
fn zipf_rooms(users: usize, rooms: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let weights: Vec<f64> = (0..rooms)
        .map(|k| 1.0 / ((k + 1) as f64).powf(ZIPF_EXPONENT))
        .collect();
    let mut members: Vec<Vec<usize>> = weights
        .iter()
        .map(|w| {
            let size =
                ((users as f64 * ZIPF_TOP_SHARE * w).round() as usize).clamp(users.min(2), users);
            let mut picked = rand::seq::index::sample(rng, users, size).into_vec();
            picked.sort_unstable();
            picked
        })
        .collect();
    let mut in_a_room = vec![false; users];
    for &u in members.iter().flatten() {
        in_a_room[u] = true;
    }
    let pick = WeightedIndex::new(&weights).expect("positive weights");
    for (u, _) in in_a_room
        .iter()
        .enumerate()
        .filter(|(_, in_room)| !**in_room)
    {
        members[pick.sample(rng)].push(u);
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_rooms_put_everyone_somewhere_and_shrink() {
        let mut rng = StdRng::seed_from_u64(7);
        let rooms = zipf_rooms(1000, 50, &mut rng);
        let mut seen = vec![false; 1000];
        for &u in rooms.iter().flatten() {
            seen[u] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert!(rooms[0].len() >= 500);
        assert!(rooms[49].len() < 50);
        assert!(rooms.iter().all(|r| r.len() >= 2));
        for r in &rooms {
            let distinct: HashSet<_> = r.iter().collect();
            assert_eq!(distinct.len(), r.len());
        }
    }
}
