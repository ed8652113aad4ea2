//! The Callbacks tab, for those who manage the workspace (`workspace:write`:
//! admins and owners): the run-callback signing secret, shown on request
//! and rotated, and the security webhook, set and removed, all after the
//! password was confirmed recently (sudo) and all in the audit log, as
//! through the API (`crate::http::callbacks`,
//! `crate::http::security_webhook`).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use noxus_api::Permission;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use super::keys::{path_segment, WorkspaceNav};
use super::layout::Layout;
use super::organization::{access, Access};
use super::session::{CurrentUser, Form};
use super::{page, WebError, WebResult};
use crate::runs::callbacks::{check_url_of, NO_SIGNING_SECRET};
use crate::state::AppState;
use crate::store::{CallbackSecretGeneration, WorkspaceId};

fn callbacks_url(workspace_id: &WorkspaceId) -> String {
    format!(
        "/settings/organization/workspaces/{}/callbacks",
        path_segment(workspace_id)
    )
}

#[derive(Template)]
#[template(path = "callbacks.html")]
struct CallbacksPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    /// Why this server cannot sign callbacks, if it cannot.
    unavailable: Option<String>,
    generation: i64,
    previous_until: Option<String>,
    /// The secret, when asked for.
    secret: Option<String>,
    /// Where security events go, if the workspace set a webhook.
    webhook: Option<String>,
}

fn minute(t: OffsetDateTime) -> String {
    crate::time_fmt::rfc3339(t)
        .chars()
        .take(16)
        .collect::<String>()
        .replace('T', " ")
}

/// The page (with the workspace's security webhook as it is now).
async fn render(
    state: &AppState,
    user: &CurrentUser,
    access: &Access,
    generation: CallbackSecretGeneration,
    show_secret: bool,
    flash: Option<String>,
) -> WebResult {
    let webhook = state
        .store()
        .security_webhook(&access.workspace.id)
        .await?
        .map(|hook| hook.url);
    let signer = state.callbacks().signer();
    let mut layout = Layout::of(user);
    layout.flash = flash;
    let secret = signer.filter(|_| show_secret).map(|s| {
        s.workspace_secret(&access.workspace.id, generation.generation)
            .expose_secret()
            .to_owned()
    });
    Ok(page(
        StatusCode::OK,
        &CallbacksPage {
            layout,
            csrf: user.csrf(),
            nav: WorkspaceNav::of(access, "callbacks"),
            unavailable: signer
                .is_none()
                .then(|| crate::domain::sentence(NO_SIGNING_SECRET)),
            generation: generation.generation,
            previous_until: generation
                .previous_valid_until
                .filter(|u| *u > OffsetDateTime::now_utc())
                .map(minute),
            secret,
            webhook,
        },
    ))
}

/// The workspace, for someone who may manage its callbacks.
async fn managed(state: &AppState, user: &CurrentUser, id: &WorkspaceId) -> WebResult<Access> {
    let access = access(state, user, id).await?;
    access.require(Permission::WorkspaceWrite)?;
    Ok(access)
}

/// Refuses a change on a server that cannot sign callbacks.
fn require_signer(state: &AppState) -> WebResult<()> {
    match state.callbacks().signer() {
        Some(_) => Ok(()),
        None => Err(WebError::Invalid(crate::domain::sentence(
            NO_SIGNING_SECRET,
        ))),
    }
}

/// GET …/callbacks: what callbacks are, the secret's number, the buttons.
pub async fn callbacks_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
) -> WebResult {
    let access = managed(&state, &user, &id).await?;
    let generation = state
        .store()
        .callback_secret_generation(&access.workspace.id)
        .await?;
    render(&state, &user, &access, generation, false, None).await
}

/// POST …/callbacks/secret: shows the secret (after sudo; audited).
pub async fn reveal_secret(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = managed(&state, &user, &id).await?;
    user.require_sudo(&callbacks_url(&access.workspace.id))?;
    require_signer(&state)?;
    let generation = state
        .store()
        .reveal_callback_secret(
            &user.actor(),
            &access.workspace.organization_id,
            &access.workspace.id,
        )
        .await?;
    render(&state, &user, &access, generation, true, None).await
}

/// POST …/callbacks/rotate: a new secret, shown (after sudo; audited).
pub async fn rotate_secret(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = managed(&state, &user, &id).await?;
    user.require_sudo(&callbacks_url(&access.workspace.id))?;
    require_signer(&state)?;
    let grace: u64 = match form.get("grace").unwrap_or("") {
        "0" => 0,
        "3600" => 3600,
        "86400" => 86_400,
        _ => {
            return Err(WebError::Invalid(
                "Choose when the previous secret stops signing: now, in 1 hour or in 24 hours."
                    .to_owned(),
            ))
        }
    };
    let previous_valid_until =
        (grace > 0).then(|| OffsetDateTime::now_utc() + std::time::Duration::from_secs(grace));
    let generation = state
        .store()
        .rotate_callback_secret(
            &user.actor(),
            &access.workspace.organization_id,
            &access.workspace.id,
            previous_valid_until,
        )
        .await?;
    let flash = match previous_valid_until {
        None => "Signing secret rotated: callbacks are signed with the new one only.".to_owned(),
        Some(until) => format!(
            "Signing secret rotated: callbacks carry a signature under the previous one too until {} UTC.",
            minute(until)
        ),
    };
    render(&state, &user, &access, generation, true, Some(flash)).await
}

/// POST …/callbacks/security-webhook: sets (or replaces) the security
/// webhook (after sudo; checked as through the API; audited).
pub async fn set_security_webhook(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = managed(&state, &user, &id).await?;
    user.require_sudo(&callbacks_url(&access.workspace.id))?;
    require_signer(&state)?;
    let raw = form.get("url").unwrap_or("").trim();
    let url = check_url_of("The URL", raw, state.callbacks().allow_loopback())
        .map_err(|why| WebError::Invalid(crate::domain::sentence(&why)))?;
    state
        .store()
        .set_security_webhook(
            &user.actor(),
            &access.workspace.organization_id,
            &access.workspace.id,
            &url,
        )
        .await?;
    let generation = state
        .store()
        .callback_secret_generation(&access.workspace.id)
        .await?;
    let flash = "Security webhook saved: a key of this workspace reported leaked is posted there, signed with the signing secret.".to_owned();
    render(&state, &user, &access, generation, false, Some(flash)).await
}

/// POST …/callbacks/security-webhook/remove: removes it (after sudo;
/// audited).
pub async fn remove_security_webhook(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let access = managed(&state, &user, &id).await?;
    user.require_sudo(&callbacks_url(&access.workspace.id))?;
    let flash = match state
        .store()
        .remove_security_webhook(
            &user.actor(),
            &access.workspace.organization_id,
            &access.workspace.id,
        )
        .await
    {
        Ok(()) => "Security webhook removed: nothing more is posted there.",
        Err(crate::store::StoreError::NotFound) => "This workspace has no security webhook.",
        Err(err) => return Err(err.into()),
    };
    let generation = state
        .store()
        .callback_secret_generation(&access.workspace.id)
        .await?;
    render(
        &state,
        &user,
        &access,
        generation,
        false,
        Some(flash.to_owned()),
    )
    .await
}
