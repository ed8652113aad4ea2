//! `noxus`: run the Noxus platform, check a key, and manage workspaces,
//! keys and workflows from a terminal or a script.
// The doc comments of the command-line types are clap's `--help` text,
// written for a terminal (bare URLs, `<listen address>`, `[:password@]`),
// not for rustdoc.
#![allow(
    rustdoc::bare_urls,
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links
)]

/// mimalloc instead of the system allocator: a request allocates and frees
/// a few dozen small blocks, and glibc's free of larger ones (consolidation)
/// showed in the request path's profile (docs/benchmarks.md, "The request
/// path against the framework's floor"). Its v2 line (the crate's `v2`
/// feature): the crate always asks for aligned blocks, and v3 serves an
/// aligned request above 1 KiB whose size is not a power of two by
/// over-allocating, a slower path (170 more instructions per request, same
/// page, "Fifth round").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audit_archive;
mod commands;
mod connection;
mod database;
mod exit;
mod migrate;
mod otel;
mod output;
mod serve;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::connection::ConnectionArgs;
use crate::output::Output;

/// Noxus: workspace-scoped API keys for the Noxus AI platform.
///
/// Commands that talk to the platform take the key from --api-key, else the
/// environment (NOXUS_API_KEY, or the --environment's NOXUS_API_KEY_PROD /
/// _STAGING / _DEV), else a .env file; the backend from --backend-url,
/// NOXUS_BACKEND_URL or https://backend.noxus.ai.
///
/// Exit codes: 0 ok, 1 other error, 2 usage or configuration error,
/// 3 invalid key (401), 4 missing permission (403), 5 network error or
/// timeout, 6 not found (404), 7 a run waited for failed, 8 a run waited
/// for was stopped, 9 `keys scan` found a key.
#[derive(Debug, Parser)]
#[command(name = "noxus", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    #[command(flatten)]
    connection: ConnectionArgs,

    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform (HTTP API and dashboard) on SQLite in --data-dir, or
    /// on PostgreSQL with --database-url.
    Serve(Box<serve::ServeArgs>),
    /// Operators: apply the PostgreSQL migrations and exit (`serve` also
    /// applies them at start).
    Migrate(migrate::MigrateArgs),
    /// Check the API key: who it is, its workspace, role and permissions.
    #[command(subcommand)]
    Auth(commands::auth::AuthCommand),
    /// Create, list, show, rotate, revoke and check API keys; scan files for keys.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// List, create and delete workspaces (tenant-admin keys for the last two).
    #[command(subcommand)]
    Workspaces(commands::workspaces::WorkspacesCommand),
    /// List, show, create, run and delete workflows of the key's workspace.
    #[command(subcommand)]
    Workflows(commands::workflows::WorkflowsCommand),
    /// Read the audit log: every key, member, role and workspace change.
    Audit(commands::audit::AuditArgs),
    /// Operators: move audit rows older than a date to a JSON-lines file
    /// and delete them from the database (itself recorded in the log).
    AuditArchive(audit_archive::AuditArchiveArgs),
    /// List the models available to the workspace.
    #[command(subcommand)]
    Models(commands::models::ModelsCommand),
    /// Print a shell completion script: `noxus completions bash > /etc/bash_completion.d/noxus`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Migrate(args) => migrate::run(&out, args),
        Command::AuditArchive(args) => audit_archive::run(&out, args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "noxus", &mut std::io::stdout());
            Ok(())
        }
        Command::Keys(commands::keys::KeysCommand::Check(args)) => {
            commands::keys::check(&out, &args)
        }
        Command::Keys(commands::keys::KeysCommand::Scan(args)) => {
            commands::scan::run(&out, &cli.connection, &args)
        }
        Command::Auth(command) => run(&cli.connection, &out, |c| {
            commands::auth::run(c, &out, command)
        }),
        Command::Keys(command) => run(&cli.connection, &out, |c| {
            commands::keys::run(c, &out, command)
        }),
        Command::Workspaces(command) => run(&cli.connection, &out, |c| {
            commands::workspaces::run(c, &out, command)
        }),
        Command::Workflows(command) => run(&cli.connection, &out, |c| {
            commands::workflows::run(c, &out, command)
        }),
        Command::Audit(args) => run(&cli.connection, &out, |c| {
            commands::audit::run(c, &out, args)
        }),
        Command::Models(command) => run(&cli.connection, &out, |c| {
            commands::models::run(c, &out, command)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(&out),
    }
}

/// Resolves the connection, starts a runtime and runs one command.
fn run<F, Fut>(connection: &ConnectionArgs, out: &Output, command: F) -> Result<(), exit::Failure>
where
    F: FnOnce(commands::Context) -> Fut,
    Fut: std::future::Future<Output = Result<(), exit::Failure>>,
{
    let client = connection.client()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            exit::Failure::other(anyhow::anyhow!("cannot start the async runtime: {e}"))
        })?;
    let _ = out;
    runtime.block_on(command(commands::Context { client }))
}
