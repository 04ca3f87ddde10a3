//! Sync tokens: one position per stream, so a token says exactly what a
//! client has seen of each.
//!
//! Format:
//! `s<events>_<receipts>_<account_data>_<typing>_<presence>_<to_device>_<device_lists>`
//! (older forms, without the last one, two or three fields, still parse,
//! with those positions 0).
//! Event positions
//! are read only up to the writer's watermark, so a token never covers an
//! event that is still being written.

use std::fmt;

/// Fields in a token.
const FIELDS: usize = 7;
/// Fields in tokens written before device lists, to-device messages and
/// presence.
const FIELDS_OLD: [usize; 3] = [6, 5, 4];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncToken {
    pub events: i64,
    pub receipts: i64,
    pub account_data: i64,
    pub typing: i64,
    pub presence: i64,
    pub to_device: i64,
    pub device_lists: i64,
}

impl SyncToken {
    /// Parses a token; the error says what is wrong (→ `M_INVALID_PARAM`).
    pub fn parse(token: &str) -> Result<Self, String> {
        let bad = || format!("Malformed sync token `{token}`");
        let body = token.strip_prefix('s').ok_or_else(bad)?;
        let parts: Vec<i64> = body
            .split('_')
            .map(|p| p.parse::<i64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        if !(parts.len() == FIELDS || FIELDS_OLD.contains(&parts.len()))
            || parts.iter().any(|p| *p < 0)
        {
            return Err(bad());
        }
        Ok(Self {
            events: parts[0],
            receipts: parts[1],
            account_data: parts[2],
            typing: parts[3],
            presence: parts.get(4).copied().unwrap_or(0),
            to_device: parts.get(5).copied().unwrap_or(0),
            device_lists: parts.get(6).copied().unwrap_or(0),
        })
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s{}_{}_{}_{}_{}_{}_{}",
            self.events,
            self.receipts,
            self.account_data,
            self.typing,
            self.presence,
            self.to_device,
            self.device_lists
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = SyncToken {
            events: 12,
            receipts: 3,
            account_data: 5,
            typing: 0,
            presence: 7,
            to_device: 4,
            device_lists: 2,
        };
        assert_eq!(t.to_string(), "s12_3_5_0_7_4_2");
        assert_eq!(SyncToken::parse("s12_3_5_0_7_4_2"), Ok(t));
    }

    #[test]
    fn old_tokens_have_later_streams_at_zero() {
        let t = SyncToken::parse("s12_3_5_9").unwrap();
        assert_eq!((t.typing, t.presence, t.to_device), (9, 0, 0));
        assert_eq!(t.to_string(), "s12_3_5_9_0_0_0");
        let t = SyncToken::parse("s12_3_5_9_2").unwrap();
        assert_eq!((t.presence, t.to_device), (2, 0));
        let t = SyncToken::parse("s12_3_5_9_2_4").unwrap();
        assert_eq!((t.to_device, t.device_lists), (4, 0));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "s",
            "12_3_5_0",
            "s1_2_3",
            "s1_2_3_4_5_6_7_8",
            "s1_2_3_4_-5",
            "sa_b_c_d",
            "s-1_0_0_0",
            "s1__2_3",
        ] {
            assert!(SyncToken::parse(bad).is_err(), "{bad}");
        }
    }
}
