//! [`SearchStore`] on PostgreSQL: a `tsvector` column with a GIN index,
//! ranked by `ts_rank`.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::rooms::event_from_row;
use super::{PostgresStorage, db_error, execute};
use crate::search::{SEARCH_PAGE_MAX, SEARCH_ROOMS_MAX, SearchHit, search_text_of};
use crate::{NewEvent, SearchOrder, SearchPage, SearchQuery, SearchStore, StorageResult};

/// Indexes `event` (stored as `event_nid`) if it has searchable text.
pub(super) async fn index_event(
    client: &impl GenericClient,
    event: &NewEvent,
    event_nid: i64,
) -> StorageResult<()> {
    if let Some((key, text)) = search_text_of(event) {
        execute(
            client,
            "INSERT INTO event_search (room_nid, event_nid, key, vector)
             VALUES ($1, $2, $3, to_tsvector('simple', $4))",
            &[&event.room_nid, &event_nid, &key.as_str(), &text],
        )
        .await?;
    }
    Ok(())
}

/// The joins and conditions shared by the count and the page: `$1`/`$2`
/// the rooms and the position searched up to in each, `$3` the words,
/// `$4` the keys, `$5` the senders (or NULL), `$6` the excluded senders.
macro_rules! search_from {
    () => {
        " FROM event_search s
          JOIN unnest($1::BIGINT[], $2::BIGINT[]) AS q (room_nid, upto)
               ON q.room_nid = s.room_nid
          CROSS JOIN plainto_tsquery('simple', $3::TEXT) AS tq
          JOIN events e ON e.room_nid = s.room_nid AND e.event_nid = s.event_nid
          JOIN rooms r ON r.room_nid = e.room_nid
          WHERE s.vector @@ tq
            AND s.key = ANY($4::TEXT[])
            AND e.stream_pos <= q.upto AND e.status = 0 AND e.redacted_by IS NULL
            AND ($5::TEXT[] IS NULL OR e.sender = ANY($5::TEXT[]))
            AND NOT (e.sender = ANY($6::TEXT[]))"
    };
}

#[async_trait]
impl SearchStore for PostgresStorage {
    async fn search_events(&self, query: &SearchQuery) -> StorageResult<SearchPage> {
        if query.words.is_empty() || query.keys.is_empty() || query.rooms.is_empty() {
            return Ok(SearchPage::default());
        }
        let rooms = &query.rooms[..query.rooms.len().min(SEARCH_ROOMS_MAX)];
        let room_nids: Vec<i64> = rooms.iter().map(|(nid, _)| *nid).collect();
        let uptos: Vec<i64> = rooms.iter().map(|(_, upto)| *upto).collect();
        // Words are letters and digits only: plainto_tsquery ANDs them.
        let words = query.words.join(" ");
        let keys: Vec<&str> = query.keys.iter().map(|k| k.as_str()).collect();
        let order = match query.order {
            SearchOrder::Rank => "ORDER BY rank DESC, e.stream_pos DESC",
            SearchOrder::Recent => "ORDER BY e.stream_pos DESC",
        };
        let limit = i64::from(query.limit.min(SEARCH_PAGE_MAX));
        let offset = i64::from(query.offset);
        let client = self.client().await?;
        let count_row = super::query_one(
            &client,
            concat!("SELECT COUNT(*)", search_from!()),
            &[
                &room_nids,
                &uptos,
                &words,
                &keys,
                &query.senders,
                &query.not_senders,
            ],
        )
        .await?;
        let count: i64 = count_row.try_get(0).map_err(db_error)?;
        let sql = format!(
            "SELECT e.event_nid, e.room_nid, r.room_id, e.event_id, e.kind, e.state_key,
                    e.sender, e.origin_server_ts, e.depth, e.stream_pos, e.json,
                    e.membership, e.redacts, e.redacted_by, e.state_before_nid,
                    e.state_after_nid, e.status, e.txn_user_id, e.txn_device_id, e.txn_id,
                    ts_rank(s.vector, tq)::FLOAT8 AS rank {} {order} LIMIT $7 OFFSET $8",
            search_from!()
        );
        let rows = super::query(
            &client,
            &sql,
            &[
                &room_nids,
                &uptos,
                &words,
                &keys,
                &query.senders,
                &query.not_senders,
                &limit,
                &offset,
            ],
        )
        .await?;
        let hits = rows
            .iter()
            .map(|row| {
                Ok(SearchHit {
                    event: event_from_row(row)?,
                    rank: row.try_get(20).map_err(db_error)?,
                })
            })
            .collect::<StorageResult<Vec<_>>>()?;
        Ok(SearchPage { count, hits })
    }
}
