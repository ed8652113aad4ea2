//! Every way a call can fail, kept apart: the server's answers (by status,
//! each with its `code`, `detail` and `request_id`), transport failures,
//! undecodable bodies, and configuration problems.

use std::fmt;
use std::time::Duration;

use crate::config::ConfigError;
use crate::runs::Run;

/// Result alias of the SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the server said when it refused a request. Every text comes from
/// the response, bounded (the detail to 1000 characters, the others to
/// 200) and with anything that looks like an API key cut to its first 10
/// characters, whatever the body held.
///
/// `#[non_exhaustive]`: read its fields; the SDK makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine code, e.g. [`ErrorCode::InvalidApiKey`] (absent if the body was not ours).
    pub code: Option<ErrorCode>,
    /// The server's sentence.
    pub detail: String,
    /// The request id (body or `x-request-id` header), to quote to support.
    pub request_id: Option<String>,
    /// For 403: the permission the route needs.
    pub required_permission: Option<String>,
    /// For 422: the field at fault.
    pub field: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.detail)?;
        match (&self.code, &self.request_id) {
            (Some(code), Some(id)) => write!(f, " ({}, {code}, request {id})", self.status),
            (Some(code), None) => write!(f, " ({}, {code})", self.status),
            (None, Some(id)) => write!(f, " ({}, request {id})", self.status),
            (None, None) => write!(f, " ({})", self.status),
        }
    }
}

/// The machine code of a refusal (`code` in the error body). New codes
/// arrive as [`ErrorCode::Other`] until the SDK names them.
///
/// ```
/// use noxus_sdk::ErrorCode;
///
/// assert_eq!(ErrorCode::parse("revoked_api_key"), ErrorCode::RevokedApiKey);
/// assert_eq!(ErrorCode::RevokedApiKey.as_str(), "revoked_api_key");
/// assert_eq!(ErrorCode::parse("brand_new"), ErrorCode::Other("brand_new".to_owned()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 401: no key was sent.
    MissingApiKey,
    /// 401: malformed, bad checksum, unknown, or its owner left.
    InvalidApiKey,
    /// 401: revoked.
    RevokedApiKey,
    /// 401: past its expiry (or a rotated key after its grace period).
    ExpiredApiKey,
    /// 403: the key lacks a permission (`required_permission` names it).
    InsufficientPermissions,
    /// 403: the request named another workspace than the key's.
    WrongWorkspace,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 408: the request body stopped arriving.
    RequestTimeout,
    /// 409: a state refused the change (a duplicate, a quota, …).
    Conflict,
    /// 413.
    PayloadTooLarge,
    /// 422: `field` names what is wrong.
    ValidationError,
    /// 429.
    RateLimited,
    /// 400.
    BadRequest,
    /// 500.
    InternalError,
    /// 503.
    ServiceUnavailable,
    /// A code this version of the SDK does not know.
    Other(String),
}

