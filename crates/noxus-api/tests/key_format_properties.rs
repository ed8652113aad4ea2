//! Properties of the key format: no string makes the parser, the checksum,
//! the display helpers or `redact` panic; every well-formed key round-trips;
//! a single changed, dropped, added or swapped character is always refused.
//!
//! The cases come from a fixed seed, so CI runs the same ones every time;
//! `PROPTEST_RNG_SEED=<n>` and `PROPTEST_CASES=<n>` explore others. A
//! failure prints the minimal input and its seed is kept in
//! `key_format_properties.proptest-regressions` beside this file, replayed
//! first on every later run (commit that file with the fix).

#![allow(clippy::unwrap_used)]

use noxus_api::key_format::{
    check_key_format, checksum, display_prefix, display_suffix, key_from_body, masked, redact,
    KeyFormatError, DISPLAY_PREFIX_LEN, KEY_BODY_LEN, KEY_CHECKSUM_LEN, KEY_LEN, KEY_PREFIX,
};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};

const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `cases` cases from a fixed seed, unless the environment asks for others.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x6e6f_7875_735f_6b65);
    }
    config
}

/// A random key body: 32 base62 characters.
fn body() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[0-9A-Za-z]{32}").unwrap()
}

fn base62_char() -> impl Strategy<Value = u8> {
    proptest::sample::select(BASE62.as_bytes().to_vec())
}

/// Strings that are near keys as often as far from them: arbitrary Unicode,
/// the prefix followed by anything, keys with noise around them, and
/// multi-byte characters where a key's fixed byte offsets fall.
fn key_like_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        ".{0,60}".prop_map(|s| format!("{KEY_PREFIX}{s}")),
        (body(), ".{0,3}", ".{0,3}").prop_map(|(b, l, r)| format!("{l}{}{r}", key_from_body(&b))),
        (body(), 0..KEY_LEN, "[é€😀\u{0}\u{feff} ]").prop_map(|(b, at, c)| {
            let mut key = key_from_body(&b);
            key.replace_range(at..=at, &c);
            key
        }),
        "[a-z0-9_ééк😀]{0,50}",
    ]
}

/// Text with keys, parts of keys and the prefix glued in anywhere.
fn text_with_keys() -> impl Strategy<Value = (String, Vec<String>)> {
    let piece = prop_oneof![
        3 => any::<String>().prop_map(|s| (s, None)),
        1 => Just((KEY_PREFIX.to_owned(), None)),
        1 => Just(("noxus".to_owned(), None)),
        1 => "[0-9A-Za-z]{0,20}".prop_map(|s| (s, None)),
        1 => "[_/=&?. é😀-]{1,3}".prop_map(|s| (s, None)),
        3 => body().prop_map(|b| {
            let key = key_from_body(&b);
            (key.clone(), Some(key))
        }),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|pieces| {
        let mut text = String::new();
        let mut keys = Vec::new();
        for (s, key) in pieces {
            text.push_str(&s);
            keys.extend(key);
        }
        (text, keys)
    })
}

