//! Logging in and out, the one-time setup, the session extractor, CSRF
//! tokens, form parsing, and throttling of failed logins.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{page, WebError, WebResult};
use crate::domain::passwords::{hash_password, verify_password};
use crate::state::AppState;
use crate::store::{Actor, BootstrapRequest, SessionRecord, UserRecord};

/// The session cookie's name over plain HTTP (development).
pub const COOKIE: &str = "noxus_session";
/// The session cookie's name over HTTPS: the `__Host-` prefix makes browsers
/// refuse it unless it is Secure, for this host only, on every path, so that
/// a sibling subdomain or a plain-HTTP response cannot plant one.
pub const SECURE_COOKIE: &str = "__Host-noxus_session";
/// How long a session lasts at most.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long after the password was last entered sensitive actions need no
/// second ask (GitHub's sudo mode).
pub const SUDO_WINDOW: Duration = Duration::from_secs(10 * 60);
/// A session's last use is written at most this often.
const TOUCH_EVERY: time::Duration = time::Duration::seconds(60);
const WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_FAILURES_PER_ACCOUNT: usize = 5;
const MAX_FAILURES_PER_ADDRESS: usize = 20;

fn random_token(len: usize) -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The stored form of a session token.
pub(super) fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equal in constant time, so a CSRF token cannot be guessed byte by byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Failed logins in the last 15 minutes, per account and per address.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginThrottle {
    /// Seconds to wait if either key is over its limit.
    pub(crate) fn blocked(&self, account: &str, address: &str) -> Option<u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut wait = None;
        for (key, limit) in [
            (format!("account:{account}"), MAX_FAILURES_PER_ACCOUNT),
            (format!("address:{address}"), MAX_FAILURES_PER_ADDRESS),
        ] {
            if let Some(times) = failures.get_mut(&key) {
                times.retain(|t| now.duration_since(*t) < WINDOW);
                if times.len() >= limit {
                    let oldest = times[0];
                    let seconds = WINDOW
                        .saturating_sub(now.duration_since(oldest))
                        .as_secs()
                        .max(1);
                    wait = Some(wait.map_or(seconds, |w: u64| w.max(seconds)));
                }
            }
        }
        wait
    }

    pub(crate) fn record_failure(&self, account: &str, address: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if failures.len() > 100_000 {
            failures.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < WINDOW));
        }
        for key in [format!("account:{account}"), format!("address:{address}")] {
            failures.entry(key).or_default().push(now);
        }
    }

    fn record_success(&self, account: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&format!("account:{account}"));
    }
}

/// The logged-in user of a dashboard request.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user.
    pub user: UserRecord,
    /// The session (its CSRF token goes into every form).
    pub session: SessionRecord,
    /// The client's address.
    pub client_addr: Option<String>,
}

impl CurrentUser {
    /// The CSRF token for forms.
    pub fn csrf(&self) -> &str {
        &self.session.csrf_token
    }

    /// Who is acting, for the audit log.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user.id.clone()),
            key_id: None,
            client_addr: self.client_addr.clone(),
        }
    }

    /// Whether the password was entered in this session in the last 10 minutes.
    pub fn in_sudo(&self) -> bool {
        self.session
            .reauth_at
            .is_some_and(|at| OffsetDateTime::now_utc() - at <= SUDO_WINDOW)
    }

    /// For a sensitive action: unless the password was entered in the last
    /// 10 minutes, go confirm it and come back to `back` (a local path).
    pub fn require_sudo(&self, back: &str) -> WebResult<()> {
        if self.in_sudo() {
            Ok(())
        } else {
            Err(WebError::SudoRequired(back.to_owned()))
        }
    }

    /// 403 unless the form carried this session's CSRF token.
    pub fn check_csrf(&self, form: &Form) -> WebResult<()> {
        match form.get("csrf") {
            Some(token) if same(token, &self.session.csrf_token) => Ok(()),
            _ => Err(WebError::Csrf),
        }
    }
}

/// What a user who must change their password may still open.
const PASSWORD_CHANGE_PATHS: &[&str] = &["/settings/account/password", "/logout"];

fn client_addr(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string())
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

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let name = session_cookie_name(secure_cookies(state, &parts.headers));
        let token = cookie_value(&parts.headers, name).ok_or(WebError::LoginRequired)?;
        let now = OffsetDateTime::now_utc();
        let found = state.store().session(&digest(token), now).await?;
        let (session, user) = found.ok_or(WebError::LoginRequired)?;
        let idle = state.config().session_idle_timeout;
        if !user.is_active() || now - session.last_seen_at >= idle {
            state.store().delete_session(&session.token_digest).await?;
            return Err(WebError::LoginRequired);
        }
        if now - session.last_seen_at >= TOUCH_EVERY {
            state
                .store()
                .touch_session(&session.token_digest, now)
                .await?;
        }
        if user.must_change_password && !PASSWORD_CHANGE_PATHS.contains(&parts.uri.path()) {
            return Err(WebError::PasswordChangeRequired);
        }
        Ok(Self {
            user,
            session,
            client_addr: client_addr(parts),
        })
    }
}

