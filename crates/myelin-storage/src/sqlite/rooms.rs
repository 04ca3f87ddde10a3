//! [`RoomStore`] on SQLite.
//!
//! Every write goes through the single writer connection, so ids and stream
//! positions drawn from `counters` need no further locking, and
//! `persist_event` reads the room's current snapshot and writes the next one
//! with no other writer in between.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::{LIST_MAX, SqliteStorage, db_error, json_column, next_counter};
use crate::relations::relation_of;
use crate::rooms::{
    EVENTS_LOOKUP_BATCH, STATE_CHAIN_LENGTH_MAX, STATE_ENTRIES_MAX, StateMap, bounded_state,
    check_batch, check_state_of, snapshot_entries, state_changes, unknown_room,
    unknown_state_event,
};
use crate::{
    AccountDataChange, Direction, EventStatus, NewEvent, PersistedEvent, Receipt, RoomAlias,
    RoomMember, RoomRecord, RoomStore, StateBefore, StateEntry, StorageResult, StoredEvent, Stream,
    TopoPos, TxnKey, UserMembership,
};

/// The columns [`event_from_row`] reads, from `events e JOIN rooms r`.
macro_rules! event_columns {
    () => {
        "e.event_nid, e.room_nid, r.room_id, e.event_id, e.kind, e.state_key, e.sender,
         e.origin_server_ts, e.depth, e.stream_pos, e.json, e.membership, e.redacts,
         e.redacted_by, e.state_before_nid, e.state_after_nid, e.status,
         e.txn_user_id, e.txn_device_id, e.txn_id"
    };
}

/// The snapshots of the chain of `?1`, nearest first (`hop` 0 is `?1`
/// itself), at most `?2` of them: the bound holds even for a corrupt chain
/// that loops.
macro_rules! snapshot_chain {
    () => {
        "WITH RECURSIVE chain (snapshot_nid, base_nid, hop) AS (
             SELECT snapshot_nid, base_nid, 0 FROM state_snapshots WHERE snapshot_nid = ?1
             UNION ALL
             SELECT s.snapshot_nid, s.base_nid, chain.hop + 1
             FROM state_snapshots s JOIN chain ON s.snapshot_nid = chain.base_nid
             WHERE chain.hop + 1 < ?2
         ),
         nearest AS (
             SELECT se.state_key_nid, se.event_nid,
                    ROW_NUMBER() OVER (PARTITION BY se.state_key_nid ORDER BY chain.hop) AS pick
             FROM state_snapshot_entries se JOIN chain ON se.snapshot_nid = chain.snapshot_nid
         )"
    };
}

/// The `counters` row a stream draws from (named as PostgreSQL's sequence).
fn stream_counter(stream: Stream) -> &'static str {
    match stream {
        Stream::Events => "events_stream_pos",
        Stream::Receipts => "receipts_stream_pos",
        Stream::AccountData => "account_data_stream_id",
        Stream::ToDevice => "to_device_stream_pos",
        Stream::DeviceLists => "device_list_stream_pos",
    }
}

pub(super) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let txn_user_id: Option<String> = row.get(17)?;
    let txn_device_id: Option<String> = row.get(18)?;
    let txn_id: Option<String> = row.get(19)?;
    let txn = match (txn_user_id, txn_device_id, txn_id) {
        (Some(user_id), Some(device_id), Some(txn_id)) => Some(TxnKey {
            user_id,
            device_id,
            txn_id,
        }),
        _ => None,
    };
    Ok(StoredEvent {
        event_nid: row.get(0)?,
        room_nid: row.get(1)?,
        room_id: row.get(2)?,
        event_id: row.get(3)?,
        kind: row.get(4)?,
        state_key: row.get(5)?,
        sender: row.get(6)?,
        origin_server_ts: row.get(7)?,
        depth: row.get(8)?,
        stream_pos: row.get(9)?,
        json: row.get(10)?,
        membership: row.get(11)?,
        redacts: row.get(12)?,
        redacted_by: row.get(13)?,
        state_before_nid: row.get(14)?,
        state_after_nid: row.get(15)?,
        status: EventStatus::from_i16(row.get(16)?),
        txn,
    })
}

fn receipt_from_row(row: &Row<'_>) -> rusqlite::Result<Receipt> {
    let thread_id: String = row.get(5)?;
    Ok(Receipt {
        room_nid: row.get(0)?,
        room_id: row.get(1)?,
        user_id: row.get(2)?,
        receipt_type: row.get(3)?,
        event_id: row.get(4)?,
        thread_id: (!thread_id.is_empty()).then_some(thread_id),
        ts: row.get(6)?,
        stream_pos: row.get(7)?,
    })
}

/// A JSON array for `IN (SELECT value FROM json_each(?))`: SQLite has no
/// array parameters.
pub(super) fn json_array<T: Clone + Into<serde_json::Value>>(values: &[T]) -> String {
    serde_json::Value::from(values.to_vec()).to_string()
}

