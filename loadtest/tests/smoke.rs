//! Every scenario, tiny, against a real Myelin on SQLite started in this
//! process: each must finish without errors, with the expected counts, and
//! its JSON must render as HTML and compare. No timing assertions.

use loadtest::client::{Registration, Server};
use loadtest::scenarios::{
    self, Context, Scenario, chat, initial_sync, join_storm, media, messages, sync_fanout,
};
use myelin_core::Config;
use myelin_core::config::{RateLimit, RegistrationMode};
use serde_json::Value;

/// Open registration, rate limits off, cheap password hashing, a random
/// loopback port (as in `crates/myelin/tests/common`).
fn test_config(data_dir: std::path::PathBuf) -> Config {
    let mut config = Config {
        server_name: "localhost".to_owned(),
        listen: "127.0.0.1:0".to_owned(),
        data_dir,
        registration: RegistrationMode::Open,
        ..Config::default()
    };
    let off = RateLimit {
        per_second: 0.0,
        burst: 0,
    };
    config.rate_limits.login = off;
    config.rate_limits.login_per_account = off;
    config.rate_limits.registration = off;
    config.auth.password_hash_memory_kib = 64;
    config.auth.password_hash_iterations = 1;
    config
}

/// Runs `scenario`, checks what every report must hold, returns its JSON.
async fn run(ctx: &Context, scenario: Scenario, label: &str) -> Value {
    let name = format!("{scenario:?}");
    let report = scenarios::run(ctx, &scenario)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}"))
        .labelled(label);
    let json = report.to_json();
    assert_eq!(
        report.errors_total(),
        0,
        "{name} had errors: {}",
        json["errors"]
    );
    assert_eq!(json["schema"], loadtest::report::SCHEMA);
    assert_eq!(json["label"], label);
    for field in ["events_per_s", "requests_per_s", "elapsed_s"] {
        assert!(json[field].is_number(), "{name}: {field}");
    }
    assert!(json["resources"]["generator_cpu_percent"].is_number());
    let text = loadtest::report::to_pretty_json(&json);
    // (Floats may differ in the last digit: serde_json's default parser.)
    let parsed: Value = serde_json::from_str(&text).expect("the pretty JSON parses");
    assert_eq!(parsed["samples"], json["samples"]);
    assert_eq!(
        parsed["latency"].as_object().map(|l| l.len()),
        json["latency"].as_object().map(|l| l.len())
    );
    let html = loadtest::html::render_run(&json);
    assert!(
        html.starts_with("<!doctype html>") && html.contains("<svg"),
        "{name}"
    );
    assert!(
        !html.contains("<script"),
        "{name}: the report is self-contained"
    );
    // To look at the reports: LOADTEST_SMOKE_OUT=dir cargo test -p loadtest.
    if let Ok(dir) = std::env::var("LOADTEST_SMOKE_OUT") {
        let dir = std::path::Path::new(&dir);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{label}.json")), &text).unwrap();
        std::fs::write(dir.join(format!("{label}.html")), &html).unwrap();
    }
    json
}

