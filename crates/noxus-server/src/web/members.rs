//! The Members tab: add a person by email with a role — an existing user of
//! the organization, or someone without an account yet, whose account is
//! created with a one-time initial password shown once — change roles,
//! remove. The rules (only owners make owners, the last owner stays) live
//! in `crate::members`, so the server refuses whatever the page shows.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use noxus_api::{Permission, Role};
use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::ExposeSecret;

use super::keys::{path_segment, WorkspaceNav};
use super::layout::{permission_label, role_with_article, Layout};
use super::organization::{access, Access};
use super::session::{CurrentUser, Form};
use super::{page, WebError, WebResult};
use crate::members;
use crate::state::AppState;
use crate::store::{NewUser, UserId, WorkspaceId};

/// Longest email accepted (RFC 5321's limit on a path).
const MAX_EMAIL_BYTES: usize = 254;
/// Longest display name.
const MAX_NAME_CHARS: usize = 100;

/// Whether `email` (trimmed, lowercase) looks like an address: something
/// before and after one `@`, no spaces or control characters, not too long.
pub(super) fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && email.len() <= MAX_EMAIL_BYTES
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// What a role lets a person do, in one sentence (the role selector's
/// option text and the roles list).
pub(super) fn role_sentence(role: Role) -> &'static str {
    match role {
        Role::Viewer => "sees the workspace, its workflows and models; cannot create API keys",
        Role::Member => "creates and uses their own API keys, reads and changes workflows",
        Role::Admin => {
            "everything a member does, and manages every key of the workspace and its members (not its owners)"
        }
        Role::Owner => {
            "everything an admin does, and makes or removes owners, renames and deletes the workspace"
        }
    }
}

/// "Member", "Owner": a role as a heading or an option.
fn role_title(role: Role) -> &'static str {
    match role {
        Role::Viewer => "Viewer",
        Role::Member => "Member",
        Role::Admin => "Admin",
        Role::Owner => "Owner",
    }
}

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
    title: &'static str,
    sentence: &'static str,
    /// Every permission of the role, as people say it.
    details: String,
}

/// The roles this user may give (owners only by owners).
fn role_choices(access: &Access) -> Vec<RoleChoice> {
    Role::ALL
        .iter()
        .filter(|r| **r != Role::Owner || access.role == Role::Owner)
        .map(|r| RoleChoice {
            value: r.as_str(),
            title: role_title(*r),
            sentence: role_sentence(*r),
            details: r
                .permissions()
                .iter()
                .map(|p| permission_label(*p))
                .collect::<Vec<_>>()
                .join("; "),
        })
        .collect()
}

