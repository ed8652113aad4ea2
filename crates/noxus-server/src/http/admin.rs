//! `/v1/admin/...`: who am I, workspaces (groups) and their API keys.
//!
//! Scope rules: a key acts in its own workspace with its effective
//! permissions. A tenant-admin key (owner still an active organization
//! admin) may name every workspace of the organization, and acts there with
//! its organization permissions (`org:…`), each narrowed by its restriction.
//! Naming another workspace without being tenant admin is
//! `403 wrong_workspace`; a workspace that does not exist in the
//! organization is `404`. Who may mint, rotate, revoke and see which key is
//! decided by [`crate::keys`]' rules, shared with the dashboard.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use noxus_api::{
    ApiKeyInfo, CreateApiKey, CreateWorkspace, CreatedApiKey, Deleted, ErrorBody, Me, Page,
    Permission, RateLimitSpec, RotateApiKey, UpdateWorkspace, Workspace,
};
use secrecy::ExposeSecret;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{masked_value, AuthContext};
use crate::domain::validation;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{
    int_query_params, ApiJson, ApiPath, IntParam, QueryPairs, MAX_PAGE_SIZE, PAGE,
};
use crate::keys::{
    self, Caller, KeyStatus, MintRequest, RateBounds, RotateError, MAX_GRACE_SECONDS,
};
use crate::rate_limit::RateLimit;
use crate::state::AppState;
use crate::store::{KeyId, WorkspaceId};
use crate::store::{KeyRecord, WorkspaceRecord};
use crate::time_fmt::{parse_rfc3339, rfc3339};

// The bounds the OpenAPI document states are the ones enforced.
const _: () = assert!(MAX_GRACE_SECONDS == noxus_api::limits::MAX_GRACE_SECONDS);

/// `size` of the workspace and key lists.
const LIST_SIZE: IntParam = IntParam {
    name: "size",
    min: 1,
    max: MAX_PAGE_SIZE,
    description: "Page size (default 50); with `page`, answers a page instead of a bare array",
};

int_query_params!(
    /// `page` and `size` of the workspace and key lists.
    ListQuery = [PAGE.described("Page number, from 1; with `size`, answers a page instead of a bare array"), LIST_SIZE]
);

/// What `GET /v1/admin/groups` answers (for the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum WorkspaceList {
    /// Neither `page` nor `size`: every workspace, as a bare array (what
    /// the official client's `list_workspaces` reads).
    All(Vec<Workspace>),
    /// `page` and/or `size`: one page (what `alist_workspaces` reads).
    Page(Page<Workspace>),
}

/// What `GET /v1/admin/groups/{id}/api-keys` answers (for the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum KeyList {
    /// Neither `page` nor `size`: every key, as a bare array.
    All(Vec<ApiKeyInfo>),
    /// `page` and/or `size`: one page.
    Page(Page<ApiKeyInfo>),
}

/// The admin routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me))
        .routes(routes!(list_workspaces, create_workspace))
        .routes(routes!(update_workspace, delete_workspace))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, revoke_key))
        .routes(routes!(rotate_key))
}

fn workspace_body(w: &WorkspaceRecord) -> Workspace {
    Workspace {
        id: w.id.to_string(),
        name: w.name.clone(),
        description: w.description.clone(),
        created_at: rfc3339(w.created_at),
        rate_limit: w.rate_limit.map(spec),
    }
}

fn spec(limit: RateLimit) -> RateLimitSpec {
    RateLimitSpec {
        per_second: limit.per_second,
        burst: Some(limit.burst),
    }
}

