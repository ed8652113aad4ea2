//! Logging in and out, the one-time setup, the session extractor, CSRF
//! tokens and form parsing. Failed logins are throttled by
//! [`crate::rate_limit::LoginThrottle`].

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use askama::Template;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::layout::Layout;
use super::{page, WebError, WebResult};
use crate::client_addr::ClientAddr;
use crate::domain::passwords::{MAX_EMAIL_BYTES, MAX_PASSWORD_BYTES};
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

/// The logged-in user of a dashboard request.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user.
    pub user: UserRecord,
    /// The session (its CSRF token goes into every form).
    pub session: SessionRecord,
    /// The client's address (through trusted proxies).
    pub client_addr: Option<String>,
    /// The confirmation of the change just made, shown once at the top of
    /// the next page.
    pub flash: Option<String>,
    /// The browser reached us over HTTPS: cookies set for it get `Secure`
    /// and the `__Host-` prefix.
    pub secure: bool,
}

impl CurrentUser {
    /// After a change: 303 to `to` with `message` shown once there.
    pub fn redirect_with_flash(&self, to: &str, message: &str) -> Response {
        super::layout::redirect_with_flash(to, self.secure, message)
    }

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
        let client = match ClientAddr::from_request_parts(parts, state).await {
            Ok(client) => client,
            Err(never) => match never {},
        };
        let secure = secure_cookies(state, &parts.headers, &client);
        let name = session_cookie_name(secure);
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
        let current = Self {
            user,
            session,
            client_addr: client.ip.map(|ip| ip.to_string()),
            flash: super::layout::read_flash(&parts.headers),
            secure,
        };
        if let Some(slot) = parts.extensions.get::<super::layout::LayoutSlot>() {
            slot.fill(&current);
        }
        Ok(current)
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
        let bytes = crate::body::read_limited(request.into_body(), limit)
            .await
            .map_err(|e| WebError::Invalid(e.to_string()))?;
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .map(Form)
            .map_err(|e| WebError::Invalid(format!("The form could not be read: {e}")))
    }
}

/// Cookies get `Secure` when the public URL is https, or when a trusted
/// proxy says the client used https (`X-Forwarded-Proto`).
fn secure_cookies(state: &AppState, headers: &HeaderMap, client: &ClientAddr) -> bool {
    state
        .config()
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
        || (client.via_trusted_proxy
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https")))
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
    /// Where to go after logging in (a local path), kept in a hidden field.
    next: &'a str,
    layout: Layout,
    csrf: &'a str,
}

/// The query of the login page: where the browser was going.
#[derive(Debug, serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// GET /login.
pub async fn login_page(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> WebResult {
    // Read leniently: a mangled query only loses the deep link.
    let query: LoginQuery = query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or(LoginQuery { next: None });
    let next = query
        .next
        .as_deref()
        .and_then(super::layout::safe_next)
        .unwrap_or("");
    if state.store().organization().await?.is_none() {
        return Ok(Redirect::to("/setup").into_response());
    }
    Ok(with_pre_session_token(
        &headers,
        secure_cookies(&state, &headers, &client),
        |csrf| {
            page(
                StatusCode::OK,
                &LoginPage {
                    error: None,
                    email: "",
                    next,
                    layout: Layout::anonymous(&headers),
                    csrf,
                },
            )
        },
    ))
}

/// POST /login: email + password → a session cookie.
pub async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    form: Form,
) -> WebResult {
    check_pre_session_token(&headers, secure_cookies(&state, &headers, &client), &form)?;
    let email = form.get("email").unwrap_or("").trim().to_ascii_lowercase();
    let password = form.get("password").unwrap_or("");
    let next = form
        .get("next")
        .and_then(super::layout::safe_next)
        .unwrap_or("");
    // Refused before any lookup, hashing or throttle entry.
    let too_long = if email.len() > MAX_EMAIL_BYTES {
        Some("Enter an email address of at most 254 characters.")
    } else if password.len() > MAX_PASSWORD_BYTES {
        Some("Passwords are at most 1024 characters long.")
    } else {
        None
    };
    if let Some(error) = too_long {
        let csrf = form.get("csrf").unwrap_or("");
        return Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &LoginPage {
                error: Some(error),
                email: "",
                next,
                layout: Layout::default(),
                csrf,
            },
        ));
    }
    let address = client.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let throttle = state.login_throttle();
    let attempt = match throttle.admit(&email, address, Instant::now()) {
        Ok(attempt) => {
            state
                .limits()
                .login_counted(attempt.account(), attempt.address());
            attempt
        }
        Err(wait) => {
            tracing::warn!(%address, "login throttled");
            return Err(WebError::TooManyAttempts(wait.whole_seconds()));
        }
    };
    let user = match check_credentials(&state, &email, password).await {
        Ok(Some(user)) => {
            state
                .limits()
                .login_uncounted(attempt.account(), attempt.address());
            throttle.succeeded(attempt);
            user
        }
        Ok(None) => {
            throttle.failed(attempt, Instant::now());
            tracing::info!(%address, "failed login");
            let csrf = form.get("csrf").unwrap_or("");
            return Ok(page(
                StatusCode::UNAUTHORIZED,
                &LoginPage {
                    error: Some("Wrong email or password."),
                    email: &email,
                    next,
                    layout: Layout::default(),
                    csrf,
                },
            ));
        }
        Err(err) => {
            // Busy or broken: no verdict, so the attempt does not count.
            state
                .limits()
                .login_uncounted(attempt.account(), attempt.address());
            throttle.abandoned(attempt);
            return Err(err);
        }
    };
    if !user.is_active() {
        return Err(WebError::Forbidden(
            "This account was deactivated; ask an organization admin to reactivate it.".to_owned(),
        ));
    }
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
    let to = if next.is_empty() {
        "/settings/organization/workspaces"
    } else {
        next
    };
    let mut response = Redirect::to(to).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(
            &token,
            SESSION_LIFETIME.as_secs(),
            secure_cookies(&state, &headers, &client),
        ),
    );
    Ok(response)
}