/// What was typed in the add form (kept when it is shown again).
#[derive(Debug, Default, serde::Deserialize)]
pub struct AddFields {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

/// The add form's error: which field, and the sentence.
struct FieldError {
    field: &'static str,
    message: String,
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
    /// A fresh one per view of the form: one submission adds once.
    nonce: String,
    typed: AddFields,
    error_field: &'static str,
    error: Option<String>,
}

fn members_url(access: &Access) -> String {
    format!(
        "/settings/organization/workspaces/{}/members",
        path_segment(&access.workspace.id)
    )
}

fn new_nonce() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

async fn render(
    state: &AppState,
    user: &CurrentUser,
    access: &Access,
    typed: AddFields,
    error: Option<FieldError>,
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
    let typed = AddFields {
        role: if typed.role.is_empty() {
            Role::Member.as_str().to_owned()
        } else {
            typed.role
        },
        ..typed
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let (error_field, error) = match error {
        Some(e) => (e.field, Some(e.message)),
        None => ("", None),
    };
    Ok(page(
        status,
        &MembersPage {
            layout: Layout::of(user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(access, "members"),
            members,
            roles: role_choices(access),
            can_edit,
            nonce: new_nonce(),
            typed,
            error_field,
            error,
        },
    ))
}

/// GET …/members (`?email=&name=&role=` fill the add form in again after
/// the password confirmation an invitation asks for).
pub async fn members_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
    prefill: Result<Query<AddFields>, QueryRejection>,
) -> WebResult {
    let access = access(&state, &user, &id).await?;
    access.require(Permission::MembersRead)?;
    let typed = prefill.map(|Query(fields)| fields).unwrap_or_default();
    render(&state, &user, &access, typed, None).await
}

fn role_field(form: &Form) -> WebResult<Role> {
    form.get("role")
        .unwrap_or("")
        .parse()
        .map_err(|_| WebError::Invalid("Choose one of the roles offered.".to_owned()))
}

/// Checks the add form; the first invalid field and why.
fn check_add(access: &Access, typed: &AddFields) -> Result<Role, FieldError> {
    if !valid_email(&typed.email) {
        return Err(FieldError {
            field: "email",
            message: "Enter the person's email address, such as ada@example.com.".to_owned(),
        });
    }
    let role: Role = typed.role.parse().map_err(|_| FieldError {
        field: "role",
        message: "Choose one of the roles offered.".to_owned(),
    })?;
    if role == Role::Owner && access.role != Role::Owner {
        return Err(FieldError {
            field: "role",
            message: format!(
                "Only an owner can make someone owner; as {} you can give the other roles.",
                role_with_article(access.role)
            ),
        });
    }
    if typed.name.chars().count() > MAX_NAME_CHARS || typed.name.chars().any(char::is_control) {
        return Err(FieldError {
            field: "name",
            message: format!(
                "Keep the name to {MAX_NAME_CHARS} characters at most (or leave it empty)."
            ),
        });
    }
    Ok(role)
}

#[derive(Template)]
#[template(path = "member_invited.html")]
struct InvitedPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    /// `None`: the form was already submitted (nothing shown again).
    invited: Option<Invited<'a>>,
    back_url: String,
}

struct Invited<'a> {
    email: &'a str,
    role: &'static str,
    password: &'a str,
}

