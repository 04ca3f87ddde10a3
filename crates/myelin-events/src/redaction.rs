//! The redaction algorithm of each room version (including v11's changes).
//!
//! The keys each version keeps are ruma's `RedactionRules` (the same table
//! the reference hash and signatures are computed with, so a redacted event
//! still verifies). The event id is unchanged; in v1–10 a redacted
//! `m.room.redaction` loses its top-level `redacts`, in v11+ it keeps
//! `content.redacts`.

use crate::pdu::{EventError, Pdu};
use crate::room_version::RoomVersion;

/// The PDU as redacted under `version`'s rules (keys and content kept per
/// the spec's algorithm). The event id is unchanged.
pub fn redact(version: &RoomVersion, pdu: &Pdu) -> Result<Pdu, EventError> {
    let json = ruma::canonical_json::redact(pdu.json.clone(), &version.rules.redaction, None)
        .map_err(|e| EventError::Invalid(format!("cannot redact the event: {e}")))?;
    Pdu::from_json(version, json, Some(&pdu.event_id))
}
