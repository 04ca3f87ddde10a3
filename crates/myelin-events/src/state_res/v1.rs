//! State resolution v1 (room version 1). Not yet written.

use std::sync::Arc;

use super::{StateMap, StateResError};
use crate::pdu::Pdu;
use crate::room_version::RoomVersion;

/// Resolves `state_sets` with the v1 algorithm.
pub(super) fn resolve<F>(
    version: &RoomVersion,
    _state_sets: &[StateMap],
    _fetch: F,
) -> Result<StateMap, StateResError>
where
    F: Fn(&str) -> Option<Arc<Pdu>>,
{
    Err(StateResError::UnsupportedVersion(version.id))
}
