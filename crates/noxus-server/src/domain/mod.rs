//! Domain rules that do not depend on HTTP or the database.

pub mod keys;
pub mod passwords;
pub mod validation;

/// A message used as a sentence: first letter capitalized, final period.
pub fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    });
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}
