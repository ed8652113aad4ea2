//! The API Keys tab: list, create (the secret shown once), revoke, rotate.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use noxus_api::key_format::masked;
use noxus_api::Permission;
use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::ExposeSecret;
use time::{Duration, OffsetDateTime};

use super::layout::Layout;
use super::organization::{access, Access};
use super::session::{CurrentUser, Form};
use super::{page, WebError, WebResult};
use crate::domain::validation;
use crate::keys::{self, Caller, KeyStatus, MintRequest, RateBounds, RotateError};
use crate::state::AppState;
use crate::store::KeyRecord;
use crate::store::{KeyId, UserId, WorkspaceId};

/// Keeps an id from the URL safe to put back into a URL.
pub(super) fn path_segment(id: impl AsRef<str>) -> String {
    id.as_ref()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

fn new_key_url(workspace_id: &WorkspaceId) -> String {
    format!("{}/new", keys_url(workspace_id))
}

fn keys_url(workspace_id: &WorkspaceId) -> String {
    format!(
        "/settings/organization/workspaces/{}/api-keys",
        path_segment(workspace_id)
    )
}

fn new_nonce() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

fn date(t: OffsetDateTime) -> String {
    crate::time_fmt::rfc3339(t)
        .chars()
        .take(16)
        .collect::<String>()
        .replace('T', " ")
}

/// The workspace header and tabs shared by the workspace pages.
pub(super) struct WorkspaceNav {
    pub id: String,
    pub name: String,
    pub role: String,
    pub tab: &'static str,
    /// The Members tab is offered (`members:read`).
    pub members: bool,
    /// The Audit tab is offered (`keys:manage`).
    pub audit: bool,
}

impl WorkspaceNav {
    pub(super) fn of(access: &Access, tab: &'static str) -> Self {
        Self {
            id: path_segment(&access.workspace.id),
            name: access.workspace.name.clone(),
            role: access.role.to_string(),
            tab,
            members: access.can(Permission::MembersRead),
            audit: access.can(Permission::KeysManage),
        }
    }
}

struct KeyRow {
    id: String,
    name: String,
    value: String,
    created_by: String,
    created: String,
    last_used: String,
    expires: String,
    status: &'static str,
    status_note: String,
    restricted: String,
    can_revoke: bool,
    can_rotate: bool,
    sparkline: super::usage::Sparkline,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    keys: Vec<KeyRow>,
    can_create: bool,
    showing_all: bool,
}

fn caller(access: &Access, user: &CurrentUser) -> Caller {
    Caller::person(&user.user, access.role)
}

/// GET …/api-keys.
pub async fn keys_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
) -> WebResult {
    let access = access(&state, &user, &id).await?;
    let caller = caller(&access, &user);
    let bounds = RateBounds::of(&state);
    let showing_all = keys::sees_all(&caller);
    let only_own = (!showing_all).then_some(&user.user.id);
    let records = state
        .store()
        .list_keys(&access.workspace.id, only_own)
        .await?;
    let emails: HashMap<UserId, String> = state
        .store()
        .list_users(&user.user.organization_id)
        .await?
        .into_iter()
        .map(|u| (u.id, u.email))
        .collect();
    let now = OffsetDateTime::now_utc();
    state.usage().flush(state.store()).await;
    let day = crate::reports::Range::last(24, 1);
    let hours = state
        .store()
        .usage_hours(&access.workspace.id, None, day.from_hour, day.to_hour)
        .await?;
    let keys = records
        .iter()
        .map(|k| {
            let status = KeyStatus::of(k, now);
            KeyRow {
                id: k.id.to_string(),
                name: k.name.clone(),
                value: masked(&k.prefix, &k.suffix),
                created_by: emails
                    .get(&k.user_id)
                    .cloned()
                    .unwrap_or_else(|| "(deleted user)".to_owned()),
                created: date(k.created_at),
                last_used: k.last_used_at.map_or_else(
                    || "never".to_owned(),
                    |t| match &k.last_used_addr {
                        Some(addr) => format!("{} from {addr}", date(t)),
                        None => date(t),
                    },
                ),
                expires: k.expires_at.map_or_else(|| "never".to_owned(), date),
                status: status.as_str(),
                status_note: k
                    .revoked_reason
                    .filter(|r| r.is_disabled())
                    .map(|r| r.describe().to_owned())
                    .unwrap_or_default(),
                restricted: k
                    .restriction
                    .as_ref()
                    .map(|r| r.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                can_revoke: status.works() && keys::may_revoke(&caller, k).is_ok(),
                can_rotate: status == KeyStatus::Active
                    && keys::may_rotate(&caller, &access.workspace, k, access.membership, &bounds)
                        .is_ok(),
                sparkline: super::usage::sparkline(&hours, &k.id, day),
            }
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &KeysPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            can_create: access.can(Permission::KeysWrite) && access.membership.is_some(),
            nav: WorkspaceNav::of(&access, "keys"),
            keys,
            showing_all,
        },
    ))
}

