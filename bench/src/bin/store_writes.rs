//! What durable commits cost: acknowledged writes per second of the SQLite
//! store with `synchronous = FULL` (the platform's setting: a revocation
//! survives a power loss) against `synchronous = NORMAL` (what it used),
//! measured in the same run, on the same disk, rounds alternating.
//!
//! Each write is what an API call commits: creating a key (with its audit
//! row) or revoking it (with its audit row), one after the other, as a
//! client waiting for each answer would.
//!
//! ```sh
//! cargo run --release -p noxus-bench --bin store_writes -- --rounds 5 --writes 400
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use noxus_server::domain::keys::KeyHasher;
use noxus_server::store::prelude::*;
use noxus_server::store::{Actor, BootstrapRequest, Durability, KeyQuotas, NewKey, SqliteStore};

#[derive(Debug, Parser)]
#[command(about = "Acknowledged writes per second: synchronous FULL against NORMAL")]
struct Args {
    /// Rounds; each measures both settings, in alternating order.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Writes per setting and round (half key creations, half revocations).
    #[arg(long, default_value_t = 400)]
    writes: usize,
    /// Where the databases go: it must be a real disk (not tmpfs), or syncing costs nothing.
    #[arg(long, default_value = "target/bench-store")]
    dir: PathBuf,
}

async fn writes_per_second(
    dir: &std::path::Path,
    durability: Durability,
    writes: usize,
) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    let store = SqliteStore::open_with(dir, durability).await?;
    let outcome = store
        .bootstrap(BootstrapRequest {
            organization_name: "Bench".to_owned(),
            admin_email: "bench@example.com".to_owned(),
            admin_name: "Bench".to_owned(),
            password_hash: "not a real hash".to_owned(),
            workspace_name: "Default".to_owned(),
            first_key: None,
        })
        .await?
        .context("a fresh database")?;
    let hasher = KeyHasher::new(None);
    let actor = Actor::system();
    let quotas = KeyQuotas {
        per_user: u32::MAX,
        per_workspace: u32::MAX,
    };
    let started = Instant::now();
    for _ in 0..writes / 2 {
        let issued = hasher.issue();
        let key = store
            .create_key(
                &actor,
                NewKey {
                    workspace_id: outcome.workspace.id.clone(),
                    user_id: outcome.user.id.clone(),
                    name: "bench".to_owned(),
                    digest: issued.digest,
                    prefix: issued.prefix,
                    suffix: issued.suffix,
                    tenant_admin: false,
                    restriction: None,
                    expires_at: None,
                    rate_limit: None,
                },
                quotas,
            )
            .await?;
        store
            .revoke_key(&actor, &outcome.workspace.id, &key.id)
            .await?;
    }
    let elapsed = started.elapsed();
    store.close().await;
    Ok((writes / 2 * 2) as f64 / elapsed.as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args.dir.join(format!("run-{}", std::process::id()));
    let (mut full, mut normal, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    println!("round  NORMAL writes/s  FULL writes/s  FULL/NORMAL");
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [Durability::Normal, Durability::Full]
        } else {
            [Durability::Full, Durability::Normal]
        };
        let (mut f, mut n) = (0.0, 0.0);
        for durability in order {
            // A directory of its own: a closed pool's last connection may
            // still hold the previous database's files for a moment.
            let here = dir.join(format!("{round}-{durability:?}"));
            let rate = writes_per_second(&here, durability, args.writes).await?;
            match durability {
                Durability::Full => f = rate,
                Durability::Normal => n = rate,
            }
        }
        println!("{round:>5}  {n:>15.0}  {f:>13.0}  {:>11.3}", f / n);
        full.push(f);
        normal.push(n);
        ratios.push(f / n);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "median NORMAL {:.0} writes/s, FULL {:.0} writes/s, FULL/NORMAL {:.3} ({} rounds of {} writes)",
        median(&mut normal),
        median(&mut full),
        median(&mut ratios),
        args.rounds,
        args.writes
    );
    Ok(())
}
