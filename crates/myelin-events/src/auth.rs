//! The authorization rules of every room version.
//!
//! This is the server's own implementation of the spec's rules
//! (server-server API "Authorization rules" and each room version's page),
//! written rule by rule; ruma-state-res is only the reference it is tested
//! against. The rules split in three:
//!
//! - [`check_auth_events`]: the event's `auth_events` are the ones the auth
//!   events selection allows (no duplicates, same room, the create event
//!   among them before v12);
//! - [`check_auth`]: the create event's rules, and every other rule against
//!   a state (the auth events, the state before the event, or the current
//!   state: the caller picks, as the checks on receipt of a PDU say);
//! - [`auth_types_for_event`]: which state an event cites.
//!
//! Version differences come from `RoomVersion::rules.authorization`.
//! Deliberate choices where the spec is silent or this server opts out:
//! - third-party invites (`m.room.member` invites carrying
//!   `third_party_invite`) are rejected: this server does not support them;
//! - a room with no `m.room.join_rules` (or one without a string
//!   `join_rule`) counts as `invite`, as Synapse does;
//! - a join authorised via `join_authorised_via_users_server` also needs
//!   that user to be joined (a user outside the room cannot invite);
//! - a power-levels field that is added or removed is compared with its
//!   default value (the spec's "power levels are inferred from defaults").

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use ruma::room_version_rules::AuthorizationRules;
use serde_json::{Map, Value};

use crate::pdu::{CANONICAL_INT_MAX, Pdu};
use crate::room_version::RoomVersion;

/// Why an event fails authorization, in words a user can act on
/// ("the sender's power level 0 is below the 50 needed to send m.room.name").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// The state an event is checked against: the state before it.
pub trait StateView {
    fn get(&self, kind: &str, state_key: &str) -> Option<&Pdu>;
}

impl StateView for std::collections::HashMap<(String, String), Pdu> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&Pdu> {
        self.get(&(kind.to_owned(), state_key.to_owned()))
    }
}

/// A user's power level. From v12 the room's creators have
/// [`PowerLevel::Infinite`], which outranks every integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerLevel {
    Infinite,
    Int(i64),
}

impl Ord for PowerLevel {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Infinite, Self::Infinite) => Ordering::Equal,
            (Self::Infinite, Self::Int(_)) => Ordering::Greater,
            (Self::Int(_), Self::Infinite) => Ordering::Less,
            (Self::Int(a), Self::Int(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for PowerLevel {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for PowerLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Infinite => f.write_str("infinite (room creator)"),
            Self::Int(level) => write!(f, "{level}"),
        }
    }
}

type AuthResult = Result<(), AuthError>;

fn deny<T>(reason: impl Into<String>) -> Result<T, AuthError> {
    Err(AuthError(reason.into()))
}

const CREATE: &str = "m.room.create";
const MEMBER: &str = "m.room.member";
const POWER_LEVELS: &str = "m.room.power_levels";
const JOIN_RULES: &str = "m.room.join_rules";
const THIRD_PARTY_INVITE: &str = "m.room.third_party_invite";

/// The power level of the creator(s) when the room has no power levels
/// event (before v12, where creators are unlimited).
const CREATOR_LEVEL_WITHOUT_POWER_LEVELS: i64 = 100;

/// The integer fields of `m.room.power_levels` and their defaults.
const LEVEL_FIELDS: [(&str, i64); 7] = [
    ("users_default", 0),
    ("events_default", 0),
    ("state_default", 50),
    ("ban", 50),
    ("redact", 50),
    ("kick", 50),
    ("invite", 0),
];

