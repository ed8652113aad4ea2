//! `GET /v1/admin/audit`: the append-only audit log, newest first.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use noxus_api::{AuditEntry, Permission};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthContext;
use crate::error::{ApiError, Result};
use crate::http::admin::target_workspace;
use crate::http::extract::QueryPairs;
use crate::state::AppState;
use crate::store::{AuditQuery, AuditRecord};
use crate::time_fmt::rfc3339;

/// The audit routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Turns rows into wire entries, with the actors' emails.
pub async fn entries(
    state: &AppState,
    organization_id: &str,
    rows: Vec<AuditRecord>,
) -> Result<Vec<AuditEntry>> {
    let emails: HashMap<String, String> = state
        .store()
        .list_users(organization_id)
        .await?
        .into_iter()
        .map(|u| (u.id, u.email))
        .collect();
    Ok(rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            at: rfc3339(r.created_at),
            actor_email: r
                .actor_user_id
                .as_ref()
                .and_then(|id| emails.get(id).cloned()),
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            workspace_id: r.workspace_id,
            actor_user_id: r.actor_user_id,
            actor_key_id: r.actor_key_id,
            client_addr: r.client_addr,
            details: r.details,
        })
        .collect())
}

/// The audit log: with `org:audit:read` (a tenant-admin key) the whole
/// organization's (`workspace_id` narrows it), otherwise the key's
/// workspace (needs `keys:manage`). `action` filters by prefix (`api_key.`), `before` pages
/// back, `limit` is 1 to 1000 (default 100). Nobody can change or delete it.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin",
    params(("workspace_id" = Option<String>, Query, description = "Only this workspace"),
           ("action" = Option<String>, Query, description = "Only actions starting with this, e.g. `api_key.`"),
           ("before" = Option<i64>, Query, description = "Only entries older than this id"),
           ("limit" = Option<u64>, Query, description = "At most this many, 1 to 1000 (default 100)")),
    responses((status = 200, body = Vec<AuditEntry>)))]
async fn list_audit(
    State(state): State<AppState>,
    auth: AuthContext,
    query: QueryPairs,
) -> Result<Json<Vec<AuditEntry>>> {
    let limit = query.positive("limit", 1000)?.unwrap_or(100) as u32;
    let before_id = query.positive("before", i64::MAX as u64)?.map(|b| b as i64);
    let action_prefix = query.get("action").map(str::to_owned);
    let workspace_id = match query.get("workspace_id") {
        Some(id) => Some(target_workspace(&state, &auth, id).await?.id),
        None if auth.has(Permission::OrgAuditRead) => None,
        None => Some(auth.workspace_id().to_owned()),
    };
    match &workspace_id {
        Some(id) => auth.require_in(id, Permission::KeysManage, Permission::OrgAuditRead)?,
        None => auth.require(Permission::OrgAuditRead)?,
    }
    if action_prefix.as_ref().is_some_and(|a| a.len() > 100) {
        return Err(ApiError::validation(
            "action",
            "action must be at most 100 characters",
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
    Ok(Json(entries(&state, auth.organization_id(), rows).await?))
}
