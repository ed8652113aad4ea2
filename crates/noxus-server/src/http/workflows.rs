//! `/v1/workflows`: workflows of the key's workspace and their versions.
//! Name, type and definition are stored verbatim and returned unchanged.
//! Workflows of other workspaces are 404: their existence is never revealed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use noxus_api::limits::{VERSION_DESCRIPTION_MAX_CHARS, WORKFLOW_NAME_MAX_CHARS};
use noxus_api::{
    Deleted, ErrorBody, ExportedWorkflow, ImportWorkflow, Page, Permission, Workflow, WorkflowKind,
    WorkflowVersion, WorkflowVersionInfo, WorkflowVersionWrite, WorkflowWrite,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthContext;
use crate::domain::validation;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{
    int_query_params, ApiJson, ApiPath, IntParam, QueryPairs, MAX_PAGE_SIZE, PAGE,
};
use crate::state::AppState;
use crate::store::{
    VersionSlice, WorkflowFields, WorkflowQuotas, WorkflowRecord, WorkflowVersionRecord,
};
use crate::store::{WorkflowId, WorkflowVersionId};
use crate::time_fmt::rfc3339;

/// Default page size of `GET /v1/workflows`.
const DEFAULT_PAGE_SIZE: u64 = 10;
/// Default page size of `GET /v1/workflows/{id}/versions` when paged.
const DEFAULT_VERSION_PAGE_SIZE: u64 = 50;

/// `size` of the workflow list.
const SIZE: IntParam = IntParam {
    name: "size",
    min: 1,
    max: MAX_PAGE_SIZE,
    description: "Page size (default 10)",
};
/// `page_size`, what the official client also sends.
const PAGE_SIZE: IntParam = IntParam {
    name: "page_size",
    min: 1,
    max: MAX_PAGE_SIZE,
    description: "Page size when `size` is absent",
};
/// `size` of the version list.
const VERSION_SIZE: IntParam = SIZE.described("Page size (default 50); answers a page");

int_query_params!(
    /// Paging of `GET /v1/workflows`.
    WorkflowListQuery = [PAGE, SIZE, PAGE_SIZE]
);

int_query_params!(
    /// Paging of `GET /v1/workflows/{id}/versions`.
    VersionListQuery = [
        PAGE.described("Page number, from 1; answers a page"),
        VERSION_SIZE,
        PAGE_SIZE.described("Page size when `size` is absent; answers a page"),
    ]
);

/// The workflow quotas of the configuration.
fn quotas(state: &AppState) -> WorkflowQuotas {
    let config = state.config();
    WorkflowQuotas {
        workflows_per_workspace: config.max_workflows_per_workspace,
        versions_per_workflow: config.max_versions_per_workflow,
        definition_bytes_per_workspace: config.max_definition_bytes_per_workspace,
    }
}

/// The workflow routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workflows, create_workflow))
        .routes(routes!(import_workflow))
        .routes(routes!(get_workflow, update_workflow, delete_workflow))
        .routes(routes!(list_versions, create_version))
        .routes(routes!(update_version))
}

/// [`noxus_api::Workflow`] as the server writes it: the same fields under
/// the same names, but the definition is the stored JSON text, spliced into
/// the response without being parsed and re-encoded (a page of ten flows is
/// about 15 KB of definitions). The OpenAPI document describes it as
/// `Workflow`; a test checks the two encode the same.
#[derive(Debug, Serialize)]
struct WorkflowBody {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    group_id: String,
    definition: Box<RawValue>,
    error_handler: Option<String>,
    flow_version: String,
    created_at: String,
    last_updated_at: String,
}

/// [`noxus_api::WorkflowVersion`] as the server writes it (see
/// [`WorkflowBody`]); without `definition` it is a
/// [`noxus_api::WorkflowVersionInfo`] of a page that did not ask for it.
#[derive(Debug, Serialize)]
struct WorkflowVersionBody {
    id: String,
    name: String,
    description: Option<String>,
    created_at: String,
    created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    definition: Option<Box<RawValue>>,
}

/// What `GET /v1/workflows/{id}/versions` answers (for the OpenAPI
/// document): every version with its definition as a bare array (what the
/// official client reads), or, when `page` or `size` is given, a page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum VersionList {
    /// No `page`/`size`: every version, with its definition unless
    /// `include_definition=false` (bounded by the versions quota).
    All(Vec<WorkflowVersionInfo>),
    /// `page` and/or `size`: one page, definitions only with `include_definition=true`.
    Page(Page<WorkflowVersionInfo>),
}

