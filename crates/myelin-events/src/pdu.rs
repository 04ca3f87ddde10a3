//! The PDU: building (hashing, signing, event ids), parsing stored and
//! received PDUs, size limits, and the client format.
//!
//! A PDU is kept as the canonical JSON object that was signed
//! ([`Pdu::json`]) plus the fields the server reads often, parsed once. The
//! JSON is the truth: hashes, signatures and event ids are computed from it,
//! and it is what storage and federation carry.
//!
//! What changes between room versions (read from the rules table):
//! - `event_id` is inside the PDU in v1–2 (`$random:origin`) and is the
//!   reference hash from v3 (standard base64 in v3, URL-safe from v4);
//! - `prev_events` / `auth_events` are `[[id, {hashes}]]` pairs in v1–2 and
//!   plain ids from v3;
//! - `redacts` is a top-level key until v10 and `content.redacts` from v11;
//! - from v12 the `m.room.create` event has no `room_id`: the room id is its
//!   event id with the `!` sigil.
//!
//! `origin` is not written: it is not part of the PDU format of any room
//! version in the current specification.

use std::collections::BTreeMap;

use myelin_core::signing_key::SigningKey;
use ruma::CanonicalJsonObject;
use ruma::CanonicalJsonValue;
use ruma::room_version_rules::EventsReferenceFormatVersion;
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, JsonError, PublicKeyMap, Verified};
use serde_json::{Map, Value};

use crate::room_version::RoomVersion;

/// The largest PDU, in bytes of canonical JSON.
pub const PDU_SIZE_MAX: usize = 65_536;
/// The longest `sender`, `room_id`, `type`, `state_key` and `event_id`, in bytes.
pub const ID_LENGTH_MAX: usize = 255;
/// The most `prev_events` a PDU may reference (spec: "less than or equal to 20").
pub const PREV_EVENTS_MAX: usize = 20;
/// The most `auth_events` a PDU may reference (spec: "less than or equal to 10").
pub const AUTH_EVENTS_MAX: usize = 10;
/// The largest integer canonical JSON allows (2^53 − 1); the smallest is its negation.
pub const CANONICAL_INT_MAX: i64 = (1 << 53) - 1;

/// Random letters in a v1–2 event id (26^18 ≈ 2^84 possibilities).
const EVENT_ID_RANDOM_LENGTH: usize = 18;

/// The PKCS#8 v1 DER header of an Ed25519 private key (RFC 8410): the
/// 32-byte seed follows. ruma-signatures reads keys only as PKCS#8.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Over [`PDU_SIZE_MAX`] or a field over [`ID_LENGTH_MAX`].
    #[error("event too large: {0}")]
    TooLarge(String),
    /// Not a valid PDU of this room version (a missing or mistyped field,
    /// a float, an integer outside ±(2^53−1), …).
    #[error("invalid event: {0}")]
    Invalid(String),
    /// Signing or hashing failed.
    #[error("cannot sign the event: {0}")]
    Signing(String),
    /// A required signature is missing or does not verify (the event must
    /// be dropped).
    #[error("the event's signatures do not verify: {0}")]
    Unverified(String),
    /// The signatures verify but the content hash does not match: the
    /// spec says to keep the event in its redacted form.
    #[error("the event's content hash does not match its content")]
    ContentHashMismatch,
}

/// What a local server fills in to create an event.
#[derive(Debug, Clone, PartialEq)]
pub struct PduTemplate {
    /// `None` only for the `m.room.create` of a room version whose room id
    /// is derived from the create event (v12).
    pub room_id: Option<String>,
    pub sender: String,
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Map<String, Value>,
    /// For `m.room.redaction`: top-level `redacts` in v1–10, `content.redacts` from v11.
    pub redacts: Option<String>,
    pub prev_events: Vec<String>,
    pub auth_events: Vec<String>,
    pub depth: i64,
    pub origin_server_ts: i64,
}