struct PermissionChoice {
    value: &'static str,
    id: String,
    checked: bool,
    management: bool,
}

#[derive(Template)]
#[template(path = "key_new.html")]
struct NewKeyPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    nonce: String,
    name: &'a str,
    permissions: Vec<PermissionChoice>,
    error: Option<&'a str>,
    can_tenant_admin: bool,
}

fn choices(access: &Access, checked: &[&str]) -> Vec<PermissionChoice> {
    let mut all: Vec<Permission> = access.role.permissions().to_vec();
    if access.org_admin {
        all.extend_from_slice(Permission::ORGANIZATION);
    }
    all.into_iter()
        .map(|p| PermissionChoice {
            value: p.as_str(),
            id: format!("perm-{}", p.as_str().replace(':', "-")),
            checked: checked.contains(&p.as_str()),
            management: p.is_management(),
        })
        .collect()
}

/// Creating keys needs `keys:write` and a membership (a key of a non-member
/// would be refused on every request).
fn require_create(access: &Access) -> WebResult<()> {
    access.require(Permission::KeysWrite)?;
    if access.membership.is_none() {
        return Err(WebError::Forbidden(
            "You are not a member of this workspace: add yourself in the Members tab first, so that your key can work.".to_owned(),
        ));
    }
    Ok(())
}

/// GET …/api-keys/new.
pub async fn new_key_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
) -> WebResult {
    let access = access(&state, &user, &id).await?;
    require_create(&access)?;
    // The next page shows a secret: confirm the password first.
    user.require_sudo(&new_key_url(&access.workspace.id))?;
    Ok(page(
        StatusCode::OK,
        &NewKeyPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            permissions: choices(&access, &[]),
            nav: WorkspaceNav::of(&access, "keys"),
            nonce: new_nonce(),
            name: "",
            error: None,
            can_tenant_admin: access.org_admin,
        },
    ))
}

#[derive(Template)]
#[template(path = "key_created.html")]
struct CreatedPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    heading: &'a str,
    name: &'a str,
    secret: &'a str,
    note: Option<String>,
    back_url: String,
}

#[derive(Template)]
#[template(path = "key_already_shown.html")]
struct AlreadyShownPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    back_url: String,
}

fn already_shown(user: &CurrentUser, access: &Access) -> axum::response::Response {
    page(
        StatusCode::CONFLICT,
        &AlreadyShownPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(access, "keys"),
            back_url: keys_url(&access.workspace.id),
        },
    )
}

fn expiry(form: &Form) -> WebResult<Option<OffsetDateTime>> {
    let days = match form.get("expires_in").unwrap_or("") {
        "" | "never" => return Ok(None),
        "7d" => 7,
        "30d" => 30,
        "60d" => 60,
        "90d" => 90,
        "365d" => 365,
        other => {
            return Err(WebError::Invalid(format!(
                "Unknown expiry `{}`",
                validation::truncate(other)
            )))
        }
    };
    Ok(Some(OffsetDateTime::now_utc() + Duration::days(days)))
}