/// The two answers of `GET /v1/workflows/{id}/versions`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum VersionListBody {
    All(Vec<WorkflowVersionBody>),
    Page(Page<WorkflowVersionBody>),
}

/// `definition.flow_version` when it is a string, else `v1`. Reads only that
/// member: the rest of the definition is skipped, not built into a tree.
fn flow_version(definition: &RawValue) -> String {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        flow_version: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<Head<'_>>(definition.get())
        .ok()
        .and_then(|head| head.flow_version)
        .map_or_else(|| "v1".to_owned(), std::borrow::Cow::into_owned)
}

fn workflow_body(w: WorkflowRecord) -> WorkflowBody {
    WorkflowBody {
        flow_version: flow_version(&w.definition),
        id: w.id.into_string(),
        name: w.name,
        kind: w.kind,
        group_id: w.workspace_id.into_string(),
        definition: w.definition,
        error_handler: w.error_handler,
        created_at: rfc3339(w.created_at),
        last_updated_at: rfc3339(w.updated_at),
    }
}

fn version_body(v: WorkflowVersionRecord) -> WorkflowVersionBody {
    WorkflowVersionBody {
        id: v.id.into_string(),
        name: v.name,
        description: v.description,
        created_at: rfc3339(v.created_at),
        created_by: v.created_by.map(String::from),
        definition: v.definition,
    }
}

/// Ids are UUIDs; anything else cannot exist, so it is a 404 without a lookup.
pub(crate) fn workflow_id(raw: &str) -> Result<WorkflowId> {
    validation::uuid(raw)
        .map(|u| WorkflowId::from(u.to_string()))
        .ok_or_else(|| ApiError::not_found("workflow"))
}

fn fields(state: &AppState, body: WorkflowWrite) -> Result<WorkflowFields> {
    Ok(WorkflowFields {
        name: validation::name("name", &body.name, WORKFLOW_NAME_MAX_CHARS)?,
        kind: validation::workflow_kind(&body.kind)?,
        definition: validation::definition("definition", body.definition, state.catalog())?,
        error_handler: validation::error_handler(body.error_handler.as_deref())?,
    })
}

/// A page of the workspace's workflows, oldest first. `size` (or
/// `page_size`) is 1 to 100, default 10; `type` filters (`flow`, `agent_flow`).
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    params(WorkflowListQuery,
           ("type" = Option<WorkflowKind>, Query, description = "Only workflows of this type")),
    responses((status = 200, body = Page<Workflow>),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody)))]
async fn list_workflows(
    State(state): State<AppState>,
    auth: AuthContext,
    query: QueryPairs,
) -> Result<Json<Page<WorkflowBody>>> {
    auth.require(Permission::WorkflowsRead)?;
    let page = query.int(&PAGE)?.unwrap_or(1);
    // Both are checked, `size` wins (the official client sends both, equal).
    let page_size = query.int(&PAGE_SIZE)?;
    let size = query.int(&SIZE)?.or(page_size).unwrap_or(DEFAULT_PAGE_SIZE);
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
/// an empty flow. Node types must exist in `/v1/nodes`. 409 when the
/// workspace holds its most workflows or definition bytes.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", request_body = WorkflowWrite,
    responses((status = 201, body = Workflow),
              (status = 403, description = "Needs `workflows:write` (`insufficient_permissions`)", body = ErrorBody),
              (status = 409, description = "The workspace holds its most workflows or definition bytes (`conflict`)", body = ErrorBody)))]
async fn create_workflow(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiJson(body): ApiJson<WorkflowWrite>,
) -> Result<(StatusCode, Json<WorkflowBody>)> {
    auth.require(Permission::WorkflowsWrite)?;
    let fields = fields(&state, body)?;
    let record = state
        .store()
        .create_workflow(&auth.actor(), auth.workspace_id(), fields, &quotas(&state))
        .await?;
    Ok((StatusCode::CREATED, Json(workflow_body(record))))
}

/// How `POST /v1/workflows/import` imports (for the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum ImportMode {
    /// The import becomes a new workflow.
    Clone,
}

