//! Integration tests: the real platform on port 0 with a fresh SQLite
#![allow(clippy::unwrap_used)]
//! database (noxus-testkit), driven over HTTP.

mod helpers;

mod admin;
mod error_table;
mod isolation;
mod key_lifecycle;
mod malformed_input;
mod openapi;
mod secrets;
mod workflows;
