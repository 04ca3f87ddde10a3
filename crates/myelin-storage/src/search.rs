//! The full-text search contract (`POST /search`, category `room_events`).
//!
//! An event's searchable text is indexed when the event is persisted (in
//! the same transaction, [`search_text_of`] reading its JSON), for
//! `Normal` events only: `content.body` of `m.room.message`, `content.name`
//! of `m.room.name`, `content.topic` of `m.room.topic`. A redaction removes
//! its target from the index. Storage matches words and ranks; who may see
//! which room, and up to where, is decided by the caller.
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#server-side-search>

use async_trait::async_trait;

use crate::{NewEvent, StorageResult, StoredEvent};

/// Words of a search term used at most (the rest are ignored).
pub const SEARCH_TERMS_MAX: usize = 16;
/// Characters of one search word kept at most.
pub const SEARCH_TERM_CHARS_MAX: usize = 100;
/// Results one [`SearchStore::search_events`] call returns at most.
pub const SEARCH_PAGE_MAX: u32 = 100;
/// Rooms one search covers at most.
pub const SEARCH_ROOMS_MAX: usize = 10_000;

/// Which field of an event the indexed text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchKey {
    /// `content.body` of `m.room.message`.
    Body,
    /// `content.name` of `m.room.name`.
    Name,
    /// `content.topic` of `m.room.topic`.
    Topic,
}

impl SearchKey {
    /// The spec's name of the key (`content.body`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Body => "content.body",
            Self::Name => "content.name",
            Self::Topic => "content.topic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "content.body" => Some(Self::Body),
            "content.name" => Some(Self::Name),
            "content.topic" => Some(Self::Topic),
            _ => None,
        }
    }

    /// The event type the key is searched in.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Body => "m.room.message",
            Self::Name => "m.room.name",
            Self::Topic => "m.room.topic",
        }
    }
}

/// The searchable text of an event about to be persisted, if any.
pub fn search_text_of(event: &NewEvent) -> Option<(SearchKey, String)> {
    let key = match (event.kind.as_str(), event.state_key.as_deref()) {
        ("m.room.message", None) => SearchKey::Body,
        ("m.room.name", Some("")) => SearchKey::Name,
        ("m.room.topic", Some("")) => SearchKey::Topic,
        _ => return None,
    };
    let value: serde_json::Value = serde_json::from_str(&event.json).ok()?;
    let field = match key {
        SearchKey::Body => "body",
        SearchKey::Name => "name",
        SearchKey::Topic => "topic",
    };
    let text = value.get("content")?.get(field)?.as_str()?;
    // PostgreSQL's text refuses NUL, which JSON may carry; it is no word.
    (!text.trim().is_empty()).then(|| (key, text.replace('\0', " ")))
}

/// The words of a user's search term: runs of letters and digits,
/// lowercased, at most [`SEARCH_TERMS_MAX`] of them. Everything else (quotes,
/// `*`, operators of any query syntax) separates words, so no input reaches
/// a backend's query parser as syntax.
pub fn search_words(term: &str) -> Vec<String> {
    term.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.chars()
                .take(SEARCH_TERM_CHARS_MAX)
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .take(SEARCH_TERMS_MAX)
        .collect()
}

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchOrder {
    /// Most relevant first (ties: most recent first).
    #[default]
    Rank,
    /// Most recent (greatest stream position) first.
    Recent,
}

/// One search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchQuery {
    /// From [`search_words`]; every word must match. None: nothing matches.
    pub words: Vec<String>,
    /// The rooms searched, each with the greatest stream position searched
    /// in it (`(room_nid, upto)`), at most [`SEARCH_ROOMS_MAX`].
    pub rooms: Vec<(i64, i64)>,
    /// The keys searched; empty: nothing matches.
    pub keys: Vec<SearchKey>,
    /// Only events of these senders (`None`: any).
    pub senders: Option<Vec<String>>,
    /// Never events of these senders.
    pub not_senders: Vec<String>,
    pub order: SearchOrder,
    /// Results skipped (pagination).
    pub offset: u32,
    /// Results returned at most (capped at [`SEARCH_PAGE_MAX`]).
    pub limit: u32,
}

/// One result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// Higher is more relevant.
    pub rank: f64,
    pub event: StoredEvent,
}

/// A page of results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchPage {
    /// All matches of the query (not only this page).
    pub count: i64,
    pub hits: Vec<SearchHit>,
}

#[async_trait]
pub trait SearchStore: Send + Sync {
    /// `Normal`, unredacted events of `query.rooms` (each up to its
    /// position) whose indexed text of one of `query.keys` contains every
    /// word, in `query.order`, from `query.offset`, at most `query.limit`.
    async fn search_events(&self, query: &SearchQuery) -> StorageResult<SearchPage>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_drop_syntax() {
        assert_eq!(
            search_words("Hello \"wor*ld\" NEAR(a b)"),
            ["hello", "wor", "ld", "near", "a", "b"]
        );
        assert!(search_words(" \"*^- ").is_empty());
        assert_eq!(search_words("Émile").len(), 1);
    }
}
