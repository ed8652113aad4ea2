//! `noxus keys`: create (the secret shown once), list, show, rotate,
//! revoke, an offline format check, and a scan of files for keys
//! ([`super::scan`]).

use std::time::Duration;

use clap::{Args, Subcommand};
use noxus_api::{ApiKeyInfo, CreateApiKey, CreatedApiKey};
use serde_json::json;

use super::{confirm, parse_duration, Context};
use crate::exit::{self, Failure};
use crate::output::{waiting, Output};

/// Longest rotation grace period the platform accepts.
const MAX_GRACE: u64 = 7 * 86_400;

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once and cannot be shown again.
    ///
    /// `export NOXUS_API_KEY=$(noxus keys create ci --quiet)` hands it to a later command.
    Create(CreateArgs),
    /// List keys of the workspace (yours, or everybody's with keys:manage). Never shows secrets.
    List(WorkspaceArg),
    /// Show one key (never its secret).
    Show(KeyArg),
    /// Replace a key by a new one; the old one keeps working for the grace period.
    Rotate(RotateArgs),
    /// Revoke a key at once and for good (asks first on a terminal).
    Revoke(RevokeArgs),
    /// Show how a key was used: requests per hour (or day) with their
    /// outcomes, the last use and every address it came from.
    Usage(UsageArgs),
    /// Check offline that a string is a well-formed Noxus key (prefix and
    /// checksum): for secret scanning and typo hunting. Never prints the key.
    /// Exits 0 when well formed, 1 when not.
    Check(CheckArgs),
    /// Find Noxus keys in files and directories, offline (prefix and
    /// checksum: look-alikes are never reported). Prints `file:line:` and
    /// the key's fragment only, never the key.
    ///
    /// Skips .git, target and node_modules, binary files, files over
    /// --max-file-bytes and symbolic links inside directories. Exits 0 when
    /// no key was found, 9 when one was (reported or not). With --report,
    /// sends the keys found to the platform (no API key needed), which
    /// revokes each one that still works.
    Scan(super::scan::ScanArgs),
}

/// `--workspace`.
#[derive(Debug, Args)]
pub struct WorkspaceArg {
    /// Workspace id [default: the key's own workspace].
    #[arg(long, short = 'w')]
    workspace: Option<String>,
}

/// A key id.
#[derive(Debug, Args)]
pub struct KeyArg {
    /// The key's id (see `noxus keys list`).
    key_id: String,
    #[command(flatten)]
    workspace: WorkspaceArg,
}

/// Options of `keys create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A descriptive name, e.g. "ci" or "billing service".
    name: String,
    #[command(flatten)]
    workspace: WorkspaceArg,
    /// Restrict the key to this permission (repeat for several); default: the role's.
    #[arg(long = "permission", short = 'p')]
    permissions: Vec<String>,
    /// The key stops working after this long: 30m, 12h, 90d...
    #[arg(long, value_parser = parse_duration)]
    expires_in: Option<u64>,
    /// An organization-wide admin key (needs a tenant-admin key).
    #[arg(long)]
    tenant_admin: bool,
    /// This key's own rate limit in requests per second (default: the workspace's).
    #[arg(long, value_name = "PER_SECOND")]
    rate_limit: Option<u32>,
    /// Requests allowed at once with --rate-limit (default: twice the rate).
    #[arg(long, requires = "rate_limit")]
    burst: Option<u32>,
    /// Print only the secret (for `export NOXUS_API_KEY=$(...)`).
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Options of `keys rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The key's id.
    key_id: String,
    #[command(flatten)]
    workspace: WorkspaceArg,
    /// How long the old key keeps working: 0 (revoke now), 1h, 24h or 7d (any up to 7d).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    grace: u64,
    /// Print only the new secret.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Options of `keys revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The key's id.
    key_id: String,
    #[command(flatten)]
    workspace: WorkspaceArg,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// Options of `keys usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The key's id.
    key_id: String,
    #[command(flatten)]
    workspace: WorkspaceArg,
    /// Days to show, one bar per day (default: the last 24 hours, one bar per hour).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=90))]
    days: Option<u32>,
}

/// Options of `keys check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The key to check; `-` reads it from stdin (keeps it out of shell history).
    key: String,
}

/// Runs a key command that talks to the platform.
pub async fn run(ctx: Context, out: &Output, command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::Create(args) => create(ctx, out, args).await,
        KeysCommand::List(args) => list(ctx, out, args).await,
        KeysCommand::Show(args) => show(ctx, out, args).await,
        KeysCommand::Rotate(args) => rotate(ctx, out, args).await,
        KeysCommand::Revoke(args) => revoke(ctx, out, args).await,
        KeysCommand::Usage(args) => usage(ctx, out, args).await,
        KeysCommand::Check(args) => check(out, &args),
        // Dispatched by `main` (it needs no key); never reached.
        KeysCommand::Scan(_) => Err(Failure::config(anyhow::anyhow!(
            "`noxus keys scan` needs no API key: run it on its own"
        ))),
    }
}

