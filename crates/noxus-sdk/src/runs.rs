//! Workflow runs: start one (`client.workflows().run(id, input)`), follow
//! it to its end ([`Run::wait`], [`Run::stream`]), and read, list, stop and
//! delete runs (`client.runs()`), as the official client does.
//!
//! Following a run reads its server-sent events (`GET /v1/runs/{id}/events`).
//! A connection that drops is opened again after the last event received
//! (`etag`), so no event is lost or repeated; when the stream cannot be
//! used at all (an older server without the route, a proxy that refuses
//! it, connections that keep dropping without bringing anything),
//! [`Run::wait`] reads the run again and again instead, waiting longer
//! between reads, as the official client falls back to polling.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::pin;
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt as _};
use noxus_api::Page;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::client::{backoff, clip, connection_message, Client};
use crate::config::ConfigError;
use crate::error::{ApiError, Error, ErrorCode, Result};
use crate::resources::segment;
use crate::sse::{SseEvent, SseParser};

/// The largest server-sent event (or line) a stream accepts: the server
/// bounds a run's values to 16 MiB, plus room for the event around one.
/// A larger event fails the stream instead of growing memory.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024 + 64 * 1024;
/// A stream on which nothing (not even the server's 15-second keep-alive
/// comment) arrives for this long is taken as dropped and opened again.
const STREAM_IDLE: Duration = Duration::from_secs(60);
/// One connection of a stream lasts at most this long; the next one
/// resumes after the last event, so a long run is followed all the same.
const STREAM_LIFETIME: Duration = Duration::from_secs(3600);
/// Connections in a row that end without bringing a new event before the
/// stream is given up (and [`Run::wait`] polls instead).
const MAX_FRUITLESS_CONNECTIONS: u32 = 4;
/// Polling: the first wait between two reads of the run, doubled after
/// each read up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(250);
/// Polling: the longest wait between two reads (the official client's
/// fixed interval).
const POLL_MAX: Duration = Duration::from_secs(5);
/// `POST …/runs/sync` waits up to 60 s on the server: its answer may take
/// that long, whatever the client's timeout.
const SYNC_WAIT: Duration = Duration::from_secs(75);

/// Where a run is. Statuses this version does not know arrive as
/// [`RunStatus::Other`] rather than failing the whole answer.
///
/// ```
/// use noxus_sdk::RunStatus;
///
/// assert_eq!(RunStatus::parse("completed"), RunStatus::Completed);
/// assert!(RunStatus::Stopped.is_terminal());
/// assert_eq!(RunStatus::parse("paused").as_str(), "paused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// Ended with an output.
    Completed,
    /// Ended with an error (`Run::error` says why).
    Failed,
    /// Stopped before it ended.
    Stopped,
    /// The hosted platform's: waiting for a person. Not an end, but
    /// nothing happens without the person, so [`Run::wait`] returns on it
    /// as the official client does.
    AwaitingHumanFeedback,
    /// A status this version of the SDK does not know.
    Other(String),
}

impl RunStatus {
    /// From the server's text.
    pub fn parse(text: &str) -> Self {
        match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "stopped" => Self::Stopped,
            "awaiting_human_feedback" => Self::AwaitingHumanFeedback,
            other => Self::Other(other.to_owned()),
        }
    }

    /// As the server writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::AwaitingHumanFeedback => "awaiting_human_feedback",
            Self::Other(text) => text,
        }
    }

    /// Whether the run has ended: completed, failed or stopped.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Stopped)
    }

    /// Whether waiting is over: ended, or waiting for a person.
    fn is_settled(&self) -> bool {
        self.is_terminal() || *self == Self::AwaitingHumanFeedback
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RunStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Self::parse(&text))
    }
}

/// 0 to 100, from any JSON number (or null): the hosted platform may write
/// `50.0`.
fn progress<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<u8, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value
        .as_ref()
        .and_then(Value::as_f64)
        .map_or(0, |p| p.clamp(0.0, 100.0) as u8))
}

