//! `loadtest`: drives any homeserver through the Client-Server API and
//! reports what operators care about. Scenarios:
//!
//! - `messages`: N users in M rooms send K messages each, as fast as the
//!   server answers (closed loop): messages/s and send latency.
//! - `sync-fanout`: one sender in a room of K members who all long-poll
//!   `/sync`: the time from the send's 200 until each member's `/sync`
//!   returns the event.
//!
//! - `media`: one user uploads files of a given size, then downloads them:
//!   MB/s each way.
//!
//! Users register through the UIA `m.login.dummy` flow, so the server must
//! allow open registration with its rate limits off.

mod client;
mod report;
mod scenarios;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Load-test a Matrix homeserver over the Client-Server API"
)]
struct Cli {
    /// The homeserver's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    base_url: String,
    /// A label for the report (the server under test).
    #[arg(long, default_value = "server")]
    label: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Users send messages into rooms as fast as the server answers.
    Messages {
        /// Sending users.
        #[arg(long, default_value_t = 10)]
        users: usize,
        /// Rooms; user i sends into room i % rooms.
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Messages each user sends.
        #[arg(long, default_value_t = 100)]
        messages: usize,
    },
    /// One sender, K members long-polling /sync: delivery latency.
    SyncFanout {
        /// Members long-polling /sync.
        #[arg(long, default_value_t = 10)]
        members: usize,
        /// Messages sent, one after another.
        #[arg(long, default_value_t = 100)]
        messages: usize,
    },
    /// Upload then download files: MB/s each way.
    Media {
        /// Size of each file, in MiB.
        #[arg(long, default_value_t = 50)]
        size_mb: usize,
        /// Files uploaded (then downloaded), one after another.
        #[arg(long, default_value_t = 3)]
        count: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let server = client::Server::new(&cli.base_url);
    let report = match cli.scenario {
        Scenario::Messages {
            users,
            rooms,
            messages,
        } => scenarios::messages(&server, users, rooms.max(1), messages).await?,
        Scenario::SyncFanout { members, messages } => {
            scenarios::sync_fanout(&server, members, messages).await?
        }
        Scenario::Media { size_mb, count } => {
            scenarios::media(&server, size_mb, count.max(1)).await?
        }
    };
    let report = report.labelled(&cli.label);
    eprintln!("{}", report.summary());
    println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    Ok(())
}
