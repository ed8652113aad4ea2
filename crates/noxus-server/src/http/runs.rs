//! Workflow runs, as the official client calls them: start (queued for
//! the workers, [`crate::runs::service`]), read, list, wait (`/sync`),
//! stream the events (server-sent events, resumable with `etag`), stop,
//! delete, per-node input and output, and full-text search. Runs are
//! objects of the key's workspace: another workspace's run is a 404.
//!
//! Starting, stopping and deleting need `workflows:run`; reading needs
//! `workflows:read`. An event stream ends with an `error` event as soon as
//! the key that opened it is revoked, expires, or loses the permission.
//!
//! Streams and `/sync` waits do not poll: the store's events wake them
//! ([`crate::runs::streams`]): their run's new events, from any replica,
//! and any change of their key, its owner or its workspace. A slow safety
//! poll ([`SAFETY_POLL`]) stays, so that a missed wake-up delays, never
//! loses; it is fast ([`DEAF_POLL`]) only while the store cannot hear
//! other replicas ([`crate::store::EventBus::is_deaf`]). A key's expiry is
//! a timer at `expires_at`. One key, and one workspace, may hold a bounded
//! number of streams open at once ([`crate::runs::streams::StreamLimits`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use noxus_api::{ErrorBody, Page, Permission};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthContext;
use crate::domain::validation;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{int_query_params, ApiJson, ApiPath, IntParam, QueryPairs, PAGE};
use crate::http::workflows::workflow_id;
use crate::runs::streams::{Opener, Watch};
use crate::state::AppState;
use crate::store::{
    NewRun, RunEvent, RunId, RunRecord, RunStatus, VersionSlice, WorkflowId, WorkflowVersionId,
    WorkspaceId,
};
use crate::time_fmt::rfc3339;

/// The most runs a page, a search or a bulk deletion reads at once.
const MAX_RUNS_PER_REQUEST: u64 = 100;
/// How long `POST …/runs/sync` waits for the run to finish.
const SYNC_WAIT: Duration = Duration::from_secs(60);
/// How often a stream (and `/sync`) looks at its run and its key when
/// nothing woke it: the store's events wake it at once, so this only bounds
/// what a missed wake-up could delay.
pub const SAFETY_POLL: Duration = Duration::from_secs(2);
/// The same while the store cannot hear other replicas' changes (its
/// PostgreSQL listener lost its connection): then nothing wakes a stream
/// for what happens elsewhere.
pub const DEAF_POLL: Duration = Duration::from_millis(100);
/// The longest a key's expiry timer is set for at once (it is set again
/// when it fires early).
const MAX_EXPIRY_TIMER: Duration = Duration::from_secs(24 * 3600);
/// Events read from the store at once.
const EVENTS_PER_READ: u32 = 100;

/// `page_size` of the run list.
const PAGE_SIZE: IntParam = IntParam {
    name: "page_size",
    min: 1,
    max: MAX_RUNS_PER_REQUEST,
    description: "Page size (default 10)",
};
/// `size`, the same (wins over `page_size`).
const SIZE: IntParam = IntParam {
    name: "size",
    min: 1,
    max: MAX_RUNS_PER_REQUEST,
    description: "Page size, as `page_size` (wins over it)",
};

int_query_params!(
    /// Paging of `GET /v1/workflows/{id}/runs`.
    RunListQuery = [PAGE, PAGE_SIZE, SIZE]
);

/// `it` of `GET /v1/runs/{id}/io/{node_id}`: nodes run once here, so the
/// first iteration is all there is (the official client sends 0).
const IT: IntParam = IntParam {
    name: "it",
    min: 0,
    max: 1,
    description: "Iteration: 1, or 0 for the first",
};

int_query_params!(
    /// The iteration of `GET /v1/runs/{id}/io/{node_id}`.
    NodeIoQuery = [IT]
);

/// The run routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_run, list_runs))
        .routes(routes!(run_sync))
        .routes(routes!(get_run))
        .routes(routes!(get_run_singular))
        .routes(routes!(run_events))
        .routes(routes!(stop_run))
        .routes(routes!(delete_run))
        .routes(routes!(bulk_delete_runs))
        .routes(routes!(run_data))
        .routes(routes!(node_io))
        .routes(routes!(search_runs))
}

