//! The API Keys tab: list, create (the secret shown once), revoke, rotate.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use noxus_api::key_format::masked;
use noxus_api::{Permission, Role};
use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::ExposeSecret;
use time::{Duration, OffsetDateTime};

use super::layout::{self, Layout};
use super::organization::{access, Access};
use super::session::{CurrentUser, Form};
use super::{page, WebError, WebResult};
use crate::domain::validation;
use crate::keys::{self, Caller, KeyStatus, MintRequest, RateBounds, RotateError};
use crate::state::AppState;
use crate::store::{KeyId, UserId, WorkspaceId};
use crate::store::{KeyRecord, LeakQuery, RevokedReason};

/// How long the API Keys page warns about a key reported leaked, unless an
/// admin dismisses the warning first.
pub const LEAK_BANNER_DAYS: i64 = 30;

/// Warnings one page shows at most (the newest).
const MAX_LEAK_BANNERS: u32 = 20;

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
    /// The user's standing in this workspace as the header says it: their
    /// membership, and whether they act as organization admin.
    pub role: String,
    pub tab: &'static str,
    /// The Members tab is offered (`members:read`).
    pub members: bool,
    /// The Audit tab is offered (`keys:manage`).
    pub audit: bool,
    /// The Callbacks tab is offered (`workspace:write`).
    pub callbacks: bool,
}

/// What the header says about the user in the workspace: the role they
/// really hold here, not the owner's rights an organization admin acts with.
fn standing(access: &Access) -> String {
    match (access.membership, access.org_admin) {
        (Some(role), false) => format!("your role: {role}"),
        (Some(Role::Owner), true) => "your role: owner (and organization admin)".to_owned(),
        (Some(role), true) => {
            format!("your role: {role} — you act as owner here as organization admin")
        }
        (None, _) => "not a member — organization admin (acts as owner)".to_owned(),
    }
}

impl WorkspaceNav {
    pub(super) fn of(access: &Access, tab: &'static str) -> Self {
        Self {
            id: path_segment(&access.workspace.id),
            name: access.workspace.name.clone(),
            role: standing(access),
            tab,
            members: access.can(Permission::MembersRead),
            audit: access.can(Permission::KeysManage),
            callbacks: access.can(Permission::WorkspaceWrite),
        }
    }
}

struct KeyRow {
    id: String,
    name: String,
    value: String,
    /// The fragment of the key this one replaced by rotation, if any.
    replaces: Option<String>,
    created_by: String,
    created: String,
    last_used: String,
    expires: String,
    /// The status's CSS class: `active`, `expiring`, `expired`, `revoked`, `disabled`.
    status: &'static str,
    /// The status as the list says it ("rotated" for a key in its grace period).
    status_label: &'static str,
    /// What follows the status: "works until …, replaced by noxus_…".
    status_detail: String,
    /// Why the key was disabled with its owner, or that it was reported leaked.
    status_note: String,
    restricted: String,
    can_revoke: bool,
    can_rotate: bool,
    sparkline: super::usage::Sparkline,
}

/// Why the user may not create keys in this workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoCreate {
    /// An organization admin who is not a member: a key of a non-member
    /// would be refused on every request.
    NotMember,
    /// Their membership's role does not grant `keys:write`.
    Role(Role),
}

impl NoCreate {
    fn of(access: &Access) -> Option<Self> {
        match access.membership {
            None => Some(Self::NotMember),
            Some(role)
                if !role.grants(Permission::KeysWrite) || !access.can(Permission::KeysWrite) =>
            {
                Some(Self::Role(role))
            }
            Some(_) => None,
        }
    }

    /// The sentence the keys list and a refused create show.
    fn sentence(self, org_admin: bool) -> String {
        match self {
            Self::NotMember => {
                "You are not a member of this workspace: add yourself in Members.".to_owned()
            }
            Self::Role(role) if org_admin => format!(
                "You are {} of this workspace, and {} cannot create keys: as organization admin, change your role in Members.",
                layout::role_with_article(role),
                role_plural(role).to_lowercase()
            ),
            Self::Role(role) => format!(
                "{} cannot create keys; ask an owner or admin of this workspace.",
                role_plural(role)
            ),
        }
    }
}

