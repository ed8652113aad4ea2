//! Settings → Organization: the organization, its workspaces and users, and
//! the access check every workspace page goes through.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use noxus_api::{Permission, Role};

use super::layout::Layout;
use super::session::{CurrentUser, Form};
use super::{page, WebError, WebResult};
use crate::domain::validation;
use crate::state::AppState;
use crate::store::{NewUser, WorkspaceRecord};
use crate::store::{UserId, WorkspaceId};

/// What the current user may do in one workspace.
#[derive(Debug)]
pub(super) struct Access {
    /// The workspace.
    pub workspace: WorkspaceRecord,
    /// The user's own membership, if any.
    pub membership: Option<Role>,
    /// The role the dashboard acts with: the membership, or owner for an
    /// organization admin.
    pub role: Role,
    /// The user is an active organization admin.
    pub org_admin: bool,
}

impl Access {
    /// Whether the role allows `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.role.grants(permission)
    }

    /// 403 unless the role allows `permission` (the page may show nothing,
    /// but the server refuses anyway).
    pub fn require(&self, permission: Permission) -> WebResult<()> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(WebError::Forbidden(format!(
                "As {} of this workspace you cannot {}; ask an owner or admin of this workspace.",
                super::layout::role_with_article(self.role),
                super::layout::permission_label(permission)
            )))
        }
    }
}

/// Loads a workspace for the current user: 404 if it is not theirs to see.
pub(super) async fn access(
    state: &AppState,
    user: &CurrentUser,
    workspace_id: &WorkspaceId,
) -> WebResult<Access> {
    let not_found = || WebError::NotFound("No such workspace".to_owned());
    let workspace = state
        .store()
        .workspace(&user.user.organization_id, workspace_id)
        .await?
        .ok_or_else(not_found)?;
    let membership = state
        .store()
        .membership(&workspace.id, &user.user.id)
        .await?;
    let org_admin = user.user.is_active_org_admin();
    let role = match (membership, org_admin) {
        (_, true) => Role::Owner,
        (Some(role), false) => role,
        (None, false) => return Err(not_found()),
    };
    Ok(Access {
        workspace,
        membership,
        role,
        org_admin,
    })
}

#[derive(Template)]
#[template(path = "organization.html")]
struct OrganizationPage<'a> {
    layout: Layout,
    csrf: &'a str,
    organization: &'a str,
    is_org_admin: bool,
    workspace_count: usize,
}

/// GET /settings/organization.
pub async fn organization_page(State(state): State<AppState>, user: CurrentUser) -> WebResult {
    let organization = state
        .store()
        .organization()
        .await?
        .map(|o| o.name)
        .unwrap_or_default();
    let workspace_count = visible_workspaces(&state, &user).await?.len();
    Ok(page(
        StatusCode::OK,
        &OrganizationPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            organization: &organization,
            is_org_admin: user.user.is_active_org_admin(),
            workspace_count,
        },
    ))
}

/// A workspace row of the list.
struct WorkspaceRow {
    id: String,
    name: String,
    description: String,
    role: String,
}

async fn visible_workspaces(state: &AppState, user: &CurrentUser) -> WebResult<Vec<WorkspaceRow>> {
    let mine = state.store().workspaces_of_user(&user.user.id).await?;
    let role_of = |id: &WorkspaceId| {
        mine.iter()
            .find(|(w, _)| &w.id == id)
            .map(|(_, r)| r.to_string())
    };
    let all: Vec<WorkspaceRecord> = if user.user.is_org_admin {
        state
            .store()
            .list_workspaces(&user.user.organization_id)
            .await?
    } else {
        mine.iter().map(|(w, _)| w.clone()).collect()
    };
    Ok(all
        .into_iter()
        .map(|w| WorkspaceRow {
            role: role_of(&w.id).unwrap_or_else(|| "organization admin".to_owned()),
            description: w.description.unwrap_or_default(),
            id: w.id.into_string(),
            name: w.name,
        })
        .collect())
}

#[derive(Template)]
#[template(path = "workspaces.html")]
struct WorkspacesPage<'a> {
    layout: Layout,
    csrf: &'a str,
    workspaces: Vec<WorkspaceRow>,
    can_create: bool,
    error: Option<&'a str>,
}

/// GET /settings/organization/workspaces.
pub async fn workspaces_page(State(state): State<AppState>, user: CurrentUser) -> WebResult {
    let workspaces = visible_workspaces(&state, &user).await?;
    Ok(page(
        StatusCode::OK,
        &WorkspacesPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            workspaces,
            can_create: user.user.is_org_admin,
            error: None,
        },
    ))
}