/// Imports a workflow exported as JSON (the object `GET /v1/workflows/{id}`
/// answers, or its JSON text, which the official client's `import_`
/// sends): the same as `POST /v1/workflows` with its `name`, `type`,
/// `definition` and `error_handler`, as a new workflow of the key's
/// workspace. `dry_run=true` checks everything and writes nothing.
/// Answers the imported workflows: one, none for a dry run.
#[utoipa::path(post, path = "/v1/workflows/import", tag = "workflows",
    params(("mode" = inline(Option<ImportMode>), Query, description = "`clone` (the default): the import is a new workflow. The hosted platform's `version` and `replace` are refused (422)"),
           ("activate" = Option<bool>, Query, description = "Accepted for the official client, without effect: workflows here have no separate active version"),
           ("dry_run" = Option<bool>, Query, description = "Check without writing (`true`/`false`, any case, or `1`/`0`)")),
    request_body = ImportWorkflow,
    responses((status = 201, description = "The imported workflow, in a list", body = Vec<Workflow>),
              (status = 200, description = "A dry run: nothing was written; an empty list", body = Vec<Workflow>),
              (status = 403, description = "Needs `workflows:write` (`insufficient_permissions`)", body = ErrorBody),
              (status = 409, description = "The workspace holds its most workflows or definition bytes (`conflict`)", body = ErrorBody)))]
async fn import_workflow(
    State(state): State<AppState>,
    auth: AuthContext,
    query: QueryPairs,
    ApiJson(body): ApiJson<ImportWorkflow>,
) -> Result<(StatusCode, Json<Vec<WorkflowBody>>)> {
    auth.require(Permission::WorkflowsWrite)?;
    match query.get("mode") {
        None | Some("clone") => {}
        Some(other) => {
            return Err(ApiError::validation(
                "mode",
                format!(
                    "mode must be `clone` (an import is a new workflow), not `{}`",
                    validation::truncate(other)
                ),
            ))
        }
    }
    query.boolean("activate")?;
    let dry_run = query.boolean("dry_run")?.unwrap_or(false);
    match body.version.as_deref() {
        None | Some("auto") => {}
        Some(other) => {
            return Err(ApiError::validation(
                "version",
                format!(
                    "version must be `auto`: this server imports the exported JSON of a workflow, not `{}` bundles",
                    validation::truncate(other)
                ),
            ))
        }
    }
    let exported = exported_workflow(body.definition)?;
    let fields = fields(
        &state,
        WorkflowWrite {
            name: exported.name,
            kind: exported.kind,
            definition: exported.definition,
            error_handler: exported.error_handler,
        },
    )
    .map_err(|err| within("definition", err))?;
    if dry_run {
        return Ok((StatusCode::OK, Json(Vec::new())));
    }
    let record = state
        .store()
        .create_workflow(&auth.actor(), auth.workspace_id(), fields, &quotas(&state))
        .await?;
    Ok((StatusCode::CREATED, Json(vec![workflow_body(record)])))
}

/// The exported workflow of an import: the object, or its JSON text.
fn exported_workflow(definition: Value) -> Result<ExportedWorkflow> {
    let value = match definition {
        Value::String(text) => serde_json::from_str::<Value>(&text).map_err(|e| {
            ApiError::validation(
                "definition",
                format!(
                    "definition is a string but not the JSON text of an exported workflow: {e}"
                ),
            )
        })?,
        other => other,
    };
    if !value.is_object() {
        return Err(ApiError::validation(
            "definition",
            "definition must be the exported workflow: the object GET /v1/workflows/{id} answers, or its JSON text",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            "definition".to_owned()
        } else {
            format!("definition.{path}")
        };
        let detail = format!("Invalid value for `{field}`: {}", err.into_inner());
        ApiError::Validation {
            field: Some(field),
            detail,
        }
    })
}

/// A validation error about a part of `outer`, named from `outer`.
fn within(outer: &str, err: ApiError) -> ApiError {
    match err {
        ApiError::Validation {
            field: Some(field),
            detail,
        } => ApiError::Validation {
            detail: format!("{outer}.{detail}"),
            field: Some(format!("{outer}.{field}")),
        },
        other => other,
    }
}

/// One workflow.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = Uuid, Path, description = "Workflow id")),
    responses((status = 200, body = Workflow),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody)))]
async fn get_workflow(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WorkflowBody>> {
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
/// `force=true` (the official client sends `False`/`True`). A larger
/// definition must fit the workspace's definition bytes quota (409).
#[utoipa::path(patch, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = Uuid, Path, description = "Workflow id"),
           ("force" = Option<bool>, Query, description = "Allow changing the workflow's type (`true`/`false`, any case, or `1`/`0`)")),
    request_body = WorkflowWrite,
    responses((status = 200, body = Workflow),
              (status = 403, description = "Needs `workflows:write` (`insufficient_permissions`)", body = ErrorBody),
              (status = 409, description = "Changing the type without `force=true`, or the workspace's definition bytes quota (`conflict`)", body = ErrorBody)))]
