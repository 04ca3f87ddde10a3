//! [`RelationStore`] on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteStorage;
use super::rooms::{event_from_row, json_array};
use crate::relations::{AGGREGATION_IDS_BATCH, AGGREGATION_ROWS_MAX, RELATION_DEPTH_MAX};
use crate::{
    Direction, RelationAggregations, RelationRef, RelationStore, RelationsQuery, StorageResult,
    StoredEvent, ThreadRoot, ThreadSummary, TopoPos,
};

/// The columns `event_from_row` reads, from `events e JOIN rooms r`.
const EVENT_COLUMNS: &str = "e.event_nid, e.room_nid, r.room_id, e.event_id, e.kind, e.state_key,
    e.sender, e.origin_server_ts, e.depth, e.stream_pos, e.json, e.membership, e.redacts,
    e.redacted_by, e.state_before_nid, e.state_after_nid, e.status,
    e.txn_user_id, e.txn_device_id, e.txn_id";

/// The children of `?2` in room `?1`, down to `?3` levels.
const RELATED: &str = "WITH RECURSIVE related (event_nid, event_id, hop) AS (
         SELECT event_nid, event_id, 1 FROM event_relations
         WHERE room_nid = ?1 AND relates_to_id = ?2
         UNION
         SELECT c.event_nid, c.event_id, related.hop + 1
         FROM event_relations c JOIN related ON c.relates_to_id = related.event_id
         WHERE c.room_nid = ?1 AND related.hop < ?3
     )";

fn relation_ref(row: &rusqlite::Row<'_>) -> rusqlite::Result<RelationRef> {
    Ok(RelationRef {
        relates_to_id: row.get(0)?,
        event_id: row.get(1)?,
        sender: row.get(2)?,
        kind: row.get(3)?,
    })
}

