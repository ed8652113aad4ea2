//! Workflow runs as the store keeps them: the run (a snapshot of the
//! definition it runs, its input, status, progress and outcome), the
//! per-node input/output, and the numbered events an event stream replays
//! from any point. Workers claim runs with a lease, so that a run is
//! executed by one worker at a time and a crashed worker's runs resume.

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use super::{
    Actor, KeyId, OrganizationId, RunId, StoreResult, UserId, WorkflowId, WorkflowVersionId,
    WorkspaceId,
};

/// Queued and running runs a workspace may hold at once, unless configured.
pub const DEFAULT_MAX_ACTIVE_RUNS_PER_WORKSPACE: u64 = 10_000;
/// Callbacks a workspace may have waiting (pending deliveries, and runs
/// under way with a `callback_url`), unless configured: a receiver that is
/// down (or a key that starts runs in a loop) cannot queue outbound work
/// without end.
pub const DEFAULT_MAX_WAITING_CALLBACKS_PER_WORKSPACE: u64 = 1_000;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// Claimed by a worker (or waiting to be resumed after its lease ran out).
    Running,
    /// Ended with an output.
    Completed,
    /// Ended with an error.
    Failed,
    /// Stopped by someone before it ended.
    Stopped,
}

impl RunStatus {
    /// As stored and sent (`"queued"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    /// From the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "stopped" => Self::Stopped,
            _ => return None,
        })
    }

    /// Whether the run has ended (nothing changes it any more).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Stopped)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds of run events written by the store itself; workers append others
/// (`node_started`, `node_finished`) with [`RunStore::append_run_event`].
pub mod event_kinds {
    /// The run was created (always the first event, `seq` 1).
    pub const QUEUED: &str = "queued";
    /// A worker claimed the run (again, after a lease ran out).
    pub const STARTED: &str = "started";
    /// A worker started a node.
    pub const NODE_STARTED: &str = "node_started";
    /// A worker finished a node.
    pub const NODE_FINISHED: &str = "node_finished";
    /// The run's progress changed.
    pub const PROGRESS: &str = "progress";
    /// The run completed (terminal).
    pub const COMPLETED: &str = "completed";
    /// The run failed (terminal).
    pub const FAILED: &str = "failed";
    /// The run was stopped (terminal).
    pub const STOPPED: &str = "stopped";
    /// The run went back to the queue without waiting for its lease:
    /// `reason` `released` (the worker shut down and gave it back; its
    /// claim is not counted as an attempt) or `interrupted` (found running
    /// when a process started on a database no other process uses: its
    /// worker died; the claim counts).
    pub const REQUEUED: &str = "requeued";
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Id.
    pub id: RunId,
    /// Runs started together share it; a run started alone has its own id.
    pub group_id: String,
    /// Organization of the workspace.
    pub organization_id: OrganizationId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Workflow run.
    pub workflow_id: WorkflowId,
    /// The version run, when one was asked for.
    pub workflow_version_id: Option<WorkflowVersionId>,
    /// The definition run, as it was when the run was created.
    pub definition: Value,
    /// The run's input.
    pub input: Value,
    /// Status.
    pub status: RunStatus,
    /// 0 to 100.
    pub progress: i64,
    /// What the worker says about its progress.
    pub progress_details: Option<Value>,
    /// The output, once completed.
    pub output: Option<Value>,
    /// Why the run failed: a sentence.
    pub error: Option<String>,
    /// Where to post the finished run.
    pub callback_url: Option<String>,
    /// Who started it.
    pub started_by_user: UserId,
    /// The key it was started with, if any.
    pub started_by_key: Option<KeyId>,
    /// When it was queued.
    pub created_at: OffsetDateTime,
    /// When a worker first claimed it.
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
    /// How many times a worker claimed it (1 on the first claim; more after
    /// leases that ran out). A claim given back at a worker's shutdown
    /// ([`RunStore::release_runs`]) is not counted.
    pub attempts: i64,
    /// The worker that holds it, or held it when it ended (`None` while
    /// queued).
    pub claimed_by: Option<String>,
    /// Until when that worker's claim holds, unless renewed.
    pub lease_until: Option<OffsetDateTime>,
    /// The `seq` of its last event (events are numbered 1, 2, ... per run).
    pub last_event_seq: i64,
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Workspace (the workflow must belong to it).
    pub workspace_id: WorkspaceId,
    /// Workflow.
    pub workflow_id: WorkflowId,
    /// The version run, if one was asked for.
    pub workflow_version_id: Option<WorkflowVersionId>,
    /// The definition to run (a snapshot: later edits of the workflow do
    /// not change the run).
    pub definition: Value,
    /// Input.
    pub input: Value,
    /// Group; `None` makes the run a group of its own (its id).
    pub group_id: Option<String>,
    /// Where to post the finished run.
    pub callback_url: Option<String>,
    /// Who starts it.
    pub started_by_user: UserId,
    /// With which key, if any.
    pub started_by_key: Option<KeyId>,
}

