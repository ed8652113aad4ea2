//! What every dashboard page shares around its content: the header (who is
//! logged in, Log out), the one-line confirmation after a change (a "flash"
//! carried by a short-lived cookie across the POST → redirect → GET), error
//! pages that keep the header and offer the way back, the HTML 404 for an
//! unknown dashboard URL, and deep links that survive the login page.

use std::sync::{Arc, Mutex};

use askama::Template;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use noxus_api::{Permission, Role};

use super::session::CurrentUser;
use super::{page, WebError};
use crate::state::AppState;

/// The flash cookie over plain HTTP.
const FLASH_COOKIE: &str = "noxus_flash";
/// The flash cookie over HTTPS (`__Host-`: Secure, this host only, every path).
const SECURE_FLASH_COOKIE: &str = "__Host-noxus_flash";
/// A confirmation longer than this is cut (it names at most a key or a person).
const MAX_FLASH_BYTES: usize = 600;
/// Deep links longer than this are not kept through the login page.
const MAX_NEXT_BYTES: usize = 2048;

/// The header's data, given to every page template as `layout`.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The logged-in user's email (the header shows it, with Log out).
    pub email: Option<String>,
    /// A one-line confirmation of the change just made, announced to screen
    /// readers (`role="status"`).
    pub flash: Option<String>,
}

impl Layout {
    /// The layout of a logged-in user's page.
    pub fn of(user: &CurrentUser) -> Self {
        Self {
            email: Some(user.user.email.clone()),
            flash: user.flash.clone(),
        }
    }

    /// The layout of a page without a session (login, setup).
    pub fn anonymous(headers: &HeaderMap) -> Self {
        Self {
            email: None,
            flash: read_flash(headers),
        }
    }
}

/// Filled by [`CurrentUser`]'s extractor, read by [`chrome`]: an error page
/// keeps the header of the user it was rendered for without a second lookup.
#[derive(Debug, Clone, Default)]
pub(super) struct LayoutSlot(Arc<Mutex<Option<(Layout, String)>>>);

impl LayoutSlot {
    pub(super) fn fill(&self, user: &CurrentUser) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((Layout::of(user), user.csrf().to_owned()));
        }
    }

    fn take(&self) -> Option<(Layout, String)> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The confirmation waiting in the request's flash cookie, if any.
pub(super) fn read_flash(headers: &HeaderMap) -> Option<String> {
    let raw = cookie_value(headers, SECURE_FLASH_COOKIE).or(cookie_value(headers, FLASH_COOKIE))?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).ok()?;
    let (_, message) = pairs.into_iter().find(|(k, _)| k == "m")?;
    let message = message.trim();
    (!message.is_empty()).then(|| crate::domain::validation::clip(message, MAX_FLASH_BYTES))
}

fn has_flash_cookie(headers: &HeaderMap) -> bool {
    cookie_value(headers, SECURE_FLASH_COOKIE).is_some()
        || cookie_value(headers, FLASH_COOKIE).is_some()
}

fn flash_cookie(message: &str, secure: bool) -> Option<HeaderValue> {
    let mut end = message.len().min(MAX_FLASH_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let value = serde_urlencoded::to_string([("m", &message[..end])]).ok()?;
    let (name, secure) = if secure {
        (SECURE_FLASH_COOKIE, "; Secure")
    } else {
        (FLASH_COOKIE, "")
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=120{secure}"
    ))
    .ok()
}

/// After a change: 303 to `to` (a GET, so Back and reload never post the
/// form again), with `message` shown once on the page it lands on.
pub fn redirect_with_flash(to: &str, secure: bool, message: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    if let Some(cookie) = flash_cookie(message, secure) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Where `next` may send the browser after login: a path of this site only
/// (not `//host`, not `/\host`, no scheme, no control characters), and not
/// back to the login or logout pages.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= MAX_NEXT_BYTES
        && !next.chars().any(|c| c.is_control() || c == '\\')
        && !["/login", "/logout", "/setup"]
            .iter()
            .any(|p| next == *p || next.starts_with(&format!("{p}?")));
    ok.then_some(next)
}

/// The way back from an error on `path`: the nearest page above it that
/// lists what the user was working on.
pub(super) fn way_back(path: &str) -> (String, &'static str) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let workspaces = (
        "/settings/organization/workspaces".to_owned(),
        "Back to your workspaces",
    );
    match parts.as_slice() {
        ["settings", "organization", "workspaces", id, tab, _, ..] => {
            let label = match *tab {
                "api-keys" => "Back to API Keys",
                "members" => "Back to Members",
                "usage" => "Back to Usage",
                "audit" => "Back to Audit",
                _ => return workspaces,
            };
            let id = super::keys::path_segment(id);
            (
                format!("/settings/organization/workspaces/{id}/{tab}"),
                label,
            )
        }
        ["settings", "organization", "users", _, ..] => {
            ("/settings/organization/users".to_owned(), "Back to Users")
        }
        ["settings", "account", _, ..] | ["sudo"] => {
            ("/settings/account".to_owned(), "Back to your account")
        }
        _ => workspaces,
    }
}