/// Checks a requested rate limit: 1 to 100000 per second, bursts of 1 to
/// 1000000 (default: twice the rate).
pub(crate) fn rate_limit_of(
    field: &str,
    requested: Option<RateLimitSpec>,
) -> Result<Option<RateLimit>> {
    let Some(requested) = requested else {
        return Ok(None);
    };
    let (max_rate, max_burst) = (
        noxus_api::limits::RATE_PER_SECOND_MAX,
        noxus_api::limits::RATE_BURST_MAX,
    );
    if !(1..=max_rate).contains(&requested.per_second) {
        return Err(ApiError::validation(
            format!("{field}.per_second"),
            format!("{field}.per_second must be from 1 to {max_rate}"),
        ));
    }
    let burst = requested
        .burst
        .unwrap_or(requested.per_second.saturating_mul(2));
    if !(1..=max_burst).contains(&burst) {
        return Err(ApiError::validation(
            format!("{field}.burst"),
            format!("{field}.burst must be from 1 to {max_burst}"),
        ));
    }
    Ok(Some(RateLimit {
        per_second: requested.per_second,
        burst,
    }))
}

fn key_info(k: &KeyRecord) -> ApiKeyInfo {
    ApiKeyInfo {
        id: k.id.to_string(),
        name: k.name.clone(),
        tenant_admin: k.tenant_admin,
        value: masked_value(k),
        permissions: k.restriction.clone(),
        workspace_id: k.workspace_id.to_string(),
        user_id: k.user_id.to_string(),
        status: KeyStatus::of(k, OffsetDateTime::now_utc())
            .as_str()
            .to_owned(),
        revoked_reason: k.revoked_reason.map(|r| r.as_str().to_owned()),
        created_at: rfc3339(k.created_at),
        expires_at: k.expires_at.map(rfc3339),
        revoked_at: k.revoked_at.map(rfc3339),
        replaced_by: k.replaced_by.clone().map(String::from),
        rate_limit: k.rate_limit.map(spec),
        last_used_at: k.last_used_at.map(rfc3339),
    }
}

/// Checks a workspace id from the path against the key's scope.
pub(crate) async fn target_workspace(
    state: &AppState,
    auth: &AuthContext,
    id: &WorkspaceId,
) -> Result<WorkspaceRecord> {
    let found = state.store().workspace(auth.organization_id(), id).await?;
    match found {
        None => Err(ApiError::not_found("workspace")),
        Some(w) if &w.id == auth.workspace_id() || auth.tenant_admin => Ok(w),
        Some(_) => Err(ApiError::WrongWorkspace(
            "This API key belongs to another workspace; use a key of the workspace you name (or a tenant-admin key)".to_owned(),
        )),
    }
}

/// The calling key as a [`Caller`] in `workspace`: for another workspace
/// than its own, its owner's role there is looked up.
pub(crate) async fn caller_in(
    state: &AppState,
    auth: &AuthContext,
    workspace: &WorkspaceRecord,
) -> Result<(Caller, Option<noxus_api::Role>)> {
    let role = if &workspace.id == auth.workspace_id() {
        Some(auth.role)
    } else {
        state
            .store()
            .membership(&workspace.id, auth.user_id())
            .await?
    };
    Ok((Caller::key(auth, workspace, role), role))
}

/// The calling key: id, name, workspace, owner, role and effective permissions.
/// Works for every valid key.
#[utoipa::path(get, path = "/v1/admin/me", tag = "admin", responses((status = 200, body = Me)))]
async fn get_me(auth: AuthContext) -> Json<Me> {
    let r = auth.record();
    Json(Me {
        id: r.key.id.to_string(),
        name: r.key.name.clone(),
        tenant_admin: auth.tenant_admin,
        value: masked_value(&r.key),
        permissions: auth.permissions.to_vec(),
        workspace_id: r.key.workspace_id.to_string(),
        workspace_name: r.workspace_name.clone(),
        role: auth.role,
        user_id: r.key.user_id.to_string(),
        user_email: r.user_email.clone(),
        organization_id: r.organization_id.to_string(),
        expires_at: r.key.expires_at.map(rfc3339),
        created_at: rfc3339(r.key.created_at),
    })
}

