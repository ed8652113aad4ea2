//! Settings → Organization: the organization, its workspaces and users, and
//! the access check every workspace page goes through.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use noxus_api::{Permission, Role};

use super::session::{CurrentUser, Form};
use super::{page, WebError, WebResult};
use crate::domain::validation;
use crate::state::AppState;
use crate::store::WorkspaceRecord;

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
                "Your role in this workspace ({}) does not allow this: it needs `{permission}`.",
                self.role
            )))
        }
    }
}

/// Loads a workspace for the current user: 404 if it is not theirs to see.
pub(super) async fn access(
    state: &AppState,
    user: &CurrentUser,
    workspace_id: &str,
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
    let role = match (membership, user.user.is_org_admin) {
        (_, true) => Role::Owner,
        (Some(role), false) => role,
        (None, false) => return Err(not_found()),
    };
    Ok(Access {
        workspace,
        membership,
        role,
    })
}

#[derive(Template)]
#[template(path = "organization.html")]
struct OrganizationPage<'a> {
    user_email: Option<&'a str>,
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
            user_email: Some(&user.user.email),
            csrf: user.csrf(),
            organization: &organization,
            is_org_admin: user.user.is_org_admin,
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
    let role_of = |id: &str| {
        mine.iter()
            .find(|(w, _)| w.id == id)
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
            id: w.id,
            name: w.name,
        })
        .collect())
}

#[derive(Template)]
#[template(path = "workspaces.html")]
struct WorkspacesPage<'a> {
    user_email: Option<&'a str>,
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
            user_email: Some(&user.user.email),
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
                    user_email: Some(&user.user.email),
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
    email: String,
    name: String,
    org_admin: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage<'a> {
    user_email: Option<&'a str>,
    csrf: &'a str,
    users: Vec<UserRow>,
    can_create: bool,
    error: Option<&'a str>,
}

async fn users_rows(state: &AppState, user: &CurrentUser) -> WebResult<Vec<UserRow>> {
    Ok(state
        .store()
        .list_users(&user.user.organization_id)
        .await?
        .into_iter()
        .map(|u| UserRow {
            email: u.email,
            name: u.name,
            org_admin: u.is_org_admin,
        })
        .collect())
}

/// GET /settings/organization/users.
pub async fn users_page(State(state): State<AppState>, user: CurrentUser) -> WebResult {
    let users = users_rows(&state, &user).await?;
    Ok(page(
        StatusCode::OK,
        &UsersPage {
            user_email: Some(&user.user.email),
            csrf: user.csrf(),
            users,
            can_create: user.user.is_org_admin,
            error: None,
        },
    ))
}

/// POST /settings/organization/users: an organization admin creates an account.
pub async fn create_user(
    State(state): State<AppState>,
    user: CurrentUser,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    if !user.user.is_org_admin {
        return Err(WebError::Forbidden(
            "Only organization admins create users.".to_owned(),
        ));
    }
    let email = form.get("email").unwrap_or("").trim().to_ascii_lowercase();
    let name = form.get("name").unwrap_or("").trim().to_owned();
    let password = form.get("password").unwrap_or("");
    let error = if !email.contains('@') || email.len() > 254 {
        Some("Enter a valid email address.")
    } else if name.is_empty() || name.chars().count() > 100 {
        Some("Enter a name of 1 to 100 characters.")
    } else if password.chars().count() < 12 {
        Some("The initial password needs at least 12 characters.")
    } else {
        None
    };
    if let Some(error) = error {
        let users = users_rows(&state, &user).await?;
        return Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &UsersPage {
                user_email: Some(&user.user.email),
                csrf: user.csrf(),
                users,
                can_create: true,
                error: Some(error),
            },
        ));
    }
    let hash = state.passwords().hash(password).await?;
    state
        .store()
        .create_user(
            &user.actor(),
            &user.user.organization_id,
            &email,
            &name,
            &hash,
            form.get("org_admin") == Some("on"),
        )
        .await?;
    Ok(Redirect::to("/settings/organization/users").into_response())
}
