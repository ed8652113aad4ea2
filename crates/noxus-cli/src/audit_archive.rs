//! `noxus audit-archive`: the deliberate, audited way to move old rows out
//! of the append-only audit log. It works on the data directory directly
//! (whoever runs it can read the database anyway), so it is no API route a
//! leaked key could reach. A server running on the same directory keeps
//! serving meanwhile (SQLite in WAL mode).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use noxus_server::store::{Actor, SqliteStore, Store};
use time::OffsetDateTime;

use crate::exit::Failure;
use crate::output::Output;

/// Options of `noxus audit-archive`.
#[derive(Debug, Args)]
pub struct AuditArchiveArgs {
    /// Directory of the SQLite database.
    #[arg(long, env = "NOXUS_DATA_DIR", default_value = "./noxus-data")]
    data_dir: PathBuf,

    /// A PostgreSQL database: refused, archives are not available on
    /// PostgreSQL yet.
    #[arg(long, env = "NOXUS_DATABASE_URL", hide_env_values = true, value_name = "URL", value_parser = crate::database::secret_url)]
    database_url: Option<crate::database::DatabaseUrl>,

    /// Archive the rows written before this time: RFC 3339
    /// (2026-01-01T00:00:00Z) or a date (2026-01-01, midnight UTC). Not in
    /// the future.
    #[arg(long, value_parser = parse_before)]
    before: OffsetDateTime,

    /// The JSON-lines file to write (one row per line, oldest first); it
    /// must not exist yet.
    #[arg(long)]
    out: PathBuf,
}

fn parse_before(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = noxus_server::time_fmt::parse_rfc3339(text) {
        return Ok(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            format!("`{text}` is neither an RFC 3339 time (2026-01-01T00:00:00Z) nor a date (2026-01-01)")
        })
}

/// Writes the rows older than `--before` to `--out`, verifies the file,
/// deletes the rows and records an `audit.archive` row, in one transaction.
pub fn run(out: &Output, args: AuditArchiveArgs) -> Result<(), Failure> {
    if args
        .database_url
        .as_ref()
        .is_some_and(|url| !url.is_empty())
    {
        return Err(Failure::config(anyhow::anyhow!(
            "noxus audit-archive is not available on PostgreSQL yet: it archives a SQLite database in --data-dir. On PostgreSQL the audit log stays append-only; keep it with your database backups (pg_dump)"
        )));
    }
    if args.before > OffsetDateTime::now_utc() {
        return Err(Failure::config(anyhow::anyhow!(
            "--before {} is in the future; only rows already written can be archived",
            noxus_server::time_fmt::rfc3339(args.before)
        )));
    }
    if !args.data_dir.join("noxus.db").exists() {
        return Err(Failure::config(anyhow::anyhow!(
            "{} holds no Noxus database (noxus.db); name the --data-dir that `noxus serve` uses",
            args.data_dir.display()
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let operator = std::env::var("USER").ok();
    let archive = runtime.block_on(async {
        let store = SqliteStore::open(&args.data_dir)
            .await
            .with_context(|| format!("cannot open the database in {}", args.data_dir.display()))?;
        let result = store
            .archive_audit(
                args.before,
                &args.out,
                &Actor::system(),
                operator.as_deref(),
            )
            .await;
        store.close().await;
        result
    })?;
    match archive {
        None => {
            if out.json {
                out.print_json(&serde_json::json!({"rows": 0}));
            } else {
                out.line(&format!(
                    "No audit row was written before {}; nothing archived, no file written.",
                    noxus_server::time_fmt::rfc3339(args.before)
                ));
            }
        }
        Some(archive) if out.json => out.print_json(&archive),
        Some(archive) => {
            out.success(&format!(
                "Archived {} audit rows (ids {} to {}) to {} and deleted them from the log.",
                archive.rows,
                archive.first_id,
                archive.last_id,
                archive.file.display()
            ));
            out.field("sha-256", &archive.sha256);
            out.field("before", &archive.before);
            out.line(
                "The audit log records this as `audit.archive`; keep the file somewhere safe.",
            );
        }
    }
    Ok(())
}
