//! Runs off the request path: each process claims queued runs from the
//! store (PostgreSQL hands a run to exactly one claimer: `FOR UPDATE SKIP
//! LOCKED`), executes at most [`CONCURRENCY`] at once, keeps the leases of
//! the runs it executes alive (one write for all of them every
//! [`RENEW_EVERY`]), and records every node's input and output, the
//! progress and the outcome as numbered events that the event streams
//! replay. What a run does is written together: a run of quick nodes in one
//! write at its end, with its outcome; a longer one every [`WRITE_DELAY`]
//! while it runs.
//!
//! A run whose worker died is claimed again and runs from the start: on
//! SQLite at the next start, at once (the data directory admits one
//! process, so every run still running belonged to a dead one,
//! [`requeue_orphans`]); with replicas on PostgreSQL once its lease lapsed,
//! at most [`LEASE`] after the dead worker's last renewal. After
//! [`MAX_ATTEMPTS`] claims it fails with a sentence instead of being
//! retried forever. A process that shuts down gives back the runs it has
//! not finished ([`shutdown`]): they are queued again at once, their claims
//! not counted as attempts.
//!
//! A run never executes on two workers at once: a worker gives a run up
//! (abandoning even the node in progress) as soon as its lease is no longer
//! confirmed for [`LEASE_MARGIN`] more, which is before any other worker
//! may take it over (the replicas' clocks must differ by less than that),
//! and the store refuses every write of a worker that no longer holds the
//! run, so a late worker never changes another's outcome. A stop (from any
//! replica) ends the run in the store at once; its worker learns of it at
//! its next write or renewal and gives the run up.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::executor::{self, ModelProvider, Plan, RunEnv, RunFailure};
use crate::state::AppState;
use crate::store::{RunId, RunOutcome, RunRecord, RunStep, Store};

/// Runs one process executes at once.
pub const CONCURRENCY: usize = 8;
/// How long a claim lasts without renewal: a replica that died holds its
/// runs this long after its last renewal, at most.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a process renews the leases of all the runs it executes (one
/// write, whatever their number): four renewals may fail in a row before a
/// lease is in danger.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A worker gives a run up once its lease is confirmed for less than this:
/// the slack that keeps two workers from executing a run at once while a
/// worker cannot reach the database, or the replicas' clocks differ.
pub const LEASE_MARGIN: Duration = Duration::from_secs(3);
/// How often the workers look for queued runs (others' too) when nothing
/// woke them.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Claims of one run (the first and the resumptions after a crash) before
/// it fails.
pub const MAX_ATTEMPTS: i64 = 3;
/// At a shutdown, how long the runs in flight have to reach their next
/// node; a node still running then is abandoned.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// What the request path shares with the workers and the event streams.
#[derive(Debug)]
pub struct RunHub {
    /// Wakes the workers: a run was queued in this process.
    queued: Notify,
    /// Wakes [`RunHub::wait_changed`]: a run's events changed in this
    /// process. (The event streams and `/sync` are woken by the store's
    /// `RunChanged` events instead, which come from every replica: see
    /// [`crate::runs::streams`].)
    changed: Notify,
    /// This process's name in the runs' `claimed_by`.
    worker: String,
    /// The runs this process executes.
    pool: WorkerPool,
}

impl Default for RunHub {
    fn default() -> Self {
        Self {
            queued: Notify::new(),
            changed: Notify::new(),
            worker: format!("noxus-{}", uuid::Uuid::new_v4()),
            pool: WorkerPool::default(),
        }
    }
}

impl RunHub {
    /// A run was queued: wake a worker.
    pub fn queued(&self) {
        self.queued.notify_one();
    }

    /// A run's events changed in this process: wake what waits for it.
    pub fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// Resolves at the next change in this process (or never); changes made
    /// by other replicas are not seen here (the store's events carry them:
    /// [`crate::runs::streams`]).
    pub fn wait_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

/// This process's workers: their slots, the runs they hold, their leases.
#[derive(Debug)]
struct WorkerPool {
    /// One permit per run executing.
    slots: Arc<Semaphore>,
    /// A slot freed, or the shutdown began: the claim loop looks again.
    wake: Notify,
    /// Held while claiming: the shutdown waits for a claim in progress.
    claiming: tokio::sync::Mutex<()>,
    /// The runs executing here.
    held: Mutex<HashMap<RunId, Arc<Held>>>,
    /// When the last renewal that succeeded was sent: the leases of the
    /// runs it renewed run from then.
    renewed: Mutex<Option<Instant>>,
    /// The shutdown began: no more claims, runs stop at their next node.
    stopping: AtomicBool,
}

impl Default for WorkerPool {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
            wake: Notify::new(),
            claiming: tokio::sync::Mutex::new(()),
            held: Mutex::new(HashMap::new()),
            renewed: Mutex::new(None),
            stopping: AtomicBool::new(false),
        }
    }
}