/// A run of a workflow, as the server last described it. Runs returned
/// by the client can [`wait`](Run::wait) for their end, [`stream`](Run::stream)
/// their events, [`stop`](Run::stop) and more; their data is in the fields.
///
/// ```no_run
/// # async fn demo(client: noxus_sdk::Client, workflow_id: &str) -> noxus_sdk::Result<()> {
/// let run = client
///     .workflows()
///     .run(workflow_id, serde_json::json!({"Name": "Ada"}))
///     .await?;
/// let done = run.wait().await?; // Err(Error::RunFailed(..)) if it failed
/// println!("{}", done.output.unwrap_or_default());
/// # Ok(()) }
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Run {
    /// Run id.
    pub id: String,
    /// Runs started together share it (the run's own id when started alone).
    #[serde(default)]
    pub group_id: String,
    /// The workflow run.
    pub workflow_id: String,
    /// The input it was started with.
    #[serde(default)]
    pub input: Value,
    /// The ids of the definition's nodes.
    #[serde(default)]
    pub node_ids: Option<Vec<String>>,
    /// Where it is.
    pub status: RunStatus,
    /// 0 to 100.
    #[serde(default, deserialize_with = "progress")]
    pub progress: u8,
    /// The server's notes on its progress (the last node finished, ...).
    #[serde(default)]
    pub progress_details: Option<Value>,
    /// Why it failed, as the server's sentence (`progress_details.error`
    /// when the server only gives that).
    #[serde(default)]
    pub error: Option<String>,
    /// When it was queued (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// When it ended.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Once completed: `{"{output_node_id}::output": {"text": …}}`.
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(skip)]
    client: Option<Client>,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("id", &self.id)
            .field("group_id", &self.group_id)
            .field("workflow_id", &self.workflow_id)
            .field("input", &self.input)
            .field("node_ids", &self.node_ids)
            .field("status", &self.status)
            .field("progress", &self.progress)
            .field("progress_details", &self.progress_details)
            .field("error", &self.error)
            .field("created_at", &self.created_at)
            .field("finished_at", &self.finished_at)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl Run {
    /// Gives a run read from the server the client to act with.
    pub(crate) fn bind(mut self, client: &Client) -> Self {
        if self.error.is_none() {
            self.error = self
                .progress_details
                .as_ref()
                .and_then(|d| d.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        self.client = Some(client.clone());
        self
    }

    fn client(&self) -> Result<&Client> {
        self.client
            .as_ref()
            .ok_or(Error::Config(ConfigError::RunWithoutClient))
    }

    fn path(&self) -> String {
        format!(
            "/v1/workflows/{}/runs/{}",
            segment(&self.workflow_id),
            segment(&self.id)
        )
    }

    /// The run as it is now (`GET /v1/workflows/{workflow_id}/runs/{id}`).
    pub async fn refresh(&self) -> Result<Run> {
        let client = self.client()?;
        let run: Run = client.get(&self.path(), &[]).await?;
        Ok(run.bind(client))
    }

    /// Waits for the run to end and returns it as it ended, with its
    /// `output`. A run that failed is `Err(Error::RunFailed(run))` (its
    /// `error` says why), one that was stopped `Err(Error::RunStopped(run))`.
    ///
    /// Follows the run's event stream, opening it again after the last
    /// event received when a connection drops; if the stream cannot be
    /// used, reads the run every 250 ms, then less often, up to every 5 s.
    /// Waits as long as the run takes: see [`Run::wait_timeout`].
    pub async fn wait(&self) -> Result<Run> {
        let client = self.client()?;
        if self.status.is_settled() {
            return outcome(self.clone());
        }
        if let Err(err) = follow_to_end(client, &self.id).await {
            // A refused key is refused by polling as well.
            if matches!(err, Error::Unauthorized(_) | Error::Forbidden(_)) {
                return Err(err);
            }
            tracing::debug!(run_id = %self.id, error = %err, "the run's event stream cannot be followed; polling the run instead");
        }
        // After the terminal event, one read gets the output; after a
        // failed stream, polling finds the end.
        outcome(self.poll().await?)
    }

    /// [`Run::wait`], giving up after `timeout` with
    /// `Err(Error::WaitTimeout { .. })`; the run itself goes on.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<Run> {
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(result) => result,
            Err(_) => Err(Error::WaitTimeout {
                run_id: self.id.clone(),
                timeout,
            }),
        }
    }

    /// Reads the run until waiting is over, waiting longer each time.
    async fn poll(&self) -> Result<Run> {
        let mut interval = POLL_FIRST;
        loop {
            let run = self.refresh().await?;
            if run.status.is_settled() {
                return Ok(run);
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(POLL_MAX);
        }
    }

    /// The run's events, from the first, until the terminal one (`completed`,
    /// `failed` or `stopped`): see [`Runs::events`].
    ///
    /// ```no_run
    /// use futures_util::TryStreamExt as _;
    /// use noxus_sdk::RunEventKind;
    ///
    /// # async fn demo(run: noxus_sdk::Run) -> noxus_sdk::Result<()> {
    /// let mut events = std::pin::pin!(run.stream());
    /// while let Some(event) = events.try_next().await? {
    ///     match event.kind {
    ///         RunEventKind::NodeStarted { node_id, .. } => println!("▸ {node_id}"),
    ///         RunEventKind::Progress { progress, .. } => println!("{progress}%"),
    ///         other => println!("{other:?}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&self) -> impl Stream<Item = Result<RunEvent>> + Send + 'static {
        match self.client() {
            Ok(client) => follow(client.clone(), &self.id, None).left_stream(),
            Err(err) => stream::once(std::future::ready(Err(err))).right_stream(),
        }
    }

    /// Stops the run (between two nodes); returns it as it is after the stop.
    pub async fn stop(&self) -> Result<Run> {
        Runs::new(self.client()?).stop(&self.id).await
    }

    /// Deletes the run (a finished one; one in flight is reported under `errors`).
    pub async fn delete(&self) -> Result<RunDeletion> {
        Runs::new(self.client()?).delete(&self.id).await
    }

    /// Every node's recorded input and output: `{"run": …, "nodes": {node_id: {"input", "output"}}}`.
    pub async fn data(&self) -> Result<Value> {
        Runs::new(self.client()?).data(&self.id).await
    }

    /// One node's recorded input and output.
    pub async fn node_io(&self, node_id: &str) -> Result<NodeIo> {
        Runs::new(self.client()?).node_io(&self.id, node_id).await
    }
}