/// A PDU and its parsed fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Pdu {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub kind: String,
    pub state_key: Option<String>,
    /// Always a JSON object.
    pub content: Value,
    /// The redacted event of an `m.room.redaction`, from wherever the room
    /// version keeps it.
    pub redacts: Option<String>,
    pub prev_events: Vec<String>,
    pub auth_events: Vec<String>,
    pub depth: i64,
    pub origin_server_ts: i64,
    /// The PDU exactly as signed (as sent over federation: with `event_id`
    /// only in v1–2), including `hashes` and `signatures`.
    pub json: CanonicalJsonObject,
}

/// Builds a local event: canonical JSON, content hash, signature by
/// `origin`'s `key`, event id (v1–2: `$random:origin`; v3: base64 reference
/// hash; v4+: URL-safe base64 reference hash), and for a v12 `m.room.create`
/// the room id derived from it (`!` + the event id's hash). Fails with
/// [`EventError::TooLarge`] past the size limits.
///
/// In v1–2 the references in `prev_events` / `auth_events` are written as
/// `[id, {}]`: the template carries ids only, and no server checks the
/// hashes of those pairs.
pub fn build_pdu(
    version: &RoomVersion,
    template: PduTemplate,
    origin: &str,
    key: &SigningKey,
) -> Result<Pdu, EventError> {
    let mut json = unsigned_pdu(version, template, origin)?;
    // Fail before hashing and signing an event that is already too large.
    check_pdu_size(&json)?;
    let key_pair = key_pair(key)?;
    ruma::signatures::hash_and_sign_event(origin, &key_pair, &mut json, &version.rules.redaction)
        .map_err(|e| json_error(e, EventError::Signing))?;
    Pdu::from_json(version, json, None)
}

/// The PDU before hashing and signing.
fn unsigned_pdu(
    version: &RoomVersion,
    template: PduTemplate,
    origin: &str,
) -> Result<CanonicalJsonObject, EventError> {
    check_template(version, &template)?;
    let rules = &version.rules;
    let PduTemplate {
        room_id,
        sender,
        kind,
        state_key,
        mut content,
        redacts,
        prev_events,
        auth_events,
        depth,
        origin_server_ts,
    } = template;
    let (content_redacts, top_level_redacts) = if rules.redaction.content_field_redacts {
        (redacts, None)
    } else {
        (None, redacts)
    };
    if let Some(redacts) = content_redacts {
        content.insert("redacts".to_owned(), Value::String(redacts));
    }
    let format = rules.events_reference_format;
    let string = CanonicalJsonValue::String;
    let mut json = CanonicalJsonObject::from([
        (
            "auth_events".to_owned(),
            event_references(format, auth_events),
        ),
        (
            "content".to_owned(),
            CanonicalJsonValue::Object(canonical_object(content)?),
        ),
        ("depth".to_owned(), canonical_int("depth", depth)?),
        (
            "origin_server_ts".to_owned(),
            canonical_int("origin_server_ts", origin_server_ts)?,
        ),
        (
            "prev_events".to_owned(),
            event_references(format, prev_events),
        ),
        ("sender".to_owned(), string(sender)),
        ("type".to_owned(), string(kind)),
    ]);
    let optional = [
        ("room_id", room_id),
        ("state_key", state_key),
        ("redacts", top_level_redacts),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            json.insert(field.to_owned(), string(value));
        }
    }
    if rules.event_format.require_event_id {
        let random = myelin_core::secrets::random_alphanumeric(EVENT_ID_RANDOM_LENGTH);
        json.insert("event_id".to_owned(), string(format!("${random}:{origin}")));
    }
    Ok(json)
}

/// The limits and version rules a template must meet before it is built.
fn check_template(version: &RoomVersion, template: &PduTemplate) -> Result<(), EventError> {
    check_id_length("sender", &template.sender)?;
    check_id_length("type", &template.kind)?;
    if let Some(state_key) = &template.state_key {
        check_id_length("state_key", state_key)?;
    }
    match (
        &template.room_id,
        room_id_is_derived(version, &template.kind),
    ) {
        (Some(room_id), false) => check_id_length("room_id", room_id)?,
        (None, true) => {}
        (None, false) => return Err(EventError::Invalid("the event has no room_id".to_owned())),
        (Some(_), true) => {
            return Err(EventError::Invalid(format!(
                "in room version {} the m.room.create event has no room_id: the room id is derived from it",
                version.id
            )));
        }
    }
    check_reference_count("prev_events", template.prev_events.len(), PREV_EVENTS_MAX)?;
    check_reference_count("auth_events", template.auth_events.len(), AUTH_EVENTS_MAX)?;
    if template.depth < 0 {
        return Err(EventError::Invalid("depth must not be negative".to_owned()));
    }
    Ok(())
}

