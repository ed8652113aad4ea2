//! A configuration value: the guide's `NoxusConfig` dataclass and its
//! `from_env()` classmethod, with the same defaults.
//!
//!     NOXUS_API_KEY=noxus_... cargo run -p noxus-sdk --example config_struct

use std::time::Duration;

use noxus_sdk::{Client, Config};

#[tokio::main]
async fn main() -> Result<(), noxus_sdk::Error> {
    // NOXUS_API_KEY (required), NOXUS_BACKEND_URL, NOXUS_TIMEOUT (seconds).
    let config = Config::from_env()?;
    println!(
        "backend {} timeout {:?} key {}",
        config.base_url(),
        config.timeout(),
        config.api_key()
    );

    // Settings can also be changed in code, each checked on the spot.
    let config = config.with_timeout(Duration::from_secs(10))?;
    let client = Client::from_config(config)?;
    let me = client.me().await?;
    println!(
        "✅ {} ({}) may: {:?}",
        me.user_email, me.role, me.permissions
    );
    Ok(())
}