/// The `(type, state_key)` pairs whose current events are an event's
/// `auth_events` (the spec's "auth events selection"): the create event
/// (not from v12, where the room id names it), power levels, the sender's
/// membership, and for membership events the target's membership, join
/// rules, third-party invite and the authorising user for restricted joins.
pub fn auth_types_for_event(
    version: &RoomVersion,
    kind: &str,
    sender: &str,
    state_key: Option<&str>,
    content: &Value,
) -> Vec<(String, String)> {
    if kind == CREATE {
        return Vec::new();
    }
    let rules = &version.rules;
    let mut types = Vec::new();
    let mut push = |kind: &str, state_key: &str| {
        let pair = (kind.to_owned(), state_key.to_owned());
        if !types.contains(&pair) {
            types.push(pair);
        }
    };
    if rules.event_format.allow_room_create_in_auth_events {
        push(CREATE, "");
    }
    push(POWER_LEVELS, "");
    push(MEMBER, sender);
    if kind != MEMBER {
        return types;
    }
    if let Some(target) = state_key {
        push(MEMBER, target);
    }
    let membership = content.get("membership").and_then(Value::as_str);
    if matches!(membership, Some("join" | "invite" | "knock")) {
        push(JOIN_RULES, "");
    }
    if membership == Some("invite")
        && let Some(token) = content
            .pointer("/third_party_invite/signed/token")
            .and_then(Value::as_str)
    {
        push(THIRD_PARTY_INVITE, token);
    }
    if membership == Some("join")
        && rules.authorization.restricted_join_rule
        && let Some(authoriser) = content
            .get("join_authorised_via_users_server")
            .and_then(Value::as_str)
    {
        push(MEMBER, authoriser);
    }
    types
}

/// The spec's rules on an event's `auth_events` ("considering the event's
/// auth_events"): every cited event is given, in the same room, a state
/// event, one per `(type, state_key)`, of a kind the auth events selection
/// allows, and before v12 the create event is among them.
///
/// `auth_events` are the events `event.auth_events` names. Pass only events
/// that were accepted: leave a rejected one out and the event is rejected
/// for citing an unknown auth event. From v12 the create event is not an
/// auth event; check it separately (its id is the room id with `$`).
pub fn check_auth_events(version: &RoomVersion, event: &Pdu, auth_events: &[&Pdu]) -> AuthResult {
    if event.kind == CREATE {
        return Ok(());
    }
    let allowed = auth_types_for_event(
        version,
        &event.kind,
        &event.sender,
        event.state_key.as_deref(),
        &event.content,
    );
    let mut seen = HashSet::new();
    for auth_id in &event.auth_events {
        let Some(auth) = auth_events.iter().find(|auth| &auth.event_id == auth_id) else {
            return deny(format!(
                "the auth event {auth_id} is unknown or was rejected"
            ));
        };
        if auth.room_id != event.room_id {
            return deny(format!("the auth event {auth_id} belongs to another room"));
        }
        let Some(state_key) = &auth.state_key else {
            return deny(format!("the auth event {auth_id} is not a state event"));
        };
        let pair = (auth.kind.clone(), state_key.clone());
        if !allowed.contains(&pair) {
            return deny(format!(
                "the auth event {auth_id} ({}, {state_key:?}) is not one this event may cite",
                auth.kind
            ));
        }
        if !seen.insert(pair) {
            return deny(format!(
                "the auth events cite ({}, {state_key:?}) twice",
                auth.kind
            ));
        }
    }
    if version.rules.event_format.allow_room_create_in_auth_events
        && !seen.iter().any(|(kind, _)| kind == CREATE)
    {
        return deny("the auth events do not include the room's m.room.create event");
    }
    Ok(())
}

/// Checks `event` against the authorization rules of `version`, with
/// `state` the state before the event. From v12 the room's creators
/// (the create event's sender and `additional_creators`) have unlimited
/// power. Third-party invites are rejected.
///
/// The create event is found in `state` as `("m.room.create", "")`; the
/// event must be in its room (from v12: the room id is the create event's
/// id with `!`). The signature required by `join_authorised_via_users_server`
/// is checked by [`crate::pdu::verify_pdu`], not here.
pub fn check_auth(
    version: &RoomVersion,
    event: &Pdu,
    state: &dyn StateView,
) -> Result<(), AuthError> {
    if event.kind == CREATE {
        return check_create(version, event);
    }
    let Some(create) = state.get(CREATE, "") else {
        return deny("the room has no m.room.create event");
    };
    let room = Room::new(version, state, create);
    let rules = room.rules;
    if event.room_id != create.room_id {
        return deny(format!(
            "the event is for room {} but the room's create event makes it {}",
            event.room_id, create.room_id
        ));
    }
    room.check_federation(event)?;
    if rules.special_case_room_aliases && event.kind == "m.room.aliases" {
        return check_aliases(event);
    }
    if event.kind == MEMBER {
        return room.check_member(event);
    }
    room.require_joined(&event.sender, "send events")?;
    let sender_level = room.user_level(&event.sender)?;
    if event.kind == THIRD_PARTY_INVITE {
        return room.require_level(sender_level, "invite", "invite users");
    }
    room.check_required_level(event, sender_level)?;
    check_user_state_key(event)?;
    if event.kind == POWER_LEVELS {
        return room.check_power_levels(event, sender_level);
    }
    if rules.special_case_room_redaction && event.kind == "m.room.redaction" {
        return room.check_redaction(event, sender_level);
    }
    Ok(())
}