/// A permission as a person would say what it lets them do ("create,
/// revoke and rotate your own keys"), for messages and forms.
pub fn permission_label(permission: Permission) -> &'static str {
    match permission {
        Permission::ModelsRead => "list models and presets",
        Permission::WorkflowsRead => "read workflows",
        Permission::WorkflowsWrite => "create and change workflows",
        Permission::WorkflowsRun => "start, stop and delete workflow runs",
        Permission::WorkspaceRead => "see the workspace",
        Permission::KeysRead => "see your own API keys",
        Permission::KeysWrite => "create, revoke and rotate your own API keys",
        Permission::KeysManage => "see, revoke and rotate every API key of the workspace",
        Permission::MembersRead => "see the members of the workspace",
        Permission::MembersWrite => "add and remove members and change their roles",
        Permission::WorkspaceWrite => "rename the workspace",
        Permission::WorkspaceDelete => "delete the workspace",
        Permission::OrgWorkspacesRead => "see every workspace of the organization",
        Permission::OrgWorkspacesWrite => "create and delete workspaces",
        Permission::OrgKeysRead => "see the keys of every workspace",
        Permission::OrgKeysWrite => "revoke keys in every workspace",
        Permission::OrgAuditRead => "read the organization's audit log",
        Permission::OrgUsersRead => "see the organization's users",
        Permission::OrgUsersWrite => "create and deactivate users and reset passwords",
    }
}

