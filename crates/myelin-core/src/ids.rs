//! Identifier rules: user localparts, user ids, device ids.
//!
//! Validation of full ids and server names is ruma's; the rules for *new*
//! localparts (which the spec makes stricter than historical ones) are here.

use ruma::{OwnedServerName, OwnedUserId, UserId};

/// The longest user id the spec allows, in bytes (`@localpart:server`).
pub const USER_ID_LENGTH_MAX: usize = 255;

/// Why a requested localpart cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalpartError {
    Empty,
    InvalidCharacters,
    TooLong,
}

impl std::fmt::Display for LocalpartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Empty => "the user id localpart is empty",
            Self::InvalidCharacters => {
                "user id localparts may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'"
            }
            Self::TooLong => "the user id is longer than 255 bytes",
        })
    }
}

/// Checks a localpart for a *new* account: the spec's grammar
/// (`a-z 0-9 . _ = - / +`) and the 255-byte limit of the whole id.
///
/// Callers lowercase what users type first: localparts are matched
/// case-insensitively at login, so two accounts never differ only by case.
pub fn validate_new_localpart(localpart: &str, server_name: &str) -> Result<(), LocalpartError> {
    if localpart.is_empty() {
        return Err(LocalpartError::Empty);
    }
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '.' | '_' | '=' | '-' | '/' | '+')
    };
    if !localpart.chars().all(allowed) {
        return Err(LocalpartError::InvalidCharacters);
    }
    if 1 + localpart.len() + 1 + server_name.len() > USER_ID_LENGTH_MAX {
        return Err(LocalpartError::TooLong);
    }
    Ok(())
}

/// `@localpart:server_name`.
pub fn user_id(localpart: &str, server_name: &str) -> String {
    format!("@{localpart}:{server_name}")
}

/// Parses a full user id with ruma's grammar (historical ids accepted).
pub fn parse_user_id(s: &str) -> Option<OwnedUserId> {
    UserId::parse(s).ok()
}

/// Parses and validates a server name (`host[:port]`).
pub fn parse_server_name(s: &str) -> Option<OwnedServerName> {
    OwnedServerName::try_from(s).ok()
}

/// Longest device id a client may choose, in bytes (Synapse's limit too).
pub const DEVICE_ID_LENGTH_MAX: usize = 512;

/// Whether a client-chosen device id is acceptable: non-empty, bounded and
/// printable (it appears in paths, so no control characters).
pub fn valid_device_id(device_id: &str) -> bool {
    !device_id.is_empty()
        && device_id.len() <= DEVICE_ID_LENGTH_MAX
        && !device_id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localpart_rules() {
        assert_eq!(
            validate_new_localpart("alice.b_c=d-e/f+g9", "localhost"),
            Ok(())
        );
        assert_eq!(
            validate_new_localpart("", "localhost"),
            Err(LocalpartError::Empty)
        );
        assert_eq!(
            validate_new_localpart("Alice", "localhost"),
            Err(LocalpartError::InvalidCharacters)
        );
        assert_eq!(
            validate_new_localpart("a b", "localhost"),
            Err(LocalpartError::InvalidCharacters)
        );
        assert_eq!(
            validate_new_localpart("al@ce", "localhost"),
            Err(LocalpartError::InvalidCharacters)
        );
        let long = "a".repeat(250);
        assert_eq!(
            validate_new_localpart(&long, "localhost"),
            Err(LocalpartError::TooLong)
        );
    }

    #[test]
    fn device_ids() {
        assert!(valid_device_id("ABCDEF"));
        assert!(!valid_device_id(""));
        assert!(!valid_device_id("a\nb"));
        assert!(!valid_device_id(&"x".repeat(513)));
    }
}
