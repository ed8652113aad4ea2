//! The SDK against the real platform (noxus-testkit) and against small
//! local servers that misbehave on purpose (retries, timeouts, drops).

#![allow(clippy::unwrap_used)]

mod blocking;
mod config;
mod error_decoding;
mod examples;
mod leaks;
mod resources;
mod retries;
mod runs;
mod server_errors;