/// A run, as the official client reads it (`noxus_sdk.resources.runs.Run`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunBody {
    /// Run id.
    id: String,
    /// The run's group (its own id unless given).
    group_id: String,
    /// The workflow run.
    workflow_id: String,
    /// The input it was started with.
    input: Value,
    /// The definition's node ids.
    node_ids: Option<Vec<String>>,
    /// `queued`, `running`, `completed`, `failed` or `stopped`.
    status: String,
    /// 0 to 100.
    progress: i64,
    /// The last node finished, and why a failed run failed.
    progress_details: Option<Value>,
    /// Why the run failed, as a sentence (`null` otherwise).
    error: Option<String>,
    /// When it was queued.
    created_at: String,
    /// When it ended.
    finished_at: Option<String>,
    /// `{"{output_node_id}::output": {"text": …}}` once completed.
    output: Option<Value>,
    /// Where the finished run is posted (`GET /v1/runs/{id}/callback`
    /// says how that went).
    callback_url: Option<String>,
}

fn node_ids(definition: &Value) -> Option<Vec<String>> {
    let nodes = definition.get("nodes")?.as_array()?;
    Some(
        nodes
            .iter()
            .filter_map(|n| n.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect(),
    )
}

fn run_body(run: &RunRecord) -> RunBody {
    let mut details = run.progress_details.clone();
    if let Some(error) = &run.error {
        let mut map = match details.take() {
            Some(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        map.insert("error".to_owned(), Value::String(error.clone()));
        details = Some(Value::Object(map));
    }
    RunBody {
        id: run.id.to_string(),
        group_id: run.group_id.clone(),
        workflow_id: run.workflow_id.to_string(),
        input: run.input.clone(),
        node_ids: node_ids(&run.definition),
        status: run.status.as_str().to_owned(),
        progress: run.progress,
        progress_details: details,
        error: run.error.clone(),
        created_at: rfc3339(run.created_at),
        finished_at: run.finished_at.map(rfc3339),
        output: run.output.clone(),
        callback_url: run.callback_url.clone(),
    }
}

/// What a run's callback posts: the run as `GET` answers it.
pub(crate) fn callback_payload(run: &RunRecord) -> RunBody {
    run_body(run)
}

/// Ids are UUIDs; anything else cannot exist: 404 without a lookup.
fn run_id(raw: &str) -> Result<RunId> {
    validation::uuid(raw)
        .map(|u| RunId::from(u.to_string()))
        .ok_or_else(|| ApiError::not_found("run"))
}

pub(crate) async fn find_run(
    state: &AppState,
    workspace: &WorkspaceId,
    raw: &str,
) -> Result<RunRecord> {
    let id = run_id(raw)?;
    state
        .store()
        .run(workspace, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))
}

/// What `POST /v1/workflows/{id}/runs` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The run's input: `{"{input_node_id}::input": value}` (or keyed by
    /// the input node's label).
    #[serde(default)]
    input: Option<serde_json::Map<String, Value>>,
    /// Run this saved version's definition instead of the workflow's.
    #[serde(default)]
    workflow_version_id: Option<String>,
    /// Where to post the run once it ends (completed, failed or stopped),
    /// signed with the workspace's callback secret: an http or https URL to
    /// a public address (a literal private, loopback or link-local address
    /// is refused with 422; a host name is resolved, and checked, when the
    /// callback is sent). `null` or empty: no callback.
    #[serde(default)]
    #[schema(max_length = 2048)]
    callback_url: Option<String>,
    /// Groups runs (defaults to the run's own id).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    group_id: Option<String>,
}

async fn start(
    state: &AppState,
    auth: &AuthContext,
    raw_id: &str,
    body: StartRun,
) -> Result<RunRecord> {
    auth.require(Permission::WorkflowsRun)?;
    let id = workflow_id(raw_id)?;
    let input = Value::Object(body.input.unwrap_or_default());
    let callback_url = crate::http::callbacks::accept_url(state, body.callback_url.as_deref())?;
    if let Some(group) = &body.group_id {
        if group.is_empty() || group.chars().count() > 100 {
            return Err(ApiError::validation(
                "group_id",
                "group_id must be 1 to 100 characters",
            ));
        }
    }
    let workflow = state
        .store()
        .workflow(auth.workspace_id(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let (definition, version_id) = match body.workflow_version_id.as_deref() {
        None => (
            serde_json::from_str::<Value>(workflow.definition.get())
                .map_err(|e| ApiError::Internal(e.into()))?,
            None,
        ),
        Some(raw) => {
            let wanted = validation::uuid(raw)
                .map(|u| WorkflowVersionId::from(u.to_string()))
                .ok_or_else(|| ApiError::not_found("workflow version"))?;
            let (versions, _) = state
                .store()
                .list_workflow_versions(
                    auth.workspace_id(),
                    &id,
                    VersionSlice {
                        offset: 0,
                        limit: u64::from(u32::MAX),
                        definitions: true,
                    },
                )
                .await?;
            let version = versions
                .into_iter()
                .find(|v| v.id == wanted)
                .ok_or_else(|| ApiError::not_found("workflow version"))?;
            let definition = version
                .definition
                .as_ref()
                .map(|d| serde_json::from_str::<Value>(d.get()))
                .transpose()
                .map_err(|e| ApiError::Internal(e.into()))?
                .unwrap_or(Value::Null);
            (definition, Some(wanted))
        }
    };
    // A definition that cannot run is refused now, not queued to fail: the
    // stored workflow (or version) conflicts with running it.
    crate::runs::executor::Plan::compile(&definition, state.catalog()).map_err(|err| {
        ApiError::Conflict(format!(
            "This workflow cannot run: {}",
            crate::domain::sentence(&err.detail)
        ))
    })?;
    let record = state
        .store()
        .create_run(
            &auth.actor(),
            &NewRun {
                workspace_id: auth.workspace_id().clone(),
                workflow_id: id,
                workflow_version_id: version_id,
                definition,
                input,
                group_id: body.group_id,
                callback_url,
                started_by_user: auth.user_id().clone(),
                started_by_key: Some(auth.record().key.id.clone()),
            },
            &state.config().run_quotas,
        )
        .await?;
    state.runs().queued();
    state.runs().changed();
    Ok(record)
}

/// Starts a run of the workflow: answers at once with the queued run;
/// wait for it with its event stream or by reading it again. 409 when the
/// definition cannot run (a cycle, an unknown node type, an unconnected
/// input: the sentence names the node) or when the workspace has too many
/// runs queued or running.
#[utoipa::path(post, path = "/v1/workflows/{id}/runs", tag = "runs",
    params(("id" = Uuid, Path, description = "Workflow id")),
    request_body = StartRun,
    responses((status = 201, body = RunBody),
              (status = 403, description = "Needs `workflows:run` (`insufficient_permissions`)", body = ErrorBody),
              (status = 404, description = "No such workflow in this workspace", body = ErrorBody),
              (status = 409, description = "The definition cannot run, too many runs are queued or running in the workspace, or (with `callback_url`) too many callbacks are waiting (`conflict`)", body = ErrorBody)))]
async fn start_run(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<StartRun>,
) -> Result<(StatusCode, Json<RunBody>)> {
    let record = start(&state, &auth, &id, body).await?;
    Ok((StatusCode::CREATED, Json(run_body(&record))))
}

/// Starts a run and waits (up to 60 s) for it to end: the run, or with
/// `output_only=true` only its output. A run still going after 60 s is
/// answered as it stands (`queued` or `running`).
#[utoipa::path(post, path = "/v1/workflows/{id}/runs/sync", tag = "runs",
    params(("id" = Uuid, Path, description = "Workflow id"),
           ("output_only" = Option<bool>, Query, description = "Answer only the output")),
    request_body = StartRun,
    responses((status = 200, description = "The run (a `Run`), or with `output_only=true` its output", body = Object),
              (status = 403, description = "Needs `workflows:run` (`insufficient_permissions`)", body = ErrorBody),
              (status = 404, description = "No such workflow in this workspace", body = ErrorBody),
              (status = 409, description = "The definition cannot run, or too many runs are queued or running in the workspace (`conflict`)", body = ErrorBody)))]
