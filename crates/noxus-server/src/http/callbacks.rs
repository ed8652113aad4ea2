//! Run callbacks over the API: the `callback_url` check when a run starts,
//! how a run's callback went (`GET /v1/runs/{id}/callback`), and the
//! workspace's signing secret, which only those who manage the workspace
//! obtain (`workspace:write`, a management permission: keys made without
//! `permissions` do not hold it; viewers and members never do). Reading
//! and rotating the secret are in the audit log. The sending itself is
//! [`crate::runs::callbacks`].

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use noxus_api::{ErrorBody, Permission};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthContext;
use crate::http::admin::target_workspace;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{ApiJson, ApiPath};
use crate::runs::callbacks::{check_url, NO_SIGNING_SECRET};
use crate::state::AppState;
use crate::store::{CallbackSecretGeneration, WorkspaceId, MAX_CALLBACK_ATTEMPTS};
use crate::time_fmt::rfc3339;

/// Longest grace period of a rotation: the previous secret signs too for
/// at most a day.
pub const MAX_SECRET_GRACE_SECONDS: u64 = 24 * 3600;

/// The callback routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_callback_secret))
        .routes(routes!(rotate_callback_secret))
        .routes(routes!(run_callback))
}

/// The `callback_url` of a run being started, as it is stored: `None` when
/// absent or empty; 422 with a sentence when refused (see
/// [`check_url`]), or when this server cannot sign callbacks.
pub(crate) fn accept_url(state: &AppState, raw: Option<&str>) -> Result<Option<String>> {
    let Some(raw) = raw.filter(|url| !url.is_empty()) else {
        return Ok(None);
    };
    if state.callbacks().signer().is_none() {
        return Err(ApiError::validation("callback_url", NO_SIGNING_SECRET));
    }
    check_url(raw, state.callbacks().allow_loopback())
        .map(Some)
        .map_err(|why| ApiError::validation("callback_url", why))
}

/// A workspace's callback signing secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallbackSecret {
    /// The secret (`whsec_` and 64 hex digits): the HMAC-SHA-256 key of
    /// the `v1` signatures in `Noxus-Signature`.
    secret: String,
    /// Which secret this is: 1, then one more at each rotation.
    generation: i64,
    /// Until when callbacks also carry a signature under the previous
    /// secret (after a rotation with a grace period); `null` otherwise.
    previous_secret_valid_until: Option<String>,
}

/// What rotating the secret takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateCallbackSecret {
    /// How long callbacks go on carrying a signature under the previous
    /// secret as well, 0 to 86400 seconds (a day; 0, the default: they
    /// stop at once), so that receivers can switch without missing one.
    #[serde(default, deserialize_with = "noxus_api::whole_number::u64")]
    #[schema(minimum = 0, maximum = 86400)]
    grace_period_seconds: u64,
}

/// An answer that carries a secret: never stored by a cache.
fn secret_response(
    state: &AppState,
    workspace: &WorkspaceId,
    generation: CallbackSecretGeneration,
) -> Result<Response> {
    let signer = state
        .callbacks()
        .signer()
        .ok_or_else(|| ApiError::Conflict(NO_SIGNING_SECRET.to_owned()))?;
    let secret = signer.workspace_secret(workspace, generation.generation);
    let body = CallbackSecret {
        secret: secret.expose_secret().to_owned(),
        generation: generation.generation,
        previous_secret_valid_until: generation
            .previous_valid_until
            .filter(|until| *until > OffsetDateTime::now_utc())
            .map(rfc3339),
    };
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response())
}

/// The workspace of the path, and the key's right to manage it: 403
/// unless `workspace:write` there (`org:workspaces:write` for another
/// workspace, with a tenant-admin key); 409 when this server cannot sign.
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
    if state.callbacks().signer().is_none() {
        return Err(ApiError::Conflict(NO_SIGNING_SECRET.to_owned()));
    }
    Ok(workspace.id)
}

/// The secret that signs this workspace's run callbacks (`Noxus-Signature`),
/// for verifying them. Only for those who manage the workspace:
/// `workspace:write` (admins and owners, with a key made with that
/// permission), or `org:workspaces:write` for another workspace. Each read
/// is in the audit log. `Cache-Control: no-store`.
#[utoipa::path(get, path = "/v1/admin/groups/{id}/callback-secret", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    responses((status = 200, body = CallbackSecret),
              (status = 403, description = "Needs `workspace:write` (`org:workspaces:write` for another workspace), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody),
              (status = 409, description = "This server has no secret to sign callbacks with (PostgreSQL without `NOXUS_KEY_PEPPER`) (`conflict`)", body = ErrorBody)))]
async fn get_callback_secret(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<WorkspaceId>,
) -> Result<Response> {
    let workspace = managed_workspace(&state, &auth, &id).await?;
    let generation = state
        .store()
        .reveal_callback_secret(&auth.actor(), auth.organization_id(), &workspace)
        .await?;
    secret_response(&state, &workspace, generation)
}