/// `user_id`'s power level in the room whose state is `state`.
///
/// A malformed power levels event (the auth rules reject those) counts as
/// one with every field at its default.
pub fn user_power_level(version: &RoomVersion, state: &dyn StateView, user_id: &str) -> PowerLevel {
    let Some(create) = state.get(CREATE, "") else {
        return PowerLevel::Int(0);
    };
    let room = Room::new(version, state, create);
    room.user_level(user_id).unwrap_or_else(|_| {
        if room.rules.explicitly_privilege_room_creators && room.is_creator(user_id) {
            PowerLevel::Infinite
        } else {
            PowerLevel::Int(0)
        }
    })
}

/// The room's creators: the create event's `creator` (v1–10) or `sender`
/// (v11+), and from v12 the users in `content.additional_creators`.
pub fn creators(version: &RoomVersion, create: &Pdu) -> Vec<String> {
    let rules = &version.rules.authorization;
    let mut creators: Vec<String> = primary_creator(rules, create)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if rules.additional_room_creators
        && let Some(Value::Array(additional)) = create.content.get("additional_creators")
    {
        for user in additional.iter().filter_map(Value::as_str) {
            if !creators.iter().any(|c| c == user) {
                creators.push(user.to_owned());
            }
        }
    }
    creators
}

/// The user whose first join needs no join rule: `content.creator` until
/// v10, the create event's sender from v11.
fn primary_creator<'a>(rules: &AuthorizationRules, create: &'a Pdu) -> Option<&'a str> {
    if rules.use_room_create_sender {
        Some(&create.sender)
    } else {
        create.content.get("creator").and_then(Value::as_str)
    }
}

/// The server name of a user, room or event id (`@user:server` → `server`).
fn server_of(id: &str) -> Option<&str> {
    id.split_once(':').map(|(_, server)| server)
}

fn is_user_id(id: &str) -> bool {
    <&ruma::UserId>::try_from(id).is_ok()
}

/// Rule 1: the `m.room.create` event.
fn check_create(version: &RoomVersion, event: &Pdu) -> AuthResult {
    let rules = &version.rules.authorization;
    if !event.prev_events.is_empty() {
        return deny(
            "the m.room.create event must be the room's first event: it cannot have prev_events",
        );
    }
    if rules.room_create_event_id_as_room_id {
        if event.json.contains_key("room_id") {
            return deny(format!(
                "in room version {} the m.room.create event must not have a room_id: the room id is derived from it",
                version.id
            ));
        }
    } else if server_of(&event.room_id).is_none()
        || server_of(&event.room_id) != server_of(&event.sender)
    {
        return deny(format!(
            "the room id {} is not on the server of its creator {}",
            event.room_id, event.sender
        ));
    }
    if let Some(room_version) = event.content.get("room_version")
        && room_version.as_str().and_then(RoomVersion::parse).is_none()
    {
        return deny(format!(
            "the room version {room_version} is not one this server knows"
        ));
    }
    if !rules.use_room_create_sender && event.content.get("creator").is_none() {
        return deny("the m.room.create event has no creator");
    }
    if rules.additional_room_creators
        && let Some(additional) = event.content.get("additional_creators")
    {
        let valid = additional.as_array().is_some_and(|users| {
            users
                .iter()
                .all(|user| user.as_str().is_some_and(is_user_id))
        });
        if !valid {
            return deny("additional_creators must be a list of user IDs");
        }
    }
    Ok(())
}

