//! Push rule evaluation at write time: when the writer creates an event, it
//! evaluates every recipient's push rules (`myelin_events::push`) and hands
//! the outcomes that notify or highlight to storage with the event, in the
//! event's transaction. Unread counts, `/notifications` and pushers read
//! those rows; nothing re-evaluates rules at read time.
//!
//! The recipients are the joined members but the sender, and the target of
//! an invite (`.m.rule.invite_for_me`). A recipient who ignores the sender
//! gets nothing. Each user's merged ruleset and ignore list are cached here
//! and dropped by [`PushRules::invalidate`] whenever either account data
//! changes (the account-data writer calls it).

use myelin_core::{MatrixError, MatrixResult};
use myelin_events::auth::{PowerLevel, user_power_level};
use myelin_events::push::{
    CompiledRuleset, EventMemo, PushContext, RuleCompiler, Ruleset, merged_ruleset,
};
use myelin_events::{Pdu, RoomVersion};
use myelin_storage::{PushAction, Storage};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::read::ignored_users;

/// The account data type holding a user's push rules (`{"global": …}`).
pub const PUSH_RULES_TYPE: &str = "m.push_rules";
/// The account data type holding a user's ignore list.
pub const IGNORED_USERS_TYPE: &str = "m.ignored_user_list";
/// Users whose rules stay cached; past this the cache starts over.
const CACHED_USERS_MAX: usize = 16_384;

/// A user's merged ruleset: the server defaults with what they stored.
pub async fn load_ruleset(storage: &dyn Storage, user_id: &str) -> MatrixResult<Ruleset> {
    let stored = storage
        .account_data(user_id, None, PUSH_RULES_TYPE)
        .await
        .map_err(MatrixError::internal)?
        .and_then(|mut c| c.get_mut("global").map(Value::take))
        .and_then(|g| serde_json::from_value::<Ruleset>(g).ok());
    Ok(merged_ruleset(user_id, stored.as_ref()))
}

/// What evaluating an event for one user needs of their account data.
struct UserRules {
    ruleset: CompiledRuleset,
    ignored: HashSet<String>,
}

/// The cache of users' rules and ignore lists.
#[derive(Default)]
pub struct PushRules {
    users: Mutex<CachedRules>,
}

/// The cached rulesets, compiled by one compiler so that their shared
/// conditions are evaluated once per event.
#[derive(Default)]
struct CachedRules {
    compiler: RuleCompiler,
    users: HashMap<String, Arc<UserRules>>,
}