/// Whether an event of `kind` has no `room_id` because it names the room
/// (the v12 `m.room.create`).
fn room_id_is_derived(version: &RoomVersion, kind: &str) -> bool {
    kind == "m.room.create" && !version.rules.event_format.require_room_create_room_id
}

/// `prev_events` / `auth_events` in the room version's reference format.
fn event_references(format: EventsReferenceFormatVersion, ids: Vec<String>) -> CanonicalJsonValue {
    let with_hashes = format == EventsReferenceFormatVersion::V1;
    CanonicalJsonValue::Array(
        ids.into_iter()
            .map(|id| {
                if with_hashes {
                    CanonicalJsonValue::Array(vec![
                        CanonicalJsonValue::String(id),
                        CanonicalJsonValue::Object(CanonicalJsonObject::new()),
                    ])
                } else {
                    CanonicalJsonValue::String(id)
                }
            })
            .collect(),
    )
}

/// The server's key in the form ruma-signatures reads (a PKCS#8 document).
fn key_pair(key: &SigningKey) -> Result<Ed25519KeyPair, EventError> {
    let mut der = [0u8; PKCS8_ED25519_PREFIX.len() + 32];
    der[..PKCS8_ED25519_PREFIX.len()].copy_from_slice(&PKCS8_ED25519_PREFIX);
    der[PKCS8_ED25519_PREFIX.len()..].copy_from_slice(&key.seed());
    let pair = Ed25519KeyPair::from_der(&der, key.version.clone());
    // The seed is a secret: do not leave a copy on the stack.
    der.fill(0);
    pair.map_err(|e| EventError::Signing(format!("the signing key is unusable: {e}")))
}

/// Maps a ruma-signatures error, keeping "too large" apart from the rest.
fn json_error(error: JsonError, other: fn(String) -> EventError) -> EventError {
    match error {
        JsonError::PduTooLarge => {
            EventError::TooLarge(format!("the event is over {PDU_SIZE_MAX} bytes"))
        }
        e => other(e.to_string()),
    }
}