#[async_trait]
impl RelationStore for SqliteStorage {
    async fn relations_page(&self, query: &RelationsQuery) -> StorageResult<Vec<StoredEvent>> {
        let q = query.clone();
        let depth = i64::from(q.depth.clamp(1, RELATION_DEPTH_MAX));
        let limit = i64::from(q.limit).min(super::LIST_MAX);
        let (order, cmp_from, cmp_to) = match q.dir {
            Direction::Forward => ("ASC", ">", "<"),
            Direction::Backward => ("DESC", "<", ">"),
        };
        let to = q.to.unwrap_or(match q.dir {
            Direction::Forward => TopoPos {
                depth: i64::MAX,
                stream_pos: i64::MAX,
            },
            Direction::Backward => TopoPos {
                depth: i64::MIN,
                stream_pos: i64::MIN,
            },
        });
        let sql = format!(
            "{RELATED}
             SELECT {EVENT_COLUMNS} FROM event_relations x
             JOIN events e ON e.room_nid = x.room_nid AND e.event_nid = x.event_nid
             JOIN rooms r ON r.room_nid = e.room_nid
             WHERE x.room_nid = ?1 AND x.event_nid IN (SELECT event_nid FROM related)
               AND (?4 IS NULL OR x.rel_type = ?4) AND (?5 IS NULL OR x.kind = ?5)
               AND (x.depth, x.stream_pos) {cmp_from} (?6, ?7)
               AND (x.depth, x.stream_pos) {cmp_to} (?8, ?9)
               AND x.stream_pos <= ?10 AND e.status = 0
             ORDER BY x.depth {order}, x.stream_pos {order} LIMIT ?11"
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    q.room_nid,
                    q.parent_id,
                    depth,
                    q.rel_type,
                    q.kind,
                    q.from.depth,
                    q.from.stream_pos,
                    to.depth,
                    to.stream_pos,
                    q.upto,
                    limit
                ],
                event_from_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn relation_aggregations(
        &self,
        room_nid: i64,
        event_ids: &[String],
        user_id: &str,
        upto: i64,
        excluded_senders: &[String],
    ) -> StorageResult<RelationAggregations> {
        if event_ids.is_empty() {
            return Ok(RelationAggregations::default());
        }
        let batches: Vec<String> = event_ids
            .chunks(AGGREGATION_IDS_BATCH)
            .map(json_array)
            .collect();
        let user_id = user_id.to_owned();
        let excluded = json_array(excluded_senders);
        self.read(move |conn| {
            let mut out = RelationAggregations::default();
            let mut replacements = conn.prepare_cached(
                "SELECT relates_to_id, event_id, sender, kind FROM (
                     SELECT relates_to_id, event_id, sender, kind,
                            ROW_NUMBER() OVER (PARTITION BY relates_to_id, sender, kind
                                ORDER BY origin_server_ts DESC, event_id DESC) AS pick
                     FROM event_relations
                     WHERE room_nid = ?1 AND rel_type = 'm.replace' AND is_state = 0
                       AND relates_to_id IN (SELECT value FROM json_each(?2))
                       AND stream_pos <= ?3
                       AND sender NOT IN (SELECT value FROM json_each(?5))
                 ) WHERE pick = 1 LIMIT ?4",
            )?;
            let mut threads = conn.prepare_cached(
                "SELECT relates_to_id, event_id, cnt, participated FROM (
                     SELECT relates_to_id, event_id,
                            COUNT(*) OVER (PARTITION BY relates_to_id) AS cnt,
                            MAX(CASE WHEN sender = ?4 THEN 1 ELSE 0 END)
                                OVER (PARTITION BY relates_to_id) AS participated,
                            ROW_NUMBER() OVER (PARTITION BY relates_to_id
                                ORDER BY depth DESC, stream_pos DESC) AS pick
                     FROM event_relations
                     WHERE room_nid = ?1 AND rel_type = 'm.thread'
                       AND relates_to_id IN (SELECT value FROM json_each(?2))
                       AND stream_pos <= ?3
                       AND sender NOT IN (SELECT value FROM json_each(?6))
                 ) WHERE pick = 1 LIMIT ?5",
            )?;
            let mut references = conn.prepare_cached(
                "SELECT relates_to_id, event_id, sender, kind FROM event_relations
                 WHERE room_nid = ?1 AND rel_type = 'm.reference'
                   AND relates_to_id IN (SELECT value FROM json_each(?2))
                   AND stream_pos <= ?3
                   AND sender NOT IN (SELECT value FROM json_each(?5))
                 ORDER BY relates_to_id, depth, stream_pos LIMIT ?4",
            )?;
            for batch in &batches {
                for row in replacements.query_map(
                    params![room_nid, batch, upto, AGGREGATION_ROWS_MAX, excluded],
                    relation_ref,
                )? {
                    out.replacements.push(row?);
                }
                for row in threads.query_map(
                    params![
                        room_nid,
                        batch,
                        upto,
                        user_id,
                        AGGREGATION_ROWS_MAX,
                        excluded
                    ],
                    |row| {
                        Ok(ThreadSummary {
                            root_id: row.get(0)?,
                            latest_event_id: row.get(1)?,
                            count: row.get(2)?,
                            participated: row.get::<_, i64>(3)? != 0,
                        })
                    },
                )? {
                    out.threads.push(row?);
                }
                for row in references.query_map(
                    params![room_nid, batch, upto, AGGREGATION_ROWS_MAX, excluded],
                    relation_ref,
                )? {
                    out.references.push(row?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn annotation_exists(
        &self,
        room_nid: i64,
        relates_to_id: &str,
        sender: &str,
        key: &str,
    ) -> StorageResult<bool> {
        let (relates_to_id, sender, key) =
            (relates_to_id.to_owned(), sender.to_owned(), key.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM event_relations
                     WHERE relates_to_id = ?2 AND sender = ?3 AND annotation_key = ?4
                       AND rel_type = 'm.annotation' AND room_nid = ?1
                     LIMIT 1",
                )?
                .query_row(params![room_nid, relates_to_id, sender, key], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn thread_roots(
        &self,
        room_nid: i64,
        participant: Option<&str>,
        before: Option<i64>,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<ThreadRoot>> {
        let participant = participant.map(str::to_owned);
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::from(limit).min(super::LIST_MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.relates_to_id, MAX(t.stream_pos) AS latest
                 FROM event_relations t
                 WHERE t.room_nid = ?1 AND t.rel_type = 'm.thread' AND t.stream_pos <= ?2
                 GROUP BY t.relates_to_id
                 HAVING MAX(t.stream_pos) < ?3
                    AND (?4 IS NULL
                         OR MAX(CASE WHEN t.sender = ?4 THEN 1 ELSE 0 END) = 1
                         OR EXISTS (SELECT 1 FROM event_locator l
                                    JOIN events e ON e.room_nid = l.room_nid
                                                 AND e.event_nid = l.event_nid
                                    WHERE l.event_id = t.relates_to_id AND e.sender = ?4))
                 ORDER BY latest DESC LIMIT ?5",
            )?;
            let rows =
                stmt.query_map(params![room_nid, upto, before, participant, limit], |row| {
                    Ok(ThreadRoot {
                        root_id: row.get(0)?,
                        latest_stream_pos: row.get(1)?,
                    })
                })?;
            rows.collect()
        })
        .await
    }
}