fn role_plural(role: Role) -> &'static str {
    match role {
        Role::Viewer => "Viewers",
        Role::Member => "Members",
        Role::Admin => "Admins",
        Role::Owner => "Owners",
    }
}

/// A warning about a key reported leaked. Everything the reporter sent is
/// untrusted text: the template escapes it and never makes it a link.
struct LeakBanner {
    key_id: String,
    name: String,
    value: String,
    reported: String,
    url: Option<String>,
    source: Option<String>,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    /// Keys of this list reported leaked lately, warning not dismissed.
    leaks: Vec<LeakBanner>,
    /// The user may dismiss the warnings (`keys:manage`).
    can_dismiss: bool,
    keys: Vec<KeyRow>,
    can_create: bool,
    /// An organization admin who is not a member: the list says to add
    /// themself in Members (with the link).
    not_member: bool,
    /// Why there is no Create button, otherwise.
    why_no_create: Option<String>,
    showing_all: bool,
}

fn caller(access: &Access, user: &CurrentUser) -> Caller {
    Caller::person(&user.user, access.role)
}

/// "only read workflows, list models and presets": a restriction in words.
fn restriction_words(restriction: &[Permission]) -> String {
    let labels: Vec<&str> = restriction
        .iter()
        .map(|p| layout::permission_label(*p))
        .collect();
    format!("only: {}", labels.join("; "))
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
    // Rotation links both ways, by the old key's `replaced_by` (a key and
    // its replacement have the same owner, so both are in either list).
    let fragments: HashMap<&KeyId, String> = records
        .iter()
        .map(|k| (&k.id, masked(&k.prefix, &k.suffix)))
        .collect();
    let predecessors: HashMap<&KeyId, &KeyId> = records
        .iter()
        .filter_map(|k| k.replaced_by.as_ref().map(|next| (next, &k.id)))
        .collect();
    let now = OffsetDateTime::now_utc();
    let leaks = leak_banners(&state, &access, &records, now).await?;
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
            let successor = k.replaced_by.as_ref().map(|next| {
                fragments
                    .get(next)
                    .cloned()
                    .unwrap_or_else(|| "a newer key".to_owned())
            });
            let (status_label, status_detail) = match (status, successor) {
                (KeyStatus::Expiring, Some(next)) => (
                    "rotated",
                    format!(
                        "works until {} UTC, replaced by {next}",
                        k.expires_at
                            .map_or_else(|| "its grace period ends".to_owned(), date)
                    ),
                ),
                (status, Some(next)) => (status.as_str(), format!("replaced by {next}")),
                (status, None) => (status.as_str(), String::new()),
            };
            KeyRow {
                id: k.id.to_string(),
                name: k.name.clone(),
                value: masked(&k.prefix, &k.suffix),
                replaces: predecessors
                    .get(&k.id)
                    .and_then(|old| fragments.get(old))
                    .cloned(),
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
                status_label,
                status_detail,
                status_note: k
                    .revoked_reason
                    .filter(|r| r.is_disabled() || *r == RevokedReason::Leaked)
                    .map(|r| r.describe().to_owned())
                    .unwrap_or_default(),
                restricted: k
                    .restriction
                    .as_deref()
                    .map(restriction_words)
                    .unwrap_or_default(),
                can_revoke: status.works() && keys::may_revoke(&caller, k).is_ok(),
                // A rotated key (in its grace period) is not rotated again:
                // its replacement is.
                can_rotate: status == KeyStatus::Active
                    && keys::may_rotate(&caller, &access.workspace, k, access.membership, &bounds)
                        .is_ok(),
                sparkline: super::usage::sparkline(&hours, &k.id, day),
            }
        })
        .collect();
    let no_create = NoCreate::of(&access);
    Ok(page(
        StatusCode::OK,
        &KeysPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            can_create: no_create.is_none(),
            not_member: no_create == Some(NoCreate::NotMember),
            why_no_create: no_create
                .filter(|n| *n != NoCreate::NotMember)
                .map(|n| n.sentence(access.org_admin)),
            nav: WorkspaceNav::of(&access, "keys"),
            leaks,
            can_dismiss: access.can(Permission::KeysManage),
            keys,
            showing_all,
        },
    ))
}

