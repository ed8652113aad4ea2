//! Different keys for different environments: `ENVIRONMENT` =
//! `production` (`prod`) / `staging` (`stage`) / `development` (`dev`, or
//! unset) selects `NOXUS_API_KEY_PROD` / `NOXUS_API_KEY_STAGING` /
//! `NOXUS_API_KEY_DEV`; any other value is an error naming it.
//!
//!     ENVIRONMENT=staging NOXUS_API_KEY_STAGING=noxus_... \
//!         cargo run -p noxus-sdk --example per_environment

use noxus_sdk::{Client, Environment};

#[tokio::main]
async fn main() -> Result<(), noxus_sdk::Error> {
    let environment = Environment::from_env()?;
    println!(
        "environment {environment:?}: key from {}",
        environment.key_var()
    );
    let client = Client::for_environment(environment)?;
    let me = client.me().await?;
    println!("✅ {} in workspace {}", me.name, me.workspace_name);
    Ok(())
}