/// Workspaces: all of the organization with `org:workspaces:read` (a
/// tenant-admin key), else the key's own (`workspace:read`). A bare array, or a page envelope when `page` or `size` is given.
#[utoipa::path(get, path = "/v1/admin/groups", tag = "admin",
    params(ListQuery),
    responses((status = 200, description = "A bare array without `page` and `size`, a page with either", body = WorkspaceList),
              (status = 403, description = "Needs `workspace:read` (`insufficient_permissions`)", body = ErrorBody)))]
async fn list_workspaces(
    State(state): State<AppState>,
    auth: AuthContext,
    query: QueryPairs,
) -> Result<Response> {
    let page = query.int(&PAGE)?;
    let size = query.int(&LIST_SIZE)?;
    let all: Vec<Workspace> = if auth.has(Permission::OrgWorkspacesRead) {
        state
            .store()
            .list_workspaces(auth.organization_id())
            .await?
            .iter()
            .map(workspace_body)
            .collect()
    } else {
        auth.require(Permission::WorkspaceRead)?;
        state
            .store()
            .workspace(auth.organization_id(), auth.workspace_id())
            .await?
            .iter()
            .map(workspace_body)
            .collect()
    };
    if page.is_none() && size.is_none() {
        return Ok(Json(all).into_response());
    }
    Ok(Json(paginate(all, page.unwrap_or(1), size.unwrap_or(50))).into_response())
}

fn paginate<T>(all: Vec<T>, page: u64, size: u64) -> Page<T> {
    let total = all.len() as u64;
    let skip = usize::try_from((page - 1).saturating_mul(size)).unwrap_or(usize::MAX);
    let items = all.into_iter().skip(skip).take(size as usize).collect();
    Page {
        items,
        total,
        page,
        size,
        pages: total.div_ceil(size),
    }
}

/// Creates a workspace; the key's owner becomes its owner. Needs
/// `org:workspaces:write` (a tenant-admin key).
#[utoipa::path(post, path = "/v1/admin/groups", tag = "admin", request_body = CreateWorkspace,
    responses((status = 201, body = Workspace),
              (status = 403, description = "Needs `org:workspaces:write`, a tenant-admin key (`insufficient_permissions`)", body = ErrorBody),
              (status = 409, description = "A workspace with this name exists (`conflict`)", body = ErrorBody)))]
async fn create_workspace(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiJson(body): ApiJson<CreateWorkspace>,
) -> Result<(StatusCode, Json<Workspace>)> {
    auth.require(Permission::OrgWorkspacesWrite)?;
    let name = validation::name("name", &body.name, noxus_api::limits::NAME_MAX_CHARS)?;
    let description = validation::description(
        "description",
        body.description.as_deref(),
        noxus_api::limits::WORKSPACE_DESCRIPTION_MAX_CHARS,
    )?;
    let workspace = state
        .store()
        .create_workspace(
            &auth.actor(),
            auth.organization_id(),
            &name,
            description.as_deref(),
            auth.user_id(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(workspace_body(&workspace))))
}

/// Changes a workspace's settings: the default rate limit of its keys.
/// Needs `workspace:write` there (`org:workspaces:write` for another
/// workspace); the limit stays under the operator's ceiling.
#[utoipa::path(patch, path = "/v1/admin/groups/{id}", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    request_body = UpdateWorkspace,
    responses((status = 200, body = Workspace),
              (status = 403, description = "Needs `workspace:write` (`org:workspaces:write` for another workspace), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody)))]
async fn update_workspace(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<WorkspaceId>,
    ApiJson(body): ApiJson<UpdateWorkspace>,
) -> Result<Json<Workspace>> {
    let workspace = target_workspace(&state, &auth, &id).await?;
    auth.require_in(
        &workspace.id,
        Permission::WorkspaceWrite,
        Permission::OrgWorkspacesWrite,
    )?;
    let limit = rate_limit_of("rate_limit", body.rate_limit)?;
    if let Some(limit) = limit {
        let (caller, _) = caller_in(&state, &auth, &workspace).await?;
        RateBounds::of(&state).check_setting(&caller, "rate_limit", limit)?;
    }
    let updated = state
        .store()
        .set_workspace_rate_limit(&auth.actor(), auth.organization_id(), &workspace.id, limit)
        .await?;
    Ok(Json(workspace_body(&updated)))
}

/// Deletes a workspace with its keys and workflows. Needs
/// `org:workspaces:write` (a tenant-admin key); a key cannot delete its own
/// workspace.
#[utoipa::path(delete, path = "/v1/admin/groups/{id}", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    responses((status = 200, body = Deleted),
              (status = 403, description = "Needs `org:workspaces:write`, a tenant-admin key (`insufficient_permissions`), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody),
              (status = 409, description = "A key cannot delete its own workspace (`conflict`)", body = ErrorBody)))]
