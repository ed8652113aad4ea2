#![doc = include_str!("../README.md")]
//!
//! The types the API returns and takes (`Me`, `Workflow`, `Role`, …) are
//! re-exported here from [`types`] (the `noxus-api` crate).

// docs.rs (nightly, `--cfg docsrs`) marks feature-gated items, like `blocking`.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "blocking")]
pub mod blocking;
mod client;
mod config;
mod error;
mod key;
mod resources;
mod runs;
mod sse;

pub use client::{Client, ClientBuilder, DEFAULT_MAX_RETRY_WAIT};
pub use config::{
    load_dotenv, load_dotenv_from, Config, ConfigError, Environment, API_KEY_VAR, BASE_URL_VAR,
    DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, ENVIRONMENT_VAR, TIMEOUT_VAR,
};
pub use error::{ApiError, Error, ErrorCode, Result, FORBIDDEN, UNAUTHORIZED, WRONG_WORKSPACE};
pub use key::ApiKey;
/// The wire types of the Noxus HTTP API (the `noxus-api` crate): what the
/// calls return and take.
#[doc(inline)]
pub use noxus_api as types;
pub use noxus_api::key_format::{check_key_format, KEY_REGEX};
#[doc(inline)]
pub use noxus_api::{
    ApiKeyInfo, AuditEntry, CreateApiKey, CreateWorkspace, CreatedApiKey, Deleted, KeyAddressInfo,
    KeyUsage, Me, Page, Permission, RateLimitSpec, Role, RotateApiKey, TenantUser, UpdateWorkspace,
    UsageFlag, UsagePoint, Workflow, WorkflowVersion, WorkflowVersionInfo, WorkflowVersionWrite,
    WorkflowWrite, Workspace, WorkspaceUsage,
};
/// The HTTP client this crate uses (`ClientBuilder::http_client` takes a
/// `reqwest::Client`; connection errors carry a `reqwest::Error`).
pub use reqwest;
pub use resources::{Admin, AuditFilter, Keys, ListWorkflows, Models, Nodes, Workflows};
pub use runs::{
    NodeIo, Run, RunDeletion, RunEvent, RunEventKind, RunStatus, Runs, StartRun, MAX_EVENT_BYTES,
};
