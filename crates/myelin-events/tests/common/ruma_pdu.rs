//! Our PDUs as ruma-state-res sees them, for the differential tests against
//! it (auth rules and state resolution) and the state resolution benches
//! (`benches/src/state_res_workload.rs` includes this file).

use myelin_events::Pdu;
use ruma::events::TimelineEventType;
use ruma::state_res::Event;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt,
    UserId,
};
use serde_json::value::RawValue;

/// A PDU as ruma-state-res sees it.
pub struct RumaPdu {
    event_id: OwnedEventId,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
}

impl From<&Pdu> for RumaPdu {
    fn from(pdu: &Pdu) -> Self {
        let ids = |ids: &[String]| ids.iter().map(|id| EventId::parse(id).unwrap()).collect();
        Self {
            event_id: EventId::parse(&pdu.event_id).unwrap(),
            room_id: pdu
                .json
                .get("room_id")
                .and_then(|r| r.as_str())
                .map(|r| RoomId::parse(r).unwrap()),
            sender: UserId::parse(&pdu.sender).unwrap(),
            origin_server_ts: MilliSecondsSinceUnixEpoch(
                UInt::try_from(pdu.origin_server_ts as u64).unwrap(),
            ),
            kind: TimelineEventType::from(pdu.kind.as_str()),
            content: RawValue::from_string(pdu.content.to_string()).unwrap(),
            state_key: pdu.state_key.clone(),
            prev_events: ids(&pdu.prev_events),
            auth_events: ids(&pdu.auth_events),
            redacts: pdu
                .redacts
                .as_deref()
                .and_then(|id| EventId::parse(id).ok()),
        }
    }
}

impl Event for RumaPdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}
