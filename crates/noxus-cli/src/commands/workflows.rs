//! `noxus workflows`.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use futures_util::TryStreamExt;
use noxus_api::WorkflowWrite;

use super::{confirm, Context};
use crate::exit::Failure;
use crate::output::{waiting, Output};

/// A workflow type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// `flow`.
    Flow,
    /// `agent_flow`.
    AgentFlow,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Flow => "flow",
            Self::AgentFlow => "agent_flow",
        }
    }
}

/// Workflow commands.
#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// List workflows of the key's workspace (every page).
    List {
        /// Only this type.
        #[arg(long = "type", value_enum)]
        kind: Option<Kind>,
    },
    /// Show one workflow (`--json` prints its full definition).
    Get {
        /// The workflow id.
        id: String,
    },
    /// Create a workflow, empty or from a definition file.
    Create {
        /// Its name.
        name: String,
        /// A JSON file with the definition (`{"nodes": [...], "edges": [...]}`).
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        /// Its type.
        #[arg(long = "type", value_enum, default_value = "flow")]
        kind: Kind,
    },
    /// Delete a workflow and its versions (asks first on a terminal).
    Delete {
        /// The workflow id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Runs a workflow command.
pub async fn run(ctx: Context, out: &Output, command: WorkflowsCommand) -> Result<(), Failure> {
    let workflows = ctx.client.workflows();
    match command {
        WorkflowsCommand::List { kind } => {
            let all: Vec<_> = waiting(
                "listing workflows",
                workflows.stream(kind.map(Kind::as_str)).try_collect(),
            )
            .await?;
            if out.json {
                out.print_json(&all);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|w| {
                    let nodes = w
                        .definition
                        .get("nodes")
                        .and_then(|n| n.as_array())
                        .map_or(0, Vec::len);
                    vec![
                        w.id.clone(),
                        w.name.clone(),
                        w.kind.clone(),
                        nodes.to_string(),
                        w.last_updated_at
                            .replace('T', " ")
                            .chars()
                            .take(16)
                            .collect(),
                    ]
                })
                .collect();
            out.table(&["ID", "NAME", "TYPE", "NODES", "UPDATED"], &rows);
        }
        WorkflowsCommand::Get { id } => {
            let workflow = waiting("reading the workflow", workflows.get(&id)).await?;
            if out.json {
                out.print_json(&workflow);
                return Ok(());
            }
            let count = |key: &str| {
                workflow
                    .definition
                    .get(key)
                    .and_then(|v| v.as_array())
                    .map_or(0, Vec::len)
            };
            out.field("id", &workflow.id);
            out.field("name", &workflow.name);
            out.field("type", &workflow.kind);
            out.field("nodes", &count("nodes").to_string());
            out.field("edges", &count("edges").to_string());
            out.field("created", &workflow.created_at);
            out.field("updated", &workflow.last_updated_at);
        }
        WorkflowsCommand::Create { name, file, kind } => {
            let definition = match file {
                None => None,
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        Failure::config(anyhow::anyhow!("cannot read {}: {e}", path.display()))
                    })?;
                    Some(serde_json::from_str(&text).map_err(|e| {
                        Failure::config(anyhow::anyhow!(
                            "{} is not valid JSON: {e}",
                            path.display()
                        ))
                    })?)
                }
            };
            let write = WorkflowWrite {
                name,
                kind: kind.as_str().to_owned(),
                definition,
                error_handler: None,
            };
            let workflow = waiting("creating the workflow", workflows.save(&write)).await?;
            if out.json {
                out.print_json(&workflow);
            } else {
                out.success(&format!(
                    "Created workflow \"{}\" ({})",
                    workflow.name, workflow.id
                ));
            }
        }
        WorkflowsCommand::Delete { id, yes } => {
            confirm(&format!("Delete workflow {id} and its versions?"), yes)?;
            let deleted = waiting("deleting the workflow", workflows.delete(&id)).await?;
            if out.json {
                out.print_json(&deleted);
            } else {
                out.success(&format!("Deleted workflow {}", deleted.id));
            }
        }
    }
    Ok(())
}
