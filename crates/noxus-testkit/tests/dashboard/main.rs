//! End-to-end tests of the dashboard in a real headless Chromium, driven
//! through WebDriver (chromedriver + `fantoccini`) against the platform
//! booted in-process by `TestApp`: people click through the pages, and the
//! keys they get are then used with the Rust SDK.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`. Without them
//! the tests print why and pass, except under `CI`, where they fail.
//! Each test starts its own chromedriver and Chromium (fresh profile, no
//! network use); at most two browsers run at once.
//!
//! A failing test saves a screenshot and the page's HTML in
//! `target/dashboard-failures/<test>.png` / `.html` (and chromedriver's log)
//! and prints the paths. The key test also leaves a screenshot of the
//! created-key page in `target/dashboard-screens/key-created.png`; the
//! accessibility tests (`a11y.rs`, with `Browser::check_a11y` from `axe.rs`)
//! leave every main page there at desktop and phone width.
//!
//! Run: `cargo test -p noxus-testkit --test dashboard -- --nocapture`.

#![allow(clippy::unwrap_used)]

mod a11y;
mod access;
mod axe;
mod chrome;
mod harness;
mod keys;
mod members;
mod pages;
mod usage;