/// `Ok` for a run that completed (or waits for a person), the matching
/// error for one that failed or was stopped.
fn outcome(run: Run) -> Result<Run> {
    match run.status {
        RunStatus::Failed => Err(Error::RunFailed(Box::new(run))),
        RunStatus::Stopped => Err(Error::RunStopped(Box::new(run))),
        _ => Ok(run),
    }
}

/// Reads the run's events until one says waiting is over.
async fn follow_to_end(client: &Client, run_id: &str) -> Result<()> {
    let mut events = pin!(follow(client.clone(), run_id, None));
    while let Some(event) = events.next().await {
        let event = event?;
        if event.is_terminal() || event.status.as_ref().is_some_and(RunStatus::is_settled) {
            return Ok(());
        }
    }
    // `follow` ends only after a terminal event or an error.
    Err(Error::EventStream {
        url: format!("/v1/runs/{run_id}/events"),
        message: "the stream ended before the run".to_owned(),
    })
}

/// How to start a run: the input, and optionally a saved version of the
/// workflow and a group.
///
/// ```
/// use noxus_sdk::StartRun;
///
/// let start = StartRun::new(serde_json::json!({"Name": "Ada"})).group("nightly");
/// # let _ = start;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StartRun {
    /// `{"{input_node_id}::input": value}`, or keyed by the input node's label.
    pub input: Value,
    /// Run this saved version's definition instead of the workflow's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_version_id: Option<String>,
    /// Groups runs started together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
}

impl StartRun {
    /// A run with this input.
    pub fn new(input: Value) -> Self {
        Self {
            input,
            workflow_version_id: None,
            group_id: None,
        }
    }

    /// Runs a saved version of the workflow.
    pub fn version(mut self, workflow_version_id: impl Into<String>) -> Self {
        self.workflow_version_id = Some(workflow_version_id.into());
        self
    }

    /// Puts the run in a group (1 to 100 characters).
    pub fn group(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }
}

/// What a deletion did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunDeletion {
    /// Runs deleted.
    pub succeeded: u64,
    /// Runs selected but not deleted (see `errors`).
    pub failed: u64,
    /// Why a run was not deleted, by run id (e.g. it is still running).
    #[serde(default)]
    pub errors: HashMap<String, String>,
    /// Runs selected.
    pub matched: u64,
}

