//! What a key lookup costs as the key table grows, and how fast keys are
//! created, on each backend: the uncached lookup (`KeyStore::key_for_auth`,
//! what a request whose key is not in the cache pays) with 1,000 keys in
//! the table and again with 1,000,000, in the same run on the same
//! database, and the ratio between them (goal: at most 1.2).
//!
//! The keys beyond the first few are seeded in bulk with SQL (one statement
//! per 50,000 rows), not through the API: a million API calls would measure
//! the API, not the table. Lookups pick seeded keys at random, so most of
//! them are not in any cache the database keeps warm for a few hot rows.
//!
//! ```sh
//! cargo run --release -p noxus-bench --bin key_lookup_scale
//! cargo run --release -p noxus-bench --bin key_lookup_scale -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! With `--database-url` the benchmark creates a database of its own on
//! that server (and drops it at the end); without it, SQLite in a fresh
//! directory under `target/`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use noxus_server::domain::keys::{KeyDigest, KeyHasher};
use noxus_server::store::prelude::*;
use noxus_server::store::{
    Actor, BootstrapOutcome, BootstrapRequest, DatabaseConfig, KeyQuotas, NewKey,
};
use sqlx::Connection;

#[derive(Debug, Parser)]
#[command(about = "Uncached key lookup with 1,000 and 1,000,000 keys; keys created per second")]
struct Args {
    /// A PostgreSQL server to run on (a database of its own is created and
    /// dropped); SQLite without it.
    #[arg(long)]
    database_url: Option<String>,
    /// Keys in the large table.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Keys in the small table.
    #[arg(long, default_value_t = 1_000)]
    small: u64,
    /// Lookups per round.
    #[arg(long, default_value_t = 2_000)]
    lookups: usize,
    /// Rounds per table size (the median is reported).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Keys created through the store, one after the other, for the
    /// creation rate.
    #[arg(long, default_value_t = 300)]
    creates: usize,
    /// Where SQLite's database goes (a real disk, not tmpfs).
    #[arg(long, default_value = "target/bench-scale")]
    dir: PathBuf,
    /// Read every key once through the store's connections before measuring
    /// (as a server that has been running a while has), so that the first
    /// touch of each page is not what is measured.
    #[arg(long)]
    warm: bool,
}

