//! Secrets: access and refresh tokens, their digests, password hashes.
//!
//! Tokens are 32 random bytes. The database keeps only their SHA-256 digest,
//! so a leaked database grants no session; lookups are by digest, and the
//! digest comparison that follows is constant-time.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use rand::rngs::OsRng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Random bytes in every token.
pub const TOKEN_BYTES: usize = 32;

/// The digest the database keeps for a token.
pub type TokenDigest = [u8; 32];

/// A fresh random token with a readable prefix (`myl_at_`, `myl_rt_`, …).
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A random alphanumeric string (device ids, session ids, filter-free ids).
pub fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = vec![0u8; len];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// A random url-safe string of `bytes` random bytes.
pub fn random_urlsafe(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The SHA-256 digest under which a token is stored.
pub fn token_digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two digests.
pub fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Cost of argon2id password hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordCost {
    /// OWASP's argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct PasswordHashError(String);

fn argon2(cost: PasswordCost) -> Result<Argon2<'static>, PasswordHashError> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .map_err(|e| PasswordHashError(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with argon2id into a PHC string (salt and cost inside).
/// CPU-heavy: call it off the async runtime (`spawn_blocking`).
pub fn hash_password(password: &str, cost: PasswordCost) -> Result<String, PasswordHashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(cost)?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordHashError(e.to_string()))
}

/// Checks a password against a PHC string; the cost is the one stored in it.
/// CPU-heavy: call it off the async runtime.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = generate_token("myl_at_");
        let b = generate_token("myl_at_");
        assert_ne!(a, b);
        assert!(a.starts_with("myl_at_"));
        assert_eq!(a.len(), "myl_at_".len() + 43);
    }

    #[test]
    fn digest_comparison() {
        let d = token_digest("x");
        assert!(digests_equal(&d, &token_digest("x")));
        assert!(!digests_equal(&d, &token_digest("y")));
    }

    #[test]
    fn password_round_trip() {
        let cost = PasswordCost {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let phc = hash_password("correct horse", cost).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password("x", "not a phc string"));
    }
}