/// Checks the signatures a received PDU needs (the sender's server; in
/// v1–2 the event id's server; from v8 the server of
/// `join_authorised_via_users_server`) and its content hash.
///
/// `public_keys` maps a server name to its key ids (`ed25519:abc`) and
/// their unpadded base64 public keys; it must hold every server whose
/// signature is required.
///
/// [`EventError::Unverified`]: drop the event.
/// [`EventError::ContentHashMismatch`]: the signatures are good but the
/// content was altered; keep the event redacted ([`crate::redaction::redact`]).
pub fn verify_pdu(
    version: &RoomVersion,
    json: &CanonicalJsonObject,
    public_keys: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<(), EventError> {
    verify_with(version, json, &public_key_map(public_keys))
}

/// [`verify_pdu`] for a batch of PDUs (a federation transaction, a
/// backfill, a join's state), in parallel on the current rayon pool;
/// the results are in the order of `pdus`. Ed25519 verification is the
/// cost of receiving a PDU, and each PDU's check is independent.
pub fn verify_pdus(
    version: &RoomVersion,
    pdus: &[CanonicalJsonObject],
    public_keys: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Result<(), EventError>> {
    use rayon::prelude::*;
    let key_map = public_key_map(public_keys);
    pdus.par_iter()
        .with_min_len(8)
        .map(|json| verify_with(version, json, &key_map))
        .collect()
}

fn verify_with(
    version: &RoomVersion,
    json: &CanonicalJsonObject,
    key_map: &PublicKeyMap,
) -> Result<(), EventError> {
    match ruma::signatures::verify_event(key_map, json, &version.rules) {
        Ok(Verified::All) => Ok(()),
        Ok(Verified::Signatures) => Err(EventError::ContentHashMismatch),
        Err(e) => Err(EventError::Unverified(e.to_string())),
    }
}

fn public_key_map(public_keys: &BTreeMap<String, BTreeMap<String, String>>) -> PublicKeyMap {
    public_keys
        .iter()
        .map(|(server, keys)| {
            let keys = keys
                .iter()
                .filter_map(|(key_id, key)| {
                    Base64::parse(key).ok().map(|key| (key_id.clone(), key))
                })
                .collect();
            (server.clone(), keys)
        })
        .collect()
}

impl Pdu {
    /// Parses a PDU of `version` from its canonical JSON. `event_id` is
    /// required for v1–2 (it is inside the JSON) and computed from the
    /// reference hash for v3+ when not given.
    pub fn from_json(
        version: &RoomVersion,
        json: CanonicalJsonObject,
        event_id: Option<&str>,
    ) -> Result<Self, EventError> {
        check_pdu_size(&json)?;
        let rules = &version.rules;
        let kind = required_id(&json, "type")?.to_owned();
        let sender = required_id(&json, "sender")?.to_owned();
        if <&ruma::UserId>::try_from(sender.as_str()).is_err() {
            return Err(EventError::Invalid(format!(
                "sender {sender:?} is not a user id"
            )));
        }
        let state_key = optional_id(&json, "state_key")?.map(str::to_owned);
        let content = match json.get("content") {
            Some(CanonicalJsonValue::Object(content)) => content,
            Some(_) => return Err(EventError::Invalid("content must be an object".to_owned())),
            None => return Err(EventError::Invalid("the event has no content".to_owned())),
        };
        let depth = required_int(&json, "depth")?;
        if depth < 0 {
            return Err(EventError::Invalid("depth must not be negative".to_owned()));
        }
        let origin_server_ts = required_int(&json, "origin_server_ts")?;
        required_object(&json, "hashes")?;
        required_object(&json, "signatures")?;
        let format = rules.events_reference_format;
        let prev_events = parse_references(&json, "prev_events", PREV_EVENTS_MAX, format)?;
        let auth_events = parse_references(&json, "auth_events", AUTH_EVENTS_MAX, format)?;
        let event_id = resolve_event_id(version, &json, event_id)?;
        let room_id = if room_id_is_derived(version, &kind) {
            // A stray `room_id` on such a create event is left for the auth
            // rules to reject; the room id is the derived one regardless.
            format!("!{}", &event_id[1..])
        } else {
            let room_id = required_id(&json, "room_id")?;
            if !room_id.starts_with('!') {
                return Err(EventError::Invalid(format!(
                    "room_id {room_id:?} does not start with !"
                )));
            }
            room_id.to_owned()
        };
        let redacts = parse_redacts(version, &json, &kind, content)?;
        let content = Value::from(CanonicalJsonValue::Object(content.clone()));
        Ok(Self {
            event_id,
            room_id,
            sender,
            kind,
            state_key,
            content,
            redacts,
            prev_events,
            auth_events,
            depth,
            origin_server_ts,
            json,
        })
    }

    /// Parses stored canonical JSON text.
    pub fn from_json_str(
        version: &RoomVersion,
        text: &str,
        event_id: &str,
    ) -> Result<Self, EventError> {
        if text.len() > PDU_SIZE_MAX {
            return Err(EventError::TooLarge(format!(
                "the event is over {PDU_SIZE_MAX} bytes"
            )));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| EventError::Invalid(format!("not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(EventError::Invalid(
                "a PDU must be a JSON object".to_owned(),
            ));
        };
        Self::from_json(version, canonical_object(map)?, Some(event_id))
    }

    /// The canonical JSON text (for storage).
    pub fn to_canonical_string(&self) -> String {
        canonical_string(&self.json)
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// `content.membership` of an `m.room.member` event.
    pub fn membership(&self) -> Option<&str> {
        if self.kind != "m.room.member" {
            return None;
        }
        self.content.get("membership").and_then(Value::as_str)
    }

    /// The event in the client format (`ClientEvent`): `content`,
    /// `event_id`, `origin_server_ts`, `room_id`, `sender`, `state_key` (if
    /// any), `type`, and `redacts` (top level, also for v11+, as clients
    /// expect). `unsigned` is the caller's to add.
    ///
    /// A redaction also carries `content.redacts` in every room version, as
    /// the v11 spec asks servers to do for newer clients.
    pub fn client_event(&self) -> Map<String, Value> {
        let mut content = self.content.clone();
        let mut event = Map::new();
        if let Some(redacts) = &self.redacts {
            event.insert("redacts".to_owned(), Value::String(redacts.clone()));
            if let Value::Object(content) = &mut content {
                content
                    .entry("redacts")
                    .or_insert_with(|| Value::String(redacts.clone()));
            }
        }
        event.insert("content".to_owned(), content);
        event.insert("event_id".to_owned(), Value::String(self.event_id.clone()));
        event.insert(
            "origin_server_ts".to_owned(),
            Value::from(self.origin_server_ts),
        );
        event.insert("room_id".to_owned(), Value::String(self.room_id.clone()));
        event.insert("sender".to_owned(), Value::String(self.sender.clone()));
        if let Some(state_key) = &self.state_key {
            event.insert("state_key".to_owned(), Value::String(state_key.clone()));
        }
        event.insert("type".to_owned(), Value::String(self.kind.clone()));
        event
    }
}

/// The event id: inside the JSON in v1–2, otherwise the one given (trusted:
/// storage passes the id it computed) or `$` + the reference hash.
fn resolve_event_id(
    version: &RoomVersion,
    json: &CanonicalJsonObject,
    given: Option<&str>,
) -> Result<String, EventError> {
    let event_id = if version.rules.event_format.require_event_id {
        let inner = required_id(json, "event_id")?;
        if given.is_some_and(|given| given != inner) {
            return Err(EventError::Invalid(format!(
                "event_id {inner:?} does not match {given:?}"
            )));
        }
        inner.to_owned()
    } else if let Some(given) = given {
        given.to_owned()
    } else {
        reference_event_id(version, json)?
    };
    check_id_length("event_id", &event_id)?;
    if !event_id.starts_with('$') || event_id.len() < 2 {
        return Err(EventError::Invalid(format!(
            "event id {event_id:?} does not start with $"
        )));
    }
    Ok(event_id)
}

/// `$` + the reference hash, in the room version's base64 alphabet.
fn reference_event_id(
    version: &RoomVersion,
    json: &CanonicalJsonObject,
) -> Result<String, EventError> {
    let hash = ruma::signatures::reference_hash(json, &version.rules)
        .map_err(|e| json_error(e, EventError::Invalid))?;
    Ok(format!("${hash}"))
}

/// The redacted event of an `m.room.redaction`, from the top level (v1–10)
/// or the content (v11+).
fn parse_redacts(
    version: &RoomVersion,
    json: &CanonicalJsonObject,
    kind: &str,
    content: &CanonicalJsonObject,
) -> Result<Option<String>, EventError> {
    if kind != "m.room.redaction" {
        return Ok(None);
    }
    let value = if version.rules.redaction.content_field_redacts {
        content.get("redacts")
    } else {
        json.get("redacts")
    };
    match value {
        None => Ok(None),
        Some(CanonicalJsonValue::String(redacts)) => {
            check_id_length("redacts", redacts)?;
            Ok(Some(redacts.clone()))
        }
        Some(_) => Err(EventError::Invalid("redacts must be a string".to_owned())),
    }
}

/// `prev_events` / `auth_events`: `[[id, {hashes}], …]` in v1–2, `[id, …]` from v3.
fn parse_references(
    json: &CanonicalJsonObject,
    field: &str,
    count_max: usize,
    format: EventsReferenceFormatVersion,
) -> Result<Vec<String>, EventError> {
    let Some(CanonicalJsonValue::Array(items)) = json.get(field) else {
        return Err(EventError::Invalid(format!("{field} must be an array")));
    };
    check_reference_count(field, items.len(), count_max)?;
    let with_hashes = format == EventsReferenceFormatVersion::V1;
    items
        .iter()
        .map(|item| {
            let id = match (item, with_hashes) {
                (CanonicalJsonValue::Array(pair), true) => match pair.as_slice() {
                    [
                        CanonicalJsonValue::String(id),
                        CanonicalJsonValue::Object(_),
                    ] => id,
                    _ => {
                        return Err(EventError::Invalid(format!(
                            "{field} entries must be [event_id, hashes] pairs"
                        )));
                    }
                },
                (CanonicalJsonValue::String(id), false) => id,
                _ => {
                    return Err(EventError::Invalid(format!(
                        "{field} entries have the wrong format for this room version"
                    )));
                }
            };
            check_id_length(field, id)?;
            Ok(id.clone())
        })
        .collect()
}

fn check_reference_count(field: &str, count: usize, count_max: usize) -> Result<(), EventError> {
    if count > count_max {
        return Err(EventError::Invalid(format!(
            "{field} lists {count} events, more than {count_max}"
        )));
    }
    Ok(())
}

fn required_id<'a>(json: &'a CanonicalJsonObject, field: &str) -> Result<&'a str, EventError> {
    optional_id(json, field)?
        .ok_or_else(|| EventError::Invalid(format!("the event has no {field}")))
}

fn optional_id<'a>(
    json: &'a CanonicalJsonObject,
    field: &str,
) -> Result<Option<&'a str>, EventError> {
    match json.get(field) {
        None => Ok(None),
        Some(CanonicalJsonValue::String(value)) => {
            check_id_length(field, value)?;
            Ok(Some(value))
        }
        Some(_) => Err(EventError::Invalid(format!("{field} must be a string"))),
    }
}

