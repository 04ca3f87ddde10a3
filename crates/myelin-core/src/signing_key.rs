//! The signing-key file: one line `ed25519 <key_version> <unpadded base64 seed>`,
//! the format Synapse, Dendrite and Conduit read and write, so keys move between
//! servers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::SigningKey as DalekKey;
use rand::rngs::OsRng;
use std::path::Path;

/// A server's ed25519 signing key and its version (the part after `ed25519:`).
#[derive(Clone)]
pub struct SigningKey {
    pub version: String,
    key: DalekKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        f.debug_struct("SigningKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read the signing key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the signing key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the signing key file {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
}

impl SigningKey {
    /// A new random key with a version such as `a_XyZw`.
    pub fn generate() -> Self {
        let version = format!("a_{}", crate::secrets::random_alphanumeric(4));
        Self {
            version,
            key: DalekKey::generate(&mut OsRng),
        }
    }

    /// The key from a 32-byte seed.
    pub fn from_seed(version: String, seed: [u8; 32]) -> Self {
        Self {
            version,
            key: DalekKey::from_bytes(&seed),
        }
    }

    /// `ed25519:<version>`, the key id used in signatures.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.version)
    }

    /// The 32-byte seed (the secret).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key, unpadded base64 as the spec writes keys.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// The file's line (with a trailing newline).
    pub fn to_file_line(&self) -> String {
        format!(
            "ed25519 {} {}\n",
            self.version,
            STANDARD_NO_PAD.encode(self.seed())
        )
    }

    /// Parses a key file's text. The first non-empty line is used.
    pub fn parse(text: &str, path: &str) -> Result<Self, SigningKeyError> {
        let malformed = |reason: &str| SigningKeyError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| malformed("it is empty"))?;
        let mut parts = line.split_whitespace();
        let (Some(alg), Some(version), Some(seed), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected `ed25519 <key_version> <base64 seed>`"));
        };
        if alg != "ed25519" {
            return Err(malformed("only ed25519 keys are supported"));
        }
        if version.is_empty()
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(malformed(
                "the key version may only contain a-z, A-Z, 0-9 and _",
            ));
        }
        // Accept padded base64 and non-zero trailing bits too: other tools
        // (and the spec's own test key) write them.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let bytes = lenient
            .decode(seed)
            .map_err(|_| malformed("the seed is not valid base64"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| malformed("the seed is not 32 bytes"))?;
        Ok(Self::from_seed(version.to_owned(), seed))
    }

    /// Reads a key file.
    pub fn read(path: &Path) -> Result<Self, SigningKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| SigningKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Writes a key file readable by its owner only.
    pub fn write(&self, path: &Path) -> Result<(), SigningKeyError> {
        let err = |source| SigningKeyError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        std::fs::write(path, self.to_file_line()).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let key = SigningKey::generate();
        let line = key.to_file_line();
        assert!(line.starts_with("ed25519 a_"));
        let parsed = SigningKey::parse(&line, "x").unwrap();
        assert_eq!(parsed.version, key.version);
        assert_eq!(parsed.seed(), key.seed());
        assert_eq!(parsed.public_key_base64(), key.public_key_base64());
    }

    #[test]
    fn reads_a_synapse_style_key() {
        // 32 zero bytes, unpadded base64.
        let k = SigningKey::parse(
            "ed25519 a_abcd AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
            "x",
        )
        .unwrap();
        assert_eq!(k.key_id(), "ed25519:a_abcd");
        // The well-known public key of the all-zero ed25519 seed.
        assert_eq!(
            k.public_key_base64(),
            "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik"
        );
    }

    #[test]
    fn reads_the_spec_test_key() {
        // The seed of the spec's signing test vectors has non-zero trailing bits.
        let k = SigningKey::parse(
            "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n",
            "x",
        )
        .unwrap();
        assert_eq!(k.key_id(), "ed25519:1");
    }

    #[test]
    fn rejects_garbage() {
        assert!(SigningKey::parse("", "x").is_err());
        assert!(SigningKey::parse("rsa a_b AAAA", "x").is_err());
        assert!(SigningKey::parse("ed25519 a_b !!!", "x").is_err());
        assert!(SigningKey::parse("ed25519 a_b AAAA", "x").is_err());
    }
}