/// v1–5: `m.room.aliases` is allowed for the server named by its state key.
fn check_aliases(event: &Pdu) -> AuthResult {
    match &event.state_key {
        None => deny("an m.room.aliases event needs a state_key"),
        Some(server) if Some(server.as_str()) == server_of(&event.sender) => Ok(()),
        Some(server) => deny(format!(
            "only users of {server} may send its m.room.aliases, not {}",
            event.sender
        )),
    }
}

/// A state key that is a user id belongs to that user.
fn check_user_state_key(event: &Pdu) -> AuthResult {
    match &event.state_key {
        Some(key) if key.starts_with('@') && *key != event.sender => deny(format!(
            "only {key} may send state whose state_key is their user ID"
        )),
        _ => Ok(()),
    }
}

/// The room as the state shows it: what the rules after rule 1 read.
struct Room<'a> {
    version: &'a RoomVersion,
    rules: &'a AuthorizationRules,
    state: &'a dyn StateView,
    create: &'a Pdu,
    creators: Vec<String>,
    levels: Levels<'a>,
}

impl<'a> Room<'a> {
    fn new(version: &'a RoomVersion, state: &'a dyn StateView, create: &'a Pdu) -> Self {
        let rules = &version.rules.authorization;
        Self {
            version,
            rules,
            state,
            create,
            creators: creators(version, create),
            levels: Levels::new(state.get(POWER_LEVELS, ""), rules.integer_power_levels),
        }
    }

    fn is_creator(&self, user: &str) -> bool {
        self.creators.iter().any(|c| c == user)
    }