/// A submitted form as ordered pairs (repeated names such as checkboxes kept).
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// The last value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl FromRequest<AppState> for Form {
    type Rejection = WebError;

    async fn from_request(
        request: Request<Body>,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let limit = state.config().max_body_bytes.min(64 * 1024);
        let bytes = crate::http::extract::read_limited(request.into_body(), limit)
            .await
            .map_err(|e| WebError::Invalid(e.to_string()))?;
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .map(Form)
            .map_err(|e| WebError::Invalid(format!("The form could not be read: {e}")))
    }
}

fn secure_cookies(state: &AppState, headers: &HeaderMap) -> bool {
    state
        .config()
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            == Some("https")
}

fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_COOKIE
    } else {
        COOKIE
    }
}

fn session_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let name = session_cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("noxus_session=; Path=/; Max-Age=0"))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    error: Option<&'a str>,
    email: &'a str,
    user_email: Option<&'a str>,
    csrf: &'a str,
}

/// GET /login.
pub async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> WebResult {
    if state.store().organization().await?.is_none() {
        return Ok(Redirect::to("/setup").into_response());
    }
    Ok(with_pre_session_token(
        &headers,
        secure_cookies(&state, &headers),
        |csrf| {
            page(
                StatusCode::OK,
                &LoginPage {
                    error: None,
                    email: "",
                    user_email: None,
                    csrf,
                },
            )
        },
    ))
}

/// POST /login: email + password → a session cookie.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Form,
) -> WebResult {
    check_pre_session_token(&headers, secure_cookies(&state, &headers), &form)?;
    let email = form.get("email").unwrap_or("").trim().to_ascii_lowercase();
    let password = form.get("password").unwrap_or("");
    let address = addr.ip().to_string();
    let throttle = state.login_throttle();
    if let Some(seconds) = throttle.blocked(&email, &address) {
        tracing::warn!(%address, "login throttled");
        return Err(WebError::TooManyAttempts(seconds));
    }
    let user = state.store().user_by_email(&email).await?;
    // Verify against a dummy hash for unknown emails, so timing does not tell which exist.
    let stored = user
        .as_ref()
        .map(|u| u.password_hash.as_str())
        .unwrap_or_else(|| dummy_hash());
    let ok = verify_password(password, stored) && user.is_some();
    let Some(user) = user.filter(|_| ok) else {
        throttle.record_failure(&email, &address);
        tracing::info!(%address, "failed login");
        let csrf = form.get("csrf").unwrap_or("");
        let page_html = page(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                error: Some("Wrong email or password."),
                email: &email,
                user_email: None,
                csrf,
            },
        );
        return Ok(page_html);
    };
    if !user.is_active() {
        return Err(WebError::Forbidden(
            "This account was deactivated; ask an organization admin to reactivate it.".to_owned(),
        ));
    }
    throttle.record_success(&email);
    let token = random_token(43);
    let now = OffsetDateTime::now_utc();
    let session = SessionRecord {
        token_digest: digest(&token),
        user_id: user.id.clone(),
        csrf_token: random_token(32),
        created_at: now,
        expires_at: now + SESSION_LIFETIME,
        last_seen_at: now,
        // The password was just entered: sensitive actions need no second ask for a while.
        reauth_at: Some(now),
    };
    state.store().create_session(&session).await?;
    tracing::info!(user_id = %user.id, "logged in");
    let mut response = Redirect::to("/settings/organization/workspaces").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(
            &token,
            SESSION_LIFETIME.as_secs(),
            secure_cookies(&state, &headers),
        ),
    );
    Ok(response)
}

/// An argon2id hash of a random password, to spend the same time on unknown emails.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_token(24)).unwrap_or_default())
}

/// The cookie of the double-submit CSRF token used before there is a session
/// (the login and setup forms); `__Host-` prefixed over HTTPS.
fn pre_session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-noxus_form"
    } else {
        "noxus_form"
    }
}

fn pre_session_token(headers: &HeaderMap, secure: bool) -> Option<String> {
    cookie_value(headers, pre_session_cookie_name(secure))
        .filter(|v| v.len() == 32)
        .map(str::to_owned)
}

