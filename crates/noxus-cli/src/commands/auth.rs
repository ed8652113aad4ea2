//! `noxus auth status`: the guide's "test the connection".

use clap::Subcommand;
use serde_json::json;

use super::Context;
use crate::exit::Failure;
use crate::output::{waiting, Output};

/// Key checks.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Check the key against the platform and show its workspace, role and
    /// permissions. Exits 3 for an invalid key, 4 for a missing permission,
    /// 5 for a network error, 2 for a configuration error.
    Status,
}

/// Runs an auth command.
pub async fn run(ctx: Context, out: &Output, command: AuthCommand) -> Result<(), Failure> {
    match command {
        AuthCommand::Status => status(ctx, out).await,
    }
}

async fn status(ctx: Context, out: &Output) -> Result<(), Failure> {
    let config = ctx.client.config();
    let key = config.api_key().prefix().to_owned();
    let backend = config.base_url().to_owned();
    let me = match waiting("checking the key", ctx.client.me()).await {
        Ok(me) => me,
        Err(err) => {
            if !out.json {
                out.field("key", &format!("{key}…"));
                out.field("backend", &backend);
            }
            return Err(err.into());
        }
    };
    if out.json {
        out.print_json(&json!({
            "ok": true, "key": format!("{key}…"), "backend_url": backend, "key_id": me.id, "key_name": me.name,
            "workspace_id": me.workspace_id, "workspace_name": me.workspace_name, "role": me.role,
            "permissions": me.permissions, "tenant_admin": me.tenant_admin, "user_email": me.user_email,
            "expires_at": me.expires_at,
        }));
        return Ok(());
    }
    out.success("Authentication successful");
    out.field("key", &format!("{} ({}, id {})", me.value, me.name, me.id));
    out.field("backend", &backend);
    out.field(
        "workspace",
        &format!("{} ({})", me.workspace_name, me.workspace_id),
    );
    out.field("user", &me.user_email);
    out.field(
        "role",
        &format!(
            "{}{}",
            me.role,
            if me.tenant_admin {
                ", tenant admin"
            } else {
                ""
            }
        ),
    );
    let permissions: Vec<String> = me.permissions.iter().map(ToString::to_string).collect();
    out.field("permissions", &permissions.join(", "));
    out.field("expires", me.expires_at.as_deref().unwrap_or("never"));
    Ok(())
}
