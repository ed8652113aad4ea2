//! A workspace's security webhook (`/v1/admin/groups/{id}/security-webhook`):
//! one URL that is told, signed as run callbacks are (the workspace's
//! `whsec_…` secret, `Noxus-Signature`), when a key of the workspace is
//! revoked because someone reported it leaked (`POST /v1/keys/leaks`). Only
//! those who manage the workspace set, read or remove it
//! (`workspace:write`); each change is in the audit log. The URL is
//! checked as a `callback_url` is (public addresses only); the sending is
//! [`crate::runs::callbacks`].

use axum::extract::State;
use axum::Json;
use noxus_api::{Deleted, ErrorBody, Permission};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthContext;
use crate::http::admin::target_workspace;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{ApiJson, ApiPath};
use crate::runs::callbacks::{check_url_of, NO_SIGNING_SECRET};
use crate::state::AppState;
use crate::store::{
    CallbackDelivery, CallbackStatus, SecurityWebhook, WorkspaceId, KEY_REPORTED_LEAKED_EVENT,
    MAX_CALLBACK_ATTEMPTS,
};
use crate::time_fmt::rfc3339;

/// Deliveries `GET` shows, newest first.
pub const RECENT_DELIVERIES: u32 = 10;

/// The security-webhook routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(
        get_security_webhook,
        set_security_webhook,
        delete_security_webhook
    ))
}

/// What setting the security webhook takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecurityWebhook {
    /// Where to post security events: an http or https URL of a public
    /// address, at most 2048 characters, without a user name or password
    /// (put a token in its path or query instead).
    #[schema(
        min_length = 1,
        max_length = 2048,
        example = "https://hooks.example.com/noxus/security"
    )]
    url: String,
}

/// A workspace's security webhook, and how its latest events went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecurityWebhookBody {
    /// The workspace.
    workspace_id: String,
    /// Where security events are posted.
    url: String,
    /// The events posted there: `api_key.reported_leaked`.
    events: Vec<String>,
    /// When the URL was set.
    updated_at: String,
    /// The latest deliveries (up to 10), newest first.
    recent_deliveries: Vec<SecurityDelivery>,
}

/// One security event's delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecurityDelivery {
    /// The delivery's id: the event's `id` and `Noxus-Delivery`.
    id: String,
    /// The event (`Noxus-Event`), e.g. `api_key.reported_leaked`.
    event: String,
    /// The key it is about.
    key_id: Option<String>,
    /// `pending` (being sent, or waiting for its next attempt),
    /// `delivered` (the receiver answered 2xx) or `failed` (no attempt
    /// left, the target was refused, or the webhook was removed: see
    /// `last_error`).
    status: String,
    /// Attempts made so far.
    attempts: i64,
    /// Attempts made at most.
    max_attempts: i64,
    /// When the next attempt is due, while `pending`.
    next_attempt_at: Option<String>,
    /// The HTTP status the receiver answered last, if it answered.
    last_status_code: Option<i64>,
    /// Why the last attempt failed, as a sentence.
    last_error: Option<String>,
    /// When the receiver answered 2xx.
    delivered_at: Option<String>,
    /// When the event happened.
    created_at: String,
}

fn delivery_body(d: CallbackDelivery) -> SecurityDelivery {
    let pending = d.status == CallbackStatus::Pending;
    SecurityDelivery {
        id: d.id.to_string(),
        event: d.event,
        key_id: d.key_id.map(|k| k.to_string()),
        status: d.status.as_str().to_owned(),
        attempts: d.attempts,
        max_attempts: MAX_CALLBACK_ATTEMPTS,
        next_attempt_at: pending.then(|| rfc3339(d.next_attempt_at)),
        last_status_code: d.last_status_code,
        last_error: d.last_error,
        delivered_at: d.delivered_at.map(rfc3339),
        created_at: rfc3339(d.created_at),
    }
}

async fn webhook_body(state: &AppState, hook: SecurityWebhook) -> Result<SecurityWebhookBody> {
    let deliveries = state
        .store()
        .security_deliveries(&hook.workspace_id, RECENT_DELIVERIES)
        .await?;
    Ok(SecurityWebhookBody {
        workspace_id: hook.workspace_id.to_string(),
        url: hook.url,
        events: vec![KEY_REPORTED_LEAKED_EVENT.to_owned()],
        updated_at: rfc3339(hook.updated_at),
        recent_deliveries: deliveries.into_iter().map(delivery_body).collect(),
    })
}

