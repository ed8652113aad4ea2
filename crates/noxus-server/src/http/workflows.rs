//! `/v1/workflows`: workflows of the key's workspace and their versions.
//! Name, type and definition are stored verbatim and returned unchanged.
//! Workflows of other workspaces are 404: their existence is never revealed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use noxus_api::{
    Deleted, Page, Permission, Workflow, WorkflowVersion, WorkflowVersionWrite, WorkflowWrite,
};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::AuthContext;
use crate::domain::validation;
use crate::error::{ApiError, Result};
use crate::http::extract::{ApiJson, QueryPairs};
use crate::state::AppState;
use crate::store::{WorkflowFields, WorkflowRecord, WorkflowVersionRecord};
use crate::time_fmt::rfc3339;

/// Default page size of `GET /v1/workflows`.
const DEFAULT_PAGE_SIZE: u64 = 10;
/// Largest page size.
const MAX_PAGE_SIZE: u64 = 100;

/// The workflow routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workflows, create_workflow))
        .routes(routes!(get_workflow, update_workflow, delete_workflow))
        .routes(routes!(list_versions, create_version))
        .routes(routes!(update_version))
}

fn workflow_body(w: WorkflowRecord) -> Workflow {
    let flow_version = w
        .definition
        .get("flow_version")
        .and_then(Value::as_str)
        .unwrap_or("v1")
        .to_owned();
    Workflow {
        id: w.id,
        name: w.name,
        kind: w.kind,
        group_id: w.workspace_id,
        definition: w.definition,
        error_handler: w.error_handler,
        flow_version,
        created_at: rfc3339(w.created_at),
        last_updated_at: rfc3339(w.updated_at),
    }
}

fn version_body(v: WorkflowVersionRecord) -> WorkflowVersion {
    WorkflowVersion {
        id: v.id,
        name: v.name,
        description: v.description,
        created_at: rfc3339(v.created_at),
        created_by: v.created_by,
        definition: v.definition,
    }
}

/// Ids are UUIDs; anything else cannot exist, so it is a 404 without a lookup.
fn workflow_id(raw: &str) -> Result<String> {
    Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::not_found("workflow"))
}

fn fields(state: &AppState, body: WorkflowWrite) -> Result<WorkflowFields> {
    Ok(WorkflowFields {
        name: validation::name("name", &body.name, 200)?,
        kind: validation::workflow_kind(&body.kind)?,
        definition: validation::definition("definition", body.definition, state.catalog())?,
        error_handler: validation::error_handler(body.error_handler.as_deref())?,
    })
}

/// A page of the workspace's workflows, oldest first. `size` (or
/// `page_size`) is 1 to 100, default 10; `type` filters (`flow`, `agent_flow`).
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    params(("page" = Option<u64>, Query, description = "Page number, from 1"),
           ("size" = Option<u64>, Query, description = "Page size, 1 to 100 (default 10)"),
           ("page_size" = Option<u64>, Query, description = "Alias of size"),
           ("type" = Option<String>, Query, description = "`flow` or `agent_flow`")),
    responses((status = 200, body = Page<Workflow>)))]
async fn list_workflows(
    State(state): State<AppState>,
    auth: AuthContext,
    query: QueryPairs,
) -> Result<Json<Page<Workflow>>> {
    auth.require(Permission::WorkflowsRead)?;
    let page = query
        .positive("page", u64::MAX / MAX_PAGE_SIZE)?
        .unwrap_or(1);
    let size = match query.positive("size", MAX_PAGE_SIZE)? {
        Some(size) => size,
        None => query
            .positive("page_size", MAX_PAGE_SIZE)?
            .unwrap_or(DEFAULT_PAGE_SIZE),
    };
    let kind = query
        .get("type")
        .map(validation::workflow_kind)
        .transpose()?;
    let (rows, total) = state
        .store()
        .list_workflows(
            auth.workspace_id(),
            kind.as_deref(),
            (page - 1) * size,
            size,
        )
        .await?;
    Ok(Json(Page {
        items: rows.into_iter().map(workflow_body).collect(),
        total,
        page,
        size,
        pages: total.div_ceil(size),
    }))
}

/// Creates a workflow. Only `name` is required: the definition defaults to
/// an empty flow. Node types must exist in `/v1/nodes`.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", request_body = WorkflowWrite,
    responses((status = 201, body = Workflow)))]
async fn create_workflow(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiJson(body): ApiJson<WorkflowWrite>,
) -> Result<(StatusCode, Json<Workflow>)> {
    auth.require(Permission::WorkflowsWrite)?;
    let fields = fields(&state, body)?;
    let record = state
        .store()
        .create_workflow(&auth.actor(), auth.workspace_id(), fields)
        .await?;
    Ok((StatusCode::CREATED, Json(workflow_body(record))))
}