/// Replaces the workspace's callback secret by a new one, answered here
/// (`Cache-Control: no-store`). Callbacks go on carrying a signature under
/// the old secret too for `grace_period_seconds` (0 to a day), then only
/// under the new one. Same permission as reading it; in the audit log.
#[utoipa::path(post, path = "/v1/admin/groups/{id}/callback-secret/rotate", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    request_body = RotateCallbackSecret,
    responses((status = 200, body = CallbackSecret),
              (status = 403, description = "Needs `workspace:write` (`org:workspaces:write` for another workspace), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody),
              (status = 409, description = "This server has no secret to sign callbacks with (PostgreSQL without `NOXUS_KEY_PEPPER`) (`conflict`)", body = ErrorBody)))]
async fn rotate_callback_secret(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<WorkspaceId>,
    ApiJson(body): ApiJson<RotateCallbackSecret>,
) -> Result<Response> {
    let workspace = managed_workspace(&state, &auth, &id).await?;
    if body.grace_period_seconds > MAX_SECRET_GRACE_SECONDS {
        return Err(ApiError::validation(
            "grace_period_seconds",
            format!("grace_period_seconds must be from 0 to {MAX_SECRET_GRACE_SECONDS} (a day)"),
        ));
    }
    let previous_valid_until = (body.grace_period_seconds > 0).then(|| {
        OffsetDateTime::now_utc() + std::time::Duration::from_secs(body.grace_period_seconds)
    });
    let generation = state
        .store()
        .rotate_callback_secret(
            &auth.actor(),
            auth.organization_id(),
            &workspace,
            previous_valid_until,
        )
        .await?;
    secret_response(&state, &workspace, generation)
}

/// How a run's callback went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunCallback {
    /// The run.
    run_id: String,
    /// Where it is posted.
    url: String,
    /// `waiting` (the run has not ended), `pending` (being sent, or waiting
    /// for its next attempt), `delivered` (the receiver answered 2xx) or
    /// `failed` (no attempt left, or the target was refused: see
    /// `last_error`).
    status: String,
    /// `run.completed`, `run.failed` or `run.stopped` (`Noxus-Event`), once
    /// the run ended.
    event: Option<String>,
    /// The delivery's id (`Noxus-Delivery`, the same on every attempt).
    delivery_id: Option<String>,
    /// Attempts made so far.
    attempts: i64,
    /// Attempts made at most.
    max_attempts: i64,
    /// When the next attempt is due, while `pending`.
    next_attempt_at: Option<String>,
    /// When the last attempt started.
    last_attempt_at: Option<String>,
    /// The HTTP status the receiver answered last, if it answered.
    last_status_code: Option<i64>,
    /// Why the last attempt failed, as a sentence.
    last_error: Option<String>,
    /// When the receiver answered 2xx.
    delivered_at: Option<String>,
}

/// How the run's callback went: its status, attempts and the last error
/// as a sentence (a refused target, the receiver's status, a timeout). 404
/// for a run started without `callback_url`.
#[utoipa::path(get, path = "/v1/runs/{id}/callback", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses((status = 200, body = RunCallback),
              (status = 403, description = "Needs `workflows:read` (`insufficient_permissions`)", body = ErrorBody),
              (status = 404, description = "No such run in this workspace, or it has no callback", body = ErrorBody)))]
async fn run_callback(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RunCallback>> {
    auth.require(Permission::WorkflowsRead)?;
    let run = crate::http::runs::find_run(&state, auth.workspace_id(), &id).await?;
    let Some(url) = run.callback_url.clone() else {
        return Err(ApiError::NotFound(
            "This run was started without a callback_url".to_owned(),
        ));
    };
    let delivery = state
        .store()
        .run_callback(auth.workspace_id(), &run.id)
        .await?;
    let body = match delivery {
        None => RunCallback {
            run_id: run.id.to_string(),
            url,
            status: "waiting".to_owned(),
            event: None,
            delivery_id: None,
            attempts: 0,
            max_attempts: MAX_CALLBACK_ATTEMPTS,
            next_attempt_at: None,
            last_attempt_at: None,
            last_status_code: None,
            last_error: None,
            delivered_at: None,
        },
        Some(d) => {
            let pending = d.status == crate::store::CallbackStatus::Pending;
            RunCallback {
                run_id: run.id.to_string(),
                url: d.url,
                status: d.status.as_str().to_owned(),
                event: Some(d.event),
                delivery_id: Some(d.id.to_string()),
                attempts: d.attempts,
                max_attempts: MAX_CALLBACK_ATTEMPTS,
                next_attempt_at: pending.then(|| rfc3339(d.next_attempt_at)),
                last_attempt_at: d.last_attempt_at.map(rfc3339),
                last_status_code: d.last_status_code,
                last_error: d.last_error,
                delivered_at: d.delivered_at.map(rfc3339),
            }
        }
    };
    Ok(Json(body))
}