    /// A user's membership; `leave` when the state has none.
    fn membership(&self, user: &str) -> &'a str {
        self.state
            .get(MEMBER, user)
            .and_then(|member| member.content.get("membership"))
            .and_then(Value::as_str)
            .unwrap_or("leave")
    }

    /// The join rule; `invite` when the room has none.
    fn join_rule(&self) -> &'a str {
        self.state
            .get(JOIN_RULES, "")
            .and_then(|rules| rules.content.get("join_rule"))
            .and_then(Value::as_str)
            .unwrap_or("invite")
    }

    fn user_level(&self, user: &str) -> Result<PowerLevel, AuthError> {
        if self.rules.explicitly_privilege_room_creators && self.is_creator(user) {
            return Ok(PowerLevel::Infinite);
        }
        if !self.levels.exists() {
            let level = if self.is_creator(user) {
                CREATOR_LEVEL_WITHOUT_POWER_LEVELS
            } else {
                0
            };
            return Ok(PowerLevel::Int(level));
        }
        match self.levels.user(user)? {
            Some(level) => Ok(PowerLevel::Int(level)),
            None => Ok(PowerLevel::Int(self.levels.field("users_default")?)),
        }
    }

    fn require_joined(&self, user: &str, action: &str) -> AuthResult {
        match self.membership(user) {
            "join" => Ok(()),
            membership => deny(format!(
                "{user} must be in the room to {action} (their membership is {membership})"
            )),
        }
    }

    /// `level` ≥ the power level the field `field` asks for.
    fn require_level(&self, level: PowerLevel, field: &str, action: &str) -> AuthResult {
        let needed = self.levels.field(field)?;
        if level >= PowerLevel::Int(needed) {
            Ok(())
        } else {
            deny(format!(
                "the sender's power level {level} is below the {needed} needed to {action}"
            ))
        }
    }

    /// Rule 4 (v12 numbering): a room closed to federation.
    fn check_federation(&self, event: &Pdu) -> AuthResult {
        let federates = self
            .create
            .content
            .get("m.federate")
            .and_then(Value::as_bool)
            != Some(false);
        if federates || server_of(&event.sender) == server_of(&self.create.sender) {
            return Ok(());
        }
        deny(format!(
            "the room does not federate: only users of {} may take part",
            server_of(&self.create.sender).unwrap_or_default()
        ))
    }

    fn check_required_level(&self, event: &Pdu, sender_level: PowerLevel) -> AuthResult {
        let needed = self
            .levels
            .event_level(&event.kind, event.state_key.is_some())?;
        if sender_level >= PowerLevel::Int(needed) {
            return Ok(());
        }
        deny(format!(
            "the sender's power level {sender_level} is below the {needed} needed to send {}",
            event.kind
        ))
    }

    /// Rule 5: `m.room.member`.
    fn check_member(&self, event: &Pdu) -> AuthResult {
        let Some(target) = event.state_key.as_deref() else {
            return deny("a membership event needs a state_key");
        };
        let Some(membership) = event.content.get("membership") else {
            return deny("a membership event needs content.membership");
        };
        if !is_user_id(target) {
            return deny(format!(
                "the state_key {target:?} of a membership event must be a user ID"
            ));
        }
        match membership.as_str() {
            Some("join") => self.check_join(event, target),
            Some("invite") => self.check_invite(event, target),
            Some("leave") => self.check_leave(event, target),
            Some("ban") => self.check_ban(event, target),
            Some("knock") if self.rules.knocking => self.check_knock(event, target),
            _ => deny(format!(
                "the membership {membership} is not valid in room version {}",
                self.version.id
            )),
        }
    }

    fn check_join(&self, event: &Pdu, target: &str) -> AuthResult {
        let after_create_only =
            event.prev_events.len() == 1 && event.prev_events[0] == self.create.event_id;
        if after_create_only && primary_creator(self.rules, self.create) == Some(target) {
            return Ok(());
        }
        if event.sender != target {
            return deny(format!(
                "{} cannot join the room on behalf of {target}",
                event.sender
            ));
        }
        let current = self.membership(target);
        if current == "ban" {
            return deny(format!("{target} is banned from the room"));
        }
        let join_rule = self.join_rule();
        let invited_or_joined = matches!(current, "invite" | "join");
        let invite_only = join_rule == "invite" || (self.rules.knocking && join_rule == "knock");
        if invite_only && invited_or_joined {
            return Ok(());
        }
        let restricted = (self.rules.restricted_join_rule && join_rule == "restricted")
            || (self.rules.knock_restricted_join_rule && join_rule == "knock_restricted");
        if restricted {
            if invited_or_joined {
                return Ok(());
            }
            return self.check_authorised_join(event);
        }
        if join_rule == "public" {
            return Ok(());
        }
        deny(format!(
            "the room's join rule is {join_rule}: {target} needs an invite to join"
        ))
    }

    /// A restricted join vouched for by `join_authorised_via_users_server`.
    fn check_authorised_join(&self, event: &Pdu) -> AuthResult {
        let Some(authoriser) = event
            .content
            .get("join_authorised_via_users_server")
            .and_then(Value::as_str)
        else {
            return deny(
                "the room is restricted: joining needs an invite or a join_authorised_via_users_server",
            );
        };
        self.require_joined(authoriser, "authorise joins")?;
        let level = self.user_level(authoriser)?;
        let needed = self.levels.field("invite")?;
        if level >= PowerLevel::Int(needed) {
            return Ok(());
        }
        deny(format!(
            "{authoriser}, who authorised the join, has power level {level}, below the {needed} needed to invite"
        ))
    }

    fn check_invite(&self, event: &Pdu, target: &str) -> AuthResult {
        if event.content.get("third_party_invite").is_some() {
            return deny("third-party invites are not supported by this server");
        }
        self.require_joined(&event.sender, "invite users")?;
        match self.membership(target) {
            "join" => return deny(format!("{target} is already in the room")),
            "ban" => return deny(format!("{target} is banned from the room")),
            _ => {}
        }
        self.require_level(self.user_level(&event.sender)?, "invite", "invite users")
    }

    fn check_leave(&self, event: &Pdu, target: &str) -> AuthResult {
        let sender = event.sender.as_str();
        if sender == target {
            let current = self.membership(sender);
            let may_leave =
                matches!(current, "invite" | "join") || (self.rules.knocking && current == "knock");
            if may_leave {
                return Ok(());
            }
            return deny(format!(
                "{sender} cannot leave: their membership is {current}"
            ));
        }
        self.require_joined(sender, "kick or unban users")?;
        let sender_level = self.user_level(sender)?;
        if self.membership(target) == "ban" {
            self.require_level(sender_level, "ban", "unban users")?;
        }
        self.require_level(sender_level, "kick", "kick users")?;
        self.require_outranks(sender_level, target)
    }

    fn check_ban(&self, event: &Pdu, target: &str) -> AuthResult {
        self.require_joined(&event.sender, "ban users")?;
        let sender_level = self.user_level(&event.sender)?;
        self.require_level(sender_level, "ban", "ban users")?;
        self.require_outranks(sender_level, target)
    }

    fn require_outranks(&self, sender_level: PowerLevel, target: &str) -> AuthResult {
        let target_level = self.user_level(target)?;
        if target_level < sender_level {
            return Ok(());
        }
        deny(format!(
            "{target}'s power level {target_level} is not below the sender's {sender_level}"
        ))
    }

    fn check_knock(&self, event: &Pdu, target: &str) -> AuthResult {
        let join_rule = self.join_rule();
        let knockable = join_rule == "knock"
            || (self.rules.knock_restricted_join_rule && join_rule == "knock_restricted");
        if !knockable {
            return deny(format!(
                "the room's join rule is {join_rule}: knocking is not allowed"
            ));
        }
        if event.sender != target {
            return deny(format!(
                "{} cannot knock on behalf of {target}",
                event.sender
            ));
        }
        match self.membership(target) {
            current @ ("ban" | "invite" | "join") => deny(format!(
                "{target} cannot knock: their membership is {current}"
            )),
            _ => Ok(()),
        }
    }

    /// Rule 10: `m.room.power_levels`.
    fn check_power_levels(&self, event: &Pdu, sender_level: PowerLevel) -> AuthResult {
        let integer_only = self.rules.integer_power_levels;
        let with_notifications = self.rules.limit_notifications_power_levels || integer_only;
        let new = LevelMaps::parse(&event.content, integer_only, with_notifications)
            .or_else(|reason| deny(format!("invalid power levels: {reason}")))?;
        if self.rules.explicitly_privilege_room_creators
            && let Some(creator) = self
                .creators
                .iter()
                .find(|c| new.users.contains_key(c.as_str()))
        {
            return deny(format!(
                "{creator} is a room creator: creators have unlimited power and cannot be listed in users"
            ));
        }
        let Some(current) = self.state.get(POWER_LEVELS, "") else {
            return Ok(());
        };
        let current = LevelMaps::parse(&current.content, integer_only, with_notifications)
            .or_else(|reason| {
                deny(format!(
                    "the room's current power levels are malformed: {reason}"
                ))
            })?;
        check_level_fields(&current, &new, sender_level)?;
        check_level_map(
            "events",
            &current.events,
            &new.events,
            sender_level,
            |_, _| false,
        )?;
        if self.rules.limit_notifications_power_levels {
            check_level_map(
                "notifications",
                &current.notifications,
                &new.notifications,
                sender_level,
                |_, _| false,
            )?;
        }
        // Others' entries at or above the sender's level are out of reach;
        // the sender may lower their own.
        check_level_map(
            "users",
            &current.users,
            &new.users,
            sender_level,
            |user, old| user != event.sender && PowerLevel::Int(old) >= sender_level,
        )
    }

    /// v1–2: a redaction needs the redact level unless it redacts an event
    /// of the sender's own server.
    fn check_redaction(&self, event: &Pdu, sender_level: PowerLevel) -> AuthResult {
        let redact_level = self.levels.field("redact")?;
        if sender_level >= PowerLevel::Int(redact_level) {
            return Ok(());
        }
        let same_server = event
            .redacts
            .as_deref()
            .and_then(server_of)
            .is_some_and(|server| Some(server) == server_of(&event.event_id));
        if same_server {
            return Ok(());
        }
        deny(format!(
            "the sender's power level {sender_level} is below the {redact_level} needed to redact another server's events"
        ))
    }
}

