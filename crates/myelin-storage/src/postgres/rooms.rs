//! [`RoomStore`] on PostgreSQL.
//!
//! Ids and stream positions come from sequences, so writers on several nodes
//! never collide. `persist_event` locks the room's row first: writes to one
//! room are serialised by the shard owner already, and the lock makes the
//! read-modify-write of its current snapshot, current state and extremities
//! safe even when two writers overlap (a handover), while different rooms
//! never wait on each other. Queries on `events` always name `room_nid`, the
//! partition key, so they touch one partition.

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{
    LIST_MAX, PostgresStorage, db_error, execute, json_column, query, query_one, query_opt,
};
use crate::relations::relation_of;
use crate::rooms::{
    EVENTS_LOOKUP_BATCH, STATE_CHAIN_LENGTH_MAX, STATE_ENTRIES_MAX, StateMap, bounded_state,
    check_batch, check_state_of, snapshot_entries, state_changes, unknown_room,
    unknown_state_event,
};
use crate::{
    AccountDataChange, Direction, EventStatus, NewEvent, PersistedEvent, Receipt, RoomAlias,
    RoomMember, RoomRecord, RoomStore, StateBefore, StateEntry, StorageError, StorageResult,
    StoredEvent, Stream, TopoPos, TxnKey, UserMembership,
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

/// The snapshots of the chain of `$1`, nearest first (`hop` 0 is `$1`
/// itself), at most `$2` of them: the bound holds even for a corrupt chain
/// that loops. `nearest` ranks each pair's entries along the chain.
macro_rules! snapshot_chain {
    () => {
        "WITH RECURSIVE chain (snapshot_nid, base_nid, hop) AS (
             SELECT snapshot_nid, base_nid, 0::BIGINT FROM state_snapshots
             WHERE snapshot_nid = $1
             UNION ALL
             SELECT s.snapshot_nid, s.base_nid, chain.hop + 1
             FROM state_snapshots s JOIN chain ON s.snapshot_nid = chain.base_nid
             WHERE chain.hop + 1 < $2
         ),
         nearest AS (
             SELECT se.state_key_nid, se.event_nid,
                    ROW_NUMBER() OVER (PARTITION BY se.state_key_nid ORDER BY chain.hop) AS pick
             FROM state_snapshot_entries se JOIN chain ON se.snapshot_nid = chain.snapshot_nid
         )"
    };
}

pub(super) fn event_from_row(row: &Row) -> StorageResult<StoredEvent> {
    let event = (|| {
        let txn_user_id: Option<String> = row.try_get(17)?;
        let txn_device_id: Option<String> = row.try_get(18)?;
        let txn_id: Option<String> = row.try_get(19)?;
        let txn = match (txn_user_id, txn_device_id, txn_id) {
            (Some(user_id), Some(device_id), Some(txn_id)) => Some(TxnKey {
                user_id,
                device_id,
                txn_id,
            }),
            _ => None,
        };
        Ok::<_, tokio_postgres::Error>(StoredEvent {
            event_nid: row.try_get(0)?,
            room_nid: row.try_get(1)?,
            room_id: row.try_get(2)?,
            event_id: row.try_get(3)?,
            kind: row.try_get(4)?,
            state_key: row.try_get(5)?,
            sender: row.try_get(6)?,
            origin_server_ts: row.try_get(7)?,
            depth: row.try_get(8)?,
            stream_pos: row.try_get(9)?,
            json: row.try_get(10)?,
            membership: row.try_get(11)?,
            redacts: row.try_get(12)?,
            redacted_by: row.try_get(13)?,
            state_before_nid: row.try_get(14)?,
            state_after_nid: row.try_get(15)?,
            status: EventStatus::from_i16(row.try_get(16)?),
            txn,
        })
    })();
    event.map_err(db_error)
}

pub(super) fn events_from_rows(rows: &[Row]) -> StorageResult<Vec<StoredEvent>> {
    rows.iter().map(event_from_row).collect()
}

fn receipt_from_row(row: &Row) -> StorageResult<Receipt> {
    let receipt = (|| {
        let thread_id: String = row.try_get(5)?;
        Ok::<_, tokio_postgres::Error>(Receipt {
            room_nid: row.try_get(0)?,
            room_id: row.try_get(1)?,
            user_id: row.try_get(2)?,
            receipt_type: row.try_get(3)?,
            event_id: row.try_get(4)?,
            thread_id: (!thread_id.is_empty()).then_some(thread_id),
            ts: row.try_get(6)?,
            stream_pos: row.try_get(7)?,
        })
    })();
    receipt.map_err(db_error)
}

pub(super) fn room_from_row(row: &Row) -> StorageResult<RoomRecord> {
    let room = (|| {
        Ok::<_, tokio_postgres::Error>(RoomRecord {
            room_nid: row.try_get(0)?,
            room_id: row.try_get(1)?,
            room_version: row.try_get(2)?,
            created_ms: row.try_get(3)?,
        })
    })();
    room.map_err(db_error)
}

/// The one BIGINT a row holds.
fn first_i64(row: &Row) -> StorageResult<i64> {
    row.try_get(0).map_err(db_error)
}

/// The nid of a `(type, state_key)` pair, interning it on first use.
async fn intern_state_key(
    client: &impl GenericClient,
    kind: &str,
    state_key: &str,
) -> StorageResult<i64> {
    const SELECT: &str = "SELECT state_key_nid FROM state_keys WHERE kind = $1 AND state_key = $2";
    if let Some(row) = query_opt(client, SELECT, &[&kind, &state_key]).await? {
        return first_i64(&row);
    }
    let inserted = query_opt(
        client,
        "INSERT INTO state_keys (state_key_nid, kind, state_key)
         VALUES (nextval('state_key_nid'), $1, $2)
         ON CONFLICT (kind, state_key) DO NOTHING
         RETURNING state_key_nid",
        &[&kind, &state_key],
    )
    .await?;
    match inserted {
        Some(row) => first_i64(&row),
        // Another transaction interned it in between; ON CONFLICT waited for
        // it to commit, so this statement's snapshot sees its row.
        None => first_i64(&query_one(client, SELECT, &[&kind, &state_key]).await?),
    }
}