async fn run_sync(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
    ApiJson(body): ApiJson<StartRun>,
) -> Result<Response> {
    let output_only = query.boolean("output_only")?.unwrap_or(false);
    let record = start(&state, &auth, &id, body).await?;
    let deadline = tokio::time::Instant::now() + SYNC_WAIT;
    // Woken by the run's changes; the first read catches one made before
    // the watch was registered.
    let watch = state.streams().watch_run(&record.id);
    let mut run = record;
    loop {
        run = state
            .store()
            .run(auth.workspace_id(), &run.id)
            .await?
            .ok_or_else(|| ApiError::not_found("run"))?;
        if run.status.is_terminal() || tokio::time::Instant::now() >= deadline {
            break;
        }
        let poll = if state.store().events().is_deaf() {
            DEAF_POLL
        } else {
            SAFETY_POLL
        };
        tokio::select! {
            () = watch.signal().woken() => {}
            () = tokio::time::sleep(poll) => {}
            () = tokio::time::sleep_until(deadline) => {}
            // The server stops: answered as it stands, as at the deadline.
            () = state.closing() => break,
        }
    }
    Ok(if output_only {
        Json(
            run.output
                .clone()
                .unwrap_or(Value::Object(serde_json::Map::new())),
        )
        .into_response()
    } else {
        Json(run_body(&run)).into_response()
    })
}