/// The warnings about keys of `records` (the keys the page lists) reported
/// leaked in the last [`LEAK_BANNER_DAYS`] and not dismissed, newest first.
async fn leak_banners(
    state: &AppState,
    access: &Access,
    records: &[KeyRecord],
    now: OffsetDateTime,
) -> WebResult<Vec<LeakBanner>> {
    let leaks = state
        .store()
        .key_leaks(&LeakQuery {
            workspace_id: access.workspace.id.clone(),
            since: now - Duration::days(LEAK_BANNER_DAYS),
            include_dismissed: false,
            limit: MAX_LEAK_BANNERS,
        })
        .await?;
    Ok(leaks
        .into_iter()
        .filter_map(|leak| {
            let key = records.iter().find(|k| k.id == leak.key_id)?;
            Some(LeakBanner {
                key_id: path_segment(&key.id),
                name: key.name.clone(),
                value: masked(&key.prefix, &key.suffix),
                reported: date(leak.reported_at),
                url: leak.location.url,
                source: leak.location.source,
            })
        })
        .collect())
}

/// POST …/api-keys/{key}/leak/dismiss: the warning about a key reported
/// leaked goes (the revocation, the audit entry and the usage flag stay).
pub async fn dismiss_leak(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, key_id)): Path<(WorkspaceId, KeyId)>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = access(&state, &user, &id).await?;
    access.require(Permission::KeysManage)?;
    let key = state
        .store()
        .key(&access.workspace.id, &key_id)
        .await?
        .ok_or_else(|| WebError::NotFound("No such key".to_owned()))?;
    state
        .store()
        .dismiss_key_leak(&user.actor(), &access.workspace.id, &key.id)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => {
                WebError::NotFound("This key was not reported leaked".to_owned())
            }
            other => other.into(),
        })?;
    Ok(user.redirect_with_flash(
        &keys_url(&access.workspace.id),
        &format!(
            "The warning about key '{}' ({}) was dismissed; it stays revoked.",
            key.name,
            masked(&key.prefix, &key.suffix)
        ),
    ))
}

/// The expiry choices of the create form: (value, label, days).
const EXPIRIES: &[(&str, &str, Option<i64>)] = &[
    ("", "Never", None),
    ("7d", "In 7 days", Some(7)),
    ("30d", "In 30 days", Some(30)),
    ("60d", "In 60 days", Some(60)),
    ("90d", "In 90 days", Some(90)),
    ("365d", "In a year", Some(365)),
];

/// The restriction form's groups: permissions by what they are about.
const PERMISSION_GROUPS: &[(&str, &[Permission])] = &[
    ("Models", &[Permission::ModelsRead]),
    (
        "Workflows",
        &[
            Permission::WorkflowsRead,
            Permission::WorkflowsWrite,
            Permission::WorkflowsRun,
        ],
    ),
    (
        "API keys",
        &[
            Permission::KeysRead,
            Permission::KeysWrite,
            Permission::KeysManage,
        ],
    ),
    (
        "Members",
        &[Permission::MembersRead, Permission::MembersWrite],
    ),
    (
        "Workspace",
        &[
            Permission::WorkspaceRead,
            Permission::WorkspaceWrite,
            Permission::WorkspaceDelete,
        ],
    ),
    (
        "Organization (tenant-admin keys only)",
        Permission::ORGANIZATION,
    ),
];

struct ExpiryChoice {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

struct PermissionChoice {
    value: &'static str,
    id: String,
    label: String,
    checked: bool,
    management: bool,
    /// The first ticked permission the form refused: it gets the focus.
    invalid: bool,
}

struct PermissionGroup {
    legend: &'static str,
    choices: Vec<PermissionChoice>,
}

/// What the create form says is wrong, next to the field concerned.
#[derive(Default)]
struct FormErrors {
    name: Option<String>,
    expiry: Option<String>,
    permissions: Option<String>,
}

impl FormErrors {
    fn any(&self) -> bool {
        self.name.is_some() || self.expiry.is_some() || self.permissions.is_some()
    }
}

#[derive(Template)]
#[template(path = "key_new.html")]
struct NewKeyPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    nonce: String,
    name: &'a str,
    /// The user's role in this workspace (what an unrestricted key follows).
    role: String,
    expiries: Vec<ExpiryChoice>,
    groups: Vec<PermissionGroup>,
    errors: FormErrors,
    /// Focus the name field (the first invalid field, when it is).
    name_invalid: bool,
    expiry_invalid: bool,
    can_tenant_admin: bool,
    tenant_admin: bool,
}

