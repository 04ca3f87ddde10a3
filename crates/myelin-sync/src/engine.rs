//! One computation of a `/sync` response.
//!
//! Every read is bounded by the positions the response's `next_batch`
//! carries, taken once at the start (events: the writer's watermark, so
//! an event still being written at a smaller position than one already
//! written is never skipped). Memberships are read as of that bound too: a
//! membership row written past it is looked up again in the state at the
//! bound.

use myelin_core::MatrixResult;
use myelin_events::RoomVersion;
use myelin_rooms::read::{ClientEvents, Viewer};
use myelin_storage::{AccountDataChange, Receipt, Storage, StoredEvent};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

use crate::device_lists;
use crate::filter::SyncFilter;
use crate::format;
use crate::room::{self, Recent, StateMode, Timeline, db};
use crate::token::SyncToken;
use crate::{SyncRequest, SyncSources};

/// Types of the state events invited and knocking users see (the spec's
/// recommended stripped state), besides their own membership event.
const STRIPPED_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// Receipts in range of one incremental sync at most: past it (a client
/// long offline) each room's current receipts are sent instead. The
/// backends cap a listing at 10,000 rows, oldest first, which would drop the
/// newest receipts — the ones that matter.
const RECEIPTS_IN_RANGE_MAX: usize = 5_000;

/// Stream positions between `since` and the bound up to which the joined
/// rooms' new events are read at once (a long-polling client is a few
/// positions behind): there are at most that many events in the range, so
/// the read is whole, and a room with none skips its timeline and state
/// reads. Past it, each room reads its own.
pub const RECENT_EVENTS_MAX: i64 = 500;

/// To-device messages one response carries at most; the rest come next.
pub const TO_DEVICE_PER_SYNC: u32 = 100;

/// A computed response, and whether it holds nothing new (a long-polling
/// request then waits and computes again).
pub(crate) struct Computed {
    pub body: Value,
    pub empty: bool,
}

/// A room the user has a membership in, as of the response's bound.
struct Membership {
    room_nid: i64,
    room_id: String,
    membership: String,
    event_id: String,
    /// The stream position of the membership event.
    pos: i64,
}

/// Reads the bounds of a response: the positions `next_batch` will carry,
/// each stream's watermark.
pub(crate) async fn bounds(src: &SyncSources<'_>) -> MatrixResult<SyncToken> {
    // Each stream's watermark: everything at or below it is written, so a
    // position committed later can never fall behind the token.
    Ok(SyncToken {
        events: src.events.watermark(),
        receipts: src.receipts.watermark(),
        account_data: src.account_data.watermark(),
        typing: src.typing.position(),
        presence: src.presence.position(),
        to_device: src.to_device.watermark(),
        device_lists: src.device_lists.watermark(),
    })
}

/// Adds the syncing device's one-time key counts and unused fallback key
/// types to a response about to be sent (not to every computation of a
/// long-poll: they are read once, for the answer).
pub(crate) async fn add_device_key_counts(
    src: &SyncSources<'_>,
    req: &SyncRequest,
    body: &mut Value,
) -> MatrixResult<()> {
    let (user_id, device_id) = (req.user_id.as_str(), req.device_id.as_str());
    let mut counts = db(src.storage.one_time_key_counts(user_id, device_id).await)?;
    // Always reported, even at 0: clients top keys up when it is low.
    counts.entry("signed_curve25519".to_owned()).or_insert(0);
    let fallback = db(src
        .storage
        .unused_fallback_key_types(user_id, device_id)
        .await)?;
    body["device_one_time_keys_count"] = json!(counts);
    body["device_unused_fallback_key_types"] = json!(fallback);
    Ok(())
}