/// POST …/members: adds a person by email. An existing user of the
/// organization becomes a member with the role (nothing else about their
/// account changes). For an email without an account, the account is
/// created — a plain user who must choose a password at first login — and
/// its one-time initial password is shown in this answer only.
pub async fn add_member(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = access(&state, &user, &id).await?;
    access.require(Permission::MembersWrite)?;
    let typed = AddFields {
        email: form.get("email").unwrap_or("").trim().to_lowercase(),
        name: form.get("name").unwrap_or("").trim().to_owned(),
        role: form.get("role").unwrap_or("").to_owned(),
    };
    let role = match check_add(&access, &typed) {
        Ok(role) => role,
        Err(error) => return render(&state, &user, &access, typed, Some(error)).await,
    };
    let existing = state.store().user_by_email(&typed.email).await?;
    let back = members_url(&access);
    if existing.is_none() && !user.in_sudo() {
        // Creating an account hands out a credential: confirm the password
        // first, then find the form filled in as it was.
        let query = serde_urlencoded::to_string([
            ("email", typed.email.as_str()),
            ("name", typed.name.as_str()),
            ("role", typed.role.as_str()),
        ])
        .unwrap_or_default();
        return Err(WebError::SudoRequired(format!("{back}?{query}")));
    }
    let nonce = form.get("nonce").filter(|n| n.len() == 32).ok_or_else(|| {
        WebError::Invalid("The form is incomplete; reload the page and try again.".to_owned())
    })?;
    if !state.store().use_nonce(nonce).await? {
        return Ok(page(
            StatusCode::CONFLICT,
            &InvitedPage {
                layout: Layout::of(&user),
                csrf: user.csrf(),
                nav: WorkspaceNav::of(&access, "members"),
                invited: None,
                back_url: back,
            },
        ));
    }
    match existing {
        Some(target) if target.organization_id == user.user.organization_id => {
            if let Some(current) = state
                .store()
                .membership(&access.workspace.id, &target.id)
                .await?
            {
                let error = FieldError {
                    field: "email",
                    message: format!(
                        "{} is already {} of this workspace; change their role in the list above.",
                        target.email,
                        role_with_article(current)
                    ),
                };
                return render(&state, &user, &access, typed, Some(error)).await;
            }
            members::add_checked(
                &state,
                &user.actor(),
                access.role,
                &access.workspace.id,
                &target.id,
                role,
            )
            .await?;
            Ok(user.redirect_with_flash(
                &back,
                &format!(
                    "{} was added to {} as {}.",
                    target.email,
                    access.workspace.name,
                    role_with_article(role)
                ),
            ))
        }
        Some(_) => {
            // An account of another organization: never touched from here.
            let error = FieldError {
                field: "email",
                message: "This email cannot be added to this workspace; ask an organization admin."
                    .to_owned(),
            };
            render(&state, &user, &access, typed, Some(error)).await
        }
        None => {
            let password = members::initial_password();
            let hash = state.passwords().hash(password.expose_secret()).await?;
            let name = if typed.name.is_empty() {
                typed
                    .email
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(MAX_NAME_CHARS)
                    .collect()
            } else {
                typed.name.clone()
            };
            let record = members::invite_checked(
                &state,
                &user.actor(),
                access.role,
                &access.workspace.id,
                NewUser {
                    organization_id: user.user.organization_id.clone(),
                    email: typed.email.clone(),
                    name,
                    password_hash: hash,
                    is_org_admin: false,
                    must_change_password: true,
                },
                role,
            )
            .await?;
            Ok(page(
                StatusCode::CREATED,
                &InvitedPage {
                    layout: Layout::of(&user),
                    csrf: user.csrf(),
                    nav: WorkspaceNav::of(&access, "members"),
                    invited: Some(Invited {
                        email: &record.email,
                        role: role_with_article(role),
                        password: password.expose_secret(),
                    }),
                    back_url: back,
                },
            ))
        }
    }
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
    let member = state
        .store()
        .list_members(&access.workspace.id)
        .await?
        .into_iter()
        .find(|(u, _)| u.id == user_id)
        .ok_or_else(|| {
            WebError::NotFound("That user is not a member of this workspace.".to_owned())
        })?;
    members::change_checked(
        &state,
        &user.actor(),
        access.role,
        &access.workspace.id,
        &user_id,
        role,
    )
    .await?;
    let message = if member.1 == role {
        format!("{} stays {}.", member.0.email, role_with_article(role))
    } else {
        format!(
            "{} is now {} (was {}).",
            member.0.email,
            role_with_article(role),
            role_with_article(member.1)
        )
    };
    Ok(user.redirect_with_flash(&members_url(&access), &message))
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
            WebError::NotFound("That user is not a member of this workspace.".to_owned())
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
    let email = state
        .store()
        .user(&user_id)
        .await?
        .filter(|u| u.organization_id == user.user.organization_id)
        .map(|u| u.email)
        .unwrap_or_else(|| "The member".to_owned());
    members::remove_checked(
        &state,
        &user.actor(),
        access.role,
        &access.workspace.id,
        &user_id,
    )
    .await?;
    let message = format!(
        "{email} was removed from {}; their API keys here stopped working.",
        access.workspace.name
    );
    Ok(user.redirect_with_flash(&members_url(&access), &message))
}

#[cfg(test)]
mod tests {
    use super::valid_email;

    #[test]
    fn emails_are_checked_at_the_door() {
        assert!(valid_email("ada@example.com"));
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "a@b@c",
            "ada lovelace@example.com",
            "ada@exa\tmple.com",
        ] {
            assert!(!valid_email(bad), "{bad:?}");
        }
        assert!(!valid_email(&format!("{}@example.com", "a".repeat(250))));
    }
}