/// The database under test, reached two ways: through the store (what is
/// measured) and directly (to seed keys in bulk).
enum Backend {
    Sqlite {
        url: String,
        _dir: PathBuf,
    },
    Postgres {
        database: noxus_testkit::postgres::FreshDatabase,
        url: String,
    },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }

    async fn open(args: &Args, label: &str) -> anyhow::Result<(Self, Arc<dyn Store>)> {
        match &args.database_url {
            None => {
                let dir = args.dir.join(format!("run-{}-{label}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let store = noxus_server::store::connect(&DatabaseConfig::Sqlite {
                    data_dir: dir.clone(),
                })
                .await?;
                let url = format!("sqlite://{}", dir.join("noxus.db").display());
                Ok((Self::Sqlite { url, _dir: dir }, store))
            }
            Some(server_url) => {
                let database = noxus_testkit::postgres::FreshDatabase::create(server_url).await;
                let url = database.url().to_owned();
                let store = noxus_server::store::connect(&DatabaseConfig::Postgres(
                    noxus_server::store::PostgresOptions::new(url.clone()),
                ))
                .await?;
                Ok((Self::Postgres { database, url }, store))
            }
        }
    }

    /// Seeds keys `from..=to` of the first workspace, in statements of at
    /// most 50,000 rows; returns how long it took.
    async fn seed(
        &self,
        outcome: &BootstrapOutcome,
        from: u64,
        to: u64,
    ) -> anyhow::Result<Duration> {
        const CHUNK: u64 = 50_000;
        let started = Instant::now();
        let created_at = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        match self {
            Self::Sqlite { url, .. } => {
                let mut db = sqlx::SqliteConnection::connect(url).await?;
                let mut start = from;
                while start <= to {
                    let end = (start + CHUNK - 1).min(to);
                    sqlx::query(
                        "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)
                         INSERT INTO api_keys (id, workspace_id, user_id, name, digest, prefix, suffix, tenant_admin, created_at)
                         SELECT 'seed-' || i, ?3, ?4, 'seed', lower(hex(randomblob(32))), 'noxus_Seed', 'seed', 0, ?5 FROM n",
                    )
                    .bind(start as i64)
                    .bind(end as i64)
                    .bind(&outcome.workspace.id)
                    .bind(&outcome.user.id)
                    .bind(created_at)
                    .execute(&mut db)
                    .await?;
                    start = end + 1;
                }
                db.close().await?;
            }
            Self::Postgres { url, .. } => {
                let mut db = sqlx::PgConnection::connect(url).await?;
                let mut start = from;
                while start <= to {
                    let end = (start + CHUNK - 1).min(to);
                    sqlx::query(
                        "INSERT INTO api_keys (id, workspace_id, user_id, name, digest, prefix, suffix, tenant_admin, created_at)
                         SELECT 'seed-' || i, $3, $4, 'seed', md5(i::text || 'a') || md5(i::text || 'b'), 'noxus_Seed', 'seed', false, $5
                         FROM generate_series($1::bigint, $2::bigint) AS i",
                    )
                    .bind(start as i64)
                    .bind(end as i64)
                    .bind(&outcome.workspace.id)
                    .bind(&outcome.user.id)
                    .bind(created_at)
                    .execute(&mut db)
                    .await?;
                    start = end + 1;
                }
                sqlx::query("ANALYZE api_keys").execute(&mut db).await?;
                db.close().await?;
            }
        }
        Ok(started.elapsed())
    }

    /// The digests of `count` seeded keys among the first `of`, at random.
    async fn sample(&self, of: u64, count: usize) -> anyhow::Result<Vec<KeyDigest>> {
        let ids: Vec<String> = (0..count)
            .map(|_| format!("seed-{}", 1 + random_below(of)))
            .collect();
        let mut digests = Vec::with_capacity(count);
        match self {
            Self::Sqlite { url, .. } => {
                let mut db = sqlx::SqliteConnection::connect(url).await?;
                for id in &ids {
                    let hex: String =
                        sqlx::query_scalar("SELECT digest FROM api_keys WHERE id = ?")
                            .bind(id)
                            .fetch_one(&mut db)
                            .await?;
                    digests.push(KeyDigest::from_hex(&hex).context("a stored digest")?);
                }
                db.close().await?;
            }
            Self::Postgres { url, .. } => {
                let mut db = sqlx::PgConnection::connect(url).await?;
                for id in &ids {
                    let hex: String =
                        sqlx::query_scalar("SELECT digest FROM api_keys WHERE id = $1")
                            .bind(id)
                            .fetch_one(&mut db)
                            .await?;
                    digests.push(KeyDigest::from_hex(&hex).context("a stored digest")?);
                }
                db.close().await?;
            }
        }
        Ok(digests)
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        match self {
            Self::Postgres { database, .. } => {
                database.drop_database().await;
                Ok(())
            }
            Self::Sqlite { .. } => Ok(()),
        }
    }
}

/// A random number below `n` (xorshift seeded from the clock: spread, not secrecy).
fn random_below(n: u64) -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
                | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x % n.max(1)
    })
}