async fn delete_workspace(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<WorkspaceId>,
) -> Result<Json<Deleted>> {
    let workspace = target_workspace(&state, &auth, &id).await?;
    auth.require(Permission::OrgWorkspacesWrite)?;
    if &workspace.id == auth.workspace_id() {
        return Err(ApiError::Conflict(
            "A key cannot delete its own workspace; use a tenant-admin key of another workspace"
                .to_owned(),
        ));
    }
    state
        .store()
        .delete_workspace(&auth.actor(), auth.organization_id(), &workspace.id)
        .await?;
    Ok(Json(Deleted {
        deleted: true,
        id: workspace.id.into_string(),
    }))
}

/// Keys of a workspace (never their secrets), newest first: all of them
/// with `keys:manage` (`org:keys:read` in another workspace), else the
/// caller's own (`keys:read`). A bare array, or a page envelope when `page`
/// or `size` is given (size 1 to 100, default 50).
#[utoipa::path(get, path = "/v1/admin/groups/{id}/api-keys", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"), ListQuery),
    responses((status = 200, description = "A bare array without `page` and `size`, a page with either", body = KeyList),
              (status = 403, description = "Needs `keys:read` (`org:keys:read` in another workspace), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<WorkspaceId>,
    query: QueryPairs,
) -> Result<Response> {
    let page = query.int(&PAGE)?;
    let size = query.int(&LIST_SIZE)?;
    let workspace = target_workspace(&state, &auth, &id).await?;
    let (caller, _) = caller_in(&state, &auth, &workspace).await?;
    let only_own = if keys::sees_all(&caller) {
        None
    } else {
        auth.require_in(&workspace.id, Permission::KeysRead, Permission::OrgKeysRead)?;
        Some(auth.user_id())
    };
    if page.is_none() && size.is_none() {
        let keys = state.store().list_keys(&workspace.id, only_own).await?;
        let body: Vec<ApiKeyInfo> = keys.iter().map(key_info).collect();
        return Ok(Json(body).into_response());
    }
    let (page, size) = (page.unwrap_or(1), size.unwrap_or(50));
    let (keys, total) = state
        .store()
        .list_keys_page(&workspace.id, only_own, (page - 1) * size, size)
        .await?;
    Ok(Json(Page {
        items: keys.iter().map(key_info).collect::<Vec<_>>(),
        total,
        page,
        size,
        pages: total.div_ceil(size),
    })
    .into_response())
}

/// Creates a key owned by the caller's user in the workspace; the secret is
/// in this response only (sent with `Cache-Control: no-store`). A key never
/// creates anything greater than itself: the new key's `permissions` are a
/// subset of the caller's (default: the caller's own restriction), its
/// `expires_at` no later than the caller's (default: the caller's), its
/// `rate_limit` no higher (see docs/api-keys.md). Needs `keys:write` there
/// (`org:keys:write` in another workspace, where the caller must be a
/// member); `tenant_admin: true` needs a tenant-admin key with
/// `org:keys:write`.
#[utoipa::path(post, path = "/v1/admin/groups/{id}/api-keys", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey),
              (status = 403, description = "Needs `keys:write` (`org:keys:write` in another workspace), or asks for more than the calling key holds (`insufficient_permissions`); or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody),
              (status = 409, description = "A key quota is reached (`conflict`)", body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<WorkspaceId>,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<Response> {
    let workspace = target_workspace(&state, &auth, &id).await?;
    // Said here first for the clearest sentence; `keys::mint` checks it too.
    auth.require_in(
        &workspace.id,
        Permission::KeysWrite,
        Permission::OrgKeysWrite,
    )?;
    let name = validation::name("name", &body.name, noxus_api::limits::NAME_MAX_CHARS)?;
    let permissions = match body.permissions {
        None => None,
        Some(names) => {
            let mut perms = Vec::with_capacity(names.len());
            for (i, raw) in names.iter().enumerate() {
                let p: Permission = raw.parse().map_err(|e| {
                    ApiError::validation(
                        format!("permissions[{i}]"),
                        format!("permissions[{i}]: {e}"),
                    )
                })?;
                perms.push(p);
            }
            Some(perms)
        }
    };
    let rate_limit = rate_limit_of("rate_limit", body.rate_limit)?;
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(raw) => {
            let at = parse_rfc3339(raw).map_err(|_| {
                ApiError::validation(
                    "expires_at",
                    "expires_at must be an RFC 3339 time such as 2030-01-31T12:00:00Z",
                )
            })?;
            if at <= OffsetDateTime::now_utc() {
                return Err(ApiError::validation(
                    "expires_at",
                    "expires_at must be in the future",
                ));
            }
            Some(at)
        }
    };
    let (caller, role) = caller_in(&state, &auth, &workspace).await?;
    let request = keys::mint(
        &caller,
        &workspace,
        role,
        MintRequest {
            name,
            tenant_admin: body.tenant_admin,
            permissions,
            expires_at,
            rate_limit,
        },
        &RateBounds::of(&state),
    )?;
    let (record, secret) = keys::issue(&state, &auth.actor(), request).await?;
    Ok(secret_response(created_body(
        &record,
        secret.expose_secret(),
    )))
}

/// A 201 that carries a secret: never stored by a cache.
fn secret_response(body: CreatedApiKey) -> Response {
    (
        StatusCode::CREATED,
        [
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

fn created_body(record: &KeyRecord, secret: &str) -> CreatedApiKey {
    CreatedApiKey {
        id: record.id.to_string(),
        name: record.name.clone(),
        tenant_admin: record.tenant_admin,
        value: secret.to_owned(),
        permissions: record.restriction.clone(),
        workspace_id: record.workspace_id.to_string(),
        user_id: record.user_id.to_string(),
        created_at: rfc3339(record.created_at),
        expires_at: record.expires_at.map(rfc3339),
        replaces: None,
        replaced_key_valid_until: None,
    }
}

/// A key of `workspace` that `caller` may see; others' keys it may not see
/// are 404 (their existence is not revealed).
pub(crate) async fn visible_key(
    state: &AppState,
    caller: &Caller,
    workspace: &WorkspaceRecord,
    key_id: &KeyId,
) -> Result<KeyRecord> {
    let key = state
        .store()
        .key(&workspace.id, key_id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    match keys::may_see(caller, &key) {
        Ok(()) => Ok(key),
        Err(None) => Err(ApiError::not_found("API key")),
        Err(Some(refused)) => Err(refused.into()),
    }
}

/// One key (never its secret).
#[utoipa::path(get, path = "/v1/admin/groups/{id}/api-keys/{key_id}", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"), ("key_id" = String, Path, description = "Key id")),
    responses((status = 200, body = ApiKeyInfo),
              (status = 403, description = "Needs `keys:manage` for others' keys (`org:keys:read` in another workspace), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody)))]
async fn get_key(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath((id, key_id)): ApiPath<(WorkspaceId, KeyId)>,
) -> Result<Json<ApiKeyInfo>> {
    let workspace = target_workspace(&state, &auth, &id).await?;
    let (caller, _) = caller_in(&state, &auth, &workspace).await?;
    let key = visible_key(&state, &caller, &workspace, &key_id).await?;
    Ok(Json(key_info(&key)))
}

/// Revokes a key, at once and for good. A key may always revoke itself;
/// otherwise own keys need `keys:write`, others' `keys:manage`
/// (`org:keys:write` in another workspace).
#[utoipa::path(delete, path = "/v1/admin/groups/{id}/api-keys/{key_id}", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"), ("key_id" = String, Path, description = "Key id")),
    responses((status = 200, description = "The key's final state", body = ApiKeyInfo),
              (status = 403, description = "Needs `keys:write` for own keys, `keys:manage` for others' (`org:keys:write` in another workspace), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath((id, key_id)): ApiPath<(WorkspaceId, KeyId)>,
) -> Result<Json<ApiKeyInfo>> {
    let workspace = target_workspace(&state, &auth, &id).await?;
    let (caller, _) = caller_in(&state, &auth, &workspace).await?;
    let key = match visible_key(&state, &caller, &workspace, &key_id).await {
        // A key may always revoke itself, even when it may not list keys.
        Err(_) if key_id == auth.record().key.id && &workspace.id == auth.workspace_id() => {
            auth.record().key.clone()
        }
        other => other?,
    };
    keys::may_revoke(&caller, &key)?;
    let revoked = keys::revoke(&state, &auth.actor(), &workspace.id, &key.id).await?;
    Ok(Json(key_info(&revoked)))
}

/// Replaces a key by a new one with the same name, owner, restriction,
/// rate limit and expiry (the same instant: rotation never extends a key's
/// life). The old key keeps working for `grace_period_seconds` (0 to 7 days;
/// 0 revokes it at once). Only the key's owner may rotate it, with
/// `keys:write` (`org:keys:write` in another workspace), and a key rotates
/// only keys no greater than itself. The new secret is in this response
/// only (`Cache-Control: no-store`).
#[utoipa::path(post, path = "/v1/admin/groups/{id}/api-keys/{key_id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"), ("key_id" = String, Path, description = "Key id")),
    request_body = RotateApiKey,
    responses((status = 201, body = CreatedApiKey),
              (status = 403, description = "Only the key's owner rotates it (`required_permission` is `owner`), with `keys:write` (`org:keys:write` in another workspace), and only keys no greater than the calling key; or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody),
              (status = 409, description = "The key is revoked, expired or already rotated (`conflict`)", body = ErrorBody)))]
async fn rotate_key(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath((id, key_id)): ApiPath<(WorkspaceId, KeyId)>,
    ApiJson(body): ApiJson<RotateApiKey>,
) -> Result<Response> {
    let workspace = target_workspace(&state, &auth, &id).await?;
    let (caller, role) = caller_in(&state, &auth, &workspace).await?;
    let old = match visible_key(&state, &caller, &workspace, &key_id).await {
        Err(_) if key_id == auth.record().key.id && &workspace.id == auth.workspace_id() => {
            auth.record().key.clone()
        }
        other => other?,
    };
    // Said here first for the clearest sentence; `keys::may_rotate` checks it too.
    auth.require_in(
        &workspace.id,
        Permission::KeysWrite,
        Permission::OrgKeysWrite,
    )?;
    keys::may_rotate(&caller, &workspace, &old, role, &RateBounds::of(&state))?;
    let rotated = keys::rotate(&state, &auth.actor(), &old, body.grace_period_seconds)
        .await
        .map_err(|err| match err {
            RotateError::GraceTooLong => ApiError::validation(
                "grace_period_seconds",
                format!("grace_period_seconds must be from 0 to {MAX_GRACE_SECONDS} (7 days)"),
            ),
            RotateError::Store(e) => e.into(),
        })?;
    let mut body = created_body(&rotated.new, rotated.secret.expose_secret());
    body.replaces = Some(rotated.old.id.to_string());
    body.replaced_key_valid_until = Some(rfc3339(rotated.old_valid_until));
    Ok(secret_response(body))
}
