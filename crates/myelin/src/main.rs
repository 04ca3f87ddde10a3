//! `myelin`: the Matrix homeserver's command line.

use clap::{Parser, Subcommand};
use myelin::commands;
use myelin_core::config::MediaBackendKind;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "myelin",
    version,
    about = "Myelin, a Matrix homeserver",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver. With no config file it uses ./myelin-data/myelin.toml
    /// (or $MYELIN_DATA_DIR/myelin.toml), creating it and the data directory
    /// on first start.
    Serve {
        /// The config file.
        #[arg(long, short, env = "MYELIN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print (or write) a complete, commented myelin.toml.
    GenerateConfig {
        /// The server name: the part after ":" in user ids.
        #[arg(long)]
        server_name: String,
        /// "sqlite:PATH" or "postgres://…"; default SQLite in the data directory.
        #[arg(long)]
        database_url: Option<String>,
        /// The data directory to write into the config.
        #[arg(long, default_value = commands::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Write to this file instead of standard output (never overwrites).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print (or write) a new ed25519 signing key in the usual key-file format
    /// (`ed25519 <key_version> <unpadded base64 seed>`).
    GenerateKeys {
        /// Write to this file instead of standard output (never overwrites).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Apply pending database migrations and say which.
    Migrate {
        #[arg(long, short, env = "MYELIN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Media storage tasks.
    Media {
        #[command(subcommand)]
        command: MediaCommand,
    },
    /// Create a local account.
    CreateUser {
        /// The localpart (or full user id) of the new account.
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: String,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
        #[arg(long, short, env = "MYELIN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create a registration token (for `registration = "token"`).
    CreateRegistrationToken {
        /// The token; random if not given.
        #[arg(long)]
        token: Option<String>,
        /// How many registrations it allows; unlimited if not given.
        #[arg(long)]
        uses_allowed: Option<i64>,
        /// Seconds until it expires; never if not given.
        #[arg(long)]
        expires_in_secs: Option<i64>,
        #[arg(long, short, env = "MYELIN_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MediaCommand {
    /// Copy every media blob into the backend `--to` from the other one
    /// (the local disk at media_path, or the bucket of [media.s3]),
    /// checking each blob's SHA-256. Safe to run again: blobs already copied
    /// are skipped. Set `media.backend` to the new backend afterwards.
    Migrate {
        /// `s3` (from the disk) or `disk` (from S3).
        #[arg(long, value_parser = ["s3", "disk"])]
        to: String,
        #[arg(long, short, env = "MYELIN_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let config = commands::resolve_config(config.as_deref())?;
            myelin::logging::init(&config.log);
            runtime()?.block_on(async {
                let server = myelin::server::start(config).await?;
                eprintln!("Myelin is listening on {}", server.base_url());
                myelin::server::shutdown_signal().await;
                tracing::info!("shutting down");
                server.stop().await?;
                tracing::info!("stopped");
                Ok(())
            })
        }
        Command::GenerateConfig {
            server_name,
            database_url,
            data_dir,
            output,
        } => commands::generate_config(
            &server_name,
            database_url.as_deref(),
            &data_dir,
            output.as_deref(),
        ),
        Command::GenerateKeys { output } => commands::generate_keys(output.as_deref()),
        Command::Migrate { config } => {
            let config = commands::resolve_config(config.as_deref())?;
            runtime()?.block_on(commands::migrate(&config))
        }
        Command::Media {
            command: MediaCommand::Migrate { to, config },
        } => {
            let config = commands::resolve_config(config.as_deref())?;
            myelin::logging::init(&config.log);
            let to = if to == "s3" {
                MediaBackendKind::S3
            } else {
                MediaBackendKind::Disk
            };
            let report = runtime()?.block_on(commands::media_migrate(&config, to))?;
            println!(
                "Copied {} blobs ({} bytes); {} were there already; {} failed.",
                report.copied,
                report.bytes,
                report.already_there,
                report.failed.len()
            );
            if report.failed.is_empty() {
                Ok(())
            } else {
                anyhow::bail!(
                    "{} blobs could not be copied (listed above)",
                    report.failed.len()
                )
            }
        }
        Command::CreateUser {
            username,
            password,
            admin,
            config,
        } => {
            let config = commands::resolve_config(config.as_deref())?;
            let id =
                runtime()?.block_on(commands::create_user(&config, &username, &password, admin))?;
            println!("Created {id}{}", if admin { " (admin)" } else { "" });
            Ok(())
        }
        Command::CreateRegistrationToken {
            token,
            uses_allowed,
            expires_in_secs,
            config,
        } => {
            let config = commands::resolve_config(config.as_deref())?;
            let token = runtime()?.block_on(commands::create_registration_token(
                &config,
                token,
                uses_allowed,
                expires_in_secs,
            ))?;
            println!("{token}");
            Ok(())
        }
    }
}
