//! Workflow runs under load, with real `noxus serve` processes: many runs
//! of a 5-node workflow (`noxus_testkit::runs_load`) queued at once over
//! HTTP all end, each exactly once, with its own output — on SQLite (one
//! process) and on PostgreSQL with three replicas, none executed by two;
//! and a process killed (SIGKILL) or stopped (SIGTERM) in the middle of
//! them loses none: started again on the same data, every run ends
//! completed (or failed with a reason), none stays queued or running. A
//! run stopped in a slow node (a model that has not answered) is given
//! back at the shutdown and finishes at the next start.
//!
//! For the kills and stops, the runs are queued through the store while
//! no process runs (so that all are waiting when the processes start), and
//! the process is frozen (SIGSTOP) at a moment the database shows it
//! holding runs before it is killed or stopped, so that what it held is
//! known exactly.
//!
//! What each run went through is read from the database (its `attempts`,
//! `claimed_by` and every event in order). Each test prints what it
//! measured (`--nocapture`, or nextest's `--success-output immediate`).
//! `NOXUS_TEST_LOAD_RUNS` changes the number of runs (default 1,000).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::Json;
use noxus_testkit::cluster::{Cluster, ClusterOptions, ReplicaOptions};
use noxus_testkit::runs_load::{
    check_runs, queue_in_store, queue_runs, worker_in_log, Expect, LoadReport, LoadWorkflow,
    RunsDatabase,
};
use serde_json::{json, Value};

const NOXUS: &str = env!("CARGO_BIN_EXE_noxus");

/// No per-key rate limit: the load is the test's.
const UNLIMITED: &[&str] = &["--rate-limit-per-key", "0"];

/// Requests in flight while queueing.
const CLIENTS: usize = 16;

/// The longest a load may take to end (a debug build on a busy machine).
const PATIENCE: Duration = Duration::from_secs(300);

/// The SQLite tests run `noxus serve` on a data directory whatever
/// `NOXUS_TEST_BACKEND` says: in the pass that runs every `TestApp` on
/// PostgreSQL they would only repeat themselves, so they say SKIPPED there.
fn ran_in_the_default_pass(test: &str) -> bool {
    let again = noxus_testkit::postgres::enabled();
    if again {
        eprintln!("\nSKIPPED: {test} (SQLite processes: they run in the default pass)");
    }
    again
}

fn runs() -> usize {
    std::env::var("NOXUS_TEST_LOAD_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// The backlog of the SQLite tests that stop or kill the process mid-way:
/// three times [`runs`]. The test waits for the server to be ready, then
/// for 50 runs to end, before its first look; on a 2-core machine that
/// look came after 100–220 runs had ended, and once, on a loaded CI
/// machine, the test never saw the process holding a run before all of a
/// thousand had ended. Three times as many keep the process busy well past
/// the first look ([`freeze_while_running`] reports what that look found,
/// and after how many tries it caught the process holding runs).
fn mid_way_backlog() -> usize {
    3 * runs()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn print_report(what: &str, report: &LoadReport, seconds: f64) {
    eprintln!(
        "{what}: {} runs ended in {seconds:.2} s ({:.0} runs/s): {} completed, {} failed; attempts {:?}; given back at a shutdown {}, requeued at a start {}; runs per process {:?}; latency p50 {} ms, p99 {} ms",
        report.runs,
        report.runs as f64 / seconds,
        report.completed,
        report.failed,
        report.attempts,
        report.released,
        report.interrupted,
        report.by_worker.values().collect::<Vec<_>>(),
        report.latency_ms(0.5),
        report.latency_ms(0.99),
    );
}

/// One `noxus serve` process on a SQLite data directory, its log in a file.
struct Serve {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Serve {
    /// Starts it and waits until it is ready; on the first start of the
    /// directory, returns the key it printed too.
    async fn start(dir: &Path, n: usize) -> (Self, Option<String>) {
        Self::start_with(dir, n, &[], &[]).await
    }

    /// [`Serve::start`] with more arguments and environment variables.
    async fn start_with(
        dir: &Path,
        n: usize,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (Self, Option<String>) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.with_extension(format!("serve-{n}.log"));
        let mut child = Command::new(NOXUS)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir)
            .args(UNLIMITED)
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("NOXUS_NO_WELCOME")
            .env_remove("NOXUS_DATABASE_URL")
            .env("NOXUS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let (key_tx, key_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(key) = noxus_testkit::cluster::first_key_in(&line) {
                    let _ = key_tx.send(Some(key));
                    sent = true;
                }
            }
            if !sent {
                let _ = key_tx.send(None);
            }
        });
        let serve = Self { child, base, log };
        serve.wait_ready().await;
        // A first start prints its key before it serves.
        let key = key_rx
            .recv_timeout(Duration::from_millis(200))
            .ok()
            .flatten();
        (serve, key)
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the server did not get ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; waits for the exit and returns it with the log.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        (status, self.log())
    }

    /// Waits for the exit; returns it with the log.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        (status, self.log())
    }

    /// SIGKILL: no shutdown at all.
    fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.log()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh data directory with a server on it: the workflow saved, `total`
