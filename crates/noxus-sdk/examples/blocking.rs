//! The blocking client (feature `blocking`), for scripts without async:
//! the same calls as the async client, without `.await`.
//!
//!     NOXUS_API_KEY=noxus_... cargo run -p noxus-sdk --features blocking --example blocking

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("❌ {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), noxus_sdk::Error> {
    let client = noxus_sdk::blocking::Client::from_env()?;
    let me = client.me()?;
    println!("✅ {} in workspace {}", me.name, me.workspace_name);
    for workflow in client.workflows().list()? {
        println!("{} {}", workflow.id, workflow.name);
    }
    Ok(())
}
