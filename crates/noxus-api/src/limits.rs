//! The bounds the server enforces on what clients send. The server checks
//! them and its OpenAPI document declares them from these constants, so the
//! two cannot drift apart; clients may check them before sending.

/// Most characters of a workspace or API key name.
pub const NAME_MAX_CHARS: usize = 100;

/// Most characters of a workflow or workflow version name.
pub const WORKFLOW_NAME_MAX_CHARS: usize = 200;

/// Most characters of a workspace description.
pub const WORKSPACE_DESCRIPTION_MAX_CHARS: usize = 1000;

/// Most characters of a workflow version description.
pub const VERSION_DESCRIPTION_MAX_CHARS: usize = 2000;

/// Highest `per_second` of a rate limit (the operator's ceiling,
/// `--max-rate-limit-per-key`, may be lower).
pub const RATE_PER_SECOND_MAX: u32 = 100_000;

/// Highest `burst` of a rate limit (the operator's ceiling may be lower).
pub const RATE_BURST_MAX: u32 = 1_000_000;

/// Longest grace period of a rotation: 7 days.
pub const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

/// Most candidate keys in one leak report (`POST /v1/keys/leaks`).
pub const LEAK_CANDIDATES_MAX: usize = 100;

/// Most bytes of a leak report's body (a smaller cap than other bodies:
/// anyone may send one, without a key).
pub const LEAK_REPORT_BODY_MAX_BYTES: usize = 64 * 1024;

/// Most characters of a reported candidate key. A Noxus key has 44; longer
/// strings cannot be one, shorter or malformed ones are accepted (and
/// dropped unseen) so that the answer never says which were keys.
pub const LEAK_KEY_MAX_CHARS: usize = 256;

/// Most characters of the URL where a leaked key was found.
pub const LEAK_URL_MAX_CHARS: usize = 2048;

/// Most characters of the name of what found a leaked key (`github`,
/// `noxus keys scan`...).
pub const LEAK_SOURCE_MAX_CHARS: usize = 100;

/// Whether `text` may be a leak report's `url` or `source` of at most
/// `max_chars` characters: no control characters (they would garble the
/// dashboard's banner and the logs), not empty.
pub fn is_valid_leak_text(text: &str, max_chars: usize) -> bool {
    !text.is_empty() && text.chars().count() <= max_chars && !text.chars().any(char::is_control)
}

/// The white space a name may not consist of only (Unicode `White_Space`
/// without the control characters, which names may not contain at all), as
/// inclusive ranges. A unit test checks it against [`char::is_whitespace`].
pub const NAME_BLANKS: &[(char, char)] = &[
    (' ', ' '),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// Whether `name` is a valid name of at most `max_chars` characters: not
/// only white space, no control characters (`char::is_control`), at most
/// `max_chars` characters in all (surrounding spaces count; the server
/// stores the name trimmed).
pub fn is_valid_name(name: &str, max_chars: usize) -> bool {
    name.chars().count() <= max_chars
        && !name.chars().any(char::is_control)
        && !name.trim().is_empty()
}

/// [`is_valid_name`] as a regular expression (ECMA-262, as JSON Schema's
/// `pattern`), without the length, which `maxLength` states: any number of
/// non-control characters, at least one of which is not white space.
pub fn name_pattern() -> String {
    let mut blank = String::from("\\u0000-\\u0020\\u007f-\\u009f");
    for (first, last) in NAME_BLANKS.iter().skip(1) {
        blank.push_str(&escape(*first));
        if first != last {
            blank.push('-');
            blank.push_str(&escape(*last));
        }
    }
    let allowed = "[^\\u0000-\\u001f\\u007f-\\u009f]*";
    format!("^{allowed}[^{blank}]{allowed}$")
}

fn escape(c: char) -> String {
    format!("\\u{:04x}", u32::from(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_blanks_are_exactly_the_white_space_that_is_not_control() {
        let listed = |c: char| NAME_BLANKS.iter().any(|(a, b)| (*a..=*b).contains(&c));
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            assert_eq!(
                listed(c),
                c.is_whitespace() && !c.is_control(),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn the_name_pattern_spells_the_rule() {
        assert_eq!(
            name_pattern(),
            "^[^\\u0000-\\u001f\\u007f-\\u009f]*\
             [^\\u0000-\\u0020\\u007f-\\u009f\\u00a0\\u1680\\u2000-\\u200a\\u2028-\\u2029\\u202f\\u205f\\u3000]\
             [^\\u0000-\\u001f\\u007f-\\u009f]*$"
        );
    }

    #[test]
    fn names_are_checked_as_documented() {
        assert!(is_valid_name("a", 1));
        assert!(is_valid_name(" a ", 3));
        assert!(is_valid_name("é\u{3000}ü", 3));
        assert!(!is_valid_name(" a ", 2), "surrounding spaces count");
        assert!(!is_valid_name("", 10));
        assert!(!is_valid_name(" \u{a0}\u{3000}", 10));
        assert!(!is_valid_name("a\tb", 10));
        assert!(!is_valid_name("name\n", 10), "control characters anywhere");
        assert!(!is_valid_name("a\u{85}", 10));
    }
}
