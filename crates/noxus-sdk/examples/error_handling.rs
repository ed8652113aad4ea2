//! Error handling, as the guide's `create_authenticated_client`: test the
//! connection with a simple call and turn failures into the guide's
//! messages. Exit codes: 0 ok, 3 bad key, 4 missing permission, 5 network, 2 configuration.
//!
//!     NOXUS_API_KEY=noxus_... cargo run -p noxus-sdk --example error_handling

use noxus_sdk::{Client, Error};

async fn create_authenticated_client() -> Result<Client, Error> {
    let client = Client::from_env()?;
    // Test the connection by making a simple API call.
    client.models().list().await?;
    Ok(client)
}

#[tokio::main]
async fn main() {
    let code = match create_authenticated_client().await {
        Ok(_) => {
            println!("✅ Authentication successful");
            0
        }
        Err(Error::Unauthorized(e)) => {
            println!(
                "❌ Authentication failed: Invalid API key - please check your credentials ({})",
                e.detail
            );
            3
        }
        Err(Error::Forbidden(e)) => {
            println!(
                "❌ Authentication failed: API key lacks required permissions ({})",
                e.detail
            );
            4
        }
        Err(e @ (Error::Timeout { .. } | Error::Connection { .. })) => {
            println!("❌ Authentication failed: Network error during authentication: {e}");
            5
        }
        Err(Error::Config(e)) => {
            println!("❌ Authentication failed: {e}");
            2
        }
        Err(e) => {
            let status = e.status().map_or_else(|| "?".to_owned(), |s| s.to_string());
            println!("❌ Authentication failed: {status}: {e}");
            1
        }
    };
    std::process::exit(code);
}
