//! The Noxus API-key format, checkable offline (secret scanning, SDK-side
//! validation) without a database: `noxus_` + 32 base62 characters of
//! randomness + a 6-character base62 CRC32 checksum of those 32 characters.

use std::fmt;

/// Every Noxus key starts with this.
pub const KEY_PREFIX: &str = "noxus_";
/// Length of the random body (base62). 32 characters carry 190 bits.
pub const KEY_BODY_LEN: usize = 32;
/// Length of the base62-encoded CRC32 of the body.
pub const KEY_CHECKSUM_LEN: usize = 6;
/// Total length of a key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_BODY_LEN + KEY_CHECKSUM_LEN;
/// How many leading characters may be shown to identify a key (what the
/// guide prints when debugging: `api_key[:10]`).
pub const DISPLAY_PREFIX_LEN: usize = 10;
/// How many trailing characters are kept for display.
pub const DISPLAY_SUFFIX_LEN: usize = 4;
/// A regular expression that matches Noxus keys in free text (for secret
/// scanners). The checksum must still be verified with [`check_key_format`].
pub const KEY_REGEX: &str = r"\bnoxus_[0-9A-Za-z]{38}\b";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed Noxus key. The messages never contain
/// the key itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormatError {
    /// The string is empty.
    Empty,
    /// Leading or trailing whitespace (a common copy-paste accident).
    SurroundingWhitespace,
    /// Does not start with `noxus_`.
    WrongPrefix,
    /// Has the prefix but not the right number of characters.
    WrongLength {
        /// The length that was seen.
        actual: usize,
    },
    /// Contains a character outside `[0-9A-Za-z]` after the prefix.
    InvalidCharacter,
    /// The checksum does not match the body: a typo or a truncated copy.
    BadChecksum,
}

impl fmt::Display for KeyFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the API key is empty"),
            Self::SurroundingWhitespace => {
                f.write_str("the API key has leading or trailing whitespace")
            }
            Self::WrongPrefix => write!(f, "a Noxus API key starts with `{KEY_PREFIX}`"),
            Self::WrongLength { actual } => write!(
                f,
                "a Noxus API key has {KEY_LEN} characters, this one has {actual}"
            ),
            Self::InvalidCharacter => {
                f.write_str("a Noxus API key contains only letters and digits after `noxus_`")
            }
            Self::BadChecksum => {
                f.write_str("the API key's checksum does not match: it was mistyped or truncated")
            }
        }
    }
}

impl std::error::Error for KeyFormatError {}

/// The base62 CRC32 checksum of a key body, always [`KEY_CHECKSUM_LEN`] long.
pub fn checksum(body: &str) -> String {
    checksum_bytes(body).iter().map(|&b| b as char).collect()
}

/// The checksum as bytes (no allocation: this runs on every request).
fn checksum_bytes(body: &str) -> [u8; KEY_CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; KEY_CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    // 62^6 > 2^32, so the loop always consumes the whole value.
    out
}

/// Builds a full key from a random base62 body.
pub fn key_from_body(body: &str) -> String {
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(KEY_PREFIX);
    key.push_str(body);
    key.push_str(&checksum(body));
    key
}

/// Checks that `key` is a well-formed Noxus key: prefix, length, alphabet
/// and checksum. Does no I/O.
pub fn check_key_format(key: &str) -> Result<(), KeyFormatError> {
    if key.is_empty() {
        return Err(KeyFormatError::Empty);
    }
    if key.trim() != key {
        return Err(KeyFormatError::SurroundingWhitespace);
    }
    let Some(rest) = key.strip_prefix(KEY_PREFIX) else {
        return Err(KeyFormatError::WrongPrefix);
    };
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::InvalidCharacter);
    }
    if key.len() != KEY_LEN {
        return Err(KeyFormatError::WrongLength {
            actual: key.chars().count(),
        });
    }
    let (body, sum) = rest.split_at(KEY_BODY_LEN);
    if checksum_bytes(body) != sum.as_bytes() {
        return Err(KeyFormatError::BadChecksum);
    }
    Ok(())
}

/// The first [`DISPLAY_PREFIX_LEN`] characters of a key (or fewer if it is
/// shorter), safe to print.
pub fn display_prefix(key: &str) -> &str {
    match key.char_indices().nth(DISPLAY_PREFIX_LEN) {
        Some((idx, _)) => &key[..idx],
        None => key,
    }
}

/// The last [`DISPLAY_SUFFIX_LEN`] characters of a well-formed key.
pub fn display_suffix(key: &str) -> &str {
    let start = key.len().saturating_sub(DISPLAY_SUFFIX_LEN);
    key.get(start..).unwrap_or("")
}

/// A masked rendering such as `noxus_Ab3d…x9Zq`.
pub fn masked(prefix: &str, suffix: &str) -> String {
    format!("{prefix}…{suffix}")
}

/// Shortest run of key characters after `noxus_` that [`redact`] treats as
/// (part of) a key: shorter runs are words such as `noxus_session`.
const REDACT_MIN_RUN: usize = 12;

