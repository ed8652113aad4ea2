//! Environment variables (recommended): `Client::from_env()` reads
//! `NOXUS_API_KEY`, `NOXUS_BACKEND_URL` and `NOXUS_TIMEOUT`, and says which
//! variable is missing.
//!
//!     NOXUS_API_KEY=noxus_... cargo run -p noxus-sdk --example environment_variables

use noxus_sdk::Client;

#[tokio::main]
async fn main() {
    // "NOXUS_API_KEY environment variable is required" when it is unset.
    let client = match Client::from_env() {
        Ok(client) => client,
        Err(err) => {
            eprintln!("❌ {err}");
            std::process::exit(2);
        }
    };
    match client.workflows().list().await {
        Ok(workflows) => println!("✅ {} workflows in the first page", workflows.len()),
        Err(err) => {
            eprintln!("❌ {err}");
            std::process::exit(1);
        }
    }
}
