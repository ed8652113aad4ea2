//! The blocking client (feature `blocking`), for scripts without async.
//!
//!     NOXUS_API_KEY=noxus_... cargo run -p noxus-sdk --features blocking --example blocking

fn main() -> Result<(), noxus_sdk::Error> {
    let client = noxus_sdk::blocking::Client::from_env()?;
    let me = client.me()?;
    println!("✅ {} in workspace {}", me.name, me.workspace_name);
    for workflow in client.workflows()? {
        println!("{} {}", workflow.id, workflow.name);
    }
    Ok(())
}