/// The length of a snapshot's delta chain (0 for the empty state).
async fn chain_length(client: &impl GenericClient, snapshot: i64) -> StorageResult<i64> {
    if snapshot == 0 {
        return Ok(0);
    }
    first_i64(
        &query_one(
            client,
            "SELECT chain_length FROM state_snapshots WHERE snapshot_nid = $1",
            &[&snapshot],
        )
        .await?,
    )
}

/// Writes the snapshot `base` plus `state_key_nid → event_nid`: a one-entry
/// delta on `base`, or a full copy once `base`'s chain is as long as allowed
/// (or there is no base). Returns its nid.
async fn write_snapshot(
    client: &impl GenericClient,
    room_nid: i64,
    base: i64,
    state_key_nid: i64,
    event_nid: i64,
) -> StorageResult<i64> {
    let base_length = chain_length(client, base).await?;
    let delta = base != 0 && base_length < STATE_CHAIN_LENGTH_MAX;
    let (base_nid, chain_length) = if delta {
        (Some(base), base_length + 1)
    } else {
        (None, 1)
    };
    let snapshot_nid = insert_snapshot(client, room_nid, base_nid, chain_length).await?;
    if !delta && base != 0 {
        execute(
            client,
            concat!(
                snapshot_chain!(),
                "INSERT INTO state_snapshot_entries (snapshot_nid, state_key_nid, event_nid)
                 SELECT $3, state_key_nid, event_nid FROM nearest
                 WHERE pick = 1 AND event_nid <> 0 AND state_key_nid <> $4"
            ),
            &[
                &base,
                &STATE_CHAIN_LENGTH_MAX,
                &snapshot_nid,
                &state_key_nid,
            ],
        )
        .await?;
    }
    execute(
        client,
        "INSERT INTO state_snapshot_entries (snapshot_nid, state_key_nid, event_nid)
         VALUES ($1, $2, $3)",
        &[&snapshot_nid, &state_key_nid, &event_nid],
    )
    .await?;
    Ok(snapshot_nid)
}

/// A new snapshot row (its entries are written by the caller).
async fn insert_snapshot(
    client: &impl GenericClient,
    room_nid: i64,
    base_nid: Option<i64>,
    chain_length: i64,
) -> StorageResult<i64> {
    first_i64(
        &query_one(
            client,
            "INSERT INTO state_snapshots (snapshot_nid, room_nid, base_nid, chain_length)
             VALUES (nextval('snapshot_nid'), $1, $2, $3)
             RETURNING snapshot_nid",
            &[&room_nid, &base_nid, &chain_length],
        )
        .await?,
    )
}

/// `(a, b)` pairs of BIGINT rows.
fn pairs_from_rows(rows: &[Row]) -> StorageResult<HashMap<i64, i64>> {
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0).map_err(db_error)?,
                row.try_get(1).map_err(db_error)?,
            ))
        })
        .collect()
}

/// The `state_key_nid → event_nid` pairs of a snapshot (0 is the empty state).
async fn snapshot_pairs(
    client: &impl GenericClient,
    snapshot_nid: i64,
) -> StorageResult<HashMap<i64, i64>> {
    if snapshot_nid == 0 {
        return Ok(HashMap::new());
    }
    let rows = query(
        client,
        concat!(
            snapshot_chain!(),
            "SELECT state_key_nid, event_nid FROM nearest WHERE pick = 1 AND event_nid <> 0"
        ),
        &[&snapshot_nid, &STATE_CHAIN_LENGTH_MAX],
    )
    .await?;
    pairs_from_rows(&rows)
}

/// The snapshot after an event of the room.
async fn state_after_of(
    client: &impl GenericClient,
    room_nid: i64,
    event_id: &str,
) -> StorageResult<i64> {
    let row = query_opt(
        client,
        "SELECT e.state_after_nid, e.status FROM event_locator l
         JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
         WHERE l.event_id = $1 AND l.room_nid = $2 AND e.room_nid = $2",
        &[&event_id, &room_nid],
    )
    .await?;
    let Some(row) = row else {
        return Err(unknown_state_event(event_id, "not an event of the room"));
    };
    let status: i16 = row.try_get(1).map_err(db_error)?;
    if EventStatus::from_i16(status) == EventStatus::Outlier {
        return Err(unknown_state_event(event_id, "an outlier has no state"));
    }
    first_i64(&row)
}

