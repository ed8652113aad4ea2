//! Workflow runs under load: `--runs` (1,000) runs of a 5-node workflow
//! (`noxus_testkit::runs_load::LoadWorkflow`: input → compose → extract
//! from JSON → compose → output) queued at once over HTTP, timed from the
//! first request to the last run's end, in runs per second; every run is
//! then checked in the database (one terminal outcome, its own output,
//! claimed once).
//!
//! Configurations, each on a fresh database every round:
//!
//! - `sqlite`: one `noxus serve` process (the release binary) on a data
//!   directory under `--dir`;
//! - `pg1`, `pg3` (with `--database-url`): 1 and 3 `noxus serve` replicas
//!   on one PostgreSQL database (`noxus_testkit::cluster`), the requests
//!   spread over them;
//! - the floors, measured in the same run: `*-inproc`, the platform
//!   in-process on the same backend with the runs created straight through
//!   the store (the same workers, the same store writes, no HTTP, no
//!   process boundary); and `executor`, the same executions of the
//!   executor alone (no store, no HTTP), one after another on one thread.
//!
//! Rounds alternate the order of the configurations; the summary gives the
//! median of each and the ratio of each HTTP configuration to the
//! in-process platform on its backend. Each line also says the server
//! processes' CPU time per run (`/proc`) and how busy the machine's CPUs
//! were meanwhile (all processes: on a shared machine, others' too).
//!
//! ```sh
//! bench/runs_load                                   # SQLite
//! bench/runs_load --database-url postgres://postgres@127.0.0.1:5432/postgres
//! ```

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use clap::Parser;
use noxus_server::catalog::Catalog;
use noxus_server::runs::executor::{self, ModelProvider, Plan, RunEnv};
use noxus_server::store::prelude::*;
use noxus_server::store::{Actor, NewRun, RunQuotas, WorkflowFields, WorkflowQuotas};
use noxus_server::{Application, Config};
use noxus_testkit::cluster::Cluster;
use noxus_testkit::postgres::FreshDatabase;
use noxus_testkit::runs_load::{check_runs, queue_runs, Expect, LoadWorkflow, RunsDatabase};
use serde_json::{Map, Value};

#[derive(Debug, Parser)]
#[command(about = "Runs per second of a 5-node workflow, 1,000 runs queued at once")]
struct Args {
    /// Runs per configuration and round.
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// Rounds; each measures every configuration once, in an order that
    /// rotates from round to round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests in flight while queueing.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// A PostgreSQL server: adds the PostgreSQL configurations (a database
    /// of their own is created and dropped for each).
    #[arg(long)]
    database_url: Option<String>,
    /// Replica counts measured on PostgreSQL.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    replicas: Vec<usize>,
    /// Leaves SQLite out.
    #[arg(long)]
    no_sqlite: bool,
    /// Leaves the floors (in-process platform, executor alone) out.
    #[arg(long)]
    no_floors: bool,
    /// The `noxus` binary.
    #[arg(long, default_value = "target/release/noxus")]
    noxus: PathBuf,
    /// Where SQLite data directories go: a real disk, not tmpfs, or syncing
    /// costs nothing.
    #[arg(long, default_value = "target/bench-runs")]
    dir: PathBuf,
    /// More `noxus serve` arguments for the HTTP configurations.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    Sqlite,
    SqliteInProcess,
    Postgres(usize),
    PostgresInProcess,
    Executor,
}

impl Setup {
    fn name(&self) -> String {
        match self {
            Self::Sqlite => "sqlite".to_owned(),
            Self::SqliteInProcess => "sqlite-inproc".to_owned(),
            Self::Postgres(n) => format!("pg{n}"),
            Self::PostgresInProcess => "pg-inproc".to_owned(),
            Self::Executor => "executor".to_owned(),
        }
    }

    /// The floor an HTTP configuration is compared with.
    fn floor(&self) -> Option<Self> {
        match self {
            Self::Sqlite => Some(Self::SqliteInProcess),
            Self::Postgres(_) => Some(Self::PostgresInProcess),
            _ => None,
        }
    }
}

/// One measurement.
#[derive(Debug, Default, Clone)]
struct Measured {
    /// Runs per second, from the first request (or creation) to the last end.
    rate: f64,
    /// Seconds until every run was queued.
    queued_s: f64,
    /// Seconds until every run ended.
    total_s: f64,
    /// Queued-to-ended latency p50 and p99, ms.
    p50_ms: i64,
    p99_ms: i64,
    /// CPU the server processes used, µs per run.
    server_cpu_us: Option<f64>,
    /// How busy the machine's CPUs were meanwhile (all processes), 0–1.
    machine_busy: Option<f64>,
    /// Runs by the process that ended them.
    spread: Vec<usize>,
}