/// A sentence's first letter in upper case.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The permissions the user's key can be restricted to, grouped: those of
/// their membership's role (what the key acts with), and the organization
/// permissions for an organization admin's tenant-admin key.
fn permission_groups(
    access: &Access,
    checked: &[&str],
    invalid: Option<&str>,
) -> Vec<PermissionGroup> {
    let role = access.membership.unwrap_or(Role::Viewer);
    PERMISSION_GROUPS
        .iter()
        .map(|(legend, permissions)| PermissionGroup {
            legend,
            choices: permissions
                .iter()
                .filter(|p| role.grants(**p) || (access.org_admin && p.is_organization()))
                .map(|p| PermissionChoice {
                    value: p.as_str(),
                    id: format!("perm-{}", p.as_str().replace(':', "-")),
                    label: capitalized(layout::permission_label(*p)),
                    checked: checked.contains(&p.as_str()),
                    management: p.is_management(),
                    invalid: invalid == Some(p.as_str()),
                })
                .collect(),
        })
        .filter(|g| !g.choices.is_empty())
        .collect()
}

fn expiry_choices(selected: &str) -> Vec<ExpiryChoice> {
    EXPIRIES
        .iter()
        .map(|(value, label, _)| ExpiryChoice {
            value,
            label,
            selected: *value == selected,
        })
        .collect()
}

/// The create form, fresh (`form` is `None`) or again with what was typed
/// and what is wrong.
fn new_key_form<'a>(
    user: &'a CurrentUser,
    access: &Access,
    nonce: String,
    form: Option<&'a Form>,
    errors: FormErrors,
    invalid_permission: Option<&str>,
) -> NewKeyPage<'a> {
    let chosen = form.map(|f| f.all("permissions")).unwrap_or_default();
    NewKeyPage {
        layout: Layout::of(user),
        csrf: user.csrf(),
        nav: WorkspaceNav::of(access, "keys"),
        nonce,
        name: form.and_then(|f| f.get("name")).unwrap_or(""),
        role: access.membership.map(|r| r.to_string()).unwrap_or_default(),
        expiries: expiry_choices(form.and_then(|f| f.get("expires_in")).unwrap_or("")),
        groups: permission_groups(access, &chosen, invalid_permission),
        name_invalid: errors.name.is_some(),
        expiry_invalid: errors.name.is_none() && errors.expiry.is_some(),
        errors,
        can_tenant_admin: access.org_admin,
        tenant_admin: form.and_then(|f| f.get("tenant_admin")) == Some("on"),
    }
}

/// Creating keys needs `keys:write` from one's membership (a key of a
/// non-member would be refused on every request).
fn require_create(access: &Access) -> WebResult<()> {
    match NoCreate::of(access) {
        None => Ok(()),
        Some(NoCreate::Role(role)) if !access.org_admin => Err(WebError::Forbidden(format!(
            "As {} of this workspace you cannot create API keys; ask an owner or admin of this workspace.",
            layout::role_with_article(role)
        ))),
        Some(no) => Err(WebError::Forbidden(no.sentence(access.org_admin))),
    }
}

/// GET …/api-keys/new: a fresh nonce on every view, so a form opened again
/// (with Back) creates a new key.
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
        &new_key_form(
            &user,
            &access,
            new_nonce(),
            None,
            FormErrors::default(),
            None,
        ),
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
            layout: Layout::of(user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(access, "keys"),
            back_url: keys_url(&access.workspace.id),
        },
    )
}

/// The expiry chosen in the form, or `None` for a value not on the list.
fn expiry(form: &Form) -> Option<Option<OffsetDateTime>> {
    let chosen = form.get("expires_in").unwrap_or("");
    let chosen = if chosen == "never" { "" } else { chosen };
    EXPIRIES
        .iter()
        .find(|(value, _, _)| *value == chosen)
        .map(|(_, _, days)| days.map(|d| OffsetDateTime::now_utc() + Duration::days(d)))
}

