//! `createRoom`: the events a new room starts with, in the spec's order.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3createroom>

use myelin_core::ids::parse_user_id;
use myelin_core::secrets::random_alphanumeric;
use myelin_core::{ErrorKind, MatrixError, MatrixResult};
use myelin_events::{DEFAULT_ROOM_VERSION, RoomVersion};
use serde_json::{Map, Value, json};

/// Invitees of one `createRoom` at most.
pub const INVITES_MAX: usize = 100;
/// `initial_state` events of one `createRoom` at most.
pub const INITIAL_STATE_MAX: usize = 100;
/// Length of the random part of a room id (v1–11).
const ROOM_ID_RANDOM_LENGTH: usize = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

impl Preset {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "private_chat" => Some(Self::PrivateChat),
            "trusted_private_chat" => Some(Self::TrustedPrivateChat),
            "public_chat" => Some(Self::PublicChat),
            _ => None,
        }
    }
}

/// A random room id of the v1–11 form `!<random>:<server>`.
pub(crate) fn random_room_id(server_name: &str) -> String {
    format!(
        "!{}:{server_name}",
        random_alphanumeric(ROOM_ID_RANDOM_LENGTH)
    )
}

/// One `initial_state` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct InitialState {
    pub kind: String,
    pub state_key: String,
    pub content: Map<String, Value>,
}

/// A validated `createRoom` request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CreateRoomRequest {
    /// `public` makes `public_chat` the default preset.
    pub public: bool,
    pub room_alias_name: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<String>,
    pub room_version: Option<String>,
    pub creation_content: Map<String, Value>,
    pub initial_state: Vec<InitialState>,
    pub preset: Option<Preset>,
    pub is_direct: bool,
    pub power_level_content_override: Option<Map<String, Value>>,
    /// The creator's profile, copied into their join event.
    pub creator_displayname: Option<String>,
    pub creator_avatar_url: Option<String>,
}

/// An event of the plan after the create event.
pub(crate) struct Planned {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Map<String, Value>,
}

pub(crate) struct Plan {
    pub version: RoomVersion,
    /// `None` when the create event names the room (v12).
    pub room_id: Option<String>,
    pub create_content: Map<String, Value>,
    pub alias: Option<String>,
    pub events: Vec<Planned>,
}

fn state(kind: &str, content: Value) -> Planned {
    let Value::Object(content) = content else {
        unreachable!("built from json!({{…}})")
    };
    Planned {
        kind: kind.to_owned(),
        state_key: Some(String::new()),
        content,
    }
}

