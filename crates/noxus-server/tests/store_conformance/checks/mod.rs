//! The checks, one `pub async fn` each (see `main.rs`).

mod audit;
mod auth;
mod callbacks;
mod cascade;
mod concurrency;
mod events;
mod leaks;
mod ordering;
mod refusals;
mod runs;
mod sessions;
mod usage;

pub use audit::*;
pub use auth::*;
pub use callbacks::*;
pub use cascade::*;
pub use concurrency::*;
pub use events::*;
pub use leaks::*;
pub use ordering::*;
pub use refusals::*;
pub use runs::*;
pub use sessions::*;
pub use usage::*;
