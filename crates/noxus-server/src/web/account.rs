//! The user's own account: changing one's password, logging out one's
//! other sessions, and confirming the password before sensitive actions
//! (sudo mode, as GitHub and Stripe do).

use askama::Template;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};

use super::layout::Layout;
use super::session::{CurrentUser, Form};
use super::{page, WebError, WebResult};
use crate::client_addr::ClientAddr;
use crate::state::AppState;

/// Shortest password a person may choose.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (bytes), so that hashing stays bounded.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a new password and its confirmation; the error is a sentence for the form.
pub fn check_new_password(password: &str, confirm: Option<&str>) -> Result<(), &'static str> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        Err("Choose a password of at least 12 characters.")
    } else if password.len() > MAX_PASSWORD_BYTES {
        Err("Choose a password of at most 1024 bytes.")
    } else if confirm.is_some_and(|c| c != password) {
        Err("The two passwords differ.")
    } else {
        Ok(())
    }
}

/// Checks the logged-in user's own password (sudo mode, password change)
/// on the password pool, throttled like a login.
async fn check_own_password(
    state: &AppState,
    user: &CurrentUser,
    client: &ClientAddr,
    password: &str,
) -> WebResult<bool> {
    let ip = client.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let throttle = state.login_throttle();
    let attempt = throttle
        .admit(&user.user.email, ip, Instant::now())
        .map_err(|wait| WebError::TooManyAttempts(wait.whole_seconds()))?;
    match state
        .passwords()
        .verify(password, Some(user.user.password_hash.clone()))
        .await
    {
        Ok(true) => {
            throttle.succeeded(attempt);
            Ok(true)
        }
        Ok(false) => {
            throttle.failed(attempt, Instant::now());
            Ok(false)
        }
        Err(err) => {
            throttle.abandoned(attempt);
            Err(err.into())
        }
    }
}

/// A local path to go back to after confirming the password: only paths of
/// this site (never `//host` or a URL), else the settings.
pub fn local_path(next: Option<&str>) -> String {
    next.and_then(super::layout::safe_next)
        .unwrap_or("/settings")
        .to_owned()
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    layout: Layout,
    csrf: &'a str,
    name: &'a str,
    org_admin: bool,
}

const ACCOUNT_URL: &str = "/settings/account";

/// GET /settings/account.
pub async fn account(user: CurrentUser) -> WebResult {
    Ok(page(
        StatusCode::OK,
        &AccountPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            name: &user.user.name,
            org_admin: user.user.is_active_org_admin(),
        },
    ))
}

/// POST /settings/account/sessions: logs out every other session of the user.
pub async fn logout_other_sessions(
    State(state): State<AppState>,
    user: CurrentUser,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let ended = state
        .store()
        .end_sessions(
            &user.actor(),
            &user.user.id,
            Some(&user.session.token_digest),
        )
        .await?;
    tracing::info!(user_id = %user.user.id, ended, "other sessions logged out");
    let notice = match ended {
        0 => "You had no other session; this one goes on.".to_owned(),
        1 => "1 other session was logged out; this one goes on.".to_owned(),
        n => format!("{n} other sessions were logged out; this one goes on."),
    };
    Ok(user.redirect_with_flash(ACCOUNT_URL, &notice))
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage<'a> {
    layout: Layout,
    csrf: &'a str,
    forced: bool,
    error: Option<&'a str>,
    /// The field the error is about (`current` or `new`), which gets the focus.
    error_field: &'static str,
}

fn password_page(
    user: &CurrentUser,
    status: StatusCode,
    error: Option<(&'static str, &str)>,
) -> axum::response::Response {
    page(
        status,
        &PasswordPage {
            layout: Layout::of(user),
            csrf: user.csrf(),
            forced: user.user.must_change_password,
            error: error.map(|(_, message)| message),
            error_field: error.map_or("", |(field, _)| field),
        },
    )
}

/// GET /settings/account/password.
pub async fn password_form(user: CurrentUser) -> WebResult {
    Ok(password_page(&user, StatusCode::OK, None))
}

/// POST /settings/account/password: the current password, then the new one
/// twice. Every other session of the user ends.
pub async fn change_password(
    State(state): State<AppState>,
    client: ClientAddr,
    user: CurrentUser,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let current = form.get("current_password").unwrap_or("");
    let new = form.get("password").unwrap_or("");
    if !check_own_password(&state, &user, &client, current).await? {
        return Ok(password_page(
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(("current", "Your current password is not right.")),
        ));
    }
    if let Err(message) = check_new_password(new, form.get("password_confirm")) {
        return Ok(password_page(
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(("new", message)),
        ));
    }
    if new == current {
        return Ok(password_page(
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(("new", "Choose a password different from the current one.")),
        ));
    }
    let hash = state.passwords().hash(new).await?;
    state
        .store()
        .set_password(
            &user.actor(),
            &user.user.id,
            &hash,
            false,
            Some(&user.session.token_digest),
        )
        .await?;
    state
        .store()
        .set_session_reauth(&user.session.token_digest, time::OffsetDateTime::now_utc())
        .await?;
    tracing::info!(user_id = %user.user.id, "password changed");
    if user.user.must_change_password {
        // The first login can go on now.
        return Ok(user.redirect_with_flash(
            "/settings/organization/workspaces",
            "Your password is set: from now on only you know it.",
        ));
    }
    Ok(user.redirect_with_flash(
        ACCOUNT_URL,
        "Your password was changed; your other sessions were logged out.",
    ))
}

/// `?next=` of the sudo page.
#[derive(Debug, serde::Deserialize)]
pub struct Next {
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "sudo.html")]
struct SudoPage<'a> {
    layout: Layout,
    csrf: &'a str,
    next: &'a str,
    error: Option<&'a str>,
}

/// GET /sudo?next=…: asks for the password before a sensitive action.
pub async fn sudo_form(user: CurrentUser, Query(next): Query<Next>) -> WebResult {
    let next = local_path(next.next.as_deref());
    if user.in_sudo() {
        return Ok(Redirect::to(&next).into_response());
    }
    Ok(page(
        StatusCode::OK,
        &SudoPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            next: &next,
            error: None,
        },
    ))
}

/// POST /sudo: checks the password, then goes back to the page.
pub async fn sudo(
    State(state): State<AppState>,
    client: ClientAddr,
    user: CurrentUser,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    let next = local_path(form.get("next"));
    let password = form.get("password").unwrap_or("");
    if !check_own_password(&state, &user, &client, password).await? {
        tracing::info!(user_id = %user.user.id, "failed password confirmation");
        return Ok(page(
            StatusCode::UNAUTHORIZED,
            &SudoPage {
                layout: Layout::of(&user),
                csrf: user.csrf(),
                next: &next,
                error: Some("That is not your password."),
            },
        ));
    }
    state
        .store()
        .set_session_reauth(&user.session.token_digest, time::OffsetDateTime::now_utc())
        .await?;
    Ok(Redirect::to(&next).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path(Some("/settings/x?y=1")), "/settings/x?y=1");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "\\\\evil",
            "/a\\b",
            "",
        ] {
            assert_eq!(local_path(Some(bad)), "/settings", "{bad}");
        }
        assert_eq!(local_path(None), "/settings");
    }

    #[test]
    fn new_passwords_are_checked() {
        assert!(check_new_password("short", None).is_err());
        assert!(check_new_password("long enough password", Some("other")).is_err());
        assert!(check_new_password(&"x".repeat(2000), None).is_err());
        assert!(check_new_password("long enough password", Some("long enough password")).is_ok());
    }
}