const UNLIMITED: &[&str] = &["--rate-limit-per-key", "0"];

/// CPU time (user + system) of a process, in µs, from `/proc` (10 ms ticks).
fn process_cpu_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ: 100 ticks per second on Linux.
    Some((utime + stime) * 10_000.0)
}

/// The machine's CPU ticks so far: (busy, all), from `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    let all: u64 = ticks.iter().take(8).sum();
    // idle and iowait
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((all - idle, all))
}

/// The share of the machine's CPU time that was busy between two readings.
fn busy_between(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, a0), (b1, a1)) = (before?, after?);
    (a1 > a0).then(|| (b1 - b0) as f64 / (a1 - a0) as f64)
}

/// A `noxus serve` process on a fresh SQLite data directory.
struct SqliteServer {
    child: Child,
    base: String,
    key: String,
}

impl SqliteServer {
    async fn start(noxus: &Path, dir: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(noxus)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir)
            .args(UNLIMITED)
            .args(extra)
            .env_remove("NOXUS_NO_WELCOME")
            .env_remove("NOXUS_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", noxus.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let key = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.trim()
                    .strip_prefix("export NOXUS_API_KEY=")
                    .map(str::to_owned)
            })
            .context("the first start prints a key")?;
        std::thread::spawn(move || for _ in lines {});
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "the server did not get ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child, base, key })
    }

    fn stop(mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

/// Queues the runs over HTTP on `bases`, waits for their end in `db`,
/// checks them; `pids` are the server processes (for their CPU time).
#[allow(clippy::too_many_arguments)]
async fn load_over_http(
    args: &Args,
    http: &reqwest::Client,
    bases: &[String],
    key: &str,
    db: &mut RunsDatabase,
    pids: &[u32],
) -> anyhow::Result<Measured> {
    let workflow = LoadWorkflow::new();
    let workflow_id = workflow.save(http, &bases[0], key).await;
    let cpu_before: Option<f64> = pids.iter().map(|p| process_cpu_us(*p)).sum();
    let machine_before = machine_ticks();
    let started = Instant::now();
    let queued = queue_runs(
        http,
        bases,
        key,
        &workflow,
        &workflow_id,
        0..args.runs,
        args.clients,
    )
    .await?;
    let queued_s = started.elapsed().as_secs_f64();
    db.wait_ended(args.runs as i64, Duration::from_secs(600))
        .await
        .map_err(anyhow::Error::msg)?;
    let total_s = started.elapsed().as_secs_f64();
    let machine_busy = busy_between(machine_before, machine_ticks());
    let cpu_after: Option<f64> = pids.iter().map(|p| process_cpu_us(*p)).sum();
    let report = check_runs(&db.runs().await, &workflow, &queued, Expect::Clean)
        .map_err(anyhow::Error::msg)?;
    Ok(Measured {
        rate: args.runs as f64 / total_s,
        queued_s,
        total_s,
        p50_ms: report.latency_ms(0.5),
        p99_ms: report.latency_ms(0.99),
        server_cpu_us: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| (a - b) / args.runs as f64),
        machine_busy,
        spread: report.by_worker.values().copied().collect(),
    })
}

async fn sqlite_over_http(args: &Args, dir: &Path) -> anyhow::Result<Measured> {
    let server = SqliteServer::start(&args.noxus, dir, &args.serve_args).await?;
    let mut db = RunsDatabase::sqlite(dir).await;
    let http = reqwest::Client::new();
    let measured = load_over_http(
        args,
        &http,
        std::slice::from_ref(&server.base),
        &server.key,
        &mut db,
        &[server.child.id()],
    )
    .await;
    db.close().await;
    server.stop();
    measured
}

async fn postgres_over_http(args: &Args, url: &str, replicas: usize) -> anyhow::Result<Measured> {
    let database = FreshDatabase::create(url).await;
    let mut extra: Vec<&str> = UNLIMITED.to_vec();
    extra.extend(args.serve_args.iter().map(String::as_str));
    let cluster = Cluster::start_on(database, &args.noxus, replicas, &extra).await;
    let mut db = RunsDatabase::postgres(&cluster.database_url()).await;
    let bases: Vec<String> = cluster
        .replicas
        .iter()
        .map(|r| r.base_url.clone())
        .collect();
    let pids: Vec<u32> = cluster.replicas.iter().map(|r| r.pid()).collect();
    let measured = load_over_http(
        args,
        &cluster.http,
        &bases,
        &cluster.owner_key,
        &mut db,
        &pids,
    )
    .await;
    db.close().await;
    drop(cluster);
    measured
}

