//! `noxus workspaces`.

use clap::Subcommand;

use super::{confirm, Context};
use crate::exit::Failure;
use crate::output::{waiting, Output};

/// Workspace commands.
#[derive(Debug, Subcommand)]
pub enum WorkspacesCommand {
    /// List workspaces: every one of the organization with a tenant-admin key, else the key's own.
    List,
    /// Create a workspace (tenant-admin key); you become its owner.
    Create {
        /// Its name, unique in the organization.
        name: String,
        /// A description.
        #[arg(long, short = 'd')]
        description: Option<String>,
    },
    /// Delete a workspace with its keys and workflows (tenant-admin key; asks first on a terminal).
    Delete {
        /// The workspace id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Runs a workspace command.
pub async fn run(ctx: Context, out: &Output, command: WorkspacesCommand) -> Result<(), Failure> {
    let admin = ctx.client.admin();
    match command {
        WorkspacesCommand::List => {
            let workspaces = waiting("listing workspaces", admin.workspaces()).await?;
            if out.json {
                out.print_json(&workspaces);
            } else {
                let rows: Vec<Vec<String>> = workspaces
                    .iter()
                    .map(|w| {
                        vec![
                            w.id.clone(),
                            w.name.clone(),
                            w.description.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                out.table(&["ID", "NAME", "DESCRIPTION"], &rows);
            }
        }
        WorkspacesCommand::Create { name, description } => {
            let workspace = waiting(
                "creating the workspace",
                admin.create_workspace(&name, description.as_deref()),
            )
            .await?;
            if out.json {
                out.print_json(&workspace);
            } else {
                out.success(&format!(
                    "Created workspace \"{}\" ({})",
                    workspace.name, workspace.id
                ));
            }
        }
        WorkspacesCommand::Delete { id, yes } => {
            confirm(
                &format!("Delete workspace {id} with all its keys and workflows?"),
                yes,
            )?;
            let deleted = waiting("deleting the workspace", admin.delete_workspace(&id)).await?;
            if out.json {
                out.print_json(&deleted);
            } else {
                out.success(&format!("Deleted workspace {}", deleted.id));
            }
        }
    }
    Ok(())
}