async fn workspace_of(ctx: &Context, arg: &WorkspaceArg) -> Result<String, Failure> {
    match &arg.workspace {
        Some(id) => Ok(id.clone()),
        None => Ok(waiting("checking the key", ctx.client.me())
            .await?
            .workspace_id),
    }
}

async fn create(ctx: Context, out: &Output, args: CreateArgs) -> Result<(), Failure> {
    let workspace = workspace_of(&ctx, &args.workspace).await?;
    let expires_at = match args.expires_in {
        Some(seconds) => Some(rfc3339_in(seconds)?),
        None => None,
    };
    let request = CreateApiKey {
        name: args.name,
        tenant_admin: args.tenant_admin,
        permissions: (!args.permissions.is_empty()).then_some(args.permissions),
        expires_at,
        rate_limit: args.rate_limit.map(|per_second| noxus_api::RateLimitSpec {
            per_second,
            burst: args.burst,
        }),
    };
    let created = waiting(
        "creating the key",
        ctx.client.admin().keys(&workspace).create(&request),
    )
    .await?;
    print_secret(out, &created, args.quiet, "Created");
    Ok(())
}

fn print_secret(out: &Output, key: &CreatedApiKey, quiet: bool, verb: &str) {
    if quiet {
        out.line(&key.value);
    } else if out.json {
        out.print_json(key);
    } else {
        out.success(&format!("{verb} API key \"{}\" ({})", key.name, key.id));
        out.line("");
        out.line(&format!("    {}", key.value));
        out.line("");
        out.warn("copy this key now: it will not be shown again");
        if let Some(until) = &key.replaced_key_valid_until {
            out.field("old key", &format!("keeps working until {until}"));
        }
        if let Some(expires) = &key.expires_at {
            out.field("expires", expires);
        }
    }
}

async fn list(ctx: Context, out: &Output, args: WorkspaceArg) -> Result<(), Failure> {
    let workspace = workspace_of(&ctx, &args).await?;
    let keys = waiting("listing keys", ctx.client.admin().keys(&workspace).list()).await?;
    if out.json {
        out.print_json(&keys);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.value.clone(),
                k.status.clone(),
                permissions_text(k),
                k.created_at.get(..10).unwrap_or(&k.created_at).to_owned(),
                k.expires_at.as_deref().map_or("never".to_owned(), |e| {
                    e.get(..16).unwrap_or(e).replace('T', " ")
                }),
            ]
        })
        .collect();
    out.table(
        &[
            "ID",
            "NAME",
            "KEY",
            "STATUS",
            "PERMISSIONS",
            "CREATED",
            "EXPIRES",
        ],
        &rows,
    );
    Ok(())
}

fn permissions_text(key: &ApiKeyInfo) -> String {
    let mut text = match &key.permissions {
        None => "role".to_owned(),
        Some(list) => list
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    };
    if key.tenant_admin {
        text.push_str(" +tenant admin");
    }
    text
}

async fn show(ctx: Context, out: &Output, args: KeyArg) -> Result<(), Failure> {
    let workspace = workspace_of(&ctx, &args.workspace).await?;
    let key = waiting(
        "reading the key",
        ctx.client.admin().keys(&workspace).get(&args.key_id),
    )
    .await?;
    if out.json {
        out.print_json(&key);
        return Ok(());
    }
    out.field("id", &key.id);
    out.field("name", &key.name);
    out.field("key", &key.value);
    out.field("status", &key.status);
    out.field("workspace", &key.workspace_id);
    out.field("owner", &key.user_id);
    out.field("permissions", &permissions_text(&key));
    out.field("created", &key.created_at);
    out.field("expires", key.expires_at.as_deref().unwrap_or("never"));
    if let Some(revoked) = &key.revoked_at {
        out.field("revoked", revoked);
    }
    if let Some(next) = &key.replaced_by {
        out.field("replaced by", next);
    }
    Ok(())
}

async fn rotate(ctx: Context, out: &Output, args: RotateArgs) -> Result<(), Failure> {
    if args.grace > MAX_GRACE {
        return Err(Failure::config(anyhow::anyhow!("--grace is at most 7d")));
    }
    let workspace = workspace_of(&ctx, &args.workspace).await?;
    let rotated = waiting(
        "rotating the key",
        ctx.client
            .admin()
            .keys(&workspace)
            .rotate(&args.key_id, Duration::from_secs(args.grace)),
    )
    .await?;
    print_secret(out, &rotated, args.quiet, "Rotated; new");
    Ok(())
}

async fn revoke(ctx: Context, out: &Output, args: RevokeArgs) -> Result<(), Failure> {
    let workspace = workspace_of(&ctx, &args.workspace).await?;
    confirm(
        &format!(
            "Revoke API key {}? Programs using it will be refused at once.",
            args.key_id
        ),
        args.yes,
    )?;
    let key = waiting(
        "revoking the key",
        ctx.client.admin().keys(&workspace).revoke(&args.key_id),
    )
    .await?;
    if out.json {
        out.print_json(&key);
    } else {
        out.success(&format!(
            "Revoked API key \"{}\" ({}, {})",
            key.name, key.id, key.value
        ));
    }
    Ok(())
}

