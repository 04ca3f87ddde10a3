//! Push rules: `/pushrules/…`. The user's rules live in the global account
//! data `m.push_rules` (`{"global": ruleset}`, the full ruleset with the
//! server defaults merged in), so `/sync` delivers every change; clients
//! cannot write that account data directly (see `account_data.rs`).
//! The rules themselves, and their evaluation, are `myelin_events::push`.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#push-rules-api>

use axum::Json;
use axum::extract::State;
use myelin_core::{ErrorKind, MatrixError};
use myelin_events::push::{PushRule, RuleKind, Ruleset};
use myelin_rooms::push::{PUSH_RULES_TYPE, load_ruleset};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::client::account_data::write;
use crate::error::ApiResult;
use crate::extract::{MatrixJson, MatrixPath, MatrixQuery};
use crate::state::AppState;

/// User-defined rules one kind may hold at most.
pub const USER_RULES_PER_KIND_MAX: usize = 200;
/// Longest rule id accepted, in bytes.
pub const RULE_ID_LENGTH_MAX: usize = 255;
/// Conditions one rule may carry at most.
pub const CONDITIONS_PER_RULE_MAX: usize = 32;
/// Actions one rule may carry at most.
pub const ACTIONS_PER_RULE_MAX: usize = 32;
/// Longest `pattern` of a content rule, in bytes.
pub const PATTERN_LENGTH_MAX: usize = 1024;

/// The user's full ruleset: the server defaults merged with what they stored.
pub async fn load(state: &AppState, user_id: &str) -> ApiResult<Ruleset> {
    Ok(load_ruleset(state.storage.as_ref(), user_id).await?)
}

async fn store(state: &AppState, user_id: &str, ruleset: &Ruleset) -> ApiResult<()> {
    let global = serde_json::to_value(ruleset).map_err(MatrixError::internal)?;
    write(
        state,
        user_id,
        None,
        PUSH_RULES_TYPE,
        &json!({ "global": global }),
    )
    .await
}

fn not_found() -> MatrixError {
    MatrixError::not_found("The push rule was not found.")
}

fn parse_scope_kind(scope: &str, kind: &str) -> ApiResult<RuleKind> {
    if scope != "global" {
        return Err(
            MatrixError::invalid_param("Unknown push rule scope; only 'global' exists").into(),
        );
    }
    RuleKind::parse(kind).ok_or_else(|| MatrixError::invalid_param("Unknown push rule kind").into())
}

fn ruleset_json(ruleset: &Ruleset) -> ApiResult<Value> {
    serde_json::to_value(ruleset).map_err(|e| MatrixError::internal(e).into())
}

