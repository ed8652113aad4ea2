//! How commands find their key and backend, exactly as the SDK resolves
//! them: flags, then the environment, then a `.env` file.

use std::time::Duration;

use clap::{Args, ValueEnum};
use noxus_sdk::{Client, Config, ConfigError, Environment};

use crate::exit::Failure;

/// The deployment environment whose key to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvironmentName {
    /// NOXUS_API_KEY_PROD.
    Production,
    /// NOXUS_API_KEY_STAGING.
    Staging,
    /// NOXUS_API_KEY_DEV.
    Development,
}

/// Options shared by every command that talks to the platform.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// The API key. Prefer the environment: a flag is visible to other users in `ps`.
    #[arg(long, global = true, hide_env_values = true)]
    api_key: Option<String>,

    /// Use this environment's key (NOXUS_API_KEY_PROD, _STAGING or _DEV). Without
    /// the flag, ENVIRONMENT selects the same way when its variable is set.
    #[arg(long, global = true, value_enum)]
    environment: Option<EnvironmentName>,

    /// The platform's URL [env: NOXUS_BACKEND_URL] [default: https://backend.noxus.ai].
    #[arg(long, global = true)]
    backend_url: Option<String>,

    /// Seconds to wait for each answer [env: NOXUS_TIMEOUT] [default: 30].
    #[arg(long, global = true)]
    timeout: Option<f64>,
}

/// Where to reach the platform without a key (`keys scan --report`): the
/// backend URL and the timeout, resolved as for every command.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The URL, without a trailing slash.
    pub url: String,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

impl ConnectionArgs {
    /// The backend URL and timeout only (no key needed): flags >
    /// environment > `.env` > the defaults.
    pub fn backend(&self) -> Result<Backend, Failure> {
        noxus_sdk::load_dotenv()?;
        let (var, url) = match &self.backend_url {
            Some(url) => ("--backend-url", url.clone()),
            None => match std::env::var(noxus_sdk::BASE_URL_VAR) {
                Ok(url) if !url.is_empty() => (noxus_sdk::BASE_URL_VAR, url),
                _ => ("default", noxus_sdk::DEFAULT_BASE_URL.to_owned()),
            },
        };
        let parsed = noxus_sdk::reqwest::Url::parse(url.trim()).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if parsed.is_none() {
            return Err(Failure::config(anyhow::anyhow!(
                "{var} is not an absolute http:// or https:// URL: {url}"
            )));
        }
        let timeout = match (self.timeout, std::env::var(noxus_sdk::TIMEOUT_VAR)) {
            (Some(seconds), _) => Some(("--timeout", seconds.to_string(), seconds)),
            (None, Ok(text)) if !text.trim().is_empty() => {
                let seconds = text.trim().parse::<f64>().unwrap_or(f64::NAN);
                Some((noxus_sdk::TIMEOUT_VAR, text, seconds))
            }
            _ => None,
        };
        let timeout = match timeout {
            None => noxus_sdk::DEFAULT_TIMEOUT,
            Some((_, _, seconds))
                if seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0 =>
            {
                Duration::from_secs_f64(seconds)
            }
            Some((var, text, _)) => {
                return Err(Failure::config(anyhow::anyhow!(
                    "{var} must be a positive number of seconds, at most 86400 (got {text})"
                )))
            }
        };
        Ok(Backend {
            url: url.trim().trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    /// Builds the client: flags > environment > `.env`.
    pub fn client(&self) -> Result<Client, Failure> {
        // .env never overrides what the environment already holds.
        noxus_sdk::load_dotenv()?;
        let key_var = match self.environment {
            Some(EnvironmentName::Production) => Environment::Production.key_var(),
            Some(EnvironmentName::Staging) => Environment::Staging.key_var(),
            Some(EnvironmentName::Development) => Environment::Development.key_var(),
            // As the guide's get_client(): ENVIRONMENT picks the variable, but
            // only when that variable exists; NOXUS_API_KEY stays the default.
            // An ENVIRONMENT that names no environment is an error, never
            // a silent fall back.
            None => match std::env::var(noxus_sdk::ENVIRONMENT_VAR) {
                Ok(name) if !name.trim().is_empty() => {
                    let var = Environment::from_name(&name)?.key_var();
                    if std::env::var_os(var).is_some() {
                        var
                    } else {
                        noxus_sdk::API_KEY_VAR
                    }
                }
                _ => noxus_sdk::API_KEY_VAR,
            },
        };
        let flag_key = self.api_key.clone();
        let config = Config::from_lookup(key_var, |name| {
            if name == key_var {
                if let Some(key) = &flag_key {
                    return Some(key.clone());
                }
            }
            std::env::var(name).ok()
        })?;
        let mut config = config;
        if let Some(url) = &self.backend_url {
            config = config.with_base_url(url)?;
        }
        if let Some(seconds) = self.timeout {
            if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
                return Err(ConfigError::InvalidTimeout {
                    var: "--timeout".to_owned(),
                    value: seconds.to_string(),
                    reason: "must be a positive number of seconds, at most 86400".to_owned(),
                }
                .into());
            }
            config = config.with_timeout(Duration::from_secs_f64(seconds))?;
        }
        Ok(Client::builder()
            .config(config)
            .user_agent(concat!("noxus-cli/", env!("CARGO_PKG_VERSION")))
            .build()?)
    }
}
