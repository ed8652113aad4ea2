//! The Noxus platform: organizations, workspaces, members and roles, and the
//! workspace-scoped API keys that authenticate every `/v1` request.
//!
//! Start it with [`Application::build`] and [`Application::run_until_stopped`]
//! (what `noxus serve` does), or serve [`app::app`] (a `tower` service) in
//! your own server, e.g. as an axum router's `fallback_service`.

pub mod app;
pub mod auth;
pub mod body;
pub mod bootstrap;
pub mod catalog;
pub mod client_addr;
pub mod clock;
pub mod cluster_limits;
pub mod config;
pub mod connections;
pub mod data_dir_lock;
pub mod domain;
pub mod flags;
pub mod http;
pub mod key_cache;
pub mod keys;
pub mod leaks;
pub mod logging;
pub mod members;
pub mod metrics;
pub mod rate_limit;
pub mod reports;
pub mod runs;
pub mod startup;
pub mod state;
pub mod store;
pub mod time_fmt;
pub mod trace_context;
pub mod usage;
pub mod users;
pub mod web;

pub use config::Config;
pub use startup::{shutdown_signal, Application};
pub use state::AppState;