/// A page with a form that has no session yet: reuse or set the pre-session token.
fn with_pre_session_token(
    headers: &HeaderMap,
    secure: bool,
    render: impl FnOnce(&str) -> Response,
) -> Response {
    let (token, fresh) = match pre_session_token(headers, secure) {
        Some(token) => (token, false),
        None => (random_token(32), true),
    };
    let mut response = render(&token);
    if fresh {
        let name = pre_session_cookie_name(secure);
        let secure = if secure { "; Secure" } else { "" };
        if let Ok(value) = HeaderValue::from_str(&format!(
            "{name}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"
        )) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

fn check_pre_session_token(headers: &HeaderMap, secure: bool, form: &Form) -> WebResult<()> {
    match (pre_session_token(headers, secure), form.get("csrf")) {
        (Some(cookie), Some(field)) if same(&cookie, field) => Ok(()),
        _ => Err(WebError::Csrf),
    }
}

/// POST /logout: ends the session.
pub async fn logout(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    state
        .store()
        .delete_session(&user.session.token_digest)
        .await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, secure_cookies(&state, &headers)),
    );
    Ok(response)
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage<'a> {
    error: Option<&'a str>,
    user_email: Option<&'a str>,
    csrf: &'a str,
    token: &'a str,
}

/// 403 unless `token` is the one-time setup token printed at start.
async fn check_setup_token(state: &AppState, token: Option<&str>) -> WebResult<()> {
    let stored = state
        .store()
        .setting(crate::bootstrap::SETUP_TOKEN_SETTING)
        .await?
        .filter(|d| !d.is_empty());
    match (token, stored) {
        (Some(token), Some(stored))
            if token.len() <= 64
                && same(&crate::bootstrap::setup_token_digest(token), &stored) =>
        {
            Ok(())
        }
        _ => Err(WebError::Forbidden(
            "The setup page needs the one-time link that `noxus serve` printed on its standard output when it started; open that link (restart the server to get a new one).".to_owned(),
        )),
    }
}

/// `?token=` of the setup page.
#[derive(Debug, serde::Deserialize)]
pub struct SetupQuery {
    token: Option<String>,
}

/// GET /setup?token=…: only while the platform has no organization, and
/// only with the one-time token printed at start.
pub async fn setup_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<SetupQuery>,
) -> WebResult {
    if state.store().organization().await?.is_some() {
        return Ok(Redirect::to("/login").into_response());
    }
    check_setup_token(&state, query.token.as_deref()).await?;
    let token = query.token.unwrap_or_default();
    Ok(with_pre_session_token(
        &headers,
        secure_cookies(&state, &headers),
        |csrf| {
            page(
                StatusCode::OK,
                &SetupPage {
                    error: None,
                    user_email: None,
                    csrf,
                    token: &token,
                },
            )
        },
    ))
}

/// POST /setup: creates the organization, its owner and a first workspace,
/// once. Whoever loses a race with another setup gets 409.
pub async fn setup(State(state): State<AppState>, headers: HeaderMap, form: Form) -> WebResult {
    check_pre_session_token(&headers, secure_cookies(&state, &headers), &form)?;
    if state.store().organization().await?.is_some() {
        return Err(WebError::Conflict(
            "The platform is already set up; log in instead.".to_owned(),
        ));
    }
    let token = form.get("token");
    check_setup_token(&state, token).await?;
    let organization = form.get("organization").unwrap_or("").trim();
    let email = form.get("email").unwrap_or("").trim().to_ascii_lowercase();
    let password = form.get("password").unwrap_or("");
    let error = if organization.is_empty() || organization.chars().count() > 100 {
        Some("Give the organization a name of 1 to 100 characters.")
    } else if !email.contains('@') || email.len() > 254 {
        Some("Enter a valid email address.")
    } else {
        super::account::check_new_password(password, form.get("password_confirm")).err()
    };
    if let Some(error) = error {
        let csrf = form.get("csrf").unwrap_or("");
        return Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &SetupPage {
                error: Some(error),
                user_email: None,
                csrf,
                token: token.unwrap_or(""),
            },
        ));
    }
    let request = BootstrapRequest {
        organization_name: organization.to_owned(),
        admin_email: email,
        admin_name: "Owner".to_owned(),
        password_hash: super::account::hash_off_thread(password).await?,
        workspace_name: "Default".to_owned(),
        first_key: None,
    };
    if state.store().bootstrap(request).await?.is_none() {
        return Err(WebError::Conflict(
            "Someone else set the platform up a moment ago; log in with their account or ask them."
                .to_owned(),
        ));
    }
    state
        .store()
        .set_setting(crate::bootstrap::SETUP_TOKEN_SETTING, "")
        .await?;
    tracing::info!("platform set up through the setup page");
    Ok(Redirect::to("/login").into_response())
}
