//! Settings → Organization: the organization, its workspaces and users, and
//! the access check every workspace page goes through.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Redirect;
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
    /// What was typed in the create form (kept when it is shown again).
    typed_name: &'a str,
    typed_description: &'a str,
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
            typed_name: "",
            typed_description: "",
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
    let raw_name = form.get("name").unwrap_or("");
    let raw_description = form.get("description").unwrap_or("");
    let name = match validation::name("name", raw_name, 100) {
        Ok(name) => name,
        Err(_) => {
            let workspaces = visible_workspaces(&state, &user).await?;
            return Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &WorkspacesPage {
                    layout: Layout::of(&user),
                    csrf: user.csrf(),
                    workspaces,
                    can_create: true,
                    typed_name: raw_name,
                    typed_description: raw_description,
                    error: Some(
                        "Give the workspace a name of 1 to 100 characters, such as \"billing\".",
                    ),
                },
            ));
        }
    };
    let description = Some(raw_description.trim()).filter(|d| !d.is_empty());
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
    Ok(user.redirect_with_flash(
        &format!(
            "/settings/organization/workspaces/{}/api-keys",
            super::keys::path_segment(&workspace.id)
        ),
        &format!(
            "Workspace '{}' created; you are its owner. Add people in its Members tab.",
            workspace.name
        ),
    ))
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

/// What was typed in the create-user form (never the password).
#[derive(Default)]
struct TypedUser {
    email: String,
    name: String,
    org_admin: bool,
}

/// A form error on the Users page: the sentence, and where it belongs.
#[derive(Default)]
struct UsersError {
    message: String,
    /// `email`, `name` or `password` of the create form, or `reset` (the
    /// reset form of the user `reset_for`).
    field: &'static str,
    reset_for: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage<'a> {
    layout: Layout,
    csrf: &'a str,
    users: Vec<UserRow>,
    typed: TypedUser,
    error: Option<String>,
    error_field: &'static str,
    reset_for: String,
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
    typed: TypedUser,
    error: Option<UsersError>,
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
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let error = error.unwrap_or_default();
    Ok(page(
        status,
        &UsersPage {
            layout: Layout::of(user),
            csrf: user.csrf(),
            users,
            typed,
            error: (!error.message.is_empty()).then_some(error.message),
            error_field: error.field,
            reset_for: error.reset_for,
        },
    ))
}

/// GET /settings/organization/users: organization admins only.
pub async fn users_page(State(state): State<AppState>, user: CurrentUser) -> WebResult {
    require_org_admin(&user)?;
    users_page_with(&state, &user, TypedUser::default(), None).await
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
    let typed = TypedUser {
        email: form.get("email").unwrap_or("").trim().to_lowercase(),
        name: form.get("name").unwrap_or("").trim().to_owned(),
        org_admin,
    };
    let password = form.get("password").unwrap_or("");
    let error = if !super::members::valid_email(&typed.email) {
        Some((
            "email",
            "Enter a valid email address, such as ada@example.com.",
        ))
    } else if typed.name.is_empty()
        || typed.name.chars().count() > 100
        || typed.name.chars().any(char::is_control)
    {
        Some(("name", "Enter a name of 1 to 100 characters."))
    } else {
        super::account::check_new_password(password, None)
            .err()
            .map(|m| ("password", m))
    };
    let taken = || UsersError {
        message: format!(
            "{} already has an account (see the list above).",
            typed.email
        ),
        field: "email",
        reset_for: String::new(),
    };
    if let Some((field, message)) = error {
        let error = UsersError {
            message: message.to_owned(),
            field,
            reset_for: String::new(),
        };
        return users_page_with(&state, &user, typed, Some(error)).await;
    }
    if state.store().user_by_email(&typed.email).await?.is_some() {
        let error = taken();
        return users_page_with(&state, &user, typed, Some(error)).await;
    }
    let hash = state.passwords().hash(password).await?;
    let created = state
        .store()
        .create_user(
            &user.actor(),
            NewUser {
                organization_id: user.user.organization_id.clone(),
                email: typed.email.clone(),
                name: typed.name.clone(),
                password_hash: hash,
                is_org_admin: org_admin,
                must_change_password: true,
            },
        )
        .await;
    let created = match created {
        Ok(created) => created,
        Err(crate::store::StoreError::Conflict(crate::store::ConflictKind::UserEmail)) => {
            let error = taken();
            return users_page_with(&state, &user, typed, Some(error)).await;
        }
        Err(other) => return Err(other.into()),
    };
    let what = if created.is_org_admin {
        "an organization admin's account"
    } else {
        "an account"
    };
    Ok(user.redirect_with_flash(
        USERS_URL,
        &format!(
            "{} now has {what}. Give them the initial password by a safe channel: they choose their own when they first log in. Add them to workspaces in each workspace's Members tab.",
            created.email
        ),
    ))
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
    let keys = match revoked.len() {
        0 => "they had no working API key".to_owned(),
        1 => "their 1 API key was revoked".to_owned(),
        n => format!("their {n} API keys were revoked"),
    };
    let notice = format!(
        "{} was deactivated: their sessions ended and {keys}.",
        target.email
    );
    Ok(user.redirect_with_flash(USERS_URL, &notice))
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
    Ok(user.redirect_with_flash(USERS_URL, &notice))
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
        return Ok(user.redirect_with_flash(
            "/settings/organization",
            "You are no longer an organization admin.",
        ));
    }
    let notice = if make {
        format!("{} is now an organization admin.", target.email)
    } else {
        format!("{} is no longer an organization admin.", target.email)
    };
    Ok(user.redirect_with_flash(USERS_URL, &notice))
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
        let error = UsersError {
            message: format!("{} Nothing was changed for {}.", message, target.email),
            field: "reset",
            reset_for: super::keys::path_segment(&target.id),
        };
        return users_page_with(&state, &user, TypedUser::default(), Some(error)).await;
    }
    let hash = state.passwords().hash(password).await?;
    state
        .store()
        .set_password(&user.actor(), &target.id, &hash, true, None)
        .await?;
    let notice = format!(
        "{}'s password was reset and their sessions ended: give them the temporary password by a safe channel; they must change it when they log in.",
        target.email
    );
    Ok(user.redirect_with_flash(USERS_URL, &notice))
}