/// One node's input and output in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeIo {
    /// The node.
    pub node_id: String,
    /// The iteration (from 1).
    #[serde(default)]
    pub iteration: u64,
    /// What it took: `{connector: value}`.
    #[serde(default)]
    pub input: Value,
    /// What it gave: `{"output": value}`.
    #[serde(default)]
    pub output: Value,
}

/// What happened in a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunEventKind {
    /// The run was created.
    Queued,
    /// A worker took it (again, after a worker was lost).
    Started,
    /// A node started: the `index`-th (from 0) of `total`.
    NodeStarted {
        /// The node.
        node_id: String,
        /// Its place in the order the nodes run, from 0.
        index: Option<u64>,
        /// How many nodes run.
        total: Option<u64>,
    },
    /// A node finished.
    NodeFinished {
        /// The node.
        node_id: String,
    },
    /// The run's progress changed, usually because a node finished.
    Progress {
        /// 0 to 100.
        progress: u8,
        /// The node that finished, when the server says.
        node_id: Option<String>,
    },
    /// The run completed (terminal).
    Completed,
    /// The run failed (terminal).
    Failed {
        /// Why, as the server's sentence.
        error: Option<String>,
    },
    /// The run was stopped (terminal).
    Stopped,
    /// An event type this version of the SDK does not know (its name).
    Other(String),
}

/// One event of a run's event stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunEvent {
    /// Its number in the run's stream (the `etag` to resume after it).
    pub id: Option<u64>,
    /// What happened.
    pub kind: RunEventKind,
    /// The run's status after it (`workflow_status`).
    pub status: Option<RunStatus>,
    /// The event's data as sent.
    pub data: Value,
}

impl RunEvent {
    /// Whether this is the run's last event: it completed, failed or was stopped.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.kind,
            RunEventKind::Completed | RunEventKind::Failed { .. } | RunEventKind::Stopped
        ) || self.status.as_ref().is_some_and(RunStatus::is_terminal)
    }

    fn from_wire(kind: &str, data: Value, id: Option<u64>) -> Self {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let number = |key: &str| data.get(key).and_then(Value::as_u64);
        let node_id = || text(data.get("node_id")).unwrap_or_default();
        let kind = match kind {
            "queued" => RunEventKind::Queued,
            "started" => RunEventKind::Started,
            "node_started" => RunEventKind::NodeStarted {
                node_id: node_id(),
                index: number("index"),
                total: number("total"),
            },
            "node_finished" => RunEventKind::NodeFinished { node_id: node_id() },
            "progress" => RunEventKind::Progress {
                progress: data
                    .get("progress")
                    .and_then(Value::as_f64)
                    .map_or(0, |p| p.clamp(0.0, 100.0) as u8),
                node_id: text(
                    data.get("progress_details")
                        .and_then(|d| d.get("node_id"))
                        .or_else(|| data.get("node_id")),
                ),
            },
            "completed" => RunEventKind::Completed,
            "failed" => RunEventKind::Failed {
                error: text(data.get("error")),
            },
            "stopped" => RunEventKind::Stopped,
            other => RunEventKind::Other(other.to_owned()),
        };
        let status = data
            .get("workflow_status")
            .and_then(Value::as_str)
            .map(RunStatus::parse);
        Self {
            id,
            kind,
            status,
            data,
        }
    }
}

/// `/v1/runs/...` and the runs of a workflow.
#[derive(Debug, Clone)]
pub struct Runs {
    client: Client,
}

#[derive(Deserialize)]
struct SearchAnswer {
    items: Vec<Run>,
}

