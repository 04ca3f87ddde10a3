//! Shared foundations of Myelin: configuration, Matrix error kinds, identifier
//! rules, secrets (tokens and password hashes), the signing-key file format,
//! the filter definition and the classification of IP addresses.
//!
//! Architecture Invariant: this crate does no network or database I/O; the only
//! file I/O is reading and writing the config and signing-key files.
//! Architecture Invariant: nothing here knows HTTP status codes; `myelin-api`
//! maps [`ErrorKind`] to statuses.

pub mod config;
pub mod error;
pub mod filter;
pub mod ids;
pub mod net;
pub mod secrets;
pub mod signing_key;
pub mod time;

pub use config::Config;
pub use error::{ErrorKind, MatrixError, MatrixResult};