/// POST …/api-keys: creates the key and shows its secret once.
pub async fn create_key(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = access(&state, &user, &id).await?;
    require_create(&access)?;
    user.require_sudo(&new_key_url(&access.workspace.id))?;
    let chosen = form.all("permissions");
    let raw_name = form.get("name").unwrap_or("");
    let name = match validation::name("name", raw_name, 100) {
        Ok(name) => name,
        Err(_) => {
            return Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &NewKeyPage {
                    layout: Layout::of(&user),
                    csrf: user.csrf(),
                    permissions: choices(&access, &chosen),
                    nav: WorkspaceNav::of(&access, "keys"),
                    nonce: form.get("nonce").unwrap_or("").to_owned(),
                    name: raw_name,
                    error: Some("Give the key a descriptive name (1 to 100 characters), such as \"billing service\"."),
                    can_tenant_admin: access.org_admin,
                },
            ))
        }
    };
    let mut permissions = Vec::new();
    for raw in &chosen {
        let permission: Permission = raw.parse().map_err(|e| WebError::Invalid(format!("{e}")))?;
        permissions.push(permission);
    }
    // None ticked: the key follows the role (without management permissions).
    let permissions = (!permissions.is_empty()).then_some(permissions);
    let expires_at = expiry(&form)?;
    let request = keys::mint(
        &caller(&access, &user),
        &access.workspace,
        access.membership,
        MintRequest {
            name,
            tenant_admin: form.get("tenant_admin") == Some("on"),
            permissions,
            expires_at,
            rate_limit: None,
        },
        &RateBounds::of(&state),
    )?;
    let nonce = form
        .get("nonce")
        .filter(|n| n.len() == 32)
        .ok_or_else(|| WebError::Invalid("The form is incomplete; reload it".to_owned()))?;
    if !state.store().use_nonce(nonce).await? {
        return Ok(already_shown(&user, &access));
    }
    let (record, secret) = keys::issue(&state, &user.actor(), request).await?;
    Ok(page(
        StatusCode::CREATED,
        &CreatedPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(&access, "keys"),
            heading: "API key created",
            name: &record.name,
            secret: secret.expose_secret(),
            note: record
                .expires_at
                .map(|at| format!("It expires on {}.", date(at))),
            back_url: keys_url(&access.workspace.id),
        },
    ))
}

/// A key of the workspace the user may see, or 404.
async fn visible_key(
    state: &AppState,
    user: &CurrentUser,
    access: &Access,
    key_id: &KeyId,
) -> WebResult<KeyRecord> {
    let key = state
        .store()
        .key(&access.workspace.id, key_id)
        .await?
        .ok_or_else(|| WebError::NotFound("No such key".to_owned()))?;
    match keys::may_see(&caller(access, user), &key) {
        Ok(()) => Ok(key),
        // Others' keys one may not see are not found; one's own, forbidden.
        Err(None) => Err(WebError::NotFound("No such key".to_owned())),
        Err(Some(refused)) => Err(refused.into()),
    }
}

/// A key the user may revoke.
async fn revocable_key(
    state: &AppState,
    user: &CurrentUser,
    access: &Access,
    key_id: &KeyId,
) -> WebResult<KeyRecord> {
    let key = visible_key(state, user, access, key_id).await?;
    keys::may_revoke(&caller(access, user), &key)?;
    Ok(key)
}

/// A key the user may rotate: only their own (rotation shows the new secret).
async fn rotatable_key(
    state: &AppState,
    user: &CurrentUser,
    access: &Access,
    key_id: &KeyId,
) -> WebResult<KeyRecord> {
    let key = visible_key(state, user, access, key_id).await?;
    keys::may_rotate(
        &caller(access, user),
        &access.workspace,
        &key,
        access.membership,
        &RateBounds::of(state),
    )?;
    Ok(key)
}

