//! Configuration: the key, the backend URL and the timeout, from code, the
//! environment (`NOXUS_API_KEY`, `NOXUS_BACKEND_URL`, `NOXUS_TIMEOUT`), a
//! `.env` file, or per-environment keys selected by `ENVIRONMENT`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use noxus_api::KeyFormatError;

use crate::key::ApiKey;

/// Where the platform is when nothing says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://backend.noxus.ai";
/// Request timeout when nothing says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of an idempotent request after a 429, a 5xx or a connection failure.
pub const DEFAULT_MAX_RETRIES: u32 = 2;

/// The variable holding the key.
pub const API_KEY_VAR: &str = "NOXUS_API_KEY";
/// The variable holding the backend URL.
pub const BASE_URL_VAR: &str = "NOXUS_BACKEND_URL";
/// The variable holding the timeout in seconds.
pub const TIMEOUT_VAR: &str = "NOXUS_TIMEOUT";
/// The variable naming the deployment environment.
pub const ENVIRONMENT_VAR: &str = "ENVIRONMENT";

/// A configuration problem, found before any network call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The variable holding the key is unset or empty.
    #[error("{var} environment variable is required")]
    MissingApiKey {
        /// The variable that was read (`NOXUS_API_KEY` or a per-environment one).
        var: String,
    },
    /// A builder was given no key.
    #[error("no API key given: pass one to the builder, or use Client::from_env() to read NOXUS_API_KEY")]
    NoApiKey,
    /// An empty or blank key was given in code.
    #[error("the API key is empty")]
    EmptyApiKey,
    /// The key is not a well-formed Noxus key.
    #[error("malformed API key: {0}")]
    MalformedApiKey(KeyFormatError),
    /// `NOXUS_TIMEOUT` (or a timeout given in code) is not usable.
    #[error("invalid {var} {value:?}: {reason}")]
    InvalidTimeout {
        /// Where it came from.
        var: String,
        /// The value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The backend URL is not an absolute http(s) URL.
    #[error("invalid {var} {value:?}: {reason}")]
    InvalidBaseUrl {
        /// Where it came from (`NOXUS_BACKEND_URL` or `base_url`).
        var: String,
        /// The value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// An extra header cannot be sent.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The `.env` file exists but cannot be read or parsed.
    #[error("cannot load {path}: {reason}")]
    Dotenv {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built (e.g. no TLS roots).
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    /// A [`Run`](crate::Run) built from JSON (not returned by a client)
    /// was asked to act: it has no client to act with.
    #[error("this run was not read through a client: get it with client.runs().get(workflow_id, run_id) to wait for it, stream or stop it")]
    RunWithoutClient,
    /// `ENVIRONMENT` holds a name that is none of the environments.
    #[error("unknown ENVIRONMENT {value:?}: expected production (or prod), staging (or stage) or development (or dev)")]
    UnknownEnvironment {
        /// The value (its first 100 characters).
        value: String,
    },
}

/// The deployment environment, which selects the key variable.
///
/// `ENVIRONMENT` is read case-insensitively with the usual aliases; an
/// unknown value is a configuration error naming it, never a silent fall
/// back to the development key:
///
/// ```
/// use noxus_sdk::{ConfigError, Environment};
///
/// assert_eq!(Environment::from_name("PROD")?, Environment::Production);
/// assert_eq!(Environment::from_name("stage")?, Environment::Staging);
/// assert_eq!(Environment::from_name(" Development ")?, Environment::Development);
/// let err = Environment::from_name("prdo").unwrap_err();
/// assert!(matches!(err, ConfigError::UnknownEnvironment { .. }));
/// assert!(err.to_string().contains("\"prdo\""));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// `production` or `prod` → `NOXUS_API_KEY_PROD`.
    Production,
    /// `staging` or `stage` → `NOXUS_API_KEY_STAGING`.
    Staging,
    /// `development` or `dev`, or `ENVIRONMENT` unset (the guide's default)
    /// → `NOXUS_API_KEY_DEV`.
    Development,
}

impl Environment {
    /// Reads `ENVIRONMENT`: unset or empty is development (as the guide's
    /// `get_client()`); otherwise [`Environment::from_name`].
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var(ENVIRONMENT_VAR) {
            Ok(name) if !name.trim().is_empty() => Self::from_name(&name),
            _ => Ok(Self::Development),
        }
    }

    /// Maps a name as `ENVIRONMENT` would hold it, case-insensitively:
    /// `production`/`prod`, `staging`/`stage`, `development`/`dev`.
    pub fn from_name(name: &str) -> Result<Self, ConfigError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "production" | "prod" => Ok(Self::Production),
            "staging" | "stage" => Ok(Self::Staging),
            "development" | "dev" => Ok(Self::Development),
            _ => Err(ConfigError::UnknownEnvironment {
                value: name.chars().take(100).collect(),
            }),
        }
    }

    /// The variable holding this environment's key.
    pub fn key_var(self) -> &'static str {
        match self {
            Self::Production => "NOXUS_API_KEY_PROD",
            Self::Staging => "NOXUS_API_KEY_STAGING",
            Self::Development => "NOXUS_API_KEY_DEV",
        }
    }
}

