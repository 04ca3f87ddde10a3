//! Room versions 1–12 and their rules.
//!
//! The differences between versions live in ruma's `RoomVersionRules` table;
//! this module only maps a version string to that table, so the rest of the
//! crate reads flags (`rules.authorization.knocking`, …) instead of matching
//! on version numbers.

use ruma::RoomVersionId;
use ruma::room_version_rules::RoomVersionRules;

/// Every room version this server can create and join.
pub const SUPPORTED_ROOM_VERSIONS: &[&str] = &[
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
];
/// The version `createRoom` uses when the client names none.
pub const DEFAULT_ROOM_VERSION: &str = "12";

/// A supported room version and its rules.
#[derive(Debug, Clone)]
pub struct RoomVersion {
    pub id: &'static str,
    pub rules: RoomVersionRules,
}

impl RoomVersion {
    /// The version named `id`, if supported.
    pub fn parse(id: &str) -> Option<Self> {
        let id = SUPPORTED_ROOM_VERSIONS.iter().copied().find(|v| *v == id)?;
        let rules = RoomVersionId::try_from(id).ok()?.rules()?;
        Some(Self { id, rules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::room_version_rules::{EventIdFormatVersion, RoomIdFormatVersion};

    #[test]
    fn parses_every_supported_version() {
        for id in SUPPORTED_ROOM_VERSIONS {
            let version = RoomVersion::parse(id).unwrap();
            assert_eq!(version.id, *id);
        }
        assert!(RoomVersion::parse(DEFAULT_ROOM_VERSION).is_some());
    }

    #[test]
    fn rejects_unknown_versions() {
        for id in ["", "0", "13", "org.matrix.msc2870", " 1", "1 "] {
            assert!(RoomVersion::parse(id).is_none(), "{id:?}");
        }
    }

    #[test]
    fn rules_come_from_the_table() {
        let v1 = RoomVersion::parse("1").unwrap();
        let v3 = RoomVersion::parse("3").unwrap();
        let v4 = RoomVersion::parse("4").unwrap();
        let v12 = RoomVersion::parse("12").unwrap();
        assert_eq!(v1.rules.event_id_format, EventIdFormatVersion::V1);
        assert_eq!(v3.rules.event_id_format, EventIdFormatVersion::V2);
        assert_eq!(v4.rules.event_id_format, EventIdFormatVersion::V3);
        assert_eq!(v12.rules.room_id_format, RoomIdFormatVersion::V2);
        assert!(v12.rules.authorization.explicitly_privilege_room_creators);
        assert!(!v1.rules.authorization.explicitly_privilege_room_creators);
    }
}