/// A page of the workflow's runs, newest first.
#[utoipa::path(get, path = "/v1/workflows/{id}/runs", tag = "runs",
    params(("id" = Uuid, Path, description = "Workflow id"), RunListQuery),
    responses((status = 200, body = Page<RunBody>),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody)))]
async fn list_runs(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> Result<Json<Page<RunBody>>> {
    auth.require(Permission::WorkflowsRead)?;
    let id = workflow_id(&id)?;
    let page = query.int(&PAGE)?.unwrap_or(1);
    let size = query.int(&SIZE)?.or(query.int(&PAGE_SIZE)?).unwrap_or(10);
    state
        .store()
        .workflow(auth.workspace_id(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    // One more than asked tells whether another page follows.
    let rows = state
        .store()
        .list_runs(auth.workspace_id(), &id, (page - 1) * size, size + 1)
        .await?;
    let more = rows.len() as u64 > size;
    let items: Vec<RunBody> = rows.iter().take(size as usize).map(run_body).collect();
    let total = (page - 1) * size + items.len() as u64 + u64::from(more);
    Ok(Json(Page {
        items,
        total,
        page,
        size,
        pages: total.div_ceil(size),
    }))
}

/// One run of the workflow.
#[utoipa::path(get, path = "/v1/workflows/{wid}/runs/{rid}", tag = "runs",
    params(("wid" = Uuid, Path, description = "Workflow id"), ("rid" = Uuid, Path, description = "Run id")),
    responses((status = 200, body = RunBody),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody),
              (status = 404, description = "No such run of this workflow in this workspace", body = ErrorBody)))]
async fn get_run(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath((wid, rid)): ApiPath<(String, String)>,
) -> Result<Json<RunBody>> {
    read_run(&state, &auth, &wid, &rid).await
}

/// One run of the workflow (the path the client-sdk before 0.5 reads).
#[utoipa::path(get, path = "/v1/workflows/{wid}/run/{rid}", tag = "runs",
    params(("wid" = Uuid, Path, description = "Workflow id"), ("rid" = Uuid, Path, description = "Run id")),
    responses((status = 200, body = RunBody),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody),
              (status = 404, description = "No such run of this workflow in this workspace", body = ErrorBody)))]
async fn get_run_singular(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath((wid, rid)): ApiPath<(String, String)>,
) -> Result<Json<RunBody>> {
    read_run(&state, &auth, &wid, &rid).await
}

async fn read_run(
    state: &AppState,
    auth: &AuthContext,
    wid: &str,
    rid: &str,
) -> Result<Json<RunBody>> {
    auth.require(Permission::WorkflowsRead)?;
    let wid = workflow_id(wid)?;
    let run = find_run(state, auth.workspace_id(), rid).await?;
    if run.workflow_id != wid {
        return Err(ApiError::not_found("run"));
    }
    Ok(Json(run_body(&run)))
}

/// Stops a queued or running run (it stops between two nodes); a run that
/// already ended is answered as it is.
#[utoipa::path(post, path = "/v1/runs/{id}/stop", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses((status = 200, body = RunBody),
              (status = 403, description = "Needs `workflows:run` (`insufficient_permissions`)", body = ErrorBody),
              (status = 404, description = "No such run in this workspace", body = ErrorBody)))]
