//! How long a revocation takes to reach the other replicas: 3 (or more)
//! real `noxus serve` processes on one PostgreSQL database; for each of
//! `--revocations` keys, every replica serves the key continuously (one
//! request after another), the key is revoked through one replica (in
//! turn), and the time from the revoke's response to the first refusal on
//! each *other* replica is recorded. Prints p50, p99 and max. The key
//! cache's TTL is a minute, so only the store's events can make a replica
//! refuse within it. Goal: p99 ≤ 100 ms.
//!
//! ```sh
//! cargo build --release -p noxus-cli
//! cargo run --release -p noxus-bench --bin revocation_propagation -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! A refusal seen before the revoke's response reached the client counts
//! as 0 (the other replica was told before the client was).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use noxus_testkit::cluster::Cluster;
use noxus_testkit::postgres::FreshDatabase;
use tokio::sync::Notify;

#[derive(Debug, Parser)]
#[command(about = "Time from a revoke's response to the first refusal on every other replica")]
struct Args {
    /// The PostgreSQL server (a database of its own is created and dropped).
    #[arg(long)]
    database_url: String,
    /// Replicas.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Keys revoked.
    #[arg(long, default_value_t = 200)]
    revocations: usize,
    /// The `noxus` binary.
    #[arg(long, default_value = "target/release/noxus")]
    noxus: PathBuf,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.replicas >= 2, "--replicas must be at least 2");
    anyhow::ensure!(
        args.noxus.exists(),
        "{} not found: cargo build --release -p noxus-cli",
        args.noxus.display()
    );
    let database = FreshDatabase::create(&args.database_url).await;
    let cluster = Arc::new(
        Cluster::start_on(
            database,
            &args.noxus,
            args.replicas,
            &["--key-cache-ttl-ms", "60000", "--rate-limit-per-key", "0"],
        )
        .await,
    );
    let mut latencies = Vec::new();
    let mut before_response = 0usize;
    for round in 0..args.revocations {
        let (id, key) = cluster
            .create_key(0, serde_json::json!({"name": format!("victim {round}")}))
            .await;
        let revoker = round % args.replicas;
        // Every replica serves the key, continuously, until it refuses it.
        let mut pollers = Vec::new();
        for index in (0..args.replicas).filter(|i| *i != revoker) {
            let cluster = Arc::clone(&cluster);
            let key = key.clone();
            let ready = Arc::new(Notify::new());
            let started = Arc::clone(&ready);
            pollers.push((
                ready,
                tokio::spawn(async move {
                    let mut first = true;
                    loop {
                        let status = cluster
                            .get(index, "/v1/nodes", &key)
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0);
                        if first {
                            anyhow::ensure!(
                                status == 200,
                                "replica {index} refused a new key: {status}"
                            );
                            started.notify_one();
                            first = false;
                        }
                        if status == 401 {
                            return Ok(Instant::now());
                        }
                    }
                }),
            ));
        }
        for (ready, _) in &pollers {
            ready.notified().await;
        }
        let response = cluster
            .delete(
                revoker,
                &format!("/v1/admin/groups/{}/api-keys/{id}", cluster.workspace_id),
                &cluster.owner_key,
            )
            .send()
            .await?;
        let answered = Instant::now();
        anyhow::ensure!(
            response.status().is_success(),
            "revoke: {}",
            response.status()
        );
        for (_, poller) in pollers {
            let refused = tokio::time::timeout(Duration::from_secs(30), poller)
                .await
                .context("a replica never refused the revoked key")???;
            match refused.checked_duration_since(answered) {
                Some(latency) => latencies.push(latency),
                None => {
                    before_response += 1;
                    latencies.push(Duration::ZERO);
                }
            }
        }
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = percentile(&latencies, 0.99);
    println!(
        "{} revocations x {} other replicas = {} refusals; {} seen before the revoke's response (counted as 0)",
        args.revocations,
        args.replicas - 1,
        latencies.len(),
        before_response
    );
    println!(
        "revoke response -> first refusal on another replica: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 <= 100 ms: {})",
        ms(percentile(&latencies, 0.5)),
        ms(p99),
        ms(*latencies.last().context("no samples")?),
        if p99 <= Duration::from_millis(100) { "met" } else { "NOT met" }
    );
    drop(cluster);
    Ok(())
}
