//! Workflow runs under load, for the tests and the benchmark about them
//! (`crates/noxus-cli/tests/runs_load.rs`, `bench/runs_load`): a 5-node
//! workflow whose output names its input (so a run that got another's
//! result is caught), many runs of it queued at once over HTTP, and what
//! the database holds about them afterwards, checked run by run: one
//! terminal outcome each, the expected output, the claims it took.
//!
//! The checks read the database itself (the runs' `attempts` and
//! `claimed_by`, and every event in order), not the API: the API does
//! not say which process executed a run, and reading a thousand runs'
//! events over HTTP would load the server under test.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Connection as _;

/// Nodes of [`LoadWorkflow`].
pub const NODES: usize = 5;

/// Input → compose (a JSON document holding the input) → extract from JSON
/// (the input again) → compose (`Hello, {input}!`) → output: every built-in
/// transform but one, five store writes' worth of events per run.
#[derive(Debug, Clone)]
pub struct LoadWorkflow {
    /// The definition, as the official client saves it.
    pub definition: Value,
    input_node: String,
    output_node: String,
}

impl Default for LoadWorkflow {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadWorkflow {
    /// The workflow, with fresh node ids.
    pub fn new() -> Self {
        let id = || uuid::Uuid::new_v4().to_string();
        let (input, document, extract, greeting, output) = (id(), id(), id(), id(), id());
        let edge = |from: &str, to: &str| {
            json!({"from_id": {"node_id": from, "connector_name": "output", "key": null, "optional": false},
                   "to_id": {"node_id": to, "connector_name": "input", "key": null, "optional": false},
                   "id": uuid::Uuid::new_v4().to_string()})
        };
        let node = |id: &str, kind: &str, config: Value| {
            json!({"type": kind, "id": id, "node_config": config,
                   "connector_config": {"inputs": [], "outputs": []}})
        };
        let definition = json!({
            "flow_version": "v1",
            "nodes": [
                node(&input, "InputNode", json!({"label": "Guest"})),
                node(&document, "ComposeTextNode", json!({"template": "{\"guest\": {\"name\": \"{input}\"}, \"seen\": [1, 2, 3]}"})),
                node(&extract, "JsonExtractNode", json!({"path": "guest.name"})),
                node(&greeting, "ComposeTextNode", json!({"template": "Hello, {input}!"})),
                node(&output, "OutputNode", json!({"label": "Greeting"})),
            ],
            "edges": [
                edge(&input, &document),
                edge(&document, &extract),
                edge(&extract, &greeting),
                edge(&greeting, &output),
            ]
        });
        Self {
            definition,
            input_node: input,
            output_node: output,
        }
    }

    /// The name run `index` greets.
    pub fn guest(index: usize) -> String {
        format!("guest-{index:05}")
    }

    /// Run `index`'s input.
    pub fn input(&self, index: usize) -> Value {
        json!({ format!("{}::input", self.input_node): Self::guest(index) })
    }

    /// Run `index`'s output once completed.
    pub fn expected_output(&self, index: usize) -> Value {
        json!({ format!("{}::output", self.output_node): {"text": format!("Hello, {}!", Self::guest(index))} })
    }

    /// The index of the run whose input is `input`, if it is one of ours.
    pub fn index_of(&self, input: &Value) -> Option<usize> {
        input
            .get(format!("{}::input", self.input_node))?
            .as_str()?
            .strip_prefix("guest-")?
            .parse()
            .ok()
    }

