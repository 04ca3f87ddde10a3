//! [`SearchStore`] on SQLite: an FTS5 table, ranked by `bm25`.

use async_trait::async_trait;
use rusqlite::{Transaction, params};

use super::SqliteStorage;
use super::rooms::event_from_row;
use crate::search::{SEARCH_PAGE_MAX, SEARCH_ROOMS_MAX, SearchHit, search_text_of};
use crate::{NewEvent, SearchOrder, SearchPage, SearchQuery, SearchStore, StorageResult};

/// Indexes `event` (stored as `event_nid`) if it has searchable text.
pub(super) fn index_event(
    tx: &Transaction<'_>,
    event: &NewEvent,
    event_nid: i64,
) -> rusqlite::Result<()> {
    if let Some((key, text)) = search_text_of(event) {
        tx.prepare_cached(
            "INSERT INTO event_search (rowid, content, key, room_nid) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![event_nid, text, key.as_str(), event.room_nid])?;
    }
    Ok(())
}

/// Removes the redacted event `target` of room `room_nid` from the index.
pub(super) fn unindex_event(
    tx: &Transaction<'_>,
    room_nid: i64,
    target: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "DELETE FROM event_search WHERE rowid =
             (SELECT event_nid FROM event_locator WHERE event_id = ?1 AND room_nid = ?2)",
    )?
    .execute(params![target, room_nid])?;
    Ok(())
}

/// The joins and conditions shared by the count and the page: `?1` the
/// rooms (`[[room_nid, upto], …]`), `?2` the FTS5 query, `?3` the keys,
/// `?4` the senders (or NULL), `?5` the excluded senders.
macro_rules! search_from {
    () => {
        " FROM event_search
          JOIN (SELECT json_extract(value, '$[0]') AS room_nid,
                       json_extract(value, '$[1]') AS upto
                FROM json_each(?1)) q ON q.room_nid = event_search.room_nid
          JOIN events e ON e.room_nid = event_search.room_nid AND e.event_nid = event_search.rowid
          JOIN rooms r ON r.room_nid = e.room_nid
          WHERE event_search MATCH ?2
            AND event_search.key IN (SELECT value FROM json_each(?3))
            AND e.stream_pos <= q.upto AND e.status = 0 AND e.redacted_by IS NULL
            AND (?4 IS NULL OR e.sender IN (SELECT value FROM json_each(?4)))
            AND e.sender NOT IN (SELECT value FROM json_each(?5))"
    };
}

#[async_trait]
impl SearchStore for SqliteStorage {
    async fn search_events(&self, query: &SearchQuery) -> StorageResult<SearchPage> {
        if query.words.is_empty() || query.keys.is_empty() || query.rooms.is_empty() {
            return Ok(SearchPage::default());
        }
        // Words are letters and digits only; quoted, each is one FTS5 string.
        let fts: Vec<String> = query.words.iter().map(|w| format!("\"{w}\"")).collect();
        let fts = fts.join(" ");
        let rooms = serde_json::to_string(
            &query
                .rooms
                .iter()
                .take(SEARCH_ROOMS_MAX)
                .map(|(nid, upto)| [*nid, *upto])
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".to_owned());
        let keys =
            serde_json::to_string(&query.keys.iter().map(|k| k.as_str()).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".to_owned());
        let senders = query
            .senders
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap_or_else(|_| "[]".to_owned()));
        let not_senders =
            serde_json::to_string(&query.not_senders).unwrap_or_else(|_| "[]".to_owned());
        let order = match query.order {
            SearchOrder::Rank => "ORDER BY rank DESC, e.stream_pos DESC",
            SearchOrder::Recent => "ORDER BY e.stream_pos DESC",
        };
        let limit = query.limit.min(SEARCH_PAGE_MAX);
        let offset = query.offset;
        self.read(move |conn| {
            let count: i64 = conn
                .prepare_cached(concat!("SELECT COUNT(*)", search_from!()))?
                .query_row(params![rooms, fts, keys, senders, not_senders], |row| {
                    row.get(0)
                })?;
            let sql = format!(
                "SELECT e.event_nid, e.room_nid, r.room_id, e.event_id, e.kind, e.state_key,
                        e.sender, e.origin_server_ts, e.depth, e.stream_pos, e.json,
                        e.membership, e.redacts, e.redacted_by, e.state_before_nid,
                        e.state_after_nid, e.status, e.txn_user_id, e.txn_device_id, e.txn_id,
                        -bm25(event_search) AS rank {} {order} LIMIT ?6 OFFSET ?7",
                search_from!()
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![rooms, fts, keys, senders, not_senders, limit, offset],
                |row| {
                    Ok(SearchHit {
                        event: event_from_row(row)?,
                        rank: row.get(20)?,
                    })
                },
            )?;
            let hits = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(SearchPage { count, hits })
        })
        .await
    }
}