/// The workspace of the path, and the key's right to manage it: 403
/// unless `workspace:write` there (`org:workspaces:write` for another
/// workspace, with a tenant-admin key).
async fn managed_workspace(
    state: &AppState,
    auth: &AuthContext,
    id: &WorkspaceId,
) -> Result<WorkspaceId> {
    let workspace = target_workspace(state, auth, id).await?;
    auth.require_in(
        &workspace.id,
        Permission::WorkspaceWrite,
        Permission::OrgWorkspacesWrite,
    )?;
    Ok(workspace.id)
}

/// The URL to be stored: checked as a `callback_url` is (422 with a
/// sentence), on a server that can sign (422 otherwise, as a
/// `callback_url` is refused there).
pub(crate) fn accept_url(state: &AppState, raw: &str) -> Result<String> {
    if state.callbacks().signer().is_none() {
        return Err(ApiError::validation("url", NO_SIGNING_SECRET));
    }
    check_url_of("url", raw, state.callbacks().allow_loopback())
        .map_err(|why| ApiError::validation("url", why))
}

/// The workspace's security webhook and its latest deliveries. Needs
/// `workspace:write` (`org:workspaces:write` for another workspace, with a
/// tenant-admin key): the URL may hold a token. 404 when none is set.
#[utoipa::path(get, path = "/v1/admin/groups/{id}/security-webhook", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    responses((status = 200, body = SecurityWebhookBody),
              (status = 403, description = "Needs `workspace:write` (`org:workspaces:write` for another workspace) (`insufficient_permissions`), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody),
              (status = 404, description = "No such workspace, or it has no security webhook (`not_found`)", body = ErrorBody)))]
async fn get_security_webhook(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<WorkspaceId>,
) -> Result<Json<SecurityWebhookBody>> {
    let workspace = managed_workspace(&state, &auth, &id).await?;
    let hook = state
        .store()
        .security_webhook(&workspace)
        .await?
        .ok_or_else(|| ApiError::NotFound("This workspace has no security webhook".to_owned()))?;
    Ok(Json(webhook_body(&state, hook).await?))
}

/// Sets (or replaces) the URL that is told when a key of the workspace is
/// revoked because someone reported it leaked: a signed
/// `api_key.reported_leaked` event (see docs/secret-scanning.md). The URL
/// is checked as a run's `callback_url` (http or https, a public address).
/// Needs `workspace:write`; in the audit log (the URL's origin only).
#[utoipa::path(put, path = "/v1/admin/groups/{id}/security-webhook", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    request_body = SetSecurityWebhook,
    responses((status = 200, body = SecurityWebhookBody),
              (status = 403, description = "Needs `workspace:write` (`org:workspaces:write` for another workspace) (`insufficient_permissions`), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody),
              (status = 404, description = "No such workspace (`not_found`)", body = ErrorBody),
              (status = 422, description = "The URL is refused (not http or https, a private or loopback address, a user name or password, too long), or this server cannot sign (PostgreSQL without `NOXUS_KEY_PEPPER`) (`validation_error`)", body = ErrorBody)))]
async fn set_security_webhook(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<WorkspaceId>,
    ApiJson(body): ApiJson<SetSecurityWebhook>,
) -> Result<Json<SecurityWebhookBody>> {
    let workspace = managed_workspace(&state, &auth, &id).await?;
    let url = accept_url(&state, &body.url)?;
    let hook = state
        .store()
        .set_security_webhook(&auth.actor(), auth.organization_id(), &workspace, &url)
        .await?;
    Ok(Json(webhook_body(&state, hook).await?))
}

/// Removes the workspace's security webhook: nothing more is sent, and
/// events not yet delivered fail at their next attempt. Needs
/// `workspace:write`; in the audit log. 404 when none is set.
#[utoipa::path(delete, path = "/v1/admin/groups/{id}/security-webhook", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    responses((status = 200, body = Deleted),
              (status = 403, description = "Needs `workspace:write` (`org:workspaces:write` for another workspace) (`insufficient_permissions`), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody),
              (status = 404, description = "No such workspace, or it has no security webhook (`not_found`)", body = ErrorBody)))]
async fn delete_security_webhook(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<WorkspaceId>,
) -> Result<Json<Deleted>> {
    let workspace = managed_workspace(&state, &auth, &id).await?;
    state
        .store()
        .remove_security_webhook(&auth.actor(), auth.organization_id(), &workspace)
        .await
        .map_err(|err| match err {
            crate::store::StoreError::NotFound => {
                ApiError::NotFound("This workspace has no security webhook".to_owned())
            }
            other => other.into(),
        })?;
    Ok(Json(Deleted {
        deleted: true,
        id: workspace.into_string(),
    }))
}