    /// Saves the workflow through `base` with `key`; returns its id.
    pub async fn save(&self, http: &reqwest::Client, base: &str, key: &str) -> String {
        let saved: Value = http
            .post(format!("{base}/v1/workflows"))
            .header("X-API-Key", key)
            .json(
                &json!({"name": "runs under load", "type": "flow", "definition": self.definition}),
            )
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("the workflow is saved")
            .json()
            .await
            .expect("JSON");
        saved["id"].as_str().expect("an id").to_owned()
    }
}

/// Queues runs `indexes` of `workflow_id` with `concurrency` requests in
/// flight, spread round-robin over `bases` (replicas); returns each run's
/// id with its index. Every request must answer 201.
pub async fn queue_runs(
    http: &reqwest::Client,
    bases: &[String],
    key: &str,
    workflow: &LoadWorkflow,
    workflow_id: &str,
    indexes: std::ops::Range<usize>,
    concurrency: usize,
) -> anyhow::Result<Vec<(String, usize)>> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(indexes.start));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (http, bases, key, workflow, workflow_id, next) = (
            http.clone(),
            bases.to_vec(),
            key.to_owned(),
            workflow.clone(),
            workflow_id.to_owned(),
            std::sync::Arc::clone(&next),
        );
        let end = indexes.end;
        tasks.spawn(async move {
            let mut queued = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= end {
                    return anyhow::Ok(queued);
                }
                let base = &bases[index % bases.len()];
                let response = http
                    .post(format!("{base}/v1/workflows/{workflow_id}/runs"))
                    .header("X-API-Key", &key)
                    .json(&json!({"input": workflow.input(index)}))
                    .send()
                    .await?;
                let status = response.status();
                let body: Value = response.json().await?;
                anyhow::ensure!(status == 201, "run {index} answered {status}: {body}");
                let id = body["id"].as_str().unwrap_or_default().to_owned();
                queued.push((id, index));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// Queues runs `indexes` of `workflow_id` straight through a store, as the
/// API does (without HTTP, one after another): for tests that need many
/// runs waiting before a process starts executing them. `user_id` starts
/// them.
pub async fn queue_in_store(
    store: &dyn noxus_server::store::Store,
    workspace_id: &str,
    workflow_id: &str,
    user_id: &str,
    workflow: &LoadWorkflow,
    indexes: std::ops::Range<usize>,
) -> Vec<(String, usize)> {
    let mut queued = Vec::with_capacity(indexes.len());
    for index in indexes {
        let run = store
            .create_run(
                &noxus_server::store::Actor::system(),
                &noxus_server::store::NewRun {
                    workspace_id: workspace_id.into(),
                    workflow_id: workflow_id.into(),
                    workflow_version_id: None,
                    definition: workflow.definition.clone(),
                    input: workflow.input(index),
                    group_id: None,
                    callback_url: None,
                    started_by_user: user_id.into(),
                    started_by_key: None,
                },
                &noxus_server::store::RunQuotas::default(),
            )
            .await
            .expect("the run is queued");
        queued.push((run.id.into_string(), index));
    }
    queued
}

/// The name a `noxus serve` process claims runs under, from its log.
pub fn worker_in_log(log: &str) -> Option<String> {
    let start = log.find("worker=noxus-")? + "worker=".len();
    let name: String = log[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Some(name)
}

/// A run as the database holds it, with all its events in order.
#[derive(Debug, Clone)]
pub struct StoredRun {
    /// Id.
    pub id: String,
    /// `queued`, `running`, `completed`, ...
    pub status: String,
    /// Claims it took.
    pub attempts: i64,
    /// The worker that holds it, or held it last.
    pub claimed_by: Option<String>,
    /// Input.
    pub input: Value,
    /// Output, once completed.
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was queued and when it ended (ms since the epoch).
    pub created_ms: i64,
    /// When it ended.
    pub finished_ms: Option<i64>,
    /// Its events, in order.
    pub events: Vec<StoredEvent>,
}

/// An event of a [`StoredRun`].
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// `queued`, `started`, ...
    pub kind: String,
    /// Its data.
    pub data: Value,
    /// When it was written (ms since the epoch).
    pub at_ms: i64,
}

impl StoredRun {
    /// Its events of `kind`.
    pub fn events_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a StoredEvent> + 'a {
        self.events.iter().filter(move |e| e.kind == kind)
    }

    /// Its `requeued` events with this `reason` (`released`, `interrupted`).
    pub fn requeued(&self, reason: &str) -> usize {
        self.events_of("requeued")
            .filter(|e| e.data["reason"] == reason)
            .count()
    }
}

/// The database of a platform under test: an SQLite file (another process
/// may be writing it) or a PostgreSQL database.
#[derive(Debug)]
pub enum RunsDatabase {
    /// `noxus.db` of a data directory.
    Sqlite(sqlx::SqliteConnection),
    /// A PostgreSQL database.
    Postgres(sqlx::PgConnection),
}

type RunRow = (
    String,
    String,
    i64,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
);
const RUNS_QUERY: &str = "SELECT id, status, attempts, claimed_by, input, output, error, created_at, finished_at FROM runs";
const EVENTS_QUERY: &str =
    "SELECT run_id, seq, kind, data, created_at FROM run_events ORDER BY run_id, seq";
const COUNTS_QUERY: &str = "SELECT status, COUNT(*) FROM runs GROUP BY status";

impl RunsDatabase {
    /// The SQLite database of `data_dir`.
    pub async fn sqlite(data_dir: &Path) -> Self {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(data_dir.join("noxus.db"))
            .busy_timeout(Duration::from_secs(10));
        Self::Sqlite(
            sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("the data directory's database opens"),
        )
    }

    /// The PostgreSQL database at `url`.
    pub async fn postgres(url: &str) -> Self {
        Self::Postgres(
            sqlx::PgConnection::connect(url)
                .await
                .expect("the database answers"),
        )
    }

    /// How many runs are in each status.
    pub async fn counts(&mut self) -> BTreeMap<String, i64> {
        let rows: Vec<(String, i64)> = match self {
            Self::Sqlite(c) => sqlx::query_as(COUNTS_QUERY).fetch_all(c).await,
            Self::Postgres(c) => sqlx::query_as(COUNTS_QUERY).fetch_all(c).await,
        }
        .expect("counting runs");
        rows.into_iter().collect()
    }

    /// How many runs are running, claimed by `worker` (by anyone: `None`).
    pub async fn running(&mut self, worker: Option<&str>) -> usize {
        const QUERY: &str = "SELECT claimed_by FROM runs WHERE status = 'running'";
        let holders: Vec<(Option<String>,)> = match self {
            Self::Sqlite(c) => sqlx::query_as(QUERY).fetch_all(c).await,
            Self::Postgres(c) => sqlx::query_as(QUERY).fetch_all(c).await,
        }
        .expect("reading running runs");
        holders
            .iter()
            .filter(|(holder,)| worker.is_none() || holder.as_deref() == worker)
            .count()
    }

    /// How many runs have ended (completed, failed or stopped).
    pub async fn ended(&mut self) -> i64 {
        self.counts()
            .await
            .iter()
            .filter(|(status, _)| ["completed", "failed", "stopped"].contains(&status.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    /// Waits until `total` runs have ended, polling every 20 ms; `Err`
    /// with the counts if that takes longer than `timeout`.
    pub async fn wait_ended(&mut self, total: i64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ended().await >= total {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "after {timeout:?}, runs by status: {:?}",
                    self.counts().await
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every run with its events.
    pub async fn runs(&mut self) -> Vec<StoredRun> {
        type EventRow = (String, i64, String, String, i64);
        type Read<T> = Result<Vec<T>, sqlx::Error>;
        let (rows, events): (Read<RunRow>, Read<EventRow>) = match self {
            Self::Sqlite(c) => (
                sqlx::query_as(RUNS_QUERY).fetch_all(&mut *c).await,
                sqlx::query_as(EVENTS_QUERY).fetch_all(&mut *c).await,
            ),
            Self::Postgres(c) => (
                sqlx::query_as(RUNS_QUERY).fetch_all(&mut *c).await,
                sqlx::query_as(EVENTS_QUERY).fetch_all(&mut *c).await,
            ),
        };
        let (rows, events) = (rows.expect("reading runs"), events.expect("reading events"));
        let mut by_run: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        for (run_id, _, kind, data, at_ms) in events {
            let data = serde_json::from_str(&data).expect("event data is JSON");
            by_run
                .entry(run_id)
                .or_default()
                .push(StoredEvent { kind, data, at_ms });
        }
        let json = |text: &str| serde_json::from_str::<Value>(text).expect("stored JSON");
        rows.into_iter()
            .map(
                |(id, status, attempts, claimed_by, input, output, error, created, finished)| {
                    StoredRun {
                        events: by_run.remove(&id).unwrap_or_default(),
                        id,
                        status,
                        attempts,
                        claimed_by,
                        input: json(&input),
                        output: output.as_deref().map(json),
                        error,
                        created_ms: created,
                        finished_ms: finished,
                    }
                },
            )
            .collect()
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = match self {
            Self::Sqlite(c) => c.close().await,
            Self::Postgres(c) => c.close().await,
        };
    }
}

/// What [`check_runs`] found.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Runs checked.
    pub runs: usize,
    /// Completed, with the expected output.
    pub completed: usize,
    /// Failed, with a reason.
    pub failed: usize,
    /// Runs by how many claims they took.
    pub attempts: BTreeMap<i64, usize>,
    /// Runs by the worker (process) that ended them.
    pub by_worker: BTreeMap<String, usize>,
    /// Runs given back to the queue by a worker that shut down, at least once.
    pub released: usize,
    /// Runs queued again at a start after their process died, at least once.
    pub interrupted: usize,
    /// Milliseconds from queued to ended, sorted.
    pub latencies_ms: Vec<i64>,
}

impl LoadReport {
    /// The `p`-th quantile (0.0–1.0) of the latencies, in ms.
    pub fn latency_ms(&self, p: f64) -> i64 {
        if self.latencies_ms.is_empty() {
            return 0;
        }
        let index = ((self.latencies_ms.len() - 1) as f64 * p).round() as usize;
        self.latencies_ms[index.min(self.latencies_ms.len() - 1)]
    }
}

/// How strictly [`check_runs`] judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing crashed: every run completed, claimed once, with exactly the
    /// events of one clean execution.
    Clean,
    /// Processes were stopped gracefully: every run completed, and no claim
    /// was counted twice (a run given back at a shutdown ran again, but its
    /// claim was not counted as an attempt).
    Graceful,
    /// Processes were killed: every run ended, completed or failed with a
    /// reason, within the attempts a run gets.
    Crashed,
}

/// Checks every run of `runs` that `workflow` queued, against `queued` (the
/// ids and indexes [`queue_runs`] returned): each queued run is there, has
/// ended once (exactly one terminal event, the last one) as completed with
/// its own expected output (or, after crashes, failed with a reason), and
/// has one `started` event per claim. `Err` names the first run that
/// breaks a rule.
pub fn check_runs(
    runs: &[StoredRun],
    workflow: &LoadWorkflow,
    queued: &[(String, usize)],
    expect: Expect,
) -> Result<LoadReport, String> {
    let by_id: HashMap<&str, &StoredRun> = runs.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut report = LoadReport::default();
    let clean_kinds: Vec<&str> = std::iter::once("queued")
        .chain(std::iter::once("started"))
        .chain((0..NODES).flat_map(|_| ["node_started", "progress"]))
        .chain(std::iter::once("completed"))
        .collect();
    for (id, index) in queued {
        let run = by_id
            .get(id.as_str())
            .ok_or_else(|| format!("run {index} ({id}) is not in the database: lost"))?;
        let fail = |why: String| Err(format!("run {index} ({id}): {why}; {run:?}"));
        if workflow.index_of(&run.input) != Some(*index) {
            return fail("its input is not the one queued".to_owned());
        }
        let terminal: Vec<usize> = run
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| ["completed", "failed", "stopped"].contains(&e.kind.as_str()))
            .map(|(i, _)| i)
            .collect();
        if terminal.len() != 1 || terminal[0] + 1 != run.events.len() {
            return fail(format!(
                "{} terminal events (exactly one, the last, expected)",
                terminal.len()
            ));
        }
        let started = run.events_of("started").count();
        let requeued = run.events_of("requeued").count();
        let released = run.requeued("released");
        match run.status.as_str() {
            "completed" => {
                if run.output.as_ref() != Some(&workflow.expected_output(*index)) {
                    return fail("completed with another output than its own".to_owned());
                }
                report.completed += 1;
            }
            "failed" if expect == Expect::Crashed => {
                if run.error.as_deref().unwrap_or("").trim().is_empty() {
                    return fail("failed without a reason".to_owned());
                }
                report.failed += 1;
            }
            other => return fail(format!("ended {other}")),
        }
        let counted = i64::try_from(started.saturating_sub(released)).unwrap_or(i64::MAX);
        match expect {
            Expect::Clean => {
                let kinds: Vec<&str> = run.events.iter().map(|e| e.kind.as_str()).collect();
                if run.attempts != 1 || kinds != clean_kinds {
                    return fail(format!(
                        "claimed {} times, events {kinds:?} (one clean execution expected)",
                        run.attempts
                    ));
                }
            }
            Expect::Graceful => {
                if run.attempts != 1 || counted != 1 {
                    return fail(format!(
                        "{} attempts counted, {started} claims, {requeued} given back (one counted claim expected)",
                        run.attempts
                    ));
                }
            }
            Expect::Crashed => {
                if run.attempts != counted || run.attempts < 1 {
                    return fail(format!(
                        "{} attempts counted for {started} claims of which {released} were given back",
                        run.attempts
                    ));
                }
            }
        }
        if released > 0 {
            report.released += 1;
        }
        if run.requeued("interrupted") > 0 {
            report.interrupted += 1;
        }
        *report.attempts.entry(run.attempts).or_default() += 1;
        *report
            .by_worker
            .entry(run.claimed_by.clone().unwrap_or_default())
            .or_default() += 1;
        if let Some(finished) = run.finished_ms {
            report.latencies_ms.push(finished - run.created_ms);
        }
        report.runs += 1;
    }
    report.latencies_ms.sort_unstable();
    Ok(report)
}
