//! Pure Matrix event logic: room versions, the PDU format of each, content and
//! reference hashes, event ids, signing and verification, redaction, size
//! limits and the authorization rules.
//!
//! Architecture Invariant: this crate does no I/O (no network, no database, no
//! files) and no async. Storage reaches it as data ([`auth::StateView`]).
//! Architecture Invariant: room-version differences are read from the rules
//! table ([`room_version::RoomVersion::rules`], ruma's `RoomVersionRules`),
//! never from `match` on a version string spread through the code.

pub mod auth;
pub mod pdu;
pub mod push;
pub mod redaction;
pub mod room_version;
pub mod state_res;

pub use auth::{
    AuthError, PowerLevel, StateView, auth_types_for_event, check_auth, check_auth_events,
    creators, user_power_level,
};
pub use pdu::{EventError, Pdu, PduTemplate, build_pdu, verify_pdu, verify_pdus};
pub use room_version::{DEFAULT_ROOM_VERSION, RoomVersion, SUPPORTED_ROOM_VERSIONS};
pub use state_res::{StateMap, StateResError, resolve};
