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

impl ConnectionArgs {
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
