//! Helpers shared by the integration tests: keys, versions, templates and a
//! small room builder that signs events with a test key.

#![allow(dead_code)]

pub mod ruma_pdu;

use std::collections::HashMap;

use myelin_core::signing_key::SigningKey;
use myelin_events::{Pdu, PduTemplate, RoomVersion, auth_types_for_event, build_pdu};
use serde_json::{Map, Value, json};

pub const SERVER: &str = "a.test";

pub fn version(id: &str) -> RoomVersion {
    RoomVersion::parse(id).expect("supported version")
}

pub fn all_versions() -> impl Iterator<Item = RoomVersion> {
    (1..=12).map(|n| version(&n.to_string()))
}

pub fn key() -> SigningKey {
    SigningKey::from_seed("test".to_owned(), [7; 32])
}

pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

pub fn template(
    room_id: Option<&str>,
    sender: &str,
    kind: &str,
    state_key: Option<&str>,
    content: Value,
) -> PduTemplate {
    PduTemplate {
        room_id: room_id.map(str::to_owned),
        sender: sender.to_owned(),
        kind: kind.to_owned(),
        state_key: state_key.map(str::to_owned),
        content: object(content),
        redacts: None,
        prev_events: Vec::new(),
        auth_events: Vec::new(),
        depth: 1,
        origin_server_ts: 1_700_000_000_000,
    }
}

/// The server part of a user id.
pub fn server_of(user: &str) -> &str {
    user.split_once(':').map_or("", |(_, server)| server)
}

/// A room built event by event with `build_pdu`: it tracks the state, the
/// last event (the next event's only prev event) and the depth. `send`
/// builds without checking auth; `try_send` checks and applies.
pub struct Room {
    pub version: RoomVersion,
    pub room_id: String,
    pub state: HashMap<(String, String), Pdu>,
    pub events: Vec<Pdu>,
    key: SigningKey,
}

impl Room {
    /// A room created by `creator` with `create_content` (v1–10: `creator`
    /// is added unless the content names one).
    pub fn create(version: RoomVersion, creator: &str, mut create_content: Value) -> Self {
        if !version.rules.authorization.use_room_create_sender
            && create_content.get("creator").is_none()
        {
            create_content["creator"] = json!(creator);
        }
        create_content["room_version"] = json!(version.id);
        let derived = !version.rules.event_format.require_room_create_room_id;
        let room_id = format!("!room:{}", server_of(creator));
        let template = template(
            (!derived).then_some(room_id.as_str()),
            creator,
            "m.room.create",
            Some(""),
            create_content,
        );
        let create =
            build_pdu(&version, template, server_of(creator), &key()).expect("create event");
        let mut room = Self {
            version,
            room_id: create.room_id.clone(),
            state: HashMap::new(),
            events: Vec::new(),
            key: key(),
        };
        room.apply(create);
        room
    }

    /// A room with the creator joined, power levels and join rules.
    pub fn standard(id: &str, creator: &str, power_levels: Value, join_rule: &str) -> Self {
        let mut room = Self::create(version(id), creator, json!({}));
        room.must_send(
            creator,
            "m.room.member",
            Some(creator),
            json!({"membership": "join"}),
        );
        room.must_send(creator, "m.room.power_levels", Some(""), power_levels);
        room.must_send(
            creator,
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": join_rule}),
        );
        room
    }

    pub fn create_event(&self) -> &Pdu {
        &self.events[0]
    }

    /// Builds an event on top of the room (not checked, not applied).
    pub fn build(&self, sender: &str, kind: &str, state_key: Option<&str>, content: Value) -> Pdu {
        self.build_with(sender, kind, state_key, content, None)
    }

    pub fn build_with(
        &self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        redacts: Option<&str>,
    ) -> Pdu {
        let auth_events = auth_types_for_event(&self.version, kind, sender, state_key, &content)
            .into_iter()
            .filter_map(|(kind, key)| self.state.get(&(kind, key)).map(|p| p.event_id.clone()))
            .collect();
        let last = self.events.last().expect("the room has events");
        let mut template = template(Some(&self.room_id), sender, kind, state_key, content);
        template.redacts = redacts.map(str::to_owned);
        template.prev_events = vec![last.event_id.clone()];
        template.auth_events = auth_events;
        template.depth = last.depth + 1;
        build_pdu(&self.version, template, server_of(sender), &self.key).expect("event builds")
    }

    /// Checks `pdu` against the room's state; applies it when allowed.
    pub fn try_apply(&mut self, pdu: Pdu) -> Result<Pdu, myelin_events::AuthError> {
        myelin_events::check_auth(&self.version, &pdu, &self.state)?;
        self.apply(pdu.clone());
        Ok(pdu)
    }

    pub fn try_send(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<Pdu, myelin_events::AuthError> {
        let pdu = self.build(sender, kind, state_key, content);
        self.try_apply(pdu)
    }

    pub fn must_send(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Pdu {
        self.try_send(sender, kind, state_key, content.clone())
            .unwrap_or_else(|e| {
                panic!(
                    "v{}: {sender} {kind} {state_key:?} {content}: {e}",
                    self.version.id
                )
            })
    }

    /// Applies without checking.
    pub fn apply(&mut self, pdu: Pdu) {
        if let Some(state_key) = &pdu.state_key {
            self.state
                .insert((pdu.kind.clone(), state_key.clone()), pdu.clone());
        }
        self.events.push(pdu);
    }

    pub fn join(&mut self, user: &str) -> Pdu {
        self.must_send(
            user,
            "m.room.member",
            Some(user),
            json!({"membership": "join"}),
        )
    }
}