/// An API message made into a sentence for the dashboard: a permission
/// code in backticks becomes what it lets one do ("`workspace:write`" →
/// "permission to rename the workspace"), other backticks are dropped.
pub fn for_people(detail: &str) -> String {
    let mut out = String::with_capacity(detail.len() + 16);
    let mut rest = detail;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('`') {
            Some(end) => {
                let code = &after[..end];
                match code.parse::<Permission>() {
                    Ok(permission) => {
                        out.push_str("permission to ");
                        out.push_str(permission_label(permission));
                    }
                    Err(_) => out.push_str(code),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    crate::domain::sentence(&out)
}

/// "a viewer", "an admin": a role in a sentence.
pub fn role_with_article(role: Role) -> &'static str {
    match role {
        Role::Viewer => "a viewer",
        Role::Member => "a member",
        Role::Admin => "an admin",
        Role::Owner => "an owner",
    }
}

/// An error page's content, left by [`WebError`] for [`chrome`] to render
/// with the header of the user who met it.
#[derive(Debug, Clone)]
pub(super) struct ErrorView {
    pub title: &'static str,
    pub message: String,
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
pub(super) struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub back_url: &'a str,
    pub back_label: &'a str,
    pub layout: Layout,
    pub csrf: &'a str,
}

/// Renders the error page for `path` (its way back) with `layout`.
pub(super) fn error_page(
    status: StatusCode,
    view: &ErrorView,
    path: &str,
    layout: Layout,
    csrf: &str,
) -> Response {
    let (back_url, back_label) = if layout.email.is_some() {
        way_back(path)
    } else {
        ("/login".to_owned(), "Log in")
    };
    page(
        status,
        &ErrorPage {
            title: view.title,
            message: &view.message,
            back_url: &back_url,
            back_label,
            layout,
            csrf,
        },
    )
}

/// The layer around every dashboard route:
/// - an error page gets the header of the user it was rendered for, and
///   the link back to where they were;
/// - a GET that needed a login is sent to `/login?next=<where it was going>`;
/// - a page that showed the flash confirmation clears its cookie.
pub(super) async fn chrome(mut request: Request, next: Next) -> Response {
    let slot = LayoutSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().clone();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let path = request.uri().path().to_owned();
    let had_flash = has_flash_cookie(request.headers());
    let mut response = next.run(request).await;

    if let Some(view) = response.extensions_mut().remove::<ErrorView>() {
        let (layout, csrf) = slot.take().unwrap_or_default();
        let fresh = error_page(response.status(), &view, &path, layout, &csrf);
        let (fresh_parts, body) = fresh.into_parts();
        let (mut parts, _old) = response.into_parts();
        for name in [
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            header::CONTENT_SECURITY_POLICY,
        ] {
            if let Some(value) = fresh_parts.headers.get(&name) {
                parts.headers.insert(name, value.clone());
            }
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        response = Response::from_parts(parts, body);
    }

    if method == Method::GET && is_redirect_to(&response, "/login") {
        if let Some(next) = safe_next(&path_and_query).filter(|_| path != "/") {
            let to = format!("/login?next={}", super::utf8_percent_encode(next));
            if let Ok(value) = HeaderValue::from_str(&to) {
                response.headers_mut().insert(header::LOCATION, value);
            }
        }
    }

    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if had_flash && is_page && !response.status().is_redirection() {
        for name in [FLASH_COOKIE, SECURE_FLASH_COOKIE] {
            let secure = if name == SECURE_FLASH_COOKIE {
                "; Secure"
            } else {
                ""
            };
            if let Ok(value) = HeaderValue::from_str(&format!(
                "{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"
            )) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
    }
    response
}

fn is_redirect_to(response: &Response, to: &str) -> bool {
    response.status().is_redirection()
        && response
            .headers()
            .get(header::LOCATION)
            .is_some_and(|l| l.as_bytes() == to.as_bytes())
}

/// Paths that belong to the API (JSON errors), not the dashboard.
fn is_api_path(path: &str) -> bool {
    path == "/v1"
        || path.starts_with("/v1/")
        || matches!(path, "/openapi.json" | "/healthz" | "/readyz")
}

/// Whether a browser is asking for a page (navigations send `text/html`).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// The application's fallback: a browser opening an unknown dashboard URL
/// gets the dashboard's 404 page (with its header when logged in); API
/// clients get the JSON error.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let mut response = if is_api_path(request.uri().path()) || !wants_html(request.headers()) {
        crate::http::middleware::fallback(request)
            .await
            .into_response()
    } else {
        let view = ErrorView {
            title: "Page not found",
            message:
                "There is no page at this address. It may have moved, or the link may be mistyped."
                    .to_owned(),
        };
        browser_error(&state, request, StatusCode::NOT_FOUND, view, "not_found").await
    };
    response
        .extensions_mut()
        .insert(crate::http::middleware::Unrouted);
    response
}

/// A known address asked with the wrong method: a browser (typing the
/// address of a form's target, such as /logout) gets a page, API clients
/// the JSON 405.
pub async fn method_not_allowed(State(state): State<AppState>, request: Request) -> Response {
    if is_api_path(request.uri().path()) || !wants_html(request.headers()) {
        return crate::http::middleware::method_not_allowed(request)
            .await
            .into_response();
    }
    let view = ErrorView {
        title: "Not a page",
        message: "This address is where a form sends its changes; it cannot be opened as a page."
            .to_owned(),
    };
    browser_error(
        &state,
        request,
        StatusCode::METHOD_NOT_ALLOWED,
        view,
        "method_not_allowed",
    )
    .await
}

async fn browser_error(
    state: &AppState,
    request: Request,
    status: StatusCode,
    view: ErrorView,
    code: &'static str,
) -> Response {
    let path = request.uri().path().to_owned();
    let (mut parts, _body) = request.into_parts();
    let (layout, csrf) = match CurrentUser::from_request_parts(&mut parts, state).await {
        Ok(user) => (Layout::of(&user), user.csrf().to_owned()),
        Err(_) => (Layout::anonymous(&parts.headers), String::new()),
    };
    let mut response = error_page(status, &view, &path, layout, &csrf);
    response
        .extensions_mut()
        .insert(WebError::keep_body_marker(code, view.message));
    response
}

#[cfg(test)]
mod tests {
    use super::{safe_next, way_back};

    #[test]
    fn permission_codes_become_words() {
        assert_eq!(
            super::for_people("raising it needs `workspace:write`, which you do not have"),
            "Raising it needs permission to rename the workspace, which you do not have."
        );
        assert_eq!(
            super::for_people("unknown expiry `5y`"),
            "Unknown expiry 5y."
        );
        assert_eq!(super::for_people("a ` alone"), "A  alone.");
    }

    #[test]
    fn only_local_paths_survive_the_login_page() {
        assert_eq!(
            safe_next("/settings/organization/workspaces/ws-1/api-keys?x=1"),
            Some("/settings/organization/workspaces/ws-1/api-keys?x=1")
        );
        for evil in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "",
            "/login",
            "/login?next=/x",
            "/logout",
            "/a\nb",
            "/a\\b",
        ] {
            assert_eq!(safe_next(evil), None, "{evil:?}");
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(3000))), None);
    }

    #[test]
    fn the_way_back_is_the_list_above_the_error() {
        assert_eq!(
            way_back("/settings/organization/workspaces/ws-1/api-keys/k_1/revoke").0,
            "/settings/organization/workspaces/ws-1/api-keys"
        );
        assert_eq!(
            way_back("/settings/organization/workspaces/ws-1/members/u_1/role").1,
            "Back to Members"
        );
        assert_eq!(
            way_back("/settings/organization/workspaces/ws-1/api-keys").0,
            "/settings/organization/workspaces"
        );
        assert_eq!(
            way_back("/settings/organization/users/u_1/deactivate").0,
            "/settings/organization/users"
        );
        assert_eq!(way_back("/nope").0, "/settings/organization/workspaces");
    }
}