#[derive(Template)]
#[template(path = "key_revoke.html")]
struct RevokePage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    key_id: String,
    name: String,
    value: String,
    back_url: String,
}

/// GET …/api-keys/{key}/revoke: the confirmation.
pub async fn revoke_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, key_id)): Path<(WorkspaceId, KeyId)>,
) -> WebResult {
    let access = access(&state, &user, &id).await?;
    let key = revocable_key(&state, &user, &access, &key_id).await?;
    Ok(page(
        StatusCode::OK,
        &RevokePage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(&access, "keys"),
            key_id: path_segment(&key.id),
            value: masked(&key.prefix, &key.suffix),
            name: key.name,
            back_url: keys_url(&access.workspace.id),
        },
    ))
}

/// POST …/api-keys/{key}/revoke.
pub async fn revoke_key(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, key_id)): Path<(WorkspaceId, KeyId)>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = access(&state, &user, &id).await?;
    let key = revocable_key(&state, &user, &access, &key_id).await?;
    keys::revoke(&state, &user.actor(), &access.workspace.id, &key.id).await?;
    Ok(Redirect::to(&keys_url(&access.workspace.id)).into_response())
}

#[derive(Template)]
#[template(path = "key_rotate.html")]
struct RotatePage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    key_id: String,
    name: String,
    value: String,
    nonce: String,
    back_url: String,
}

/// GET …/api-keys/{key}/rotate: choose the grace period.
pub async fn rotate_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, key_id)): Path<(WorkspaceId, KeyId)>,
) -> WebResult {
    let access = access(&state, &user, &id).await?;
    let key = rotatable_key(&state, &user, &access, &key_id).await?;
    user.require_sudo(&format!(
        "{}/{}/rotate",
        keys_url(&access.workspace.id),
        path_segment(&key.id)
    ))?;
    Ok(page(
        StatusCode::OK,
        &RotatePage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(&access, "keys"),
            key_id: path_segment(&key.id),
            value: masked(&key.prefix, &key.suffix),
            name: key.name,
            nonce: new_nonce(),
            back_url: keys_url(&access.workspace.id),
        },
    ))
}

/// POST …/api-keys/{key}/rotate: shows the new secret once.
pub async fn rotate_key(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, key_id)): Path<(WorkspaceId, KeyId)>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = access(&state, &user, &id).await?;
    let key = rotatable_key(&state, &user, &access, &key_id).await?;
    user.require_sudo(&format!(
        "{}/{}/rotate",
        keys_url(&access.workspace.id),
        path_segment(&key.id)
    ))?;
    let grace: u64 = match form.get("grace").unwrap_or("") {
        "0" => 0,
        "3600" => 3600,
        "86400" => 86_400,
        "604800" => 604_800,
        _ => {
            return Err(WebError::Invalid(
                "Choose a grace period: now, 1 hour, 24 hours or 7 days.".to_owned(),
            ))
        }
    };
    let nonce = form
        .get("nonce")
        .filter(|n| n.len() == 32)
        .ok_or_else(|| WebError::Invalid("The form is incomplete; reload it".to_owned()))?;
    if !state.store().use_nonce(nonce).await? {
        return Ok(already_shown(&user, &access));
    }
    let rotated = keys::rotate(&state, &user.actor(), &key, grace)
        .await
        .map_err(|e| match e {
            RotateError::Store(e) => e.into(),
            RotateError::GraceTooLong => WebError::Invalid(crate::domain::sentence(&e.to_string())),
        })?;
    let note = if grace == 0 {
        "The old key was revoked.".to_owned()
    } else {
        format!(
            "The old key keeps working until {} UTC.",
            date(rotated.old_valid_until)
        )
    };
    Ok(page(
        StatusCode::CREATED,
        &CreatedPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(&access, "keys"),
            heading: "API key rotated",
            name: &rotated.new.name,
            secret: rotated.secret.expose_secret(),
            note: Some(note),
            back_url: keys_url(&access.workspace.id),
        },
    ))
}
