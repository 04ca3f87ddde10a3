//! [`RelationStore`] on PostgreSQL.

use async_trait::async_trait;

use super::rooms::events_from_rows;
use super::{LIST_MAX, PostgresStorage, db_error};
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

/// The children of `$2` in room `$1`, down to `$3` levels.
const RELATED: &str = "WITH RECURSIVE related (event_nid, event_id, hop) AS (
         SELECT event_nid, event_id, 1::BIGINT FROM event_relations
         WHERE room_nid = $1 AND relates_to_id = $2
         UNION
         SELECT c.event_nid, c.event_id, related.hop + 1
         FROM event_relations c JOIN related ON c.relates_to_id = related.event_id
         WHERE c.room_nid = $1 AND related.hop < $3
     )";

fn relation_refs(rows: &[tokio_postgres::Row], out: &mut Vec<RelationRef>) -> StorageResult<()> {
    for row in rows {
        out.push(RelationRef {
            relates_to_id: row.try_get(0).map_err(db_error)?,
            event_id: row.try_get(1).map_err(db_error)?,
            sender: row.try_get(2).map_err(db_error)?,
            kind: row.try_get(3).map_err(db_error)?,
        });
    }
    Ok(())
}

#[async_trait]
impl RelationStore for PostgresStorage {
    async fn relations_page(&self, q: &RelationsQuery) -> StorageResult<Vec<StoredEvent>> {
        let depth = i64::from(q.depth.clamp(1, RELATION_DEPTH_MAX));
        let limit = i64::from(q.limit).min(LIST_MAX);
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
             WHERE x.room_nid = $1 AND x.event_nid IN (SELECT event_nid FROM related)
               AND ($4::TEXT IS NULL OR x.rel_type = $4)
               AND ($5::TEXT IS NULL OR x.kind = $5)
               AND (x.depth, x.stream_pos) {cmp_from} ($6, $7)
               AND (x.depth, x.stream_pos) {cmp_to} ($8, $9)
               AND x.stream_pos <= $10 AND e.status = 0
             ORDER BY x.depth {order}, x.stream_pos {order} LIMIT $11"
        );
        let rows = self
            .query(
                &sql,
                &[
                    &q.room_nid,
                    &q.parent_id,
                    &depth,
                    &q.rel_type,
                    &q.kind,
                    &q.from.depth,
                    &q.from.stream_pos,
                    &to.depth,
                    &to.stream_pos,
                    &q.upto,
                    &limit,
                ],
            )
            .await?;
        events_from_rows(&rows)
    }

    async fn relation_aggregations(
        &self,
        room_nid: i64,
        event_ids: &[String],
        user_id: &str,
        upto: i64,
        excluded_senders: &[String],
    ) -> StorageResult<RelationAggregations> {
        let mut out = RelationAggregations::default();
        for batch in event_ids.chunks(AGGREGATION_IDS_BATCH) {
            let batch = batch.to_vec();
            let rows = self
                .query(
                    "SELECT relates_to_id, event_id, sender, kind FROM (
                         SELECT relates_to_id, event_id, sender, kind,
                                ROW_NUMBER() OVER (PARTITION BY relates_to_id, sender, kind
                                    ORDER BY origin_server_ts DESC, event_id DESC) AS pick
                         FROM event_relations
                         WHERE room_nid = $1 AND rel_type = 'm.replace' AND NOT is_state
                           AND relates_to_id = ANY($2) AND stream_pos <= $3
                           AND NOT (sender = ANY($5))
                     ) p WHERE pick = 1 LIMIT $4",
                    &[
                        &room_nid,
                        &batch,
                        &upto,
                        &AGGREGATION_ROWS_MAX,
                        &excluded_senders,
                    ],
                )
                .await?;
            relation_refs(&rows, &mut out.replacements)?;
            let rows = self
                .query(
                    "SELECT relates_to_id, event_id, cnt, participated FROM (
                         SELECT relates_to_id, event_id,
                                COUNT(*) OVER (PARTITION BY relates_to_id) AS cnt,
                                BOOL_OR(sender = $4) OVER (PARTITION BY relates_to_id)
                                    AS participated,
                                ROW_NUMBER() OVER (PARTITION BY relates_to_id
                                    ORDER BY depth DESC, stream_pos DESC) AS pick
                         FROM event_relations
                         WHERE room_nid = $1 AND rel_type = 'm.thread'
                           AND relates_to_id = ANY($2) AND stream_pos <= $3
                           AND NOT (sender = ANY($6))
                     ) p WHERE pick = 1 LIMIT $5",
                    &[
                        &room_nid,
                        &batch,
                        &upto,
                        &user_id,
                        &AGGREGATION_ROWS_MAX,
                        &excluded_senders,
                    ],
                )
                .await?;
            for row in rows {
                out.threads.push(ThreadSummary {
                    root_id: row.try_get(0).map_err(db_error)?,
                    latest_event_id: row.try_get(1).map_err(db_error)?,
                    count: row.try_get(2).map_err(db_error)?,
                    participated: row.try_get(3).map_err(db_error)?,
                });
            }
            let rows = self
                .query(
                    "SELECT relates_to_id, event_id, sender, kind FROM event_relations
                     WHERE room_nid = $1 AND rel_type = 'm.reference'
                       AND relates_to_id = ANY($2) AND stream_pos <= $3
                       AND NOT (sender = ANY($5))
                     ORDER BY relates_to_id, depth, stream_pos LIMIT $4",
                    &[
                        &room_nid,
                        &batch,
                        &upto,
                        &AGGREGATION_ROWS_MAX,
                        &excluded_senders,
                    ],
                )
                .await?;
            relation_refs(&rows, &mut out.references)?;
        }
        Ok(out)
    }

    async fn annotation_exists(
        &self,
        room_nid: i64,
        relates_to_id: &str,
        sender: &str,
        key: &str,
    ) -> StorageResult<bool> {
        let rows = self
            .query(
                "SELECT 1 FROM event_relations
                 WHERE relates_to_id = $2 AND sender = $3 AND annotation_key = $4
                   AND rel_type = 'm.annotation' AND room_nid = $1
                 LIMIT 1",
                &[&room_nid, &relates_to_id, &sender, &key],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn thread_roots(
        &self,
        room_nid: i64,
        participant: Option<&str>,
        before: Option<i64>,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<ThreadRoot>> {
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::from(limit).min(LIST_MAX);
        let rows = self
            .query(
                "SELECT t.relates_to_id, MAX(t.stream_pos) AS latest
                 FROM event_relations t
                 WHERE t.room_nid = $1 AND t.rel_type = 'm.thread' AND t.stream_pos <= $2
                 GROUP BY t.relates_to_id
                 HAVING MAX(t.stream_pos) < $3
                    AND ($4::TEXT IS NULL
                         OR BOOL_OR(t.sender = $4)
                         OR EXISTS (SELECT 1 FROM event_locator l
                                    JOIN events e ON e.room_nid = l.room_nid
                                                 AND e.event_nid = l.event_nid
                                    WHERE l.event_id = t.relates_to_id AND e.sender = $4))
                 ORDER BY latest DESC LIMIT $5",
                &[&room_nid, &upto, &before, &participant, &limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ThreadRoot {
                    root_id: row.try_get(0).map_err(db_error)?,
                    latest_stream_pos: row.try_get(1).map_err(db_error)?,
                })
            })
            .collect()
    }
}