/// Computes a response for `req` with every read bounded by `upto`.
pub(crate) async fn compute(
    src: &SyncSources<'_>,
    req: &SyncRequest,
    filter: &SyncFilter,
    upto: SyncToken,
) -> MatrixResult<Computed> {
    let storage = src.storage;
    let user_id = req.user_id.as_str();
    // A token from the future (another server's, a restored database) is "now".
    let since = req.since.map(|s| SyncToken {
        events: s.events.min(upto.events),
        receipts: s.receipts.min(upto.receipts),
        account_data: s.account_data.min(upto.account_data),
        typing: s.typing.min(upto.typing),
        presence: s.presence.min(upto.presence),
        to_device: s.to_device.min(upto.to_device),
        device_lists: s.device_lists.min(upto.device_lists),
    });
    // No stream moved since the token: nothing can be new (a long-poll's
    // first look, and every look after a wake for another user's write).
    if since == Some(upto) && !req.full_state {
        return Ok(Computed {
            body: body(upto, Sections::default()),
            empty: true,
        });
    }

    // Account data in range: global, and per room for the room entries.
    let account_after = since.map_or(i64::MIN, |s| s.account_data);
    let changes = if account_after < upto.account_data {
        db(storage
            .account_data_between(user_id, account_after, upto.account_data)
            .await)?
    } else {
        Vec::new()
    };
    let mut global_account_data = Vec::new();
    let mut room_account_data: HashMap<String, Vec<AccountDataChange>> = HashMap::new();
    for change in changes {
        match change.room_id.clone() {
            None => global_account_data.push(change),
            Some(room_id) => room_account_data.entry(room_id).or_default().push(change),
        }
    }

    // The user's rooms, as of the bound, sorted into sections.
    let mut joined = Vec::new();
    let mut invited = Vec::new();
    let mut knocked = Vec::new();
    let mut left = Vec::new();
    for row in db(storage.user_memberships(user_id).await)? {
        if row.forgotten || !filter.room_allowed(&row.room_id) {
            continue;
        }
        let m = if row.stream_pos > upto.events {
            // Changed after the bound: what was it at the bound?
            match room::membership_at(storage, row.room_nid, user_id, upto.events).await? {
                Some(event) => Membership {
                    room_nid: row.room_nid,
                    room_id: row.room_id,
                    membership: event.membership.unwrap_or_default(),
                    event_id: event.event_id,
                    pos: event.stream_pos,
                },
                None => continue,
            }
        } else {
            Membership {
                room_nid: row.room_nid,
                room_id: row.room_id,
                membership: row.membership,
                event_id: row.event_id,
                pos: row.stream_pos,
            }
        };
        let changed_in_range = since.is_none_or(|s| m.pos > s.events);
        match m.membership.as_str() {
            "join" => joined.push(m),
            // Invites from ignored users are not shown.
            "invite"
                if changed_in_range
                    && !myelin_rooms::read::invite_from_ignored(storage, user_id, &m.event_id)
                        .await? =>
            {
                invited.push(m)
            }
            "knock" if changed_in_range => knocked.push(m),
            "leave" | "ban" => {
                let wanted = match since {
                    Some(s) if !req.full_state => m.pos > s.events,
                    _ => filter.include_leave(),
                };
                if wanted {
                    left.push(m);
                }
            }
            _ => {}
        }
    }

    // Receipts in range for the rooms already synced; fresh rooms get the
    // current ones.
    let mut fresh_rooms = HashMap::new();
    for m in &joined {
        let fresh = match since {
            None => true,
            Some(s) => m.pos > s.events && !was_joined(storage, m, user_id, s.events).await?,
        };
        fresh_rooms.insert(m.room_nid, fresh);
    }
    let incremental_nids: Vec<i64> = joined
        .iter()
        .filter(|m| !fresh_rooms[&m.room_nid])
        .map(|m| m.room_nid)
        .collect();
    let mut receipts_by_room: HashMap<i64, Vec<Receipt>> = HashMap::new();
    let mut receipts_current = false;
    if let Some(s) = since
        && s.receipts < upto.receipts
        && !incremental_nids.is_empty()
        && filter.ephemeral_type("m.receipt")
    {
        let in_range = db(storage
            .receipts_between(&incremental_nids, s.receipts, upto.receipts)
            .await)?;
        // Too many to trust the listing to be whole: each room's current
        // receipts instead (what the client needs of them anyway).
        receipts_current = in_range.len() >= RECEIPTS_IN_RANGE_MAX;
        for r in in_range {
            receipts_by_room.entry(r.room_nid).or_default().push(r);
        }
    }
    // Rooms joined since the token get all their room account data.
    if since.is_some() && fresh_rooms.values().any(|f| *f) {
        let all = db(storage
            .account_data_between(user_id, i64::MIN, upto.account_data)
            .await)?;
        for change in all {
            let Some(room_id) = change.room_id.clone() else {
                continue;
            };
            if let Some(m) = joined.iter().find(|m| m.room_id == room_id)
                && fresh_rooms[&m.room_nid]
            {
                let list = room_account_data.entry(room_id).or_default();
                if !list.iter().any(|c| c.data_type == change.data_type) {
                    list.push(change);
                }
            }
        }
    }

    // The joined rooms' events in range, when few enough to read at once.
    let recent = match since {
        Some(s) if upto.events - s.events <= RECENT_EVENTS_MAX && !joined.is_empty() => {
            let nids: Vec<i64> = joined.iter().map(|m| m.room_nid).collect();
            let mut by_room: HashMap<i64, Vec<StoredEvent>> = HashMap::new();
            if s.events < upto.events {
                let events = db(storage
                    .rooms_events_by_stream(&nids, s.events, upto.events, RECENT_EVENTS_MAX as u32)
                    .await)?;
                for event in events {
                    by_room.entry(event.room_nid).or_default().push(event);
                }
            }
            Some(by_room)
        }
        _ => None,
    };

    let ctx = RoomCtx {
        src,
        req,
        filter,
        since,
        upto,
    };
    let mut join_section = Map::new();
    for m in &joined {
        let fresh = fresh_rooms[&m.room_nid];
        let receipts = (!fresh && !receipts_current)
            .then(|| receipts_by_room.remove(&m.room_nid).unwrap_or_default());
        let account = room_account_data
            .get(&m.room_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let recent = recent.as_ref().map(|by_room| Recent {
            events: by_room
                .get(&m.room_nid)
                .map(Vec::as_slice)
                .unwrap_or_default(),
        });
        if let Some(entry) = ctx.joined_room(m, fresh, receipts, account, recent).await? {
            join_section.insert(m.room_id.clone(), entry);
        }
    }
    let mut leave_section = Map::new();
    for m in &left {
        let account = room_account_data
            .get(&m.room_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        leave_section.insert(m.room_id.clone(), ctx.left_room(m, account).await?);
    }
    let mut invite_section = Map::new();
    for m in &invited {
        let events = stripped_state(storage, m).await?;
        invite_section.insert(
            m.room_id.clone(),
            json!({ "invite_state": { "events": events } }),
        );
    }
    let mut knock_section = Map::new();
    for m in &knocked {
        let events = stripped_state(storage, m).await?;
        knock_section.insert(
            m.room_id.clone(),
            json!({ "knock_state": { "events": events } }),
        );
    }

    let mut global: Vec<Value> = global_account_data
        .into_iter()
        .filter(|c| filter.account_data_type(&c.data_type))
        .map(|c| json!({ "type": c.data_type, "content": c.content }))
        .collect();
    // Clients expect their push rules in the initial sync; a user who never
    // changed one has none stored, so send the defaults the server applies.
    if since.is_none()
        && filter.account_data_type("m.push_rules")
        && !global.iter().any(|e| e["type"] == "m.push_rules")
    {
        let defaults = myelin_events::push::default_ruleset(user_id);
        global.push(json!({ "type": "m.push_rules", "content": { "global": defaults } }));
    }
    if let Some(limit) = filter.account_data_limit() {
        global.truncate(limit);
    }

    // Presence of the users sharing a room with this one, changed since
    // the token (all of them on an initial sync).
    let mut presence = Vec::new();
    let presence_after = since.map(|s| s.presence);
    if presence_after.is_none_or(|a| a < upto.presence) {
        let among = db(myelin_rooms::presence::shared_users(storage, user_id).await)?;
        for p in src.presence.changed(presence_after, upto.presence, &among) {
            if filter.presence_event("m.presence", &p.user_id) {
                presence.push(json!({
                    "type": "m.presence",
                    "sender": p.user_id,
                    "content": p.content(),
                }));
            }
        }
        if let Some(limit) = filter.presence_limit() {
            presence.truncate(limit);
        }
    }

    // To-device messages after the token, oldest first; when more are
    // waiting than one response carries, the token stops at the last sent.
    let mut upto = upto;
    let to_device_after = since.map_or(i64::MIN, |s| s.to_device);
    let mut to_device = Vec::new();
    if to_device_after < upto.to_device {
        let messages = db(storage
            .to_device_messages(
                user_id,
                &req.device_id,
                to_device_after,
                upto.to_device,
                TO_DEVICE_PER_SYNC,
            )
            .await)?;
        if messages.len() == TO_DEVICE_PER_SYNC as usize
            && let Some(last) = messages.last()
        {
            upto.to_device = last.stream_pos;
        }
        to_device = messages
            .into_iter()
            .map(|m| json!({ "sender": m.sender, "type": m.kind, "content": m.content }))
            .collect();
    }

    // Device lists to refresh or forget (incremental syncs only).
    let (changed, left_users) = match since {
        Some(s) => {
            let nids: Vec<i64> = joined.iter().chain(&left).map(|m| m.room_nid).collect();
            device_lists::device_lists(storage, user_id, s, upto, &nids).await?
        }
        None => (Vec::new(), Vec::new()),
    };

    let empty = join_section.is_empty()
        && leave_section.is_empty()
        && invite_section.is_empty()
        && knock_section.is_empty()
        && global.is_empty()
        && presence.is_empty()
        && to_device.is_empty()
        && changed.is_empty()
        && left_users.is_empty();
    let sections = Sections {
        join: join_section,
        invite: invite_section,
        knock: knock_section,
        leave: leave_section,
        account_data: global,
        presence,
        to_device,
        device_lists_changed: changed,
        device_lists_left: left_users,
    };
    Ok(Computed {
        body: body(upto, sections),
        empty,
    })
}

/// The sections of a response.
#[derive(Default)]
struct Sections {
    join: Map<String, Value>,
    invite: Map<String, Value>,
    knock: Map<String, Value>,
    leave: Map<String, Value>,
    account_data: Vec<Value>,
    presence: Vec<Value>,
    to_device: Vec<Value>,
    device_lists_changed: Vec<String>,
    device_lists_left: Vec<String>,
}

fn body(upto: SyncToken, sections: Sections) -> Value {
    json!({
        "next_batch": upto.to_string(),
        "rooms": {
            "join": sections.join,
            "invite": sections.invite,
            "knock": sections.knock,
            "leave": sections.leave,
        },
        "account_data": { "events": sections.account_data },
        "presence": { "events": sections.presence },
        "to_device": { "events": sections.to_device },
        "device_lists": {
            "changed": sections.device_lists_changed,
            "left": sections.device_lists_left,
        },
    })
}

/// Deletes the device's to-device messages up to `upto`, which a sync
/// token covering them acknowledges. Reads first: most syncs acknowledge
/// nothing, and a read costs less than a write.
pub(crate) async fn acknowledge_to_device(
    storage: &dyn Storage,
    req: &SyncRequest,
    upto: i64,
) -> MatrixResult<()> {
    let pending = db(storage
        .to_device_messages(&req.user_id, &req.device_id, i64::MIN, upto, 1)
        .await)?;
    if !pending.is_empty() {
        db(storage
            .delete_to_device_messages(&req.user_id, &req.device_id, upto)
            .await)?;
    }
    Ok(())
}

/// Whether the user was joined to the room at position `pos` (a join
/// after the token may be a profile change, not a new join).
async fn was_joined(
    storage: &dyn Storage,
    m: &Membership,
    user_id: &str,
    pos: i64,
) -> MatrixResult<bool> {
    let before = room::membership_at(storage, m.room_nid, user_id, pos).await?;
    Ok(before.and_then(|e| e.membership).as_deref() == Some("join"))
}

/// The stripped state of a room an invited or knocking user sees: the
/// state at their membership event, and that event.
async fn stripped_state(storage: &dyn Storage, m: &Membership) -> MatrixResult<Vec<Value>> {
    let Some(record) = db(storage.room(&m.room_id).await)? else {
        return Ok(Vec::new());
    };
    let Some(version) = RoomVersion::parse(&record.room_version) else {
        return Ok(Vec::new());
    };
    let Some(own) = db(storage.event(&m.event_id).await)? else {
        return Ok(Vec::new());
    };
    let mut events = Vec::new();
    for kind in STRIPPED_STATE_TYPES {
        if let Some(event) = db(storage.state_event_at(own.state_before_nid, kind, "").await)? {
            events.push(format::stripped(&version, &event)?);
        }
    }
    let mut own_event = format::stripped(&version, &own)?;
    own_event["event_id"] = json!(own.event_id);
    own_event["origin_server_ts"] = json!(own.origin_server_ts);
    events.push(own_event);
    Ok(events)
}

/// What every room entry of one response shares.
struct RoomCtx<'a> {
    src: &'a SyncSources<'a>,
    req: &'a SyncRequest,
    filter: &'a SyncFilter,
    /// Clamped to `upto`.
    since: Option<SyncToken>,
    upto: SyncToken,
}

impl RoomCtx<'_> {
    fn storage(&self) -> &dyn Storage {
        self.src.storage
    }

    async fn version(&self, room_id: &str) -> MatrixResult<RoomVersion> {
        let record = db(self.storage().room(room_id).await)?.ok_or_else(|| {
            myelin_core::MatrixError::internal(format!("room {room_id} has no record"))
        })?;
        RoomVersion::parse(&record.room_version).ok_or_else(|| {
            myelin_core::MatrixError::internal(format!(
                "room {room_id} has unsupported version {}",
                record.room_version
            ))
        })
    }

    /// `prev_batch`: the token of the position just before the first
    /// timeline event (or of the timeline's end when it is empty), so that
    /// `/messages?dir=b&from=` returns the events at positions at or below it.
    fn prev_batch(&self, timeline: &Timeline, end: i64) -> String {
        let events = timeline
            .events
            .first()
            .map_or(end, |e| e.stream_pos - 1)
            .max(0);
        SyncToken {
            events,
            ..self.upto
        }
        .to_string()
    }

    /// A joined room's entry; `None` when an incremental sync has nothing
    /// new for it. `receipts`: those in range, or `None` for the room's
    /// current receipts. `recent`: the room's events after the token, when
    /// read for every room at once.
    async fn joined_room(
        &self,
        m: &Membership,
        fresh: bool,
        receipts: Option<Vec<Receipt>>,
        account: &[AccountDataChange],
        recent: Option<Recent<'_>>,
    ) -> MatrixResult<Option<Value>> {
        let storage = self.storage();
        let user_id = self.req.user_id.as_str();
        let full = fresh || self.req.full_state;
        // Initial sync: the newest events; otherwise those after the token
        // (a newly joined room gets its full state, not older events).
        let after = self.since.map(|s| s.events);
        // No event in range: no timeline, and no state change either.
        let nothing_new = !full
            && (after == Some(self.upto.events) || recent.is_some_and(|r| r.events.is_empty()));
        let timeline = if nothing_new {
            Timeline::default()
        } else {
            room::timeline(
                storage,
                self.filter,
                user_id,
                m.room_nid,
                &m.room_id,
                after,
                self.upto.events,
                recent.map(|r| r.events),
            )
            .await?
        };
        // The summary when membership may have changed (fresh, full, or a
        // member event in range); its heroes' members go into lazy state.
        let members_changed = timeline.events.iter().any(|e| e.kind == "m.room.member");
        let mut summary = None;
        let mut extra_members = Vec::new();
        if full || members_changed {
            let (value, heroes) = room::summary(storage, m.room_nid, user_id).await?;
            summary = Some(value);
            extra_members = heroes;
        }
        if full {
            extra_members.push(user_id.to_owned());
        }
        let state = if nothing_new {
            Vec::new()
        } else {
            let mode = match (full, self.since) {
                (false, Some(s)) => StateMode::Since(s.events),
                _ => StateMode::Full,
            };
            room::state(
                storage,
                self.filter,
                m.room_nid,
                &m.room_id,
                &timeline,
                self.upto.events,
                mode,
                &extra_members,
            )
            .await?
        };
        if summary.is_none() && state.iter().any(|e| e.kind == "m.room.member") {
            summary = Some(room::summary(storage, m.room_nid, user_id).await?.0);
        }

        let mut ephemeral = Vec::new();
        if self.filter.ephemeral_room(&m.room_id) {
            if self.filter.ephemeral_type("m.typing") {
                let (users, changed_at) = self.src.typing.room(&m.room_id);
                let since = if fresh {
                    None
                } else {
                    self.since.map(|s| s.typing)
                };
                ephemeral.extend(room::typing_event(
                    users,
                    changed_at,
                    since,
                    self.upto.typing,
                ));
            }
            if self.filter.ephemeral_type("m.receipt") {
                let current;
                let receipts: Vec<&Receipt> = match &receipts {
                    Some(in_range) => in_range.iter().collect(),
                    None => {
                        current = db(storage.room_receipts(m.room_nid).await)?;
                        current
                            .iter()
                            .filter(|r| r.stream_pos <= self.upto.receipts)
                            .collect()
                    }
                };
                ephemeral.extend(room::receipt_event(user_id, &receipts));
            }
        }
        let account_events = self.room_account_data(&m.room_id, account);

        if !full
            && timeline.events.is_empty()
            && state.is_empty()
            && ephemeral.is_empty()
            && account_events.is_empty()
            && summary.is_none()
        {
            return Ok(None);
        }

        let version = self.version(&m.room_id).await?;
        let mut entry = self
            .timeline_and_state(&version, &timeline, &state, self.upto.events)
            .await?;
        entry.insert("ephemeral".into(), json!({ "events": ephemeral }));
        entry.insert("account_data".into(), json!({ "events": account_events }));
        entry.insert("summary".into(), summary.unwrap_or_else(|| json!({})));
        let (unread, threads) = room::unread_counts(
            storage,
            m.room_nid,
            user_id,
            m.pos,
            self.upto.events,
            self.filter.unread_thread_notifications(),
        )
        .await?;
        entry.insert("unread_notifications".into(), unread);
        if let Some(threads) = threads {
            entry.insert("unread_thread_notifications".into(), threads);
        }
        Ok(Some(Value::Object(entry)))
    }

    /// A left (or banned) room's entry: the timeline up to the leave event
    /// and the state before it; nothing after it.
    async fn left_room(
        &self,
        m: &Membership,
        account: &[AccountDataChange],
    ) -> MatrixResult<Value> {
        let storage = self.storage();
        let user_id = self.req.user_id.as_str();
        let after = self.since.map(|s| s.events);
        let end = m.pos;
        let timeline = room::timeline(
            storage,
            self.filter,
            user_id,
            m.room_nid,
            &m.room_id,
            after,
            end,
            None,
        )
        .await?;
        let mode = match self.since {
            Some(s) if !self.req.full_state => StateMode::Since(s.events),
            _ => StateMode::Full,
        };
        let own = [user_id.to_owned()];
        let state = room::state(
            storage,
            self.filter,
            m.room_nid,
            &m.room_id,
            &timeline,
            end,
            mode,
            &own,
        )
        .await?;
        let version = self.version(&m.room_id).await?;
        let mut entry = self
            .timeline_and_state(&version, &timeline, &state, end)
            .await?;
        entry.insert(
            "account_data".into(),
            json!({ "events": self.room_account_data(&m.room_id, account) }),
        );
        Ok(Value::Object(entry))
    }

    fn room_account_data(&self, room_id: &str, account: &[AccountDataChange]) -> Vec<Value> {
        if !self.filter.account_data_room(room_id) {
            return Vec::new();
        }
        account
            .iter()
            .filter(|c| self.filter.room_account_data_type(&c.data_type))
            .map(|c| json!({ "type": c.data_type, "content": c.content }))
            .collect()
    }

    async fn timeline_and_state(
        &self,
        version: &RoomVersion,
        timeline: &Timeline,
        state: &[myelin_storage::StoredEvent],
        end: i64,
    ) -> MatrixResult<Map<String, Value>> {
        let formatter = ClientEvents {
            storage: self.storage(),
            version,
            viewer: Viewer {
                user_id: &self.req.user_id,
                device_id: Some(&self.req.device_id),
            },
        };
        let timeline_events = format::timeline_events(&formatter, &timeline.events).await?;
        let state_events = format::state_events(&formatter, state).await?;
        let mut entry = Map::new();
        entry.insert(
            "timeline".into(),
            json!({
                "events": timeline_events,
                "limited": timeline.limited,
                "prev_batch": self.prev_batch(timeline, end),
            }),
        );
        entry.insert("state".into(), json!({ "events": state_events }));
        Ok(entry)
    }
}