/// The quota a run creation is checked against (from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunQuotas {
    /// Queued and running runs per workspace.
    pub active_runs_per_workspace: u64,
    /// Bytes the runs of a workspace may hold (definitions, inputs,
    /// outputs, errors, every node's input and output): a new run's
    /// definition and input must fit in what is left.
    pub run_bytes_per_workspace: u64,
    /// For a run with a `callback_url`: pending callback deliveries plus
    /// queued and running runs with a `callback_url`, per workspace.
    pub waiting_callbacks_per_workspace: u64,
}

/// `--max-run-bytes-per-workspace`: 1 GiB.
pub const DEFAULT_MAX_RUN_BYTES_PER_WORKSPACE: u64 = 1 << 30;

impl Default for RunQuotas {
    fn default() -> Self {
        Self {
            active_runs_per_workspace: DEFAULT_MAX_ACTIVE_RUNS_PER_WORKSPACE,
            run_bytes_per_workspace: DEFAULT_MAX_RUN_BYTES_PER_WORKSPACE,
            waiting_callbacks_per_workspace: DEFAULT_MAX_WAITING_CALLBACKS_PER_WORKSPACE,
        }
    }
}

/// How a worker ends a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// It produced this output.
    Completed {
        /// The output.
        output: Value,
    },
    /// It failed.
    Failed {
        /// Why: a sentence for people.
        error: String,
        /// What output there was, if any.
        output: Option<Value>,
    },
}

impl RunOutcome {
    /// The status it leaves the run in.
    pub fn status(&self) -> RunStatus {
        match self {
            Self::Completed { .. } => RunStatus::Completed,
            Self::Failed { .. } => RunStatus::Failed,
        }
    }
}

/// One thing a worker reports about a run it holds, in the order it
/// happened ([`RunStore::record_run_steps`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunStep<'a> {
    /// A node starts: a `node_started` event with this data (an object;
    /// the store adds `workflow_status`).
    NodeStarted {
        /// The event's data, e.g. `{"node_id", "index", "total"}`.
        data: &'a Value,
    },
    /// A node finished: what it received and produced (replacing what an
    /// earlier attempt recorded), and the run's progress after it, with a
    /// `progress` event.
    NodeFinished {
        /// The node.
        node_id: &'a str,
        /// What it received.
        input: &'a Value,
        /// What it produced.
        output: &'a Value,
        /// The run's progress, 0 to 100 (clamped).
        progress: i64,
        /// What the worker says about it.
        progress_details: Option<&'a Value>,
    },
}

/// One event of a run, as an event stream sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    /// The run.
    pub run_id: RunId,
    /// 1, 2, ... in the order they happened (resume after one with it).
    pub seq: i64,
    /// What happened ([`event_kinds`]).
    pub kind: String,
    /// Details; always an object with `workflow_status` (the run's status
    /// once the event happened) when written by the store.
    pub data: Value,
    /// When.
    pub created_at: OffsetDateTime,
}