async fn update_workflow(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
    ApiJson(body): ApiJson<WorkflowWrite>,
) -> Result<Json<WorkflowBody>> {
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
        .update_workflow(
            &auth.actor(),
            auth.workspace_id(),
            &id,
            fields,
            &quotas(&state),
        )
        .await?;
    Ok(Json(workflow_body(record)))
}

/// Deletes a workflow and its versions.
#[utoipa::path(delete, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = Uuid, Path, description = "Workflow id")),
    responses((status = 200, body = Deleted),
              (status = 403, description = "Needs `workflows:write` (`insufficient_permissions`)", body = ErrorBody)))]
async fn delete_workflow(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Deleted>> {
    auth.require(Permission::WorkflowsWrite)?;
    let id = workflow_id(&id)?;
    state
        .store()
        .delete_workflow(&auth.actor(), auth.workspace_id(), &id)
        .await
        .map_err(not_found("workflow"))?;
    Ok(Json(Deleted {
        deleted: true,
        id: id.into_string(),
    }))
}

/// Versions of a workflow, oldest first. Without `page` or `size`: every
/// version with its definition, as a bare array (what the official client's
/// `list_versions` reads; bounded by the versions-per-workflow quota). With
/// `page` and/or `size` (1 to 100, default 50; `page_size` is an alias): a
/// page in the `items` envelope, without definitions unless
/// `include_definition=true`.
#[utoipa::path(get, path = "/v1/workflows/{id}/versions", tag = "workflows",
    params(("id" = Uuid, Path, description = "Workflow id"),
           VersionListQuery,
           ("include_definition" = Option<bool>, Query, description = "Include each version's definition (default: only in the bare array)")),
    responses((status = 200, body = VersionList),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody)))]
async fn list_versions(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> Result<Json<VersionListBody>> {
    auth.require(Permission::WorkflowsRead)?;
    let id = workflow_id(&id)?;
    let page = query.int(&PAGE)?;
    let page_size = query.int(&PAGE_SIZE)?;
    let size = query.int(&VERSION_SIZE)?.or(page_size);
    let include_definition = query.boolean("include_definition")?;
    if page.is_none() && size.is_none() {
        let (versions, _) = state
            .store()
            .list_workflow_versions(
                auth.workspace_id(),
                &id,
                VersionSlice {
                    offset: 0,
                    limit: u64::MAX,
                    definitions: include_definition.unwrap_or(true),
                },
            )
            .await
            .map_err(not_found("workflow"))?;
        return Ok(Json(VersionListBody::All(
            versions.into_iter().map(version_body).collect(),
        )));
    }
    let page = page.unwrap_or(1);
    let size = size.unwrap_or(DEFAULT_VERSION_PAGE_SIZE);
    let (versions, total) = state
        .store()
        .list_workflow_versions(
            auth.workspace_id(),
            &id,
            VersionSlice {
                offset: (page - 1) * size,
                limit: size,
                definitions: include_definition.unwrap_or(false),
            },
        )
        .await
        .map_err(not_found("workflow"))?;
    Ok(Json(VersionListBody::Page(Page {
        items: versions.into_iter().map(version_body).collect(),
        total,
        page,
        size,
        pages: total.div_ceil(size),
    })))
}

fn not_found(what: &'static str) -> impl Fn(crate::store::StoreError) -> ApiError {
    move |e| match e {
        crate::store::StoreError::NotFound => ApiError::not_found(what),
        other => other.into(),
    }
}

/// Saves a version of a workflow. 409 when the workflow holds its most
/// versions or the workspace its most definition bytes.
#[utoipa::path(post, path = "/v1/workflows/{id}/versions", tag = "workflows",
    params(("id" = Uuid, Path, description = "Workflow id")),
    request_body = WorkflowVersionWrite,
    responses((status = 201, body = WorkflowVersion),
              (status = 403, description = "Needs `workflows:write` (`insufficient_permissions`)", body = ErrorBody),
              (status = 409, description = "The workflow holds its most versions, or the workspace its most definition bytes (`conflict`)", body = ErrorBody)))]
async fn create_version(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<WorkflowVersionWrite>,
) -> Result<(StatusCode, Json<WorkflowVersionBody>)> {
    auth.require(Permission::WorkflowsWrite)?;
    let id = workflow_id(&id)?;
    let name = validation::name("name", &body.name, WORKFLOW_NAME_MAX_CHARS)?;
    let description = validation::description(
        "description",
        body.description.as_deref(),
        VERSION_DESCRIPTION_MAX_CHARS,
    )?;
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
            &quotas(&state),
        )
        .await
        .map_err(not_found("workflow"))?;
    Ok((StatusCode::CREATED, Json(version_body(version))))
}