/// The nid of a `(type, state_key)` pair, interning it on first use.
fn intern_state_key(tx: &Transaction<'_>, kind: &str, state_key: &str) -> rusqlite::Result<i64> {
    let known = tx
        .prepare_cached("SELECT state_key_nid FROM state_keys WHERE kind = ?1 AND state_key = ?2")?
        .query_row([kind, state_key], |row| row.get(0))
        .optional()?;
    if let Some(nid) = known {
        return Ok(nid);
    }
    let nid = next_counter(tx, "state_key_nid")?;
    tx.prepare_cached(
        "INSERT INTO state_keys (state_key_nid, kind, state_key) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![nid, kind, state_key])?;
    Ok(nid)
}

/// The length of a snapshot's delta chain (0 for the empty state).
fn chain_length(tx: &Transaction, snapshot: i64) -> rusqlite::Result<i64> {
    if snapshot == 0 {
        return Ok(0);
    }
    tx.prepare_cached("SELECT chain_length FROM state_snapshots WHERE snapshot_nid = ?1")?
        .query_row([snapshot], |row| row.get(0))
}

/// Writes the snapshot `base` plus `state_key_nid → event_nid`: a one-entry
/// delta on `base`, or a full copy once `base`'s chain is as long as allowed
/// (or there is no base). Returns its nid.
fn write_snapshot(
    tx: &Transaction<'_>,
    room_nid: i64,
    base: i64,
    state_key_nid: i64,
    event_nid: i64,
) -> rusqlite::Result<i64> {
    let base_length = chain_length(tx, base)?;
    let delta = base != 0 && base_length < STATE_CHAIN_LENGTH_MAX;
    let snapshot_nid = if delta {
        insert_snapshot(tx, room_nid, Some(base), base_length + 1)?
    } else {
        insert_snapshot(tx, room_nid, None, 1)?
    };
    if !delta && base != 0 {
        tx.prepare_cached(concat!(
            snapshot_chain!(),
            "INSERT INTO state_snapshot_entries (snapshot_nid, state_key_nid, event_nid)
             SELECT ?3, state_key_nid, event_nid FROM nearest
             WHERE pick = 1 AND event_nid <> 0 AND state_key_nid <> ?4"
        ))?
        .execute(params![
            base,
            STATE_CHAIN_LENGTH_MAX,
            snapshot_nid,
            state_key_nid
        ])?;
    }
    insert_entry(tx, snapshot_nid, state_key_nid, event_nid)?;
    Ok(snapshot_nid)
}

/// A new snapshot row (its entries are written by the caller).
fn insert_snapshot(
    tx: &Transaction<'_>,
    room_nid: i64,
    base_nid: Option<i64>,
    chain_length: i64,
) -> rusqlite::Result<i64> {
    let snapshot_nid = next_counter(tx, "snapshot_nid")?;
    tx.prepare_cached(
        "INSERT INTO state_snapshots (snapshot_nid, room_nid, base_nid, chain_length)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![snapshot_nid, room_nid, base_nid, chain_length])?;
    Ok(snapshot_nid)
}

fn insert_entry(
    tx: &Transaction<'_>,
    snapshot_nid: i64,
    state_key_nid: i64,
    event_nid: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO state_snapshot_entries (snapshot_nid, state_key_nid, event_nid)
         VALUES (?1, ?2, ?3)",
    )?
    .execute(params![snapshot_nid, state_key_nid, event_nid])?;
    Ok(())
}

/// The room's current snapshot; `None` if there is no such room.
fn current_snapshot_of(conn: &Connection, room_nid: i64) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT current_snapshot_nid FROM rooms WHERE room_nid = ?1")?
        .query_row([room_nid], |row| row.get(0))
        .optional()
}

/// The `state_key_nid → event_nid` pairs of a snapshot (0 is the empty state).
fn snapshot_pairs(conn: &Connection, snapshot_nid: i64) -> rusqlite::Result<HashMap<i64, i64>> {
    if snapshot_nid == 0 {
        return Ok(HashMap::new());
    }
    let mut stmt = conn.prepare_cached(concat!(
        snapshot_chain!(),
        "SELECT state_key_nid, event_nid FROM nearest WHERE pick = 1 AND event_nid <> 0"
    ))?;
    let rows = stmt.query_map(params![snapshot_nid, STATE_CHAIN_LENGTH_MAX], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })?;
    rows.collect()
}

/// The snapshot after an event of the room.
fn state_after_of(tx: &Transaction<'_>, room_nid: i64, event_id: &str) -> StorageResult<i64> {
    let row: Option<(i64, i16)> = tx
        .prepare_cached(
            "SELECT e.state_after_nid, e.status FROM event_locator l
             JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
             WHERE l.event_id = ?1 AND l.room_nid = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![event_id, room_nid], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })
        .map_err(db_error)?;
    match row {
        None => Err(unknown_state_event(event_id, "not an event of the room")),
        Some((_, status)) if EventStatus::from_i16(status) == EventStatus::Outlier => {
            Err(unknown_state_event(event_id, "an outlier has no state"))
        }
        Some((nid, _)) => Ok(nid),
    }
}

/// `state` as `state_key_nid → event_nid` pairs, checking that each event
/// is an event of the room with that `(type, state_key)`.
fn state_nids(
    tx: &Transaction<'_>,
    room_nid: i64,
    state: &StateMap,
) -> StorageResult<HashMap<i64, i64>> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT e.event_nid, e.state_key_nid, e.kind, e.state_key FROM event_locator l
             JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
             WHERE l.event_id = ?1 AND l.room_nid = ?2",
        )
        .map_err(db_error)?;
    let mut pairs = HashMap::with_capacity(state.len());
    for ((kind, state_key), event_id) in state {
        let row: Option<(i64, Option<i64>, String, Option<String>)> = stmt
            .query_row(params![event_id, room_nid], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()
            .map_err(db_error)?;
        let Some((event_nid, key_nid, row_kind, row_key)) = row else {
            return Err(unknown_state_event(event_id, "not an event of the room"));
        };
        match key_nid {
            Some(key_nid) if &row_kind == kind && row_key.as_ref() == Some(state_key) => {
                pairs.insert(key_nid, event_nid);
            }
            _ => {
                return Err(unknown_state_event(
                    event_id,
                    &format!("not the ({kind}, {state_key:?}) state event"),
                ));
            }
        }
    }
    Ok(pairs)
}

