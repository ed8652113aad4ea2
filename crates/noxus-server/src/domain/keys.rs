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

/// Shortest accepted pepper, in bytes.
pub const MIN_PEPPER_BYTES: usize = 32;

/// What the pepper before a rotation was.
#[derive(Clone)]
pub enum PreviousPepper {
    /// Keys were digested with plain SHA-256 (no pepper).
    None,
    /// Keys were digested under this pepper.
    Pepper(SecretString),
}

impl fmt::Debug for PreviousPepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("PreviousPepper::None"),
            Self::Pepper(_) => f.write_str("PreviousPepper::Pepper(…)"),
        }
    }
}

type Pepper = Option<SecretBox<[u8]>>;

fn pepper_bytes(pepper: &SecretString) -> Pepper {
    let bytes = pepper.expose_secret().as_bytes().to_vec();
    (!bytes.is_empty()).then(|| SecretBox::new(bytes.into_boxed_slice()))
}

fn digest_with(pepper: &Pepper, key: &str) -> KeyDigest {
    let bytes: [u8; 32] = match pepper {
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

/// A public fingerprint of a pepper (HMAC of a constant under it; `none`
/// without one), stored in the database so that a start with another pepper
/// is refused instead of silently turning every key into a 401. With a
/// random pepper of 32 bytes or more it reveals nothing about it.
fn fingerprint_of(pepper: &Pepper) -> String {
    match pepper {
        Some(_) => {
            let digest = digest_with(pepper, "noxus key pepper fingerprint v1");
            format!("hmac-sha256:{}", hex::encode(&digest.0[..16]))
        }
        None => "none".to_owned(),
    }
}

/// Computes key digests, optionally keyed with a server-side pepper so that a
/// stolen database alone cannot be used to test guesses offline. During a
/// pepper rotation it also knows the previous pepper, so that keys made
/// under it keep working (and are re-digested when next used).
pub struct KeyHasher {
    pepper: Pepper,
    /// HMAC-SHA256 already keyed with `pepper` (its inner and outer pads
    /// hashed): each digest clones it and hashes the key, two SHA-256
    /// blocks instead of four.
    keyed: Option<Hmac<Sha256>>,
    previous: Option<Pepper>,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHasher")
            .field("peppered", &self.pepper.is_some())
            .field("rotating", &self.previous.is_some())
            .finish()
    }
}

impl KeyHasher {
    /// A hasher; `pepper` empty or absent means plain SHA-256.
    pub fn new(pepper: Option<&SecretString>) -> Self {
        Self::rotating(pepper, None)
    }

    /// A hasher during a pepper rotation: `previous` digests still verify.
    pub fn rotating(pepper: Option<&SecretString>, previous: Option<&PreviousPepper>) -> Self {
        let pepper = pepper.and_then(pepper_bytes);
        Self {
            keyed: pepper.as_ref().map(|pepper| {
                <Hmac<Sha256> as Mac>::new_from_slice(pepper.expose_secret())
                    .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
            }),
            pepper,
            previous: previous.map(|p| match p {
                PreviousPepper::None => None,
                PreviousPepper::Pepper(p) => pepper_bytes(p),
            }),
        }
    }

    /// The digest of a presented key.
    pub fn digest(&self, key: &str) -> KeyDigest {
        match &self.keyed {
            Some(keyed) => {
                let mut mac = keyed.clone();
                mac.update(key.as_bytes());
                KeyDigest(mac.finalize().into_bytes().into())
            }
            None => digest_with(&self.pepper, key),
        }
    }

    /// The digest under the previous pepper, during a rotation.
    pub fn previous_digest(&self, key: &str) -> Option<KeyDigest> {
        self.previous.as_ref().map(|p| digest_with(p, key))
    }

    /// The current pepper's fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.pepper)
    }

    /// The previous pepper's fingerprint, during a rotation.
    pub fn previous_fingerprint(&self) -> Option<String> {
        self.previous.as_ref().map(fingerprint_of)
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

    #[test]
    fn a_peppered_digest_is_standard_hmac_sha256_and_unchanged() {
        // RFC 4231, test case 2: what every stored digest was made with.
        let jefe = KeyHasher::new(Some(&SecretString::from("Jefe")));
        assert_eq!(
            jefe.digest("what do ya want for nothing?").as_hex(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The pre-keyed state gives what keying afresh gives, key after key.
        let pepper = SecretString::from("p".repeat(40));
        let hasher = KeyHasher::new(Some(&pepper));
        for _ in 0..20 {
            let key = hasher.issue();
            let secret = key.secret.expose_secret();
            assert_eq!(hasher.digest(secret), key.digest);
            assert_eq!(
                hasher.digest(secret),
                digest_with(&pepper_bytes(&pepper), secret)
            );
        }
        assert!(!format!("{hasher:?}").contains("ppp"));
    }

    #[test]
    fn fingerprints_tell_peppers_apart_and_rotation_keeps_the_old_digest() {
        let a = SecretString::from("a".repeat(32));
        let b = SecretString::from("b".repeat(32));
        let under_a = KeyHasher::new(Some(&a));
        let under_b = KeyHasher::new(Some(&b));
        assert_ne!(under_a.fingerprint(), under_b.fingerprint());
        assert_eq!(
            under_a.fingerprint(),
            KeyHasher::new(Some(&a)).fingerprint()
        );
        assert_eq!(KeyHasher::new(None).fingerprint(), "none");
        assert!(!under_a.fingerprint().contains(&"a".repeat(8)));
        let rotating = KeyHasher::rotating(Some(&b), Some(&PreviousPepper::Pepper(a.clone())));
        let key = under_a.issue();
        let secret = key.secret.expose_secret();
        assert_eq!(rotating.previous_digest(secret), Some(key.digest));
        assert_eq!(rotating.digest(secret), under_b.digest(secret));
        assert_eq!(rotating.previous_fingerprint(), Some(under_a.fingerprint()));
        let from_none = KeyHasher::rotating(Some(&b), Some(&PreviousPepper::None));
        assert_eq!(from_none.previous_fingerprint().as_deref(), Some("none"));
    }
}