fn required_int(json: &CanonicalJsonObject, field: &str) -> Result<i64, EventError> {
    match json.get(field) {
        Some(CanonicalJsonValue::Integer(value)) => Ok(i64::from(*value)),
        Some(_) => Err(EventError::Invalid(format!("{field} must be an integer"))),
        None => Err(EventError::Invalid(format!("the event has no {field}"))),
    }
}

fn required_object(json: &CanonicalJsonObject, field: &str) -> Result<(), EventError> {
    match json.get(field) {
        Some(CanonicalJsonValue::Object(_)) => Ok(()),
        Some(_) => Err(EventError::Invalid(format!("{field} must be an object"))),
        None => Err(EventError::Invalid(format!("the event has no {field}"))),
    }
}

fn check_id_length(field: &str, value: &str) -> Result<(), EventError> {
    if value.len() > ID_LENGTH_MAX {
        return Err(EventError::TooLarge(format!(
            "{field} is {} bytes, over the limit of {ID_LENGTH_MAX}",
            value.len()
        )));
    }
    Ok(())
}

fn check_pdu_size(json: &CanonicalJsonObject) -> Result<(), EventError> {
    let size = canonical_string(json).len();
    if size > PDU_SIZE_MAX {
        return Err(EventError::TooLarge(format!(
            "the event is {size} bytes, over the limit of {PDU_SIZE_MAX}"
        )));
    }
    Ok(())
}