/// Time of one uncached lookup, over `lookups` random seeded keys among
/// the first `of`.
async fn lookup_round(
    backend: &Backend,
    store: &dyn Store,
    of: u64,
    lookups: usize,
) -> anyhow::Result<Duration> {
    let digests = backend.sample(of, lookups).await?;
    let started = Instant::now();
    for digest in &digests {
        let found = store.key_for_auth(digest).await?;
        anyhow::ensure!(found.is_some(), "a seeded key was not found");
    }
    Ok(started.elapsed() / lookups as u32)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

async fn creates_per_second(
    store: &dyn Store,
    outcome: &BootstrapOutcome,
    creates: usize,
) -> anyhow::Result<f64> {
    let hasher = KeyHasher::new(None);
    let actor = Actor::system();
    let quotas = KeyQuotas {
        per_user: u32::MAX,
        per_workspace: u32::MAX,
    };
    let started = Instant::now();
    for _ in 0..creates {
        let issued = hasher.issue();
        store
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
    }
    Ok(creates as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.small >= 1 && args.keys > args.small,
        "--keys must exceed --small"
    );
    let small = Backend::open(&args, "small").await?;
    let large = match Backend::open(&args, "large").await {
        Ok(large) => large,
        Err(err) => {
            small.1.close().await;
            small.0.drop_database().await?;
            return Err(err);
        }
    };
    let result = run(
        &args,
        (&small.0, small.1.as_ref()),
        (&large.0, large.1.as_ref()),
    )
    .await;
    for (backend, store) in [small, large] {
        store.close().await;
        backend.drop_database().await?;
    }
    result
}

async fn bootstrap(store: &dyn Store) -> anyhow::Result<BootstrapOutcome> {
    store
        .bootstrap(BootstrapRequest {
            organization_name: "Bench".to_owned(),
            admin_email: "bench@example.com".to_owned(),
            admin_name: "Bench".to_owned(),
            password_hash: "not a real hash".to_owned(),
            workspace_name: "Default".to_owned(),
            first_key: None,
        })
        .await?
        .context("a fresh database")
}

/// Two databases of the same backend, one with `--small` keys and one with
/// `--keys`, measured in alternating rounds so that the machine's noise
/// falls on both alike.
async fn run(
    args: &Args,
    small: (&Backend, &dyn Store),
    large: (&Backend, &dyn Store),
) -> anyhow::Result<()> {
    let small_outcome = bootstrap(small.1).await?;
    let large_outcome = bootstrap(large.1).await?;
    println!("backend: {}", small.0.name());

    let mut rates = Vec::new();
    for _ in 0..3 {
        rates.push(creates_per_second(small.1, &small_outcome, args.creates).await?);
    }
    println!(
        "keys created through the store, one after the other: {:.0}/s (median of 3 runs of {}: {})",
        median(&rates),
        args.creates,
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );

    small.0.seed(&small_outcome, 1, args.small).await?;
    let seeded = large.0.seed(&large_outcome, 1, args.keys).await?;
    println!("{} keys seeded in {:.1} s", args.keys, seeded.as_secs_f64());

    if args.warm {
        for (backend, store, of) in [
            (small.0, small.1, args.small),
            (large.0, large.1, args.keys),
        ] {
            let started = Instant::now();
            for digest in backend.sample(of, of.min(200_000) as usize).await? {
                store.key_for_auth(&digest).await?;
            }
            println!(
                "warmed {of} keys in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let (mut at_small, mut at_large, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    println!(
        "round  {:>9} keys µs  {:>9} keys µs  ratio",
        args.small, args.keys
    );
    for round in 0..args.rounds {
        let (s, l) = if round % 2 == 0 {
            let s = lookup_round(small.0, small.1, args.small, args.lookups).await?;
            (
                s,
                lookup_round(large.0, large.1, args.keys, args.lookups).await?,
            )
        } else {
            let l = lookup_round(large.0, large.1, args.keys, args.lookups).await?;
            (
                lookup_round(small.0, small.1, args.small, args.lookups).await?,
                l,
            )
        };
        let (s, l) = (s.as_secs_f64() * 1e6, l.as_secs_f64() * 1e6);
        println!("{round:>5}  {s:>17.1}  {l:>17.1}  {:.3}", l / s);
        at_small.push(s);
        at_large.push(l);
        ratios.push(l / s);
    }
    let ratio = median(&ratios);
    println!(
        "uncached lookup: {:.1} µs with {} keys, {:.1} µs with {} keys (medians of {} rounds of {})",
        median(&at_small),
        args.small,
        median(&at_large),
        args.keys,
        args.rounds,
        args.lookups
    );
    println!(
        "ratio {}/{} keys: {ratio:.3} (median of the rounds' ratios; goal <= 1.2: {})",
        args.keys,
        args.small,
        if ratio <= 1.2 { "met" } else { "NOT met" }
    );
    Ok(())
}
