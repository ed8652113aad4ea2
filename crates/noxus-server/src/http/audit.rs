//! `GET /v1/admin/audit`: the append-only audit log, newest first.

use axum::extract::State;
use axum::Json;
use noxus_api::{AuditEntry, ErrorBody, Permission};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthContext;
use crate::http::admin::target_workspace;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{int_query_params, IntParam, QueryPairs};
use crate::state::AppState;
use crate::store::AuditQuery;
use crate::store::WorkspaceId;

/// Most characters of the `action` filter.
const MAX_ACTION_CHARS: usize = 100;

/// `limit` of the audit log.
const LIMIT: IntParam = IntParam {
    name: "limit",
    min: 1,
    max: 1000,
    description: "At most this many entries (default 100)",
};

/// `before` of the audit log: entry ids.
const BEFORE: IntParam = IntParam {
    name: "before",
    min: 1,
    max: i64::MAX as u64,
    description: "Only entries older than this id",
};

int_query_params!(
    /// `limit` and `before` of the audit log.
    AuditQueryParams = [LIMIT, BEFORE]
);

/// The audit routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// The audit log: with `org:audit:read` (a tenant-admin key) the whole
/// organization's (`workspace_id` narrows it), otherwise the key's
/// workspace (needs `keys:manage`). `action` filters by prefix (`api_key.`), `before` pages
/// back, `limit` is 1 to 1000 (default 100). Nobody can change or delete it.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin",
    params(("workspace_id" = Option<String>, Query, description = "Only this workspace"),
           ("action" = Option<String>, Query, max_length = 100, description = "Only actions starting with this, e.g. `api_key.` (at most 100 characters)"),
           AuditQueryParams),
    responses((status = 200, body = Vec<AuditEntry>),
              (status = 403, description = "Needs `keys:manage` for the key's workspace, `org:audit:read` for others or the whole organization (`insufficient_permissions`); or `workspace_id` names another workspace (`wrong_workspace`)", body = ErrorBody),
              (status = 404, description = "`workspace_id` names no workspace of the organization (`not_found`)", body = ErrorBody)))]
async fn list_audit(
    State(state): State<AppState>,
    auth: AuthContext,
    query: QueryPairs,
) -> Result<Json<Vec<AuditEntry>>> {
    let limit = query.int(&LIMIT)?.map_or(100, |l| l as u32);
    let before_id = query.int(&BEFORE)?.map(|b| b as i64);
    let action_prefix = query.get("action").map(str::to_owned);
    let workspace_id = match query.get("workspace_id") {
        Some(id) => Some(
            target_workspace(&state, &auth, &WorkspaceId::from(id))
                .await?
                .id,
        ),
        None if auth.has(Permission::OrgAuditRead) => None,
        None => Some(auth.workspace_id().to_owned()),
    };
    match &workspace_id {
        Some(id) => auth.require_in(id, Permission::KeysManage, Permission::OrgAuditRead)?,
        None => auth.require(Permission::OrgAuditRead)?,
    }
    if action_prefix
        .as_ref()
        .is_some_and(|a| a.chars().count() > MAX_ACTION_CHARS)
    {
        return Err(ApiError::validation(
            "action",
            format!("action must be at most {MAX_ACTION_CHARS} characters"),
        ));
    }
    let rows = state
        .store()
        .search_audit(&AuditQuery {
            organization_id: auth.organization_id().to_owned(),
            workspace_id,
            action_prefix,
            before_id,
            limit,
        })
        .await?;
    Ok(Json(
        crate::reports::audit_entries(state.store(), auth.organization_id(), rows).await?,
    ))
}
