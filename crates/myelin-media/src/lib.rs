//! The media repository, without HTTP: content-addressed blob backends
//! (`disk.rs`, `s3.rs`) behind [`MediaBackend`], thumbnail generation
//! (`thumbnail.rs`, pure), the repository that ties them to the metadata in
//! the database (`repo.rs`, over `myelin-storage`'s `MediaStore`), and
//! moving blobs between backends (`migrate.rs`).
//!
//! The HTTP endpoints are in `myelin-api/src/client/media.rs`.

pub mod backend;
pub mod disk;
pub mod migrate;
pub mod preview;
pub mod repo;
pub mod s3;
pub mod thumbnail;

pub use backend::{Blob, ByteRange, ByteStream, MediaBackend, MediaError, MediaResult};
pub use disk::DiskBackend;
pub use migrate::{MigrationReport, migrate_blobs};
pub use repo::{Download, MediaRepo, RepoError, RepoResult, ThumbnailDownload};
