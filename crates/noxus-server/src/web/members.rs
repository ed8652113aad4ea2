//! The Members tab: add an existing user with a role, change roles, remove.
//! The rules (only owners make owners, the last owner stays) live in
//! `crate::members`, so the server refuses whatever the page shows.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use noxus_api::{Permission, Role};

use super::keys::{path_segment, WorkspaceNav};
use super::layout::Layout;
use super::organization::{access, Access};
use super::session::{CurrentUser, Form};
use super::{page, WebError, WebResult};
use crate::members;
use crate::state::AppState;
use crate::store::{UserId, WorkspaceId};

struct MemberRow {
    user_id: String,
    email: String,
    name: String,
    role: String,
    is_you: bool,
    /// The page offers role change and removal (the server checks anyway).
    editable: bool,
}

struct RoleChoice {
    value: &'static str,
    description: String,
}

fn role_choices(access: &Access) -> Vec<RoleChoice> {
    Role::ALL
        .iter()
        .filter(|r| **r != Role::Owner || access.role == Role::Owner)
        .map(|r| RoleChoice {
            value: r.as_str(),
            description: r
                .permissions()
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    members: Vec<MemberRow>,
    roles: Vec<RoleChoice>,
    can_edit: bool,
    error: Option<&'a str>,
}

fn members_url(access: &Access) -> String {
    format!(
        "/settings/organization/workspaces/{}/members",
        path_segment(&access.workspace.id)
    )
}

async fn render(
    state: &AppState,
    user: &CurrentUser,
    access: &Access,
    status: StatusCode,
    error: Option<&str>,
) -> WebResult {
    let rows = state.store().list_members(&access.workspace.id).await?;
    let owners = rows.iter().filter(|(_, role)| *role == Role::Owner).count();
    let can_edit = access.can(Permission::MembersWrite);
    let members = rows
        .into_iter()
        .map(|(u, role)| {
            // Owners are changed by owners only, and the last owner not at all.
            let editable =
                can_edit && (role != Role::Owner || (access.role == Role::Owner && owners > 1));
            MemberRow {
                is_you: u.id == user.user.id,
                user_id: u.id.into_string(),
                email: u.email,
                name: u.name,
                role: role.to_string(),
                editable,
            }
        })
        .collect();
    Ok(page(
        status,
        &MembersPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(access, "members"),
            members,
            roles: role_choices(access),
            can_edit,
            error,
        },
    ))
}

/// GET …/members.
pub async fn members_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
) -> WebResult {
    let access = access(&state, &user, &id).await?;
    access.require(Permission::MembersRead)?;
    render(&state, &user, &access, StatusCode::OK, None).await
}

fn role_field(form: &Form) -> WebResult<Role> {
    form.get("role")
        .unwrap_or("")
        .parse()
        .map_err(|e| WebError::Invalid(format!("{e}")))
}

/// POST …/members: add an existing user of the organization by email.
pub async fn add_member(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = access(&state, &user, &id).await?;
    access.require(Permission::MembersWrite)?;
    let role = role_field(&form)?;
    let email = form.get("email").unwrap_or("").trim().to_ascii_lowercase();
    let target = state
        .store()
        .user_by_email(&email)
        .await?
        .filter(|u| u.organization_id == user.user.organization_id);
    let Some(target) = target else {
        let message = "No user of the organization has this email; create the account in Organization → Users first.";
        return render(
            &state,
            &user,
            &access,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(message),
        )
        .await;
    };
    members::add_checked(
        &state,
        &user.actor(),
        access.role,
        &access.workspace.id,
        &target.id,
        role,
    )
    .await?;
    Ok(Redirect::to(&members_url(&access)).into_response())
}

/// POST …/members/{user}/role.
pub async fn change_role(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, user_id)): Path<(WorkspaceId, UserId)>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = access(&state, &user, &id).await?;
    access.require(Permission::MembersWrite)?;
    let role = role_field(&form)?;
    if state
        .store()
        .membership(&access.workspace.id, &user_id)
        .await?
        .is_none()
    {
        return Err(WebError::NotFound(
            "That user is not a member of this workspace".to_owned(),
        ));
    }
    members::change_checked(
        &state,
        &user.actor(),
        access.role,
        &access.workspace.id,
        &user_id,
        role,
    )
    .await?;
    Ok(Redirect::to(&members_url(&access)).into_response())
}

#[derive(Template)]
#[template(path = "member_remove.html")]
struct RemovePage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    member_id: String,
    member_email: String,
    back_url: String,
}

/// GET …/members/{user}/remove: the confirmation.
pub async fn remove_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, user_id)): Path<(WorkspaceId, UserId)>,
) -> WebResult {
    let access = access(&state, &user, &id).await?;
    access.require(Permission::MembersWrite)?;
    let member = state
        .store()
        .list_members(&access.workspace.id)
        .await?
        .into_iter()
        .find(|(u, _)| u.id == user_id)
        .ok_or_else(|| {
            WebError::NotFound("That user is not a member of this workspace".to_owned())
        })?;
    Ok(page(
        StatusCode::OK,
        &RemovePage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(&access, "members"),
            member_id: path_segment(&member.0.id),
            member_email: member.0.email,
            back_url: members_url(&access),
        },
    ))
}

/// POST …/members/{user}/remove.
pub async fn remove_member(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, user_id)): Path<(WorkspaceId, UserId)>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = access(&state, &user, &id).await?;
    access.require(Permission::MembersWrite)?;
    members::remove_checked(
        &state,
        &user.actor(),
        access.role,
        &access.workspace.id,
        &user_id,
    )
    .await?;
    Ok(Redirect::to(&members_url(&access)).into_response())
}