async fn stop_run(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RunBody>> {
    auth.require(Permission::WorkflowsRun)?;
    let id = run_id(&id)?;
    let run = state
        .store()
        .stop_run(
            &auth.actor(),
            auth.workspace_id(),
            &id,
            OffsetDateTime::now_utc(),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    state.runs().changed();
    Ok(Json(run_body(&run)))
}

/// What a deletion did (the official client's `RunDeletion`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunDeletion {
    /// Runs deleted.
    succeeded: u64,
    /// Runs matched but not deleted (see `errors`).
    failed: u64,
    /// Why a run was not deleted, by run id.
    errors: HashMap<String, String>,
    /// Runs selected.
    matched: u64,
}

async fn delete_ids(
    state: &AppState,
    auth: &AuthContext,
    runs: Vec<RunRecord>,
    dry_run: bool,
) -> Result<RunDeletion> {
    let matched = runs.len() as u64;
    let mut errors = HashMap::new();
    let mut finished = Vec::new();
    for run in runs {
        if run.status.is_terminal() {
            finished.push(run.id);
        } else {
            errors.insert(
                run.id.to_string(),
                format!("the run is still {}; stop it first", run.status.as_str()),
            );
        }
    }
    let succeeded = if dry_run {
        finished.len() as u64
    } else {
        let (deleted, gone) = state
            .store()
            .delete_runs(&auth.actor(), auth.workspace_id(), &finished)
            .await?;
        for id in gone {
            errors.insert(id.to_string(), "the run was deleted meanwhile".to_owned());
        }
        deleted.len() as u64
    };
    Ok(RunDeletion {
        succeeded,
        failed: errors.len() as u64,
        errors,
        matched,
    })
}

/// Deletes a finished run with its node inputs and outputs and events. A
/// run still queued or running is reported under `errors`, not deleted.
#[utoipa::path(delete, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses((status = 200, body = RunDeletion),
              (status = 403, description = "Needs `workflows:run` (`insufficient_permissions`)", body = ErrorBody),
              (status = 404, description = "No such run in this workspace", body = ErrorBody)))]
async fn delete_run(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RunDeletion>> {
    auth.require(Permission::WorkflowsRun)?;
    let run = find_run(&state, auth.workspace_id(), &id).await?;
    Ok(Json(delete_ids(&state, &auth, vec![run], false).await?))
}

/// What `POST /v1/runs/bulk/delete` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDelete {
    /// Runs by id (at most 100).
    #[serde(default)]
    #[schema(max_items = 100)]
    run_ids: Option<Vec<String>>,
    /// Or the finished runs of one workflow, optionally created before `to_date`.
    #[serde(default)]
    filters: Option<BulkFilters>,
    /// Refuse (409) unless this many runs match.
    #[serde(default, deserialize_with = "noxus_api::whole_number::option_u64")]
    expected_count: Option<u64>,
    /// Count only.
    #[serde(default)]
    dry_run: bool,
}

/// Which runs a bulk deletion selects.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilters {
    /// Runs of this workflow (this server selects runs per workflow).
    workflow_id: String,
    /// Only runs created before this time (RFC 3339).
    #[serde(default)]
    #[schema(format = DateTime)]
    to_date: Option<String>,
}

/// Deletes finished runs by id, or the finished runs of a workflow
/// (optionally created before `to_date`); `dry_run` only counts, and
/// `expected_count` refuses (409) when the count changed since a preview.
#[utoipa::path(post, path = "/v1/runs/bulk/delete", tag = "runs",
    request_body = BulkDelete,
    responses((status = 200, body = RunDeletion),
              (status = 403, description = "Needs `workflows:run` (`insufficient_permissions`)", body = ErrorBody),
              (status = 409, description = "`expected_count` does not match (`conflict`)", body = ErrorBody)))]
async fn bulk_delete_runs(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiJson(body): ApiJson<BulkDelete>,
) -> Result<Json<RunDeletion>> {
    auth.require(Permission::WorkflowsRun)?;
    // Neither selects nothing; both select the listed runs the filters match.
    let mut runs = Vec::new();
    if let Some(ids) = &body.run_ids {
        if ids.len() as u64 > MAX_RUNS_PER_REQUEST {
            return Err(ApiError::validation(
                "run_ids",
                format!("run_ids holds at most {MAX_RUNS_PER_REQUEST} ids"),
            ));
        }
        for raw in ids {
            let Some(id) = validation::uuid(raw).map(|u| RunId::from(u.to_string())) else {
                continue;
            };
            if let Some(run) = state.store().run(auth.workspace_id(), &id).await? {
                runs.push(run);
            }
        }
    }
    if let Some(filters) = &body.filters {
        // A workflow id that cannot exist matches no run.
        let wid = validation::uuid(&filters.workflow_id)
            .map(|u| WorkflowId::from(u.to_string()))
            .unwrap_or_else(|| WorkflowId::from(String::new()));
        let before = filters
            .to_date
            .as_deref()
            .map(|d| {
                crate::time_fmt::parse_rfc3339(d).map_err(|_| {
                    ApiError::validation("filters.to_date", "to_date must be an RFC 3339 time")
                })
            })
            .transpose()?;
        let matches = |r: &RunRecord| {
            r.workflow_id == wid
                && r.status.is_terminal()
                && before.is_none_or(|b| r.created_at < b)
        };
        if body.run_ids.is_some() {
            runs.retain(|r| matches(r));
        } else {
            // The oldest ended runs that match, however many newer ones
            // there are; a caller deletes more by calling again.
            runs = state
                .store()
                .ended_runs(auth.workspace_id(), &wid, before, MAX_RUNS_PER_REQUEST)
                .await?;
        }
    }
    if let Some(expected) = body.expected_count {
        if expected != runs.len() as u64 {
            return Err(ApiError::Conflict(format!(
                "{} runs match now, not the {expected} expected; preview again",
                runs.len()
            )));
        }
    }
    Ok(Json(delete_ids(&state, &auth, runs, body.dry_run).await?))
}