impl Runs {
    pub(crate) fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
        }
    }

    /// One page of a workflow's runs (`size` 1 to 100), newest first.
    pub async fn list(&self, workflow_id: &str, page: u64, size: u64) -> Result<Page<Run>> {
        let mut runs: Page<Run> = self
            .client
            .get(
                &format!("/v1/workflows/{}/runs", segment(workflow_id)),
                &[("page", page.to_string()), ("page_size", size.to_string())],
            )
            .await?;
        runs.items = runs
            .items
            .into_iter()
            .map(|run| run.bind(&self.client))
            .collect();
        Ok(runs)
    }

    /// One run of a workflow.
    pub async fn get(&self, workflow_id: &str, run_id: &str) -> Result<Run> {
        let run: Run = self
            .client
            .get(
                &format!(
                    "/v1/workflows/{}/runs/{}",
                    segment(workflow_id),
                    segment(run_id)
                ),
                &[],
            )
            .await?;
        Ok(run.bind(&self.client))
    }

    /// Stops a queued or running run (it stops between two nodes); a run
    /// that already ended is returned as it is.
    pub async fn stop(&self, run_id: &str) -> Result<Run> {
        let run: Run = self
            .client
            .post(&format!("/v1/runs/{}/stop", segment(run_id)), &())
            .await?;
        Ok(run.bind(&self.client))
    }

    /// Deletes a finished run with its recorded data; a run still queued
    /// or running is reported under `errors`, not deleted.
    pub async fn delete(&self, run_id: &str) -> Result<RunDeletion> {
        self.client
            .delete(&format!("/v1/runs/{}", segment(run_id)))
            .await
    }

    /// Every node's recorded input and output: `{"run": …, "nodes": {node_id: {"input", "output"}}}`.
    pub async fn data(&self, run_id: &str) -> Result<Value> {
        self.client
            .get(&format!("/v1/runs/{}/data", segment(run_id)), &[])
            .await
    }

    /// One node's recorded input and output (404 when it has not run).
    pub async fn node_io(&self, run_id: &str, node_id: &str) -> Result<NodeIo> {
        self.client
            .get(
                &format!("/v1/runs/{}/io/{}", segment(run_id), segment(node_id)),
                &[("it", "0".to_owned())],
            )
            .await
    }

    /// Runs of the workspace whose input or output holds every word of
    /// `query`, newest first (`limit` 1 to 100, `offset` at most 10,000).
    pub async fn search(&self, query: &str, limit: u32, offset: u32) -> Result<Vec<Run>> {
        let answer: SearchAnswer = self
            .client
            .post(
                "/v1/runs/search",
                &serde_json::json!({"query": query, "limit": limit, "offset": offset}),
            )
            .await?;
        Ok(answer
            .items
            .into_iter()
            .map(|run| run.bind(&self.client))
            .collect())
    }

    /// A run's events as a stream, from the first (or after event `after`)
    /// until the terminal one (`completed`, `failed` or `stopped`), in
    /// order. A dropped connection is opened again after the last event
    /// received, so no event is lost or repeated; the stream fails
    /// (`Err`, then ends) when the route is refused (404, 405, ...), when
    /// 4 connections in a row bring no new event (waiting 0.5 s, 1 s, 2 s
    /// between them), when an event is larger than [`MAX_EVENT_BYTES`], or
    /// with the key's error (`Error::Unauthorized`) when the server ends it
    /// because the key was revoked.
    ///
    /// The stream owns what it needs: it can be moved into a task.
    pub fn events(
        &self,
        run_id: &str,
        after: Option<u64>,
    ) -> impl Stream<Item = Result<RunEvent>> + Send + 'static {
        follow(self.client.clone(), run_id, after)
    }

    /// Starts a run: see [`crate::Workflows::run_with`].
    pub(crate) async fn start(&self, workflow_id: &str, start: &StartRun) -> Result<Run> {
        let run: Run = self
            .client
            .post(
                &format!("/v1/workflows/{}/runs", segment(workflow_id)),
                start,
            )
            .await?;
        Ok(run.bind(&self.client))
    }

    /// `POST /v1/workflows/{id}/runs/sync`, as a run or its output only.
    pub(crate) async fn start_and_wait<T: serde::de::DeserializeOwned>(
        &self,
        workflow_id: &str,
        start: &StartRun,
        output_only: bool,
    ) -> Result<T> {
        self.client
            .send_waiting(
                reqwest::Method::POST,
                &format!("/v1/workflows/{}/runs/sync", segment(workflow_id)),
                &[("output_only", output_only.to_string())],
                Some(start),
                SYNC_WAIT,
            )
            .await
    }

    pub(crate) fn bind(&self, run: Run) -> Run {
        run.bind(&self.client)
    }
}

/// A run's events, following the stream across dropped connections.
fn follow(
    client: Client,
    run_id: &str,
    after: Option<u64>,
) -> impl Stream<Item = Result<RunEvent>> + Send + 'static {
    let follower = Follower {
        client,
        path: format!("/v1/runs/{}/events", segment(run_id)),
        last_id: after,
        connection: None,
        pending: VecDeque::new(),
        fruitless: 0,
        done: false,
    };
    stream::unfold(follower, |mut follower| async move {
        let item = follower.next().await?;
        Some((item, follower))
    })
}

