//! Starting and stopping a server: storage, signing key, router, listener,
//! background jobs and a graceful shutdown.

use anyhow::Context as _;
use myelin_api::AppState;
use myelin_core::Config;
use myelin_core::config::MediaBackendKind;
use myelin_core::signing_key::SigningKey;
use myelin_core::time::now_ms;
use myelin_media::s3::{S3Backend, S3Config};
use myelin_media::{DiskBackend, MediaBackend, MediaRepo};
use myelin_push::Pushers;
use myelin_rooms::LocalRoomWriter;
use myelin_storage::{DynStorage, OpenOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often expired UIA sessions are purged.
const UIA_PURGE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// A running server.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub storage: DynStorage,
    /// The room writer (tests reach its stream tracker through it).
    pub rooms: Arc<LocalRoomWriter>,
    /// Delivery to push gateways (stopped after the listener).
    pushers: Pushers,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<std::io::Result<()>>,
    jobs: Vec<JoinHandle<()>>,
}

/// Opens the storage named by the config (applying migrations).
pub async fn open_storage(config: &Config) -> anyhow::Result<DynStorage> {
    let url = config.database()?;
    let options = OpenOptions {
        pool_size: config.database.pool_size,
        sqlite_readers: config.database.sqlite_readers,
        migrate: true,
    };
    let (storage, report) = myelin_storage::open(&url, &options).await?;
    for (version, name) in &report.applied {
        tracing::info!(version, name, "applied migration");
    }
    Ok(storage)
}

/// The signing key at the configured path, generated on first start.
pub fn load_or_generate_signing_key(config: &Config) -> anyhow::Result<SigningKey> {
    let path = config.signing_key_path();
    if path.exists() {
        return Ok(SigningKey::read(&path)?);
    }
    let key = SigningKey::generate();
    key.write(&path)?;
    tracing::info!(path = %path.display(), key_id = %key.key_id(), "generated a signing key");
    Ok(key)
}

/// The media backend of kind `kind`, from `config` (the S3 bucket is
/// created if missing).
pub async fn media_backend(
    config: &Config,
    kind: MediaBackendKind,
) -> anyhow::Result<Arc<dyn MediaBackend>> {
    Ok(match kind {
        MediaBackendKind::Disk => {
            Arc::new(DiskBackend::new(config.media_path()).with_context(|| {
                format!(
                    "cannot use the media directory {}",
                    config.media_path().display()
                )
            })?)
        }
        MediaBackendKind::S3 => {
            let s3 = &config.media.s3;
            let mut settings = S3Config::new(
                s3.region.clone(),
                s3.bucket.clone(),
                s3.access_key_id.clone(),
                s3.secret_access_key.clone(),
            );
            settings.endpoint = Some(s3.endpoint.clone()).filter(|e| !e.is_empty());
            settings.path_style = s3.path_style;
            settings.checksums_when_required = s3.checksums_when_required;
            let backend = S3Backend::new(settings).context("cannot configure media.s3")?;
            backend
                .ensure_bucket()
                .await
                .with_context(|| format!("cannot reach the media bucket {}", s3.bucket))?;
            Arc::new(backend)
        }
    })
}

/// The media repository on the configured backend.
async fn open_media(config: &Config, storage: DynStorage) -> anyhow::Result<MediaRepo> {
    let backend = media_backend(config, config.media.backend).await?;
    MediaRepo::new(
        storage,
        backend,
        config.server_name.clone(),
        config.media.clone(),
        config.media_path().join("tmp"),
    )
    .with_context(|| {
        format!(
            "cannot use the media directory {}",
            config.media_path().display()
        )
    })
}

/// Starts a server for `config`: creates what the data directory lacks,
/// opens storage, binds the listener and serves until [`RunningServer::stop`].
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    std::fs::create_dir_all(config.media_path()).with_context(|| {
        format!(
            "cannot create the media directory {}",
            config.media_path().display()
        )
    })?;
    let signing_key = load_or_generate_signing_key(&config)?;
    let storage = open_storage(&config).await?;
    let addr = config.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local_addr = listener.local_addr()?;

    let rooms = LocalRoomWriter::new(
        storage.clone(),
        config.server_name.clone(),
        signing_key.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot start the room writer: {e}"))?;
    let rooms = Arc::new(rooms);
    let pushers = Pushers::new(
        storage.clone(),
        config.push.clone(),
        rooms.events().subscribe(),
        rooms.notifier().clone(),
    );
    let started = pushers
        .start_all()
        .await
        .context("cannot load the pushers")?;
    tracing::debug!(pushers = started, "started push delivery");
    let media = Arc::new(open_media(&config, storage.clone()).await?);
    let state = AppState::with_services(
        config,
        storage.clone(),
        signing_key,
        rooms.clone(),
        pushers.clone(),
        media,
    );
    let app = myelin_api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (shutdown, mut rx) = watch::channel(false);
    let mut serve_rx = rx.clone();
    let serve = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = serve_rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    let purge = tokio::spawn(async move {
        let mut tick = tokio::time::interval(UIA_PURGE_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match state.storage.purge_expired_uia_sessions(now_ms()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(n, "purged expired UIA sessions"),
                        Err(e) => tracing::warn!(error = %e, "cannot purge UIA sessions"),
                    }
                }
                _ = async { let _ = rx.wait_for(|stop| *stop).await; } => break,
            }
        }
    });
    tracing::info!(%local_addr, backend = storage.backend_name(), "Myelin is listening");
    Ok(RunningServer {
        local_addr,
        storage,
        rooms,
        pushers,
        shutdown,
        serve,
        jobs: vec![purge],
    })
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight requests finish, stops
    /// push delivery and background jobs and closes the database.
    pub async fn stop(self) -> anyhow::Result<()> {
        // Long-polling /sync requests answer now rather than at their timeout.
        self.rooms.notifier().close();
        let _ = self.shutdown.send(true);
        let served = self.serve.await;
        // After the last request: no pusher is set or started any more.
        self.pushers.shutdown().await;
        for job in self.jobs {
            let _ = job.await;
        }
        self.storage.close().await;
        served
            .context("the server task failed")?
            .context("the listener failed")?;
        Ok(())
    }

    /// The `http://` base URL of the listener.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