/// `GET /_matrix/client/v3/pushrules/`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrules>
pub async fn get_all(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<Value>> {
    let ruleset = load(&state, &me.user_id).await?;
    Ok(Json(json!({ "global": ruleset_json(&ruleset)? })))
}

/// `GET /_matrix/client/v3/pushrules/global/`: the `global` ruleset alone.
pub async fn get_global(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Json<Value>> {
    let ruleset = load(&state, &me.user_id).await?;
    Ok(Json(ruleset_json(&ruleset)?))
}

type RulePath = (String, String, String);

/// `GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesscopekindruleid>
pub async fn get_rule(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((scope, kind, rule_id)): MatrixPath<RulePath>,
) -> ApiResult<Json<Value>> {
    let kind = parse_scope_kind(&scope, &kind)?;
    let ruleset = load(&state, &me.user_id).await?;
    let rule = ruleset.get(kind, &rule_id).ok_or_else(not_found)?;
    Ok(Json(
        serde_json::to_value(rule).map_err(MatrixError::internal)?,
    ))
}

/// `DELETE /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}`: server
/// default rules cannot be deleted (400 `M_INVALID_PARAM`; they can be
/// disabled instead).
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3pushrulesscopekindruleid>
pub async fn delete_rule(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((scope, kind, rule_id)): MatrixPath<RulePath>,
) -> ApiResult<Json<Value>> {
    let kind = parse_scope_kind(&scope, &kind)?;
    let mut ruleset = load(&state, &me.user_id).await?;
    let rules = ruleset.rules_mut(kind);
    let pos = rules
        .iter()
        .position(|r| r.rule_id == rule_id)
        .ok_or_else(not_found)?;
    if rules[pos].is_server_default() {
        return Err(
            MatrixError::invalid_param("Server-default push rules cannot be deleted").into(),
        );
    }
    rules.remove(pos);
    store(&state, &me.user_id, &ruleset).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct PlacementQuery {
    before: Option<String>,
    after: Option<String>,
}

fn check_rule_id(rule_id: &str) -> ApiResult<()> {
    if rule_id.is_empty() || rule_id.len() > RULE_ID_LENGTH_MAX {
        return Err(MatrixError::invalid_param("Invalid push rule id").into());
    }
    if rule_id.starts_with('.') {
        return Err(MatrixError::invalid_param(
            "Push rule ids starting with '.' are reserved for server-default rules",
        )
        .into());
    }
    if rule_id.contains('/') || rule_id.contains('\\') {
        return Err(MatrixError::invalid_param("Push rule ids may not contain '/' or '\\'").into());
    }
    Ok(())
}

/// Validates `actions`, dropping the historical `dont_notify` and `coalesce`.
fn parse_actions(body: &Map<String, Value>) -> ApiResult<Vec<Value>> {
    let Some(actions) = body.get("actions") else {
        return Err(MatrixError::missing_param("'actions' is required").into());
    };
    let Value::Array(actions) = actions else {
        return Err(MatrixError::bad_json("'actions' must be an array").into());
    };
    if actions.len() > ACTIONS_PER_RULE_MAX {
        return Err(MatrixError::invalid_param("Too many actions").into());
    }
    let mut out = Vec::with_capacity(actions.len());
    for action in actions {
        match action {
            Value::String(s) if s == "notify" => out.push(action.clone()),
            Value::String(s) if s == "dont_notify" || s == "coalesce" => {}
            Value::Object(o) if o.get("set_tweak").is_some_and(Value::is_string) => {
                out.push(action.clone())
            }
            _ => {
                return Err(MatrixError::new(
                    ErrorKind::InvalidParam,
                    format!("Unrecognised push rule action: {action}"),
                )
                .into());
            }
        }
    }
    Ok(out)
}

/// Builds the new rule of `kind` from the PUT body.
fn parse_rule(kind: RuleKind, rule_id: &str, body: &Map<String, Value>) -> ApiResult<PushRule> {
    let actions = parse_actions(body)?;
    let mut rule = PushRule {
        rule_id: rule_id.to_owned(),
        default: false,
        enabled: true,
        conditions: None,
        pattern: None,
        actions,
    };
    match kind {
        RuleKind::Override | RuleKind::Underride => {
            let conditions = match body.get("conditions") {
                None => Vec::new(),
                Some(Value::Array(c)) => c.clone(),
                Some(_) => {
                    return Err(MatrixError::bad_json("'conditions' must be an array").into());
                }
            };
            if conditions.len() > CONDITIONS_PER_RULE_MAX {
                return Err(MatrixError::invalid_param("Too many conditions").into());
            }
            if !conditions
                .iter()
                .all(|c| c.get("kind").is_some_and(Value::is_string))
            {
                return Err(MatrixError::bad_json("Each condition needs a string 'kind'").into());
            }
            rule.conditions = Some(conditions);
        }
        RuleKind::Content => match body.get("pattern") {
            Some(Value::String(p)) if p.len() <= PATTERN_LENGTH_MAX => {
                rule.pattern = Some(p.clone())
            }
            Some(Value::String(_)) => {
                return Err(MatrixError::invalid_param("'pattern' is too long").into());
            }
            Some(_) => return Err(MatrixError::bad_json("'pattern' must be a string").into()),
            None => {
                return Err(MatrixError::missing_param("Content rules need a 'pattern'").into());
            }
        },
        RuleKind::Room | RuleKind::Sender => {}
    }
    Ok(rule)
}

/// `PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}`: creates or
/// replaces a user-defined rule. A new rule without `before`/`after` becomes
/// the most important user rule of its kind; an existing one keeps its place
/// (and its `enabled`) unless `before`/`after` move it. `before` wins if
/// both are given. Neither may name a server-default or unknown rule (400).
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesscopekindruleid>
pub async fn put_rule(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((scope, kind, rule_id)): MatrixPath<RulePath>,
    MatrixQuery(placement): MatrixQuery<PlacementQuery>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let kind = parse_scope_kind(&scope, &kind)?;
    check_rule_id(&rule_id)?;
    let mut rule = parse_rule(kind, &rule_id, &body)?;
    let anchor = placement
        .before
        .as_deref()
        .map(|id| (id, true))
        .or(placement.after.as_deref().map(|id| (id, false)));
    if let Some((anchor_id, _)) = anchor {
        if anchor_id.starts_with('.') {
            return Err(MatrixError::unknown(
                "Rules cannot be placed relative to a server-default rule",
            )
            .into());
        }
        if anchor_id == rule_id {
            return Err(MatrixError::unknown("A rule cannot be placed relative to itself").into());
        }
    }

    let mut ruleset = load(&state, &me.user_id).await?;
    let rules = ruleset.rules_mut(kind);
    let existing = rules.iter().position(|r| r.rule_id == rule_id);
    if let Some(pos) = existing {
        rule.enabled = rules[pos].enabled;
    }
    match (existing, anchor) {
        (Some(pos), None) => rules[pos] = rule,
        (existing, anchor) => {
            if let Some(pos) = existing {
                rules.remove(pos);
            } else if rules.iter().filter(|r| !r.is_server_default()).count()
                >= USER_RULES_PER_KIND_MAX
            {
                return Err(MatrixError::invalid_param("Too many push rules of this kind").into());
            }
            let index = match anchor {
                Some((anchor_id, before)) => {
                    let at = rules
                        .iter()
                        .position(|r| r.rule_id == anchor_id)
                        .ok_or_else(|| {
                            MatrixError::unknown(format!(
                                "before/after rule not found: {anchor_id}"
                            ))
                        })?;
                    if before { at } else { at + 1 }
                }
                // The most important user rule: after `.m.rule.master`.
                None => rules
                    .iter()
                    .position(|r| !(kind == RuleKind::Override && r.rule_id == ".m.rule.master"))
                    .unwrap_or(rules.len()),
            };
            rules.insert(index, rule);
        }
    }
    store(&state, &me.user_id, &ruleset).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesscopekindruleidenabled>
pub async fn get_enabled(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((scope, kind, rule_id)): MatrixPath<RulePath>,
) -> ApiResult<Json<Value>> {
    let kind = parse_scope_kind(&scope, &kind)?;
    let ruleset = load(&state, &me.user_id).await?;
    let rule = ruleset.get(kind, &rule_id).ok_or_else(not_found)?;
    Ok(Json(json!({ "enabled": rule.enabled })))
}

#[derive(Deserialize)]
pub struct EnabledBody {
    enabled: bool,
}

/// `PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesscopekindruleidenabled>
pub async fn put_enabled(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((scope, kind, rule_id)): MatrixPath<RulePath>,
    MatrixJson(body): MatrixJson<EnabledBody>,
) -> ApiResult<Json<Value>> {
    let kind = parse_scope_kind(&scope, &kind)?;
    let mut ruleset = load(&state, &me.user_id).await?;
    let rule = ruleset.get_mut(kind, &rule_id).ok_or_else(not_found)?;
    rule.enabled = body.enabled;
    store(&state, &me.user_id, &ruleset).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions`
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesscopekindruleidactions>
pub async fn get_actions(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((scope, kind, rule_id)): MatrixPath<RulePath>,
) -> ApiResult<Json<Value>> {
    let kind = parse_scope_kind(&scope, &kind)?;
    let ruleset = load(&state, &me.user_id).await?;
    let rule = ruleset.get(kind, &rule_id).ok_or_else(not_found)?;
    Ok(Json(json!({ "actions": rule.actions })))
}

/// `PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions`: also
/// for server-default rules.
/// Spec: <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesscopekindruleidactions>
pub async fn put_actions(
    State(state): State<AppState>,
    Auth(me): Auth,
    MatrixPath((scope, kind, rule_id)): MatrixPath<RulePath>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let kind = parse_scope_kind(&scope, &kind)?;
    let actions = parse_actions(&body)?;
    let mut ruleset = load(&state, &me.user_id).await?;
    let rule = ruleset.get_mut(kind, &rule_id).ok_or_else(not_found)?;
    rule.actions = actions;
    store(&state, &me.user_id, &ruleset).await?;
    Ok(Json(json!({})))
}
