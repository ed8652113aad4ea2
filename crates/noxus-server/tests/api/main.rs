//! Integration tests: the real platform on port 0 with a fresh SQLite
//! database (noxus-testkit), driven over HTTP.

#![allow(clippy::unwrap_used)]

mod helpers;

mod admin;
mod audit;
mod dashboard;
mod database_outage;
mod error_table;
mod escalation;
mod flags;
mod front_door;
mod isolation;
mod key_lifecycle;
mod leak_webhooks;
mod leaks;
mod login_protection;
mod malformed_input;
mod metrics;
mod openapi;
mod people;
mod postgres_outage;
mod properties;
mod rate_limits;
mod receiver;
mod runs;
mod runs_callbacks;
mod secrets;
mod startup_checks;
mod usage;
mod workflows;