struct Follower {
    client: Client,
    path: String,
    /// The last event received: where a new connection resumes.
    last_id: Option<u64>,
    connection: Option<Connection>,
    pending: VecDeque<Result<RunEvent>>,
    /// Connections in a row that ended without a new event.
    fruitless: u32,
    done: bool,
}

struct Connection {
    url: String,
    response: reqwest::Response,
    parser: SseParser,
    /// It brought at least one new event.
    fruitful: bool,
}

/// What one read of a connection gave.
enum Read {
    Events(Vec<SseEvent>),
    Ended(String),
}

impl Follower {
    async fn next(&mut self) -> Option<Result<RunEvent>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let Some(connection) = self.connection.as_mut() else {
                if let Err(err) = self.connect().await {
                    self.fail(err);
                }
                continue;
            };
            let url = connection.url.clone();
            let read = match tokio::time::timeout(STREAM_IDLE, connection.response.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    let mut events = Vec::new();
                    match connection.parser.feed(&bytes, &mut events) {
                        Ok(()) => Read::Events(events),
                        Err(too_large) => {
                            self.fail(Error::EventStream {
                                url,
                                message: format!("an event is larger than {} bytes", too_large.max),
                            });
                            continue;
                        }
                    }
                }
                Ok(Ok(None)) => Read::Ended("the server closed the stream".to_owned()),
                Ok(Err(err)) => Read::Ended(connection_message(&err)),
                Err(_) => Read::Ended(format!("nothing arrived for {} s", STREAM_IDLE.as_secs())),
            };
            match read {
                Read::Events(events) => {
                    for event in events {
                        self.accept(event, &url);
                        if self.done {
                            break;
                        }
                    }
                }
                Read::Ended(why) => self.dropped(why, url),
            }
        }
    }

    async fn connect(&mut self) -> Result<()> {
        if self.fruitless > 0 {
            tokio::time::sleep(backoff(self.fruitless - 1)).await;
        }
        let query: Vec<(&str, String)> = self
            .last_id
            .map(|id| ("etag", id.to_string()))
            .into_iter()
            .collect();
        let (url, response) = self
            .client
            .open_event_stream(&self.path, &query, STREAM_LIFETIME)
            .await?;
        self.connection = Some(Connection {
            url,
            response,
            parser: SseParser::new(MAX_EVENT_BYTES),
            fruitful: false,
        });
        Ok(())
    }

    /// The connection ended before the run: open another after the last
    /// event, unless connections keep ending without bringing anything.
    fn dropped(&mut self, why: String, url: String) {
        let fruitful = self.connection.take().is_some_and(|c| c.fruitful);
        self.fruitless = if fruitful { 0 } else { self.fruitless + 1 };
        tracing::debug!(
            url,
            why,
            fruitless = self.fruitless,
            "a run's event stream dropped before the run ended"
        );
        if self.fruitless >= MAX_FRUITLESS_CONNECTIONS {
            self.fail(Error::EventStream {
                url,
                message: format!(
                    "{why}, and {} connections in a row brought no new event",
                    self.fruitless
                ),
            });
        }
    }

    fn fail(&mut self, err: Error) {
        self.pending.push_back(Err(err));
        self.done = true;
        self.connection = None;
    }

    fn accept(&mut self, event: SseEvent, url: &str) {
        // The official client reads `message` events only.
        if event.event != "message" {
            return;
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "type", default)]
            kind: String,
            #[serde(default)]
            data: Value,
            #[serde(rename = "redisId", default)]
            redis_id: Option<Value>,
        }
        let wire: Wire = match serde_json::from_str(&event.data) {
            Ok(wire) => wire,
            Err(source) => {
                self.fail(Error::Decode {
                    url: url.to_owned(),
                    status: 200,
                    body: clip(&event.data, 4096),
                    source,
                });
                return;
            }
        };
        if wire.kind == "error" {
            self.fail(stream_refusal(&wire.data, url));
            return;
        }
        let id = event
            .id
            .as_deref()
            .and_then(|id| id.trim().parse::<u64>().ok())
            .or_else(|| match &wire.redis_id {
                Some(Value::String(id)) => id.trim().parse().ok(),
                Some(Value::Number(id)) => id.as_u64(),
                _ => None,
            });
        if let Some(id) = id {
            // Already received (a server that resends from before `etag`).
            if self.last_id.is_some_and(|last| id <= last) {
                return;
            }
            self.last_id = Some(id);
        }
        if let Some(connection) = self.connection.as_mut() {
            connection.fruitful = true;
        }
        self.fruitless = 0;
        let event = RunEvent::from_wire(&wire.kind, wire.data, id);
        if event.is_terminal() {
            // Nothing follows the end: close the connection now.
            self.done = true;
            self.connection = None;
        }
        self.pending.push_back(Ok(event));
    }
}