impl PushRules {
    /// Forgets `user_id`'s cached rules (after their push rules or ignore
    /// list changed).
    pub fn invalidate(&self, user_id: &str) {
        self.lock().users.remove(user_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CachedRules> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the rules of the `users` not cached yet.
    pub(crate) async fn preload<'a>(
        &self,
        storage: &dyn Storage,
        users: impl IntoIterator<Item = &'a str>,
    ) -> MatrixResult<()> {
        let missing: Vec<&str> = {
            let mut cached = self.lock();
            if cached.users.len() > CACHED_USERS_MAX {
                // Starting over also forgets conditions no user has any more.
                *cached = CachedRules::default();
            }
            users
                .into_iter()
                .filter(|u| !cached.users.contains_key(*u))
                .collect()
        };
        for user_id in missing {
            let ruleset = load_ruleset(storage, user_id).await?;
            let ignored = ignored_users(storage, user_id).await?;
            let mut cached = self.lock();
            let rules = UserRules {
                ruleset: cached.compiler.compile(&ruleset),
                ignored,
            };
            cached.users.insert(user_id.to_owned(), Arc::new(rules));
        }
        Ok(())
    }

    fn get(&self, user_id: &str) -> Arc<UserRules> {
        if let Some(rules) = self.lock().users.get(user_id) {
            return rules.clone();
        }
        // Not preloaded (it always is): the defaults, uncached.
        Arc::new(UserRules {
            ruleset: CompiledRuleset::new(&merged_ruleset(user_id, None)),
            ignored: HashSet::new(),
        })
    }

    /// The push actions of `pdu` for each recipient whose matching rule
    /// notifies or highlights, evaluated against the room's state before it
    /// (`state`) with `joined` its joined members.
    pub(crate) fn actions(
        &self,
        version: &RoomVersion,
        state: &HashMap<(String, String), Pdu>,
        joined: &[&str],
        pdu: &Pdu,
    ) -> Vec<PushAction> {
        let event = json!({
            "type": pdu.kind,
            "sender": pdu.sender,
            "state_key": pdu.state_key,
            "room_id": pdu.room_id,
            "content": pdu.content,
        });
        let invitee = (pdu.membership() == Some("invite"))
            .then_some(pdu.state_key.as_deref())
            .flatten();
        let power_levels = state
            .get(&("m.room.power_levels".to_owned(), String::new()))
            .map(|p| &p.content);
        let sender_power_level = match user_power_level(version, state, &pdu.sender) {
            PowerLevel::Infinite => i64::MAX,
            PowerLevel::Int(level) => level,
        };
        let thread_id = thread_of(&pdu.content);
        let member_count = joined.len() as u64;
        let mut actions = Vec::new();
        let mut memo = EventMemo::default();
        let recipients = joined
            .iter()
            .copied()
            .chain(invitee.filter(|i| !joined.contains(i)));
        for user_id in recipients {
            if user_id == pdu.sender {
                continue;
            }
            let rules = self.get(user_id);
            if rules.ignored.contains(&pdu.sender) {
                continue;
            }
            let member = state.get(&("m.room.member".to_owned(), user_id.to_owned()));
            let display_name = member
                .and_then(|m| m.content.get("displayname"))
                .and_then(Value::as_str);
            let ctx = PushContext {
                user_id,
                display_name,
                member_count,
                sender_power_level,
                power_levels,
            };
            let Some(outcome) = rules.ruleset.evaluate(&event, &ctx, &mut memo) else {
                continue;
            };
            if !outcome.notify && !outcome.highlight {
                continue;
            }
            actions.push(PushAction {
                user_id: user_id.to_owned(),
                thread_id: thread_id.clone(),
                notify: outcome.notify,
                highlight: outcome.highlight,
                actions: Value::Array(outcome.actions.clone()),
            });
        }
        actions
    }
}

/// The thread root of an event in a thread (`m.thread` relation).
fn thread_of(content: &Value) -> Option<String> {
    let relates_to = content.get("m.relates_to")?;
    (relates_to.get("rel_type")?.as_str()? == "m.thread")
        .then(|| relates_to.get("event_id")?.as_str().map(str::to_owned))
        .flatten()
}

/// Where a user's read receipts (`m.read` and `m.read.private`) in a room
/// got to, as event stream positions: unthreaded, on the main timeline, and
/// per thread root. Positions start at a floor (their join, say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadMarks {
    pub unthreaded: i64,
    pub main: i64,
    pub threads: HashMap<String, i64>,
}

impl ReadMarks {
    /// Reads the user's receipts in the room.
    pub async fn load(
        storage: &dyn Storage,
        room_nid: i64,
        user_id: &str,
        floor: i64,
    ) -> MatrixResult<ReadMarks> {
        let receipts: Vec<_> = storage
            .user_receipts(room_nid, user_id)
            .await
            .map_err(MatrixError::internal)?
            .into_iter()
            .filter(|r| matches!(r.receipt_type.as_str(), "m.read" | "m.read.private"))
            .collect();
        let mut marks = ReadMarks {
            unthreaded: floor,
            main: floor,
            threads: HashMap::new(),
        };
        if receipts.is_empty() {
            return Ok(marks);
        }
        let ids: Vec<String> = receipts.iter().map(|r| r.event_id.clone()).collect();
        let read_at: HashMap<String, i64> = storage
            .events(&ids)
            .await
            .map_err(MatrixError::internal)?
            .into_iter()
            .filter(|e| e.room_nid == room_nid)
            .map(|e| (e.event_id, e.stream_pos))
            .collect();
        for receipt in &receipts {
            let Some(&pos) = read_at.get(&receipt.event_id) else {
                continue;
            };
            match receipt.thread_id.as_deref() {
                None => marks.unthreaded = marks.unthreaded.max(pos),
                Some("main") => marks.main = marks.main.max(pos),
                Some(thread) => {
                    let at = marks.threads.entry(thread.to_owned()).or_insert(pos);
                    *at = (*at).max(pos);
                }
            }
        }
        Ok(marks)
    }

    /// Read up to here on the main timeline (`thread` `None`) or in a
    /// thread: an unthreaded receipt covers both.
    pub fn read_upto(&self, thread: Option<&str>) -> i64 {
        let threaded = match thread {
            None => self.main,
            Some(root) => self.threads.get(root).copied().unwrap_or(i64::MIN),
        };
        threaded.max(self.unthreaded)
    }
}