/// Everything recorded of a run: the run, and each node's input and output.
#[utoipa::path(get, path = "/v1/runs/{id}/data", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id"),
           ("fetch_structured_data" = Option<bool>, Query, description = "Accepted for the official client")),
    responses((status = 200, description = "`{\"run\": Run, \"nodes\": {node_id: {\"input\", \"output\"}}}`", body = Object),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody),
              (status = 404, description = "No such run in this workspace", body = ErrorBody)))]
async fn run_data(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> Result<Json<Value>> {
    auth.require(Permission::WorkflowsRead)?;
    query.boolean("fetch_structured_data")?;
    let run = find_run(&state, auth.workspace_id(), &id).await?;
    let mut nodes = serde_json::Map::new();
    for node in node_ids(&run.definition).unwrap_or_default() {
        if let Some((input, output)) = state
            .store()
            .node_io(auth.workspace_id(), &run.id, &node)
            .await?
        {
            nodes.insert(node, json!({"input": input, "output": output}));
        }
    }
    Ok(Json(json!({"run": run_body(&run), "nodes": nodes})))
}

/// One node's input and output in a run (`it`: the iteration, from 1; 0
/// also means the first; nodes run once here).
#[utoipa::path(get, path = "/v1/runs/{id}/io/{node_id}", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id"),
           ("node_id" = String, Path, description = "Node id in the definition"),
           NodeIoQuery),
    responses((status = 200, description = "`{\"node_id\", \"iteration\", \"input\", \"output\"}`", body = Object),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody),
              (status = 404, description = "No such run, or the node has not run", body = ErrorBody)))]
async fn node_io(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath((id, node)): ApiPath<(String, String)>,
    query: QueryPairs,
) -> Result<Json<Value>> {
    auth.require(Permission::WorkflowsRead)?;
    query.int(&IT)?;
    let run = find_run(&state, auth.workspace_id(), &id).await?;
    let (input, output) = state
        .store()
        .node_io(auth.workspace_id(), &run.id, &node)
        .await?
        .ok_or_else(|| ApiError::not_found("node input and output"))?;
    Ok(Json(
        json!({"node_id": node, "iteration": 1, "input": input, "output": output}),
    ))
}

/// What `POST /v1/runs/search` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SearchRuns {
    /// Words to find in the runs' input and output (every word must match).
    #[schema(max_length = 1000)]
    query: String,
    /// At most this many (1 to 100, default 10).
    #[serde(default, deserialize_with = "noxus_api::whole_number::option_u64")]
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<u64>,
    /// Skip this many (at most 10,000).
    #[serde(default, deserialize_with = "noxus_api::whole_number::option_u64")]
    #[schema(maximum = 10000)]
    offset: Option<u64>,
    /// Accepted for the official client: words always match whole.
    #[serde(default)]
    exact: Option<bool>,
    /// Accepted for the official client: input and output are searched.
    #[serde(default)]
    search_in: Option<Vec<String>>,
}

/// Full-text search over this workspace's run inputs and outputs, newest first.
#[utoipa::path(post, path = "/v1/runs/search", tag = "runs",
    request_body = SearchRuns,
    responses((status = 200, description = "`{\"items\": [Run]}`", body = Object),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody)))]