/// Writes `state` as a snapshot over `base` (a delta, or full when
/// [`snapshot_entries`] says so); `base` itself when they are equal.
fn write_state(
    tx: &Transaction<'_>,
    room_nid: i64,
    base: i64,
    state: &HashMap<i64, i64>,
) -> rusqlite::Result<i64> {
    let base_pairs = snapshot_pairs(tx, base)?;
    let base_length = chain_length(tx, base)?;
    let over = (base != 0).then_some((&base_pairs, base_length));
    let Some((entries, full)) = snapshot_entries(over, state) else {
        return Ok(base);
    };
    let (base_nid, chain_length) = if full {
        (None, 1)
    } else {
        (Some(base), base_length + 1)
    };
    let snapshot_nid = insert_snapshot(tx, room_nid, base_nid, chain_length)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO state_snapshot_entries (snapshot_nid, state_key_nid, event_nid)
         VALUES (?1, ?2, ?3)",
    )?;
    for (key, event) in entries {
        insert.execute(params![snapshot_nid, key, event])?;
    }
    Ok(snapshot_nid)
}

/// The snapshot of a given [`StateBefore`] (`current` for the room's own).
fn state_before_of(tx: &Transaction<'_>, event: &NewEvent, current: i64) -> StorageResult<i64> {
    match &event.state_before {
        StateBefore::Current => Ok(current),
        StateBefore::AfterEvent(id) => state_after_of(tx, event.room_nid, id),
        StateBefore::Resolved { base, state } => {
            let base = state_after_of(tx, event.room_nid, base)?;
            let pairs = state_nids(tx, event.room_nid, state)?;
            write_state(tx, event.room_nid, base, &pairs).map_err(db_error)
        }
    }
}