/// The platform in-process on `config`'s backend, the runs created
/// straight through the store as the HTTP handler creates them (the
/// definition compiled, the run stored, the workers woken).
async fn in_process(
    args: &Args,
    mut config: Config,
    mut db: RunsDatabase,
) -> anyhow::Result<Measured> {
    config.listen = "127.0.0.1:0".parse()?;
    config.welcome = true;
    let mut app = Application::build(config).await?;
    let welcome = app.take_welcome().context("a first start")?;
    let state = app.state().clone();
    let workspace_id = welcome.outcome.workspace.id.clone();
    let user_id = welcome.outcome.user.id.clone();
    let actor = Actor {
        user_id: Some(user_id.clone()),
        ..Actor::system()
    };
    let workflow = LoadWorkflow::new();
    let flow = state
        .store()
        .create_workflow(
            &actor,
            &workspace_id,
            WorkflowFields {
                name: "runs under load".to_owned(),
                kind: "flow".to_owned(),
                definition: workflow.definition.clone(),
                error_handler: None,
            },
            &WorkflowQuotas {
                workflows_per_workspace: u64::MAX,
                versions_per_workflow: u64::MAX,
                definition_bytes_per_workspace: u64::MAX,
            },
        )
        .await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let machine_before = machine_ticks();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.clients.max(1) {
        let (state, next, workflow, actor) = (
            state.clone(),
            Arc::clone(&next),
            workflow.clone(),
            actor.clone(),
        );
        let (workspace_id, workflow_id, user_id) =
            (workspace_id.clone(), flow.id.clone(), user_id.clone());
        let runs = args.runs;
        tasks.spawn(async move {
            let mut queued = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= runs {
                    return anyhow::Ok(queued);
                }
                Plan::compile(&workflow.definition, state.catalog())
                    .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
                let run = state
                    .store()
                    .create_run(
                        &actor,
                        &NewRun {
                            workspace_id: workspace_id.clone(),
                            workflow_id: workflow_id.clone(),
                            workflow_version_id: None,
                            definition: workflow.definition.clone(),
                            input: workflow.input(index),
                            group_id: None,
                            callback_url: None,
                            started_by_user: user_id.clone(),
                            started_by_key: None,
                        },
                        &RunQuotas::default(),
                    )
                    .await?;
                state.runs().queued();
                queued.push((run.id.into_string(), index));
            }
        });
    }
    let mut queued = Vec::new();
    while let Some(done) = tasks.join_next().await {
        queued.extend(done??);
    }
    let queued_s = started.elapsed().as_secs_f64();
    db.wait_ended(args.runs as i64, Duration::from_secs(600))
        .await
        .map_err(anyhow::Error::msg)?;
    let total_s = started.elapsed().as_secs_f64();
    let machine_busy = busy_between(machine_before, machine_ticks());
    let report = check_runs(&db.runs().await, &workflow, &queued, Expect::Clean)
        .map_err(anyhow::Error::msg)?;
    db.close().await;
    drop(app);
    state.store().close().await;
    Ok(Measured {
        rate: args.runs as f64 / total_s,
        queued_s,
        total_s,
        p50_ms: report.latency_ms(0.5),
        p99_ms: report.latency_ms(0.99),
        server_cpu_us: None,
        machine_busy,
        spread: report.by_worker.values().copied().collect(),
    })
}

/// Reports nothing anywhere: the executor alone.
struct Silent;

#[async_trait]
impl RunEnv for Silent {
    async fn node_started(&self, _: &str, _: usize, _: usize) {}
    async fn node_finished(&self, _: &str, _: &Value, _: &Value, _: u8) {}
    fn stopped(&self) -> bool {
        false
    }
    fn models(&self) -> Option<&dyn ModelProvider> {
        None
    }
}

/// The executions alone, one after another: the definition compiled (as
/// a worker compiles it per run) and executed.
async fn executor_alone(args: &Args) -> anyhow::Result<Measured> {
    let catalog = Catalog::load(None)?;
    let workflow = LoadWorkflow::new();
    let started = Instant::now();
    for index in 0..args.runs {
        let plan = Plan::compile(&workflow.definition, &catalog)
            .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
        let input: Map<String, Value> = match workflow.input(index) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let done = executor::execute(&plan, &input, &Silent)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::ensure!(
            done.output == workflow.expected_output(index),
            "wrong output"
        );
    }
    let total_s = started.elapsed().as_secs_f64();
    Ok(Measured {
        rate: args.runs as f64 / total_s,
        total_s,
        ..Measured::default()
    })
}

