//! How long a change of a key's rights takes to reach the other replicas:
//! 3 (or more) real `noxus serve` processes on one PostgreSQL database; for
//! each of `--changes` rounds, every replica serves the key continuously
//! (one request after another), the change is made through one replica (in
//! turn), and the time from the change's response to the first refusal on
//! each *other* replica is recorded. Prints p50, p99 and max per kind of
//! change. The key cache's TTL is a minute, so only the store's events can
//! make a replica refuse within it. Goal: p99 ≤ 100 ms.
//!
//! The changes (`--change`, default `all`):
//!
//! - `revoke`: the owner revokes a key (`DELETE …/api-keys/{id}`); the
//!   replicas poll `GET /v1/nodes` until 401;
//! - `demote`: an admin demotes a member to viewer in the dashboard; the
//!   replicas poll a write the member may do and a viewer may not
//!   (`DELETE /v1/workflows/{id}` of a workflow that does not exist: 404
//!   while allowed, 403 once refused) until 403; the member is promoted
//!   back between rounds (not measured);
//! - `remove`: an admin removes a member from the workspace in the
//!   dashboard; `GET /v1/nodes` until 401; the member is added back with a
//!   new key between rounds (not measured);
//! - `rotate`: the owner rotates a key with no grace period; `GET /v1/nodes`
//!   with the old key until 401.
//!
//! ```sh
//! cargo build --release -p noxus-cli
//! cargo run --release -p noxus-bench --bin revocation_propagation -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! A refusal seen before the change's response reached the client counts
//! as 0 (the other replica was told before the client was).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use noxus_api::Role;
use noxus_testkit::cluster::{Arranger, Cluster, ClusterUser, Dashboard};
use noxus_testkit::postgres::FreshDatabase;
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Change {
    Revoke,
    Demote,
    Remove,
    Rotate,
    All,
}

#[derive(Debug, Parser)]
#[command(
    about = "Time from a change's response (revocation, demotion, removal, rotation) to the first refusal on every other replica"
)]
struct Args {
    /// The PostgreSQL server (a database of its own is created and dropped).
    #[arg(long)]
    database_url: String,
    /// Replicas.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Changes of each kind.
    #[arg(long, alias = "revocations", default_value_t = 200)]
    changes: usize,
    /// Which change to measure.
    #[arg(long, value_enum, default_value_t = Change::All)]
    change: Change,
    /// The `noxus` binary.
    #[arg(long, default_value = "target/release/noxus")]
    noxus: PathBuf,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// What the replicas ask, and what they answer before and after the change.
#[derive(Debug, Clone)]
struct Probe {
    key: String,
    /// `Some(path)`: `DELETE path`; `None`: `GET /v1/nodes`.
    delete: Option<String>,
    allowed: u16,
    refused: u16,
}

impl Probe {
    fn read(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            delete: None,
            allowed: 200,
            refused: 401,
        }
    }

