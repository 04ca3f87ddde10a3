//! What each subcommand does, apart from argument parsing.

use anyhow::{Context as _, bail};
use myelin_core::Config;
use myelin_core::config::MediaBackendKind;
use myelin_core::config::config_template;
use myelin_core::ids::{user_id, validate_new_localpart};
use myelin_core::secrets::{PasswordCost, hash_password, random_urlsafe};
use myelin_core::signing_key::SigningKey;
use myelin_core::time::now_ms;
use myelin_storage::{NewUser, RegistrationToken, StorageError};
use std::path::{Path, PathBuf};

/// The data directory of the embedded default when nothing names one.
pub const DEFAULT_DATA_DIR: &str = "./myelin-data";
/// The config file inside the data directory.
pub const CONFIG_FILE_NAME: &str = "myelin.toml";

fn env_vars() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// The configuration to run with: the file given, or else
/// `<data_dir>/myelin.toml`, written from the template on first start so the
/// embedded default needs no set-up. Environment variables apply over either.
pub fn resolve_config(path: Option<&Path>) -> anyhow::Result<Config> {
    if let Some(path) = path {
        return Ok(Config::load(Some(path), env_vars())?);
    }
    let data_dir = PathBuf::from(
        std::env::var("MYELIN_DATA_DIR").unwrap_or_else(|_| DEFAULT_DATA_DIR.to_owned()),
    );
    let file = data_dir.join(CONFIG_FILE_NAME);
    if !file.exists() {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let server_name =
            std::env::var("MYELIN_SERVER_NAME").unwrap_or_else(|_| "localhost".to_owned());
        let database_url = std::env::var("MYELIN_DATABASE_URL").ok();
        let text = config_template(&server_name, database_url.as_deref(), &data_dir);
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!("Wrote a new configuration to {}", file.display());
    }
    Ok(Config::load(Some(&file), env_vars())?)
}

/// `myelin generate-config`
pub fn generate_config(
    server_name: &str,
    database_url: Option<&str>,
    data_dir: &Path,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let text = config_template(server_name, database_url, data_dir);
    // Refuse to write what the server would refuse to read.
    let table: toml::Table =
        toml::from_str(&text).context("the generated config is not valid TOML")?;
    Config::from_table(table)?;
    match output {
        Some(path) => {
            if path.exists() {
                bail!("{} exists already; not overwriting it", path.display());
            }
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("Wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// `myelin generate-keys`
pub fn generate_keys(output: Option<&Path>) -> anyhow::Result<()> {
    let key = SigningKey::generate();
    match output {
        Some(path) => {
            if path.exists() {
                bail!(
                    "{} exists already; not overwriting a signing key",
                    path.display()
                );
            }
            key.write(path)?;
            eprintln!("Wrote signing key {} to {}", key.key_id(), path.display());
        }
        None => print!("{}", key.to_file_line()),
    }
    Ok(())
}

/// `myelin migrate`: applies pending migrations and says which.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = config.database()?;
    let options = myelin_storage::OpenOptions {
        pool_size: 1,
        sqlite_readers: 1,
        migrate: true,
    };
    let (storage, report) = myelin_storage::open(&url, &options).await?;
    if report.applied.is_empty() {
        println!(
            "The database is up to date (schema version {}).",
            report.current_version
        );
    } else {
        for (version, name) in &report.applied {
            println!("Applied migration {version:04} {name}");
        }
        println!(
            "The database is now at schema version {}.",
            report.current_version
        );
    }
    storage.close().await;
    Ok(())
}

/// `myelin media migrate --to <backend>`: copies every media blob from the
/// other backend into `to`, checking hashes; run it again to resume or retry.
/// Fails (after copying what it can) if any blob could not be copied.
pub async fn media_migrate(
    config: &Config,
    to: MediaBackendKind,
) -> anyhow::Result<myelin_media::MigrationReport> {
    let from = match to {
        MediaBackendKind::S3 => MediaBackendKind::Disk,
        MediaBackendKind::Disk => MediaBackendKind::S3,
    };
    let url = config.database()?;
    let options = myelin_storage::OpenOptions {
        pool_size: 2,
        sqlite_readers: 1,
        migrate: false,
    };
    let (storage, _) = myelin_storage::open(&url, &options).await?;
    let source = crate::server::media_backend(config, from).await?;
    let target = crate::server::media_backend(config, to).await?;
    let tmp = config.media_path().join("migrate-tmp");
    let result = myelin_media::migrate_blobs(&storage, &*source, &*target, &tmp, |r| {
        tracing::info!(
            copied = r.copied,
            bytes = r.bytes,
            already_there = r.already_there,
            failed = r.failed.len(),
            "migrating media"
        );
    })
    .await;
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    storage.close().await;
    let report = result.map_err(|e| anyhow::anyhow!("media migration failed: {e}"))?;
    for (blob, why) in &report.failed {
        eprintln!("blob {blob}: {why}");
    }
    Ok(report)
}

/// `myelin create-user`
pub async fn create_user(
    config: &Config,
    username: &str,
    password: &str,
    admin: bool,
) -> anyhow::Result<String> {
    let localpart = username
        .strip_prefix('@')
        .map_or(username, |rest| rest.split(':').next().unwrap_or(rest));
    let localpart = localpart.to_lowercase();
    validate_new_localpart(&localpart, &config.server_name)
        .map_err(|e| anyhow::anyhow!("invalid username: {e}"))?;
    if password.is_empty() {
        bail!("the password is empty");
    }
    let cost = PasswordCost {
        memory_kib: config.auth.password_hash_memory_kib,
        iterations: config.auth.password_hash_iterations,
        parallelism: 1,
    };
    let password_hash = hash_password(password, cost)?;
    let storage = crate::server::open_storage(config).await?;
    let id = user_id(&localpart, &config.server_name);
    let new = NewUser {
        user_id: id.clone(),
        localpart: localpart.clone(),
        password_hash: Some(password_hash),
        admin,
        created_ms: now_ms(),
        displayname: Some(localpart),
    };
    let result = storage.create_user(new).await;
    storage.close().await;
    match result {
        Ok(()) => Ok(id),
        Err(StorageError::Conflict(_)) => bail!("the user {id} exists already"),
        Err(e) => Err(e.into()),
    }
}

/// `myelin create-registration-token`
pub async fn create_registration_token(
    config: &Config,
    token: Option<String>,
    uses_allowed: Option<i64>,
    expires_in_secs: Option<i64>,
) -> anyhow::Result<String> {
    let token = token.unwrap_or_else(|| random_urlsafe(12));
    if token.is_empty()
        || token.len() > 64
        || !token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c))
    {
        bail!("a registration token is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '~' and '-'");
    }
    if uses_allowed.is_some_and(|u| u < 1) {
        bail!("--uses-allowed must be at least 1");
    }
    let storage = crate::server::open_storage(config).await?;
    let record = RegistrationToken {
        token: token.clone(),
        uses_allowed,
        completed: 0,
        expiry_ms: expires_in_secs.map(|s| now_ms().saturating_add(s.saturating_mul(1000))),
    };
    let result = storage.create_registration_token(record).await;
    storage.close().await;
    match result {
        Ok(()) => Ok(token),
        Err(StorageError::Conflict(_)) => bail!("the registration token {token} exists already"),
        Err(e) => Err(e.into()),
    }
}