async fn search_runs(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiJson(body): ApiJson<SearchRuns>,
) -> Result<Json<Value>> {
    auth.require(Permission::WorkflowsRead)?;
    let _ = (&body.exact, &body.search_in);
    if body.query.chars().count() > 1000 {
        return Err(ApiError::validation(
            "query",
            "query is at most 1000 characters",
        ));
    }
    let limit = body.limit.unwrap_or(10);
    if !(1..=MAX_RUNS_PER_REQUEST).contains(&limit) {
        return Err(ApiError::validation(
            "limit",
            format!("limit is 1 to {MAX_RUNS_PER_REQUEST}"),
        ));
    }
    let offset = body.offset.unwrap_or(0);
    if offset > 10_000 {
        return Err(ApiError::validation("offset", "offset is at most 10000"));
    }
    let found = state
        .store()
        .search_runs(auth.workspace_id(), &body.query, (offset + limit) as u32)
        .await?;
    let items: Vec<RunBody> = found
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(run_body)
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// The run's events as server-sent events, from the first (or after the
/// event named by `etag`, the `redisId`/`id` of the last one received)
/// until the run ends. Each is `data: {"type", "data": {…,
/// "workflow_status"}, "redisId"}`. The stream also ends, with an `error`
/// event, when the key that opened it is revoked, expires, or loses
/// `workflows:read` (its owner removed or demoted). One key may hold at
/// most `--max-event-streams-per-key` streams open at once on a server
/// (32 unless configured), one workspace `--max-event-streams-per-workspace`
/// (256): more are 429 `too_many_streams`.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id"),
           ("etag" = Option<String>, Query, description = "Resume after this event")),
    responses((status = 200, description = "`text/event-stream`", content_type = "text/event-stream", body = String),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody),
              (status = 404, description = "No such run in this workspace", body = ErrorBody),
              (status = 429, description = "The key, or its workspace, already holds the most event streams it may hold open at once (`too_many_streams`); or over the key's rate limit, or too many failed authentications from this address (`rate_limited`)", body = ErrorBody)))]
async fn run_events(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
    headers: HeaderMap,
) -> Result<Response> {
    auth.require(Permission::WorkflowsRead)?;
    let run = find_run(&state, auth.workspace_id(), &id).await?;
    let after = match query.get("etag") {
        None | Some("") => 0,
        Some(raw) => raw.parse::<i64>().map_err(|_| {
            ApiError::validation(
                "etag",
                "etag is the id of the last event received (a number)",
            )
        })?,
    };
    let watch = state.streams().open(
        &run.id,
        Opener {
            key: auth.record().key.id.clone(),
            user: auth.user_id().clone(),
            workspace: auth.workspace_id().clone(),
        },
    )?;
    // A run that ended sends nothing after its last event.
    let done = run.status.is_terminal() && after >= run.last_event_seq;
    let stream = EventStream {
        expires: expiry_timer(&state, &auth),
        state,
        workspace: auth.workspace_id().clone(),
        run_id: run.id,
        after,
        headers,
        client_addr: auth.client_addr,
        pending: VecDeque::new(),
        done,
        watch,
        // Both at once: a change between the authentication and the
        // watch's registration woke nothing.
        recheck_key: true,
        read_events: true,
        polled_at: tokio::time::Instant::now(),
        closing: false,
    };
    let events = futures_util::stream::unfold(stream, |mut s| async move {
        match s.next().await {
            Some(Next::Event(event)) => Some((Ok(event), s)),
            // The connection is cut, not ended cleanly: clients take a cut
            // stream for a failure and resume (the official client falls
            // back to polling, ours reconnects with `etag`), while a clean
            // end without a final event would read as a run still going.
            Some(Next::Closing) => Some((Err(ServerClosing), s)),
            None => None,
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// One open event stream.
struct EventStream {
    state: AppState,
    workspace: WorkspaceId,
    run_id: RunId,
    after: i64,
    headers: HeaderMap,
    client_addr: Option<IpAddr>,
    /// At most [`EVENTS_PER_READ`] events, read when it was empty.
    pending: VecDeque<Event>,
    done: bool,
    /// Its registration: what wakes it, and its place under the limits.
    watch: Watch,
    /// The key must be checked again before anything more is sent.
    recheck_key: bool,
    /// The run may have new events.
    read_events: bool,
    /// When the safety poll last looked.
    polled_at: tokio::time::Instant,
    /// When the key expires, if it does.
    expires: Option<tokio::time::Instant>,
    /// The server is shutting down: the stream is cut.
    closing: bool,
}

/// When `auth`'s key expires, as a timer deadline (at most
/// [`MAX_EXPIRY_TIMER`] away: set again when it fires).
fn expiry_timer(state: &AppState, auth: &AuthContext) -> Option<tokio::time::Instant> {
    let expires_at = auth.record().key.expires_at?;
    let expires_ms = i64::try_from(expires_at.unix_timestamp_nanos() / 1_000_000).ok()?;
    let left_ms = expires_ms
        .saturating_sub(state.clock().now().unix_ms)
        .max(0);
    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)).min(MAX_EXPIRY_TIMER);
    Some(tokio::time::Instant::now() + left)
}

/// The server stops serving: the stream's connection is cut.
#[derive(Debug)]
struct ServerClosing;

impl std::fmt::Display for ServerClosing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server is shutting down")
    }
}