impl WorkerPool {
    fn renewed(&self) -> Option<Instant> {
        *self.renewed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn held(&self) -> Vec<(RunId, Arc<Held>)> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, held)| (id.clone(), Arc::clone(held)))
            .collect()
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// A run this process executes.
#[derive(Debug)]
struct Held {
    /// When its claim was sent: its lease runs from then.
    claimed: Instant,
    /// It is no longer this worker's (stopped, or taken over).
    gone: AtomicBool,
    /// The shutdown stopped waiting for it.
    abandoned: AtomicBool,
    /// Wakes [`Held::lost`].
    wake: Notify,
}

impl Held {
    /// Until when this worker may act on the run: its lease as last
    /// confirmed, less the margin.
    fn trusted_until(&self, pool: &WorkerPool) -> Instant {
        let since = pool
            .renewed()
            .map_or(self.claimed, |renewed| renewed.max(self.claimed));
        since + (LEASE - LEASE_MARGIN)
    }

    /// Whether to give the run up at once, even in the middle of a node.
    fn is_lost(&self, pool: &WorkerPool) -> bool {
        self.gone.load(Ordering::Acquire)
            || self.abandoned.load(Ordering::Acquire)
            || Instant::now() >= self.trusted_until(pool)
    }

    /// Whether to stop before the next node.
    fn should_stop(&self, pool: &WorkerPool) -> bool {
        pool.stopping() || self.is_lost(pool)
    }

