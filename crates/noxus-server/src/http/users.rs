//! `/v1/admin/users`: the organization's users, for tenant-admin keys.
//!
//! Through the API a key only takes power away from people: it may list
//! users (`org:users:read`), deactivate them or unmake organization admins
//! and end their sessions (`org:users:write`). Creating users, reactivating
//! them and making organization admins are done in the dashboard, which asks
//! for the person's password again: a leaked key must not be able to mint a
//! dashboard identity for its holder.

use axum::extract::State;
use axum::Json;
use noxus_api::{ErrorBody, Permission, SessionsEnded, TenantUser, UpdateUser};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthContext;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use crate::store::UserId;
use crate::store::UserRecord;

/// The user routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(update_user))
        .routes(routes!(end_sessions))
}

fn user_body(u: &UserRecord) -> TenantUser {
    TenantUser {
        id: u.id.to_string(),
        email: u.email.clone(),
        display_name: Some(u.name.clone()),
        tenant_admin: u.is_org_admin,
        is_active: u.is_active(),
        must_change_password: u.must_change_password,
    }
}

/// The organization's users, by email. Needs `org:users:read`.
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin",
    responses((status = 200, body = Vec<TenantUser>),
              (status = 403, description = "Needs `org:users:read`, a tenant-admin key (`insufficient_permissions`)", body = ErrorBody)))]
async fn list_users(
    State(state): State<AppState>,
    auth: AuthContext,
) -> Result<Json<Vec<TenantUser>>> {
    auth.require(Permission::OrgUsersRead)?;
    let users = state.store().list_users(auth.organization_id()).await?;
    Ok(Json(users.iter().map(user_body).collect()))
}

async fn target(state: &AppState, auth: &AuthContext, id: &UserId) -> Result<UserRecord> {
    state
        .store()
        .user(id)
        .await?
        .filter(|u| &u.organization_id == auth.organization_id())
        .ok_or_else(|| ApiError::not_found("user"))
}

/// Deactivates a user (`{"is_active": false}`: their sessions end and every
/// key of theirs is revoked at once) and/or unmakes an organization admin
/// (`{"tenant_admin": false}`). Needs `org:users:write`. Giving power back
/// (`true`) is refused here: do it in the dashboard.
#[utoipa::path(patch, path = "/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "User id")),
    request_body = UpdateUser,
    responses((status = 200, body = TenantUser),
              (status = 403, description = "Needs `org:users:write`, a tenant-admin key; `true` (giving power back) is refused, it is done in the dashboard (`insufficient_permissions`)", body = ErrorBody),
              (status = 409, description = "A key cannot deactivate its own owner, and the last organization admin stays (`conflict`)", body = ErrorBody)))]
async fn update_user(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<UserId>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<TenantUser>> {
    auth.require(Permission::OrgUsersWrite)?;
    for (field, value) in [
        ("is_active", body.is_active),
        ("tenant_admin", body.tenant_admin),
    ] {
        if value == Some(true) {
            return Err(ApiError::InsufficientPermissions {
                permission: "dashboard".to_owned(),
                detail: format!(
                    "`{field}: true` gives power back, which is done in the dashboard (it asks for the password again); through the API a key can only take power away"
                ),
            });
        }
    }
    let mut user = target(&state, &auth, &id).await?;
    if &user.id == auth.user_id() && (body.is_active == Some(false)) {
        return Err(ApiError::Conflict(
            "A key cannot deactivate its own owner; ask another organization admin.".to_owned(),
        ));
    }
    if body.tenant_admin == Some(false) {
        user = crate::users::set_org_admin(
            &state,
            &auth.actor(),
            auth.organization_id(),
            &user.id,
            false,
        )
        .await?;
    }
    if body.is_active == Some(false) {
        user = crate::users::set_active(
            &state,
            &auth.actor(),
            auth.organization_id(),
            &user.id,
            false,
        )
        .await?
        .0;
    }
    Ok(Json(user_body(&user)))
}

/// Ends every dashboard session of a user (a lost laptop). Needs `org:users:write`.
#[utoipa::path(delete, path = "/v1/admin/users/{id}/sessions", tag = "admin",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = SessionsEnded),
              (status = 403, description = "Needs `org:users:write`, a tenant-admin key (`insufficient_permissions`)", body = ErrorBody)))]
async fn end_sessions(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<UserId>,
) -> Result<Json<SessionsEnded>> {
    auth.require(Permission::OrgUsersWrite)?;
    let user = target(&state, &auth, &id).await?;
    state
        .store()
        .end_sessions(&auth.actor(), &user.id, None)
        .await?;
    tracing::info!(user_id = %user.id, "sessions ended through the API");
    Ok(Json(SessionsEnded {
        user_id: user.id.into_string(),
        ended: true,
    }))
}