impl std::str::FromStr for Environment {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::from_name(name)
    }
}

/// The guide's `NoxusConfig`: key, backend URL and timeout.
#[derive(Clone)]
pub struct Config {
    api_key: ApiKey,
    base_url: String,
    timeout: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("api_key", &self.api_key)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Config {
    /// A configuration with defaults for everything but the key.
    pub fn new(api_key: impl Into<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            api_key: ApiKey::parse(api_key)?,
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Reads `NOXUS_API_KEY` (required), `NOXUS_BACKEND_URL` (default
    /// `https://backend.noxus.ai`) and `NOXUS_TIMEOUT` (seconds, default 30).
    /// Call [`load_dotenv`] first to take them from a `.env` file too.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(API_KEY_VAR, |name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`], with the key from the variable of
    /// `environment` (`NOXUS_API_KEY_PROD`, `_STAGING` or `_DEV`).
    pub fn from_env_for(environment: Environment) -> Result<Self, ConfigError> {
        Self::from_lookup(environment.key_var(), |name| std::env::var(name).ok())
    }

    /// The same resolution over any source of variables (tests, config files).
    pub fn from_lookup(
        key_var: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let key = lookup(key_var)
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| ConfigError::MissingApiKey {
                var: key_var.to_owned(),
            })?;
        let mut config = Self::new(key)?;
        if let Some(url) = lookup(BASE_URL_VAR).filter(|u| !u.is_empty()) {
            config.base_url = normalize_base_url(BASE_URL_VAR, &url)?;
        }
        if let Some(raw) = lookup(TIMEOUT_VAR).filter(|t| !t.is_empty()) {
            config.timeout = parse_timeout(TIMEOUT_VAR, &raw)?;
        }
        Ok(config)
    }

    /// Replaces the key (validated like [`Config::new`]).
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Result<Self, ConfigError> {
        self.api_key = ApiKey::parse(api_key)?;
        Ok(self)
    }

    /// Replaces the backend URL (checked: absolute `http` or `https`).
    pub fn with_base_url(mut self, url: &str) -> Result<Self, ConfigError> {
        self.base_url = normalize_base_url("base_url", url)?;
        Ok(self)
    }

    /// Replaces the per-request timeout (must be more than zero).
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::InvalidTimeout {
                var: "timeout".to_owned(),
                value: "0s".to_owned(),
                reason: "must be more than zero".to_owned(),
            });
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// The key.
    pub fn api_key(&self) -> &ApiKey {
        &self.api_key
    }

    /// The backend URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Loads `.env` from the current directory or its parents into the
/// environment **without overriding variables that are already set**
/// (as python-dotenv's `load_dotenv()` does). A missing file is not an
/// error: returns the file loaded, if any.
pub fn load_dotenv() -> Result<Option<PathBuf>, ConfigError> {
    match dotenvy::dotenv() {
        Ok(path) => Ok(Some(path)),
        Err(err) if err.not_found() => Ok(None),
        Err(err) => Err(ConfigError::Dotenv {
            path: ".env".to_owned(),
            reason: err.to_string(),
        }),
    }
}

/// Loads a given env file, without overriding variables already set.
pub fn load_dotenv_from(path: impl Into<PathBuf>) -> Result<(), ConfigError> {
    let path = path.into();
    dotenvy::from_path(&path).map_err(|err| ConfigError::Dotenv {
        path: path.display().to_string(),
        reason: err.to_string(),
    })
}

pub(crate) fn normalize_base_url(var: &str, url: &str) -> Result<String, ConfigError> {
    let refuse = |reason: &str| ConfigError::InvalidBaseUrl {
        var: var.to_owned(),
        value: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed =
        reqwest::Url::parse(url.trim()).map_err(|e| refuse(&format!("not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(refuse("the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(refuse("it has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(refuse("it must not have a query or fragment"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

pub(crate) fn parse_timeout(var: &str, raw: &str) -> Result<Duration, ConfigError> {
    let refuse = |reason: &str| ConfigError::InvalidTimeout {
        var: var.to_owned(),
        value: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let seconds: f64 = raw
        .trim()
        .parse()
        .map_err(|_| refuse("expected a number of seconds, such as 30"))?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(refuse("must be a positive number of seconds"));
    }
    if seconds > 86_400.0 {
        return Err(refuse("must be at most 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}