/// The room's power levels event read field by field (the hot path reads a
/// few fields, not the whole `users` map).
struct Levels<'a> {
    /// `None` when the room has no power levels event; `Some(None)` when its
    /// content is not an object.
    content: Option<Option<&'a Map<String, Value>>>,
    integer_only: bool,
}

impl<'a> Levels<'a> {
    fn new(event: Option<&'a Pdu>, integer_only: bool) -> Self {
        Self {
            content: event.map(|event| event.content.as_object()),
            integer_only,
        }
    }

    fn exists(&self) -> bool {
        self.content.is_some()
    }

    fn object(&self) -> Result<Option<&'a Map<String, Value>>, AuthError> {
        match self.content {
            None => Ok(None),
            Some(Some(content)) => Ok(Some(content)),
            Some(None) => deny("the room's power levels content is not an object"),
        }
    }

    /// One of [`LEVEL_FIELDS`], or its default.
    fn field(&self, name: &str) -> Result<i64, AuthError> {
        let default = LEVEL_FIELDS
            .iter()
            .find(|(field, _)| *field == name)
            .map_or(0, |(_, default)| *default);
        match self.object()?.and_then(|content| content.get(name)) {
            None => Ok(default),
            Some(value) => self.parse(value, name),
        }
    }

    fn user(&self, user: &str) -> Result<Option<i64>, AuthError> {
        self.entry("users", user)
    }

    /// The level needed to send an event of `kind`.
    fn event_level(&self, kind: &str, is_state: bool) -> Result<i64, AuthError> {
        match self.entry("events", kind)? {
            Some(level) => Ok(level),
            None if is_state => self.field("state_default"),
            None => self.field("events_default"),
        }
    }

    fn entry(&self, map: &str, key: &str) -> Result<Option<i64>, AuthError> {
        let Some(value) = self.object()?.and_then(|content| content.get(map)) else {
            return Ok(None);
        };
        let Some(map_object) = value.as_object() else {
            return deny(format!("the room's power levels {map} is not an object"));
        };
        map_object
            .get(key)
            .map(|level| self.parse(level, &format!("{map}.{key}")))
            .transpose()
    }

    fn parse(&self, value: &Value, name: &str) -> Result<i64, AuthError> {
        parse_level(value, self.integer_only)
            .ok_or_else(|| AuthError(format!("the room's power level {name} is not an integer")))
    }
}