/// Canonical JSON text: a `CanonicalJsonObject` is a sorted map of values
/// that serialize without floats, so the output is canonical.
fn canonical_string(json: &CanonicalJsonObject) -> String {
    // Serializing string-keyed maps of canonical values cannot fail.
    serde_json::to_string(json).unwrap_or_default()
}

fn canonical_int(field: &str, value: i64) -> Result<CanonicalJsonValue, EventError> {
    ruma::Int::new(value)
        .map(CanonicalJsonValue::Integer)
        .ok_or_else(|| {
            EventError::Invalid(format!(
                "{field} is outside the canonical JSON integer range"
            ))
        })
}

/// A JSON map as canonical JSON, rejecting what canonical JSON forbids.
fn canonical_object(map: Map<String, Value>) -> Result<CanonicalJsonObject, EventError> {
    for value in map.values() {
        check_canonical(value)?;
    }
    ruma::canonical_json::try_from_json_map(map).map_err(|e| EventError::Invalid(e.to_string()))
}

/// Checks a client-supplied JSON value is valid canonical JSON for a PDU: no
/// floats, integers within ±(2^53−1). Returns the value unchanged.
pub fn check_canonical(value: &Value) -> Result<(), EventError> {
    match value {
        Value::Number(number) => check_canonical_number(number),
        Value::Array(items) => items.iter().try_for_each(check_canonical),
        Value::Object(map) => map.values().try_for_each(check_canonical),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

fn check_canonical_number(number: &serde_json::Number) -> Result<(), EventError> {
    if let Some(value) = number.as_i64() {
        if (-CANONICAL_INT_MAX..=CANONICAL_INT_MAX).contains(&value) {
            return Ok(());
        }
        return Err(EventError::Invalid(format!(
            "the integer {value} is outside the canonical JSON range ±(2^53−1)"
        )));
    }
    if number.is_u64() {
        return Err(EventError::Invalid(format!(
            "the integer {number} is outside the canonical JSON range ±(2^53−1)"
        )));
    }
    Err(EventError::Invalid(format!(
        "{number}: events may not contain floating-point numbers"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkcs8_key_is_the_servers_key() {
        let key = SigningKey::from_seed("k".to_owned(), [3; 32]);
        let pair = key_pair(&key).unwrap();
        use base64::Engine as _;
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(pair.public_key());
        assert_eq!(public, key.public_key_base64());
        assert_eq!(pair.version(), "k");
    }

    /// The spec's "Cryptographic test vectors" (appendices): the seed
    /// `YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1`, server `domain`, key
    /// `ed25519:1`, and the minimal event's hash and signature.
    #[test]
    fn spec_signing_vector() {
        use base64::Engine as _;
        // The vector's seed has non-zero trailing bits.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
        );
        let seed = lenient
            .decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
            .unwrap();
        let key = SigningKey::from_seed("1".to_owned(), seed.try_into().unwrap());
        assert_eq!(
            key.public_key_base64(),
            "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"
        );
        let event = serde_json::json!({
            "room_id": "!x:domain",
            "sender": "@a:domain",
            "origin": "domain",
            "origin_server_ts": 1000000,
            "signatures": {},
            "hashes": {},
            "type": "X",
            "content": {},
            "prev_events": [],
            "auth_events": [],
            "depth": 3,
            "unsigned": {"age_ts": 1000000}
        });
        let Value::Object(event) = event else {
            unreachable!()
        };
        let mut json = canonical_object(event).unwrap();
        let version = RoomVersion::parse("6").unwrap();
        ruma::signatures::hash_and_sign_event(
            "domain",
            &key_pair(&key).unwrap(),
            &mut json,
            &version.rules.redaction,
        )
        .unwrap();
        let signed = Value::from(CanonicalJsonValue::Object(json.clone()));
        assert_eq!(
            signed["hashes"]["sha256"],
            "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
        );
        assert_eq!(
            signed["signatures"]["domain"]["ed25519:1"],
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        );
        let keys = BTreeMap::from([(
            "domain".to_owned(),
            BTreeMap::from([("ed25519:1".to_owned(), key.public_key_base64())]),
        )]);
        assert_eq!(verify_pdu(&version, &json, &keys), Ok(()));
    }

    #[test]
    fn canonical_number_edges() {
        let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        assert!(check_canonical(&parse("9007199254740991")).is_ok());
        assert!(check_canonical(&parse("-9007199254740991")).is_ok());
        assert!(check_canonical(&parse("9007199254740992")).is_err());
        assert!(check_canonical(&parse("-9007199254740992")).is_err());
        assert!(check_canonical(&parse("18446744073709551615")).is_err());
        assert!(check_canonical(&parse("1e2")).is_err());
        assert!(check_canonical(&parse("-0.0")).is_err());
        // serde_json reads `-0` as a float: canonical JSON forbids it.
        assert!(check_canonical(&parse("-0")).is_err());
    }
}
