//! What every handler shares: configuration, storage, the signing key and the
//! in-process limiters. Wired once by the binary; cloned cheaply per request.

use myelin_core::Config;
use myelin_core::secrets::PasswordCost;
use myelin_core::signing_key::SigningKey;
use myelin_rooms::LocalRoomWriter;
use myelin_storage::DynStorage;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ratelimit::RateLimiter;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub storage: DynStorage,
    pub signing_key: SigningKey,
    /// The room writer (in a cluster, a router to each room's owner).
    pub rooms: Arc<LocalRoomWriter>,
    /// Who is typing where.
    pub typing: myelin_rooms::Typing,
    /// Who is online, in memory like typing.
    pub presence: myelin_rooms::Presence,
    /// Delivery of notifications to push gateways, one task per pusher.
    pub pushers: myelin_push::Pushers,
    /// The media repository (uploads, downloads, thumbnails).
    pub media: Arc<myelin_media::MediaRepo>,
    /// URL previews, with their in-memory cache.
    pub previews: myelin_media::preview::UrlPreviewer,
    pub limits: Limits,
    /// When each device was last recorded as seen by this process, so
    /// `last_seen_ts` is written at most once per [`crate::auth::SEEN_WRITE_INTERVAL_MS`].
    pub seen: Mutex<HashMap<(String, String), i64>>,
}

pub struct Limits {
    pub login: RateLimiter,
    pub login_per_account: RateLimiter,
    pub registration: RateLimiter,
    /// Registration attempts per requested username, whatever the address
    /// (same bucket settings as `registration`).
    pub registration_per_username: RateLimiter,
    /// Reports of events and rooms per user (both endpoints share it).
    pub reports: RateLimiter,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State with a push service of its own, none of whose pushers runs
    /// until `pushers.start_all()`, and media on the local disk.
    pub fn new(
        config: Config,
        storage: DynStorage,
        signing_key: SigningKey,
        rooms: Arc<LocalRoomWriter>,
    ) -> Self {
        let pushers = myelin_push::Pushers::new(
            storage.clone(),
            config.push.clone(),
            rooms.events().subscribe(),
            rooms.notifier().clone(),
        );
        let disk = myelin_media::DiskBackend::new(config.media_path())
            .expect("the media directory can be created");
        let media = myelin_media::MediaRepo::new(
            storage.clone(),
            Arc::new(disk),
            config.server_name.clone(),
            config.media.clone(),
            config.media_path().join("tmp"),
        )
        .expect("the media directory can be created");
        Self::with_services(
            config,
            storage,
            signing_key,
            rooms,
            pushers,
            Arc::new(media),
        )
    }

    pub fn with_services(
        config: Config,
        storage: DynStorage,
        signing_key: SigningKey,
        rooms: Arc<LocalRoomWriter>,
        pushers: myelin_push::Pushers,
        media: Arc<myelin_media::MediaRepo>,
    ) -> Self {
        let limits = Limits {
            login: RateLimiter::new(config.rate_limits.login),
            login_per_account: RateLimiter::new(config.rate_limits.login_per_account),
            registration: RateLimiter::new(config.rate_limits.registration),
            registration_per_username: RateLimiter::new(config.rate_limits.registration),
            reports: RateLimiter::new(config.rate_limits.reports),
        };
        let typing = myelin_rooms::Typing::new(rooms.notifier().clone());
        let presence = myelin_rooms::Presence::new(rooms.notifier().clone());
        let previews = myelin_media::preview::UrlPreviewer::new(config.media.url_preview.clone());
        Self(Arc::new(Inner {
            config,
            storage,
            signing_key,
            rooms,
            typing,
            presence,
            pushers,
            media,
            previews,
            limits,
            seen: Mutex::new(HashMap::new()),
        }))
    }

    pub fn server_name(&self) -> &str {
        &self.config.server_name
    }

    pub fn password_cost(&self) -> PasswordCost {
        PasswordCost {
            memory_kib: self.config.auth.password_hash_memory_kib,
            iterations: self.config.auth.password_hash_iterations,
            parallelism: 1,
        }
    }
}