/// The user if `password` is theirs. Unknown emails are checked against a
/// dummy hash, so that timing does not tell which exist.
async fn check_credentials(
    state: &AppState,
    email: &str,
    password: &str,
) -> WebResult<Option<UserRecord>> {
    let user = state.store().user_by_email(email).await?;
    let ok = state
        .passwords()
        .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
        .await?;
    Ok(user.filter(|_| ok))
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
    client: ClientAddr,
    headers: HeaderMap,
    form: Form,
) -> WebResult {
    user.check_csrf(&form)?;
    state
        .store()
        .delete_session(&user.session.token_digest)
        .await?;
    let secure = secure_cookies(&state, &headers, &client);
    let mut response = super::layout::redirect_with_flash("/login", secure, "You are logged out.");
    response
        .headers_mut()
        .append(header::SET_COOKIE, session_cookie("", 0, secure));
    Ok(response)
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage<'a> {
    error: Option<&'a str>,
    layout: Layout,
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
    client: ClientAddr,
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
        secure_cookies(&state, &headers, &client),
        |csrf| {
            page(
                StatusCode::OK,
                &SetupPage {
                    error: None,
                    layout: Layout::default(),
                    csrf,
                    token: &token,
                },
            )
        },
    ))
}

/// POST /setup: creates the organization, its owner and a first workspace,
/// once. Whoever loses a race with another setup gets 409.
pub async fn setup(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    form: Form,
) -> WebResult {
    check_pre_session_token(&headers, secure_cookies(&state, &headers, &client), &form)?;
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
    } else if !email.contains('@') || email.len() > MAX_EMAIL_BYTES {
        Some("Enter a valid email address of at most 254 characters.")
    } else {
        super::account::check_new_password(password, form.get("password_confirm")).err()
    };
    if let Some(error) = error {
        let csrf = form.get("csrf").unwrap_or("");
        return Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &SetupPage {
                error: Some(error),
                layout: Layout::default(),
                csrf,
                token: token.unwrap_or(""),
            },
        ));
    }
    let request = BootstrapRequest {
        organization_name: organization.to_owned(),
        admin_email: email,
        admin_name: "Owner".to_owned(),
        password_hash: state.passwords().hash(password).await?,
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
    Ok(super::layout::redirect_with_flash(
        "/login",
        secure_cookies(&state, &headers, &client),
        "The platform is set up. Log in with the email and password you just chose.",
    ))
}
