//! The Rust client of the Noxus AI platform.
//!
//! Every request carries a workspace-scoped API key. This crate validates
//! the key before any network call, never shows more than its first 10
//! characters (in `Debug`, `Display`, errors and logs), retries idempotent
//! requests a bounded number of times, and turns every refusal into a typed
//! [`Error`] carrying the server's `code`, `detail` and `request_id`.
//!
//! ```no_run
//! use noxus_sdk::{Client, Error};
//!
//! # async fn demo() -> Result<(), Error> {
//! // NOXUS_API_KEY, NOXUS_BACKEND_URL (default https://backend.noxus.ai), NOXUS_TIMEOUT
//! let client = Client::from_env()?;
//! match client.me().await {
//!     Ok(me) => println!("✅ key {} of workspace {} ({})", me.value, me.workspace_name, me.role),
//!     Err(Error::Unauthorized(e)) => eprintln!("❌ Invalid API key - please check your credentials ({e})"),
//!     Err(e) => eprintln!("❌ {e}"),
//! }
//! for workflow in client.workflows().list().await? {
//!     println!("{} {}", workflow.id, workflow.name);
//! }
//! # Ok(()) }
//! ```
//!
//! Configuration errors are found early, without a request:
//!
//! ```
//! use noxus_sdk::{Client, ConfigError, Error};
//!
//! let err = Client::new("noxus_1234567890abcdef...").unwrap_err();
//! assert!(matches!(err, Error::Config(ConfigError::MalformedApiKey(_))));
//!
//! let err = noxus_sdk::Config::from_lookup("NOXUS_API_KEY", |_| None).unwrap_err();
//! assert_eq!(err.to_string(), "NOXUS_API_KEY environment variable is required");
//! ```

// docs.rs (nightly, `--cfg docsrs`) marks feature-gated items, like `blocking`.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "blocking")]
pub mod blocking;
mod client;
mod config;
mod error;
mod key;
mod resources;

pub use client::{Client, ClientBuilder, DEFAULT_MAX_RETRY_WAIT};
pub use config::{
    load_dotenv, load_dotenv_from, Config, ConfigError, Environment, API_KEY_VAR, BASE_URL_VAR,
    DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, ENVIRONMENT_VAR, TIMEOUT_VAR,
};
pub use error::{ApiError, Error, Result, FORBIDDEN, UNAUTHORIZED};
pub use key::ApiKey;
pub use noxus_api as types;
pub use noxus_api::key_format::{check_key_format, KEY_REGEX};
pub use resources::{Admin, AuditFilter, Keys, ListWorkflows, Models, Nodes, Workflows};