/// Replaces a version's name, description and definition.
#[utoipa::path(patch, path = "/v1/workflows/{id}/versions/{version_id}", tag = "workflows",
    params(("id" = Uuid, Path, description = "Workflow id"), ("version_id" = Uuid, Path, description = "Version id")),
    request_body = WorkflowVersionWrite,
    responses((status = 200, body = WorkflowVersion),
              (status = 403, description = "Needs `workflows:write` (`insufficient_permissions`)", body = ErrorBody),
              (status = 409, description = "The workspace holds its most definition bytes (`conflict`)", body = ErrorBody)))]
async fn update_version(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath((id, version_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<WorkflowVersionWrite>,
) -> Result<Json<WorkflowVersionBody>> {
    auth.require(Permission::WorkflowsWrite)?;
    let id = workflow_id(&id)?;
    let version_id = validation::uuid(&version_id)
        .map(|u| WorkflowVersionId::from(u.to_string()))
        .ok_or_else(|| ApiError::not_found("workflow version"))?;
    let name = validation::name("name", &body.name, WORKFLOW_NAME_MAX_CHARS)?;
    let description = validation::description(
        "description",
        body.description.as_deref(),
        VERSION_DESCRIPTION_MAX_CHARS,
    )?;
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
            &quotas(&state),
        )
        .await
        .map_err(not_found("workflow version"))?;
    Ok(Json(version_body(version)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn raw(value: &Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(value).unwrap()
    }

    #[test]
    fn flow_version_reads_only_a_string_member() {
        for (definition, expected) in [
            (
                json!({"flow_version": "v2", "nodes": [], "edges": []}),
                "v2",
            ),
            (
                json!({"nodes": [{"flow_version": "v9"}], "edges": []}),
                "v1",
            ),
            (json!({"flow_version": 2, "nodes": []}), "v1"),
            (json!({"flow_version": null}), "v1"),
            (json!([1, 2]), "v1"),
            (json!("v2"), "v1"),
        ] {
            assert_eq!(flow_version(&raw(&definition)), expected, "{definition}");
        }
        let escaped = RawValue::from_string(r#"{"flow_version":"v\u0032é"}"#.to_owned()).unwrap();
        assert_eq!(flow_version(&escaped), "v2é");
    }

    /// The server's bodies and the wire types of `noxus-api` (which the SDK
    /// decodes and the OpenAPI document describes) encode the same JSON.
    #[test]
    fn bodies_encode_as_the_wire_types() {
        let definition = json!({"flow_version": "v1", "nodes": [{"id": "a", "name": "Ünïcode \"q\""}], "edges": []});
        let body = WorkflowBody {
            id: "0b7f5a0e-8d0c-4a8e-9a70-6c1d2f3e4a5b".to_owned(),
            name: "Flow".to_owned(),
            kind: "agent_flow".to_owned(),
            group_id: "ws".to_owned(),
            definition: raw(&definition),
            error_handler: Some("node".to_owned()),
            flow_version: "v1".to_owned(),
            created_at: "2026-11-26T21:00:00Z".to_owned(),
            last_updated_at: "2026-11-26T21:00:01Z".to_owned(),
        };
        let encoded = serde_json::to_value(&body).unwrap();
        let wire: Workflow = serde_json::from_value(encoded.clone()).unwrap();
        assert_eq!(wire.definition, definition);
        assert_eq!(wire.kind, "agent_flow");
        assert_eq!(serde_json::to_value(&wire).unwrap(), encoded);

        let version = WorkflowVersionBody {
            id: "v".to_owned(),
            name: "First".to_owned(),
            description: None,
            created_at: "2026-11-26T21:00:00Z".to_owned(),
            created_by: Some("u".to_owned()),
            definition: Some(raw(&definition)),
        };
        let encoded = serde_json::to_value(&version).unwrap();
        let wire: WorkflowVersion = serde_json::from_value(encoded.clone()).unwrap();
        assert_eq!(wire.definition, definition);
        assert_eq!(serde_json::to_value(&wire).unwrap(), encoded);

        let listed = WorkflowVersionBody {
            definition: None,
            ..version
        };
        let encoded = serde_json::to_value(&listed).unwrap();
        assert!(encoded.get("definition").is_none());
        let wire: WorkflowVersionInfo = serde_json::from_value(encoded.clone()).unwrap();
        assert_eq!(wire.definition, None);
        assert_eq!(serde_json::to_value(&wire).unwrap(), encoded);
    }
}
