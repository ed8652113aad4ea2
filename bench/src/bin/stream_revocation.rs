//! Run event streams across replicas: 2 (or more) real `noxus serve`
//! processes on one PostgreSQL database.
//!
//! 1. **Revocation** (`--rounds`, default 200): each round creates a key
//!    through one replica (in turn), opens an event stream of a run held
//!    `running` with it on another replica (read until its `started`
//!    event), revokes the key through the first, and records the time from
//!    the revocation's response to the stream's final `error` event. Prints
//!    p50, p99 and max. The key cache's TTL is a minute, so only the
//!    store's events can end the stream within it. Goal: p99 ≤ 100 ms.
//! 2. **Idle streams** (`--idle-streams`, default 100; `--idle-seconds`,
//!    default 30): the database's committed transactions per second
//!    (`pg_stat_database.xact_commit`; every query outside a transaction is
//!    one) with no stream open, then with N streams of held runs open on
//!    one replica (10 per key, a run per 10 streams) while nothing happens;
//!    the difference divided by N is what one idle stream costs the store.
//!    Default key cache TTL (1 s), as deployed.
//!
//! ```sh
//! cargo build --release -p noxus-cli
//! cargo run --release -p noxus-bench --bin stream_revocation -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! `--noxus` runs another build (an older one, to compare: both phases
//! work with servers that predate the wake-ups).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use noxus_api::Role;
use noxus_testkit::cluster::Cluster;
use noxus_testkit::postgres::FreshDatabase;

#[derive(Debug, Parser)]
#[command(
    about = "Time from a revocation's response to the end of the key's event stream on another replica, and the store queries of idle streams"
)]
struct Args {
    /// The PostgreSQL server (a database of its own is created and dropped
    /// for each phase).
    #[arg(long)]
    database_url: String,
    /// Replicas.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Revocations (0 skips the phase).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Idle streams (0 skips the phase).
    #[arg(long, default_value_t = 100)]
    idle_streams: usize,
    /// How long each idle measurement lasts.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// The `noxus` binary.
    #[arg(long, default_value = "target/release/noxus")]
    noxus: PathBuf,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The saved workflow's definition (its held runs never execute).
fn definition() -> serde_json::Value {
    serde_json::json!({"nodes": [], "edges": []})
}

/// An open event stream, read frame by frame.
struct Stream {
    response: reqwest::Response,
    buffered: String,
}

impl Stream {
    async fn open(cluster: &Cluster, index: usize, run: &str, key: &str) -> anyhow::Result<Self> {
        let response = cluster
            .get(index, &format!("/v1/runs/{run}/events"), key)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "opening a stream answered {}",
            response.status()
        );
        Ok(Self {
            response,
            buffered: String::new(),
        })
    }

