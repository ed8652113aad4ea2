//! The API key as the SDK holds it: validated once, kept in a secret type,
//! and shown only as its first 10 characters.

use std::fmt;

use noxus_api::key_format::{self, KEY_PREFIX};
use secrecy::{ExposeSecret, SecretString};

use crate::config::ConfigError;

/// A Noxus API key. `Debug` and `Display` print only the first 10
/// characters (`noxus_1234…`), as the guide's troubleshooting does.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Validates a key without any network call: it must not be empty or
    /// surrounded by whitespace, and a `noxus_` key must have the right
    /// length and checksum (a typo or truncated copy is caught here).
    ///
    /// ```
    /// use noxus_sdk::ApiKey;
    /// assert!(ApiKey::parse("").is_err());
    /// assert!(ApiKey::parse("noxus_1234567890abcdef...").is_err());
    /// ```
    pub fn parse(key: impl Into<String>) -> Result<Self, ConfigError> {
        let key = SecretString::from(key.into());
        let text = key.expose_secret();
        if text.trim().is_empty() {
            return Err(ConfigError::EmptyApiKey);
        }
        if text.starts_with(KEY_PREFIX) || text.trim() != text {
            key_format::check_key_format(text).map_err(ConfigError::MalformedApiKey)?;
        }
        if text.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(ConfigError::MalformedApiKey(
                key_format::KeyFormatError::InvalidCharacter,
            ));
        }
        Ok(Self(key))
    }

    /// The first 10 characters, safe to print.
    pub fn prefix(&self) -> &str {
        key_format::display_prefix(self.0.expose_secret())
    }

    /// The full key, for sending it. Keep it out of logs.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.prefix())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.prefix())
    }
}