async fn usage(ctx: Context, out: &Output, args: UsageArgs) -> Result<(), Failure> {
    let workspace = workspace_of(&ctx, &args.workspace).await?;
    let (hours, daily) = match args.days {
        Some(days) => (days * 24, true),
        None => (24, false),
    };
    let usage = waiting(
        "reading usage",
        ctx.client
            .admin()
            .keys(&workspace)
            .usage(&args.key_id, hours, daily),
    )
    .await?;
    if out.json {
        out.print_json(&usage);
        return Ok(());
    }
    let t = &usage.totals;
    out.field("key", &format!("{} ({})", usage.name, usage.key_id));
    out.field(
        "period",
        &format!(
            "{} → {} (per {})",
            short_time(&usage.from),
            short_time(&usage.to),
            usage.bucket
        ),
    );
    out.field(
        "requests",
        &format!(
            "{} ({} ok, {} client errors, {} server errors; {} unauthorized, {} forbidden, {} rate limited)",
            t.requests, t.ok, t.client_errors, t.server_errors, t.unauthorized, t.forbidden, t.rate_limited
        ),
    );
    let last = match (&usage.last_used_at, &usage.last_used_addr) {
        (Some(at), Some(addr)) => format!("{} from {addr}", short_time(at)),
        (Some(at), None) => short_time(at),
        _ => "never".to_owned(),
    };
    out.field("last used", &last);
    let addresses: Vec<&str> = usage.addresses.iter().map(|a| a.addr.as_str()).collect();
    // The usage carries a first page; say so when the key has more.
    let count = if usage.addresses_total > addresses.len() as u64 {
        format!(
            "{} most recently seen of {}",
            addresses.len(),
            usage.addresses_total
        )
    } else {
        String::new()
    };
    out.field(
        "addresses",
        if addresses.is_empty() { "none" } else { &count },
    );
    if !addresses.is_empty() {
        out.line(&format!("             {}", addresses.join(", ")));
    }
    out.line("");
    let max = usage.points.iter().map(|p| p.requests).max().unwrap_or(0);
    for point in &usage.points {
        let label = if daily {
            point.start.get(..10).unwrap_or(&point.start).to_owned()
        } else {
            short_time(&point.start)
        };
        let bar = bar(point.requests, max, 40);
        let errors = point.client_errors + point.server_errors;
        let note = if errors > 0 {
            format!("  ({errors} errors)")
        } else {
            String::new()
        };
        out.line(&format!("{label}  {bar:<40} {}{note}", point.requests));
    }
    Ok(())
}

/// A horizontal bar of `value` against `max`, `width` cells wide, in eighths.
fn bar(value: u64, max: u64, width: usize) -> String {
    if max == 0 || value == 0 {
        return String::new();
    }
    let eighths = ((value as u128 * width as u128 * 8).div_ceil(max as u128)) as usize;
    let partial = ['▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let mut text = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        text.push(partial[eighths % 8 - 1]);
    }
    text
}

/// `2026-11-26T18:00:00Z` → `2026-11-26 18:00`.
fn short_time(rfc3339: &str) -> String {
    rfc3339
        .chars()
        .take(16)
        .collect::<String>()
        .replace('T', " ")
}

/// `keys check`, which needs no connection.
pub fn check(out: &Output, args: &CheckArgs) -> Result<(), Failure> {
    let key = if args.key == "-" {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Failure::other(e.into()))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        args.key.clone()
    };
    let prefix = noxus_api::key_format::display_prefix(&key).to_owned();
    match noxus_api::check_key_format(&key) {
        Ok(()) => {
            if out.json {
                out.print_json(&json!({"valid": true, "prefix": prefix}));
            } else {
                out.success(&format!(
                    "{prefix}… is a well-formed Noxus API key (checksum OK)"
                ));
            }
            Ok(())
        }
        Err(why) => {
            if out.json {
                out.print_json(&json!({"valid": false, "reason": why.to_string()}));
                return Err(Failure::silent(exit::OTHER));
            }
            Err(Failure::other(anyhow::anyhow!(
                "not a well-formed Noxus API key: {why}"
            )))
        }
    }
}

fn rfc3339_in(seconds: u64) -> Result<String, Failure> {
    let too_long = || Failure::config(anyhow::anyhow!("--expires-in is too long"));
    let seconds = i64::try_from(seconds).map_err(|_| too_long())?;
    let at = time::OffsetDateTime::now_utc()
        .checked_add(time::Duration::seconds(seconds))
        .ok_or_else(too_long)?;
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|_| too_long())
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn bars_scale_to_the_largest_value() {
        assert_eq!(bar(0, 10, 40), "");
        assert_eq!(bar(10, 10, 4), "████");
        assert_eq!(bar(5, 10, 4), "██");
        assert_eq!(bar(1, 64, 8), "▏");
    }
}
