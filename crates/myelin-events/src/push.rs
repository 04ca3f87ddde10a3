//! Push rules: the predefined rule set, the conditions and the evaluation of
//! an event for one user.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#push-rules>
//!
//! Pure: the caller hands in the event (as JSON) and the few facts about the
//! room a condition needs ([`PushContext`]); nothing here reads storage.
//!
//! Rules are kept as the spec's JSON shapes (conditions and actions as
//! [`Value`]s) so that a rule the server does not understand survives a round
//! trip through the user's `m.push_rules` unchanged; for evaluation they are
//! compiled ([`CompiledRuleset`]), and an unrecognised condition never
//! matches. Evaluating one event for every member of a room is the room
//! writer's hot path: a [`RuleCompiler`] gives conditions shared by many
//! users' rules one id, so an [`EventMemo`] evaluates each once per event
//! (`cargo bench -p myelin-benches --bench events -- push_rules`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The five kinds of rule, in the order they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    Override,
    Content,
    Room,
    Sender,
    Underride,
}

impl RuleKind {
    /// Every kind, in evaluation order.
    pub const ALL: [RuleKind; 5] = [
        RuleKind::Override,
        RuleKind::Content,
        RuleKind::Room,
        RuleKind::Sender,
        RuleKind::Underride,
    ];

    /// The kind named in a path or a ruleset key.
    pub fn parse(kind: &str) -> Option<RuleKind> {
        Some(match kind {
            "override" => RuleKind::Override,
            "content" => RuleKind::Content,
            "room" => RuleKind::Room,
            "sender" => RuleKind::Sender,
            "underride" => RuleKind::Underride,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Override => "override",
            RuleKind::Content => "content",
            RuleKind::Room => "room",
            RuleKind::Sender => "sender",
            RuleKind::Underride => "underride",
        }
    }
}

/// One push rule in the spec's JSON shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushRule {
    pub rule_id: String,
    #[serde(default)]
    pub default: bool,
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// `override` and `underride` rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Value>>,
    /// `content` rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default)]
    pub actions: Vec<Value>,
}

fn enabled_default() -> bool {
    true
}

impl PushRule {
    /// Whether this is a server-default rule (its id starts with a dot).
    pub fn is_server_default(&self) -> bool {
        self.rule_id.starts_with('.')
    }
}

/// The `global` ruleset: the rules of each kind, most important first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ruleset {
    #[serde(default)]
    pub content: Vec<PushRule>,
    #[serde(default, rename = "override")]
    pub override_: Vec<PushRule>,
    #[serde(default)]
    pub room: Vec<PushRule>,
    #[serde(default)]
    pub sender: Vec<PushRule>,
    #[serde(default)]
    pub underride: Vec<PushRule>,
}

impl Ruleset {
    pub fn rules(&self, kind: RuleKind) -> &Vec<PushRule> {
        match kind {
            RuleKind::Override => &self.override_,
            RuleKind::Content => &self.content,
            RuleKind::Room => &self.room,
            RuleKind::Sender => &self.sender,
            RuleKind::Underride => &self.underride,
        }
    }

    pub fn rules_mut(&mut self, kind: RuleKind) -> &mut Vec<PushRule> {
        match kind {
            RuleKind::Override => &mut self.override_,
            RuleKind::Content => &mut self.content,
            RuleKind::Room => &mut self.room,
            RuleKind::Sender => &mut self.sender,
            RuleKind::Underride => &mut self.underride,
        }
    }

    /// The rule `rule_id` of `kind`.
    pub fn get(&self, kind: RuleKind, rule_id: &str) -> Option<&PushRule> {
        self.rules(kind).iter().find(|r| r.rule_id == rule_id)
    }

    pub fn get_mut(&mut self, kind: RuleKind, rule_id: &str) -> Option<&mut PushRule> {
        self.rules_mut(kind)
            .iter_mut()
            .find(|r| r.rule_id == rule_id)
    }
}

/// The localpart of a user id (`@alice:example.org` → `alice`).
fn localpart(user_id: &str) -> &str {
    let rest = user_id.strip_prefix('@').unwrap_or(user_id);
    rest.split_once(':').map_or(rest, |(local, _)| local)
}

fn rule(rule_id: &str, enabled: bool, conditions: Value, actions: Value) -> PushRule {
    PushRule {
        rule_id: rule_id.to_owned(),
        default: true,
        enabled,
        conditions: Some(serde_json::from_value(conditions).unwrap_or_default()),
        pattern: None,
        actions: serde_json::from_value(actions).unwrap_or_default(),
    }
}

fn type_is(event_type: &str) -> Value {
    json!({ "kind": "event_match", "key": "type", "pattern": event_type })
}