impl ErrorCode {
    /// The code as the server writes it.
    pub fn parse(code: &str) -> Self {
        match code {
            "missing_api_key" => Self::MissingApiKey,
            "invalid_api_key" => Self::InvalidApiKey,
            "revoked_api_key" => Self::RevokedApiKey,
            "expired_api_key" => Self::ExpiredApiKey,
            "insufficient_permissions" => Self::InsufficientPermissions,
            "wrong_workspace" => Self::WrongWorkspace,
            "not_found" => Self::NotFound,
            "method_not_allowed" => Self::MethodNotAllowed,
            "request_timeout" => Self::RequestTimeout,
            "conflict" => Self::Conflict,
            "payload_too_large" => Self::PayloadTooLarge,
            "validation_error" => Self::ValidationError,
            "rate_limited" => Self::RateLimited,
            "bad_request" => Self::BadRequest,
            "internal_error" => Self::InternalError,
            "service_unavailable" => Self::ServiceUnavailable,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The code as the server writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidApiKey => "invalid_api_key",
            Self::RevokedApiKey => "revoked_api_key",
            Self::ExpiredApiKey => "expired_api_key",
            Self::InsufficientPermissions => "insufficient_permissions",
            Self::WrongWorkspace => "wrong_workspace",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ValidationError => "validation_error",
            Self::RateLimited => "rate_limited",
            Self::BadRequest => "bad_request",
            Self::InternalError => "internal_error",
            Self::ServiceUnavailable => "service_unavailable",
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The sentence for a 403 that named another workspace: not a missing permission.
pub const WRONG_WORKSPACE: &str = "API key belongs to another workspace";

/// The guide's sentence for a 401.
pub const UNAUTHORIZED: &str = "Invalid API key - please check your credentials";
/// The guide's sentence for a 403.
pub const FORBIDDEN: &str = "API key lacks required permissions";

/// `sentence: detail`, without repeating the sentence when the server's
/// detail already starts with it.
fn prefixed(sentence: &str, api: &ApiError) -> String {
    if api.detail.starts_with(sentence) {
        api.to_string()
    } else {
        format!("{sentence}: {api}")
    }
}

/// A 403's sentence: the guide's "lacks required permissions", unless the
/// key only named another workspace.
fn forbidden(api: &ApiError) -> String {
    if api.code == Some(ErrorCode::WrongWorkspace) {
        prefixed(WRONG_WORKSPACE, api)
    } else {
        prefixed(FORBIDDEN, api)
    }
}

/// An SDK error. Messages follow the authentication guide's wording and
/// never contain the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 401: missing, malformed, unknown, revoked or expired key.
    #[error("{}", prefixed(UNAUTHORIZED, .0))]
    Unauthorized(Box<ApiError>),
    /// 403: the key's role (or restriction) lacks the permission ("API key
    /// lacks required permissions"), or the request named another workspace
    /// ([`ErrorCode::WrongWorkspace`], "API key belongs to another workspace").
    #[error("{}", forbidden(.0))]
    Forbidden(Box<ApiError>),
    /// 404: no such object in the key's workspace.
    #[error("Not found: {0}")]
    NotFound(Box<ApiError>),
    /// 422: the request was invalid; `field` says where.
    #[error("Invalid request: {0}")]
    Validation(Box<ApiError>),
    /// 429 after the retries: wait `retry_after` before trying again.
    #[error("Rate limited: {api}")]
    RateLimited {
        /// The server's answer.
        api: Box<ApiError>,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 5xx after the retries.
    #[error("Server error: {0}")]
    Server(Box<ApiError>),
    /// Any other refusal (400, 405, 409, 413, ...).
    #[error("Request failed: {0}")]
    Api(Box<ApiError>),
    /// No answer within the timeout.
    #[error("Network error: no response from {url} within {timeout:?}")]
    Timeout {
        /// The URL (never contains the key).
        url: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// Could not connect, or the connection broke. `Display` says what
    /// happened in a few words; the causes are the error's sources (as
    /// `{:#}` of anyhow or any error reporter shows them), and all of it
    /// is in `message`.
    #[error("Network error: {} ({url})", summary(message))]
    Connection {
        /// The URL.
        url: String,
        /// What happened, with every cause.
        message: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx whose body is not what the API promises.
    #[error("Cannot decode the response of {url} (status {status}): {source}")]
    Decode {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The raw body, for debugging: at most 4096 characters, keys cut
        /// to their first 10.
        body: String,
        /// The parse error (its message bounded and keys cut the same way).
        #[source]
        source: serde_json::Error,
    },
    /// A configuration problem, found before any request.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// [`Run::wait`](crate::Run::wait): the run ended as `failed`. The run
    /// (with its `error`, the server's sentence) is inside.
    #[error("{}", run_failed(.0))]
    RunFailed(Box<Run>),
    /// [`Run::wait`](crate::Run::wait): the run was stopped before it ended.
    #[error("The run {} was stopped before it ended", .0.id)]
    RunStopped(Box<Run>),
    /// [`Run::wait_timeout`](crate::Run::wait_timeout): the run had not
    /// ended when the time was up. It goes on: wait again, or stop it.
    #[error(
        "The run {run_id} did not end within {timeout:?}; it goes on (wait again, or stop it)"
    )]
    WaitTimeout {
        /// The run.
        run_id: String,
        /// The time given.
        timeout: Duration,
    },
    /// A run's event stream could not be followed: an event over the size
    /// limit, or connections that kept ending before the run did.
    /// [`Run::wait`](crate::Run::wait) falls back to polling instead.
    #[error("Cannot follow the event stream of {url}: {message}")]
    EventStream {
        /// The stream's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

fn run_failed(run: &Run) -> String {
    match run.error.as_deref() {
        Some(error) if !error.trim().is_empty() => {
            format!("The run {} failed: {error}", run.id)
        }
        _ => format!("The run {} failed (the server gave no reason)", run.id),
    }
}

/// The first part of a connection message, before its causes.
fn summary(message: &str) -> &str {
    message.split(": ").next().unwrap_or(message)
}

impl Error {
    /// The server's answer, for errors that have one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Unauthorized(a)
            | Self::Forbidden(a)
            | Self::NotFound(a)
            | Self::Validation(a)
            | Self::Server(a)
            | Self::Api(a) => Some(a),
            Self::RateLimited { api, .. } => Some(api),
            _ => None,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|a| a.status)
    }

    /// The server's machine code, e.g. [`ErrorCode::RevokedApiKey`].
    pub fn code(&self) -> Option<&ErrorCode> {
        self.api().and_then(|a| a.code.as_ref())
    }

    /// The request id to quote to support.
    pub fn request_id(&self) -> Option<&str> {
        self.api().and_then(|a| a.request_id.as_deref())
    }

    /// Whether this is a timeout or a connection failure.
    pub fn is_network(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Connection { .. })
    }

    pub(crate) fn from_status(api: ApiError, retry_after: Option<Duration>) -> Self {
        let api = Box::new(api);
        match api.status {
            401 => Self::Unauthorized(api),
            403 => Self::Forbidden(api),
            404 => Self::NotFound(api),
            422 => Self::Validation(api),
            429 => Self::RateLimited { api, retry_after },
            500..=599 => Self::Server(api),
            _ => Self::Api(api),
        }
    }
}