impl std::error::Error for ServerClosing {}

/// What a stream sends next.
enum Next {
    /// An event.
    Event(Event),
    /// Nothing more: the server is shutting down.
    Closing,
}

/// What ended a stream's wait.
enum Woken {
    /// Its signal: the run, the key, or both (see the signal's flags).
    Signal,
    /// The safety poll.
    Poll,
    /// The key's expiry.
    Expiry,
    /// The server is shutting down.
    Closing,
}

fn frame(event: &RunEvent) -> Event {
    let payload = json!({
        "type": event.kind,
        "data": event.data,
        "redisId": event.seq.to_string(),
    });
    Event::default()
        .event("message")
        .id(event.seq.to_string())
        .data(payload.to_string())
}

fn is_final(event: &RunEvent) -> bool {
    matches!(event.kind.as_str(), "completed" | "failed" | "stopped")
        || event
            .data
            .get("workflow_status")
            .and_then(Value::as_str)
            .and_then(RunStatus::parse)
            .is_some_and(RunStatus::is_terminal)
}

impl EventStream {
    async fn next(&mut self) -> Option<Next> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Next::Event(event));
            }
            if self.done {
                return None;
            }
            if self.closing {
                self.done = true;
                return Some(Next::Closing);
            }
            // The key that opened the stream must still be good for it.
            if self.recheck_key {
                self.recheck_key = false;
                match crate::auth::still_allowed(
                    &self.state,
                    &self.headers,
                    self.client_addr,
                    Permission::WorkflowsRead,
                )
                .await
                {
                    Ok(auth) => self.expires = expiry_timer(&self.state, &auth),
                    Err(refused) => {
                        self.done = true;
                        let (code, detail) = (refused.code(), refused.to_string());
                        let payload = json!({
                            "type": "error",
                            "data": {"code": code, "detail": detail, "workflow_status": "failed"},
                        });
                        return Some(Next::Event(
                            Event::default().event("message").data(payload.to_string()),
                        ));
                    }
                }
            }
            if self.read_events {
                self.read_events = false;
                match self
                    .state
                    .store()
                    .run_events_after(&self.workspace, &self.run_id, self.after, EVENTS_PER_READ)
                    .await
                {
                    Ok(events) if !events.is_empty() => {
                        // A full read may have left some behind.
                        self.read_events = events.len() >= EVENTS_PER_READ as usize;
                        for event in &events {
                            self.after = event.seq;
                            self.pending.push_back(frame(event));
                            if is_final(event) {
                                self.done = true;
                                break;
                            }
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        // The safety poll tries again.
                        tracing::warn!(run_id = %self.run_id, error = %err, "reading a run's events failed");
                    }
                }
            }
            self.wait().await;
        }
    }

    /// Sleeps until the stream has something to look at: a wake-up, the
    /// safety poll, or the key's expiry.
    async fn wait(&mut self) {
        let every = if self.state.store().events().is_deaf() {
            DEAF_POLL
        } else {
            SAFETY_POLL
        };
        let poll_at = self.polled_at + every;
        let expires = self.expires;
        let signal = std::sync::Arc::clone(self.watch.signal());
        let woken = tokio::select! {
            () = signal.woken() => Woken::Signal,
            () = tokio::time::sleep_until(poll_at) => Woken::Poll,
            () = self.state.closing() => Woken::Closing,
            () = async {
                match expires {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => Woken::Expiry,
        };
        match woken {
            Woken::Signal => {
                self.recheck_key |= signal.take_key();
                self.read_events |= signal.take_run();
            }
            Woken::Poll => {
                self.polled_at = tokio::time::Instant::now();
                self.recheck_key = true;
                self.read_events = true;
            }
            Woken::Expiry => {
                self.expires = None;
                self.recheck_key = true;
            }
            Woken::Closing => self.closing = true,
        }
    }
}