/// The spec's server-default rules for `user_id`, in the spec's order.
///
/// `.m.rule.contains_display_name`, `.m.rule.roomnotif` and
/// `.m.rule.contains_user_name` are deprecated since v1.7 but still listed;
/// as the spec asks, they never match an event that has `m.mentions`.
pub fn default_ruleset(user_id: &str) -> Ruleset {
    let sound_default = json!({ "set_tweak": "sound", "value": "default" });
    let highlight = json!({ "set_tweak": "highlight" });
    let override_ = vec![
        rule(".m.rule.master", false, json!([]), json!([])),
        rule(
            ".m.rule.suppress_notices",
            true,
            json!([{ "kind": "event_match", "key": "content.msgtype", "pattern": "m.notice" }]),
            json!([]),
        ),
        rule(
            ".m.rule.invite_for_me",
            true,
            json!([
                type_is("m.room.member"),
                { "kind": "event_match", "key": "content.membership", "pattern": "invite" },
                { "kind": "event_match", "key": "state_key", "pattern": user_id },
            ]),
            json!(["notify", sound_default]),
        ),
        rule(
            ".m.rule.member_event",
            true,
            json!([type_is("m.room.member")]),
            json!([]),
        ),
        rule(
            ".m.rule.is_user_mention",
            true,
            json!([{
                "kind": "event_property_contains",
                "key": "content.m\\.mentions.user_ids",
                "value": user_id,
            }]),
            json!(["notify", sound_default, highlight]),
        ),
        rule(
            ".m.rule.contains_display_name",
            true,
            json!([{ "kind": "contains_display_name" }]),
            json!(["notify", sound_default, highlight]),
        ),
        rule(
            ".m.rule.is_room_mention",
            true,
            json!([
                { "kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true },
                { "kind": "sender_notification_permission", "key": "room" },
            ]),
            json!(["notify", highlight]),
        ),
        rule(
            ".m.rule.roomnotif",
            true,
            json!([
                { "kind": "event_match", "key": "content.body", "pattern": "@room" },
                { "kind": "sender_notification_permission", "key": "room" },
            ]),
            json!(["notify", highlight]),
        ),
        rule(
            ".m.rule.tombstone",
            true,
            json!([
                type_is("m.room.tombstone"),
                { "kind": "event_match", "key": "state_key", "pattern": "" },
            ]),
            json!(["notify", highlight]),
        ),
        rule(
            ".m.rule.reaction",
            true,
            json!([type_is("m.reaction")]),
            json!([]),
        ),
        rule(
            ".m.rule.room.server_acl",
            true,
            json!([
                type_is("m.room.server_acl"),
                { "kind": "event_match", "key": "state_key", "pattern": "" },
            ]),
            json!([]),
        ),
        rule(
            ".m.rule.suppress_edits",
            true,
            json!([{
                "kind": "event_property_is",
                "key": "content.m\\.relates_to.rel_type",
                "value": "m.replace",
            }]),
            json!([]),
        ),
    ];
    let content = vec![PushRule {
        rule_id: ".m.rule.contains_user_name".to_owned(),
        default: true,
        enabled: true,
        conditions: None,
        pattern: Some(localpart(user_id).to_owned()),
        actions: serde_json::from_value(json!(["notify", sound_default, highlight]))
            .unwrap_or_default(),
    }];
    let member_count_2 = json!({ "kind": "room_member_count", "is": "2" });
    let underride = vec![
        rule(
            ".m.rule.call",
            true,
            json!([type_is("m.call.invite")]),
            json!(["notify", { "set_tweak": "sound", "value": "ring" }]),
        ),
        rule(
            ".m.rule.encrypted_room_one_to_one",
            true,
            json!([member_count_2, type_is("m.room.encrypted")]),
            json!(["notify", sound_default]),
        ),
        rule(
            ".m.rule.room_one_to_one",
            true,
            json!([member_count_2, type_is("m.room.message")]),
            json!(["notify", sound_default]),
        ),
        rule(
            ".m.rule.message",
            true,
            json!([type_is("m.room.message")]),
            json!(["notify"]),
        ),
        rule(
            ".m.rule.encrypted",
            true,
            json!([type_is("m.room.encrypted")]),
            json!(["notify"]),
        ),
    ];
    Ruleset {
        content,
        override_,
        room: Vec::new(),
        sender: Vec::new(),
        underride,
    }
}

/// The user's full ruleset: the server defaults merged with what the user
/// stored (`stored` is the `global` object of their `m.push_rules`).
///
/// The user's own rules come from `stored` in its order; default rules come
/// from the spec in its order, keeping the `enabled` and `actions` the user
/// set on them. `.m.rule.master` stays above every user override; every other
/// default rule ranks below the user's rules of its kind. A stored default
/// rule the server no longer defines is dropped.
pub fn merged_ruleset(user_id: &str, stored: Option<&Ruleset>) -> Ruleset {
    let defaults = default_ruleset(user_id);
    let mut out = Ruleset::default();
    for kind in RuleKind::ALL {
        let user_rules: Vec<PushRule> = stored
            .map(|s| {
                s.rules(kind)
                    .iter()
                    .filter(|r| !r.is_server_default())
                    .cloned()
                    .map(|mut r| {
                        r.default = false;
                        r
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut default_rules: Vec<PushRule> = defaults
            .rules(kind)
            .iter()
            .map(|d| {
                let mut d = d.clone();
                if let Some(s) = stored.and_then(|s| s.get(kind, &d.rule_id)) {
                    d.enabled = s.enabled;
                    d.actions = s.actions.clone();
                }
                d
            })
            .collect();
        let target = out.rules_mut(kind);
        if kind == RuleKind::Override
            && let Some(pos) = default_rules
                .iter()
                .position(|r| r.rule_id == ".m.rule.master")
        {
            target.push(default_rules.remove(pos));
        }
        target.extend(user_rules);
        target.extend(default_rules);
    }
    out
}

/// What the room contributes to evaluating an event for one user.
#[derive(Clone, Debug, Default)]
pub struct PushContext<'a> {
    /// The user the event is evaluated for.
    pub user_id: &'a str,
    /// The user's display name in the room, if any.
    pub display_name: Option<&'a str>,
    /// Joined members of the room.
    pub member_count: u64,
    /// The sender's power level (`i64::MAX` for a room-v12 creator).
    pub sender_power_level: i64,
    /// The content of the room's `m.room.power_levels`, if any.
    pub power_levels: Option<&'a Value>,
}

/// The outcome of the first matching rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluation {
    pub rule_id: String,
    pub kind: Option<RuleKind>,
    /// The rule's actions include `notify`.
    pub notify: bool,
    /// The `highlight` tweak (absent → false; given without value → true).
    pub highlight: bool,
    /// The `sound` tweak.
    pub sound: Option<String>,
    /// Every tweak the rule sets, as given.
    pub tweaks: Map<String, Value>,
    /// The rule's actions, as given.
    pub actions: Vec<Value>,
}

impl Evaluation {
    fn from_actions(rule_id: &str, kind: RuleKind, actions: &[Value]) -> Evaluation {
        let mut eval = Evaluation {
            rule_id: rule_id.to_owned(),
            kind: Some(kind),
            actions: actions.to_vec(),
            ..Evaluation::default()
        };
        for action in actions {
            match action {
                Value::String(s) if s == "notify" => eval.notify = true,
                Value::Object(o) => {
                    let Some(Value::String(tweak)) = o.get("set_tweak") else {
                        continue;
                    };
                    let value = o.get("value").cloned();
                    match tweak.as_str() {
                        "highlight" => {
                            eval.highlight = match &value {
                                None => true,
                                Some(Value::Bool(b)) => *b,
                                Some(_) => false,
                            }
                        }
                        "sound" => {
                            eval.sound = value.as_ref().and_then(Value::as_str).map(str::to_owned)
                        }
                        _ => {}
                    }
                    eval.tweaks
                        .insert(tweak.clone(), value.unwrap_or(Value::Bool(true)));
                }
                // `dont_notify`, `coalesce` and unknown actions are ignored.
                _ => {}
            }
        }
        eval
    }
}

/// Rules the spec deprecates: they never match an event with `m.mentions`.
const LEGACY_MENTION_RULES: [&str; 3] = [
    ".m.rule.contains_display_name",
    ".m.rule.roomnotif",
    ".m.rule.contains_user_name",
];

/// Evaluates `event` for `ctx.user_id` against `ruleset`: the first enabled
/// rule that matches, in kind order, or `None`. The user's own events never
/// match. (Compiles the ruleset first: to evaluate many events, keep a
/// [`CompiledRuleset`].)
pub fn evaluate(ruleset: &Ruleset, event: &Value, ctx: &PushContext<'_>) -> Option<Evaluation> {
    CompiledRuleset::new(ruleset)
        .evaluate(event, ctx, &mut EventMemo::default())
        .cloned()
}

/// Whether one condition (in the spec's JSON shape) holds for `event`.
/// An unrecognised or malformed condition never holds.
pub fn condition_matches(condition: &Value, event: &Value, ctx: &PushContext<'_>) -> bool {
    Condition::compile(condition).matches(event, ctx)
}

/// Compiles rulesets, giving each distinct condition one id across all the
/// rulesets it compiles: the default rules of every user share most of
/// their conditions, so evaluating one event for many users evaluates each
/// shared condition once ([`EventMemo`]).
#[derive(Debug, Default)]
pub struct RuleCompiler {
    ids: std::collections::HashMap<String, u32>,
}

impl RuleCompiler {
    pub fn compile(&mut self, ruleset: &Ruleset) -> CompiledRuleset {
        CompiledRuleset::build(ruleset, &mut |condition| {
            let next = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
            *self.ids.entry(condition.to_string()).or_insert(next)
        })
    }

    /// Distinct conditions seen so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What the conditions of one [`RuleCompiler`] gave for one event: reused
/// across users, because a condition other than `contains_display_name`
/// depends only on the event and on [`PushContext`] fields that are the same
/// for every user of one event (member count, sender power, power levels).
#[derive(Debug, Default)]
pub struct EventMemo {
    /// By condition id: 0 unknown, 1 false, 2 true.
    results: Vec<u8>,
}

/// A ruleset made ready for evaluation: its enabled rules in evaluation
/// order, each condition parsed once (paths split, `room_member_count`
/// parsed, malformed conditions resolved to "never"), and each rule's
/// outcome computed once. The room writer keeps one per user and evaluates
/// every event of every room against it: this is the hot path.
#[derive(Clone, Debug, Default)]
pub struct CompiledRuleset {
    rules: Vec<CompiledRule>,
}

#[derive(Clone, Debug)]
struct CompiledRule {
    matcher: Matcher,
    /// A deprecated mention rule, skipped for events with `m.mentions`.
    legacy_mention: bool,
    outcome: Evaluation,
}

#[derive(Clone, Debug)]
enum Matcher {
    /// `override` and `underride`: every condition holds (with its id).
    Conditions(Vec<(u32, Condition)>),
    /// `content`: the pattern matches words of `content.body`.
    Content(String),
    /// `room`: the event's `room_id`.
    Room(String),
    /// `sender`: the event's `sender`.
    Sender(String),
}

/// One parsed condition.
#[derive(Clone, Debug)]
enum Condition {
    EventMatch {
        path: Vec<String>,
        pattern: String,
        /// The key is `content.body`: the pattern matches words.
        words: bool,
    },
    PropertyIs {
        path: Vec<String>,
        value: Value,
    },
    PropertyContains {
        path: Vec<String>,
        value: Value,
    },
    ContainsDisplayName,
    RoomMemberCount {
        op: CountOp,
        n: u64,
    },
    SenderNotificationPermission {
        key: String,
    },
    /// Unrecognised or malformed.
    Never,
}

#[derive(Clone, Copy, Debug)]
enum CountOp {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

impl CompiledRuleset {
    /// Compiles one ruleset on its own.
    pub fn new(ruleset: &Ruleset) -> CompiledRuleset {
        RuleCompiler::default().compile(ruleset)
    }

    fn build(ruleset: &Ruleset, id_of: &mut dyn FnMut(&Value) -> u32) -> CompiledRuleset {
        let mut rules = Vec::new();
        for kind in RuleKind::ALL {
            for rule in ruleset.rules(kind).iter().filter(|r| r.enabled) {
                let matcher = match kind {
                    RuleKind::Override | RuleKind::Underride => Matcher::Conditions(
                        rule.conditions
                            .as_deref()
                            .unwrap_or_default()
                            .iter()
                            .map(|c| (id_of(c), Condition::compile(c)))
                            .collect(),
                    ),
                    RuleKind::Content => match &rule.pattern {
                        Some(pattern) => Matcher::Content(pattern.clone()),
                        // A content rule without a pattern never matches.
                        None => Matcher::Conditions(vec![(u32::MAX, Condition::Never)]),
                    },
                    RuleKind::Room => Matcher::Room(rule.rule_id.clone()),
                    RuleKind::Sender => Matcher::Sender(rule.rule_id.clone()),
                };
                rules.push(CompiledRule {
                    matcher,
                    legacy_mention: LEGACY_MENTION_RULES.contains(&rule.rule_id.as_str()),
                    outcome: Evaluation::from_actions(&rule.rule_id, kind, &rule.actions),
                });
            }
        }
        CompiledRuleset { rules }
    }

    /// [`evaluate`] against the compiled rules: the outcome of the first
    /// rule that matches. `memo` holds condition results for this event:
    /// pass the same one for every user the event is evaluated for, with
    /// rulesets of the same [`RuleCompiler`], and a fresh one per event.
    pub fn evaluate(
        &self,
        event: &Value,
        ctx: &PushContext<'_>,
        memo: &mut EventMemo,
    ) -> Option<&Evaluation> {
        if event.get("sender").and_then(Value::as_str) == Some(ctx.user_id) {
            return None;
        }
        let has_mentions = event
            .get("content")
            .and_then(|c| c.get("m.mentions"))
            .is_some();
        self.rules
            .iter()
            .filter(|rule| !(has_mentions && rule.legacy_mention))
            .find(|rule| rule.matcher.matches(event, ctx, memo))
            .map(|rule| &rule.outcome)
    }
}

impl Matcher {
    fn matches(&self, event: &Value, ctx: &PushContext<'_>, memo: &mut EventMemo) -> bool {
        match self {
            Matcher::Conditions(conditions) => conditions
                .iter()
                .all(|(id, c)| c.matches_memo(*id, event, ctx, memo)),
            Matcher::Content(pattern) => {
                body(event).is_some_and(|body| glob_matches(pattern, body, true))
            }
            Matcher::Room(room_id) => event.get("room_id").and_then(Value::as_str) == Some(room_id),
            Matcher::Sender(sender) => event.get("sender").and_then(Value::as_str) == Some(sender),
        }
    }
}

impl Condition {
    fn compile(condition: &Value) -> Condition {
        let kind = condition.get("kind").and_then(Value::as_str);
        let key = condition.get("key").and_then(Value::as_str);
        let value = condition.get("value");
        match (kind, key) {
            (Some("event_match"), Some(key)) => {
                match condition.get("pattern").and_then(Value::as_str) {
                    Some(pattern) => Condition::EventMatch {
                        path: split_path(key),
                        pattern: pattern.to_owned(),
                        words: key == "content.body",
                    },
                    None => Condition::Never,
                }
            }
            (Some("event_property_is"), Some(key)) => match value {
                Some(value) if is_scalar(value) => Condition::PropertyIs {
                    path: split_path(key),
                    value: value.clone(),
                },
                _ => Condition::Never,
            },
            (Some("event_property_contains"), Some(key)) => match value {
                Some(value) if is_scalar(value) => Condition::PropertyContains {
                    path: split_path(key),
                    value: value.clone(),
                },
                _ => Condition::Never,
            },
            (Some("contains_display_name"), _) => Condition::ContainsDisplayName,
            (Some("room_member_count"), _) => condition
                .get("is")
                .and_then(Value::as_str)
                .and_then(parse_member_count)
                .map_or(Condition::Never, |(op, n)| Condition::RoomMemberCount {
                    op,
                    n,
                }),
            (Some("sender_notification_permission"), Some(key)) => {
                Condition::SenderNotificationPermission {
                    key: key.to_owned(),
                }
            }
            _ => Condition::Never,
        }
    }

    /// [`Condition::matches`], through the event's memo unless the result
    /// depends on the user.
    fn matches_memo(
        &self,
        id: u32,
        event: &Value,
        ctx: &PushContext<'_>,
        memo: &mut EventMemo,
    ) -> bool {
        if matches!(self, Condition::ContainsDisplayName | Condition::Never) {
            return self.matches(event, ctx);
        }
        let slot = id as usize;
        if let Some(&known) = memo.results.get(slot)
            && known != 0
        {
            return known == 2;
        }
        let result = self.matches(event, ctx);
        if memo.results.len() <= slot {
            memo.results.resize(slot + 1, 0);
        }
        memo.results[slot] = if result { 2 } else { 1 };
        result
    }

    fn matches(&self, event: &Value, ctx: &PushContext<'_>) -> bool {
        match self {
            Condition::EventMatch {
                path,
                pattern,
                words,
            } => at_path(event, path)
                .and_then(Value::as_str)
                .is_some_and(|value| glob_matches(pattern, value, *words)),
            Condition::PropertyIs { path, value } => {
                at_path(event, path).is_some_and(|actual| is_scalar(actual) && actual == value)
            }
            Condition::PropertyContains { path, value } => match at_path(event, path) {
                Some(Value::Array(items)) => items.iter().any(|v| is_scalar(v) && v == value),
                _ => false,
            },
            Condition::ContainsDisplayName => match (ctx.display_name, body(event)) {
                (Some(name), Some(body)) if !name.is_empty() => contains_literal_word(name, body),
                _ => false,
            },
            Condition::RoomMemberCount { op, n } => {
                let count = ctx.member_count;
                match op {
                    CountOp::Eq => count == *n,
                    CountOp::Lt => count < *n,
                    CountOp::Gt => count > *n,
                    CountOp::Le => count <= *n,
                    CountOp::Ge => count >= *n,
                }
            }
            Condition::SenderNotificationPermission { key } => {
                ctx.sender_power_level >= notification_level(ctx.power_levels, key)
            }
            Condition::Never => false,
        }
    }
}

/// The value at a split property path.
fn at_path<'a>(event: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(event, |value, part| value.as_object()?.get(part))
}

fn body(event: &Value) -> Option<&str> {
    event.get("content")?.get("body")?.as_str()
}

/// The power level `m.room.power_levels` requires to notify with `key`
/// (50 when unset).
pub fn notification_level(power_levels: Option<&Value>, key: &str) -> i64 {
    power_levels
        .and_then(|pl| pl.get("notifications"))
        .and_then(|n| n.get(key))
        .and_then(|v| match v {
            Value::Number(n) => n.as_i64(),
            // Rooms before version 10 may carry levels as strings.
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .unwrap_or(50)
}

/// Strings, integers within canonical JSON's range, booleans and null.
fn is_scalar(value: &Value) -> bool {
    const MAX: i64 = (1 << 53) - 1;
    match value {
        Value::String(_) | Value::Bool(_) | Value::Null => true,
        Value::Number(n) => n.as_i64().is_some_and(|i| (-MAX..=MAX).contains(&i)),
        _ => false,
    }
}

/// `is` of `room_member_count`: a decimal integer with an optional
/// `==`, `<`, `>`, `<=` or `>=` prefix (none means `==`); `None` if malformed.
fn parse_member_count(is: &str) -> Option<(CountOp, u64)> {
    let (op, number) = [
        ("==", CountOp::Eq),
        ("<=", CountOp::Le),
        (">=", CountOp::Ge),
        ("<", CountOp::Lt),
        (">", CountOp::Gt),
    ]
    .iter()
    .find_map(|(prefix, op)| is.strip_prefix(prefix).map(|rest| (*op, rest)))
    .unwrap_or((CountOp::Eq, is));
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((op, number.parse().ok()?))
}

/// Splits a dot-separated property path: `\.` is a literal dot, `\\` a
/// literal backslash, any other backslash is itself.
pub fn split_path(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some('.') | Some('\\') => current.push(chars.next().unwrap_or('\\')),
                _ => current.push('\\'),
            },
            '.' => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// The event's property at the dot-separated path `key`.
pub fn property<'a>(event: &'a Value, key: &str) -> Option<&'a Value> {
    if !key.contains('\\') {
        // No escapes (every default rule): no allocation.
        return key
            .split('.')
            .try_fold(event, |value, part| value.as_object()?.get(part));
    }
    split_path(key)
        .iter()
        .try_fold(event, |value, part| value.as_object()?.get(part))
}

#[derive(Clone, Copy, PartialEq)]
enum Token {
    Any,
    One,
    Char(char),
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn lower(s: &str) -> Vec<char> {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Glob match (`*` any run, `?` one character), case-insensitive. With
/// `words`, the pattern may match any substring that starts and ends at a
/// word boundary; otherwise it must match the whole value.
pub fn glob_matches(pattern: &str, value: &str, words: bool) -> bool {
    if !pattern.contains(['*', '?']) {
        return literal_matches(pattern, value, words);
    }
    let tokens: Vec<Token> = lower(pattern)
        .into_iter()
        .map(|c| match c {
            '*' => Token::Any,
            '?' => Token::One,
            c => Token::Char(c),
        })
        .collect();
    run(&tokens, &lower(value), words)
}

/// Whether `needle` appears literally (case-insensitively) in `haystack`
/// between word boundaries.
fn contains_literal_word(needle: &str, haystack: &str) -> bool {
    literal_matches(needle, haystack, true)
}

/// [`glob_matches`] for a pattern without wildcards, the common case (user
/// names, display names, `type` and `msgtype` values), without the
/// automaton: equality, or an occurrence between word boundaries.
fn literal_matches(needle: &str, haystack: &str, words: bool) -> bool {
    if needle.is_ascii() && haystack.is_ascii() {
        return ascii_literal_matches(needle.as_bytes(), haystack.as_bytes(), words);
    }
    if !words {
        return needle
            .chars()
            .flat_map(char::to_lowercase)
            .eq(haystack.chars().flat_map(char::to_lowercase));
    }
    let needle = lower(needle);
    let text = lower(haystack);
    if needle.is_empty() {
        let tokens: [Token; 0] = [];
        return run(&tokens, &text, true);
    }
    let n = needle.len();
    (0..text.len().saturating_sub(n - 1)).any(|i| {
        (i == 0 || !is_word_char(text[i - 1]))
            && text[i..i + n] == needle[..]
            && (i + n == text.len() || !is_word_char(text[i + n]))
    })
}

/// [`literal_matches`] on ASCII text, byte by byte.
fn ascii_literal_matches(needle: &[u8], text: &[u8], words: bool) -> bool {
    if !words {
        return needle.eq_ignore_ascii_case(text);
    }
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let n = needle.len();
    if n == 0 {
        // An empty pattern matches where a word boundary is on both sides.
        return (0..=text.len())
            .any(|i| (i == 0 || !is_word(text[i - 1])) && (i == text.len() || !is_word(text[i])));
    }
    (0..text.len().saturating_sub(n - 1)).any(|i| {
        (i == 0 || !is_word(text[i - 1]))
            && text[i..i + n].eq_ignore_ascii_case(needle)
            && (i + n == text.len() || !is_word(text[i + n]))
    })
}

/// A linear-time simulation of the pattern as an automaton: `states[j]` means
/// the first `j` tokens have matched up to the current position.
fn run(tokens: &[Token], text: &[char], words: bool) -> bool {
    let m = tokens.len();
    let close = |states: &mut Vec<bool>| {
        for j in 0..m {
            if states[j] && tokens[j] == Token::Any {
                states[j + 1] = true;
            }
        }
    };
    let boundary_before = |i: usize| i == 0 || !is_word_char(text[i - 1]);
    let boundary_after = |i: usize| i == text.len() || !is_word_char(text[i]);
    let mut states = vec![false; m + 1];
    let mut next = vec![false; m + 1];
    states[0] = true;
    close(&mut states);
    for i in 0..=text.len() {
        if words && i > 0 && boundary_before(i) {
            states[0] = true;
            close(&mut states);
        }
        if states[m] && (!words || boundary_after(i)) && (words || i == text.len()) {
            return true;
        }
        let Some(&c) = text.get(i) else {
            break;
        };
        next.iter_mut().for_each(|s| *s = false);
        for j in 0..m {
            if !states[j] {
                continue;
            }
            match tokens[j] {
                Token::Any => next[j] = true,
                Token::One => next[j + 1] = true,
                Token::Char(t) if t == c => next[j + 1] = true,
                Token::Char(_) => {}
            }
        }
        close(&mut next);
        std::mem::swap(&mut states, &mut next);
        if !words && !states.iter().any(|s| *s) {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "@alice:example.org";

    fn ctx() -> PushContext<'static> {
        PushContext {
            user_id: ME,
            display_name: Some("Alice Liddell"),
            member_count: 5,
            sender_power_level: 0,
            power_levels: None,
        }
    }

    fn msg(body: &str) -> Value {
        json!({
            "type": "m.room.message",
            "sender": "@bob:example.org",
            "room_id": "!r:example.org",
            "content": { "msgtype": "m.text", "body": body },
        })
    }

    fn eval(event: &Value, ctx: &PushContext<'_>) -> Option<Evaluation> {
        evaluate(&default_ruleset(ME), event, ctx)
    }

    fn rule_of(event: &Value, ctx: &PushContext<'_>) -> Option<String> {
        eval(event, ctx).map(|e| e.rule_id)
    }

    #[test]
    fn glob_whole_value() {
        assert!(glob_matches("lunc?*", "Lunch plans", false));
        assert!(glob_matches("lunc?*", "LUNCH", false));
        assert!(!glob_matches("lunc?*", " lunch", false));
        assert!(!glob_matches("lunc?*", "lunc", false));
        assert!(glob_matches("", "", false));
        assert!(!glob_matches("", "x", false));
        assert!(glob_matches("*", "", false));
        assert!(glob_matches("a*b*c", "aXXbYYc", false));
        assert!(!glob_matches("a*b*c", "aXXbYY", false));
    }

    #[test]
    fn glob_word_boundaries() {
        assert!(glob_matches("ex*ple", "An example event.", true));
        assert!(glob_matches("ex*ple", "exple", true));
        assert!(glob_matches("ex*ple", "An exciting triple-whammy", true));
        assert!(!glob_matches("ample", "An example", true));
        assert!(glob_matches("alice", "hey Alice!", true));
        assert!(!glob_matches("alice", "hey alice_b", true));
        assert!(glob_matches("@room", "hi @room", true));
    }

    #[test]
    fn dotted_paths_with_escapes() {
        assert_eq!(
            split_path("content.m\\.mentions.room"),
            ["content", "m.mentions", "room"]
        );
        assert_eq!(split_path("a\\\\.b"), ["a\\", "b"]);
        assert_eq!(split_path("a\\b"), ["a\\b"]);
        let ev = json!({ "content": { "m.federate": true, "a": { "b": 1 } } });
        assert_eq!(property(&ev, "content.m\\.federate"), Some(&json!(true)));
        assert_eq!(property(&ev, "content.a.b"), Some(&json!(1)));
        assert_eq!(property(&ev, "content.missing"), None);
    }

    #[test]
    fn event_match_condition() {
        let c = json!({ "kind": "event_match", "key": "content.topic", "pattern": "lunc?*" });
        let ev = |topic: Value| json!({ "type": "m.room.topic", "content": { "topic": topic } });
        assert!(condition_matches(&c, &ev(json!("Lunch plans")), &ctx()));
        assert!(!condition_matches(&c, &ev(json!(null)), &ctx()));
        let star = json!({ "kind": "event_match", "key": "content.nope", "pattern": "*" });
        assert!(!condition_matches(&star, &ev(json!("x")), &ctx()));
        let missing_pattern = json!({ "kind": "event_match", "key": "type" });
        assert!(!condition_matches(
            &missing_pattern,
            &ev(json!("x")),
            &ctx()
        ));
    }

    #[test]
    fn event_property_is_condition() {
        let c =
            json!({ "kind": "event_property_is", "key": "content.m\\.federate", "value": true });
        let ev = |v: Value| json!({ "content": { "m.federate": v } });
        assert!(condition_matches(&c, &ev(json!(true)), &ctx()));
        assert!(!condition_matches(&c, &ev(json!("true")), &ctx()));
        assert!(!condition_matches(&c, &ev(json!(1)), &ctx()));
        let null =
            json!({ "kind": "event_property_is", "key": "content.m\\.federate", "value": null });
        assert!(condition_matches(&null, &ev(json!(null)), &ctx()));
        let compound =
            json!({ "kind": "event_property_is", "key": "content.m\\.federate", "value": [1] });
        assert!(!condition_matches(&compound, &ev(json!([1])), &ctx()));
    }

    #[test]
    fn event_property_contains_condition() {
        let c = json!({
            "kind": "event_property_contains",
            "key": "content.alt_aliases",
            "value": "#myroom:example.com",
        });
        let ev = |v: Value| json!({ "content": { "alt_aliases": v } });
        assert!(condition_matches(
            &c,
            &ev(json!(["#a:b", "#myroom:example.com"])),
            &ctx()
        ));
        assert!(!condition_matches(&c, &ev(json!([":example.com"])), &ctx()));
        assert!(!condition_matches(
            &c,
            &ev(json!("#myroom:example.com")),
            &ctx()
        ));
    }

    #[test]
    fn contains_display_name_condition() {
        let c = json!({ "kind": "contains_display_name" });
        assert!(condition_matches(&c, &msg("hello alice liddell!"), &ctx()));
        assert!(!condition_matches(&c, &msg("hello alice liddellx"), &ctx()));
        let none = PushContext {
            display_name: None,
            ..ctx()
        };
        assert!(!condition_matches(&c, &msg("Alice Liddell"), &none));
        let glob = PushContext {
            display_name: Some("a*"),
            ..ctx()
        };
        assert!(!condition_matches(&c, &msg("abc"), &glob));
        assert!(condition_matches(&c, &msg("a* b"), &glob));
    }

    #[test]
    fn room_member_count_condition() {
        let cond = |is: &str| json!({ "kind": "room_member_count", "is": is });
        let with = |n| PushContext {
            member_count: n,
            ..ctx()
        };
        let ev = msg("x");
        assert!(condition_matches(&cond("2"), &ev, &with(2)));
        assert!(condition_matches(&cond("==2"), &ev, &with(2)));
        assert!(!condition_matches(&cond("2"), &ev, &with(3)));
        assert!(condition_matches(&cond("<3"), &ev, &with(2)));
        assert!(!condition_matches(&cond("<2"), &ev, &with(2)));
        assert!(condition_matches(&cond(">2"), &ev, &with(3)));
        assert!(condition_matches(&cond("<=2"), &ev, &with(2)));
        assert!(condition_matches(&cond(">=3"), &ev, &with(3)));
        assert!(!condition_matches(&cond(">=4"), &ev, &with(3)));
        assert!(!condition_matches(&cond("x"), &ev, &with(3)));
        assert!(!condition_matches(&cond(""), &ev, &with(0)));
        assert!(!condition_matches(&cond("=<2"), &ev, &with(2)));
    }

    #[test]
    fn sender_notification_permission_condition() {
        let c = json!({ "kind": "sender_notification_permission", "key": "room" });
        let ev = msg("x");
        let pl = json!({ "notifications": { "room": 20 } });
        let low = PushContext {
            sender_power_level: 10,
            power_levels: Some(&pl),
            ..ctx()
        };
        let high = PushContext {
            sender_power_level: 20,
            power_levels: Some(&pl),
            ..ctx()
        };
        assert!(!condition_matches(&c, &ev, &low));
        assert!(condition_matches(&c, &ev, &high));
        let default = PushContext {
            sender_power_level: 49,
            ..ctx()
        };
        assert!(!condition_matches(&c, &ev, &default));
        let default = PushContext {
            sender_power_level: 50,
            ..ctx()
        };
        assert!(condition_matches(&c, &ev, &default));
    }

    #[test]
    fn unknown_condition_never_matches() {
        let c = json!({ "kind": "org.example.whatever" });
        assert!(!condition_matches(&c, &msg("x"), &ctx()));
    }

    #[test]
    fn default_rule_ids_in_spec_order() {
        let rs = default_ruleset(ME);
        let ids = |v: &Vec<PushRule>| v.iter().map(|r| r.rule_id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&rs.override_),
            [
                ".m.rule.master",
                ".m.rule.suppress_notices",
                ".m.rule.invite_for_me",
                ".m.rule.member_event",
                ".m.rule.is_user_mention",
                ".m.rule.contains_display_name",
                ".m.rule.is_room_mention",
                ".m.rule.roomnotif",
                ".m.rule.tombstone",
                ".m.rule.reaction",
                ".m.rule.room.server_acl",
                ".m.rule.suppress_edits",
            ]
        );
        assert_eq!(ids(&rs.content), [".m.rule.contains_user_name"]);
        assert_eq!(rs.content[0].pattern.as_deref(), Some("alice"));
        assert_eq!(
            ids(&rs.underride),
            [
                ".m.rule.call",
                ".m.rule.encrypted_room_one_to_one",
                ".m.rule.room_one_to_one",
                ".m.rule.message",
                ".m.rule.encrypted",
            ]
        );
        assert!(rs.room.is_empty() && rs.sender.is_empty());
        assert!(!rs.override_[0].enabled);
        assert!(rs.override_.iter().skip(1).all(|r| r.enabled && r.default));
    }

    #[test]
    fn rule_master() {
        let mut rs = default_ruleset(ME);
        rs.override_[0].enabled = true;
        let e = evaluate(&rs, &msg("hi"), &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.master");
        assert!(!e.notify);
    }

    #[test]
    fn rule_suppress_notices() {
        let mut ev = msg("alice");
        ev["content"]["msgtype"] = json!("m.notice");
        let e = eval(&ev, &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.suppress_notices");
        assert!(!e.notify);
    }

    #[test]
    fn rule_invite_for_me_and_member_event() {
        let invite = |target: &str| {
            json!({
                "type": "m.room.member", "sender": "@bob:example.org", "state_key": target,
                "content": { "membership": "invite" },
            })
        };
        let e = eval(&invite(ME), &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.invite_for_me");
        assert!(e.notify && !e.highlight);
        assert_eq!(e.sound.as_deref(), Some("default"));
        let e = eval(&invite("@carol:example.org"), &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.member_event");
        assert!(!e.notify);
    }

    #[test]
    fn rule_is_user_mention() {
        let mut ev = msg("hey");
        ev["content"]["m.mentions"] = json!({ "user_ids": [ME] });
        let e = eval(&ev, &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.is_user_mention");
        assert!(e.notify && e.highlight);
        assert_eq!(e.sound.as_deref(), Some("default"));
    }

    #[test]
    fn rule_contains_display_name_only_without_mentions() {
        let e = eval(&msg("hi Alice Liddell"), &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.contains_display_name");
        assert!(e.highlight);
        let mut ev = msg("hi Alice Liddell");
        ev["content"]["m.mentions"] = json!({});
        assert_eq!(rule_of(&ev, &ctx()).as_deref(), Some(".m.rule.message"));
    }

    #[test]
    fn rule_is_room_mention() {
        let mut ev = msg("everyone");
        ev["content"]["m.mentions"] = json!({ "room": true });
        let admin = PushContext {
            sender_power_level: 100,
            ..ctx()
        };
        let e = eval(&ev, &admin).unwrap();
        assert_eq!(e.rule_id, ".m.rule.is_room_mention");
        assert!(e.notify && e.highlight && e.sound.is_none());
        assert_eq!(rule_of(&ev, &ctx()).as_deref(), Some(".m.rule.message"));
    }

    #[test]
    fn rule_roomnotif() {
        let admin = PushContext {
            sender_power_level: 100,
            ..ctx()
        };
        assert_eq!(
            rule_of(&msg("hey @room"), &admin).as_deref(),
            Some(".m.rule.roomnotif")
        );
        assert_eq!(
            rule_of(&msg("hey @room"), &ctx()).as_deref(),
            Some(".m.rule.message")
        );
    }

    #[test]
    fn rule_tombstone() {
        let ev = |sk: &str| {
            json!({ "type": "m.room.tombstone", "sender": "@bob:example.org", "state_key": sk,
                    "content": { "body": "gone" } })
        };
        let e = eval(&ev(""), &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.tombstone");
        assert!(e.highlight);
        assert_eq!(eval(&ev("x"), &ctx()), None);
        let no_sk =
            json!({ "type": "m.room.tombstone", "sender": "@bob:example.org", "content": {} });
        assert_eq!(eval(&no_sk, &ctx()), None);
    }

    #[test]
    fn rule_reaction() {
        let ev = json!({ "type": "m.reaction", "sender": "@bob:example.org", "content": {} });
        let e = eval(&ev, &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.reaction");
        assert!(!e.notify);
    }

    #[test]
    fn rule_room_server_acl() {
        let ev = json!({ "type": "m.room.server_acl", "sender": "@bob:example.org", "state_key": "", "content": {} });
        assert_eq!(
            rule_of(&ev, &ctx()).as_deref(),
            Some(".m.rule.room.server_acl")
        );
    }

    #[test]
    fn rule_suppress_edits() {
        let mut ev = msg("* alice");
        ev["content"]["m.relates_to"] = json!({ "rel_type": "m.replace", "event_id": "$x" });
        let e = eval(&ev, &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.suppress_edits");
        assert!(!e.notify);
    }

    #[test]
    fn rule_contains_user_name() {
        let e = eval(&msg("ping ALICE."), &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.contains_user_name");
        assert!(e.highlight);
        assert_eq!(
            rule_of(&msg("malice"), &ctx()).as_deref(),
            Some(".m.rule.message")
        );
    }

    #[test]
    fn rule_call() {
        let ev = json!({ "type": "m.call.invite", "sender": "@bob:example.org", "content": {} });
        let e = eval(&ev, &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.call");
        assert_eq!(e.sound.as_deref(), Some("ring"));
    }

    #[test]
    fn rules_one_to_one_and_encrypted() {
        let two = PushContext {
            member_count: 2,
            ..ctx()
        };
        let enc =
            json!({ "type": "m.room.encrypted", "sender": "@bob:example.org", "content": {} });
        assert_eq!(
            rule_of(&enc, &two).as_deref(),
            Some(".m.rule.encrypted_room_one_to_one")
        );
        assert_eq!(rule_of(&enc, &ctx()).as_deref(), Some(".m.rule.encrypted"));
        let e = eval(&msg("hi"), &two).unwrap();
        assert_eq!(e.rule_id, ".m.rule.room_one_to_one");
        assert_eq!(e.sound.as_deref(), Some("default"));
        let e = eval(&msg("hi"), &ctx()).unwrap();
        assert_eq!(e.rule_id, ".m.rule.message");
        assert!(e.notify && !e.highlight && e.sound.is_none());
    }

    #[test]
    fn own_events_and_unmatched_events() {
        let mut ev = msg("alice");
        ev["sender"] = json!(ME);
        assert_eq!(eval(&ev, &ctx()), None);
        let other = json!({ "type": "m.room.topic", "sender": "@bob:example.org", "state_key": "", "content": {} });
        assert_eq!(eval(&other, &ctx()), None);
    }

    #[test]
    fn room_and_sender_rules() {
        let mut rs = default_ruleset(ME);
        rs.room.push(PushRule {
            rule_id: "!r:example.org".into(),
            default: false,
            enabled: true,
            conditions: None,
            pattern: None,
            actions: vec![],
        });
        assert_eq!(
            evaluate(&rs, &msg("hi"), &ctx())
                .map(|e| e.rule_id)
                .as_deref(),
            Some("!r:example.org")
        );
        rs.room.clear();
        rs.sender.push(PushRule {
            rule_id: "@bob:example.org".into(),
            default: false,
            enabled: true,
            conditions: None,
            pattern: None,
            actions: vec![
                json!("notify"),
                json!({ "set_tweak": "highlight", "value": true }),
            ],
        });
        let e = evaluate(&rs, &msg("hi"), &ctx()).unwrap();
        assert_eq!(e.kind, Some(RuleKind::Sender));
        assert!(e.highlight);
    }

    #[test]
    fn merge_keeps_user_rules_and_default_overrides() {
        let mut stored = Ruleset::default();
        stored.override_.push(PushRule {
            rule_id: "mine".into(),
            default: true, // not trusted
            enabled: true,
            conditions: Some(vec![]),
            pattern: None,
            actions: vec![json!("notify")],
        });
        let mut msg_rule = default_ruleset(ME).underride[3].clone();
        msg_rule.enabled = false;
        msg_rule.actions = vec![];
        stored.underride.push(msg_rule);
        let merged = merged_ruleset(ME, Some(&stored));
        assert_eq!(merged.override_[0].rule_id, ".m.rule.master");
        assert_eq!(merged.override_[1].rule_id, "mine");
        assert!(!merged.override_[1].default);
        assert_eq!(
            merged.override_.len(),
            default_ruleset(ME).override_.len() + 1
        );
        let m = merged.get(RuleKind::Underride, ".m.rule.message").unwrap();
        assert!(!m.enabled && m.actions.is_empty());
        assert_eq!(merged_ruleset(ME, None), default_ruleset(ME));
    }

    #[test]
    fn historical_actions_are_ignored() {
        let e = Evaluation::from_actions(
            "x",
            RuleKind::Override,
            &[json!("dont_notify"), json!("coalesce")],
        );
        assert!(!e.notify && !e.highlight);
    }

    #[test]
    fn one_memo_across_users_gives_each_their_own_outcome() {
        // Shared conditions are evaluated once; user-specific ones (a
        // mention of one user, a display name, a user's own room rule) still
        // decide per user.
        let users = [
            "@alice:example.org",
            "@carol:example.org",
            "@dave:example.org",
        ];
        let mut custom = default_ruleset(users[2]);
        custom.room.push(PushRule {
            rule_id: "!r:example.org".to_owned(),
            default: false,
            enabled: true,
            conditions: None,
            pattern: None,
            actions: Vec::new(),
        });
        let mut compiler = RuleCompiler::default();
        let compiled = [
            compiler.compile(&default_ruleset(users[0])),
            compiler.compile(&default_ruleset(users[1])),
            compiler.compile(&custom),
        ];
        assert!(compiler.len() < 3 * 20, "shared conditions share ids");
        let mut event = msg("hi carol liddell");
        event["content"]["m.mentions"] = json!({ "user_ids": [users[0]] });
        let names = [None, Some("Carol Liddell"), None];
        let mut memo = EventMemo::default();
        for ((user, rules), name) in users.iter().zip(&compiled).zip(names) {
            let ctx = PushContext {
                user_id: user,
                display_name: name,
                ..ctx()
            };
            let shared = rules.evaluate(&event, &ctx, &mut memo).cloned();
            let alone = rules
                .evaluate(&event, &ctx, &mut EventMemo::default())
                .cloned();
            assert_eq!(shared, alone, "{user}");
        }
        let mut outcome = |i: usize| {
            let ctx = PushContext {
                user_id: users[i],
                display_name: names[i],
                ..ctx()
            };
            compiled[i]
                .evaluate(&event, &ctx, &mut memo)
                .map(|e| (e.rule_id.clone(), e.highlight))
        };
        assert_eq!(outcome(0), Some((".m.rule.is_user_mention".into(), true)));
        // m.mentions disables the legacy display-name rule.
        assert_eq!(outcome(1), Some((".m.rule.message".into(), false)));
        assert_eq!(outcome(2), Some(("!r:example.org".into(), false)));
    }
}