/// Replaces anything that looks like a key (or most of one) in `text` with
/// its first 10 characters and `…`, so that a key pasted into a URL, a
/// header or a form is never logged or echoed back in full.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(KEY_PREFIX) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY_PREFIX) {
        let after = &rest[at + KEY_PREFIX.len()..];
        let run = after.bytes().take_while(u8::is_ascii_alphanumeric).count();
        out.push_str(&rest[..at]);
        if run >= REDACT_MIN_RUN {
            out.push_str(KEY_PREFIX);
            out.push_str(&after[..DISPLAY_PREFIX_LEN - KEY_PREFIX.len()]);
            out.push('…');
            // A run that ends in `noxus` before a `_` holds the start of the
            // next key (two keys pasted together): that key is redacted too.
            let next_key = after[run..].starts_with('_') && after[..run].ends_with("noxus");
            rest = &after[if next_key { run - "noxus".len() } else { run }..];
        } else {
            // Not a key; but the run may be the start of one
            // (`noxus_noxus_<key>`), so the search goes on right after the prefix.
            out.push_str(KEY_PREFIX);
            rest = after;
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_redacted_wherever_they_appear() {
        let key = super::key_from_body("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
        let path = format!("/v1/{key}/x?k={key}");
        let redacted = super::redact(&path);
        assert!(!redacted.contains(&key[10..]), "{redacted}");
        assert_eq!(redacted, format!("/v1/{}…/x?k={}…", &key[..10], &key[..10]));
        // Most of a key is still a key; a cookie name is not.
        let partial = &key[..30];
        assert_eq!(super::redact(partial), format!("{}…", &key[..10]));
        assert_eq!(super::redact("noxus_session=abc"), "noxus_session=abc");
        assert_eq!(super::redact("nothing here"), "nothing here");
        assert_eq!(super::redact("noxus_"), "noxus_");
    }

    /// Found by the property `redact_never_leaves_more_than_a_keys_first_characters`:
    /// the prefix twice, or two keys glued together, let a key through.
    #[test]
    fn a_key_glued_to_a_prefix_or_another_key_is_redacted() {
        let key = super::key_from_body("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
        let other = super::key_from_body("0123456789abcdefghijABCDEFGHIJkl");
        assert_eq!(
            super::redact(&format!("noxus_{key}")),
            format!("noxus_{}…", &key[..10])
        );
        assert_eq!(
            super::redact(&format!("{key}{other}")),
            format!("{}…{}…", &key[..10], &other[..10])
        );
        assert_eq!(
            super::redact(&format!("noxus_AAAAAAAAAAAAA{key}")),
            format!("noxus_AAAA…{}…", &key[..10])
        );
    }

    use super::*;

    const BODY: &str = "0123456789abcdefghijABCDEFGHIJkl";

    #[test]
    fn a_key_built_from_a_body_passes_the_check() {
        let key = key_from_body(BODY);
        assert_eq!(key.len(), KEY_LEN);
        assert_eq!(check_key_format(&key), Ok(()));
    }

    #[test]
    fn a_single_changed_character_breaks_the_checksum() {
        let key = key_from_body(BODY);
        let mut bytes = key.into_bytes();
        bytes[10] = if bytes[10] == b'x' { b'y' } else { b'x' };
        let typo = String::from_utf8(bytes).expect("ascii");
        assert_eq!(check_key_format(&typo), Err(KeyFormatError::BadChecksum));
    }

    #[test]
    fn malformed_strings_are_named_precisely() {
        let key = key_from_body(BODY);
        assert_eq!(check_key_format(""), Err(KeyFormatError::Empty));
        assert_eq!(
            check_key_format(&format!(" {key}")),
            Err(KeyFormatError::SurroundingWhitespace)
        );
        assert_eq!(
            check_key_format("sk_live_123"),
            Err(KeyFormatError::WrongPrefix)
        );
        assert_eq!(
            check_key_format(&key[..KEY_LEN - 1]),
            Err(KeyFormatError::WrongLength {
                actual: KEY_LEN - 1
            })
        );
        assert_eq!(
            check_key_format("noxus_1234567890abcdef..."),
            Err(KeyFormatError::InvalidCharacter)
        );
        assert_eq!(
            check_key_format("noxus_ключ"),
            Err(KeyFormatError::InvalidCharacter)
        );
    }

    #[test]
    fn error_messages_never_contain_the_key() {
        let key = key_from_body(BODY);
        let truncated = &key[..KEY_LEN - 2];
        let err = check_key_format(truncated).expect_err("too short");
        assert!(!err.to_string().contains(&truncated[6..]));
    }

    #[test]
    fn display_fragments_are_safe_on_any_input() {
        let key = key_from_body(BODY);
        assert_eq!(display_prefix(&key), &key[..10]);
        assert_eq!(display_suffix(&key).len(), 4);
        assert_eq!(display_prefix("ключключключ"), "ключключкл");
        assert_eq!(display_prefix("abc"), "abc");
        assert_eq!(display_suffix("ab"), "ab");
    }

    #[test]
    fn the_checksum_is_always_six_base62_characters() {
        for body in ["", "a", BODY, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"] {
            let sum = checksum(body);
            assert_eq!(sum.len(), KEY_CHECKSUM_LEN);
            assert!(sum.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }
}