/// Moves the room's head to [`NewEvent::new_head`]: current snapshot,
/// current state table, memberships, forward extremities.
fn apply_head(
    tx: &Transaction<'_>,
    event: &NewEvent,
    persisted: &PersistedEvent,
) -> StorageResult<()> {
    let Some(head) = &event.new_head else {
        return Ok(());
    };
    let room_nid = event.room_nid;
    let (snapshot, new) = match &head.resolved_state {
        None => (
            persisted.state_after_nid,
            snapshot_pairs(tx, persisted.state_after_nid).map_err(db_error)?,
        ),
        Some(state) => {
            let pairs = state_nids(tx, room_nid, state)?;
            let nid =
                write_state(tx, room_nid, persisted.state_after_nid, &pairs).map_err(db_error)?;
            (nid, pairs)
        }
    };
    let mut extremities = Vec::with_capacity(head.extremities.len());
    for id in &head.extremities {
        let nid: Option<i64> = tx
            .prepare_cached(
                "SELECT event_nid FROM event_locator WHERE event_id = ?1 AND room_nid = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![id, room_nid], |row| row.get(0))
                    .optional()
            })
            .map_err(db_error)?;
        extremities.push(nid.ok_or_else(|| {
            crate::StorageError::Backend(format!(
                "forward extremity {id} is not an event of the room"
            ))
        })?);
    }
    (|| {
        let old: HashMap<i64, i64> = tx
            .prepare_cached(
                "SELECT state_key_nid, event_nid FROM current_state WHERE room_nid = ?1",
            )?
            .query_map([room_nid], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (key, change) in state_changes(&old, &new) {
            let (kind, state_key): (String, String) = tx
                .prepare_cached("SELECT kind, state_key FROM state_keys WHERE state_key_nid = ?1")?
                .query_row([key], |row| Ok((row.get(0)?, row.get(1)?)))?;
            match change {
                Some(event_nid) => {
                    tx.prepare_cached(
                        "INSERT INTO current_state (room_nid, state_key_nid, event_nid)
                         VALUES (?1, ?2, ?3)
                         ON CONFLICT (room_nid, state_key_nid)
                         DO UPDATE SET event_nid = excluded.event_nid",
                    )?
                    .execute(params![room_nid, key, event_nid])?;
                    if kind != "m.room.member" {
                        continue;
                    }
                    let member: Option<(Option<String>, String)> = tx
                        .prepare_cached(
                            "SELECT membership, event_id FROM events
                             WHERE room_nid = ?1 AND event_nid = ?2",
                        )?
                        .query_row(params![room_nid, event_nid], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()?;
                    if let Some((Some(membership), event_id)) = member {
                        tx.prepare_cached(
                            "INSERT INTO memberships
                             (room_nid, user_id, membership, event_nid, event_id, stream_pos,
                              forgotten)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
                             ON CONFLICT (room_nid, user_id) DO UPDATE
                             SET membership = excluded.membership,
                                 event_nid = excluded.event_nid, event_id = excluded.event_id,
                                 stream_pos = excluded.stream_pos, forgotten = 0",
                        )?
                        .execute(params![
                            room_nid,
                            state_key,
                            membership,
                            event_nid,
                            event_id,
                            event.stream_pos
                        ])?;
                    }
                }
                None => {
                    tx.prepare_cached(
                        "DELETE FROM current_state WHERE room_nid = ?1 AND state_key_nid = ?2",
                    )?
                    .execute(params![room_nid, key])?;
                    if kind == "m.room.member" {
                        tx.prepare_cached(
                            "DELETE FROM memberships WHERE room_nid = ?1 AND user_id = ?2",
                        )?
                        .execute(params![room_nid, state_key])?;
                    }
                }
            }
        }
        tx.prepare_cached("UPDATE rooms SET current_snapshot_nid = ?2 WHERE room_nid = ?1")?
            .execute(params![room_nid, snapshot])?;
        tx.prepare_cached("DELETE FROM forward_extremities WHERE room_nid = ?1")?
            .execute([room_nid])?;
        for nid in extremities {
            tx.prepare_cached(
                "INSERT INTO forward_extremities (room_nid, event_nid) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![room_nid, nid])?;
        }
        Ok(())
    })()
    .map_err(db_error)
}

/// [`RoomStore::persist_event`] in the writer's transaction; `current` is
/// the room's current snapshot.
fn persist_one(
    tx: &Transaction<'_>,
    event: &NewEvent,
    current: i64,
) -> StorageResult<PersistedEvent> {
    check_state_of(event)?;
    let before = state_before_of(tx, event, current)?;
    let prev_events = json_array(&event.prev_events);
    let persisted = persist(tx, event, before, &prev_events).map_err(db_error)?;
    apply_head(tx, event, &persisted)?;
    Ok(persisted)
}

/// The body of [`RoomStore::persist_event`], in the writer's transaction;
/// `before` is the snapshot before the event (the room's current one for a
/// local event).
fn persist(
    tx: &Transaction<'_>,
    event: &NewEvent,
    before: i64,
    prev_events: &str,
) -> rusqlite::Result<PersistedEvent> {
    let room_nid = event.room_nid;
    let event_nid = next_counter(tx, "event_nid")?;
    // First, so that a duplicate event id fails before anything else.
    tx.prepare_cached(
        "INSERT INTO event_locator (event_id, room_nid, event_nid) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![event.event_id, room_nid, event_nid])?;
    let state_key_nid = match &event.state_key {
        Some(state_key) => Some(intern_state_key(tx, &event.kind, state_key)?),
        None => None,
    };
    let given = event.state_before.is_given();
    let (state_before_nid, state_after_nid) = match (event.status, state_key_nid) {
        (EventStatus::Outlier, _) => (0, 0),
        (EventStatus::Normal, Some(key)) => (
            before,
            write_snapshot(tx, room_nid, before, key, event_nid)?,
        ),
        // A soft-failed event from another server passed auth at its
        // position: an event citing it builds on the state after it.
        (EventStatus::SoftFailed, Some(key)) if given => (
            before,
            write_snapshot(tx, room_nid, before, key, event_nid)?,
        ),
        // Rejected events change no state, and a local soft-failed one
        // never becomes a prev event.
        _ => (before, before),
    };
    let txn = event.txn.as_ref();
    tx.prepare_cached(
        "INSERT INTO events
         (room_nid, event_nid, event_id, kind, state_key, state_key_nid, sender,
          origin_server_ts, depth, stream_pos, json, membership, redacts, redacted_by,
          state_before_nid, state_after_nid, status, slot_epoch,
          txn_user_id, txn_device_id, txn_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, NULL,
                 ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?
    .execute(params![
        room_nid,
        event_nid,
        event.event_id,
        event.kind,
        event.state_key,
        state_key_nid,
        event.sender,
        event.origin_server_ts,
        event.depth,
        event.stream_pos,
        event.json,
        event.membership,
        event.redacts,
        state_before_nid,
        state_after_nid,
        event.status.as_i16(),
        event.slot_epoch,
        txn.map(|t| &t.user_id),
        txn.map(|t| &t.device_id),
        txn.map(|t| &t.txn_id),
    ])?;
    if let Some(txn) = txn {
        tx.prepare_cached(
            "INSERT INTO txn_ids (room_nid, user_id, device_id, txn_id, event_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            event.room_nid,
            txn.user_id,
            txn.device_id,
            txn.txn_id,
            event.event_id
        ])?;
    }
    if event.status != EventStatus::Normal {
        return Ok(PersistedEvent {
            event_nid,
            stream_pos: event.stream_pos,
            state_before_nid,
            state_after_nid,
        });
    }

    if event.new_head.is_none()
        && let Some(key) = state_key_nid
    {
        tx.prepare_cached("UPDATE rooms SET current_snapshot_nid = ?2 WHERE room_nid = ?1")?
            .execute(params![room_nid, state_after_nid])?;
        tx.prepare_cached(
            "INSERT INTO current_state (room_nid, state_key_nid, event_nid) VALUES (?1, ?2, ?3)
             ON CONFLICT (room_nid, state_key_nid) DO UPDATE SET event_nid = excluded.event_nid",
        )?
        .execute(params![room_nid, key, event_nid])?;
    }
    if event.new_head.is_none()
        && event.kind == "m.room.member"
        && let (Some(user_id), Some(membership)) = (&event.state_key, &event.membership)
    {
        tx.prepare_cached(
            "INSERT INTO memberships
             (room_nid, user_id, membership, event_nid, event_id, stream_pos, forgotten)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
             ON CONFLICT (room_nid, user_id) DO UPDATE
             SET membership = excluded.membership, event_nid = excluded.event_nid,
                 event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0",
        )?
        .execute(params![
            room_nid,
            user_id,
            membership,
            event_nid,
            event.event_id,
            event.stream_pos
        ])?;
    }
    if event.new_head.is_none() {
        tx.prepare_cached(
            "DELETE FROM forward_extremities WHERE room_nid = ?1 AND event_nid IN
             (SELECT event_nid FROM event_locator
              WHERE room_nid = ?1 AND event_id IN (SELECT value FROM json_each(?2)))",
        )?
        .execute(params![room_nid, prev_events])?;
        tx.prepare_cached("INSERT INTO forward_extremities (room_nid, event_nid) VALUES (?1, ?2)")?
            .execute(params![room_nid, event_nid])?;
    }
    if let Some(relation) = relation_of(event) {
        tx.prepare_cached(
            "INSERT INTO event_relations
             (room_nid, event_nid, event_id, relates_to_id, rel_type, annotation_key, sender,
              kind, is_state, origin_server_ts, stream_pos, depth)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            room_nid,
            event_nid,
            event.event_id,
            relation.relates_to_id,
            relation.rel_type,
            relation.annotation_key,
            event.sender,
            event.kind,
            event.state_key.is_some(),
            event.origin_server_ts,
            event.stream_pos,
            event.depth
        ])?;
    }
    super::search::index_event(tx, event, event_nid)?;
    super::push::record_actions(tx, event)?;
    if let Some(target) = &event.redacts {
        // A redacted event loses its `m.relates_to`: it relates no more.
        tx.prepare_cached("DELETE FROM event_relations WHERE room_nid = ?1 AND event_id = ?2")?
            .execute(params![room_nid, target])?;
        // Nor can its text be found any more.
        super::search::unindex_event(tx, room_nid, target)?;
        // The first redaction stays the one shown; a later one changes nothing
        // a client sees.
        tx.prepare_cached(
            "UPDATE events SET redacted_by = COALESCE(redacted_by, ?3)
             WHERE room_nid = ?1 AND event_nid =
                 (SELECT event_nid FROM event_locator WHERE event_id = ?2 AND room_nid = ?1)",
        )?
        .execute(params![room_nid, target, event.event_id])?;
    }
    Ok(PersistedEvent {
        event_nid,
        stream_pos: event.stream_pos,
        state_before_nid,
        state_after_nid,
    })
}

#[async_trait]
impl RoomStore for SqliteStorage {
    async fn create_room(
        &self,
        room_id: &str,
        room_version: &str,
        created_ms: i64,
    ) -> StorageResult<RoomRecord> {
        let (room_id, room_version) = (room_id.to_owned(), room_version.to_owned());
        self.write(move |tx| {
            let room_nid = next_counter(tx, "room_nid")?;
            tx.prepare_cached(
                "INSERT INTO rooms (room_nid, room_id, room_version, created_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![room_nid, room_id, room_version, created_ms])?;
            Ok(RoomRecord {
                room_nid,
                room_id,
                room_version,
                created_ms,
            })
        })
        .await
    }

    async fn room(&self, room_id: &str) -> StorageResult<Option<RoomRecord>> {
        let room_id = room_id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT room_nid, room_id, room_version, created_ms FROM rooms WHERE room_id = ?1",
            )?
            .query_row([room_id], |row| {
                Ok(RoomRecord {
                    room_nid: row.get(0)?,
                    room_id: row.get(1)?,
                    room_version: row.get(2)?,
                    created_ms: row.get(3)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn next_stream_pos(&self, stream: Stream) -> StorageResult<i64> {
        self.write(move |tx| next_counter(tx, stream_counter(stream)))
            .await
    }

    async fn max_stream_pos(&self, stream: Stream) -> StorageResult<i64> {
        // A writer may allocate positions itself (the single node's tracker
        // does) and never draw from the counter: the greatest position
        // written counts too, so a restarted writer never reuses one.
        let written = match stream {
            Stream::Events => "SELECT COALESCE(MAX(stream_pos), 0) FROM events",
            Stream::Receipts => "SELECT COALESCE(MAX(stream_pos), 0) FROM receipts",
            Stream::AccountData => "SELECT COALESCE(MAX(stream_id), 0) FROM account_data",
            // Delivered messages are deleted; the counter keeps the greatest.
            Stream::ToDevice => "SELECT COALESCE(MAX(stream_pos), 0) FROM to_device_inbox",
            Stream::DeviceLists => "SELECT COALESCE(MAX(stream_pos), 0) FROM device_list_changes",
        };
        self.read(move |conn| {
            let drawn: i64 = conn
                .prepare_cached("SELECT position FROM counters WHERE name = ?1")?
                .query_row([stream_counter(stream)], |row| row.get(0))?;
            let written: i64 = conn
                .prepare_cached(written)?
                .query_row([], |row| row.get(0))?;
            Ok(drawn.max(written))
        })
        .await
    }

    async fn persist_event(&self, event: NewEvent) -> StorageResult<PersistedEvent> {
        self.write_with(move |tx| {
            let current = current_snapshot_of(tx, event.room_nid)
                .map_err(db_error)?
                .ok_or_else(|| unknown_room(event.room_nid))?;
            persist_one(tx, &event, current)
        })
        .await
    }

    async fn persist_events(&self, events: Vec<NewEvent>) -> StorageResult<Vec<PersistedEvent>> {
        check_batch(&events)?;
        self.write_with(move |tx| {
            let mut persisted = Vec::with_capacity(events.len());
            for event in &events {
                // Re-read: the previous event of the batch may have moved it.
                let current = current_snapshot_of(tx, event.room_nid)
                    .map_err(db_error)?
                    .ok_or_else(|| unknown_room(event.room_nid))?;
                persisted.push(persist_one(tx, event, current)?);
            }
            Ok(persisted)
        })
        .await
    }

    async fn txn_event(
        &self,
        room_nid: i64,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
    ) -> StorageResult<Option<String>> {
        let (user_id, device_id, txn_id) =
            (user_id.to_owned(), device_id.to_owned(), txn_id.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT event_id FROM txn_ids \
                 WHERE user_id = ?1 AND device_id = ?2 AND room_nid = ?3 AND txn_id = ?4",
            )?
            .query_row(params![user_id, device_id, room_nid, txn_id], |row| {
                row.get(0)
            })
            .optional()
        })
        .await
    }

    async fn event(&self, event_id: &str) -> StorageResult<Option<StoredEvent>> {
        let event_id = event_id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                " FROM event_locator l
                 JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
                 JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE l.event_id = ?1"
            ))?
            .query_row([event_id], event_from_row)
            .optional()
        })
        .await
    }

    async fn events(&self, event_ids: &[String]) -> StorageResult<Vec<StoredEvent>> {
        let mut ids = event_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let batches: Vec<String> = ids.chunks(EVENTS_LOOKUP_BATCH).map(json_array).collect();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                " FROM event_locator l
                 JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
                 JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE l.event_id IN (SELECT value FROM json_each(?1))"
            ))?;
            let mut found = Vec::new();
            for batch in batches {
                for event in stmt.query_map([batch], event_from_row)? {
                    found.push(event?);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn forward_extremities(&self, room_nid: i64) -> StorageResult<Vec<(String, i64)>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT e.event_id, e.depth FROM forward_extremities f
                 JOIN events e ON e.room_nid = f.room_nid AND e.event_nid = f.event_nid
                 WHERE f.room_nid = ?1
                 ORDER BY e.depth DESC, e.event_nid DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![room_nid, LIST_MAX], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn current_snapshot(&self, room_nid: i64) -> StorageResult<i64> {
        self.read(move |conn| Ok(current_snapshot_of(conn, room_nid)?.unwrap_or(0)))
            .await
    }

    async fn current_state(&self, room_nid: i64) -> StorageResult<Vec<StoredEvent>> {
        let rows = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM current_state c
                     JOIN events e ON e.room_nid = c.room_nid AND e.event_nid = c.event_nid
                     JOIN rooms r ON r.room_nid = e.room_nid
                     WHERE c.room_nid = ?1
                     ORDER BY c.state_key_nid LIMIT ?2"
                ))?;
                let rows =
                    stmt.query_map(params![room_nid, STATE_ENTRIES_MAX + 1], event_from_row)?;
                rows.collect()
            })
            .await?;
        bounded_state(rows, "the current state")
    }

    async fn current_state_event(
        &self,
        room_nid: i64,
        kind: &str,
        state_key: &str,
    ) -> StorageResult<Option<StoredEvent>> {
        let (kind, state_key) = (kind.to_owned(), state_key.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                " FROM state_keys k
                 JOIN current_state c ON c.state_key_nid = k.state_key_nid AND c.room_nid = ?1
                 JOIN events e ON e.room_nid = c.room_nid AND e.event_nid = c.event_nid
                 JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE k.kind = ?2 AND k.state_key = ?3"
            ))?
            .query_row(params![room_nid, kind, state_key], event_from_row)
            .optional()
        })
        .await
    }

    async fn state_at(&self, snapshot_nid: i64) -> StorageResult<Vec<StateEntry>> {
        let rows = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(concat!(
                    snapshot_chain!(),
                    "SELECT k.kind, k.state_key, l.event_id FROM nearest n
                     JOIN state_keys k ON k.state_key_nid = n.state_key_nid
                     JOIN event_locator l ON l.event_nid = n.event_nid
                     WHERE n.pick = 1 AND n.event_nid <> 0
                     ORDER BY k.kind, k.state_key LIMIT ?3"
                ))?;
                let rows = stmt.query_map(
                    params![snapshot_nid, STATE_CHAIN_LENGTH_MAX, STATE_ENTRIES_MAX + 1],
                    |row| {
                        Ok(StateEntry {
                            kind: row.get(0)?,
                            state_key: row.get(1)?,
                            event_id: row.get(2)?,
                        })
                    },
                )?;
                rows.collect()
            })
            .await?;
        bounded_state(rows, "the state snapshot")
    }

    async fn state_event_at(
        &self,
        snapshot_nid: i64,
        kind: &str,
        state_key: &str,
    ) -> StorageResult<Option<StoredEvent>> {
        let (kind, state_key) = (kind.to_owned(), state_key.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(concat!(
                "WITH RECURSIVE chain (snapshot_nid, base_nid, hop) AS (
                     SELECT snapshot_nid, base_nid, 0 FROM state_snapshots
                     WHERE snapshot_nid = ?1
                     UNION ALL
                     SELECT s.snapshot_nid, s.base_nid, chain.hop + 1
                     FROM state_snapshots s JOIN chain ON s.snapshot_nid = chain.base_nid
                     WHERE chain.hop + 1 < ?2
                 ),
                 hit AS (
                     SELECT se.event_nid FROM state_keys k
                     JOIN state_snapshot_entries se ON se.state_key_nid = k.state_key_nid
                     JOIN chain ON chain.snapshot_nid = se.snapshot_nid
                     WHERE k.kind = ?3 AND k.state_key = ?4
                     ORDER BY chain.hop LIMIT 1
                 )
                 SELECT ",
                event_columns!(),
                " FROM hit
                 JOIN event_locator l ON l.event_nid = hit.event_nid
                 JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
                 JOIN rooms r ON r.room_nid = e.room_nid"
            ))?
            .query_row(
                params![snapshot_nid, STATE_CHAIN_LENGTH_MAX, kind, state_key],
                event_from_row,
            )
            .optional()
        })
        .await
    }

    async fn room_events_by_stream(
        &self,
        room_nid: i64,
        after: i64,
        upto: i64,
        limit: u32,
        newest_first: bool,
    ) -> StorageResult<Vec<StoredEvent>> {
        let limit = i64::from(limit).min(LIST_MAX);
        self.read(move |conn| {
            let mut stmt = if newest_first {
                conn.prepare_cached(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                     WHERE e.room_nid = ?1 AND e.stream_pos > ?2 AND e.stream_pos <= ?3
                       AND e.status = 0
                     ORDER BY e.stream_pos DESC LIMIT ?4"
                ))?
            } else {
                conn.prepare_cached(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                     WHERE e.room_nid = ?1 AND e.stream_pos > ?2 AND e.stream_pos <= ?3
                       AND e.status = 0
                     ORDER BY e.stream_pos ASC LIMIT ?4"
                ))?
            };
            let rows = stmt.query_map(params![room_nid, after, upto, limit], event_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn rooms_events_by_stream(
        &self,
        room_nids: &[i64],
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>> {
        if room_nids.is_empty() {
            return Ok(Vec::new());
        }
        let room_nids = json_array(room_nids);
        let limit = i64::from(limit).min(LIST_MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE e.room_nid IN (SELECT value FROM json_each(?1))
                   AND e.stream_pos > ?2 AND e.stream_pos <= ?3 AND e.status = 0
                 ORDER BY e.stream_pos DESC LIMIT ?4"
            ))?;
            let rows = stmt.query_map(params![room_nids, after, upto, limit], event_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn room_events_topological(
        &self,
        room_nid: i64,
        from: TopoPos,
        dir: Direction,
        to: Option<TopoPos>,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>> {
        let limit = i64::from(limit).min(LIST_MAX);
        // No `to`: a bound no event reaches, so one statement serves both.
        let to = to.unwrap_or(match dir {
            Direction::Forward => TopoPos {
                depth: i64::MAX,
                stream_pos: i64::MAX,
            },
            Direction::Backward => TopoPos {
                depth: i64::MIN,
                stream_pos: i64::MIN,
            },
        });
        self.read(move |conn| {
            let mut stmt = match dir {
                Direction::Forward => conn.prepare_cached(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                     WHERE e.room_nid = ?1
                       AND (e.depth, e.stream_pos) > (?2, ?3)
                       AND (e.depth, e.stream_pos) < (?4, ?5)
                       AND e.stream_pos <= ?6 AND e.status = 0
                     ORDER BY e.depth ASC, e.stream_pos ASC LIMIT ?7"
                ))?,
                Direction::Backward => conn.prepare_cached(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                     WHERE e.room_nid = ?1
                       AND (e.depth, e.stream_pos) < (?2, ?3)
                       AND (e.depth, e.stream_pos) > (?4, ?5)
                       AND e.stream_pos <= ?6 AND e.status = 0
                     ORDER BY e.depth DESC, e.stream_pos DESC LIMIT ?7"
                ))?,
            };
            let rows = stmt.query_map(
                params![
                    room_nid,
                    from.depth,
                    from.stream_pos,
                    to.depth,
                    to.stream_pos,
                    upto,
                    limit
                ],
                event_from_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn user_memberships(&self, user_id: &str) -> StorageResult<Vec<UserMembership>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT m.room_nid, r.room_id, m.membership, m.event_id, m.stream_pos, m.forgotten
                 FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid
                 WHERE m.user_id = ?1 ORDER BY m.room_nid LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![user_id, LIST_MAX], |row| {
                Ok(UserMembership {
                    room_nid: row.get(0)?,
                    room_id: row.get(1)?,
                    membership: row.get(2)?,
                    event_id: row.get(3)?,
                    stream_pos: row.get(4)?,
                    forgotten: row.get(5)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn room_members(&self, room_nid: i64) -> StorageResult<Vec<RoomMember>> {
        let rows = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT user_id, membership, event_id FROM memberships
                     WHERE room_nid = ?1 ORDER BY user_id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![room_nid, STATE_ENTRIES_MAX + 1], |row| {
                    Ok(RoomMember {
                        user_id: row.get(0)?,
                        membership: row.get(1)?,
                        event_id: row.get(2)?,
                    })
                })?;
                rows.collect()
            })
            .await?;
        bounded_state(rows, "the member list")
    }

    async fn forget_room(&self, user_id: &str, room_nid: i64) -> StorageResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE memberships SET forgotten = 1 WHERE room_nid = ?1 AND user_id = ?2",
            )?
            .execute(params![room_nid, user_id])?;
            Ok(())
        })
        .await
    }

    async fn create_alias(&self, alias: &RoomAlias) -> StorageResult<()> {
        let alias = alias.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO room_aliases (alias, room_id, creator) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![alias.alias, alias.room_id, alias.creator])?;
            Ok(())
        })
        .await
    }

    async fn alias(&self, alias: &str) -> StorageResult<Option<RoomAlias>> {
        let alias = alias.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT alias, room_id, creator FROM room_aliases WHERE alias = ?1",
            )?
            .query_row([alias], |row| {
                Ok(RoomAlias {
                    alias: row.get(0)?,
                    room_id: row.get(1)?,
                    creator: row.get(2)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn delete_alias(&self, alias: &str) -> StorageResult<bool> {
        let alias = alias.to_owned();
        self.write(move |tx| {
            Ok(tx
                .prepare_cached("DELETE FROM room_aliases WHERE alias = ?1")?
                .execute([alias])?
                > 0)
        })
        .await
    }

    async fn room_aliases(&self, room_id: &str) -> StorageResult<Vec<String>> {
        let room_id = room_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT alias FROM room_aliases WHERE room_id = ?1 ORDER BY alias LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![room_id, LIST_MAX], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn put_receipt(&self, receipt: &Receipt) -> StorageResult<()> {
        let receipt = receipt.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO receipts
                 (room_nid, user_id, receipt_type, thread_id, event_id, ts, stream_pos)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (room_nid, user_id, receipt_type, thread_id) DO UPDATE
                 SET event_id = excluded.event_id, ts = excluded.ts,
                     stream_pos = excluded.stream_pos",
            )?
            .execute(params![
                receipt.room_nid,
                receipt.user_id,
                receipt.receipt_type,
                receipt.thread_id.as_deref().unwrap_or(""),
                receipt.event_id,
                receipt.ts,
                receipt.stream_pos
            ])?;
            Ok(())
        })
        .await
    }

    async fn receipts_between(
        &self,
        room_nids: &[i64],
        after: i64,
        upto: i64,
    ) -> StorageResult<Vec<Receipt>> {
        if room_nids.is_empty() {
            return Ok(Vec::new());
        }
        let room_nids = json_array(room_nids);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.room_nid, r.room_id, c.user_id, c.receipt_type, c.event_id, c.thread_id,
                        c.ts, c.stream_pos
                 FROM receipts c JOIN rooms r ON r.room_nid = c.room_nid
                 WHERE c.room_nid IN (SELECT value FROM json_each(?1))
                   AND c.stream_pos > ?2 AND c.stream_pos <= ?3
                 ORDER BY c.stream_pos LIMIT ?4",
            )?;
            let rows =
                stmt.query_map(params![room_nids, after, upto, LIST_MAX], receipt_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn room_receipts(&self, room_nid: i64) -> StorageResult<Vec<Receipt>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.room_nid, r.room_id, c.user_id, c.receipt_type, c.event_id, c.thread_id,
                        c.ts, c.stream_pos
                 FROM receipts c JOIN rooms r ON r.room_nid = c.room_nid
                 WHERE c.room_nid = ?1
                 ORDER BY c.stream_pos DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![room_nid, LIST_MAX], receipt_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn user_receipts(&self, room_nid: i64, user_id: &str) -> StorageResult<Vec<Receipt>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.room_nid, r.room_id, c.user_id, c.receipt_type, c.event_id, c.thread_id,
                        c.ts, c.stream_pos
                 FROM receipts c JOIN rooms r ON r.room_nid = c.room_nid
                 WHERE c.room_nid = ?1 AND c.user_id = ?2
                 ORDER BY c.stream_pos DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![room_nid, user_id, LIST_MAX], receipt_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn account_data_between(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> StorageResult<Vec<AccountDataChange>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT room_id, data_type, content, stream_id FROM account_data
                 WHERE user_id = ?1 AND stream_id > ?2 AND stream_id <= ?3
                 ORDER BY stream_id LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![user_id, after, upto, LIST_MAX], |row| {
                let room_id: String = row.get(0)?;
                Ok(AccountDataChange {
                    room_id: (!room_id.is_empty()).then_some(room_id),
                    data_type: row.get(1)?,
                    content: json_column(row, 2)?,
                    stream_id: row.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

impl SqliteStorage {
    /// [`crate::DirectoryStore::room_events_by_ts`], here for the event columns.
    pub(super) async fn events_by_ts(
        &self,
        room_nid: i64,
        ts: i64,
        dir: Direction,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>> {
        let limit = i64::from(limit).min(LIST_MAX);
        self.read(move |conn| {
            let mut stmt = match dir {
                Direction::Forward => conn.prepare_cached(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                     WHERE e.room_nid = ?1 AND e.origin_server_ts >= ?2
                       AND e.stream_pos <= ?3 AND e.status = 0
                     ORDER BY e.origin_server_ts ASC, e.stream_pos ASC LIMIT ?4"
                ))?,
                Direction::Backward => conn.prepare_cached(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                     WHERE e.room_nid = ?1 AND e.origin_server_ts <= ?2
                       AND e.stream_pos <= ?3 AND e.status = 0
                     ORDER BY e.origin_server_ts DESC, e.stream_pos DESC LIMIT ?4"
                ))?,
            };
            let rows = stmt.query_map(params![room_nid, ts, upto, limit], event_from_row)?;
            rows.collect()
        })
        .await
    }
}
