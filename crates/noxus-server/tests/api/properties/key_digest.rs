//! A mistyped key never authenticates as the key it was meant to be: every
//! single changed character is refused by the format check (its checksum),
//! or else digests to something else than the real key (what the database
//! stores), with and without a pepper.

use noxus_testkit::noxus_api::key_format::{check_key_format, key_from_body, KEY_LEN, KEY_PREFIX};
use noxus_testkit::noxus_server::domain::keys::KeyHasher;
use proptest::prelude::*;
use proptest::sample::select;
use secrecy::SecretString;

use super::config;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[test]
fn a_single_changed_character_is_caught_by_the_checksum_or_the_digest() {
    let plain = KeyHasher::new(None);
    let pepper = SecretString::from("a pepper of at least thirty-two bytes, for the property");
    let peppered = KeyHasher::new(Some(&pepper));
    proptest!(config(4096), |(
        body in "[0-9A-Za-z]{32}",
        at in KEY_PREFIX.len()..KEY_LEN,
        replacement in select(BASE62.to_vec()),
    )| {
        let key = key_from_body(&body);
        prop_assume!(key.as_bytes()[at] != replacement);
        let mut typo = key.clone().into_bytes();
        typo[at] = replacement;
        let typo = String::from_utf8(typo).unwrap();
        for hasher in [&plain, &peppered] {
            prop_assert!(
                check_key_format(&typo).is_err() || hasher.digest(&typo) != hasher.digest(&key),
                "{typo} would be taken for {key}"
            );
        }
    });
}