/// The longest run of `[0-9A-Za-z]` right after any `noxus_` in `text`.
fn longest_run_after_prefix(text: &str) -> usize {
    text.match_indices(KEY_PREFIX)
        .map(|(at, p)| {
            text[at + p.len()..]
                .bytes()
                .take_while(u8::is_ascii_alphanumeric)
                .count()
        })
        .max()
        .unwrap_or(0)
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn no_string_makes_the_key_functions_panic(s in key_like_string()) {
        let checked = check_key_format(&s);
        let _ = checksum(&s);
        let _ = key_from_body(&s);
        let prefix = display_prefix(&s);
        let suffix = display_suffix(&s);
        prop_assert!(s.starts_with(prefix));
        prop_assert!(prefix.chars().count() <= DISPLAY_PREFIX_LEN);
        prop_assert!(s.ends_with(suffix));
        prop_assert!(suffix.len() <= 4);
        let _ = masked(prefix, suffix);
        let _ = redact(&s);
        match checked {
            Ok(()) => {
                prop_assert_eq!(s.len(), KEY_LEN);
                prop_assert_eq!(key_from_body(&s[KEY_PREFIX.len()..KEY_PREFIX.len() + KEY_BODY_LEN]), s.clone());
            }
            Err(why) => {
                // The message names the problem, never the string.
                let message = why.to_string();
                if let Some(rest) = s.strip_prefix(KEY_PREFIX) {
                    if rest.chars().count() >= 8 {
                        prop_assert!(!message.contains(rest), "{message}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_well_formed_key_round_trips(b in body()) {
        let key = key_from_body(&b);
        prop_assert_eq!(check_key_format(&key), Ok(()));
        prop_assert_eq!(key.len(), KEY_LEN);
        prop_assert!(key.starts_with(KEY_PREFIX));
        prop_assert_eq!(&key[KEY_PREFIX.len()..KEY_PREFIX.len() + KEY_BODY_LEN], b.as_str());
        let sum = checksum(&b);
        prop_assert_eq!(sum.len(), KEY_CHECKSUM_LEN);
        prop_assert!(key.ends_with(&sum));
        prop_assert_eq!(display_prefix(&key), &key[..DISPLAY_PREFIX_LEN]);
        prop_assert_eq!(display_suffix(&key), &key[KEY_LEN - 4..]);
        prop_assert_eq!(
            masked(display_prefix(&key), display_suffix(&key)),
            format!("{}…{}", &key[..10], &key[KEY_LEN - 4..])
        );
        prop_assert_eq!(redact(&key), format!("{}…", &key[..DISPLAY_PREFIX_LEN]));
    }

    /// CRC32 detects every error burst of up to 32 bits, and a changed
    /// character of the body is a burst of at most 8; a changed checksum
    /// character changes the base62 number itself. So the checksum alone
    /// catches every single substitution: this asserts exactly that (the
    /// server's digest is the second line, see noxus-server's properties).
    #[test]
    fn a_single_changed_character_is_caught_by_the_checksum(
        b in body(),
        at in KEY_PREFIX.len()..KEY_LEN,
        replacement in base62_char(),
    ) {
        let key = key_from_body(&b);
        prop_assume!(key.as_bytes()[at] != replacement);
        let mut typo = key.into_bytes();
        typo[at] = replacement;
        let typo = String::from_utf8(typo).unwrap();
        prop_assert_eq!(check_key_format(&typo), Err(KeyFormatError::BadChecksum));
    }

    #[test]
    fn a_dropped_added_or_swapped_character_is_refused(
        b in body(),
        at in KEY_PREFIX.len()..KEY_LEN - 1,
        extra in base62_char(),
        edit in 0..3u8,
    ) {
        let key = key_from_body(&b);
        let mut bytes = key.clone().into_bytes();
        match edit {
            0 => {
                bytes.remove(at);
            }
            1 => bytes.insert(at, extra),
            _ => {
                prop_assume!(bytes[at] != bytes[at + 1]);
                bytes.swap(at, at + 1);
            }
        }
        let edited = String::from_utf8(bytes).unwrap();
        let expected = match edit {
            0 => KeyFormatError::WrongLength { actual: KEY_LEN - 1 },
            1 => KeyFormatError::WrongLength { actual: KEY_LEN + 1 },
            _ => KeyFormatError::BadChecksum,
        };
        prop_assert_eq!(check_key_format(&edited), Err(expected));
    }

    #[test]
    fn redact_never_leaves_more_than_a_keys_first_characters((text, keys) in text_with_keys()) {
        let redacted = redact(&text);
        prop_assert!(
            longest_run_after_prefix(&redacted) < 12,
            "{text:?} → {redacted:?}"
        );
        for key in &keys {
            prop_assert!(
                !redacted.contains(&key[DISPLAY_PREFIX_LEN..]),
                "{key} left in {redacted:?}"
            );
        }
        if longest_run_after_prefix(&text) < 12 {
            prop_assert_eq!(redacted.as_ref(), text.as_str());
        }
        // Redacting twice changes nothing more.
        let again = redact(&redacted);
        prop_assert_eq!(again.as_ref(), redacted.as_ref());
    }
}