/// `state` as `state_key_nid → event_nid` pairs, checking that each event
/// is an event of the room with that `(type, state_key)`.
async fn state_nids(
    client: &impl GenericClient,
    room_nid: i64,
    state: &StateMap,
) -> StorageResult<HashMap<i64, i64>> {
    let ids: Vec<&str> = state.values().map(String::as_str).collect();
    let mut found: HashMap<String, (i64, Option<i64>, String, Option<String>)> =
        HashMap::with_capacity(ids.len());
    for batch in ids.chunks(EVENTS_LOOKUP_BATCH) {
        let rows = query(
            client,
            "SELECT l.event_id, e.event_nid, e.state_key_nid, e.kind, e.state_key
             FROM event_locator l
             JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
             WHERE l.event_id = ANY($1) AND l.room_nid = $2 AND e.room_nid = $2",
            &[&batch, &room_nid],
        )
        .await?;
        for row in rows {
            let parsed = (|| {
                Ok::<_, tokio_postgres::Error>((
                    row.try_get::<_, String>(0)?,
                    (
                        row.try_get(1)?,
                        row.try_get(2)?,
                        row.try_get(3)?,
                        row.try_get(4)?,
                    ),
                ))
            })()
            .map_err(db_error)?;
            found.insert(parsed.0, parsed.1);
        }
    }
    let mut pairs = HashMap::with_capacity(state.len());
    for ((kind, state_key), event_id) in state {
        let Some((event_nid, key_nid, row_kind, row_key)) = found.get(event_id) else {
            return Err(unknown_state_event(event_id, "not an event of the room"));
        };
        match key_nid {
            Some(key_nid) if row_kind == kind && row_key.as_ref() == Some(state_key) => {
                pairs.insert(*key_nid, *event_nid);
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
async fn write_state(
    client: &impl GenericClient,
    room_nid: i64,
    base: i64,
    state: &HashMap<i64, i64>,
) -> StorageResult<i64> {
    let base_pairs = snapshot_pairs(client, base).await?;
    let base_length = chain_length(client, base).await?;
    let over = (base != 0).then_some((&base_pairs, base_length));
    let Some((entries, full)) = snapshot_entries(over, state) else {
        return Ok(base);
    };
    let (base_nid, chain_length) = if full {
        (None, 1)
    } else {
        (Some(base), base_length + 1)
    };
    let snapshot_nid = insert_snapshot(client, room_nid, base_nid, chain_length).await?;
    let (keys, events): (Vec<i64>, Vec<i64>) = entries.into_iter().unzip();
    execute(
        client,
        "INSERT INTO state_snapshot_entries (snapshot_nid, state_key_nid, event_nid)
         SELECT $1, k, e FROM UNNEST($2::BIGINT[], $3::BIGINT[]) AS t (k, e)",
        &[&snapshot_nid, &keys, &events],
    )
    .await?;
    Ok(snapshot_nid)
}

/// The snapshot of a given [`StateBefore`] (`current` for the room's own).
async fn state_before_of(
    client: &impl GenericClient,
    event: &NewEvent,
    current: i64,
) -> StorageResult<i64> {
    match &event.state_before {
        StateBefore::Current => Ok(current),
        StateBefore::AfterEvent(id) => state_after_of(client, event.room_nid, id).await,
        StateBefore::Resolved { base, state } => {
            let base = state_after_of(client, event.room_nid, base).await?;
            let pairs = state_nids(client, event.room_nid, state).await?;
            write_state(client, event.room_nid, base, &pairs).await
        }
    }
}

/// Moves the room's head to [`NewEvent::new_head`]: current snapshot,
/// current state table, memberships, forward extremities.
async fn apply_head(
    client: &impl GenericClient,
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
            snapshot_pairs(client, persisted.state_after_nid).await?,
        ),
        Some(state) => {
            let pairs = state_nids(client, room_nid, state).await?;
            let nid = write_state(client, room_nid, persisted.state_after_nid, &pairs).await?;
            (nid, pairs)
        }
    };
    let rows = query(
        client,
        "SELECT event_id, event_nid FROM event_locator WHERE event_id = ANY($1) AND room_nid = $2",
        &[&head.extremities, &room_nid],
    )
    .await?;
    let mut extremities = Vec::with_capacity(rows.len());
    let mut known = Vec::with_capacity(rows.len());
    for row in &rows {
        known.push(row.try_get::<_, String>(0).map_err(db_error)?);
        extremities.push(row.try_get::<_, i64>(1).map_err(db_error)?);
    }
    if let Some(missing) = head.extremities.iter().find(|id| !known.contains(id)) {
        return Err(StorageError::Backend(format!(
            "forward extremity {missing} is not an event of the room"
        )));
    }
    let old = pairs_from_rows(
        &query(
            client,
            "SELECT state_key_nid, event_nid FROM current_state WHERE room_nid = $1",
            &[&room_nid],
        )
        .await?,
    )?;
    let changes = state_changes(&old, &new);
    let changed_keys: Vec<i64> = changes.iter().map(|(k, _)| *k).collect();
    let member_keys: HashMap<i64, String> = query(
        client,
        "SELECT state_key_nid, state_key FROM state_keys
         WHERE state_key_nid = ANY($1) AND kind = 'm.room.member'",
        &[&changed_keys],
    )
    .await?
    .iter()
    .map(|row| {
        Ok((
            row.try_get(0).map_err(db_error)?,
            row.try_get(1).map_err(db_error)?,
        ))
    })
    .collect::<StorageResult<_>>()?;
    let (mut set_keys, mut set_events, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    let mut removed_members = Vec::new();
    for (key, change) in changes {
        match change {
            Some(event_nid) => {
                set_keys.push(key);
                set_events.push(event_nid);
            }
            None => {
                removed.push(key);
                if let Some(user) = member_keys.get(&key) {
                    removed_members.push(user.clone());
                }
            }
        }
    }
    execute(
        client,
        "DELETE FROM current_state WHERE room_nid = $1 AND state_key_nid = ANY($2)",
        &[&room_nid, &removed],
    )
    .await?;
    execute(
        client,
        "INSERT INTO current_state (room_nid, state_key_nid, event_nid)
         SELECT $1, k, e FROM UNNEST($2::BIGINT[], $3::BIGINT[]) AS t (k, e)
         ON CONFLICT (room_nid, state_key_nid) DO UPDATE SET event_nid = excluded.event_nid",
        &[&room_nid, &set_keys, &set_events],
    )
    .await?;
    execute(
        client,
        "DELETE FROM memberships WHERE room_nid = $1 AND user_id = ANY($2)",
        &[&room_nid, &removed_members],
    )
    .await?;
    let member_events: Vec<i64> = set_keys
        .iter()
        .zip(&set_events)
        .filter(|(k, _)| member_keys.contains_key(k))
        .map(|(_, e)| *e)
        .collect();
    execute(
        client,
        "INSERT INTO memberships
         (room_nid, user_id, membership, event_nid, event_id, stream_pos, forgotten)
         SELECT room_nid, state_key, membership, event_nid, event_id, $3, FALSE FROM events
         WHERE room_nid = $1 AND event_nid = ANY($2) AND membership IS NOT NULL
           AND state_key IS NOT NULL
         ON CONFLICT (room_nid, user_id) DO UPDATE
         SET membership = excluded.membership, event_nid = excluded.event_nid,
             event_id = excluded.event_id, stream_pos = excluded.stream_pos,
             forgotten = FALSE",
        &[&room_nid, &member_events, &event.stream_pos],
    )
    .await?;
    execute(
        client,
        "UPDATE rooms SET current_snapshot_nid = $2 WHERE room_nid = $1",
        &[&room_nid, &snapshot],
    )
    .await?;
    execute(
        client,
        "DELETE FROM forward_extremities WHERE room_nid = $1",
        &[&room_nid],
    )
    .await?;
    execute(
        client,
        "INSERT INTO forward_extremities (room_nid, event_nid)
         SELECT $1, e FROM UNNEST($2::BIGINT[]) AS t (e) ON CONFLICT DO NOTHING",
        &[&room_nid, &extremities],
    )
    .await?;
    Ok(())
}

/// [`RoomStore::persist_event`] in its transaction; `current` is the room's
/// current snapshot (its row locked).
async fn persist_one(
    client: &impl GenericClient,
    event: &NewEvent,
    current: i64,
) -> StorageResult<PersistedEvent> {
    check_state_of(event)?;
    let before = state_before_of(client, event, current).await?;
    let persisted = persist(client, event, before).await?;
    apply_head(client, event, &persisted).await?;
    Ok(persisted)
}

/// The body of [`RoomStore::persist_event`], in its transaction; `before`
/// is the snapshot before the event (the room's current one for a local
/// event).
async fn persist(
    client: &impl GenericClient,
    event: &NewEvent,
    before: i64,
) -> StorageResult<PersistedEvent> {
    let room_nid = event.room_nid;
    // First, so that a duplicate event id fails before anything else.
    let event_nid = first_i64(
        &query_one(
            client,
            "INSERT INTO event_locator (event_id, room_nid, event_nid)
             VALUES ($1, $2, nextval('event_nid'))
             RETURNING event_nid",
            &[&event.event_id, &room_nid],
        )
        .await?,
    )?;
    let state_key_nid = match &event.state_key {
        Some(state_key) => Some(intern_state_key(client, &event.kind, state_key).await?),
        None => None,
    };
    let given = event.state_before.is_given();
    let (state_before_nid, state_after_nid) = match (event.status, state_key_nid) {
        (EventStatus::Outlier, _) => (0, 0),
        (EventStatus::Normal, Some(key)) => (
            before,
            write_snapshot(client, room_nid, before, key, event_nid).await?,
        ),
        // A soft-failed event from another server passed auth at its
        // position: an event citing it builds on the state after it.
        (EventStatus::SoftFailed, Some(key)) if given => (
            before,
            write_snapshot(client, room_nid, before, key, event_nid).await?,
        ),
        // Rejected events change no state, and a local soft-failed one
        // never becomes a prev event.
        _ => (before, before),
    };
    let txn = event.txn.as_ref();
    execute(
        client,
        "INSERT INTO events
         (room_nid, event_nid, event_id, kind, state_key, state_key_nid, sender,
          origin_server_ts, depth, stream_pos, json, membership, redacts, redacted_by,
          state_before_nid, state_after_nid, status, slot_epoch,
          txn_user_id, txn_device_id, txn_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL,
                 $14, $15, $16, $17, $18, $19, $20)",
        &[
            &room_nid,
            &event_nid,
            &event.event_id,
            &event.kind,
            &event.state_key,
            &state_key_nid,
            &event.sender,
            &event.origin_server_ts,
            &event.depth,
            &event.stream_pos,
            &event.json,
            &event.membership,
            &event.redacts,
            &state_before_nid,
            &state_after_nid,
            &event.status.as_i16(),
            &event.slot_epoch,
            &txn.map(|t| t.user_id.as_str()),
            &txn.map(|t| t.device_id.as_str()),
            &txn.map(|t| t.txn_id.as_str()),
        ],
    )
    .await?;
    if let Some(txn) = txn {
        execute(
            client,
            "INSERT INTO txn_ids (room_nid, user_id, device_id, txn_id, event_id) VALUES ($1, $2, $3, $4, $5)",
            &[&event.room_nid, &txn.user_id, &txn.device_id, &txn.txn_id, &event.event_id],
        )
        .await?;
    }
    let persisted = PersistedEvent {
        event_nid,
        stream_pos: event.stream_pos,
        state_before_nid,
        state_after_nid,
    };
    if event.status != EventStatus::Normal {
        return Ok(persisted);
    }

    if event.new_head.is_none()
        && let Some(key) = state_key_nid
    {
        execute(
            client,
            "UPDATE rooms SET current_snapshot_nid = $2 WHERE room_nid = $1",
            &[&room_nid, &state_after_nid],
        )
        .await?;
        execute(
            client,
            "INSERT INTO current_state (room_nid, state_key_nid, event_nid) VALUES ($1, $2, $3)
             ON CONFLICT (room_nid, state_key_nid) DO UPDATE SET event_nid = excluded.event_nid",
            &[&room_nid, &key, &event_nid],
        )
        .await?;
    }
    if event.new_head.is_none()
        && event.kind == "m.room.member"
        && let (Some(user_id), Some(membership)) = (&event.state_key, &event.membership)
    {
        execute(
            client,
            "INSERT INTO memberships
             (room_nid, user_id, membership, event_nid, event_id, stream_pos, forgotten)
             VALUES ($1, $2, $3, $4, $5, $6, FALSE)
             ON CONFLICT (room_nid, user_id) DO UPDATE
             SET membership = excluded.membership, event_nid = excluded.event_nid,
                 event_id = excluded.event_id, stream_pos = excluded.stream_pos,
                 forgotten = FALSE",
            &[
                &room_nid,
                user_id,
                membership,
                &event_nid,
                &event.event_id,
                &event.stream_pos,
            ],
        )
        .await?;
    }
    if event.new_head.is_none() {
        execute(
            client,
            "DELETE FROM forward_extremities WHERE room_nid = $1 AND event_nid IN
             (SELECT event_nid FROM event_locator WHERE room_nid = $1 AND event_id = ANY($2))",
            &[&room_nid, &event.prev_events],
        )
        .await?;
        execute(
            client,
            "INSERT INTO forward_extremities (room_nid, event_nid) VALUES ($1, $2)",
            &[&room_nid, &event_nid],
        )
        .await?;
    }
    if let Some(relation) = relation_of(event) {
        execute(
            client,
            "INSERT INTO event_relations
             (room_nid, event_nid, event_id, relates_to_id, rel_type, annotation_key, sender,
              kind, is_state, origin_server_ts, stream_pos, depth)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &room_nid,
                &event_nid,
                &event.event_id,
                &relation.relates_to_id,
                &relation.rel_type,
                &relation.annotation_key,
                &event.sender,
                &event.kind,
                &event.state_key.is_some(),
                &event.origin_server_ts,
                &event.stream_pos,
                &event.depth,
            ],
        )
        .await?;
    }
    super::search::index_event(client, event, event_nid).await?;
    super::push::record_actions(client, event).await?;
    if let Some(target) = &event.redacts {
        // A redacted event loses its `m.relates_to`: it relates no more.
        execute(
            client,
            "DELETE FROM event_relations WHERE room_nid = $1 AND event_id = $2",
            &[&room_nid, target],
        )
        .await?;
        // Nor can its text be found any more.
        execute(
            client,
            "DELETE FROM event_search WHERE room_nid = $1 AND event_nid =
                 (SELECT event_nid FROM event_locator WHERE event_id = $2 AND room_nid = $1)",
            &[&room_nid, target],
        )
        .await?;
        // The first redaction stays the one shown; a later one changes nothing
        // a client sees.
        execute(
            client,
            "UPDATE events SET redacted_by = COALESCE(redacted_by, $3)
             WHERE room_nid = $1 AND event_nid =
                 (SELECT event_nid FROM event_locator WHERE event_id = $2 AND room_nid = $1)",
            &[&room_nid, target, &event.event_id],
        )
        .await?;
    }
    Ok(persisted)
}

#[async_trait]
impl RoomStore for PostgresStorage {
    async fn create_room(
        &self,
        room_id: &str,
        room_version: &str,
        created_ms: i64,
    ) -> StorageResult<RoomRecord> {
        let client = self.client().await?;
        let row = query_one(
            &client,
            "INSERT INTO rooms (room_nid, room_id, room_version, created_ms)
             VALUES (nextval('room_nid'), $1, $2, $3)
             RETURNING room_nid, room_id, room_version, created_ms",
            &[&room_id, &room_version, &created_ms],
        )
        .await?;
        room_from_row(&row)
    }

    async fn room(&self, room_id: &str) -> StorageResult<Option<RoomRecord>> {
        self.query_opt(
            "SELECT room_nid, room_id, room_version, created_ms FROM rooms WHERE room_id = $1",
            &[&room_id],
        )
        .await?
        .as_ref()
        .map(room_from_row)
        .transpose()
    }

    async fn next_stream_pos(&self, stream: Stream) -> StorageResult<i64> {
        let sql = match stream {
            Stream::Events => "SELECT nextval('events_stream_pos')",
            Stream::Receipts => "SELECT nextval('receipts_stream_pos')",
            Stream::AccountData => "SELECT nextval('account_data_stream_id')",
            Stream::ToDevice => "SELECT nextval('to_device_stream_pos')",
            Stream::DeviceLists => "SELECT nextval('device_list_stream_pos')",
        };
        let client = self.client().await?;
        first_i64(&query_one(&client, sql, &[]).await?)
    }

    async fn max_stream_pos(&self, stream: Stream) -> StorageResult<i64> {
        // A sequence never drawn from reports its start value with
        // is_called false: nothing was handed out yet.
        // A writer may also allocate positions itself (the single node's
        // tracker does): the greatest position written counts too, so a
        // restarted writer never reuses one.
        let sql = match stream {
            Stream::Events => {
                "SELECT GREATEST((SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_stream_pos), \
                 (SELECT COALESCE(MAX(stream_pos), 0) FROM events))"
            }
            Stream::Receipts => {
                "SELECT GREATEST((SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM receipts_stream_pos), \
                 (SELECT COALESCE(MAX(stream_pos), 0) FROM receipts))"
            }
            Stream::AccountData => {
                "SELECT GREATEST((SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM account_data_stream_id), \
                 (SELECT COALESCE(MAX(stream_id), 0) FROM account_data))"
            }
            // Delivered messages are deleted; to_device_position keeps the
            // greatest position written.
            Stream::ToDevice => {
                "SELECT GREATEST((SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM to_device_stream_pos), \
                 (SELECT position FROM to_device_position))"
            }
            Stream::DeviceLists => {
                "SELECT GREATEST((SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM device_list_stream_pos), \
                 (SELECT COALESCE(MAX(stream_pos), 0) FROM device_list_changes))"
            }
        };
        let client = self.client().await?;
        first_i64(&query_one(&client, sql, &[]).await?)
    }

    async fn persist_event(&self, event: NewEvent) -> StorageResult<PersistedEvent> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let current = query_opt(
            &tx,
            "SELECT current_snapshot_nid FROM rooms WHERE room_nid = $1 FOR UPDATE",
            &[&event.room_nid],
        )
        .await?
        .ok_or_else(|| unknown_room(event.room_nid))?;
        let persisted = persist_one(&tx, &event, first_i64(&current)?).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(persisted)
    }

    async fn persist_events(&self, events: Vec<NewEvent>) -> StorageResult<Vec<PersistedEvent>> {
        check_batch(&events)?;
        let Some(room_nid) = events.first().map(|e| e.room_nid) else {
            return Ok(Vec::new());
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // One lock for the batch: the room's row, as persist_event takes it.
        query_opt(
            &tx,
            "SELECT current_snapshot_nid FROM rooms WHERE room_nid = $1 FOR UPDATE",
            &[&room_nid],
        )
        .await?
        .ok_or_else(|| unknown_room(room_nid))?;
        let mut persisted = Vec::with_capacity(events.len());
        for event in &events {
            // Re-read: the previous event of the batch may have moved it.
            let current = query_opt(
                &tx,
                "SELECT current_snapshot_nid FROM rooms WHERE room_nid = $1",
                &[&room_nid],
            )
            .await?
            .ok_or_else(|| unknown_room(room_nid))?;
            persisted.push(persist_one(&tx, event, first_i64(&current)?).await?);
        }
        tx.commit().await.map_err(db_error)?;
        Ok(persisted)
    }

    async fn txn_event(
        &self,
        room_nid: i64,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
    ) -> StorageResult<Option<String>> {
        self.query_opt(
            "SELECT event_id FROM txn_ids \
             WHERE user_id = $1 AND device_id = $2 AND room_nid = $3 AND txn_id = $4",
            &[&user_id, &device_id, &room_nid, &txn_id],
        )
        .await?
        .map(|row| row.try_get(0).map_err(db_error))
        .transpose()
    }

    async fn event(&self, event_id: &str) -> StorageResult<Option<StoredEvent>> {
        self.query_opt(
            concat!(
                "SELECT ",
                event_columns!(),
                " FROM event_locator l
                 JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
                 JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE l.event_id = $1"
            ),
            &[&event_id],
        )
        .await?
        .as_ref()
        .map(event_from_row)
        .transpose()
    }

    async fn events(&self, event_ids: &[String]) -> StorageResult<Vec<StoredEvent>> {
        let mut ids = event_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let client = self.client().await?;
        let mut found = Vec::new();
        for batch in ids.chunks(EVENTS_LOOKUP_BATCH) {
            let rows = super::query(
                &client,
                concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM event_locator l
                     JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
                     JOIN rooms r ON r.room_nid = e.room_nid
                     WHERE l.event_id = ANY($1)"
                ),
                &[&batch],
            )
            .await?;
            found.extend(events_from_rows(&rows)?);
        }
        Ok(found)
    }

    async fn forward_extremities(&self, room_nid: i64) -> StorageResult<Vec<(String, i64)>> {
        self.query(
            "SELECT e.event_id, e.depth FROM forward_extremities f
             JOIN events e ON e.room_nid = f.room_nid AND e.event_nid = f.event_nid
             WHERE f.room_nid = $1
             ORDER BY e.depth DESC, e.event_nid DESC LIMIT $2",
            &[&room_nid, &LIST_MAX],
        )
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(db_error)
    }

    async fn current_snapshot(&self, room_nid: i64) -> StorageResult<i64> {
        self.query_opt(
            "SELECT current_snapshot_nid FROM rooms WHERE room_nid = $1",
            &[&room_nid],
        )
        .await?
        .map_or(Ok(0), |row| first_i64(&row))
    }

    async fn current_state(&self, room_nid: i64) -> StorageResult<Vec<StoredEvent>> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM current_state c
                     JOIN events e ON e.room_nid = c.room_nid AND e.event_nid = c.event_nid
                     JOIN rooms r ON r.room_nid = e.room_nid
                     WHERE c.room_nid = $1
                     ORDER BY c.state_key_nid LIMIT $2"
                ),
                &[&room_nid, &(STATE_ENTRIES_MAX + 1)],
            )
            .await?;
        bounded_state(events_from_rows(&rows)?, "the current state")
    }

    async fn current_state_event(
        &self,
        room_nid: i64,
        kind: &str,
        state_key: &str,
    ) -> StorageResult<Option<StoredEvent>> {
        self.query_opt(
            concat!(
                "SELECT ",
                event_columns!(),
                " FROM state_keys k
                 JOIN current_state c ON c.state_key_nid = k.state_key_nid AND c.room_nid = $1
                 JOIN events e ON e.room_nid = c.room_nid AND e.event_nid = c.event_nid
                 JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE k.kind = $2 AND k.state_key = $3"
            ),
            &[&room_nid, &kind, &state_key],
        )
        .await?
        .as_ref()
        .map(event_from_row)
        .transpose()
    }

    async fn state_at(&self, snapshot_nid: i64) -> StorageResult<Vec<StateEntry>> {
        let rows = self
            .query(
                concat!(
                    snapshot_chain!(),
                    "SELECT k.kind, k.state_key, l.event_id FROM nearest n
                     JOIN state_keys k ON k.state_key_nid = n.state_key_nid
                     JOIN event_locator l ON l.event_nid = n.event_nid
                     WHERE n.pick = 1 AND n.event_nid <> 0
                     ORDER BY k.kind, k.state_key LIMIT $3"
                ),
                &[
                    &snapshot_nid,
                    &STATE_CHAIN_LENGTH_MAX,
                    &(STATE_ENTRIES_MAX + 1),
                ],
            )
            .await?;
        let entries = rows
            .iter()
            .map(|row| {
                Ok(StateEntry {
                    kind: row.try_get(0)?,
                    state_key: row.try_get(1)?,
                    event_id: row.try_get(2)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(db_error)?;
        bounded_state(entries, "the state snapshot")
    }

    async fn state_event_at(
        &self,
        snapshot_nid: i64,
        kind: &str,
        state_key: &str,
    ) -> StorageResult<Option<StoredEvent>> {
        self.query_opt(
            concat!(
                "WITH RECURSIVE chain (snapshot_nid, base_nid, hop) AS (
                     SELECT snapshot_nid, base_nid, 0::BIGINT FROM state_snapshots
                     WHERE snapshot_nid = $1
                     UNION ALL
                     SELECT s.snapshot_nid, s.base_nid, chain.hop + 1
                     FROM state_snapshots s JOIN chain ON s.snapshot_nid = chain.base_nid
                     WHERE chain.hop + 1 < $2
                 ),
                 hit AS (
                     SELECT se.event_nid FROM state_keys k
                     JOIN state_snapshot_entries se ON se.state_key_nid = k.state_key_nid
                     JOIN chain ON chain.snapshot_nid = se.snapshot_nid
                     WHERE k.kind = $3 AND k.state_key = $4
                     ORDER BY chain.hop LIMIT 1
                 )
                 SELECT ",
                event_columns!(),
                " FROM hit
                 JOIN event_locator l ON l.event_nid = hit.event_nid
                 JOIN events e ON e.room_nid = l.room_nid AND e.event_nid = l.event_nid
                 JOIN rooms r ON r.room_nid = e.room_nid"
            ),
            &[&snapshot_nid, &STATE_CHAIN_LENGTH_MAX, &kind, &state_key],
        )
        .await?
        .as_ref()
        .map(event_from_row)
        .transpose()
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
        let sql = if newest_first {
            concat!(
                "SELECT ",
                event_columns!(),
                " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE e.room_nid = $1 AND e.stream_pos > $2 AND e.stream_pos <= $3
                   AND e.status = 0
                 ORDER BY e.stream_pos DESC LIMIT $4"
            )
        } else {
            concat!(
                "SELECT ",
                event_columns!(),
                " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE e.room_nid = $1 AND e.stream_pos > $2 AND e.stream_pos <= $3
                   AND e.status = 0
                 ORDER BY e.stream_pos ASC LIMIT $4"
            )
        };
        let rows = self.query(sql, &[&room_nid, &after, &upto, &limit]).await?;
        events_from_rows(&rows)
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
        let limit = i64::from(limit).min(LIST_MAX);
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                     WHERE e.room_nid = ANY($1) AND e.stream_pos > $2 AND e.stream_pos <= $3
                       AND e.status = 0
                     ORDER BY e.stream_pos DESC LIMIT $4"
                ),
                &[&room_nids, &after, &upto, &limit],
            )
            .await?;
        events_from_rows(&rows)
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
        let sql = match dir {
            Direction::Forward => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE e.room_nid = $1
                   AND (e.depth, e.stream_pos) > ($2, $3)
                   AND (e.depth, e.stream_pos) < ($4, $5)
                   AND e.stream_pos <= $6 AND e.status = 0
                 ORDER BY e.depth ASC, e.stream_pos ASC LIMIT $7"
            ),
            Direction::Backward => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE e.room_nid = $1
                   AND (e.depth, e.stream_pos) < ($2, $3)
                   AND (e.depth, e.stream_pos) > ($4, $5)
                   AND e.stream_pos <= $6 AND e.status = 0
                 ORDER BY e.depth DESC, e.stream_pos DESC LIMIT $7"
            ),
        };
        let rows = self
            .query(
                sql,
                &[
                    &room_nid,
                    &from.depth,
                    &from.stream_pos,
                    &to.depth,
                    &to.stream_pos,
                    &upto,
                    &limit,
                ],
            )
            .await?;
        events_from_rows(&rows)
    }

    async fn user_memberships(&self, user_id: &str) -> StorageResult<Vec<UserMembership>> {
        self.query(
            "SELECT m.room_nid, r.room_id, m.membership, m.event_id, m.stream_pos, m.forgotten
             FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid
             WHERE m.user_id = $1 ORDER BY m.room_nid LIMIT $2",
            &[&user_id, &LIST_MAX],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(UserMembership {
                room_nid: row.try_get(0)?,
                room_id: row.try_get(1)?,
                membership: row.try_get(2)?,
                event_id: row.try_get(3)?,
                stream_pos: row.try_get(4)?,
                forgotten: row.try_get(5)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(db_error)
    }

    async fn room_members(&self, room_nid: i64) -> StorageResult<Vec<RoomMember>> {
        let members = self
            .query(
                "SELECT user_id, membership, event_id FROM memberships
                 WHERE room_nid = $1 ORDER BY user_id LIMIT $2",
                &[&room_nid, &(STATE_ENTRIES_MAX + 1)],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(RoomMember {
                    user_id: row.try_get(0)?,
                    membership: row.try_get(1)?,
                    event_id: row.try_get(2)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(db_error)?;
        bounded_state(members, "the member list")
    }

    async fn forget_room(&self, user_id: &str, room_nid: i64) -> StorageResult<()> {
        self.execute(
            "UPDATE memberships SET forgotten = TRUE WHERE room_nid = $1 AND user_id = $2",
            &[&room_nid, &user_id],
        )
        .await?;
        Ok(())
    }

    async fn create_alias(&self, alias: &RoomAlias) -> StorageResult<()> {
        self.execute(
            "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)",
            &[&alias.alias, &alias.room_id, &alias.creator],
        )
        .await?;
        Ok(())
    }

    async fn alias(&self, alias: &str) -> StorageResult<Option<RoomAlias>> {
        let Some(row) = self
            .query_opt(
                "SELECT alias, room_id, creator FROM room_aliases WHERE alias = $1",
                &[&alias],
            )
            .await?
        else {
            return Ok(None);
        };
        let alias = (|| {
            Ok::<_, tokio_postgres::Error>(RoomAlias {
                alias: row.try_get(0)?,
                room_id: row.try_get(1)?,
                creator: row.try_get(2)?,
            })
        })();
        alias.map(Some).map_err(db_error)
    }

    async fn delete_alias(&self, alias: &str) -> StorageResult<bool> {
        Ok(self
            .execute("DELETE FROM room_aliases WHERE alias = $1", &[&alias])
            .await?
            > 0)
    }

    async fn room_aliases(&self, room_id: &str) -> StorageResult<Vec<String>> {
        self.query(
            "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias LIMIT $2",
            &[&room_id, &LIST_MAX],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(db_error)
    }

    async fn put_receipt(&self, receipt: &Receipt) -> StorageResult<()> {
        self.execute(
            "INSERT INTO receipts
             (room_nid, user_id, receipt_type, thread_id, event_id, ts, stream_pos)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (room_nid, user_id, receipt_type, thread_id) DO UPDATE
             SET event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos",
            &[
                &receipt.room_nid,
                &receipt.user_id,
                &receipt.receipt_type,
                &receipt.thread_id.as_deref().unwrap_or(""),
                &receipt.event_id,
                &receipt.ts,
                &receipt.stream_pos,
            ],
        )
        .await?;
        Ok(())
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
        self.query(
            "SELECT c.room_nid, r.room_id, c.user_id, c.receipt_type, c.event_id, c.thread_id,
                    c.ts, c.stream_pos
             FROM receipts c JOIN rooms r ON r.room_nid = c.room_nid
             WHERE c.room_nid = ANY($1) AND c.stream_pos > $2 AND c.stream_pos <= $3
             ORDER BY c.stream_pos LIMIT $4",
            &[&room_nids, &after, &upto, &LIST_MAX],
        )
        .await?
        .iter()
        .map(receipt_from_row)
        .collect()
    }

    async fn room_receipts(&self, room_nid: i64) -> StorageResult<Vec<Receipt>> {
        self.query(
            "SELECT c.room_nid, r.room_id, c.user_id, c.receipt_type, c.event_id, c.thread_id,
                    c.ts, c.stream_pos
             FROM receipts c JOIN rooms r ON r.room_nid = c.room_nid
             WHERE c.room_nid = $1
             ORDER BY c.stream_pos DESC LIMIT $2",
            &[&room_nid, &LIST_MAX],
        )
        .await?
        .iter()
        .map(receipt_from_row)
        .collect()
    }

    async fn user_receipts(&self, room_nid: i64, user_id: &str) -> StorageResult<Vec<Receipt>> {
        self.query(
            "SELECT c.room_nid, r.room_id, c.user_id, c.receipt_type, c.event_id, c.thread_id,
                    c.ts, c.stream_pos
             FROM receipts c JOIN rooms r ON r.room_nid = c.room_nid
             WHERE c.room_nid = $1 AND c.user_id = $2
             ORDER BY c.stream_pos DESC LIMIT $3",
            &[&room_nid, &user_id, &LIST_MAX],
        )
        .await?
        .iter()
        .map(receipt_from_row)
        .collect()
    }

    async fn account_data_between(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> StorageResult<Vec<AccountDataChange>> {
        self.query(
            "SELECT room_id, data_type, content, stream_id FROM account_data
             WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3
             ORDER BY stream_id LIMIT $4",
            &[&user_id, &after, &upto, &LIST_MAX],
        )
        .await?
        .iter()
        .map(|row| {
            let room_id: String = row.try_get(0).map_err(db_error)?;
            Ok(AccountDataChange {
                room_id: (!room_id.is_empty()).then_some(room_id),
                data_type: row.try_get(1).map_err(db_error)?,
                content: json_column(row, 2)?,
                stream_id: row.try_get(3).map_err(db_error)?,
            })
        })
        .collect()
    }
}

impl PostgresStorage {
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
        let sql = match dir {
            Direction::Forward => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE e.room_nid = $1 AND e.origin_server_ts >= $2
                   AND e.stream_pos <= $3 AND e.status = 0
                 ORDER BY e.origin_server_ts ASC, e.stream_pos ASC LIMIT $4"
            ),
            Direction::Backward => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events e JOIN rooms r ON r.room_nid = e.room_nid
                 WHERE e.room_nid = $1 AND e.origin_server_ts <= $2
                   AND e.stream_pos <= $3 AND e.status = 0
                 ORDER BY e.origin_server_ts DESC, e.stream_pos DESC LIMIT $4"
            ),
        };
        let rows = self.query(sql, &[&room_nid, &ts, &upto, &limit]).await?;
        events_from_rows(&rows)
    }
}