/// POST …/api-keys: creates the key and shows its secret once (in this
/// answer only: a secret goes into no cookie and no redirect).
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
    let nonce = form
        .get("nonce")
        .filter(|n| n.len() == 32)
        .ok_or_else(|| WebError::Invalid("The form is incomplete; reload it".to_owned()))?;
    let chosen = form.all("permissions");
    let mut errors = FormErrors::default();
    let name = validation::name("name", form.get("name").unwrap_or(""), 100);
    if name.is_err() {
        errors.name = Some(
            "Give the key a descriptive name (1 to 100 characters), such as \"billing service\"."
                .to_owned(),
        );
    }
    let expires_at = expiry(&form);
    if expires_at.is_none() {
        errors.expiry = Some("Choose when the key expires from the list.".to_owned());
    }
    let mut permissions = Vec::new();
    for raw in &chosen {
        let permission: Permission = raw.parse().map_err(|_| {
            WebError::Invalid(format!(
                "There is no permission called \"{}\"; reload the form.",
                validation::truncate(raw)
            ))
        })?;
        permissions.push(permission);
    }
    let tenant_admin = form.get("tenant_admin") == Some("on");
    let organization_ticked = permissions
        .iter()
        .find(|p| p.is_organization())
        .filter(|_| !tenant_admin);
    if organization_ticked.is_some() {
        errors.permissions = Some(
            "Organization permissions are for tenant-admin keys only: tick \"Tenant-admin key\" too, or untick them."
                .to_owned(),
        );
    }
    if errors.any() {
        let invalid = organization_ticked.map(|p| p.as_str());
        return Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &new_key_form(
                &user,
                &access,
                nonce.to_owned(),
                Some(&form),
                errors,
                invalid,
            ),
        ));
    }
    let (Ok(name), Some(expires_at)) = (name, expires_at) else {
        return Err(WebError::Invalid(
            "The form is incomplete; reload it".to_owned(),
        ));
    };
    // None ticked: the key follows the role (without management permissions).
    let permissions = (!permissions.is_empty()).then_some(permissions);
    let request = keys::mint(
        &caller(&access, &user),
        &access.workspace,
        access.membership,
        MintRequest {
            name,
            tenant_admin,
            permissions,
            expires_at,
            rate_limit: None,
        },
        &RateBounds::of(&state),
    )?;
    if !state.store().use_nonce(nonce).await? {
        return Ok(already_shown(&user, &access));
    }
    let (record, secret) = keys::issue(&state, &user.actor(), request).await?;
    let mut layout = Layout::of(&user);
    layout.flash = Some(format!(
        "Key '{}' created ({}).",
        record.name,
        masked(&record.prefix, &record.suffix)
    ));
    Ok(page(
        StatusCode::CREATED,
        &CreatedPage {
            layout,
            csrf: user.csrf(),
            nav: WorkspaceNav::of(&access, "keys"),
            heading: "API key created",
            name: &record.name,
            secret: secret.expose_secret(),
            note: record
                .expires_at
                .map(|at| format!("It expires on {} UTC.", date(at))),
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
    Ok(user.redirect_with_flash(
        &keys_url(&access.workspace.id),
        &format!(
            "Key '{}' revoked. Programs using {} are refused from now on.",
            key.name,
            masked(&key.prefix, &key.suffix)
        ),
    ))
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
    let old_value = masked(&key.prefix, &key.suffix);
    let note = if grace == 0 {
        format!("The old key {old_value} was revoked.")
    } else {
        format!(
            "The old key {old_value} keeps working until {} UTC.",
            date(rotated.old_valid_until)
        )
    };
    let mut layout = Layout::of(&user);
    layout.flash = Some(format!(
        "Key '{}' rotated: the new key is {}. {note}",
        rotated.new.name,
        masked(&rotated.new.prefix, &rotated.new.suffix)
    ));
    Ok(page(
        StatusCode::CREATED,
        &CreatedPage {
            layout,
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