/// POST /settings/organization/workspaces: organization admins only.
pub async fn create_workspace(
    State(state): State<AppState>,
    user: CurrentUser,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    if !user.user.is_org_admin {
        return Err(WebError::Forbidden(
            "Only organization admins create workspaces.".to_owned(),
        ));
    }
    let name = match validation::name("name", form.get("name").unwrap_or(""), 100) {
        Ok(name) => name,
        Err(err) => {
            let workspaces = visible_workspaces(&state, &user).await?;
            let message = err.to_string();
            return Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &WorkspacesPage {
                    layout: Layout::of(&user),
                    csrf: user.csrf(),
                    workspaces,
                    can_create: true,
                    error: Some(&message),
                },
            ));
        }
    };
    let description = form
        .get("description")
        .map(str::trim)
        .filter(|d| !d.is_empty());
    let workspace = state
        .store()
        .create_workspace(
            &user.actor(),
            &user.user.organization_id,
            &name,
            description,
            &user.user.id,
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/settings/organization/workspaces/{}/api-keys",
        workspace.id
    ))
    .into_response())
}

/// GET /settings/organization/workspaces/{id}: the API Keys tab.
pub async fn workspace_home(Path(id): Path<String>) -> Redirect {
    Redirect::to(&format!(
        "/settings/organization/workspaces/{}/api-keys",
        super::keys::path_segment(&id)
    ))
}

struct UserRow {
    id: String,
    email: String,
    name: String,
    org_admin: bool,
    active: bool,
    is_you: bool,
    must_change_password: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage<'a> {
    layout: Layout,
    csrf: &'a str,
    users: Vec<UserRow>,
    error: Option<&'a str>,
    notice: Option<&'a str>,
}

/// Only organization admins see and manage the organization's users.
fn require_org_admin(user: &CurrentUser) -> WebResult<()> {
    if user.user.is_active_org_admin() {
        Ok(())
    } else {
        Err(WebError::Forbidden(
            "Only organization admins see the organization's users; ask one of them if you need an account created or changed.".to_owned(),
        ))
    }
}

const USERS_URL: &str = "/settings/organization/users";

async fn users_page_with(
    state: &AppState,
    user: &CurrentUser,
    status: StatusCode,
    error: Option<&str>,
    notice: Option<&str>,
) -> WebResult {
    let users = state
        .store()
        .list_users(&user.user.organization_id)
        .await?
        .into_iter()
        .map(|u| UserRow {
            is_you: u.id == user.user.id,
            active: u.is_active(),
            id: super::keys::path_segment(&u.id),
            email: u.email,
            name: u.name,
            org_admin: u.is_org_admin,
            must_change_password: u.must_change_password,
        })
        .collect();
    Ok(page(
        status,
        &UsersPage {
            layout: Layout::of(user),
            csrf: user.csrf(),
            users,
            error,
            notice,
        },
    ))
}

/// GET /settings/organization/users: organization admins only.
pub async fn users_page(State(state): State<AppState>, user: CurrentUser) -> WebResult {
    require_org_admin(&user)?;
    users_page_with(&state, &user, StatusCode::OK, None, None).await
}

/// POST /settings/organization/users: an organization admin creates an
/// account with an initial password, which the user must change at first
/// login. Creating an organization admin asks for the password again.
pub async fn create_user(
    State(state): State<AppState>,
    user: CurrentUser,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    require_org_admin(&user)?;
    let org_admin = form.get("org_admin") == Some("on");
    if org_admin {
        user.require_sudo(USERS_URL)?;
    }
    let email = form.get("email").unwrap_or("").trim().to_ascii_lowercase();
    let name = form.get("name").unwrap_or("").trim().to_owned();
    let password = form.get("password").unwrap_or("");
    let error = if !email.contains('@') || email.len() > 254 {
        Some("Enter a valid email address.")
    } else if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        Some("Enter a name of 1 to 100 characters.")
    } else {
        super::account::check_new_password(password, None).err()
    };
    if let Some(error) = error {
        return users_page_with(
            &state,
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(error),
            None,
        )
        .await;
    }
    let hash = state.passwords().hash(password).await?;
    state
        .store()
        .create_user(
            &user.actor(),
            NewUser {
                organization_id: user.user.organization_id.clone(),
                email,
                name,
                password_hash: hash,
                is_org_admin: org_admin,
                must_change_password: true,
            },
        )
        .await?;
    Ok(Redirect::to(USERS_URL).into_response())
}

