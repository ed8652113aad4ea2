//! `noxus workflows`.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use futures_util::TryStreamExt;
use noxus_api::WorkflowWrite;
use noxus_sdk::RunStatus;
use serde_json::Value;

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
    /// Run a workflow: print the run's id and status, or with --wait
    /// follow it to its end (progress on stderr) and print its output.
    ///
    /// Exit codes with --wait: 0 completed, 7 the run failed (the server's
    /// sentence on stderr), 8 the run was stopped.
    Run {
        /// The workflow id.
        id: String,
        /// One input value, as text: KEY=VALUE, where KEY is an input node's
        /// label or `{node_id}::input`. Repeat for several.
        #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
        inputs: Vec<String>,
        /// The input as a JSON object (for values that are not text);
        /// --input values are added to it.
        #[arg(long, value_name = "JSON")]
        input_json: Option<String>,
        /// Follow the run to its end: node-by-node progress on stderr, the
        /// output on stdout.
        #[arg(long)]
        wait: bool,
        /// With --wait: stop waiting after this long (30s, 5m, 1h); the run
        /// itself goes on.
        #[arg(long, value_name = "DURATION", value_parser = super::parse_duration, requires = "wait")]
        max_wait: Option<u64>,
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
        WorkflowsCommand::Run {
            id,
            inputs,
            input_json,
            wait,
            max_wait,
        } => {
            let input = run_input(input_json.as_deref(), &inputs)?;
            let run = waiting("starting the run", workflows.run(&id, input)).await?;
            if !wait {
                if out.json {
                    out.print_json(&run);
                } else {
                    out.field("run", &run.id);
                    out.field("status", run.status.as_str());
                }
                return Ok(());
            }
            let labels = node_labels(&ctx.client, &run).await;
            let follow = super::runs::follow(&run, &labels);
            let ended = match max_wait {
                None => follow.await,
                Some(seconds) => {
                    let limit = std::time::Duration::from_secs(seconds);
                    tokio::time::timeout(limit, follow)
                        .await
                        .unwrap_or_else(|_| {
                            Err(noxus_sdk::Error::WaitTimeout {
                                run_id: run.id.clone(),
                                timeout: limit,
                            })
                        })
                }
            }?;
            // Scripts get the run as JSON whatever its end; people get the
            // output of a completed run, and the error of another.
            if out.json {
                out.print_json(&ended);
            }
            match ended.status {
                RunStatus::Failed => {
                    return Err(noxus_sdk::Error::RunFailed(Box::new(ended)).into())
                }
                RunStatus::Stopped => {
                    return Err(noxus_sdk::Error::RunStopped(Box::new(ended)).into())
                }
                _ if !out.json => super::runs::print_output(out, &ended),
                _ => {}
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

/// The run input from `--input-json` and the `--input KEY=VALUE` pairs.
fn run_input(json: Option<&str>, pairs: &[String]) -> Result<Value, Failure> {
    let mut input = match json {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(Failure::config(anyhow::anyhow!(
                    "--input-json must be a JSON object, such as '{{\"Name\": \"Ada\"}}'"
                )))
            }
            Err(e) => {
                return Err(Failure::config(anyhow::anyhow!(
                    "--input-json is not valid JSON: {e}"
                )))
            }
        },
    };
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Failure::config(anyhow::anyhow!(
                "--input takes KEY=VALUE (an input node's label or {{node_id}}::input), not `{pair}`"
            )));
        };
        if key.trim().is_empty() {
            return Err(Failure::config(anyhow::anyhow!(
                "--input `{pair}` has no key before `=`"
            )));
        }
        input.insert(key.trim().to_owned(), Value::String(value.to_owned()));
    }
    Ok(Value::Object(input))
}

/// Node ids to what the progress display calls them: the node's label or
/// type, from the workflow's definition. A workflow that cannot be read
/// (it changed, a key restricted to running) leaves the ids as they are.
async fn node_labels(
    client: &noxus_sdk::Client,
    run: &noxus_sdk::Run,
) -> std::collections::HashMap<String, String> {
    let Ok(workflow) = client.workflows().get(&run.workflow_id).await else {
        return std::collections::HashMap::new();
    };
    let nodes = workflow
        .definition
        .get("nodes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    nodes
        .iter()
        .filter_map(|node| {
            let id = node.get("id")?.as_str()?;
            let kind = node.get("type").and_then(Value::as_str).unwrap_or("node");
            let label = node
                .get("node_config")
                .and_then(|c| c.get("label"))
                .and_then(Value::as_str)
                .filter(|l| !l.trim().is_empty());
            let name = match label {
                Some(label) => format!("{kind} \"{label}\""),
                None => kind.to_owned(),
            };
            // Bounded: a definition's text is the client's own, but a
            // display line should stay a line.
            Some((id.to_owned(), name.chars().take(80).collect()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::run_input;

    #[test]
    fn inputs_combine_json_and_pairs() {
        let input = run_input(Some(r#"{"n": 1, "Name": "x"}"#), &["Name=Ada=B".to_owned()])
            .unwrap_or_else(|_| panic!("valid input"));
        assert_eq!(input, serde_json::json!({"n": 1, "Name": "Ada=B"}));
        assert!(run_input(None, &["nothing".to_owned()]).is_err());
        assert!(run_input(None, &["=x".to_owned()]).is_err());
        assert!(run_input(Some("[1]"), &[]).is_err());
        assert!(run_input(Some("{"), &[]).is_err());
    }
}