fn count(json: &Value, kind: &str) -> u64 {
    json["latency"][kind]["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no latency for {kind}: {}", json["latency"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_runs_against_myelin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = myelin::server::start(test_config(dir.path().to_path_buf()))
        .await
        .expect("the server starts");
    let ctx = Context {
        server: Server::new(&server.base_url(), Registration::Dummy),
        server_pid: None,
    };

    // Closed loop, with this process (which hosts the server) sampled.
    let sampled = Context {
        server_pid: Some(std::process::id()),
        ..ctx.clone()
    };
    let closed = run(
        &sampled,
        Scenario::Messages(messages::Args {
            users: 3,
            rooms: 2,
            messages: 5,
            rate: None,
        }),
        "closed",
    )
    .await;
    assert_eq!(count(&closed, "send"), 15);
    assert_eq!(closed["events"], 15);
    let server_resources = &closed["resources"]["server"];
    assert_eq!(server_resources["pid"], std::process::id());
    assert!(server_resources["rss_mb_max"].as_f64().unwrap() > 0.0);
    assert!(!server_resources["series"].as_array().unwrap().is_empty());
    assert_eq!(closed["samples"]["send"].as_array().unwrap().len(), 15);

    let open = run(
        &ctx,
        Scenario::Messages(messages::Args {
            users: 2,
            rooms: 1,
            messages: 5,
            rate: Some(20.0),
        }),
        "open",
    )
    .await;
    assert_eq!(count(&open, "send"), 10);
    assert_eq!(open["figures"]["mode"], "open");
    assert!(open["figures"]["achieved_rate_per_s"].as_f64().unwrap() > 0.0);

    let chat = run(
        &ctx,
        Scenario::Chat(chat::Args {
            users: 5,
            rooms: 3,
            duration: 2,
            rate: 20.0,
            seed: 3,
        }),
        "chat",
    )
    .await;
    let figures = &chat["figures"];
    assert_eq!(figures["scheduled_requests"], 40);
    assert_eq!(figures["deliveries"], figures["deliveries_expected"]);
    let mixed: u64 = [
        "send", "reaction", "typing", "receipt", "messages", "profile",
    ]
    .iter()
    .map(|k| count(&chat, k))
    .sum();
    assert_eq!(mixed, 40);
    assert!(count(&chat, "send") > 0);
    assert_eq!(
        count(&chat, "sync_delivery"),
        figures["deliveries"].as_u64().unwrap()
    );

    let fanout = run(
        &ctx,
        Scenario::SyncFanout(sync_fanout::Args {
            members: 3,
            messages: 3,
        }),
        "fanout",
    )
    .await;
    assert_eq!(count(&fanout, "send"), 3);
    assert_eq!(count(&fanout, "sync_delivery"), 9);
    assert_eq!(fanout["figures"]["deliveries"], 9);

    let storm = run(
        &ctx,
        Scenario::JoinStorm(join_storm::Args {
            users: 10,
            concurrency: None,
        }),
        "storm",
    )
    .await;
    assert_eq!(count(&storm, "join"), 10);
    assert_eq!(storm["figures"]["members_seen"], 11);
    assert!(storm["figures"]["members_visible_ms"].is_number());

    let initial = run(
        &ctx,
        Scenario::InitialSync(initial_sync::Args {
            users: 3,
            rooms: 3,
            messages_per_room: 2,
        }),
        "initial",
    )
    .await;
    assert_eq!(count(&initial, "initial_sync"), 3);
    assert_eq!(initial["figures"]["rooms_seen_min"], 3);
    assert!(initial["figures"]["response_bytes_max"].as_u64().unwrap() > 0);

    let media = run(
        &ctx,
        Scenario::Media(media::Args {
            size_mb: 1,
            count: 1,
        }),
        "media",
    )
    .await;
    assert_eq!(count(&media, "upload"), 1);
    assert_eq!(count(&media, "download"), 1);

    // Compare two runs of one workload (and one of another), from files.
    let files = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for (name, json) in [("a", &fanout), ("b", &fanout), ("c", &closed)] {
        let path = files.path().join(format!("{name}.json"));
        std::fs::write(&path, loadtest::report::to_pretty_json(json)).unwrap();
        paths.push(path);
    }
    let reports = loadtest::compare::load(&paths).expect("the results load");
    let markdown = loadtest::compare::markdown(&reports);
    assert!(markdown.contains("| fanout |") && markdown.contains("| fanout #2 |"));
    assert!(markdown.contains("sync_delivery") && markdown.contains("closed"));
    let html = loadtest::compare::html(&reports);
    assert!(html.contains("<svg") && html.contains("sync_delivery"));
    if let Ok(dir) = std::env::var("LOADTEST_SMOKE_OUT") {
        let dir = std::path::Path::new(&dir);
        std::fs::write(dir.join("compare.md"), &markdown).unwrap();
        std::fs::write(dir.join("compare.html"), &html).unwrap();
    }

    server.stop().await.expect("the server stops");
}
