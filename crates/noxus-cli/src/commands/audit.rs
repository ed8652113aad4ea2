//! `noxus audit`: the audit log.

use clap::Args;
use noxus_sdk::AuditFilter;

use super::Context;
use crate::exit::Failure;
use crate::output::{waiting, Output};

/// Options of `noxus audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this workspace (a tenant-admin key sees every workspace by default).
    #[arg(long, short = 'w')]
    workspace: Option<String>,
    /// Only actions starting with this, e.g. `api_key.` or `api_key.revoke`.
    #[arg(long)]
    action: Option<String>,
    /// Only entries older than this id (to page back).
    #[arg(long)]
    before: Option<i64>,
    /// At most this many entries.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
}

/// Prints the audit log, newest first.
pub async fn run(ctx: Context, out: &Output, args: AuditArgs) -> Result<(), Failure> {
    let filter = AuditFilter {
        workspace_id: args.workspace,
        action: args.action,
        before: args.before,
        limit: args.limit,
    };
    let entries = waiting("reading the audit log", ctx.client.admin().audit(&filter)).await?;
    if out.json {
        out.print_json(&entries);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let name = e
                .details
                .get("name")
                .and_then(|n| n.as_str())
                .map(|n| format!(" \"{n}\""))
                .unwrap_or_default();
            vec![
                e.id.to_string(),
                e.at.chars().take(19).collect::<String>().replace('T', " "),
                e.action.clone(),
                format!("{} {}{name}", e.target_type, e.target_id),
                e.actor_email
                    .clone()
                    .unwrap_or_else(|| "platform".to_owned()),
                e.client_addr.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.table(
        &["ID", "WHEN (UTC)", "ACTION", "TARGET", "BY", "FROM"],
        &rows,
    );
    Ok(())
}
