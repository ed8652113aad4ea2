//! Direct initialization: `Client::new(api_key)`.
//!
//! The guide's `Client(api_key="noxus_...")`. Here the key comes from the
//! first argument (or `NOXUS_API_KEY`) so that it stays out of the source.
//!
//!     cargo run -p noxus-sdk --example direct_init -- noxus_...

use noxus_sdk::Client;

#[tokio::main]
async fn main() -> Result<(), noxus_sdk::Error> {
    let api_key = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("NOXUS_API_KEY").ok())
        .unwrap_or_default();
    let base_url = std::env::var("NOXUS_BACKEND_URL")
        .unwrap_or_else(|_| noxus_sdk::DEFAULT_BASE_URL.to_owned());

    let client = Client::builder()
        .api_key(api_key)
        .base_url(base_url)
        .build()?;
    let me = client.me().await?;
    println!(
        "✅ Authenticated: key {} ({}) in workspace {}",
        me.value, me.name, me.workspace_name
    );
    Ok(())
}