async fn measure(args: &Args, setup: &Setup, round: usize) -> anyhow::Result<Measured> {
    let dir = args
        .dir
        .join(format!("{}-{round}-{}", std::process::id(), setup.name()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = match setup {
        Setup::Sqlite => sqlite_over_http(args, &dir).await,
        Setup::SqliteInProcess => in_process_sqlite(args, &dir).await,
        Setup::Postgres(n) => {
            postgres_over_http(args, args.database_url.as_deref().context("url")?, *n).await
        }
        Setup::PostgresInProcess => {
            let database =
                FreshDatabase::create(args.database_url.as_deref().context("url")?).await;
            let mut config = Config::new(&dir);
            config.postgres = Some(noxus_server::store::PostgresOptions::new(database.url()));
            let db = RunsDatabase::postgres(database.url()).await;
            let measured = in_process(args, config, db).await;
            database.drop_database().await;
            measured
        }
        Setup::Executor => executor_alone(args).await,
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// [`in_process`] on SQLite in `dir`: the store is opened once first (the
/// migrations make the tables the checking connection reads).
async fn in_process_sqlite(args: &Args, dir: &Path) -> anyhow::Result<Measured> {
    let store = noxus_server::store::SqliteStore::open(dir).await?;
    store.close().await;
    let db = RunsDatabase::sqlite(dir).await;
    in_process(args, Config::new(dir), db).await
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.noxus.exists(),
        "{} does not exist: cargo build --release -p noxus-cli (bench/runs_load does it)",
        args.noxus.display()
    );
    let mut setups = Vec::new();
    if !args.no_sqlite {
        setups.push(Setup::Sqlite);
        if !args.no_floors {
            setups.push(Setup::SqliteInProcess);
        }
    }
    if args.database_url.is_some() {
        for n in &args.replicas {
            setups.push(Setup::Postgres(*n));
        }
        if !args.no_floors {
            setups.push(Setup::PostgresInProcess);
        }
    }
    if !args.no_floors {
        setups.push(Setup::Executor);
    }
    anyhow::ensure!(!setups.is_empty(), "nothing to measure");
    println!(
        "{} runs of a {}-node workflow per measurement, {} requests in flight while queueing, {} rounds",
        args.runs,
        noxus_testkit::runs_load::NODES,
        args.clients,
        args.rounds
    );
    println!(
        "{:<5} {:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>13} {:>9}  runs per process",
        "round",
        "setup",
        "runs/s",
        "queued s",
        "ended s",
        "p50 ms",
        "p99 ms",
        "server µs/run",
        "CPU busy"
    );
    let mut results: BTreeMap<Setup, Vec<Measured>> = BTreeMap::new();
    for round in 0..args.rounds {
        let mut order = setups.clone();
        order.rotate_left(round % setups.len());
        for setup in order {
            let m = measure(&args, &setup, round)
                .await
                .with_context(|| format!("{} in round {round}", setup.name()))?;
            println!(
                "{round:<5} {:<14} {:>9.1} {:>9.2} {:>9.2} {:>9} {:>9} {:>13} {:>9}  {:?}",
                setup.name(),
                m.rate,
                m.queued_s,
                m.total_s,
                m.p50_ms,
                m.p99_ms,
                m.server_cpu_us
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.0}")),
                m.machine_busy
                    .map_or_else(|| "-".to_owned(), |b| format!("{:.0}%", b * 100.0)),
                m.spread
            );
            results.entry(setup).or_default().push(m);
        }
    }
    println!("\nmedians of {} rounds:", args.rounds);
    let medians: BTreeMap<Setup, f64> = results
        .iter()
        .map(|(s, ms)| {
            (
                s.clone(),
                median(&ms.iter().map(|m| m.rate).collect::<Vec<_>>()),
            )
        })
        .collect();
    for (setup, rate) in &medians {
        let ratio = setup
            .floor()
            .and_then(|floor| medians.get(&floor).map(|f| (floor, rate / f)));
        match ratio {
            Some((floor, r)) => println!(
                "  {:<14} {rate:>9.1} runs/s   ({:.2} of {} at {:.1} runs/s)",
                setup.name(),
                r,
                floor.name(),
                medians[&floor]
            ),
            None => println!("  {:<14} {rate:>9.1} runs/s", setup.name()),
        }
    }
    Ok(())
}
