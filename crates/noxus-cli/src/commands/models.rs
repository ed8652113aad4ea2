//! `noxus models`.

use clap::Subcommand;
use serde_json::Value;

use super::Context;
use crate::exit::Failure;
use crate::output::{waiting, Output};

/// Model commands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the language models.
    List,
}

/// Runs a model command.
pub async fn run(ctx: Context, out: &Output, command: ModelsCommand) -> Result<(), Failure> {
    match command {
        ModelsCommand::List => {
            let models = waiting("listing models", ctx.client.models().list()).await?;
            if out.json {
                out.print_json(&models);
                return Ok(());
            }
            let text = |m: &Value, k: &str| match m.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            let rows: Vec<Vec<String>> = models
                .iter()
                .map(|m| {
                    vec![
                        text(m, "id"),
                        text(m, "name"),
                        text(m, "provider"),
                        text(m, "context_window"),
                    ]
                })
                .collect();
            out.table(&["ID", "NAME", "PROVIDER", "CONTEXT"], &rows);
        }
    }
    Ok(())
}
