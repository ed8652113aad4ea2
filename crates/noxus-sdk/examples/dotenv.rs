//! Using a `.env` file, like python-dotenv: `load_dotenv()` reads `.env`
//! from the current directory (or a parent) without overriding variables
//! that are already set.
//!
//!     echo 'NOXUS_API_KEY=noxus_...' > .env
//!     cargo run -p noxus-sdk --example dotenv

use noxus_sdk::{load_dotenv, Client};

#[tokio::main]
async fn main() -> Result<(), noxus_sdk::Error> {
    match load_dotenv()? {
        Some(path) => println!("loaded {}", path.display()),
        None => println!("no .env file; using the environment as it is"),
    }
    let client = Client::from_env()?;
    let models = client.models().list().await?;
    println!("✅ {} models available", models.len());
    Ok(())
}
