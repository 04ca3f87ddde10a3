//! The `loadtest` command line; see the library for the scenarios.

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use std::path::PathBuf;

use loadtest::client::{Registration, Server};
use loadtest::scenarios::{self, Context, Scenario};
use loadtest::{compare, html, report};

/// Load-test a Matrix homeserver over the Client-Server API.
///
/// Users register through the UIA `m.login.dummy` flow (the server must
/// allow open registration, with its rate limits off), or with
/// --registration-shared-secret through Synapse's shared-secret admin API.
/// The JSON result goes to stdout, a summary to stderr.
#[derive(Parser)]
#[command(name = "loadtest")]
struct Cli {
    /// The homeserver's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    base_url: String,
    /// A label for the report (the server under test).
    #[arg(long, default_value = "server")]
    label: String,
    /// Also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the HTML report of this run to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// The server's process id: its RSS and CPU are sampled from /proc every
    /// 250 ms during the measured phase.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Register users with Synapse's shared-secret admin registration
    /// (/_synapse/admin/v1/register) instead of open registration.
    #[arg(long)]
    registration_shared_secret: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Scenario(Scenario),
    /// Compare result JSON files side by side (Markdown to stdout).
    Compare {
        /// Result files written by --out (or saved stdout).
        #[arg(required = true, num_args = 2..)]
        files: Vec<PathBuf>,
        /// Write an HTML page with bar charts.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Also write the Markdown to this file.
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
}

/// The top-level help, followed by every scenario's options.
fn command() -> clap::Command {
    let cmd = Cli::command();
    let mut scenarios_help = String::from("Scenarios and their options:\n");
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut sub = sub
            .clone()
            .help_template("{usage}\n{about}\n{options}")
            .disable_help_flag(true);
        let text = sub.render_help().to_string();
        for (i, line) in text.lines().enumerate() {
            let line = line.strip_prefix("Usage: ").unwrap_or(line);
            let indent = if i == 0 {
                "  loadtest [OPTIONS] "
            } else {
                "    "
            };
            if !line.trim().is_empty() {
                scenarios_help.push_str(&format!("{indent}{}\n", line.trim_end()));
            }
        }
        scenarios_help.push('\n');
    }
    cmd.after_help(scenarios_help)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::from_arg_matches(&command().get_matches())?;
    let scenario = match cli.command {
        Command::Compare {
            files,
            html,
            markdown,
        } => return run_compare(&files, html, markdown),
        Command::Scenario(scenario) => scenario,
    };
    let registration = match cli.registration_shared_secret {
        Some(secret) => Registration::SharedSecret(secret),
        None => Registration::Dummy,
    };
    let ctx = Context {
        server: Server::new(&cli.base_url, registration),
        server_pid: cli.server_pid,
    };
    let report = scenarios::run(&ctx, &scenario).await?.labelled(&cli.label);
    eprintln!("{}", report.summary());
    let json = report.to_json();
    let text = report::to_pretty_json(&json);
    println!("{text}");
    if let Some(path) = cli.out {
        std::fs::write(&path, format!("{text}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = cli.html {
        std::fs::write(&path, html::render_run(&json))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run_compare(
    files: &[PathBuf],
    html: Option<PathBuf>,
    markdown: Option<PathBuf>,
) -> anyhow::Result<()> {
    let reports = compare::load(files)?;
    let md = compare::markdown(&reports);
    print!("{md}");
    if let Some(path) = markdown {
        std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = html {
        std::fs::write(&path, compare::html(&reports))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