/// A power level value: an integer, or before v10 also a string holding one
/// (`" +050 "` is 50). Canonical JSON has no floats, so "floaty" levels of
/// v1–5 cannot occur here.
fn parse_level(value: &Value, integer_only: bool) -> Option<i64> {
    let level = match value {
        Value::Number(number) => number.as_i64()?,
        Value::String(text) if !integer_only => text.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    (-CANONICAL_INT_MAX..=CANONICAL_INT_MAX)
        .contains(&level)
        .then_some(level)
}

/// A power levels content fully parsed and validated (rules 10.1–10.3).
#[derive(Default)]
struct LevelMaps {
    fields: BTreeMap<&'static str, i64>,
    events: BTreeMap<String, i64>,
    notifications: BTreeMap<String, i64>,
    users: BTreeMap<String, i64>,
}

impl LevelMaps {
    fn parse(
        content: &Value,
        integer_only: bool,
        with_notifications: bool,
    ) -> Result<Self, String> {
        let Some(content) = content.as_object() else {
            return Err("the content is not an object".to_owned());
        };
        let mut levels = Self::default();
        for (field, _) in LEVEL_FIELDS {
            if let Some(value) = content.get(field) {
                let level = parse_level(value, integer_only)
                    .ok_or_else(|| format!("{field} is not an integer"))?;
                levels.fields.insert(field, level);
            }
        }
        levels.events = parse_level_map(content, "events", integer_only)?;
        if with_notifications {
            levels.notifications = parse_level_map(content, "notifications", integer_only)?;
        }
        levels.users = parse_level_map(content, "users", integer_only)?;
        if let Some(user) = levels.users.keys().find(|user| !is_user_id(user)) {
            return Err(format!("users lists {user:?}, which is not a user ID"));
        }
        Ok(levels)
    }
}

fn parse_level_map(
    content: &Map<String, Value>,
    name: &str,
    integer_only: bool,
) -> Result<BTreeMap<String, i64>, String> {
    let Some(value) = content.get(name) else {
        return Ok(BTreeMap::new());
    };
    let Some(map) = value.as_object() else {
        return Err(format!("{name} is not an object"));
    };
    map.iter()
        .map(|(key, value)| {
            parse_level(value, integer_only)
                .map(|level| (key.clone(), level))
                .ok_or_else(|| format!("{name}.{key} is not an integer"))
        })
        .collect()
}

/// Rule 10.6: every added, changed or removed field must be within the
/// sender's power, before and after (absent fields at their defaults).
fn check_level_fields(
    current: &LevelMaps,
    new: &LevelMaps,
    sender_level: PowerLevel,
) -> AuthResult {
    for (field, default) in LEVEL_FIELDS {
        let (old, new) = (current.fields.get(field), new.fields.get(field));
        if old == new {
            continue;
        }
        let old = old.copied().unwrap_or(default);
        let new = new.copied().unwrap_or(default);
        if PowerLevel::Int(old) > sender_level || PowerLevel::Int(new) > sender_level {
            return deny(format!(
                "changing {field} from {old} to {new} needs a power level of at least both; the sender has {sender_level}"
            ));
        }
    }
    Ok(())
}

/// Rules 10.7–10.10 for one map: a changed or removed entry is checked by
/// `old_out_of_reach` (events, notifications: above the sender; users:
/// at or above, except the sender's own), an added or changed one must not
/// exceed the sender's level.
fn check_level_map(
    name: &str,
    current: &BTreeMap<String, i64>,
    new: &BTreeMap<String, i64>,
    sender_level: PowerLevel,
    old_out_of_reach: impl Fn(&str, i64) -> bool,
) -> AuthResult {
    let keys: BTreeSet<&String> = current.keys().chain(new.keys()).collect();
    for key in keys {
        let (old, new) = (current.get(key).copied(), new.get(key).copied());
        if old == new {
            continue;
        }
        let old_too_high = old
            .is_some_and(|old| PowerLevel::Int(old) > sender_level || old_out_of_reach(key, old));
        if old_too_high {
            return deny(format!(
                "the sender's power level {sender_level} is too low to change {name}.{key} (now {})",
                old.unwrap_or_default()
            ));
        }
        if let Some(new) = new
            && PowerLevel::Int(new) > sender_level
        {
            return deny(format!(
                "the sender's power level {sender_level} is below the {new} they want to set for {name}.{key}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stringy_levels_before_v10_only() {
        for (value, lenient, strict) in [
            (json!(50), Some(50), Some(50)),
            (json!(-7), Some(-7), Some(-7)),
            (json!("50"), Some(50), None),
            (json!(" +050 "), Some(50), None),
            (json!("-100"), Some(-100), None),
            (json!("1.5"), None, None),
            (json!("ten"), None, None),
            (json!(null), None, None),
            (json!(true), None, None),
            (json!(1_i64 << 53), None, None),
        ] {
            assert_eq!(parse_level(&value, false), lenient, "{value}");
            assert_eq!(parse_level(&value, true), strict, "{value}");
        }
    }

    #[test]
    fn power_levels_read_defaults() {
        let absent = Levels::new(None, true);
        assert_eq!(absent.field("state_default"), Ok(50));
        assert_eq!(absent.event_level("m.room.name", true), Ok(50));
        assert_eq!(absent.event_level("m.room.message", false), Ok(0));
        assert_eq!(absent.user("@a:b"), Ok(None));
    }

    #[test]
    fn power_level_order_and_display() {
        let mut levels = vec![
            PowerLevel::Infinite,
            PowerLevel::Int(100),
            PowerLevel::Int(-5),
        ];
        levels.sort();
        assert_eq!(
            levels,
            [
                PowerLevel::Int(-5),
                PowerLevel::Int(100),
                PowerLevel::Infinite
            ]
        );
        assert_eq!(PowerLevel::Int(3).to_string(), "3");
        assert!(PowerLevel::Infinite.to_string().starts_with("infinite"));
    }

    #[test]
    fn server_names_keep_their_port() {
        assert_eq!(server_of("@a:example.org:8448"), Some("example.org:8448"));
        assert_eq!(server_of("$abc"), None);
    }
}
