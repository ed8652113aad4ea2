//! Runs off the request path: each process claims queued runs from the
//! store (PostgreSQL hands a run to exactly one claimer: `FOR UPDATE SKIP
//! LOCKED`), executes at most [`CONCURRENCY`] at once, renews its lease
//! while it works, and records every node's input and output, the progress
//! and the outcome as numbered events that the event streams replay.
//!
//! A run whose worker died (its lease lapsed) is claimed again and runs
//! from the start; after [`MAX_ATTEMPTS`] claims it fails with a sentence
//! instead of being retried forever. A stop (from any replica) is seen
//! between nodes: the worker's writes are refused once the run is stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};

use super::executor::{self, ModelProvider, Plan, RunEnv, RunFailure};
use crate::state::AppState;
use crate::store::{RunId, RunOutcome, RunRecord};

/// Runs one process executes at once.
pub const CONCURRENCY: usize = 8;
/// How long a claim lasts without renewal.
const LEASE: Duration = Duration::from_secs(30);
/// How often a worker renews the lease of a run it executes.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often the workers look for queued runs (others' too) when nothing
/// woke them.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Claims of one run (the first and the resumptions after a crash) before
/// it fails.
pub const MAX_ATTEMPTS: i64 = 3;

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
}

impl Default for RunHub {
    fn default() -> Self {
        Self {
            queued: Notify::new(),
            changed: Notify::new(),
            worker: format!("noxus-{}", uuid::Uuid::new_v4()),
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

/// Starts this process's workers; they end when the state is dropped.
pub fn start(state: &AppState) {
    let weak = state.downgrade();
    tokio::spawn(claim_loop(weak));
}

async fn claim_loop(weak: Weak<crate::state::Inner>) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        let Some(state) = AppState::upgrade(&weak) else {
            return;
        };
        let free = slots.available_permits();
        if free > 0 && !state.is_draining() {
            let now = OffsetDateTime::now_utc();
            let lease = now + LEASE;
            let hub = state.runs();
            match state
                .store()
                .claim_runs(&hub.worker, free as u32, now, lease)
                .await
            {
                Ok(claimed) => {
                    for run in claimed {
                        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                            break;
                        };
                        let state = state.clone();
                        tokio::spawn(async move {
                            execute(&state, run).await;
                            drop(permit);
                        });
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "claiming queued runs failed; trying again");
                }
            }
        }
        let hub_wait = {
            let state = state.clone();
            async move { state.runs().queued.notified().await }
        };
        drop(state);
        tokio::select! {
            () = hub_wait => {}
            () = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

/// Executes one claimed run to its end (or until it is stopped).
async fn execute(state: &AppState, run: RunRecord) {
    let worker = state.runs().worker.clone();
    let run_id = run.id.clone();
    if run.attempts > MAX_ATTEMPTS {
        finish(
            state,
            &run_id,
            RunOutcome::Failed {
                error: format!(
                    "The run was interrupted {} times (the server running it stopped); it is not tried again.",
                    run.attempts - 1
                ),
                output: None,
            },
        )
        .await;
        return;
    }
    let plan = match Plan::compile(&run.definition, state.catalog()) {
        Ok(plan) => plan,
        Err(err) => {
            finish(
                state,
                &run_id,
                RunOutcome::Failed {
                    error: crate::domain::sentence(&err.detail),
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
        state: state.clone(),
        run_id: run_id.clone(),
        worker: worker.clone(),
        stopped: Arc::new(AtomicBool::new(false)),
    };
    let renewer = tokio::spawn(renew(
        state.downgrade(),
        run_id.clone(),
        worker.clone(),
        Arc::clone(&env.stopped),
    ));
    let outcome = executor::execute(&plan, &input, &env).await;
    renewer.abort();
    match outcome {
        Ok(done) => {
            finish(
                state,
                &run_id,
                RunOutcome::Completed {
                    output: done.output,
                },
            )
            .await;
        }
        Err(RunFailure::Stopped) => {
            // Stopped through the API: the store already says so.
            state.runs().changed();
        }
        Err(failure) => {
            let detail = match failure.node_id() {
                Some(node) => format!("Node {node}: {}", failure.detail()),
                None => failure.detail().to_owned(),
            };
            finish(
                state,
                &run_id,
                RunOutcome::Failed {
                    error: crate::domain::sentence(&detail),
                    output: None,
                },
            )
            .await;
        }
    }
}

async fn finish(state: &AppState, run_id: &RunId, outcome: RunOutcome) {
    let worker = &state.runs().worker;
    match state
        .store()
        .finish_run(run_id, worker, &outcome, OffsetDateTime::now_utc())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(%run_id, "run ended elsewhere (stopped) before it finished here")
        }
        Err(err) => {
            tracing::warn!(%run_id, error = %err, "recording a run's outcome failed; its lease will lapse and it runs again")
        }
    }
    state.runs().changed();
}

/// Renews the lease while the run executes; a refused renewal (the run
/// was stopped, or another worker took it) stops the execution.
async fn renew(
    weak: Weak<crate::state::Inner>,
    run_id: RunId,
    worker: String,
    stopped: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let Some(state) = AppState::upgrade(&weak) else {
            return;
        };
        let until = OffsetDateTime::now_utc() + LEASE;
        match state.store().renew_run_lease(&run_id, &worker, until).await {
            Ok(true) => {}
            Ok(false) => {
                stopped.store(true, Ordering::Relaxed);
                return;
            }
            Err(err) => tracing::warn!(%run_id, error = %err, "renewing a run's lease failed"),
        }
    }
}

/// What the executor reports to: the store, and this process's streams.
struct Env {
    state: AppState,
    run_id: RunId,
    worker: String,
    stopped: Arc<AtomicBool>,
}

#[async_trait]
impl RunEnv for Env {
    async fn node_started(&self, node_id: &str, index: usize, total: usize) {
        let data = json!({"node_id": node_id, "index": index, "total": total});
        if let Err(err) = self
            .state
            .store()
            .append_run_event(&self.run_id, "node_started", &data)
            .await
        {
            tracing::warn!(run_id = %self.run_id, error = %err, "recording a node's start failed");
        }
        self.state.runs().changed();
    }

    async fn node_finished(&self, node_id: &str, input: &Value, output: &Value, progress: u8) {
        let store = self.state.store();
        if let Err(err) = store
            .record_node_io(&self.run_id, node_id, input, output)
            .await
        {
            tracing::warn!(run_id = %self.run_id, error = %err, "recording a node's input and output failed");
        }
        let details = json!({"node_id": node_id});
        match store
            .update_run_progress(
                &self.run_id,
                &self.worker,
                i64::from(progress),
                Some(&details),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => self.stopped.store(true, Ordering::Relaxed),
            Err(err) => {
                tracing::warn!(run_id = %self.run_id, error = %err, "recording a run's progress failed");
            }
        }
        self.state.runs().changed();
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn models(&self) -> Option<&dyn ModelProvider> {
        self.state.models()
    }
}
