//! `noxus migrate`: applies the PostgreSQL migrations and exits, for
//! operators who migrate before rolling out new servers (`noxus serve`
//! also applies them at start). Safe while servers run: the migrations
//! take an advisory lock, and those already applied are skipped.

use anyhow::Context;
use clap::Args;

use crate::database::DatabaseArgs;
use crate::exit::Failure;
use crate::output::Output;

/// Options of `noxus migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
}

/// Applies the migrations.
pub fn run(out: &Output, args: MigrateArgs) -> Result<(), Failure> {
    let Some(options) = args.database.postgres()? else {
        return Err(Failure::config(anyhow::anyhow!(
            "noxus migrate needs --database-url (or NOXUS_DATABASE_URL): it migrates a PostgreSQL database; SQLite databases are migrated by `noxus serve` at start"
        )));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(noxus_server::store::migrate_only(&options))?;
    if out.json {
        out.print_json(&serde_json::json!({"migrated": true}));
    } else {
        out.success("The PostgreSQL database is migrated to this version of Noxus.");
    }
    Ok(())
}