/// runs queued (while they already execute).
struct SqliteLoad {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    workflow: LoadWorkflow,
    queued: Vec<(String, usize)>,
    started: Instant,
}

async fn sqlite_load(total: usize) -> (SqliteLoad, Serve) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (serve, key) = Serve::start(&dir, 0).await;
    let key = key.expect("the first start prints a key");
    let http = reqwest::Client::new();
    let workflow = LoadWorkflow::new();
    let workflow_id = workflow.save(&http, &serve.base, &key).await;
    let started = Instant::now();
    let queued = queue_runs(
        &http,
        std::slice::from_ref(&serve.base),
        &key,
        &workflow,
        &workflow_id,
        0..total,
        CLIENTS,
    )
    .await
    .unwrap_or_else(|e| panic!("queueing: {e}\n{}", serve.log()));
    assert_eq!(queued.len(), total);
    let load = SqliteLoad {
        _tmp: tmp,
        dir,
        workflow,
        queued,
        started,
    };
    (load, serve)
}

/// Waits until at least `n` runs ended (so that the rest are queued or in
/// flight when the process is stopped).
async fn wait_for_ended(db: &mut RunsDatabase, n: i64) {
    db.wait_ended(n, PATIENCE).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_thousand_runs_queued_at_once_each_end_once() {
    if ran_in_the_default_pass("runs_load::on_sqlite_a_thousand_runs_queued_at_once_each_end_once")
    {
        return;
    }
    let total = runs();
    let (load, serve) = sqlite_load(total).await;
    let queued_in = load.started.elapsed().as_secs_f64();
    let mut db = RunsDatabase::sqlite(&load.dir).await;
    db.wait_ended(total as i64, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    let seconds = load.started.elapsed().as_secs_f64();
    let report = check_runs(
        &db.runs().await,
        &load.workflow,
        &load.queued,
        Expect::Clean,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("queued {total} runs in {queued_in:.2} s");
    print_report("SQLite, one process", &report, seconds);
    assert_eq!(report.completed, total);
    assert_eq!(report.by_worker.len(), 1, "one process: one worker");
    let (status, log) = serve.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A data directory with `total` runs waiting: the platform's first start
/// (the workflow saved through the API), then, with the process stopped,
/// the runs queued through the store, so that the next start finds them
/// all queued and executes them at full speed.
async fn sqlite_backlog(total: usize) -> SqliteLoad {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (serve, key) = Serve::start(&dir, 0).await;
    let key = key.expect("the first start prints a key");
    let http = reqwest::Client::new();
    let workflow = LoadWorkflow::new();
    let workflow_id = workflow.save(&http, &serve.base, &key).await;
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
    let store = noxus_testkit::noxus_server::store::SqliteStore::open(&dir)
        .await
        .unwrap();
    let (workspace, owner) = owner_of(&store).await;
    let queued = queue_in_store(
        &store,
        &workspace,
        &workflow_id,
        &owner,
        &workflow,
        0..total,
    )
    .await;
    noxus_testkit::noxus_server::store::Store::close(&store).await;
    SqliteLoad {
        _tmp: tmp,
        dir,
        workflow,
        queued,
        started: Instant::now(),
    }
}

/// The first workspace and its owner (the first start's).
async fn owner_of(store: &dyn noxus_testkit::noxus_server::store::Store) -> (String, String) {
    let owner = store
        .user_by_email("admin@noxus.local")
        .await
        .unwrap()
        .expect("the first start's owner");
    let org = store
        .organization()
        .await
        .unwrap()
        .expect("an organization");
    let workspaces = store.list_workspaces(&org.id).await.unwrap();
    (workspaces[0].id.to_string(), owner.id.to_string())
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`) to a process, with the
/// system call itself: spawning `kill` took milliseconds, long enough for
/// the process to finish the runs the database had just shown it holding.
fn signal(pid: u32, signal: &str) {
    use rustix::process::{kill_process, Pid, Signal};
    let sig = match signal {
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        other => panic!("unknown signal {other}"),
    };
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .expect("a process id");
    kill_process(target, sig).unwrap_or_else(|err| panic!("kill -{signal} {pid}: {err}"));
}

/// Freezes process `pid` (SIGSTOP) at a moment it is executing runs
/// (claimed by `worker`; by anyone with `None`), so that what it holds is
/// known exactly when it is then killed or stopped; returns how many it
/// holds. It freezes the process, looks at the database (stopped, the
/// process writes nothing more: the database shows what it holds), and if
/// it holds nothing lets it go on a moment and tries again. Freezing first
/// and looking second does not depend on the test seeing a run in the
/// milliseconds it is held: with a backlog, the process holds runs most of
/// the time, so most tries catch some (looking first, then freezing, lost
/// that race on a loaded CI machine once the request path got faster).
async fn freeze_while_running(pid: u32, db: &mut RunsDatabase, worker: Option<&str>) -> usize {
    let deadline = Instant::now() + PATIENCE;
    let at_first_look = db.counts().await;
    let mut tries = 0u64;
    while Instant::now() < deadline {
        signal(pid, "STOP");
        tries += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let running = db.running(worker).await;
        if running > 0 {
            eprintln!("frozen holding {running} runs at try {tries} (at the first look: {at_first_look:?})");
            return running;
        }
        signal(pid, "CONT");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "process {pid} was never seen holding a run in {tries} tries; runs by status: {:?} (at the first look: {at_first_look:?})",
        db.counts().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_process_killed_mid_way_loses_no_run_and_its_runs_resume_at_the_next_start() {
    if ran_in_the_default_pass("runs_load::on_sqlite_a_process_killed_mid_way_loses_no_run_and_its_runs_resume_at_the_next_start") {
        return;
    }
    let total = mid_way_backlog();
    let load = sqlite_backlog(total).await;
    let (serve, _) = Serve::start(&load.dir, 1).await;
    let mut db = RunsDatabase::sqlite(&load.dir).await;
    // A few runs done, most still queued: the stop comes mid-way even if
    // this task is slow to see them (a loaded machine).
    wait_for_ended(&mut db, runs() as i64 / 20).await;
    let held = freeze_while_running(serve.child.id(), &mut db, None).await;
    let at_kill = db.counts().await;
    let log = serve.kill();
    eprintln!("killed with SIGKILL holding {held} runs; runs by status: {at_kill:?}");
    assert!(
        at_kill.get("queued").copied().unwrap_or(0) > 0,
        "the kill came mid-way: {at_kill:?}\n{log}"
    );

    let spawned_ms = now_ms();
    let (serve, _) = Serve::start(&load.dir, 2).await;
    let ready_ms = now_ms();
    db.wait_ended(total as i64, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    let seconds = load.started.elapsed().as_secs_f64();
    let stored = db.runs().await;
    let report = check_runs(&stored, &load.workflow, &load.queued, Expect::Crashed)
        .unwrap_or_else(|e| panic!("{e}"));
    print_report("SQLite, killed and started again", &report, seconds);
    assert_eq!(report.completed, total, "every run completed");
    // The runs the dead process held, and only those, were queued again by
    // the new one as it started (before it was ready), not after their
    // leases lapsed; their interrupted claim counts.
    let interrupted: Vec<_> = stored
        .iter()
        .filter(|r| r.requeued("interrupted") > 0)
        .collect();
    assert_eq!(interrupted.len(), held, "{at_kill:?}");
    for run in &interrupted {
        let requeued = run.events_of("requeued").next().unwrap();
        assert!(
            (spawned_ms..=ready_ms).contains(&requeued.at_ms),
            "run {} requeued at {} ms; the restart began at {spawned_ms} and was ready at {ready_ms}",
            run.id,
            requeued.at_ms
        );
        assert_eq!(run.attempts, 2, "{run:?}");
    }
    assert_eq!(report.attempts.get(&2).copied().unwrap_or(0), held);
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("queued again"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_process_stopped_mid_way_gives_its_runs_back_and_they_run_once() {
    if ran_in_the_default_pass(
        "runs_load::on_sqlite_a_process_stopped_mid_way_gives_its_runs_back_and_they_run_once",
    ) {
        return;
    }
    let total = mid_way_backlog();
    let load = sqlite_backlog(total).await;
    let (serve, _) = Serve::start(&load.dir, 1).await;
    let mut db = RunsDatabase::sqlite(&load.dir).await;
    // A few runs done, most still queued: the stop comes mid-way even if
    // this task is slow to see them (a loaded machine).
    wait_for_ended(&mut db, runs() as i64 / 20).await;
    let pid = serve.child.id();
    let held = freeze_while_running(pid, &mut db, None).await;
    // The SIGTERM is handled once the process runs again.
    signal(pid, "TERM");
    signal(pid, "CONT");
    let (status, log) = serve.wait();
    assert!(status.success(), "SIGTERM exits 0: {status:?}\n{log}");
    let at_exit = db.counts().await;
    eprintln!("stopped with SIGTERM while holding {held} runs; runs by status: {at_exit:?}");
    assert_eq!(
        at_exit.get("running"),
        None,
        "no run is left running by a graceful stop: {at_exit:?}\n{log}"
    );
    assert!(
        at_exit.get("queued").copied().unwrap_or(0) > 0,
        "{at_exit:?}"
    );

    let (serve, _) = Serve::start(&load.dir, 2).await;
    db.wait_ended(total as i64, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    let seconds = load.started.elapsed().as_secs_f64();
    let report = check_runs(
        &db.runs().await,
        &load.workflow,
        &load.queued,
        Expect::Graceful,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    print_report("SQLite, stopped and started again", &report, seconds);
    assert_eq!(report.completed, total);
    // The runs in flight at the stop finished (built-in nodes take
    // microseconds: most were in their last write) or were given back;
    // either way none was counted as a crash, and none was left to recover.
    assert_eq!(report.interrupted, 0, "nothing was left to recover");
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
}

/// A chat-completions endpoint whose answers wait until `gate` is opened
/// (`Model <model> says: <prompt>`); counts the calls.
async fn slow_model() -> (String, Arc<AtomicUsize>, tokio::sync::watch::Sender<bool>) {
    async fn completions(
        State((calls, gate)): State<(Arc<AtomicUsize>, tokio::sync::watch::Receiver<bool>)>,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        calls.fetch_add(1, Ordering::SeqCst);
        let mut gate = gate;
        let _ = gate.wait_for(|open| *open).await;
        let prompt = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        let text = format!(
            "Model {} says: {prompt}",
            body["model"].as_str().unwrap_or("?")
        );
        Json(json!({"choices": [{"message": {"role": "assistant", "content": text}}]}))
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let (gate, opened) = tokio::sync::watch::channel(false);
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .with_state((Arc::clone(&calls), opened));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}/v1"), calls, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_run_in_a_slow_node_at_a_stop_is_given_back_and_finishes_at_the_next_start() {
    if ran_in_the_default_pass(
        "runs_load::on_sqlite_a_run_in_a_slow_node_at_a_stop_is_given_back_and_finishes_at_the_next_start",
    ) {
        return;
    }
    let (model_url, calls, gate) = slow_model().await;
    let model: &[&str] = &[
        "--llm-base-url",
        &model_url,
        "--llm-api-key-env",
        "STUB_LLM_KEY",
    ];
    let env: &[(&str, &str)] = &[("STUB_LLM_KEY", "sk-stub-key")];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (serve, key) = Serve::start_with(&dir, 0, model, env).await;
    let key = key.expect("the first start prints a key");
    let http = reqwest::Client::new();
    let edge = |from: &str, to: &str, connector: &str| {
        json!({"from_id": {"node_id": from, "connector_name": "output", "key": null, "optional": false},
               "to_id": {"node_id": to, "connector_name": connector, "key": null, "optional": false},
               "id": format!("{from}-{to}")})
    };
    let node = |id: &str, kind: &str, config: Value| json!({"type": kind, "id": id, "node_config": config, "connector_config": {"inputs": [], "outputs": []}});
    let definition = json!({
        "flow_version": "v1",
        "nodes": [
            node("question", "InputNode", json!({"label": "Question"})),
            node("prompt", "ComposeTextNode", json!({"template": "Briefly: {input}"})),
            node("llm", "TextGenerationNode", json!({"model": "tiny-local-model"})),
            node("answer", "OutputNode", json!({"label": "Answer"})),
        ],
        "edges": [edge("question", "prompt", "input"), edge("prompt", "llm", "prompt"), edge("llm", "answer", "input")]
    });
    let saved: Value = http
        .post(format!("{}/v1/workflows", serve.base))
        .header("X-API-Key", &key)
        .json(&json!({"name": "ask", "type": "flow", "definition": definition}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let workflow = saved["id"].as_str().unwrap().to_owned();
    let started: Value = http
        .post(format!("{}/v1/workflows/{workflow}/runs", serve.base))
        .header("X-API-Key", &key)
        .json(&json!({"input": {"Question": "why?"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = started["id"].as_str().unwrap().to_owned();

    // The model is being asked: what came before its node is written while
    // the node runs (within the write delay), not held back for the run's end.
    let mut db = RunsDatabase::sqlite(&dir).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let llm_started = loop {
        let run = db
            .runs()
            .await
            .into_iter()
            .find(|r| r.id == run_id)
            .unwrap();
        if calls.load(Ordering::SeqCst) == 1
            && run
                .events_of("node_started")
                .any(|e| e.data["node_id"] == "llm")
        {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the slow node's start was not written: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kinds: Vec<&str> = llm_started.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "queued",
            "started",
            "node_started",
            "progress",
            "node_started",
            "progress",
            "node_started"
        ],
        "the nodes before the slow one, and its start"
    );

    // Stopped while the model answers: the node is abandoned after the
    // shutdown's wait, and the run goes back to the queue, not counted.
    let stopping = Instant::now();
    let (status, log) = serve.terminate();
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("abandoned"), "{log}");
    assert!(log.contains("back in the queue"), "{log}");
    eprintln!("stopped in {took:?} with a run in a slow node");
    let back = db
        .runs()
        .await
        .into_iter()
        .find(|r| r.id == run_id)
        .unwrap();
    assert_eq!(
        (back.status.as_str(), back.attempts),
        ("queued", 0),
        "{back:?}"
    );
    assert_eq!(back.requeued("released"), 1, "{back:?}");

    // Started again, with the model answering: the run asks it again and
    // completes, its one counted claim the second.
    gate.send_replace(true);
    let (serve, _) = Serve::start_with(&dir, 1, model, env).await;
    db.wait_ended(1, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    let done = db
        .runs()
        .await
        .into_iter()
        .find(|r| r.id == run_id)
        .unwrap();
    assert_eq!(done.status, "completed", "{done:?}");
    assert_eq!(
        done.output,
        Some(json!({"answer::output": {"text": "Model tiny-local-model says: Briefly: why?"}}))
    );
    assert_eq!(done.attempts, 1, "the claim given back was not counted");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the model was asked again");
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
}

/// Three replicas on one PostgreSQL database with `total` runs queued
/// through all of them in turn.
async fn cluster_load(
    test: &str,
    total: usize,
) -> Option<(Cluster, LoadWorkflow, Vec<(String, usize)>, Instant)> {
    let options = ClusterOptions {
        replicas: 3,
        concurrently: false,
        replica: ReplicaOptions::with_args(UNLIMITED),
    };
    let cluster = Cluster::start_with(test, Path::new(NOXUS), &options).await?;
    let workflow = LoadWorkflow::new();
    let workflow_id = workflow
        .save(
            &cluster.http,
            &cluster.replicas[0].base_url,
            &cluster.owner_key,
        )
        .await;
    let bases: Vec<String> = cluster
        .replicas
        .iter()
        .map(|r| r.base_url.clone())
        .collect();
    let started = Instant::now();
    let queued = queue_runs(
        &cluster.http,
        &bases,
        &cluster.owner_key,
        &workflow,
        &workflow_id,
        0..total,
        CLIENTS,
    )
    .await
    .unwrap();
    assert_eq!(queued.len(), total);
    Some((cluster, workflow, queued, started))
}

fn assert_no_panic(cluster: &Cluster) {
    for (index, replica) in cluster.replicas.iter().enumerate() {
        let log = replica.stderr();
        assert!(
            !log.contains("panicked"),
            "replica {index} panicked:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_three_replicas_share_a_thousand_runs_and_none_runs_twice() {
    let total = runs();
    let Some((cluster, workflow, queued, started)) = cluster_load(
        "runs_load::on_postgres_three_replicas_share_a_thousand_runs_and_none_runs_twice",
        total,
    )
    .await
    else {
        return;
    };
    let mut db = RunsDatabase::postgres(&cluster.database_url()).await;
    db.wait_ended(total as i64, PATIENCE).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let report = check_runs(&db.runs().await, &workflow, &queued, Expect::Clean)
        .unwrap_or_else(|e| panic!("{e}"));
    print_report("PostgreSQL, three replicas", &report, seconds);
    assert_eq!(report.completed, total);
    assert_eq!(
        report.by_worker.len(),
        3,
        "every replica executed runs: {:?}",
        report.by_worker
    );
    assert_no_panic(&cluster);
    db.close().await;
}

/// Three replicas with `total` runs waiting: the cluster started, the
/// workflow saved, every replica stopped, the runs queued through the
/// store, the replicas started again (so they find them all queued).
async fn cluster_backlog(
    test: &str,
    total: usize,
) -> Option<(Cluster, LoadWorkflow, Vec<(String, usize)>, Instant)> {
    let options = ClusterOptions {
        replicas: 3,
        concurrently: false,
        replica: ReplicaOptions::with_args(UNLIMITED),
    };
    let mut cluster = Cluster::start_with(test, Path::new(NOXUS), &options).await?;
    let workflow = LoadWorkflow::new();
    let workflow_id = workflow
        .save(
            &cluster.http,
            &cluster.replicas[0].base_url,
            &cluster.owner_key,
        )
        .await;
    for index in 0..3 {
        assert!(cluster.terminate_replica(index).await.success());
    }
    let arranger = cluster.arranger().await;
    let (workspace, owner) = owner_of(arranger.store()).await;
    let queued = queue_in_store(
        arranger.store(),
        &workspace,
        &workflow_id,
        &owner,
        &workflow,
        0..total,
    )
    .await;
    arranger.close().await;
    let started = Instant::now();
    for index in 0..3 {
        cluster
            .restart_replica(index, Path::new(NOXUS), UNLIMITED)
            .await;
    }
    Some((cluster, workflow, queued, started))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_replica_killed_mid_way_has_its_runs_taken_over_after_the_lease() {
    let total = runs();
    let Some((mut cluster, workflow, queued, started)) = cluster_backlog(
        "runs_load::on_postgres_a_replica_killed_mid_way_has_its_runs_taken_over_after_the_lease",
        total,
    )
    .await
    else {
        return;
    };
    let mut db = RunsDatabase::postgres(&cluster.database_url()).await;
    let victim = worker_in_log(&cluster.replicas[0].stderr()).expect("replica 0 names its worker");
    // A few runs done, most still queued: the stop comes mid-way even if
    // this task is slow to see them (a loaded machine).
    wait_for_ended(&mut db, total as i64 / 20).await;
    freeze_while_running(cluster.replicas[0].pid(), &mut db, Some(&victim)).await;
    cluster.kill_replica(0);
    let killed_ms = now_ms();
    // A claim the replica had sent before it froze may still commit (the
    // database has the statement): what it holds is read once the database
    // has seen its connections close, well before its leases lapse.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held_ids: Vec<String> = db
        .runs()
        .await
        .into_iter()
        .filter(|r| r.status == "running" && r.claimed_by.as_deref() == Some(victim.as_str()))
        .map(|r| r.id)
        .collect();
    let held = held_ids.len();
    assert!(held > 0, "the killed replica held runs");
    eprintln!(
        "replica 0 killed holding {held} runs; runs by status: {:?}",
        db.counts().await
    );
    db.wait_ended(total as i64, PATIENCE).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stored = db.runs().await;
    let report =
        check_runs(&stored, &workflow, &queued, Expect::Crashed).unwrap_or_else(|e| panic!("{e}"));
    print_report("PostgreSQL, a replica killed", &report, seconds);
    assert_eq!(report.completed, total, "every run completed");
    // Exactly the runs the dead replica held ran twice, each taken over by
    // another replica once its lease lapsed.
    assert_eq!(
        report.attempts.get(&2).copied().unwrap_or(0),
        held,
        "{:?}",
        report.attempts
    );
    let lease = noxus_testkit::noxus_server::runs::service::LEASE.as_millis() as i64;
    let mut delays = Vec::new();
    for id in &held_ids {
        let run = stored.iter().find(|r| &r.id == id).unwrap();
        assert_eq!(run.attempts, 2, "{run:?}");
        assert_ne!(run.claimed_by.as_deref(), Some(victim.as_str()));
        let retaken = run.events_of("started").nth(1).unwrap().at_ms;
        delays.push(retaken - killed_ms);
    }
    eprintln!("taken over {delays:?} ms after the kill (lease {lease} ms)");
    assert!(
        delays.iter().all(|d| (0..=lease + 5_000).contains(d)),
        "{delays:?}"
    );
    // Started again on the same database, the replica serves and works.
    cluster
        .restart_replica(0, Path::new(NOXUS), UNLIMITED)
        .await;
    let workflow_id = workflow
        .save(
            &cluster.http,
            &cluster.replicas[0].base_url,
            &cluster.owner_key,
        )
        .await;
    let again = queue_runs(
        &cluster.http,
        &[cluster.replicas[0].base_url.clone()],
        &cluster.owner_key,
        &workflow,
        &workflow_id,
        total..total + 10,
        2,
    )
    .await
    .unwrap();
    db.wait_ended(total as i64 + 10, PATIENCE).await.unwrap();
    check_runs(&db.runs().await, &workflow, &again, Expect::Clean)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_no_panic(&cluster);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_replica_stopped_mid_way_gives_its_runs_back_to_the_others_at_once() {
    let total = runs();
    let Some((mut cluster, workflow, queued, started)) = cluster_backlog(
        "runs_load::on_postgres_a_replica_stopped_mid_way_gives_its_runs_back_to_the_others_at_once",
        total,
    )
    .await
    else {
        return;
    };
    let mut db = RunsDatabase::postgres(&cluster.database_url()).await;
    let leaving = worker_in_log(&cluster.replicas[0].stderr()).expect("replica 0 names its worker");
    // A few runs done, most still queued: the stop comes mid-way even if
    // this task is slow to see them (a loaded machine).
    wait_for_ended(&mut db, total as i64 / 20).await;
    let pid = cluster.replicas[0].pid();
    let held = freeze_while_running(pid, &mut db, Some(&leaving)).await;
    signal(pid, "TERM");
    signal(pid, "CONT");
    let status = cluster.replicas[0]
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("replica 0 exits");
    let log = cluster.replicas[0].stderr();
    assert!(status.success(), "SIGTERM exits 0: {status:?}\n{log}");
    assert_eq!(
        db.running(Some(&leaving)).await,
        0,
        "it left no run running"
    );
    eprintln!("replica 0 stopped while holding {held} runs");
    db.wait_ended(total as i64, PATIENCE).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stored = db.runs().await;
    let report =
        check_runs(&stored, &workflow, &queued, Expect::Graceful).unwrap_or_else(|e| panic!("{e}"));
    print_report("PostgreSQL, a replica stopped", &report, seconds);
    assert_eq!(report.completed, total);
    assert_eq!(
        log.contains("back in the queue"),
        report.released > 0,
        "the log says when runs were given back:\n{log}"
    );
    // Given back, they were taken by the others at once, not after a lease.
    let mut waits = Vec::new();
    for run in stored.iter().filter(|r| r.requeued("released") > 0) {
        let back = run
            .events
            .iter()
            .position(|e| e.kind == "requeued")
            .unwrap();
        let taken = run.events[back..]
            .iter()
            .find(|e| e.kind == "started")
            .unwrap();
        waits.push(taken.at_ms - run.events[back].at_ms);
    }
    eprintln!("given back runs taken again after {waits:?} ms");
    let lease = noxus_testkit::noxus_server::runs::service::LEASE.as_millis() as i64;
    assert!(waits.iter().all(|w| *w < lease / 2), "{waits:?}");
    cluster
        .restart_replica(0, Path::new(NOXUS), UNLIMITED)
        .await;
    assert_no_panic(&cluster);
    db.close().await;
}