    /// The next event's data; `None` at the end.
    async fn next(&mut self) -> anyhow::Result<Option<serde_json::Value>> {
        loop {
            if let Some(end) = self.buffered.find("\n\n") {
                let frame: String = self.buffered.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return Ok(Some(serde_json::from_str(data)?));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .context("the stream said nothing for 30 s")??;
            let Some(chunk) = chunk else { return Ok(None) };
            self.buffered.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    async fn until(&mut self, kind: &str) -> anyhow::Result<()> {
        while let Some(event) = self.next().await? {
            if event["type"] == kind {
                return Ok(());
            }
        }
        anyhow::bail!("the stream ended before a {kind} event")
    }
}

async fn revocations(args: &Args) -> anyhow::Result<()> {
    let database = FreshDatabase::create(&args.database_url).await;
    let cluster = Cluster::start_on(
        database,
        &args.noxus,
        args.replicas,
        &["--key-cache-ttl-ms", "60000", "--rate-limit-per-key", "0"],
    )
    .await;
    let arranger = cluster.arranger().await;
    let ws = cluster.workspace_id.clone();
    let runner = arranger.user(&ws, Role::Member).await;
    let workflow = arranger.workflow(&ws, definition()).await;
    let run = arranger.held_run(&ws, &workflow, &runner.id).await;
    let mut latencies = Vec::with_capacity(args.rounds);
    let mut before_response = 0usize;
    for round in 0..args.rounds {
        let changer = round % args.replicas;
        let streamer = (round + 1) % args.replicas;
        let (id, key) = cluster
            .create_key(
                changer,
                serde_json::json!({"name": format!("streamer {round}")}),
            )
            .await;
        let mut stream = Stream::open(&cluster, streamer, &run, &key).await?;
        stream.until("started").await?;
        // The end is awaited while the revocation is under way, so that an
        // end before the response is seen as such.
        let ended = tokio::spawn(async move {
            let last = stream.next().await?.context("no final event")?;
            anyhow::ensure!(
                last["type"] == "error" && last["data"]["code"] == "revoked_api_key",
                "the stream ended with {last}"
            );
            Ok(Instant::now())
        });
        let revoked = cluster
            .delete(
                changer,
                &format!("/v1/admin/groups/{ws}/api-keys/{id}"),
                &cluster.owner_key,
            )
            .send()
            .await?;
        anyhow::ensure!(
            revoked.status().is_success(),
            "revoke: {}",
            revoked.status()
        );
        let answered = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(30), ended)
            .await
            .context("the stream stayed open 30 s after the revocation")???;
        match ended.checked_duration_since(answered) {
            Some(latency) => latencies.push(latency),
            None => {
                before_response += 1;
                latencies.push(Duration::ZERO);
            }
        }
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = percentile(&latencies, 0.99);
    println!(
        "revocation: {} streams ended on another replica ({} before the response, counted as 0): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 <= 100 ms: {})",
        latencies.len(),
        before_response,
        ms(percentile(&latencies, 0.5)),
        ms(p99),
        ms(*latencies.last().context("no samples")?),
        if p99 <= Duration::from_millis(100) {
            "met"
        } else {
            "NOT met"
        }
    );
    arranger.close().await;
    drop(cluster);
    Ok(())
}

/// The database's committed transactions so far.
async fn commits(database: &mut sqlx::PgConnection) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(database)
    .await?)
}

/// Committed transactions per second over `seconds`, after a settling
/// pause (statistics reach `pg_stat_database` up to a few seconds late).
async fn commit_rate(database: &mut sqlx::PgConnection, seconds: u64) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (first, started) = (commits(database).await?, Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let last = commits(database).await?;
    Ok((last - first) as f64 / started.elapsed().as_secs_f64())
}

async fn idle_streams(args: &Args) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let database = FreshDatabase::create(&args.database_url).await;
    let cluster = Cluster::start_on(database, &args.noxus, args.replicas, &[]).await;
    let arranger = cluster.arranger().await;
    let ws = cluster.workspace_id.clone();
    let workflow = arranger.workflow(&ws, definition()).await;
    let mut connection = sqlx::PgConnection::connect(&cluster.database_url()).await?;
    let per_key = 10;
    let mut keys = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..args.idle_streams.div_ceil(per_key) {
        let user = arranger.user(&ws, Role::Member).await;
        runs.push(arranger.held_run(&ws, &workflow, &user.id).await);
        keys.push(user.key);
    }
    // Nothing happens, no stream is open: the replicas' own background
    // work (claim polling, usage, limits).
    let baseline = commit_rate(&mut connection, args.idle_seconds).await?;
    let mut streams = Vec::with_capacity(args.idle_streams);
    for i in 0..args.idle_streams {
        let mut stream = Stream::open(&cluster, 0, &runs[i / per_key], &keys[i / per_key]).await?;
        stream.until("started").await?;
        streams.push(stream);
    }
    let with_streams = commit_rate(&mut connection, args.idle_seconds).await?;
    let per_stream = (with_streams - baseline) / args.idle_streams as f64;
    println!(
        "idle streams: {:.1} transactions/s with none open, {:.1} with {} open on one replica: {:.2} store queries per second per idle stream",
        baseline, with_streams, args.idle_streams, per_stream
    );
    drop(streams);
    connection.close().await?;
    arranger.close().await;
    drop(cluster);
    Ok(())
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
    if args.rounds > 0 {
        revocations(&args).await?;
    }
    if args.idle_streams > 0 {
        idle_streams(&args).await?;
    }
    Ok(())
}
