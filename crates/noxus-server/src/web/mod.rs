//! The dashboard: server-rendered pages (askama templates) for people to
//! log in and manage workspaces, API keys and members. Minimal JavaScript
//! (a copy button), no external assets, every state change a POST form
//! with a CSRF token.

mod account;
mod callbacks;
mod keys;
pub mod layout;
mod members;
mod organization;
pub mod session;
mod usage;

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::http::error::ErrorPayload;

const APP_CSS: &str = include_str!("../../static/app.css");
const APP_JS: &str = include_str!("../../static/app.js");

/// Every dashboard route.
pub fn router() -> crate::app::Routes {
    crate::app::Routes::default()
        .route(
            "/",
            get(|| async { Redirect::to("/settings/organization/workspaces") }),
        )
        .route(
            "/static/app.css",
            get(|| async { static_file("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/static/app.js",
            get(|| async { static_file("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/setup", get(session::setup_page).post(session::setup))
        .route(
            "/settings",
            get(|| async { Redirect::to("/settings/organization") }),
        )
        .route(
            "/settings/organization",
            get(organization::organization_page),
        )
        .route(
            "/settings/organization/workspaces",
            get(organization::workspaces_page).post(organization::create_workspace),
        )
        .route(
            "/settings/organization/users",
            get(organization::users_page).post(organization::create_user),
        )
        .route(
            "/settings/organization/users/{user_id}/deactivate",
            post(organization::deactivate_user),
        )
        .route(
            "/settings/organization/users/{user_id}/reactivate",
            post(organization::reactivate_user),
        )
        .route(
            "/settings/organization/users/{user_id}/org-admin",
            post(organization::set_org_admin),
        )
        .route(
            "/settings/organization/users/{user_id}/password",
            post(organization::reset_password),
        )
        .route("/settings/account", get(account::account))
        .route(
            "/settings/account/password",
            get(account::password_form).post(account::change_password),
        )
        .route(
            "/settings/account/sessions",
            post(account::logout_other_sessions),
        )
        .route("/sudo", get(account::sudo_form).post(account::sudo))
        .route(
            "/settings/organization/workspaces/{id}",
            get(organization::workspace_home),
        )
        .route(
            "/settings/organization/workspaces/{id}/api-keys",
            get(keys::keys_page).post(keys::create_key),
        )
        .route(
            "/settings/organization/workspaces/{id}/api-keys/new",
            get(keys::new_key_page),
        )
        .route(
            "/settings/organization/workspaces/{id}/api-keys/{key_id}/revoke",
            get(keys::revoke_page).post(keys::revoke_key),
        )
        .route(
            "/settings/organization/workspaces/{id}/api-keys/{key_id}/rotate",
            get(keys::rotate_page).post(keys::rotate_key),
        )
        .route(
            "/settings/organization/workspaces/{id}/api-keys/{key_id}/leak/dismiss",
            post(keys::dismiss_leak),
        )
        .route(
            "/settings/organization/workspaces/{id}/members",
            get(members::members_page).post(members::add_member),
        )
        .route(
            "/settings/organization/workspaces/{id}/members/{user_id}/role",
            post(members::change_role),
        )
        .route(
            "/settings/organization/workspaces/{id}/members/{user_id}/remove",
            get(members::remove_page).post(members::remove_member),
        )
        .route(
            "/settings/organization/workspaces/{id}/usage",
            get(usage::usage_page),
        )
        .route(
            "/settings/organization/workspaces/{id}/audit",
            get(usage::audit_page),
        )
        .route(
            "/settings/organization/workspaces/{id}/callbacks",
            get(callbacks::callbacks_page),
        )
        .route(
            "/settings/organization/workspaces/{id}/callbacks/secret",
            post(callbacks::reveal_secret),
        )
        .route(
            "/settings/organization/workspaces/{id}/callbacks/rotate",
            post(callbacks::rotate_secret),
        )
        .route(
            "/settings/organization/workspaces/{id}/callbacks/security-webhook",
            post(callbacks::set_security_webhook),
        )
        .route(
            "/settings/organization/workspaces/{id}/callbacks/security-webhook/remove",
            post(callbacks::remove_security_webhook),
        )
        .map_router(|router| router.layer(axum::middleware::from_fn(layout::chrome)))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Renders a template as an HTML page with the dashboard's security headers.
/// Pages are never cached: some show a secret once.
pub fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => {
            let mut response = (status, html).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"),
            );
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            headers.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        Err(err) => WebError::Internal(anyhow::anyhow!("template: {err}")).into_response(),
    }
}

/// What can go wrong on a dashboard page. Rendered as an HTML page.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Not logged in: go to the login page.
    #[error("login required")]
    LoginRequired,
    /// A sensitive action: confirm the password first, then come back to the page.
    #[error("confirm your password")]
    SudoRequired(String),
    /// The password was set by someone else: choose one first.
    #[error("choose a new password")]
    PasswordChangeRequired,
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 403: the form's CSRF token is missing or wrong.
    #[error("The form is missing its security token or the token is wrong; reload the page and try again")]
    Csrf,
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 422 with a sentence.
    #[error("{0}")]
    Invalid(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 429 with the wait in (whole) seconds, said as a person would.
    #[error("Too many failed attempts; try again in {}", crate::time_fmt::human_duration(std::time::Duration::from_secs(*.0)))]
    TooManyAttempts(u64),
    /// 503 with `Retry-After`: too much password hashing at once.
    #[error("The server is busy; try again in a moment")]
    Busy,
    /// 503 with `Retry-After`: the database does not answer (logged).
    #[error("The platform cannot reach its database right now; try again in a moment")]
    Unavailable(#[source] anyhow::Error),
    /// 500, logged, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<crate::store::StoreError> for WebError {
    fn from(err: crate::store::StoreError) -> Self {
        match err {
            crate::store::StoreError::NotFound => Self::NotFound("Not found".to_owned()),
            crate::store::StoreError::Precondition(why) => {
                Self::Conflict(layout::for_people(&why.to_string()))
            }
            crate::store::StoreError::Conflict(kind) => {
                Self::Conflict(layout::for_people(&kind.to_string()))
            }
            crate::store::StoreError::QuotaExceeded { quota, limit } => {
                Self::Conflict(quota.sentence(limit))
            }
            other if other.is_unavailable() => Self::Unavailable(other.into()),
            other => Self::Internal(other.into()),
        }
    }
}

impl From<crate::domain::validation::ValidationError> for WebError {
    fn from(err: crate::domain::validation::ValidationError) -> Self {
        Self::Invalid(layout::for_people(&err.detail))
    }
}

impl From<crate::keys::KeyRuleError> for WebError {
    fn from(err: crate::keys::KeyRuleError) -> Self {
        match err {
            crate::keys::KeyRuleError::Forbidden { detail, .. } => {
                Self::Forbidden(layout::for_people(&detail))
            }
            crate::keys::KeyRuleError::Invalid { detail, .. } => {
                Self::Invalid(layout::for_people(&detail))
            }
        }
    }
}

impl From<crate::domain::passwords::PasswordError> for WebError {
    fn from(err: crate::domain::passwords::PasswordError) -> Self {
        use crate::domain::passwords::PasswordError;
        match err {
            PasswordError::Busy => Self::Busy,
            PasswordError::TooLong => Self::Invalid(err.to_string()),
            PasswordError::Internal(cause) => Self::Internal(cause),
        }
    }
}

impl From<crate::members::MemberError> for WebError {
    fn from(err: crate::members::MemberError) -> Self {
        use crate::members::MemberError;
        match err {
            MemberError::NotAllowed(m) => Self::Forbidden(m),
            MemberError::LastOwner => Self::Conflict(err.to_string()),
            MemberError::NotFound(m) => Self::NotFound(m),
            MemberError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            Self::LoginRequired => return Redirect::to("/login").into_response(),
            Self::SudoRequired(next) => {
                return Redirect::to(&format!("/sudo?next={}", utf8_percent_encode(next)))
                    .into_response()
            }
            Self::PasswordChangeRequired => {
                return Redirect::to("/settings/account/password").into_response()
            }
            Self::Forbidden(_) | Self::Csrf => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid request"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            Self::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "Too many attempts"),
            Self::Busy => (StatusCode::SERVICE_UNAVAILABLE, "Busy"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
        };
        let message = match &self {
            Self::Internal(_) => "Something went wrong on our side; the request id in the x-request-id header identifies it in the server log.".to_owned(),
            other => other.to_string(),
        };
        let view = layout::ErrorView {
            title,
            message: message.clone(),
        };
        // Rendered without the header here; the dashboard's `chrome` layer
        // renders it again with the header of the user who met it.
        let mut response = layout::error_page(status, &view, "/", layout::Layout::default(), "");
        response.extensions_mut().insert(view);
        let retry_after = match &self {
            Self::TooManyAttempts(seconds) => Some(*seconds),
            Self::Busy | Self::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // Tell the request-context layer to keep this HTML body (and log 5xx causes).
        response.extensions_mut().insert(ErrorPayload {
            code: "dashboard_error",
            detail: message,
            required_permission: None,
            field: None,
            internal: match self {
                Self::Internal(cause) | Self::Unavailable(cause) => Some(format!("{cause:#}")),
                _ => None,
            },
            keep_body: true,
        });
        response
    }
}

impl WebError {
    /// The marker that tells the request-context layer to keep an HTML
    /// error body made outside [`WebError`] (the dashboard's 404 page).
    pub(crate) fn keep_body_marker(code: &'static str, detail: String) -> ErrorPayload {
        ErrorPayload {
            code,
            detail,
            required_permission: None,
            field: None,
            internal: None,
            keep_body: true,
        }
    }
}

/// Percent-encodes a local path for a query parameter.
fn utf8_percent_encode(path: &str) -> String {
    serde_urlencoded::to_string([("", path)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// Result alias for dashboard handlers.
pub type WebResult<T = Response> = Result<T, WebError>;