    /// A write a member may do and a viewer may not, which changes nothing.
    fn write(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            delete: Some(format!("/v1/workflows/{}", uuid_like())),
            allowed: 404,
            refused: 403,
        }
    }

    async fn status(&self, cluster: &Cluster, index: usize) -> u16 {
        let request = match &self.delete {
            Some(path) => cluster.delete(index, path, &self.key),
            None => cluster.get(index, "/v1/nodes", &self.key),
        };
        request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Waits (up to 10 s) until every replica answers `allowed`.
    async fn until_allowed_everywhere(&self, cluster: &Cluster) -> anyhow::Result<()> {
        let started = Instant::now();
        for index in 0..cluster.replicas.len() {
            loop {
                let status = self.status(cluster, index).await;
                if status == self.allowed {
                    break;
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(10),
                    "replica {index} answers {status}, not {}",
                    self.allowed
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }
}

/// A fixed id that no workflow has.
fn uuid_like() -> &'static str {
    "00000000-0000-4000-8000-000000000000"
}

/// The people and sessions the changes need.
struct Actors {
    arranger: Arranger,
    /// An admin's dashboard session (valid on every replica).
    admin: Dashboard,
    member: ClusterUser,
}

/// Prepares one round of `change`: what the replicas will ask (and, for
/// `revoke` and `rotate`, the key's id).
async fn prepare(
    change: Change,
    round: usize,
    cluster: &Cluster,
    actors: &Actors,
) -> anyhow::Result<(Probe, Option<String>)> {
    let ws = cluster.workspace_id.clone();
    Ok(match change {
        Change::Revoke | Change::Rotate => {
            let (id, key) = cluster
                .create_key(0, serde_json::json!({"name": format!("victim {round}")}))
                .await;
            (Probe::read(&key), Some(id))
        }
        Change::Demote => {
            actors
                .arranger
                .set_role(&ws, &actors.member.id, Role::Member)
                .await;
            (Probe::write(&actors.member.key), None)
        }
        Change::Remove => {
            actors
                .arranger
                .set_role(&ws, &actors.member.id, Role::Member)
                .await;
            let (_, key) = actors
                .arranger
                .key(&ws, &actors.member.id, noxus_testkit::KeyOptions::default())
                .await;
            (Probe::read(&key), None)
        }
        Change::All => unreachable!("expanded before"),
    })
}

/// Makes the change through replica `changer`; checks its response.
/// Returns, for a rotation, the successor's id (revoked after the round,
/// so that the owner's live keys stay under the quota).
async fn make(
    change: Change,
    changer: usize,
    key_id: Option<&str>,
    cluster: &Cluster,
    actors: &Actors,
) -> anyhow::Result<Option<String>> {
    let ws = &cluster.workspace_id;
    let member_path = format!(
        "/settings/organization/workspaces/{ws}/members/{}",
        actors.member.id
    );
    let status = match change {
        Change::Revoke => cluster
            .delete(
                changer,
                &format!(
                    "/v1/admin/groups/{ws}/api-keys/{}",
                    key_id.context("a key")?
                ),
                &cluster.owner_key,
            )
            .send()
            .await?
            .status(),
        Change::Rotate => {
            let response = cluster
                .post(
                    changer,
                    &format!(
                        "/v1/admin/groups/{ws}/api-keys/{}/rotate",
                        key_id.context("a key")?
                    ),
                    &cluster.owner_key,
                )
                .json(&serde_json::json!({"grace_period_seconds": 0}))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "rotate answered {}",
                response.status()
            );
            let successor: serde_json::Value = response.json().await?;
            let id = successor["id"].as_str().context("the successor's id")?;
            return Ok(Some(id.to_owned()));
        }
        Change::Demote => actors
            .admin
            .post(
                changer,
                &format!("{member_path}/role"),
                &[("role", "viewer")],
            )
            .await
            .status(),
        Change::Remove => actors
            .admin
            .post(changer, &format!("{member_path}/remove"), &[])
            .await
            .status(),
        Change::All => unreachable!("expanded before"),
    };
    anyhow::ensure!(
        status.is_success() || status.is_redirection(),
        "{change:?} answered {status}"
    );
    Ok(None)
}

struct Measured {
    latencies: Vec<Duration>,
    before_response: usize,
}

async fn measure(
    change: Change,
    args: &Args,
    cluster: &Arc<Cluster>,
    actors: &Actors,
) -> anyhow::Result<Measured> {
    let mut latencies = Vec::new();
    let mut before_response = 0usize;
    for round in 0..args.changes {
        let (probe, key_id) = prepare(change, round, cluster, actors).await?;
        probe.until_allowed_everywhere(cluster).await?;
        let changer = round % args.replicas;
        // Every other replica serves the key, continuously, until it refuses it.
        let mut pollers = Vec::new();
        for index in (0..args.replicas).filter(|i| *i != changer) {
            let cluster = Arc::clone(cluster);
            let probe = probe.clone();
            let ready = Arc::new(Notify::new());
            let started = Arc::clone(&ready);
            pollers.push((
                ready,
                tokio::spawn(async move {
                    let mut first = true;
                    loop {
                        let status = probe.status(&cluster, index).await;
                        if first {
                            anyhow::ensure!(
                                status == probe.allowed,
                                "replica {index} answered {status} before the change, not {}",
                                probe.allowed
                            );
                            started.notify_one();
                            first = false;
                        }
                        if status == probe.refused {
                            return Ok(Instant::now());
                        }
                        anyhow::ensure!(
                            status == probe.allowed,
                            "replica {index} answered {status}"
                        );
                    }
                }),
            ));
        }
        for (ready, _) in &pollers {
            ready.notified().await;
        }
        let successor = make(change, changer, key_id.as_deref(), cluster, actors).await?;
        let answered = Instant::now();
        for (_, poller) in pollers {
            let refused = tokio::time::timeout(Duration::from_secs(30), poller)
                .await
                .context("a replica never refused the key")???;
            match refused.checked_duration_since(answered) {
                Some(latency) => latencies.push(latency),
                None => {
                    before_response += 1;
                    latencies.push(Duration::ZERO);
                }
            }
        }
        if let Some(successor) = successor {
            let revoked = cluster
                .delete(
                    0,
                    &format!(
                        "/v1/admin/groups/{}/api-keys/{successor}",
                        cluster.workspace_id
                    ),
                    &cluster.owner_key,
                )
                .send()
                .await?;
            anyhow::ensure!(
                revoked.status().is_success(),
                "revoke: {}",
                revoked.status()
            );
        }
    }
    latencies.sort();
    Ok(Measured {
        latencies,
        before_response,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.replicas >= 2, "--replicas must be at least 2");
    anyhow::ensure!(args.changes >= 1, "--changes must be at least 1");
    anyhow::ensure!(
        args.noxus.exists(),
        "{} not found: cargo build --release -p noxus-cli",
        args.noxus.display()
    );
    let changes = match args.change {
        Change::All => vec![
            Change::Revoke,
            Change::Demote,
            Change::Remove,
            Change::Rotate,
        ],
        one => vec![one],
    };
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
    let arranger = cluster.arranger().await;
    let admin_user = arranger.user(&cluster.workspace_id, Role::Admin).await;
    let admin = cluster
        .dashboard(0, &admin_user.email, &admin_user.password)
        .await;
    let member = arranger.user(&cluster.workspace_id, Role::Member).await;
    let actors = Actors {
        arranger,
        admin,
        member,
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for change in changes {
        let measured = measure(change, &args, &cluster, &actors).await?;
        let latencies = &measured.latencies;
        let p99 = percentile(latencies, 0.99);
        println!(
            "{:<7} {} changes x {} other replicas = {} refusals ({} before the response, counted as 0): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 <= 100 ms: {})",
            format!("{change:?}").to_lowercase(),
            args.changes,
            args.replicas - 1,
            latencies.len(),
            measured.before_response,
            ms(percentile(latencies, 0.5)),
            ms(p99),
            ms(*latencies.last().context("no samples")?),
            if p99 <= Duration::from_millis(100) { "met" } else { "NOT met" }
        );
    }
    actors.arranger.close().await;
    drop(actors);
    drop(cluster);
    Ok(())
}