/// One workflow.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = Workflow)))]
async fn get_workflow(
    State(state): State<AppState>,
    auth: AuthContext,
    Path(id): Path<String>,
) -> Result<Json<Workflow>> {
    auth.require(Permission::WorkflowsRead)?;
    let id = workflow_id(&id)?;
    let record = state
        .store()
        .workflow(auth.workspace_id(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    Ok(Json(workflow_body(record)))
}

/// Replaces name, type and definition. Changing a workflow's `type` needs
/// `force=true` (the official client sends `False`/`True`).
#[utoipa::path(patch, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"),
           ("force" = Option<bool>, Query, description = "Allow changing the workflow's type")),
    request_body = WorkflowWrite,
    responses((status = 200, body = Workflow), (status = 409, body = noxus_api::ErrorBody)))]
async fn update_workflow(
    State(state): State<AppState>,
    auth: AuthContext,
    Path(id): Path<String>,
    query: QueryPairs,
    ApiJson(body): ApiJson<WorkflowWrite>,
) -> Result<Json<Workflow>> {
    auth.require(Permission::WorkflowsWrite)?;
    let id = workflow_id(&id)?;
    let force = query.boolean("force")?.unwrap_or(false);
    let fields = fields(&state, body)?;
    let current = state
        .store()
        .workflow(auth.workspace_id(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    if current.kind != fields.kind && !force {
        return Err(ApiError::Conflict(format!(
            "This workflow is a `{}`; changing its type to `{}` needs force=true",
            current.kind, fields.kind
        )));
    }
    let record = state
        .store()
        .update_workflow(&auth.actor(), auth.workspace_id(), &id, fields)
        .await?;
    Ok(Json(workflow_body(record)))
}

/// Deletes a workflow and its versions.
#[utoipa::path(delete, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = Deleted)))]
async fn delete_workflow(
    State(state): State<AppState>,
    auth: AuthContext,
    Path(id): Path<String>,
) -> Result<Json<Deleted>> {
    auth.require(Permission::WorkflowsWrite)?;
    let id = workflow_id(&id)?;
    state
        .store()
        .delete_workflow(&auth.actor(), auth.workspace_id(), &id)
        .await
        .map_err(not_found("workflow"))?;
    Ok(Json(Deleted { deleted: true, id }))
}

/// Versions of a workflow, oldest first (a bare array).
#[utoipa::path(get, path = "/v1/workflows/{id}/versions", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = Vec<WorkflowVersion>)))]
async fn list_versions(
    State(state): State<AppState>,
    auth: AuthContext,
    Path(id): Path<String>,
) -> Result<Json<Vec<WorkflowVersion>>> {
    auth.require(Permission::WorkflowsRead)?;
    let id = workflow_id(&id)?;
    let versions = state
        .store()
        .list_workflow_versions(auth.workspace_id(), &id)
        .await
        .map_err(not_found("workflow"))?;
    Ok(Json(versions.into_iter().map(version_body).collect()))
}

fn not_found(what: &'static str) -> impl Fn(crate::store::StoreError) -> ApiError {
    move |e| match e {
        crate::store::StoreError::NotFound => ApiError::not_found(what),
        other => other.into(),
    }
}

/// Saves a version of a workflow.
#[utoipa::path(post, path = "/v1/workflows/{id}/versions", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    request_body = WorkflowVersionWrite,
    responses((status = 201, body = WorkflowVersion)))]
async fn create_version(
    State(state): State<AppState>,
    auth: AuthContext,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WorkflowVersionWrite>,
) -> Result<(StatusCode, Json<WorkflowVersion>)> {
    auth.require(Permission::WorkflowsWrite)?;
    let id = workflow_id(&id)?;
    let name = validation::name("name", &body.name, 200)?;
    let description = validation::description("description", body.description.as_deref(), 2000)?;
    let definition = validation::definition("definition", Some(body.definition), state.catalog())?;
    let version = state
        .store()
        .create_workflow_version(
            &auth.actor(),
            auth.workspace_id(),
            &id,
            &name,
            description.as_deref(),
            definition,
        )
        .await
        .map_err(not_found("workflow"))?;
    Ok((StatusCode::CREATED, Json(version_body(version))))
}

/// Replaces a version's name, description and definition.
#[utoipa::path(patch, path = "/v1/workflows/{id}/versions/{version_id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("version_id" = String, Path, description = "Version id")),
    request_body = WorkflowVersionWrite,
    responses((status = 200, body = WorkflowVersion)))]
async fn update_version(
    State(state): State<AppState>,
    auth: AuthContext,
    Path((id, version_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<WorkflowVersionWrite>,
) -> Result<Json<WorkflowVersion>> {
    auth.require(Permission::WorkflowsWrite)?;
    let id = workflow_id(&id)?;
    let version_id = Uuid::parse_str(&version_id)
        .map_err(|_| ApiError::not_found("workflow version"))?
        .to_string();
    let name = validation::name("name", &body.name, 200)?;
    let description = validation::description("description", body.description.as_deref(), 2000)?;
    let definition = validation::definition("definition", Some(body.definition), state.catalog())?;
    let version = state
        .store()
        .update_workflow_version(
            &auth.actor(),
            auth.workspace_id(),
            &id,
            &version_id,
            &name,
            description.as_deref(),
            definition,
        )
        .await
        .map_err(not_found("workflow version"))?;
    Ok(Json(version_body(version)))
}