/// The user of the organization named in the path of a user-management
/// form: the form's CSRF token, an organization admin acting, and the
/// password entered in the last 10 minutes.
async fn managed_user(
    state: &AppState,
    user: &CurrentUser,
    form: &Form,
    user_id: &UserId,
) -> WebResult<crate::store::UserRecord> {
    user.check_csrf(form)?;
    require_org_admin(user)?;
    user.require_sudo(USERS_URL)?;
    state
        .store()
        .user(user_id)
        .await?
        .filter(|u| u.organization_id == user.user.organization_id)
        .ok_or_else(|| WebError::NotFound("No such user in your organization".to_owned()))
}

/// POST …/users/{id}/deactivate: ends their sessions and revokes every key of
/// theirs at once. Asks for the password again.
pub async fn deactivate_user(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(user_id): Path<UserId>,
    form: Form,
) -> WebResult {
    let target = managed_user(&state, &user, &form, &user_id).await?;
    if target.id == user.user.id {
        return Err(WebError::Conflict(
            "You cannot deactivate yourself; ask another organization admin.".to_owned(),
        ));
    }
    let (_, revoked) = crate::users::set_active(
        &state,
        &user.actor(),
        &user.user.organization_id,
        &target.id,
        false,
    )
    .await?;
    let notice = format!(
        "{} was deactivated: their sessions ended and {} key(s) were revoked.",
        target.email,
        revoked.len()
    );
    users_page_with(&state, &user, StatusCode::OK, None, Some(&notice)).await
}

/// POST …/users/{id}/reactivate: they may log in again; their keys stay revoked.
pub async fn reactivate_user(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(user_id): Path<UserId>,
    form: Form,
) -> WebResult {
    let target = managed_user(&state, &user, &form, &user_id).await?;
    crate::users::set_active(
        &state,
        &user.actor(),
        &user.user.organization_id,
        &target.id,
        true,
    )
    .await?;
    let notice = format!(
        "{} was reactivated and may log in again; their old keys stay revoked.",
        target.email
    );
    users_page_with(&state, &user, StatusCode::OK, None, Some(&notice)).await
}

/// POST …/users/{id}/org-admin (`org_admin=on|off`): makes or unmakes an
/// organization admin. Asks for the password again.
pub async fn set_org_admin(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(user_id): Path<UserId>,
    form: Form,
) -> WebResult {
    let target = managed_user(&state, &user, &form, &user_id).await?;
    let make = match form.get("org_admin") {
        Some("on") => true,
        Some("off") => false,
        _ => {
            return Err(WebError::Invalid(
                "Say whether to make or unmake an organization admin.".to_owned(),
            ))
        }
    };
    if make && !target.is_active() {
        return Err(WebError::Conflict(
            "Reactivate the user before making them an organization admin.".to_owned(),
        ));
    }
    crate::users::set_org_admin(
        &state,
        &user.actor(),
        &user.user.organization_id,
        &target.id,
        make,
    )
    .await?;
    if target.id == user.user.id && !make {
        // No longer an admin: this page is not theirs any more.
        return Ok(Redirect::to("/settings/organization").into_response());
    }
    let notice = if make {
        format!("{} is now an organization admin.", target.email)
    } else {
        format!("{} is no longer an organization admin.", target.email)
    };
    users_page_with(&state, &user, StatusCode::OK, None, Some(&notice)).await
}

/// POST …/users/{id}/password: sets a temporary password that the user must
/// change at their next login, and ends their sessions. Not for organization
/// admins (demote them first): one admin may not take over another's
/// identity. Asks for the password again.
pub async fn reset_password(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(user_id): Path<UserId>,
    form: Form,
) -> WebResult {
    let target = managed_user(&state, &user, &form, &user_id).await?;
    if target.id == user.user.id {
        return Err(WebError::Conflict(
            "Change your own password in Your account.".to_owned(),
        ));
    }
    if target.is_org_admin {
        return Err(WebError::Forbidden(
            "An organization admin's password cannot be reset by another admin; they change it themselves (or demote them first).".to_owned(),
        ));
    }
    let password = form.get("password").unwrap_or("");
    if let Err(message) = super::account::check_new_password(password, None) {
        return users_page_with(
            &state,
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(message),
            None,
        )
        .await;
    }
    let hash = state.passwords().hash(password).await?;
    state
        .store()
        .set_password(&user.actor(), &target.id, &hash, true, None)
        .await?;
    let notice = format!(
        "{}'s password was reset: give them the temporary password by a safe channel; they must change it when they log in.",
        target.email
    );
    users_page_with(&state, &user, StatusCode::OK, None, Some(&notice)).await
}