/// The `error` event a server ends a stream with (the key was revoked,
/// expired, or lost the permission), as the error a request would get.
fn stream_refusal(data: &Value, url: &str) -> Error {
    let text = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or_default();
    let code = ErrorCode::parse(&clip(text("code"), 200));
    let detail = match text("detail") {
        "" => "the server ended the event stream".to_owned(),
        detail => clip(detail, 1000),
    };
    let status = match code {
        ErrorCode::MissingApiKey
        | ErrorCode::InvalidApiKey
        | ErrorCode::RevokedApiKey
        | ErrorCode::ExpiredApiKey => 401,
        ErrorCode::InsufficientPermissions | ErrorCode::WrongWorkspace => 403,
        ErrorCode::NotFound => 404,
        _ => {
            return Error::EventStream {
                url: url.to_owned(),
                message: format!("the server ended it: {detail} ({code})"),
            }
        }
    };
    let required_permission = Some(text("required_permission"))
        .filter(|p| !p.is_empty())
        .map(|p| clip(p, 200));
    Error::from_status(
        ApiError {
            status,
            code: Some(code),
            detail,
            request_id: None,
            required_permission,
            field: None,
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_run_is_read_whatever_the_server_adds_or_leaves_out() {
        let run: Run = serde_json::from_value(serde_json::json!({
            "id": "r", "workflow_id": "w", "status": "paused", "progress": 42.0,
            "something_new": [1, 2]
        }))
        .unwrap();
        assert_eq!(run.status, RunStatus::Other("paused".to_owned()));
        assert_eq!(run.progress, 42);
        assert!(run.output.is_none());
        assert_eq!(
            serde_json::to_value(&run).unwrap()["status"],
            serde_json::json!("paused")
        );
    }

    #[test]
    fn events_are_typed_and_know_the_end() {
        let started = RunEvent::from_wire(
            "node_started",
            serde_json::json!({"node_id": "n1", "index": 0, "total": 3, "workflow_status": "running"}),
            Some(3),
        );
        assert_eq!(
            started.kind,
            RunEventKind::NodeStarted {
                node_id: "n1".to_owned(),
                index: Some(0),
                total: Some(3)
            }
        );
        assert!(!started.is_terminal());
        let progress = RunEvent::from_wire(
            "progress",
            serde_json::json!({"progress": 33, "progress_details": {"node_id": "n1"}}),
            Some(4),
        );
        assert_eq!(
            progress.kind,
            RunEventKind::Progress {
                progress: 33,
                node_id: Some("n1".to_owned())
            }
        );
        let failed = RunEvent::from_wire(
            "failed",
            serde_json::json!({"error": "no input", "workflow_status": "failed"}),
            Some(5),
        );
        assert!(failed.is_terminal());
        // An unknown event type that says the run ended ends it too.
        let unknown = RunEvent::from_wire(
            "finished",
            serde_json::json!({"workflow_status": "completed"}),
            None,
        );
        assert_eq!(unknown.kind, RunEventKind::Other("finished".to_owned()));
        assert!(unknown.is_terminal());
    }

    #[test]
    fn a_revoked_keys_error_event_is_the_keys_error() {
        let err = stream_refusal(
            &serde_json::json!({"code": "revoked_api_key", "detail": "This API key was revoked", "workflow_status": "failed"}),
            "http://x/v1/runs/r/events",
        );
        assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
        assert_eq!(err.code(), Some(&ErrorCode::RevokedApiKey));
        let err = stream_refusal(&serde_json::json!({"code": "odd"}), "u");
        assert!(matches!(err, Error::EventStream { .. }), "{err:?}");
    }
}