/// The events of a new room, validated.
pub(crate) fn plan(server_name: &str, creator: &str, req: CreateRoomRequest) -> MatrixResult<Plan> {
    let version_id = req.room_version.as_deref().unwrap_or(DEFAULT_ROOM_VERSION);
    let version = RoomVersion::parse(version_id).ok_or_else(|| {
        MatrixError::new(
            ErrorKind::UnsupportedRoomVersion,
            format!("Room version {version_id} is not supported"),
        )
    })?;
    if req.invite.len() > INVITES_MAX {
        return Err(MatrixError::bad_json(format!(
            "At most {INVITES_MAX} invitees"
        )));
    }
    if req.initial_state.len() > INITIAL_STATE_MAX {
        return Err(MatrixError::bad_json(format!(
            "At most {INITIAL_STATE_MAX} initial_state events"
        )));
    }
    for invitee in &req.invite {
        let id = parse_user_id(invitee)
            .ok_or_else(|| MatrixError::invalid_param(format!("{invitee} is not a user id")))?;
        if id.server_name().as_str() != server_name {
            return Err(MatrixError::forbidden(
                "Inviting users of other servers needs federation, which this server does not do yet",
            ));
        }
    }
    let preset = req.preset.unwrap_or(if req.public {
        Preset::PublicChat
    } else {
        Preset::PrivateChat
    });
    let rules = &version.rules.authorization;
    let creators_outrank = rules.explicitly_privilege_room_creators;

    // The create event.
    let mut create_content = req.creation_content.clone();
    create_content.remove("room_version");
    create_content.remove("creator");
    create_content.insert("room_version".into(), json!(version.id));
    if !rules.use_room_create_sender {
        create_content.insert("creator".into(), json!(creator));
    }
    if rules.additional_room_creators
        && preset == Preset::TrustedPrivateChat
        && !req.invite.is_empty()
    {
        // Trusted private chats make every invitee a creator too.
        let mut creators: Vec<Value> = create_content
            .get("additional_creators")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        creators.extend(req.invite.iter().map(|u| json!(u)));
        create_content.insert("additional_creators".into(), Value::Array(creators));
    }
    let room_id = (!rules.room_create_event_id_as_room_id).then(|| random_room_id(server_name));

    let alias = match &req.room_alias_name {
        Some(name) => {
            if name.is_empty()
                || name.contains(':')
                || name.chars().any(char::is_whitespace)
                || name.contains('#')
            {
                return Err(MatrixError::invalid_param(
                    "room_alias_name may not be empty or contain ':', '#' or spaces",
                ));
            }
            let alias = format!("#{name}:{server_name}");
            if alias.len() > 255 {
                return Err(MatrixError::invalid_param(
                    "The room alias is longer than 255 bytes",
                ));
            }
            Some(alias)
        }
        None => None,
    };

    let mut events = Vec::new();
    // The creator joins.
    let mut join = json!({ "membership": "join" });
    if let Some(name) = &req.creator_displayname {
        join["displayname"] = json!(name);
    }
    if let Some(url) = &req.creator_avatar_url {
        join["avatar_url"] = json!(url);
    }
    let Value::Object(join) = join else {
        unreachable!()
    };
    events.push(Planned {
        kind: "m.room.member".into(),
        state_key: Some(creator.to_owned()),
        content: join,
    });

    // Power levels, unless initial_state brings its own.
    let initial_pl = req
        .initial_state
        .iter()
        .find(|s| s.kind == "m.room.power_levels" && s.state_key.is_empty());
    match initial_pl {
        Some(pl) => events.push(Planned {
            kind: pl.kind.clone(),
            state_key: Some(String::new()),
            content: pl.content.clone(),
        }),
        None => {
            let mut users = Map::new();
            if !creators_outrank {
                users.insert(creator.to_owned(), json!(100));
            }
            if preset == Preset::TrustedPrivateChat && !creators_outrank {
                for invitee in &req.invite {
                    users.insert(invitee.clone(), json!(100));
                }
            }
            let mut content = json!({
                "users": users,
                "users_default": 0,
                "events": {
                    "m.room.name": 50,
                    "m.room.power_levels": 100,
                    "m.room.history_visibility": 100,
                    "m.room.canonical_alias": 50,
                    "m.room.avatar": 50,
                    "m.room.tombstone": 100,
                    "m.room.server_acl": 100,
                    "m.room.encryption": 100,
                },
                "events_default": 0,
                "state_default": 50,
                "ban": 50,
                "kick": 50,
                "redact": 50,
                "invite": 50,
                "notifications": { "room": 50 },
            });
            if let Some(overrides) = &req.power_level_content_override {
                for (k, v) in overrides {
                    content[k] = v.clone();
                }
            }
            events.push(state("m.room.power_levels", content));
        }
    }
    if let Some(alias) = &alias {
        events.push(state("m.room.canonical_alias", json!({ "alias": alias })));
    }
    let (join_rule, guest_access) = match preset {
        Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", "can_join"),
        Preset::PublicChat => ("public", "forbidden"),
    };
    // A preset's event that initial_state also sets is left out: the
    // initial_state one would replace it at once.
    let overridden = |kind: &str| {
        req.initial_state
            .iter()
            .any(|s| s.kind == kind && s.state_key.is_empty())
    };
    for (kind, content) in [
        ("m.room.join_rules", json!({ "join_rule": join_rule })),
        (
            "m.room.history_visibility",
            json!({ "history_visibility": "shared" }),
        ),
        (
            "m.room.guest_access",
            json!({ "guest_access": guest_access }),
        ),
    ] {
        if !overridden(kind) {
            events.push(state(kind, content));
        }
    }
    for s in &req.initial_state {
        if s.kind == "m.room.create" {
            return Err(MatrixError::new(
                ErrorKind::InvalidRoomState,
                "initial_state may not contain m.room.create",
            ));
        }
        if s.kind == "m.room.power_levels" && s.state_key.is_empty() {
            continue;
        }
        events.push(Planned {
            kind: s.kind.clone(),
            state_key: Some(s.state_key.clone()),
            content: s.content.clone(),
        });
    }
    if let Some(name) = &req.name {
        events.push(state("m.room.name", json!({ "name": name })));
    }
    if let Some(topic) = &req.topic {
        events.push(state(
            "m.room.topic",
            json!({ "topic": topic, "m.topic": { "m.text": [{ "mimetype": "text/plain", "body": topic }] } }),
        ));
    }
    for invitee in &req.invite {
        let mut content = json!({ "membership": "invite" });
        if req.is_direct {
            content["is_direct"] = json!(true);
        }
        let Value::Object(content) = content else {
            unreachable!()
        };
        events.push(Planned {
            kind: "m.room.member".into(),
            state_key: Some(invitee.clone()),
            content,
        });
    }
    Ok(Plan {
        version,
        room_id,
        create_content,
        alias,
        events,
    })
}
