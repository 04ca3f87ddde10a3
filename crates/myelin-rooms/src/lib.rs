//! The room writer: one writer per room, serialized within a room and
//! concurrent across rooms. Creating an event chooses its `prev_events`,
//! `auth_events` and depth, signs it, checks it against the room's current
//! state and persists it (event, state change and stream position in one
//! transaction), then wakes the `/sync` requests waiting for it.
//!
//! Events from other servers enter through the same writer
//! ([`LocalRoomWriter::accept_pdus`]): checked on receipt, stored as
//! accepted, soft-failed or rejected, with state resolution (on the
//! [`StateResolver`]'s rayon pool) where forks meet.
//!
//! [`RoomWriter`] is the interface a cluster will route across nodes (each
//! room to its shard owner); [`LocalRoomWriter`] is the in-process
//! implementation of a single node.
//!
//! Architecture Invariant: every event of a room is created by its writer;
//! nothing else calls `RoomStore::persist_event` for local events.

pub mod create;
mod notifier;
pub mod presence;
pub mod push;
pub mod read;
pub mod state_res;
mod stream;
mod typing;
mod writer;

pub use create::{CreateRoomRequest, Preset};
pub use notifier::Notifier;
pub use presence::{Presence, PresenceState, UserPresence};
pub use push::PushRules;
pub use state_res::{RoomCost, StateResolver};
pub use stream::{StreamTracker, Visible};
pub use typing::{TYPING_TIMEOUT_MAX, Typing};
pub use writer::{
    ACCEPT_BATCH_MAX, AcceptedPdu, LocalRoomWriter, RoomWriter, SendEvent, SentEvent,
};