/// Workflow runs: creation within a quota, claims by workers with leases,
/// progress, per-node input/output, events, stop, deletion and full-text
/// search. Readers' calls are scoped by workspace (another workspace's run
/// is not found); workers' calls are by run id and only take effect while
/// the run is theirs (running, claimed by them).
///
/// Every call that appends events to an existing run (`claim_runs`,
/// `update_run_progress`, `finish_run`, `record_run_steps`, `stop_run`,
/// `release_runs`, `requeue_running_runs`, `append_run_event`)
/// publishes [`super::StoreEvent::RunChanged`] for it once committed (and
/// only when it changed something), so that open event streams, in this
/// process and in others sharing the database, read the new events at
/// once instead of polling.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Queues a run of a workflow of the workspace, with its first event
    /// (`queued`, seq 1) and an audit row (`run.start`), in one
    /// transaction. A workflow not in the workspace is
    /// [`super::StoreError::NotFound`]; a workspace already holding
    /// `quotas.active_runs_per_workspace` queued and running runs is
    /// [`super::StoreError::QuotaExceeded`] ([`super::Quota::ActiveRunsPerWorkspace`]);
    /// a run with a `callback_url` in a workspace already holding
    /// `quotas.waiting_callbacks_per_workspace` pending callbacks and runs
    /// under way with one is too ([`super::Quota::WaitingCallbacksPerWorkspace`]).
    async fn create_run(
        &self,
        actor: &Actor,
        run: &NewRun,
        quotas: &RunQuotas,
    ) -> StoreResult<RunRecord>;
    /// One run of the workspace.
    async fn run(&self, workspace_id: &WorkspaceId, id: &RunId) -> StoreResult<Option<RunRecord>>;
    /// A page of a workflow's runs, newest first.
    async fn list_runs(
        &self,
        workspace_id: &WorkspaceId,
        workflow_id: &WorkflowId,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<RunRecord>>;
    /// Ended runs (completed, failed, stopped) of a workflow of the
    /// workspace created before `created_before` (any time: `None`),
    /// oldest first, at most `limit`: what a bulk deletion by filters
    /// selects, however many newer runs there are.
    async fn ended_runs(
        &self,
        workspace_id: &WorkspaceId,
        workflow_id: &WorkflowId,
        created_before: Option<OffsetDateTime>,
        limit: u64,
    ) -> StoreResult<Vec<RunRecord>>;
    /// Atomically claims for `worker` up to `limit` runs, oldest first, that
    /// are queued, or running with a lease that ran out before `now` (their
    /// worker is gone: they resume). Each becomes running, claimed by
    /// `worker` until `lease_until`, its `attempts` one more, its
    /// `started_at` set if it was not, with a `started` event. Of several
    /// concurrent claimers (threads, processes), each run goes to one.
    async fn claim_runs(
        &self,
        worker: &str,
        limit: u32,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Vec<RunRecord>>;
    /// Extends `worker`'s claim on a run; `false` when the run is no longer
    /// its own (ended, stopped, deleted, or claimed by another worker after
    /// the lease ran out): the worker should give it up.
    async fn renew_run_lease(
        &self,
        run_id: &RunId,
        worker: &str,
        lease_until: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Records (or replaces) what a node of a run received and produced.
    async fn record_node_io(
        &self,
        run_id: &RunId,
        node_id: &str,
        input: &Value,
        output: &Value,
    ) -> StoreResult<()>;
    /// What a node of a run of the workspace received and produced.
    async fn node_io(
        &self,
        workspace_id: &WorkspaceId,
        run_id: &RunId,
        node_id: &str,
    ) -> StoreResult<Option<(Value, Value)>>;
    /// Sets a running run's progress (clamped to 0..=100) with a `progress`
    /// event, if `worker` still holds it; `false` (nothing changed) if not.
    async fn update_run_progress(
        &self,
        run_id: &RunId,
        worker: &str,
        progress: i64,
        progress_details: Option<&Value>,
    ) -> StoreResult<bool>;
    /// Ends a run with its outcome and the matching event (`completed`,
    /// `failed`), if it is still running and claimed by `worker`; `false`
    /// (nothing changed) if not — a stop that came first wins.
    async fn finish_run(
        &self,
        run_id: &RunId,
        worker: &str,
        outcome: &RunOutcome,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Stops a queued or running run of the workspace (status `stopped`,
    /// `finished_at` = `now`, a `stopped` event, an audit row `run.stop`);
    /// an ended run is returned unchanged. `None` if there is no such run.
    async fn stop_run(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        id: &RunId,
        now: OffsetDateTime,
    ) -> StoreResult<Option<RunRecord>>;
    /// Deletes runs of the workspace with their node input/output and
    /// events, with an audit row `run.delete` each; returns those deleted
    /// and those not found (in the order given, duplicates once).
    async fn delete_runs(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        ids: &[RunId],
    ) -> StoreResult<(Vec<RunId>, Vec<RunId>)>;
    /// Records what a worker reports about a run it holds, in one write:
    /// `steps` in order (with their events, node input and output, and
    /// progress) and, if given, the outcome that ends the run (as
    /// [`RunStore::finish_run`]: its event last, the run's stored bytes
    /// settled, its callback queued). Only while the run is
    /// running and claimed by `worker`; `false` (nothing written) if not:
    /// a stop, or a worker that took the run over after the lease ran
    /// out, wins, and nothing of a late worker's reaches the run.
    async fn record_run_steps(
        &self,
        run_id: &RunId,
        worker: &str,
        steps: &[RunStep<'_>],
        end: Option<&RunOutcome>,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Extends, in one write, the lease of every run `worker` holds
    /// (running, claimed by it) to `lease_until`; returns those runs. A run
    /// of the worker's that is not among them is no longer its own.
    async fn renew_run_leases(
        &self,
        worker: &str,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Vec<RunId>>;
    /// Gives back the runs `worker` holds (a worker shutting down): each
    /// is queued again at once, not claimed by anyone, its progress reset
    /// and its claim not counted as an attempt, with a `requeued` event
    /// (`reason` `released`); another worker need not wait for the lease.
    /// Returns them.
    async fn release_runs(&self, worker: &str) -> StoreResult<Vec<RunId>>;
    /// Queues again every running run at once, its claim counted (its
    /// worker died), with a `requeued` event (`reason` `interrupted`).
    /// **Only** for a database no other process uses — SQLite, at the
    /// start of the one process its locked data directory admits: every
    /// run still running there belonged to a process that is gone. On a
    /// shared database it would hand live runs to a second worker.
    /// Returns them.
    async fn requeue_running_runs(&self) -> StoreResult<Vec<RunId>>;
    /// Appends an event to a run and returns its `seq`. An object `data`
    /// without `workflow_status` gets the run's current status.
    /// [`super::StoreError::NotFound`] if the run does not exist.
    async fn append_run_event(&self, run_id: &RunId, kind: &str, data: &Value) -> StoreResult<i64>;
    /// A run's events after `after_seq` (0: from the first), in order, at
    /// most `limit`; none for a run not in the workspace.
    async fn run_events_after(
        &self,
        workspace_id: &WorkspaceId,
        run_id: &RunId,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<RunEvent>>;
    /// Runs of the workspace whose input or output text holds every word of
    /// `query` (any case), newest first, at most `limit`. The query is
    /// words, never the database's search syntax: quotes and operators in
    /// it are matched as text or ignored. No words, no runs.
    async fn search_runs(
        &self,
        workspace_id: &WorkspaceId,
        query: &str,
        limit: u32,
    ) -> StoreResult<Vec<RunRecord>>;
    /// What the workspace's runs hold, in bytes (as checked against
    /// [`RunQuotas::run_bytes_per_workspace`]): a queued or running run
    /// counts its definition and input, an ended one everything it keeps.
    async fn run_storage_bytes(&self, workspace_id: &WorkspaceId) -> StoreResult<u64>;
    /// Deletes at most `limit` ended runs (completed, failed, stopped) that
    /// ended before `ended_before`, oldest first, with their events and
    /// node input/output; returns how many. Runs not ended are never
    /// deleted. No audit row: this is the server's retention, not a user's act.
    async fn purge_ended_runs(&self, ended_before: OffsetDateTime, limit: u32) -> StoreResult<u64>;
}

/// The words of a search query: its runs of letters and digits. Every
/// other character (quotes, operators, punctuation) only separates words,
/// so nothing a user types reaches the database as search syntax.
pub(super) fn search_words(query: &str) -> Vec<&str> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The words of a search query as an FTS5 query that matches text holding
/// all of them, each a quoted string. `None` without words.
pub(super) fn fts5_query(query: &str) -> Option<String> {
    let words = search_words(query);
    // A word has no `"` (only letters and digits), so quoting it is enough.
    (!words.is_empty()).then(|| {
        words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// An event's data as stored: `data` (an object, or else wrapped as
/// `{"value": data}`) with `workflow_status` set to `status` unless it has one.
pub(super) fn event_data(status: RunStatus, data: Value) -> String {
    let mut object = match data {
        Value::Object(object) => object,
        Value::Null => serde_json::Map::new(),
        other => {
            let mut object = serde_json::Map::new();
            object.insert("value".to_owned(), other);
            object
        }
    };
    object
        .entry("workflow_status")
        .or_insert_with(|| Value::from(status.as_str()));
    Value::Object(object).to_string()
}

/// The data of the event that ends a run.
pub(super) fn outcome_event(outcome: &RunOutcome) -> (&'static str, String) {
    match outcome {
        RunOutcome::Completed { .. } => (
            event_kinds::COMPLETED,
            event_data(RunStatus::Completed, serde_json::json!({"progress": 100})),
        ),
        RunOutcome::Failed { error, .. } => (
            event_kinds::FAILED,
            event_data(RunStatus::Failed, serde_json::json!({"error": error})),
        ),
    }
}

/// The events `record_run_steps` writes for `steps` and `end`, in order
/// (kind, stored data), and the progress it leaves the run at (that of
/// the last finished node, with its details as stored), if any.
#[allow(clippy::type_complexity)]
pub(super) fn step_events(
    steps: &[RunStep<'_>],
    end: Option<&RunOutcome>,
) -> (Vec<(&'static str, String)>, Option<(i64, Option<String>)>) {
    let mut events = Vec::with_capacity(steps.len() + 1);
    let mut progress = None;
    for step in steps {
        match step {
            RunStep::NodeStarted { data } => events.push((
                event_kinds::NODE_STARTED,
                event_data(RunStatus::Running, (*data).clone()),
            )),
            RunStep::NodeFinished {
                progress: percent,
                progress_details,
                ..
            } => {
                let percent = (*percent).clamp(0, 100);
                events.push((
                    event_kinds::PROGRESS,
                    event_data(
                        RunStatus::Running,
                        serde_json::json!({"progress": percent, "progress_details": progress_details}),
                    ),
                ));
                progress = Some((percent, progress_details.map(Value::to_string)));
            }
        }
    }
    if let Some(outcome) = end {
        let (kind, data) = outcome_event(outcome);
        events.push((kind, data));
    }
    (events, progress)
}

/// The data of a `requeued` event.
pub(super) fn requeued_event(reason: &str) -> String {
    event_data(RunStatus::Queued, serde_json::json!({"reason": reason}))
}

/// The output and error an outcome stores.
pub(super) fn outcome_columns(outcome: &RunOutcome) -> (Option<String>, Option<&str>) {
    match outcome {
        RunOutcome::Completed { output } => (Some(output.to_string()), None),
        RunOutcome::Failed { error, output } => {
            (output.as_ref().map(Value::to_string), Some(error.as_str()))
        }
    }
}

/// The ids once each, in the order given.
pub(super) fn unique_ids(ids: &[RunId]) -> Vec<&RunId> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().filter(|id| seen.insert(*id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_know_the_end() {
        for status in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Stopped,
        ] {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("awaiting"), None);
        assert!(!RunStatus::Queued.is_terminal());
        assert!(!RunStatus::Running.is_terminal());
        assert!(RunStatus::Stopped.is_terminal());
    }

    #[test]
    fn event_data_always_says_the_status() {
        assert_eq!(
            event_data(RunStatus::Running, serde_json::json!({"node_id": "n"})),
            r#"{"node_id":"n","workflow_status":"running"}"#
        );
        assert_eq!(
            event_data(
                RunStatus::Running,
                serde_json::json!({"workflow_status": "x"})
            ),
            r#"{"workflow_status":"x"}"#
        );
        assert_eq!(
            event_data(RunStatus::Queued, serde_json::json!(3)),
            r#"{"value":3,"workflow_status":"queued"}"#
        );
    }

    #[test]
    fn search_queries_are_quoted_words() {
        assert_eq!(
            fts5_query("hello world").as_deref(),
            Some("\"hello\" \"world\"")
        );
        assert_eq!(
            fts5_query("a\" OR NEAR(b* -c) ^d:e").as_deref(),
            Some("\"a\" \"OR\" \"NEAR\" \"b\" \"c\" \"d\" \"e\"")
        );
        assert_eq!(fts5_query(" \"\" *() "), None);
        assert_eq!(search_words("Café, OK"), vec!["Café", "OK"]);
    }
}