    /// Resolves once the run is lost to this worker.
    async fn lost(&self, pool: &WorkerPool) {
        loop {
            if self.is_lost(pool) {
                return;
            }
            let until = self.trusted_until(pool);
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    fn give_up(&self) {
        self.gone.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// Removes a run from the held ones when its execution ends, however it
/// ends (a panic included): its lease is renewed no more.
struct Release {
    state: AppState,
    run_id: RunId,
}

impl Drop for Release {
    fn drop(&mut self) {
        let pool = &self.state.runs().pool;
        pool.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.run_id);
        pool.wake.notify_one();
    }
}

/// Starts this process's workers; they end when the state is dropped.
pub fn start(state: &AppState) {
    tracing::info!(
        worker = %state.runs().worker,
        concurrency = CONCURRENCY,
        "workflow runs: this process claims them under this worker name"
    );
    tokio::spawn(claim_loop(state.downgrade()));
    tokio::spawn(renew_loop(state.downgrade()));
}

/// On a database that only this process uses (SQLite, whose data directory
/// this process has locked), every run still running belonged to a
/// process that died: queues them again at once (their claims counted)
/// instead of leaving them to wait for their leases. Never on a shared
/// database, where they may be another replica's live runs.
pub async fn requeue_orphans(store: &dyn Store) -> anyhow::Result<()> {
    let requeued = store.requeue_running_runs().await?;
    if !requeued.is_empty() {
        tracing::info!(
            runs = requeued.len(),
            "runs left running by a process that stopped without giving them back are queued again"
        );
    }
    Ok(())
}

/// Stops this process's workers for a shutdown: no more claims; each run
/// in flight stops at its next node (a node still running after
/// [`SHUTDOWN_WAIT`] is abandoned); then every run this process holds goes
/// back to the queue, its claim not counted as an attempt, so that another
/// replica, or the next start, takes it at once.
pub async fn shutdown(state: &AppState) {
    let hub = state.runs();
    let pool = &hub.pool;
    pool.stopping.store(true, Ordering::Release);
    pool.wake.notify_one();
    // A claim in progress finishes first (its runs stop before their first
    // node); the claim loop then sees `stopping` and ends.
    let _claiming = pool.claiming.lock().await;
    let all = u32::try_from(CONCURRENCY).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_WAIT, pool.slots.acquire_many(all))
        .await
        .is_err()
    {
        let held = pool.held();
        tracing::warn!(
            runs = held.len(),
            "runs still in a node after the shutdown wait are abandoned"
        );
        for (_, run) in held {
            run.abandon();
        }
        // Abandoned, they end at once, unless stuck in a store call (which
        // the database's statement timeout bounds).
        let _ = tokio::time::timeout(Duration::from_secs(2), pool.slots.acquire_many(all)).await;
    }
    match state.store().release_runs(&hub.worker).await {
        Ok(released) if !released.is_empty() => tracing::info!(
            runs = released.len(),
            "runs not finished before the shutdown are back in the queue"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(
            error = %err,
            "giving back the runs not finished failed; they resume once their leases lapse"
        ),
    }
    hub.changed();
}

/// Why the claim loop looks for runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// A run was queued in this process, or the poll interval passed.
    Look,
    /// A run ended here (a slot freed).
    Freed,
}

async fn claim_loop(weak: Weak<crate::state::Inner>) {
    let mut wake = Wake::Look;
    // The last claim took as many runs as it asked for: more are waiting.
    let mut backlog = false;
    loop {
        let Some(state) = AppState::upgrade(&weak) else {
            return;
        };
        let hub = state.runs();
        let pool = &hub.pool;
        {
            let _claiming = pool.claiming.lock().await;
            if pool.stopping() {
                return;
            }
            let free = pool.slots.available_permits();
            // With runs waiting, a slot freed is refilled together with
            // others (one claim, one write, for several runs); a new run,
            // or the poll, fills whatever is free.
            let batch = wake == Wake::Look || !backlog || free >= CONCURRENCY / 2;
            if free > 0 && batch && !state.is_draining() {
                backlog = claim(&state, free).await;
            }
        }
        let wait = {
            let state = state.clone();
            async move {
                let hub = state.runs();
                tokio::select! {
                    () = hub.queued.notified() => Wake::Look,
                    () = hub.pool.wake.notified() => Wake::Freed,
                }
            }
        };
        drop(state);
        wake = tokio::select! {
            woke = wait => woke,
            () = tokio::time::sleep(POLL_EVERY) => Wake::Look,
        };
    }
}

/// Claims up to `free` runs and starts executing them; whether it got as
/// many as it asked for.
async fn claim(state: &AppState, free: usize) -> bool {
    let hub = state.runs();
    let pool = &hub.pool;
    let sent = Instant::now();
    let now = OffsetDateTime::now_utc();
    let limit = u32::try_from(free).unwrap_or(u32::MAX);
    let claimed = match state
        .store()
        .claim_runs(&hub.worker, limit, now, now + LEASE)
        .await
    {
        Ok(claimed) => claimed,
        Err(err) => {
            tracing::warn!(error = %err, "claiming queued runs failed; trying again");
            return false;
        }
    };
    let all = claimed.len() == free;
    for run in claimed {
        // Only this loop takes slots, and it asked for no more than were
        // free: a permit is always there.
        let Ok(permit) = Arc::clone(&pool.slots).try_acquire_owned() else {
            tracing::error!(run_id = %run.id, "no free slot for a claimed run; its lease will lapse");
            continue;
        };
        let held = Arc::new(Held {
            claimed: sent,
            gone: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            wake: Notify::new(),
        });
        pool.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(run.id.clone(), Arc::clone(&held));
        let release = Release {
            state: state.clone(),
            run_id: run.id.clone(),
        };
        tokio::spawn(async move {
            execute(&release.state, run, held).await;
            drop(permit);
            drop(release);
        });
    }
    all
}

/// Renews the leases of the runs this process executes, every
/// [`RENEW_EVERY`], in one write; a run the store no longer counts as
/// this worker's (stopped, or taken over) is given up.
async fn renew_loop(weak: Weak<crate::state::Inner>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let Some(state) = AppState::upgrade(&weak) else {
            return;
        };
        let hub = state.runs();
        let pool = &hub.pool;
        // Every run in this list was claimed before the renewal is sent, so
        // the renewal sees it if it is still this worker's.
        let held = pool.held();
        if held.is_empty() {
            continue;
        }
        let sent = Instant::now();
        let until = OffsetDateTime::now_utc() + LEASE;
        match state.store().renew_run_leases(&hub.worker, until).await {
            Ok(renewed) => {
                {
                    let mut last = pool.renewed.lock().unwrap_or_else(PoisonError::into_inner);
                    *last = Some(last.map_or(sent, |l| l.max(sent)));
                }
                let renewed: HashSet<RunId> = renewed.into_iter().collect();
                for (run_id, run) in held {
                    if !renewed.contains(&run_id) {
                        run.give_up();
                    }
                }
            }
            Err(err) => tracing::warn!(
                error = %err,
                runs = held.len(),
                "renewing the leases of this process's runs failed; a run whose lease is not confirmed in time is given up"
            ),
        }
    }
}

/// Executes one claimed run to its end (or until it is stopped or lost).
async fn execute(state: &AppState, run: RunRecord, held: Arc<Held>) {
    let hub = state.runs();
    let run_id = run.id.clone();
    if run.attempts > MAX_ATTEMPTS {
        let error = format!(
            "The run was interrupted {} times (the server running it stopped); it is not tried again.",
            run.attempts - 1
        );
        finish(
            state,
            &run_id,
            None,
            RunOutcome::Failed {
                error,
                output: None,
            },
        )
        .await;
        return;
    }
    let plan = match Plan::compile(&run.definition, state.catalog()) {
        Ok(plan) => plan,
        Err(err) => {
            let error = crate::domain::sentence(&err.detail);
            finish(
                state,
                &run_id,
                None,
                RunOutcome::Failed {
                    error,
                    output: None,
                },
            )
            .await;
            return;
        }
    };
    let input = match &run.input {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let env = Env {
        state,
        run_id: run_id.clone(),
        held: Arc::clone(&held),
        pending: Mutex::new(Pending::default()),
        kept: Notify::new(),
        writing: tokio::sync::Mutex::new(()),
    };
    let mut running = std::pin::pin!(executor::execute(&plan, &input, &env));
    let outcome = loop {
        // A node that takes long (a model's answer) does not hold back
        // what happened before it for more than WRITE_DELAY.
        let due = env.due();
        tokio::select! {
            biased;
            () = held.lost(&hub.pool) => break None,
            outcome = &mut running => break Some(outcome),
            // The first step kept since the last write: a new deadline.
            () = env.kept.notified() => {}
            () = sleep_until(due) => {
                // Not while the executor is itself writing (it holds the
                // lock across its write, and is not polled meanwhile).
                if let Ok(writing) = env.writing.try_lock() {
                    let _ = env.write(&writing, None).await;
                }
            }
        }
    };
    let lost = held.gone.load(Ordering::Acquire);
    match outcome {
        None if lost => hub.changed(),
        None => tracing::warn!(
            %run_id,
            "gave up a run in the middle of a node (its lease could not be confirmed, or the shutdown stopped waiting); it runs again from the start"
        ),
        Some(Ok(done)) => {
            let outcome = RunOutcome::Completed {
                output: done.output,
            };
            finish(state, &run_id, Some(&env), outcome).await;
        }
        // Stopped through the API or taken over (the store said so), or
        // the shutdown (which gives the run back), or a lease in doubt:
        // what is pending is not written.
        Some(Err(RunFailure::Stopped)) => {
            if lost {
                hub.changed();
            }
        }
        Some(Err(failure)) => {
            let detail = match failure.node_id() {
                Some(node) => format!("Node {node}: {}", failure.detail()),
                None => failure.detail().to_owned(),
            };
            let error = crate::domain::sentence(&detail);
            finish(
                state,
                &run_id,
                Some(&env),
                RunOutcome::Failed {
                    error,
                    output: None,
                },
            )
            .await;
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Ends a run, with what `env` has not written yet, in one write.
async fn finish(state: &AppState, run_id: &RunId, env: Option<&Env<'_>>, outcome: RunOutcome) {
    let written = match env {
        Some(env) => {
            let writing = env.writing.lock().await;
            env.write(&writing, Some(&outcome)).await
        }
        None => write_steps(state, run_id, &[], Some(&outcome)).await,
    };
    match written {
        Ok(true) => state.metrics().run_finished(outcome.status()),
        Ok(false) => {
            tracing::debug!(%run_id, "run ended elsewhere (stopped) before it finished here")
        }
        Err(err) => {
            tracing::warn!(%run_id, error = %err, "recording a run's outcome failed; its lease will lapse and it runs again")
        }
    }
    state.runs().changed();
}

/// Records steps (and an outcome) of a run this process holds.
async fn write_steps(
    state: &AppState,
    run_id: &RunId,
    steps: &[Step],
    end: Option<&RunOutcome>,
) -> crate::store::StoreResult<bool> {
    let details: Vec<Option<Value>> = steps.iter().map(Step::details).collect();
    let steps: Vec<RunStep<'_>> = steps
        .iter()
        .zip(&details)
        .map(|(step, details)| step.as_step(details.as_ref()))
        .collect();
    state
        .store()
        .record_run_steps(
            run_id,
            &state.runs().worker,
            &steps,
            end,
            OffsetDateTime::now_utc(),
        )
        .await
}

/// How long what a worker reports about a run may wait to be written: a
/// run of quick nodes is written once, at its end (with its outcome); a
/// node that takes longer has the steps before it written after this.
pub const WRITE_DELAY: Duration = Duration::from_millis(50);

/// Steps written at once, at most: a long run of quick nodes is written
/// in parts of this size.
const MAX_PENDING_STEPS: usize = 64;

/// Something that happened in a run, not written yet.
enum Step {
    Started(Value),
    Finished {
        node_id: String,
        input: Value,
        output: Value,
        progress: u8,
    },
}

impl Step {
    fn details(&self) -> Option<Value> {
        match self {
            Self::Started(_) => None,
            Self::Finished { node_id, .. } => Some(json!({ "node_id": node_id })),
        }
    }

    fn as_step<'a>(&'a self, details: Option<&'a Value>) -> RunStep<'a> {
        match self {
            Self::Started(data) => RunStep::NodeStarted { data },
            Self::Finished {
                node_id,
                input,
                output,
                progress,
            } => RunStep::NodeFinished {
                node_id,
                input,
                output,
                progress: i64::from(*progress),
                progress_details: details,
            },
        }
    }
}

/// Steps waiting to be written, and since when.
#[derive(Default)]
struct Pending {
    steps: Vec<Step>,
    since: Option<Instant>,
}

/// What the executor reports to: the store, and this process's streams.
/// Steps are kept and written together — at the run's end, with its
/// outcome, or [`WRITE_DELAY`] after the first of them — in one write.
struct Env<'a> {
    state: &'a AppState,
    run_id: RunId,
    held: Arc<Held>,
    pending: Mutex<Pending>,
    /// A step was kept with none waiting before it: the run's loop sets
    /// the deadline of its write.
    kept: Notify,
    /// Held across a write, so that writes keep the steps' order.
    writing: tokio::sync::Mutex<()>,
}

impl Env<'_> {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the steps kept must be written.
    fn due(&self) -> Option<Instant> {
        self.pending().since.map(|since| since + WRITE_DELAY)
    }

    fn keep(&self, step: Step) -> bool {
        let mut pending = self.pending();
        let since = match pending.since {
            Some(since) => since,
            None => {
                let now = Instant::now();
                pending.since = Some(now);
                self.kept.notify_one();
                now
            }
        };
        pending.steps.push(step);
        pending.steps.len() >= MAX_PENDING_STEPS || since.elapsed() >= WRITE_DELAY
    }

    /// Writes the steps kept (and `end`); the caller holds `writing`. A
    /// write the store refuses means the run is no longer this worker's.
    async fn write(
        &self,
        _writing: &tokio::sync::MutexGuard<'_, ()>,
        end: Option<&RunOutcome>,
    ) -> crate::store::StoreResult<bool> {
        let steps = {
            let mut pending = self.pending();
            pending.since = None;
            std::mem::take(&mut pending.steps)
        };
        if steps.is_empty() && end.is_none() {
            return Ok(true);
        }
        let written = write_steps(self.state, &self.run_id, &steps, end).await;
        match &written {
            Ok(true) => self.state.runs().changed(),
            Ok(false) => self.held.give_up(),
            Err(err) => {
                tracing::warn!(run_id = %self.run_id, error = %err, "recording a run's steps failed");
            }
        }
        written
    }

    async fn keep_or_write(&self, step: Step) {
        if self.keep(step) {
            let writing = self.writing.lock().await;
            let _ = self.write(&writing, None).await;
        }
    }
}

#[async_trait]
impl RunEnv for Env<'_> {
    async fn node_started(&self, node_id: &str, index: usize, total: usize) {
        let data = json!({"node_id": node_id, "index": index, "total": total});
        self.keep_or_write(Step::Started(data)).await;
    }

    async fn node_finished(&self, node_id: &str, input: &Value, output: &Value, progress: u8) {
        self.keep_or_write(Step::Finished {
            node_id: node_id.to_owned(),
            input: input.clone(),
            output: output.clone(),
            progress,
        })
        .await;
    }

    fn stopped(&self) -> bool {
        self.held.should_stop(&self.state.runs().pool)
    }

    fn models(&self) -> Option<&dyn ModelProvider> {
        self.state.models()
    }
}
