//! Workflow runs: save a small workflow (input → compose text → output),
//! run it, show its events as they arrive, wait for its end and print its
//! output, as the official client's `workflow.run({...}).wait()`.
//! Exit codes: 0 completed, 1 failed or stopped (or any other error).
//!
//!     NOXUS_API_KEY=noxus_... cargo run -p noxus-sdk --example run_workflow -- Ada

use futures_util::TryStreamExt as _;
use noxus_sdk::types::WorkflowWrite;
use noxus_sdk::{Client, Error, RunEventKind};
use serde_json::json;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e @ (Error::RunFailed(_) | Error::RunStopped(_))) => {
            // "The run … failed: <the server's sentence>"
            eprintln!("❌ {e}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("❌ {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let client = Client::from_env()?;
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "world".to_owned());

    let edge = |from: &str, to: &str| {
        json!({"from_id": {"node_id": from, "connector_name": "output"},
               "to_id": {"node_id": to, "connector_name": "input"}})
    };
    let mut workflow = WorkflowWrite::new("greeting (example)");
    workflow.definition = Some(json!({
        "nodes": [
            {"id": "name", "type": "InputNode", "node_config": {"label": "Name"}},
            {"id": "greet", "type": "ComposeTextNode", "node_config": {"template": "Hello, {input}!"}},
            {"id": "out", "type": "OutputNode"}
        ],
        "edges": [edge("name", "greet"), edge("greet", "out")]
    }));
    let workflow = client.workflows().save(&workflow).await?;

    // Start a run: the input is keyed by the input node's label (or "name::input").
    let run = client
        .workflows()
        .run(&workflow.id, json!({"Name": name}))
        .await?;
    println!("run {} {}", run.id, run.status);

    // Its events, as they happen (a dropped connection resumes where it was).
    let mut events = std::pin::pin!(run.stream());
    while let Some(event) = events.try_next().await? {
        match event.kind {
            RunEventKind::NodeStarted { node_id, .. } => println!("  ▸ {node_id}"),
            RunEventKind::Progress { progress, .. } => println!("  {progress}%"),
            _ => {}
        }
    }

    // Its end: Err(Error::RunFailed(run)) if it failed, with the server's sentence.
    let done = run.wait().await?;
    let text = done
        .output
        .as_ref()
        .and_then(|output| output["out::output"]["text"].as_str())
        .unwrap_or_default();
    println!("✅ {text}");

    client.workflows().delete(&workflow.id).await?;
    Ok(())
}
