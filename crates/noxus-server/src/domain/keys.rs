//! Issuing keys and turning a presented key into the digest we store.

use hmac::{Hmac, Mac};
use noxus_api::key_format::{self, KEY_BODY_LEN};
use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;

/// The SHA-256 (or HMAC-SHA-256 under the pepper) of a key: what the
/// database stores (as hex) and the verified-key cache is keyed by (raw).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// Parses a stored hex digest.
    pub fn from_hex(hex_digest: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// The hex form, as stored.
    pub fn as_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not a secret, but it is a lookup handle: show a fragment.
        write!(f, "KeyDigest({}…)", hex::encode(&self.0[..4]))
    }
}

/// A freshly issued key: the plaintext, which exists only until it is put
/// in the creation response.
pub struct IssuedKey {
    /// The secret.
    pub secret: SecretString,
    /// First 10 characters, for display.
    pub prefix: String,
    /// Last 4 characters, for display.
    pub suffix: String,
    /// What to store.
    pub digest: KeyDigest,
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("prefix", &self.prefix)
            .field("suffix", &self.suffix)
            .finish_non_exhaustive()
    }
}

/// Computes key digests, optionally keyed with a server-side pepper so that a
/// stolen database alone cannot be used to test guesses offline.
pub struct KeyHasher {
    pepper: Option<SecretBox<[u8]>>,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHasher")
            .field("peppered", &self.pepper.is_some())
            .finish()
    }
}

impl KeyHasher {
    /// A hasher; `pepper` empty or absent means plain SHA-256.
    pub fn new(pepper: Option<&SecretString>) -> Self {
        let pepper = pepper
            .map(|p| p.expose_secret().as_bytes().to_vec())
            .filter(|p| !p.is_empty())
            .map(|p| SecretBox::new(p.into_boxed_slice()));
        Self { pepper }
    }

    /// The digest of a presented key.
    pub fn digest(&self, key: &str) -> KeyDigest {
        let bytes: [u8; 32] = match &self.pepper {
            Some(pepper) => {
                // HMAC accepts keys of any length; the error case cannot happen.
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper.expose_secret())
                    .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
                mac.update(key.as_bytes());
                mac.finalize().into_bytes().into()
            }
            None => Sha256::digest(key.as_bytes()).into(),
        };
        KeyDigest(bytes)
    }

    /// Issues a new key from the operating system's CSPRNG.
    pub fn issue(&self) -> IssuedKey {
        let body: String = OsRng
            .sample_iter(&Alphanumeric)
            .take(KEY_BODY_LEN)
            .map(char::from)
            .collect();
        let key = key_format::key_from_body(&body);
        IssuedKey {
            prefix: key_format::display_prefix(&key).to_owned(),
            suffix: key_format::display_suffix(&key).to_owned(),
            digest: self.digest(&key),
            secret: SecretString::from(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_are_well_formed_and_distinct() {
        let hasher = KeyHasher::new(None);
        let a = hasher.issue();
        let b = hasher.issue();
        assert_eq!(
            key_format::check_key_format(a.secret.expose_secret()),
            Ok(())
        );
        assert_ne!(a.secret.expose_secret(), b.secret.expose_secret());
        assert_eq!(a.digest, hasher.digest(a.secret.expose_secret()));
        assert!(!format!("{a:?}").contains(a.secret.expose_secret()));
    }

    #[test]
    fn a_pepper_changes_the_digest() {
        let plain = KeyHasher::new(None);
        let pepper = SecretString::from("pepper");
        let peppered = KeyHasher::new(Some(&pepper));
        let key = plain.issue();
        let secret = key.secret.expose_secret();
        assert_ne!(plain.digest(secret), peppered.digest(secret));
        assert_eq!(peppered.digest(secret), peppered.digest(secret));
        assert_eq!(plain.digest(secret).as_hex().len(), 64);
    }
}
